# *** 10,000 concurrent watchers (long polls; streams), all woken by one write. ***
# Raw non-blocking sockets multiplexed with selectors (no threads). Needs
# ~10k file descriptors here and in the server: this process raises its
# RLIMIT_NOFILE soft limit to the hard limit, and the harness starts the
# server with the same raise (preexec_fn). ETCFS_WATCHERS=n scales it.
import errno
import os
import resource
import selectors
import socket
import time

import pytest

import harness
from harness import go_json
from test_keys import ev, node

N = int(os.environ.get("ETCFS_WATCHERS", "10000"))


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        pytest.skip("RLIMIT_NOFILE hard limit %d < %d needed" % (hard, need))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["longpoll", "stream"])
def test_10k_watchers_woken_by_one_write(make_server, mode):
    """longpoll: 10k parked polls, one write answers them all. stream: 10k
    stream watchers each get the first write, then the second."""
    raise_nofile(N + 500)
    s = make_server()
    cl = s.client()
    base = cl.get("/").etcd_index
    cl.put("/w10k/other", value="warm")
    i0 = cl.get("/").etcd_index
    # waitIndex = next index: no watcher can miss the write, whenever it parks
    req = ("GET /v2/keys/w10k/k?wait=true&waitIndex=%d%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
           % (i0 + 1, "&stream=true" if mode == "stream" else "")).encode()
    sel = selectors.DefaultSelector()
    socks = {}
    bufs = {}
    pending = list(range(N))
    connecting = 0
    deadline = time.monotonic() + 120
    sent = 0
    try:
        # connect in waves of at most 256 at a time (the listen backlog)
        while sent < N:
            assert time.monotonic() < deadline, "only %d/%d watchers connected" % (sent, N)
            while pending and connecting < 256:
                k = pending.pop()
                so = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                so.setblocking(False)
                err = so.connect_ex(("127.0.0.1", s.client_port))
                assert err in (0, errno.EINPROGRESS), os.strerror(err)
                socks[k] = so
                bufs[k] = b""
                sel.register(so, selectors.EVENT_WRITE, k)
                connecting += 1
            for key, mask in sel.select(timeout=1.0):
                k = key.data
                so = socks[k]
                if not mask & selectors.EVENT_WRITE:
                    # already asked; etcd flushes headers when a poll parks
                    data = so.recv(65536)
                    assert data, "watcher %d closed before the write" % k
                    bufs[k] += data
                    continue
                err = so.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                assert err == 0, "watcher %d connect: %s" % (k, os.strerror(err))
                so.send(req)  # tiny: fits the empty send buffer at once
                sel.modify(so, selectors.EVENT_READ, k)
                connecting -= 1
                sent += 1
                if sent >= N:
                    break
        # every watcher connected and asked; wait until the server has them
        # all parked (stats/store counts watchers), then one write wakes them
        watchers = lambda: cl.request("GET", "/v2/stats/store").json()["watchers"]

        def parked():
            for key, _ in sel.select(timeout=0):
                data = socks[key.data].recv(65536)
                assert data, "watcher %d closed before the write" % key.data
                bufs[key.data] += data
            return watchers() >= N
        try:
            harness.deadline_poll(parked, 60, 0.2, "%d watchers parked" % N)
        except AssertionError:
            pytest.fail("only %d of %d watchers parked (stats/store watchers)" % (watchers(), N))
        early = [k for k, b in bufs.items() if b"\r\n\r\n{" in b]
        assert not early
        for round_ in range(2 if mode == "stream" else 1):
            t_write = time.monotonic()
            r = cl.put("/w10k/k", value="wake%d" % round_)
            assert r.status in (200, 201)
            i = r.etcd_index
            assert i == i0 + 1 + round_
            prev = node("/w10k/k", "wake0", i - 1, i - 1) if round_ else None
            want = go_json(ev("set", node("/w10k/k", "wake%d" % round_, i, i), prev))
            done = set()
            deadline = time.monotonic() + 120
            while len(done) < N:
                assert time.monotonic() < deadline, "round %d: only %d/%d watchers woken" % (
                    round_, len(done), N)
                for key, _ in sel.select(timeout=1.0):
                    k = key.data
                    try:
                        data = socks[k].recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    bufs[k] += data
                    if want in bufs[k] or not data:
                        assert bufs[k].startswith(b"HTTP/1.1 200"), (k, bufs[k][:300])
                        assert want in bufs[k], (k, bufs[k][-300:])
                        done.add(k)
                        if mode == "longpoll":
                            sel.unregister(socks[k])
            print("%s: %d watchers woken in %.2fs" % (mode, N, time.monotonic() - t_write))
        assert cl.get("/w10k/k").status == 200
        assert base >= 0
    finally:
        for so in socks.values():
            so.close()
        sel.close()
        cl.close()
