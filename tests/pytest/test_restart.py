# Restarts: the whole tree (values, dirs, hidden keys, TTLs, in-order keys)
# and the index survive a clean stop and a SIGKILL, with and without
# snapshots (--snapshot-count small forces several), and TTLs keep running
# while the server is down.
import re

import pytest

import harness


def build_tree(c):
    c.put("/r/a", value="1")
    c.put("/r/d/b", value="<&>\u00e9")
    c.put("/r/_hidden", value="h")
    c.put("/r/emptydir", dir="true")
    c.put("/r/ttl", value="t", ttl="1000")
    c.put("/r/dirttl", dir="true", ttl="1000")
    c.post("/r/q", value="first")
    c.post("/r/q", value="second")
    for n in range(40):
        c.put("/r/many/k%02d" % n, value="v%d" % n)
    c.put("/r/a", value="2", prevValue="1")
    c.delete("/r/many/k00")
    c.put("/r/d/b", value="changed")


TTL_RE = re.compile(rb'"ttl":\d+')


def snapshot_of(c):
    r = c.get("/r", recursive="true", sorted="true")
    assert r.status == 200
    h = c.get("/r/_hidden")
    return TTL_RE.sub(b'"ttl":T', r.body), h.body, r.etcd_index


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
@pytest.mark.parametrize("snapcount", [None, 10])
def test_tree_survives_restart(make_server, how, snapcount):
    extra = ["--snapshot-count", str(snapcount)] if snapcount else []
    s = make_server(extra_args=extra)
    c = s.client()
    build_tree(c)
    before = snapshot_of(c)
    c.close()
    if how == "sigkill":
        s.kill9()
    else:
        s.stop()  # etcd's exit status after SIGTERM is not 0: not checked
    s.start(keep_ports=True)
    c = s.client()
    try:
        after = snapshot_of(c)
        assert after[0] == before[0], "tree differs after %s restart" % how
        assert after[1] == before[1]
        assert after[2] >= before[2]
        # new writes continue the index, POST keys stay in order
        r = c.post("/r/q", value="third")
        assert r.status == 201 and r.etcd_index > before[2]
        keys = [n["key"] for n in c.get("/r/q", sorted="true").json()["node"]["nodes"]]
        assert keys == sorted(keys) and len(keys) == 3
    finally:
        c.close()


def test_ttl_expires_while_down(make_server):
    s = make_server()
    c = s.client()
    c.put("/t/short", value="x", ttl="2")
    c.put("/t/long", value="y", ttl="1000")
    c.close()
    s.stop()
    # time itself is the condition here: the 2 s TTL must run out while the
    # server is down
    import time
    time.sleep(2.5)
    s.start(keep_ports=True)
    c = s.client()
    try:
        harness.deadline_poll(lambda: c.get("/t/short").status == 404, 10, 0.05,
                              "a TTL that ran out while down to expire after restart")
        r = c.get("/t/long")
        assert r.status == 200 and 990 <= r.json()["node"]["ttl"] <= 1000
    finally:
        c.close()


def test_durability_with_frequent_snapshots(make_server):
    """Acknowledged writes survive SIGKILL when the WAL has been cut by
    snapshots many times (--snapshot-count 25); 4 rounds, each killed at a
    random moment, so some kills land while a snapshot is being written."""
    import random
    import threading
    import time
    rng = random.Random()
    s = make_server(extra_args=["--snapshot-count", "25"])
    acked = {}
    lock = threading.Lock()
    for rnd in range(4):
        stop = threading.Event()
        start_count = len(acked)

        def writer(t, rnd=rnd, stop=stop):
            cl = s.client(timeout=5)
            n = 0
            try:
                while not stop.is_set():
                    k = "/snapdur/r%d/t%d/k%d" % (rnd, t, n)
                    try:
                        r = cl.put(k, value="v%d" % n)
                    except Exception:
                        return
                    if r.status in (200, 201):
                        with lock:
                            acked[k] = "v%d" % n
                    n += 1
            finally:
                cl.close()

        ths = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(3)]
        for t in ths:
            t.start()
        harness.deadline_poll(lambda: len(acked) >= start_count + 100, 60, 0.005,
                              "100 acknowledged writes")
        time.sleep(rng.uniform(0, 0.3))  # a random kill moment
        s.kill9()
        stop.set()
        for t in ths:
            t.join(10)
        s.start(keep_ports=True)
        c = s.client()
        try:
            r = c.get("/snapdur", recursive="true")
            got = {}

            def walk(n):
                for ch in n.get("nodes", []):
                    if ch.get("dir"):
                        walk(ch)
                    else:
                        got[ch["key"]] = ch["value"]
            walk(r.json()["node"])
            lost = [k for k, v in acked.items() if got.get(k) != v]
            assert not lost, "round %d: %d of %d acknowledged writes lost or wrong: %r" % (
                rnd, len(lost), len(acked), lost[:5])
        finally:
            c.close()


def test_watch_history_after_restart(make_server):
    """Events written before a restart are still in the history after it
    (the log is replayed through the store): waitIndex finds them."""
    s = make_server()
    c = s.client()
    i1 = c.put("/wh/a", value="1").etcd_index
    i2 = c.put("/wh/a", value="2").etcd_index
    c.close()
    s.stop()
    s.start(keep_ports=True)
    c = s.client()
    try:
        r = c.get("/wh/a", wait="true", waitIndex=str(i1), timeout=5)
        assert r.status == 200 and r.json()["node"]["modifiedIndex"] == i1
        r = c.get("/wh/a", wait="true", waitIndex=str(i2), timeout=5)
        j = r.json()
        assert (j["node"]["modifiedIndex"], j["prevNode"]["value"]) == (i2, "1")
    finally:
        c.close()


def test_sigterm_with_parked_watchers_exits_promptly(make_server):
    """Parked long polls and open streams must not hold up a clean stop."""
    import socket
    import time
    s = make_server()
    socks = []
    try:
        for n in range(100):
            so = socket.create_connection(("127.0.0.1", s.client_port))
            q = "&stream=true" if n % 10 == 0 else ""
            so.sendall(b"GET /v2/keys/parked%d?wait=true%s HTTP/1.1\r\nHost: x\r\n\r\n"
                       % (n, q.encode()))
            socks.append(so)
        c = s.client()
        harness.deadline_poll(
            lambda: c.request("GET", "/v2/stats/store").json()["watchers"] >= 100, 10,
            what="100 watchers parked")
        c.close()
        t0 = time.monotonic()
        s.proc.terminate()
        s.proc.wait(15)
        assert time.monotonic() - t0 < 5, "clean stop took %.1fs" % (time.monotonic() - t0)
    finally:
        for so in socks:
            so.close()
    s.start(keep_ports=True)
