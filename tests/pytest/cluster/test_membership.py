# Runtime membership of raftd clusters on loopback (raftd/members.c), as
# etcd 3.4 does it: POST /v2/members adds a member that then joins with
# --initial-cluster-state existing, DELETE removes one (it stops itself),
# PUT re-points a member's peer URL, --force-new-cluster recovers a member
# of a cluster that lost its quorum. Writers keep writing through the
# changes; every acknowledged write must end up on every member. The error
# answers are compared with goldens captured from etcd 3.4.23 (a 3-member
# cluster on loopback, --enable-v2, 2026-11-21).
import json
import os
import sys
import threading

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_util as cu  # noqa: E402
import harness  # noqa: E402

JSON = {"Content-Type": "application/json"}
REMOVED_LOG = "the member has been permanently removed from the cluster"


def make_cluster(request, n, extra_args=()):
    if harness.target() != "raftd":
        pytest.skip("cluster tests start raftd processes")
    c = cu.Cluster(n, heartbeat_ms=50, election_ms=500, extra_args=extra_args)
    request.addfinalizer(lambda: finish(request, c))
    c.start()
    return c


def finish(request, c):
    cu.close_or_fail(c, cu.test_failed(request))


@pytest.fixture
def cluster3(request):
    return make_cluster(request, 3)


def call(m, method, path, body=None, timeout=10):
    cl = m.client(timeout)
    try:
        return cl.request(method, path, body=None if body is None else json.dumps(body),
                          headers=JSON if body is not None else None)
    finally:
        cl.close()


def member_id(m):
    return m.self_stats()["id"]


def add_member(c, via, name, current, timeout=15):
    """POST the new member's peer URL (retrying etcd's 500 while the
    cluster is not fully connected), then start it joining."""
    nm = c.new_member(name, current)

    def posted():
        r = call(via, "POST", "/v2/members", {"peerURLs": [nm.peer_url]})
        if r.status == 500:
            return None
        return r
    r = cu.poll(posted, timeout, "POST /v2/members accepted", interval=0.2)
    assert r.status == 201, (r.status, r.body)
    body = json.loads(r.body)
    assert r.body.endswith(b"\n")
    assert body["name"] == "" and body["clientURLs"] == []
    assert body["peerURLs"] == [nm.peer_url]
    nm.start()
    c.wait_serving(nm, 30)
    return nm, body["id"]


class Writer:
    """Threads PUTting distinct keys through the given members the whole
    time; remembers every acknowledged write."""

    def __init__(self, members, prefix="/load", threads=2):
        self.members = list(members)
        self.prefix = prefix
        self.acked = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(t, threads))
                        for t in range(threads)]

    def run(self, t, nthreads):
        i = t
        while not self.stop.is_set():
            m = self.members[i % len(self.members)]
            key = "%s/k%06d" % (self.prefix, i)
            cl = m.client(2)
            try:
                r = cl.put(key, value=str(i))
                if r.status in (200, 201):
                    with self.lock:
                        self.acked[key] = str(i)
            except OSError:
                pass
            finally:
                cl.close()
            i += nthreads

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()

    def count(self):
        with self.lock:
            return len(self.acked)

    def wait_more(self, n, timeout=15):
        start = self.count()
        cu.poll(lambda: self.count() >= start + n, timeout,
                "%d more acknowledged writes" % n)


keys_on = cu.keys_on


def assert_everywhere(members, acked, d="/load", timeout=20):
    for m in members:
        def has_all(m=m):
            got = keys_on(m, d)
            return got is not None and all(got.get(k) == v for k, v in acked.items())
        cu.poll(has_all, timeout, "every acknowledged write on %s" % m.name,
                interval=0.2)


def listed_ids(m):
    st, js = m.get_json("/v2/members")
    assert st == 200
    return sorted(x["id"] for x in js["members"])


def test_add_member_under_write_load(cluster3):
    c = cluster3
    old = list(c.members)
    with Writer(old) as w:
        w.wait_more(20)
        nm, nid = add_member(c, old[0], "m3", old)
        w.members.append(nm)
        w.wait_more(50)
    assert len(w.acked) > 70
    assert_everywhere(c.members, w.acked)
    want = sorted([member_id(m) for m in old] + [nid])
    for m in c.members:
        cu.poll(lambda m=m: listed_ids(m) == want, 10, "4 members on %s" % m.name)
    # the new member has published its name and client URL
    st, js = nm.get_json("/v2/members")
    me = [x for x in js["members"] if x["id"] == nid][0]
    assert me["name"] == "m3" and me["clientURLs"] == [nm.url]
    # a joined member restarts from its data dir
    nm.stop()
    nm.start()
    c.wait_serving(nm, 30)
    assert member_id(nm) == nid
    assert_everywhere([nm], w.acked)


def remove(c, via, victim):
    vid = member_id(victim)
    r = call(via, "DELETE", "/v2/members/" + vid)
    assert r.status == 204, (r.status, r.body)
    assert r.body == b""
    return vid


