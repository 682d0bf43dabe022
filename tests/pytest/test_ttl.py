# TTLs beyond the basics in test_keys.py: expire events seen by recursive
# watchers and by watchers below an expiring dir, the expireCount stat,
# refresh extending a TTL without waking watchers.
import json

from harness import RawConn, deadline_poll, go_json
from test_keys import ev, node


def stats(c):
    return c.request("GET", "/v2/stats/store").json()


def test_recursive_watch_sees_child_expire(server, c, uniq):
    d = uniq + "/d"
    c.put(d, dir="true")
    r = c.put(d + "/k", value="v", ttl="1")
    i = r.etcd_index
    exp = r.json()["node"]["expiration"]
    w = RawConn(server.client_port)
    try:
        w.get("/v2/keys%s?wait=true&recursive=true&waitIndex=%d" % (d, i + 1))
        body = w.read_body(timeout=8)
        j = json.loads(body)["node"]["modifiedIndex"]
        assert body == go_json(ev("expire", node(d + "/k", mi=j, ci=i),
                                  node(d + "/k", "v", i, i, expiration=exp)))
    finally:
        w.close()


def test_dir_expiry_wakes_watchers_below(server, c, uniq):
    d = uniq + "/td"
    r = c.put(d, dir="true", ttl="1")
    i = r.etcd_index
    exp = r.json()["node"]["expiration"]
    c.put(d + "/child", value="c")
    w = RawConn(server.client_port)
    try:
        w.get("/v2/keys%s/child?wait=true" % d)
        body = w.read_body(timeout=8)
        j = json.loads(body)["node"]["modifiedIndex"]
        assert body == go_json(ev("expire", node(d, mi=j, ci=i, dir=True),
                                  node(d, mi=i, ci=i, dir=True, expiration=exp)))
    finally:
        w.close()
    assert c.get(d + "/child").status == 404


def test_expire_count_and_index(c, uniq):
    before = stats(c)["expireCount"]
    i = c.put(uniq + "/e1", value="x", ttl="1").etcd_index
    c.put(uniq + "/e2", value="x", ttl="1")
    deadline_poll(lambda: c.get(uniq + "/e1").status == 404 and
                  c.get(uniq + "/e2").status == 404, 8, 0.05, "two keys to expire")
    assert stats(c)["expireCount"] >= before + 2
    assert c.get(uniq + "/e1").etcd_index >= i + 3  # each expiry takes an index


def test_refresh_extends_ttl_without_waking_watchers(server, c, uniq):
    k = uniq + "/keep"
    c.put(k, value="v", ttl="1")
    c.put(uniq + "/canary", value="c", ttl="1")
    w = RawConn(server.client_port)
    try:
        w.get("/v2/keys%s?wait=true" % k)
        r = c.put(k, refresh="true", ttl="100")
        assert r.status == 200
        # the canary had the same 1 s TTL: once it is gone, k would be too
        deadline_poll(lambda: c.get(uniq + "/canary").status == 404, 8, 0.05,
                      "the canary to expire")
        r = c.get(k)
        assert r.status == 200 and r.json()["node"]["value"] == "v"
        assert 95 <= r.json()["node"]["ttl"] <= 100
        assert w.idle_for(0.2), "a refresh woke a watcher: %r" % w.buf
        j = c.put(k, value="w").etcd_index
        got = json.loads(w.read_body())
        assert (got["action"], got["node"]["modifiedIndex"]) == ("set", j)
    finally:
        w.close()


def test_mass_expiry_streamed_in_order(server, c, uniq):
    """40 keys with ttl=1 expire together: a recursive stream sees 40
    expire events, one index each, strictly increasing, every key once.
    (Kept under 100 events: etcd drops a stream watcher whose 100-event
    channel fills up.)"""
    d = uniq + "/mass"
    keys = ["%s/k%03d" % (d, i) for i in range(40)]
    w = RawConn(server.client_port)
    try:
        i0 = c.put(d + "/anchor", value="a").etcd_index
        w.get("/v2/keys%s?wait=true&recursive=true&stream=true&waitIndex=%d" % (d, i0 + 1))
        errors = []

        def putter(part):
            cl = server.client()
            try:
                for k in part:
                    if cl.put(k, value="x", ttl="1").status != 201:
                        errors.append(k)
            finally:
                cl.close()
        import threading
        ths = [threading.Thread(target=putter, args=(keys[t::6],)) for t in range(6)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(60)
        assert not errors
        expired = []
        sets = set()
        last = 0
        while len(expired) < len(keys):
            e = json.loads(w.read_event(timeout=10))
            idx = e["node"]["modifiedIndex"]
            assert idx > last, "stream events out of index order"
            last = idx
            if e["action"] == "set":
                sets.add(e["node"]["key"])
            else:
                assert e["action"] == "expire", e
                assert e["node"]["key"] in sets, "expire before its set"
                expired.append(e["node"]["key"])
        assert sorted(expired) == keys and sorted(sets) == keys
        r = c.get(d, recursive="true")
        assert [n["key"] for n in r.json()["node"].get("nodes", [])] == [d + "/anchor"]
    finally:
        w.close()
