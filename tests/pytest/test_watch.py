# Watches: long poll parked then woken, waitIndex history replay, recursive
# and hidden-key rules, ancestors deleted under a watcher, expire events,
# streams, and the 401 "history cleared" error after 1000 events.
import urllib.parse

import pytest

from harness import RawConn, err_body, go_json
from test_keys import check, ev, node


def watch_path(key, **q):
    q.setdefault("wait", "true")
    return "/v2/keys" + urllib.parse.quote(key, safe="/") + "?" + urllib.parse.urlencode(q)


@pytest.fixture
def raw(server):
    conns = []

    def make():
        rc = RawConn(server.client_port)
        conns.append(rc)
        return rc

    yield make
    for rc in conns:
        rc.close()


def test_long_poll_parks_then_wakes(c, raw, uniq):
    k = uniq + "/k"
    i = c.put(k, value="1").etcd_index
    w = raw()
    w.get(watch_path(k))
    assert w.idle_for(0.3), "long poll answered before any write: %r" % w.buf
    r = c.put(k, value="2")
    j = r.etcd_index
    assert w.read_head() == 200
    assert w.headers["content-type"] == "application/json"
    assert int(w.headers["x-etcd-index"]) == i  # the index when the watch began
    assert "x-raft-index" in w.headers and "x-raft-term" in w.headers
    assert "x-etcd-cluster-id" in w.headers
    assert w.read_body() == go_json(ev("set", node(k, "2", j, j), node(k, "1", i, i)))


def test_long_poll_on_missing_key_sees_create(c, raw, uniq):
    k = uniq + "/new"
    w = raw()
    w.get(watch_path(k))
    assert w.idle_for(0.2)
    r = c.put(k, value="x", prevExist="false")
    j = r.etcd_index
    assert w.read_body() == go_json(ev("create", node(k, "x", j, j)))


def test_history_replay_with_wait_index(c, uniq):
    k = uniq + "/h"
    i1 = c.put(k, value="a").etcd_index
    i2 = c.put(k, value="b").etcd_index
    i3 = c.delete(k).etcd_index
    r = c.get(k, wait="true", waitIndex=str(i1))
    check(r, 200, ev("set", node(k, "a", i1, i1)))
    assert r.etcd_index == i3
    r = c.get(k, wait="true", waitIndex=str(i1 + 1))
    check(r, 200, ev("set", node(k, "b", i2, i2), node(k, "a", i1, i1)))
    r = c.get(k, wait="true", waitIndex=str(i3))
    check(r, 200, ev("delete", node(k, mi=i3, ci=i2), node(k, "b", i2, i2)))


def test_wait_index_in_future_waits(c, raw, uniq):
    k = uniq + "/f"
    i = c.put(k, value="a").etcd_index
    w = raw()
    w.get(watch_path(k, waitIndex=str(i + 2)))
    j = c.put(k, value="b").etcd_index
    assert j == i + 1
    assert w.idle_for(0.3), "woke for an event before waitIndex"
    m = c.put(k, value="c").etcd_index
    assert w.read_body() == go_json(ev("set", node(k, "c", m, m), node(k, "b", j, j)))


def test_recursive_watch_and_hidden_keys(c, raw, uniq):
    d = uniq + "/d"
    c.put(d, dir="true")
    w = raw()
    w.get(watch_path(d, recursive="true"))
    plain = raw()
    plain.get(watch_path(d))
    c.put(d + "/_hidden", value="h")          # hidden: not seen from the parent
    c.put(d + "/sub/_deeper", value="h")      # hidden leaf under a new dir
    assert w.idle_for(0.3), "recursive watcher woke for a hidden key: %r" % w.buf
    j = c.put(d + "/sub/x", value="1").etcd_index
    assert w.read_body() == go_json(ev("set", node(d + "/sub/x", "1", j, j)))
    assert plain.idle_for(0.2), "non-recursive watcher woke for a child"
    # a hidden key is visible to a watcher on the key itself
    r = c.get(d + "/_hidden", wait="true", waitIndex=str(j - 2))
    assert r.status == 200 and r.json()["node"]["key"] == d + "/_hidden"


def test_delete_ancestor_wakes_watchers_below(c, raw, uniq):
    d = uniq + "/w"
    i = c.put(d + "/x", value="1").etcd_index
    # (a watcher on a path that does not exist below the deleted dir is
    # woken by etcd only sometimes, so that case is not specified here)
    w1, w3 = raw(), raw()
    w1.get(watch_path(d + "/x"))
    w3.get(watch_path(d))
    assert w1.idle_for(0.2)
    j = c.delete(d, recursive="true").etcd_index
    want = go_json(ev("delete", node(d, mi=j, ci=i, dir=True), node(d, mi=i, ci=i, dir=True)))
    for w in (w1, w3):
        assert w.read_body() == want


