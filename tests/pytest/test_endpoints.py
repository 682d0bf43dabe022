# The other endpoints (/version, /health, /v2/members, /v2/machines,
# /v2/stats/*, /metrics, unknown paths, OPTIONS) and POST ordering under
# concurrent clients.
import re
import threading

import pytest

from harness import go_json
from test_keys import check, ev, node


def test_version(c):
    r = c.request("GET", "/version")
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/json"
    j = r.json()
    assert list(j) == ["etcdserver", "etcdcluster"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", j["etcdserver"]) and re.fullmatch(
        r"\d+\.\d+\.\d+", j["etcdcluster"])
    assert r.body == go_json(j)[:-1], "no trailing newline, Go's json.Marshal"


def test_health(c):
    r = c.request("GET", "/health")
    assert (r.status, r.body) == (200, b'{"health":"true"}')


def test_members_and_machines(c, server):
    r = c.request("GET", "/v2/members")
    assert r.status == 200 and r.headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f]+", r.headers["X-Etcd-Cluster-Id"])
    mid = r.json()["members"][0]["id"]
    assert re.fullmatch(r"[0-9a-f]{1,16}", mid)
    peer = "http://127.0.0.1:%d" % server.peer_port
    assert r.body == go_json({"members": [{"id": mid, "name": server.name,
                                           "peerURLs": [peer],
                                           "clientURLs": [server.url]}]})
    r = c.request("GET", "/v2/machines")
    assert (r.status, r.body) == (200, server.url.encode())
    r = c.request("GET", "/v2/stats/leader")
    assert r.status == 200
    assert r.body == go_json({"leader": mid, "followers": {}})[:-1]  # no newline
    r = c.request("GET", "/v2/stats/self")
    assert r.status == 200 and r.headers["Content-Type"] == "application/json"
    j = r.json()
    assert list(j) == ["name", "id", "state", "startTime", "leaderInfo",
                       "recvAppendRequestCnt", "sendAppendRequestCnt"]
    assert (j["name"], j["id"], j["state"]) == (server.name, mid, "StateLeader")
    assert list(j["leaderInfo"]) == ["leader", "uptime", "startTime"]
    assert j["leaderInfo"]["leader"] == mid


STORE_STATS = ["getsSuccess", "getsFail", "setsSuccess", "setsFail", "deleteSuccess",
               "deleteFail", "updateSuccess", "updateFail", "createSuccess", "createFail",
               "compareAndSwapSuccess", "compareAndSwapFail", "compareAndDeleteSuccess",
               "compareAndDeleteFail", "expireCount", "watchers"]


def test_store_stats_count(c, uniq):
    def stats():
        r = c.request("GET", "/v2/stats/store")
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"
        j = r.json()
        assert list(j) == STORE_STATS
        return j
    a = stats()
    c.put(uniq + "/a", value="1")
    c.put(uniq + "/a", value="1", prevExist="false")
    c.put(uniq + "/a", value="2", prevValue="1")
    c.put(uniq + "/a", value="2", prevValue="nope")
    c.delete(uniq + "/nope")
    b = stats()
    delta = {k: b[k] - a[k] for k in STORE_STATS}
    assert delta["setsSuccess"] == 1 and delta["createFail"] == 1
    assert delta["compareAndSwapSuccess"] == 1 and delta["compareAndSwapFail"] == 1
    assert delta["deleteFail"] == 1


