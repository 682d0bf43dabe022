# raftd's HTTP threads (--http-threads, docs/raftd.md): a connection that
# keeps sending plain reads is served on an HTTP thread, anything else
# moves it back to the loop thread. What a client must not be able to tell: order on a
# connection, read-your-writes across connections, watches on a connection
# that served reads first. The behaviour tests run against etcd too.
import os
import signal
import socket
import threading
import time

import pytest

import harness
from harness import RawConn


def next_response(conn):
    """(status, headers, body) of the next response on a RawConn."""
    conn.status, conn.headers = None, {}
    status = conn.read_head()
    return status, dict(conn.headers), conn.read_body()


def test_pipelined_reads_and_writes_answer_in_order(server, uniq):
    k = "/v2/keys%s/k" % uniq
    form = "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n"
    # raftd: the second GET moves the connection to an HTTP thread, the
    # first PUT moves it back while that GET's answer may be unsent.
    reqs = ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % k * 2 +
            "PUT %s HTTP/1.1\r\nHost: x\r\n%s\r\nvalue=1" % (k, form) +
            "GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % k +
            "PUT %s HTTP/1.1\r\nHost: x\r\n%s\r\nvalue=2" % (k, form) +
            "GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % k)
    c = RawConn(server.client_port)
    try:
        c.send(reqs.encode())  # one write: the server sees them together
        got = [next_response(c) for _ in range(6)]
    finally:
        c.close()
    assert [g[0] for g in got] == [404, 404, 201, 200, 200, 200]
    assert b'"value":"1"' in got[3][2]
    assert b'"action":"set"' in got[4][2] and b'"value":"2"' in got[4][2]
    assert b'"value":"2"' in got[5][2]
    idx = [int(g[1]["x-etcd-index"]) for g in got]
    assert idx == sorted(idx)


def test_watch_on_a_connection_that_served_reads(server, uniq):
    k = "/v2/keys%s/w" % uniq
    c = RawConn(server.client_port)
    cl = server.client()
    try:
        for _ in range(3):
            c.get(k)
            assert next_response(c)[0] == 404
        c.get(k + "?wait=true")
        c.status, c.headers = None, {}
        assert c.idle_for(0.3)
        assert cl.put(k[len("/v2/keys"):], value="v").status == 201
        body = c.read_body()
        assert b'"action":"set"' in body and b'"value":"v"' in body
    finally:
        c.close()
        cl.close()


def test_read_your_writes_across_connections(server, uniq):
    """A write acknowledged on one connection is seen by a read on any
    other, with indices that never go back."""
    writers = [server.client() for _ in range(2)]
    readers = [server.client() for _ in range(4)]
    try:
        last = 0
        for i in range(200):
            w = writers[i % 2].put("%s/k" % uniq, value=str(i))
            assert w.status in (200, 201)
            r = readers[i % 4].get("%s/k" % uniq)
            assert r.status == 200
            assert r.json()["node"]["value"] == str(i)
            assert r.etcd_index >= w.etcd_index >= last
            assert int(r.header("X-Raft-Index")) >= r.etcd_index
            last = r.etcd_index
    finally:
        for c in writers + readers:
            c.close()


def http_threads(pid):
    n = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                n += f.read().strip() == "raftd-http"
        except FileNotFoundError:
            pass
    return n


def moves(client):
    """(connections moved to HTTP threads, moved back) from /metrics."""
    m = client.request("GET", "/metrics").body.decode()
    got = {}
    for ln in m.splitlines():
        for name in ("etcfs_http_moved_to_threads_total", "etcfs_http_moved_to_loop_total"):
            if ln.startswith(name + " "):
                got[name] = int(float(ln.split()[1]))
    return got["etcfs_http_moved_to_threads_total"], got["etcfs_http_moved_to_loop_total"]


def test_which_connections_move(make_server):
    """A connection moves to an HTTP thread at its second plain read, and
    back for good at its first request of any other kind; a client that
    opens a connection per request, or only writes, never moves."""
    if harness.target() != "raftd":
        pytest.skip("raftd's threads")
    s = make_server(extra_args=["--http-threads", "2"])
    meter = s.client()
    base = moves(meter)  # the meter's own requests: first on its connection,
    assert base == (0, 0)  # then /metrics, which is not a plain read

    def delta():
        now = moves(meter)
        return now[0] - base[0], now[1] - base[1]

    for i in range(20):  # a connection per request: never moves
        c = s.client()
        assert c.put("/m/a", value=str(i)).status in (200, 201)
        c.close()
        c = s.client()
        assert c.get("/m/a").status == 200
        c.close()
    w = s.client()  # writes only
    for i in range(20):
        assert w.put("/m/b", value=str(i)).status in (200, 201)
    w.close()
    assert delta() == (0, 0)

    r = s.client()  # reads: moves once, at its second read
    for _ in range(20):
        assert r.get("/m/a").status == 200
    assert delta() == (1, 0)
    assert r.put("/m/a", value="x").status == 200  # back for good
    for _ in range(5):
        assert r.get("/m/a").json()["node"]["value"] == "x"
    assert r.get("/m/a", wait="true", waitIndex="1").status == 200
    assert delta() == (1, 1)
    r.close()