def test_remove_follower_under_write_load(cluster3):
    c = cluster3
    leader = c.wait_leader()
    f = next(m for m in c.members if m is not leader)
    rest = [m for m in c.members if m is not f]
    with Writer(rest) as w:
        w.wait_more(20)
        vid = remove(c, leader, f)
        # etcd 3.4 stops a removed member with this line and exit code 0
        assert f.wait_exit(10) == 0
        assert REMOVED_LOG in f.stderr_text()
        w.wait_more(50)
    assert_everywhere(rest, w.acked)
    for m in rest:
        assert vid not in listed_ids(m)
    # removed ids are remembered: 410 as etcd
    r = call(leader, "DELETE", "/v2/members/" + vid)
    assert (r.status, r.body) == (410, ('{"message":"Member permanently removed: %s"}' % vid).encode())
    # and the removed member, restarted with its data dir, stops again
    f.start()
    assert f.wait_exit(15) == 0
    assert f.stderr_text().count(REMOVED_LOG) >= 2


def test_remove_the_leader(cluster3):
    c = cluster3
    leader = c.wait_leader()
    rest = [m for m in c.members if m is not leader]
    with Writer(rest) as w:
        w.wait_more(20)
        remove(c, rest[0], leader)
        assert leader.wait_exit(10) == 0
        c.wait_leader(10, rest)
        w.wait_more(50)
    assert_everywhere(rest, w.acked)
    assert len(listed_ids(rest[0])) == 2


def test_grow_from_one_to_three(request):
    c = make_cluster(request, 1)
    m0 = c.members[0]
    with Writer([m0]) as w:
        w.wait_more(20)
        m1, _ = add_member(c, m0, "m1", [m0])
        w.wait_more(20)
        m2, _ = add_member(c, m1, "m2", [m0, m1])
        w.members += [m1, m2]
        w.wait_more(30)
    assert_everywhere(c.members, w.acked)
    for m in c.members:
        assert len(listed_ids(m)) == 3
    # the single member started its peer transport when it gained a peer
    assert "listening for peers" in m0.stderr_text()
    # 3 members: one can fail and the others still commit
    m0.kill9()
    survivor = c.wait_leader(10, [m1, m2])
    r = survivor.client().put("/after", value="x")
    assert r.status in (200, 201)


def test_new_member_catches_up_by_snapshot(request):
    c = make_cluster(request, 3, extra_args=["--snapshot-count", "500"])
    leader = c.wait_leader()
    n_keys = 5600  # past the 5000 entries a leader keeps after a snapshot
    failures = cu.put_many(leader, n_keys)
    assert not failures, failures[:5]
    nm, _ = add_member(c, leader, "m3", list(c.members))

    def caught_up():
        got = keys_on(nm, "/snap")
        return got is not None and len(got) == n_keys
    cu.poll(caught_up, 30, "the new member catching up", interval=0.2)
    assert "installed the leader's snapshot" in nm.stderr_text()


def test_update_peer_urls(cluster3):
    c = cluster3
    leader = c.wait_leader()
    f = next(m for m in c.members if m is not leader)
    fid = member_id(f)
    other = next(m for m in c.members if m is not leader and m is not f)
    # a peer URL another member has: 409 as etcd
    r = call(leader, "PUT", "/v2/members/" + fid, {"peerURLs": [other.peer_url]})
    assert (r.status, r.body) == (409, b'{"message":"membership: peerURL exists"}')
    # an unknown member: 404 as etcd
    r = call(leader, "PUT", "/v2/members/1234", {"peerURLs": ["http://127.0.0.1:1"]})
    assert (r.status, r.body) == (404, b'{"message":"No such member: 1234"}')
    # move the follower to a new peer port
    f.stop()
    f.peer_port = harness.free_port()
    r = call(leader, "PUT", "/v2/members/" + fid, {"peerURLs": [f.peer_url]})
    assert (r.status, r.body) == (204, b"")
    st, js = leader.get_json("/v2/members")
    assert [x["peerURLs"] for x in js["members"] if x["id"] == fid] == [[f.peer_url]]
    f.start()  # --listen-peer-urls is the new port now
    c.wait_serving(f, 30)
    r = leader.client().put("/moved", value="yes")
    assert r.status in (200, 201)

    def has():
        got = keys_on(f, "/")
        return got is not None and got.get("/moved") == "yes"
    cu.poll(has, 15, "a write reaching the re-pointed member", interval=0.2)