def test_metrics(c):
    r = c.request("GET", "/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    lines = r.body.decode().splitlines()
    assert any(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? [-+0-9.eE]+$", ln) for ln in lines)


def test_unknown_path_and_method(c):
    r = c.request("GET", "/v2/nothing")
    assert (r.status, r.body) == (404, b"404 page not found\n")
    r = c.request("PUT", "/v2/stats/store")
    assert r.status == 405
    r = c.request("PUT", "/version")
    assert r.status == 405


def test_options_preflight(c):
    r = c.request("OPTIONS", "/v2/keys/a")
    assert r.status == 200 and r.body == b""
    assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_post_order_concurrent_clients(server, uniq):
    """8 clients POST 25 times each into one dir at once: every key is named
    by its createdIndex, all distinct, and a sorted listing gives them in
    creation order with the right values."""
    d = uniq + "/queue"
    nthreads, per = 8, 25
    results = [[] for _ in range(nthreads)]
    errors = []

    def worker(t):
        cl = server.client()
        try:
            for n in range(per):
                r = cl.post(d, value="t%d-%d" % (t, n))
                if r.status != 201:
                    errors.append(r)
                    return
                results[t].append(r.json()["node"])
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            cl.close()

    ths = [threading.Thread(target=worker, args=(t,)) for t in range(nthreads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(60)
    assert not errors, errors[:3]
    allnodes = []
    for t in range(nthreads):
        idx = [n["createdIndex"] for n in results[t]]
        assert idx == sorted(idx) and len(set(idx)) == per, "client %d saw out-of-order" % t
        for n in results[t]:
            assert n["key"] == "%s/%020d" % (d, n["createdIndex"])
            assert n["modifiedIndex"] == n["createdIndex"]
        allnodes += results[t]
    assert len({n["key"] for n in allnodes}) == nthreads * per
    allnodes.sort(key=lambda n: n["createdIndex"])
    cl = server.client()
    try:
        r = cl.get(d, sorted="true")
        first = allnodes[0]["createdIndex"]
        check(r, 200, ev("get", node(d, mi=first, ci=first, dir=True, nodes=[
            node(n["key"], n["value"], n["createdIndex"], n["createdIndex"])
            for n in allnodes])))
    finally:
        cl.close()


def test_hidden_dir_not_listed_but_deleted(c, uniq):
    d = uniq + "/p"
    c.put(d + "/_hd/x", value="1")
    i = c.put(d + "/v", value="2").etcd_index
    r = c.get(d, recursive="true", sorted="true")
    check(r, 200, ev("get", node(d, mi=i - 1, ci=i - 1, dir=True, nodes=[
        node(d + "/v", "2", i, i)])))
    assert c.get(d + "/_hd/x").status == 200
    assert c.delete(d, recursive="true").status == 200
    assert c.get(d + "/_hd/x").status == 404


def test_path_edges(c):
    # /v2/keys without the slash is the root listing
    r = c.request("GET", "/v2/keys")
    assert r.status == 200 and r.json()["action"] == "get"
    assert r.json()["node"]["dir"] is True
    for p in ("/", "/v2", "/v2/stats", "/v2/stats/store/", "/health/", "/version/"):
        r = c.request("GET", p)
        assert (r.status, r.body) == (404, b"404 page not found\n"), p
    r = c.request("GET", "/v2/members/abc")
    assert (r.status, r.body) == (404, b'{"message":"Not found"}')
    assert r.headers["Content-Type"] == "application/json"


def test_dir_ttl_set_and_clear(c, uniq):
    d = uniq + "/td"
    r = c.put(d, dir="true", ttl="100")
    assert r.status == 201
    n = r.json()["node"]
    assert list(n) == ["key", "dir", "expiration", "ttl", "modifiedIndex", "createdIndex"]
    r = c.put(d, dir="true", ttl="", prevExist="true")
    j = r.etcd_index
    assert r.status == 200
    j2 = r.json()
    assert list(j2) == ["action", "node", "prevNode"] and j2["action"] == "update"
    assert j2["node"] == node(d, mi=j, ci=n["createdIndex"], dir=True)
    assert list(j2["prevNode"]) == list(n) and j2["prevNode"]["expiration"] == n["expiration"]


def metrics(c):
    r = c.request("GET", "/metrics")
    assert r.status == 200
    out = {}
    for ln in r.body.decode().splitlines():
        if ln and not ln.startswith("#"):
            name, _, val = ln.rpartition(" ")
            out[name] = float(val)
    return out, r.body.decode()


def test_metrics_core_names(c, uniq):
    """The metrics dashboards and alerts key on, with etcd's names."""
    m, text = metrics(c)
    assert m["etcd_server_has_leader"] == 1 and m["etcd_server_is_leader"] == 1
    for name in ("etcd_server_proposals_committed_total", "etcd_server_proposals_applied_total",
                 "etcd_server_proposals_pending", "etcd_server_proposals_failed_total",
                 "etcd_disk_wal_fsync_duration_seconds_count",
                 "etcd_disk_wal_fsync_duration_seconds_sum", "etcd_debugging_store_watchers"):
        assert name in m, name
        assert "# TYPE %s " % name.replace("_count", "").replace("_sum", "") in text, name
    before = m["etcd_server_proposals_committed_total"]
    fsyncs = m["etcd_disk_wal_fsync_duration_seconds_count"]
    for n in range(5):
        c.put(uniq + "/m", value=str(n))
    m2, _ = metrics(c)
    assert m2["etcd_server_proposals_committed_total"] >= before + 5
    assert m2["etcd_server_proposals_applied_total"] >= before + 5 - 1
    assert m2["etcd_disk_wal_fsync_duration_seconds_count"] > fsyncs
    assert '{le="+Inf"}' in text


MEMBER_ERRORS = [
    ("POST", "/v2/members", "text/plain", b"{}", 415,
     b'{"message":"Bad Content-Type text/plain, accept application/json"}'),
    ("POST", "/v2/members", "application/json", b"{bad", 400,
     b'{"message":"invalid character \'b\' looking for beginning of object key string"}'),
    ("POST", "/v2/members", "application/json", b'{"peerURLs":["not a url"]}', 400,
     b'{"message":"URL scheme must be http, https, unix, or unixs: not a url"}'),
    ("POST", "/v2/members", "application/json", b'{"peerURLs":[]}', 400,
     b'{"message":"no valid URLs given"}'),
    ("DELETE", "/v2/members/1234", None, None, 404, b'{"message":"No such member: 1234"}'),
    ("DELETE", "/v2/members/zz", None, None, 404, b'{"message":"No such member: zz"}'),
    ("PUT", "/v2/members/1234", "application/json", b'{"peerURLs":["http://127.0.0.1:1"]}', 404,
     b'{"message":"No such member: 1234"}'),
]


@pytest.mark.parametrize("method,path,ctype,body,status,want", MEMBER_ERRORS,
                         ids=["%s-%s-%d-%d" % (m[0], m[1].rsplit("/", 1)[-1], m[4], n)
                              for n, m in enumerate(MEMBER_ERRORS)])
def test_members_api_errors(c, method, path, ctype, body, status, want):
    """The member API's refusals that change nothing, byte for byte."""
    r = c.request(method, path, body=body, headers={"Content-Type": ctype} if ctype else None)
    assert (r.status, r.body.rstrip(b"\n")) == (status, want), (method, path, r)
    assert r.headers["Content-Type"] == "application/json"


def test_members_leader_and_405(c):
    r = c.request("PATCH", "/v2/members")
    assert r.status == 405
    r = c.request("GET", "/v2/members/leader")
    assert r.status == 200
    assert list(r.json()) == ["id", "name", "peerURLs", "clientURLs"]
    assert r.json() == c.request("GET", "/v2/members").json()["members"][0]