@pytest.mark.parametrize("count", [0, 1, 3])
def test_http_threads_flag(make_server, count):
    if harness.target() != "raftd":
        pytest.skip("a raftd flag")
    s = make_server(extra_args=["--http-threads", str(count)])
    assert http_threads(s.proc.pid) == count
    conns = [s.client() for _ in range(5)]
    try:
        assert conns[0].put("/t", value="x").status == 201
        for c in conns:
            assert c.get("/t").json()["node"]["value"] == "x"
        m = conns[0].request("GET", "/metrics").body.decode()
        gauge = [ln for ln in m.splitlines()
                 if ln.startswith("etcfs_http_connections ")]
        assert gauge and float(gauge[0].split()[1]) >= 5
    finally:
        for c in conns:
            c.close()


def test_default_is_one_http_thread_per_cpu(make_server):
    if harness.target() != "raftd":
        pytest.skip("a raftd flag")
    s = make_server()
    cpus = os.cpu_count()
    assert http_threads(s.proc.pid) == (cpus if cpus > 1 else 0)


def test_stop_under_read_and_write_load(make_server):
    """SIGTERM while clients read and write on many connections: raftd
    exits cleanly (no hang, and the sanitizers see no leak or race)."""
    if harness.target() != "raftd":
        pytest.skip("raftd's shutdown")
    s = make_server(extra_args=["--http-threads", "2"])
    s.client().put("/load", value="x")
    stop = threading.Event()

    def hammer(write):
        port = s.client_port
        while not stop.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                return
            try:
                for _ in range(50):
                    if write:
                        req = (b"PUT /v2/keys/load HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Type: application/x-www-form-urlencoded\r\n"
                               b"Content-Length: 7\r\n\r\nvalue=y")
                    else:
                        req = b"GET /v2/keys/load HTTP/1.1\r\nHost: x\r\n\r\n"
                    sock.sendall(req)
                    if not sock.recv(65536):
                        break
            except OSError:
                pass
            finally:
                sock.close()

    threads = [threading.Thread(target=hammer, args=(i == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        watcher = s.client()

        def loaded():
            st = watcher.request("GET", "/v2/stats/store").json()
            return st["getsSuccess"] > 200 and st["setsSuccess"] > 20
        harness.deadline_poll(loaded, 20, what="reads and writes under way")
        watcher.close()
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        s.proc.wait(timeout=20)
        assert s.proc.returncode == 0
        assert time.monotonic() - t0 < 10
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_half_closed_client_gets_every_answer(server, uniq):
    """Reads, then a write, then the client's EOF, all in one go: raftd
    moves the connection to a thread and back on the way, and still
    answers all three before closing (as etcd)."""
    k = "/v2/keys%s/h" % uniq
    s = socket.create_connection(("127.0.0.1", server.client_port), timeout=5)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % k * 2 +
                   "PUT %s HTTP/1.1\r\nHost: x\r\n"
                   "Content-Type: application/x-www-form-urlencoded\r\n"
                   "Content-Length: 7\r\n\r\nvalue=h" % k).encode())
        s.shutdown(socket.SHUT_WR)
        c = RawConn(0, sock=s)
        got = [next_response(c)[0] for _ in range(3)]
        assert got == [404, 404, 201]
        s.settimeout(5)
        assert c.buf == b"" and s.recv(65536) == b""  # then EOF
    finally:
        s.close()


def test_expect_continue_on_a_connection_that_moved(server, uniq):
    """Two reads move the connection to a thread; a PUT with
    Expect: 100-continue is answered 100 there, then moves back."""
    k = "/v2/keys%s/e" % uniq
    body = b"value=" + b"e" * 2000
    s = socket.create_connection(("127.0.0.1", server.client_port), timeout=5)
    try:
        c = RawConn(0, sock=s)
        for _ in range(2):
            c.get(k)
            assert next_response(c)[0] == 404
        s.sendall(("PUT %s HTTP/1.1\r\nHost: x\r\n"
                   "Content-Type: application/x-www-form-urlencoded\r\n"
                   "Expect: 100-continue\r\nContent-Length: %d\r\n\r\n"
                   % (k, len(body))).encode())
        assert next_response(c)[0] == 100
        s.sendall(body)
        status, _, got = next_response(c)
        assert status == 201 and b'"value":"' + b"e" * 2000 + b'"' in got
    finally:
        s.close()
