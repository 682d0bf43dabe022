# HTTP/1.1 connection semantics real clients rely on: keep-alive,
# Connection: close, HTTP/1.0, Expect: 100-continue (curl sends it for
# bodies over 1 KiB), HEAD, and chunked stream framing.
import json
import socket
import time

from harness import RawConn, status_of


def read_until_closed(s, timeout=5):
    s.settimeout(timeout)
    buf = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if not d:
            return buf, True
        buf += d
    return buf, False


def test_keep_alive_many_requests_one_connection(server, uniq):
    s = socket.create_connection(("127.0.0.1", server.client_port), timeout=5)
    try:
        for n in range(50):
            body = b"value=%d" % n
            s.sendall(b"PUT /v2/keys" + uniq.encode() + b"/ka HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/x-www-form-urlencoded\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body)
            buf = b""
            while b"\r\n\r\n" not in buf or not buf.endswith(b"}\n"):
                d = s.recv(65536)
                assert d, "server closed a keep-alive connection after %d requests" % n
                buf += d
            assert status_of(buf) in (200, 201)
            assert json.loads(buf.split(b"\r\n\r\n", 1)[1])["node"]["value"] == str(n)
    finally:
        s.close()


def test_connection_close_is_honoured(server):
    s = socket.create_connection(("127.0.0.1", server.client_port), timeout=5)
    try:
        s.sendall(b"GET /v2/keys/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        buf, closed = read_until_closed(s)
        assert status_of(buf) == 200 and closed, buf[:300]
    finally:
        s.close()


def test_http10_closes_after_response(server):
    s = socket.create_connection(("127.0.0.1", server.client_port), timeout=5)
    try:
        s.sendall(b"GET /v2/keys/ HTTP/1.0\r\n\r\n")
        buf, closed = read_until_closed(s)
        assert status_of(buf) == 200 and closed, buf[:300]
    finally:
        s.close()


def test_expect_100_continue(server, uniq):
    body = b"value=" + b"e" * 2000
    s = socket.create_connection(("127.0.0.1", server.client_port), timeout=5)
    try:
        s.sendall(b"PUT /v2/keys" + uniq.encode() + b"/exp HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/x-www-form-urlencoded\r\n"
                  b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        s.settimeout(2)
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        s.sendall(body)
        rc = RawConn(0, sock=s)
        rc.buf = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        assert rc.read_head() == 201
        assert json.loads(rc.read_body())["node"]["value"] == "e" * 2000
    finally:
        s.close()


def test_stream_framing_and_burst(server, c, uniq):
    """A stream watcher gets every one of a burst of 300 writes, in order,
    each event one JSON line."""
    w = RawConn(server.client_port)
    try:
        w.get("/v2/keys" + uniq + "?wait=true&recursive=true&stream=true")
        assert w.read_head() == 200
        assert w.headers.get("transfer-encoding") == "chunked"
        idx = []
        for n in range(300):
            r = c.put("%s/k%d" % (uniq, n % 7), value=str(n))
            idx.append(r.etcd_index)
        for n in range(300):
            ev = json.loads(w.read_event())
            assert (ev["node"]["modifiedIndex"], ev["node"]["value"]) == (idx[n], str(n))
    finally:
        w.close()


def test_head_matches_get_headers(c, uniq):
    c.put(uniq + "/h", value="v")
    g = c.get(uniq + "/h")
    h = c.request("HEAD", "/v2/keys" + uniq + "/h")
    assert h.status == g.status and h.body == b""
    assert h.headers["Content-Type"] == g.headers["Content-Type"]
    assert h.headers["X-Etcd-Index"] == g.headers["X-Etcd-Index"]


def test_request_sent_byte_by_byte(server, uniq):
    body = b"value=a+b%2Bc"
    req = (b"PUT /v2/keys" + uniq.encode() + b"/p+lus HTTP/1.1\r\nHost: x\r\n"
           b"Content-Type: application/x-www-form-urlencoded\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body) + body)
    s = socket.create_connection(("127.0.0.1", server.client_port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i in range(len(req)):
            s.send(req[i:i + 1])
        rc = RawConn(0, sock=s)
        assert rc.read_head() == 201
        n = json.loads(rc.read_body())["node"]
        # '+' is a space in a form value but a plus in a path
        assert (n["key"], n["value"]) == (uniq + "/p+lus", "a b+c")
    finally:
        s.close()


def test_client_vanishes_mid_request(make_server):
    """Clients that reset the connection right after sending a write (the
    answer comes after the fsync, to a connection that is gone), or while
    parked on a watch, must not hurt the server: no crash, no sanitizer
    report at teardown, every write either applied or not, never half."""
    import struct
    s = make_server()
    linger = struct.pack("ii", 1, 0)  # close() sends RST
    for n in range(200):
        so = socket.create_connection(("127.0.0.1", s.client_port))
        so.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        body = b"value=v%d" % n
        if n % 3 == 2:
            so.sendall(b"GET /v2/keys/vanish/k%d?wait=true HTTP/1.1\r\nHost: x\r\n\r\n" % (n - 1))
        else:
            so.sendall(b"PUT /v2/keys/vanish/k%d HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: application/x-www-form-urlencoded\r\n"
                       b"Content-Length: %d\r\n\r\n" % (n, len(body)) + body)
        so.close()
    c = s.client()
    try:
        for n in range(200):
            c.put("/vanish/k%d" % n, value="after")
        r = c.get("/vanish", recursive="true")
        assert r.status == 200
        assert all(x["value"] == "after" for x in r.json()["node"]["nodes"])
        assert len(r.json()["node"]["nodes"]) == 200
    finally:
        c.close()
    assert s.proc.poll() is None


def test_pipelined_request_behind_a_parked_poll_waits_its_turn(server, c, uniq):
    """Responses on one connection come in request order: a GET pipelined
    behind a parked long poll is answered only after the poll is."""
    s = socket.create_connection(("127.0.0.1", server.client_port), timeout=5)
    try:
        c.put(uniq + "/other", value="o")
        s.sendall(b"GET /v2/keys" + uniq.encode() + b"/k?wait=true HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /v2/keys" + uniq.encode() + b"/other HTTP/1.1\r\nHost: x\r\n\r\n")
        rc = RawConn(0, sock=s)
        assert rc.idle_for(0.3), "answered ahead of the parked poll: %r" % rc.buf
        i = c.put(uniq + "/k", value="1").etcd_index
        assert rc.read_head() == 200
        first = json.loads(rc.read_body())
        assert (first["action"], first["node"]["modifiedIndex"]) == ("set", i)
        rc2 = RawConn(0, sock=s)
        rc2.buf = rc.buf
        assert rc2.read_head() == 200
        assert json.loads(rc2.read_body())["node"]["value"] == "o"
    finally:
        s.close()
