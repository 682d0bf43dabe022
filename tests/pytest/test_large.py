# Size and backpressure: a multi-megabyte listing comes back whole and
# exact; a stream watcher that never reads cannot stall the server for
# everyone else.
import socket
import threading

import harness


def parallel_puts(server, keys_values, threads=8):
    errors = []

    def worker(part):
        cl = server.client()
        try:
            for k, v in part:
                r = cl.put(k, value=v)
                if r.status not in (200, 201):
                    errors.append(r)
        except Exception as e:
            errors.append(e)
        finally:
            cl.close()
    parts = [keys_values[i::threads] for i in range(threads)]
    ths = [threading.Thread(target=worker, args=(p,)) for p in parts]
    for t in ths:
        t.start()
    for t in ths:
        t.join(120)
    assert not errors, errors[:3]


def test_big_listing(server, c, uniq):
    n = 2500
    kv = [("%s/k%05d" % (uniq, i), ("%05d" % i) * 200) for i in range(n)]  # 1000 B each
    parallel_puts(server, kv)
    r = c.get(uniq, recursive="true", sorted="true")
    assert r.status == 200 and len(r.body) > 2_500_000
    nodes = r.json()["node"]["nodes"]
    assert [(x["key"], x["value"]) for x in nodes] == kv
    assert all(list(x) == ["key", "value", "modifiedIndex", "createdIndex"] for x in nodes)


def test_stalled_stream_reader_does_not_stall_others(server, c, uniq):
    s = socket.create_connection(("127.0.0.1", server.client_port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        s.sendall(("GET /v2/keys%s?wait=true&recursive=true&stream=true HTTP/1.1\r\n"
                   "Host: x\r\n\r\n" % uniq).encode())
        big = "z" * 20000
        # 600 events of 20 KB = 12 MB the stalled reader never takes
        parallel_puts(server, [("%s/k%d" % (uniq, i % 10), big) for i in range(600)], 4)
        # everyone else is still served promptly
        for i in range(20):
            r = c.get(uniq + "/k1", timeout=5)
            assert r.status == 200
        r = c.put(uniq + "/after", value="1", )
        assert r.status == 201
    finally:
        s.close()
    harness.deadline_poll(lambda: c.get(uniq + "/after").status == 200, 5)


def test_deep_nesting_and_long_names(server, c, uniq):
    """2,000 levels of directories (a 4 KB URL, a 4 MB listing), a 4 KB key name: set,
    recursive listing, recursive delete all work and the server lives."""
    deep = uniq + "/deep" + "/d" * 2000
    r = c.put(deep, value="bottom")
    assert r.status == 201, r
    r = c.get(uniq + "/deep", recursive="true")
    assert r.status == 200
    # (too deep for Python's json module: count the nesting in the bytes)
    assert r.body.count(b'"nodes":[') == 2000
    assert (b'{"key":"%s","value":"bottom",' % deep.encode()) in r.body
    longname = uniq + "/" + "L" * 4000
    assert c.put(longname, value="x").status == 201
    assert c.get(longname).json()["node"]["key"] == longname
    r = c.delete(uniq + "/deep", recursive="true")
    assert r.status == 200
    assert c.get(deep).status == 404