def test_member_errors_match_etcd(cluster3):
    c = cluster3
    leader = c.wait_leader()
    m = leader
    before = m.client().put("/before", value="0").json()["node"]["createdIndex"]
    # a peer URL a member has (all members connected): 409 as etcd
    r = call(m, "POST", "/v2/members", {"peerURLs": [c.members[1].peer_url]})
    assert (r.status, r.body) == (409, b'{"message":"membership: peerURL exists"}')
    r = call(m, "DELETE", "/v2/members/1234")
    assert (r.status, r.body) == (404, b'{"message":"No such member: 1234"}')
    # an added member that has not started: etcd refuses another add (500,
    # "etcdserver: unhealthy cluster" in its log: not every member is
    # connected), as it does a second add with the same URL
    r = call(m, "POST", "/v2/members", {"peerURLs": ["http://127.0.0.1:1"]})
    assert r.status == 201, r.body
    nid = json.loads(r.body)["id"]
    for url in ("http://127.0.0.1:2", "http://127.0.0.1:1"):
        r = call(m, "POST", "/v2/members", {"peerURLs": [url]})
        assert (r.status, r.body) == (500, b'{"message":"Internal Server Error"}')
    # an unstarted member can be removed; then it is gone for good
    r = call(m, "DELETE", "/v2/members/" + nid)
    assert (r.status, r.body) == (204, b"")
    r = call(m, "DELETE", "/v2/members/" + nid)
    assert (r.status, r.body) == (410, ('{"message":"Member permanently removed: %s"}' % nid).encode())
    r = call(m, "PUT", "/v2/members/" + nid, {"peerURLs": ["http://127.0.0.1:3"]})
    assert (r.status, r.body) == (500, b'{"message":"Internal Server Error"}')
    # store indexes as etcd's: an add takes 1, a removal 2 (etcd 3.4.23:
    # add, update, update, remove, then a key at +6)
    r = m.client().put("/foo", value="1")
    assert r.status == 201
    assert r.json()["node"]["createdIndex"] == before + 1 + 2 + 1


def test_join_with_unknown_peer_url_fails(cluster3):
    c = cluster3
    nm = c.new_member("m3", c.members[:3])
    nm.start()  # never added: the cluster has 3 members, it lists 4
    assert nm.wait_exit(15) == 1
    assert "member count is unequal" in nm.stderr_text()
    # a member added with another peer URL than the one it advertises
    r = call(c.members[0], "POST", "/v2/members", {"peerURLs": ["http://127.0.0.1:1"]})
    assert r.status == 201
    nm.start()
    assert nm.wait_exit(15) == 1
    assert "no match found for existing member" in nm.stderr_text()


def test_force_new_cluster_recovers_a_member(cluster3):
    c = cluster3
    leader = c.wait_leader()
    for i in range(20):
        assert leader.client().put("/keep/k%d" % i, value=str(i)).status in (200, 201)
    survivor = c.members[0]
    cu.poll(lambda: len(keys_on(survivor, "/keep") or {}) == 20, 10, "data on the survivor")
    for m in c.members[1:]:
        m.kill9()  # the cluster lost its quorum
    survivor.stop()
    survivor.extra_args = ["--force-new-cluster"]
    survivor.start()
    c.wait_serving(survivor, 30)
    assert "forcing restart of member" in survivor.stderr_text()
    assert keys_on(survivor, "/keep") == {"/keep/k%d" % i: str(i) for i in range(20)}
    r = survivor.client().put("/keep/new", value="x")
    assert r.status in (200, 201)
    assert listed_ids(survivor) == [member_id(survivor)]
    # and it stays a one-member cluster after a plain restart
    survivor.stop()
    survivor.extra_args = []
    survivor.start()
    c.wait_serving(survivor, 30)
    assert keys_on(survivor, "/keep")["/keep/new"] == "x"


def test_data_dir_of_another_member_is_refused(cluster3):
    c = cluster3
    a, b = c.members[1], c.members[2]
    cu.poll(lambda: all(x["name"] for x in a.get_json("/v2/members")[1]["members"]),
            10, "every member published")
    a.stop()
    b.stop()
    own = a.data_dir
    a.data_dir = b.data_dir  # b's data dir under a's --name
    a.start()
    assert a.wait_exit(15) == 1
    assert "belongs to member %s" % b.name in a.stderr_text()
    a.data_dir = own
    a.start()
    c.wait_serving(a, 30)


def test_snapshot_carries_membership_changes(request):
    """A follower down while a member's peer URL changed, and past the
    compaction of that change, learns the new URL (from the snapshot, or
    from the publishes applied after it): once the old leader is gone, it
    and the moved member must reach each other to make a quorum."""
    c = make_cluster(request, 3, extra_args=["--snapshot-count", "500"])
    a = c.wait_leader()
    b, f = [m for m in c.members if m is not a]
    f.kill9()
    bid = member_id_of(a, b.name)
    b.peer_port = harness.free_port()
    r = call(a, "PUT", "/v2/members/" + bid, {"peerURLs": [b.peer_url]})
    assert (r.status, r.body) == (204, b"")  # committed by a and b
    b.stop()
    b.start()  # now on the new port
    c.wait_serving(b, 30)
    failures = cu.put_many(a, 5600)
    assert not failures, failures[:5]
    f.start()
    c.wait_serving(f, 30)
    cu.poll(lambda: len(keys_on(f, "/snap") or {}) == 5600, 30,
            "f caught up", interval=0.2)
    assert "installed the leader's snapshot" in f.stderr_text()
    a.kill9()
    new = c.wait_leader(15, [b, f])
    assert new.client().put("/after", value="x").status in (200, 201)


def member_id_of(via, name):
    st, js = via.get_json("/v2/members")
    return [x["id"] for x in js["members"] if x["name"] == name][0]