def test_expire_event(c, raw, uniq):
    k = uniq + "/ttl"
    r = c.put(k, value="1", ttl="1")
    i = r.etcd_index
    exp = r.json()["node"]["expiration"]
    w = raw()
    w.get(watch_path(k))
    body = w.read_body(timeout=8)
    j = r.etcd_index + 1
    got = body
    # the expire entry's index is whatever index the store reached; read it back
    import json
    j = json.loads(got)["node"]["modifiedIndex"]
    assert j > i
    assert got == go_json(ev("expire", node(k, mi=j, ci=i),
                             node(k, "1", i, i, expiration=exp)))


def test_stream_watch(c, raw, uniq):
    d = uniq + "/s"
    w = raw()
    w.get(watch_path(d, recursive="true", stream="true"))
    assert w.read_head() == 200
    assert w.chunked
    want = []
    for n in range(3):
        r = c.put("%s/k%d" % (d, n), value=str(n))
        i = r.etcd_index
        want.append(go_json(ev("set", node("%s/k%d" % (d, n), str(n), i, i))))
    for n in range(3):
        assert w.read_event() == want[n]
    i = c.delete(d + "/k0").etcd_index
    assert w.read_event() == go_json(ev("delete", node(d + "/k0", mi=i, ci=i - 3),
                                        node(d + "/k0", "0", i - 3, i - 3)))


def test_stream_watch_replays_history(c, raw, uniq):
    k = uniq + "/r"
    i1 = c.put(k, value="a").etcd_index
    i2 = c.put(k, value="b").etcd_index
    w = raw()
    w.get(watch_path(k, stream="true", waitIndex=str(i1)))
    assert w.read_event() == go_json(ev("set", node(k, "a", i1, i1)))
    # etcd 3.4 quirk: a stream whose waitIndex hits history sends only that
    # first event and is never registered for later ones, so nothing more is
    # asserted here (raftd may do better); i2 must not be reported first.
    assert i2 > i1


def test_watchers_stat_counts_parked_polls(c, raw, server, uniq):
    base = c.request("GET", "/v2/stats/store").json()["watchers"]
    ws = [raw() for _ in range(3)]
    for w in ws:
        w.get(watch_path(uniq + "/x"))
    from harness import deadline_poll
    deadline_poll(lambda: c.request("GET", "/v2/stats/store").json()["watchers"] == base + 3,
                  5, what="stats/store watchers to count 3 parked polls")
    c.put(uniq + "/x", value="1")
    for w in ws:
        assert w.read_head() == 200
        w.read_body()
    deadline_poll(lambda: c.request("GET", "/v2/stats/store").json()["watchers"] == base,
                  5, what="watchers count back after wake-up")


def test_history_cleared(make_server):
    """Only the last 1000 events are kept: older waitIndex -> 401."""
    s = make_server()
    c = s.client()
    try:
        last = None
        for n in range(1010):
            last = c.put("/hist", value=str(n)).etcd_index
        start = last - 999
        r = c.get("/hist", wait="true", waitIndex=str(start - 1))
        check(r, 400, err_body(401, "The event in requested index is outdated and cleared",
                               "the requested history has been cleared [%d/%d]"
                               % (start, start - 1), last))
        r = c.get("/hist", wait="true", waitIndex=str(start))
        check(r, 200, ev("set", node("/hist", str(1010 - 1000), start, start),
                         node("/hist", str(1010 - 1001), start - 1, start - 1)))
        # and the server keeps serving watches and writes after the error
        assert c.put("/after", value="1").status == 201
    finally:
        c.close()


def test_watcher_disconnect_is_cleaned_up(c, raw, uniq):
    """Clients that hang up on a parked poll or stream must not leak
    watchers, and a write afterwards must not trip over them."""
    from harness import deadline_poll
    stat = lambda: c.request("GET", "/v2/stats/store").json()["watchers"]
    base = stat()
    ws = [raw() for _ in range(6)]
    for n, w in enumerate(ws):
        w.get(watch_path(uniq + "/k", **({"stream": "true"} if n % 2 else {})))
    deadline_poll(lambda: stat() == base + 6, 5, what="6 watchers parked")
    for w in ws:
        w.close()
    deadline_poll(lambda: stat() == base, 5, what="watchers released after clients hung up")
    r = c.put(uniq + "/k", value="1")
    assert r.status == 201
    assert c.get(uniq + "/k").status == 200


def test_partial_request_then_hangup(server, c, uniq):
    import socket
    for data in (b"GET /v2/keys/ HTT", b"PUT /v2/keys/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nvalue=",
                 b"GET /v2/keys/?wait=true&recursive=true HTTP/1.1\r\nHost: x\r\n\r\n"):
        s = socket.create_connection(("127.0.0.1", server.client_port))
        s.sendall(data)
        s.close()
    assert c.put(uniq + "/after", value="1").status == 201
    assert c.get(uniq + "/after").status == 200


def test_history_scan_includes_hidden_keys(c, uniq):
    """etcd quirk kept: live notifications skip hidden keys below a
    recursive watcher, but a waitIndex scan of the history does not."""
    d = uniq + "/d"
    i = c.put(d + "/_h", value="h").etcd_index
    c.put(d + "/x", value="x")
    r = c.get(d, wait="true", recursive="true", waitIndex=str(i))
    check(r, 200, ev("set", node(d + "/_h", "h", i, i)))
