# Watcher fan-out correctness: 2,000 parked long polls spread over 100 keys
# and 10 parent dirs (plain and recursive), then 100 sequential writes: each
# watcher gets exactly the first event at or after its waitIndex that
# matches its key (or, recursive, anything below its dir).
import selectors
import socket
import time

from harness import go_json
from test_keys import ev, node


def test_watch_fanout(make_server):
    s = make_server()
    c = s.client()
    socks = []
    try:
        base = c.get("/").etcd_index
        dirs = ["/fan/d%d" % i for i in range(10)]
        keys = ["%s/k%d" % (d, j) for d in dirs for j in range(10)]
        watch = []  # (path, recursive)
        for n in range(2000):
            if n % 5 == 4:
                watch.append((dirs[n % 10], True))
            else:
                watch.append((keys[(n * 7) % 100], False))
        req = []
        for path, rec in watch:
            req.append(("GET /v2/keys%s?wait=true&waitIndex=%d%s HTTP/1.1\r\nHost: x\r\n\r\n"
                        % (path, base + 1, "&recursive=true" if rec else "")).encode())
        sel = selectors.DefaultSelector()
        bufs = []
        for n in range(len(watch)):
            so = socket.create_connection(("127.0.0.1", s.client_port))
            so.sendall(req[n])
            so.setblocking(False)
            sel.register(so, selectors.EVENT_READ, n)
            socks.append(so)
            bufs.append(b"")
        # writes in a fixed order; event index i -> key
        order = [keys[(i * 37) % 100] for i in range(100)]
        expect_ev = []
        for i, k in enumerate(order):
            r = c.put(k, value="v%d" % i)
            assert r.status == 201
            expect_ev.append(go_json(ev("set", node(k, "v%d" % i, r.etcd_index, r.etcd_index))))
        first_for_key = {}
        first_for_dir = {}
        for i, k in enumerate(order):
            first_for_key.setdefault(k, expect_ev[i])
            first_for_dir.setdefault(k.rsplit("/", 1)[0], expect_ev[i])
        want = [first_for_dir[p] if rec else first_for_key[p] for p, rec in watch]
        done = set()
        deadline = time.monotonic() + 60
        while len(done) < len(watch):
            assert time.monotonic() < deadline, "%d/%d watchers answered" % (len(done), len(watch))
            for key, _ in sel.select(timeout=1):
                n = key.data
                d = socks[n].recv(65536)
                bufs[n] += d
                if not d or want[n] in bufs[n] or bufs[n].endswith(b"0\r\n\r\n"):
                    sel.unregister(socks[n])
                    done.add(n)
        bad = [n for n in range(len(watch)) if want[n] not in bufs[n]]
        assert not bad, "watcher %r got %r, want %r" % (
            watch[bad[0]], bufs[bad[0]][-300:], want[bad[0]])
    finally:
        c.close()
        for so in socks:
            so.close()
