# /v2/stats/leader on a 3-member raftd cluster (raftd/stats.c): the leader
# lists every follower with etcd 3.4's fields in etcd's order; success
# counts grow with writes and latencies (ms) are ordered and plausible; a
# killed follower's fail count grows while its success count stops; a
# follower answers 403 "not current leader". One cluster for the module.
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_util as cu  # noqa: E402

# One follower's object, fields in etcd's order, numbers as Go writes them.
NUM = r"-?\d+(?:\.\d+)?(?:e[+-]\d+)?"
FOLLOWER_RE = re.compile(
    r'"([0-9a-f]+)":\{"latency":\{"current":%s,"average":%s,'
    r'"standardDeviation":%s,"minimum":%s,"maximum":%s\},'
    r'"counts":\{"fail":\d+,"success":\d+\}\}' % ((NUM,) * 5))


@pytest.fixture(scope="module")
def cluster(request):
    yield from cu.started(request, 3, heartbeat_ms=50, election_ms=500)


def leader_stats(m):
    cl = m.client()
    try:
        r = cl.request("GET", "/v2/stats/leader")
        assert r.status == 200, r
        return r.body.decode(), r.json()
    finally:
        cl.close()


def put_n(m, n, key="/stats/k"):
    cl = m.client()
    try:
        for i in range(n):
            assert cl.put(key, value=str(i)).status in (200, 201)
    finally:
        cl.close()


def test_leader_lists_followers_with_growing_counts(cluster):
    leader = cluster.wait_leader()
    followers = [m for m in cluster.members if m is not leader]
    ids = {m.self_stats()["id"] for m in followers}
    put_n(leader, 5)
    raw, before = leader_stats(leader)
    assert before["leader"] == leader.self_stats()["id"]
    assert set(before["followers"]) == ids
    assert raw.startswith('{"leader":"%s","followers":{' % before["leader"])
    assert [m.group(1) for m in FOLLOWER_RE.finditer(raw)] == sorted(ids)

    put_n(leader, 20)
    _, after = leader_stats(leader)
    for fid in ids:
        a, b = after["followers"][fid], before["followers"][fid]
        # every write is appended to each follower and answered
        assert a["counts"]["success"] >= b["counts"]["success"] + 20
        lat = a["latency"]
        assert 0 < lat["minimum"] <= lat["average"] <= lat["maximum"] < 5000
        assert lat["minimum"] <= lat["current"] <= lat["maximum"]
        assert 0 <= lat["standardDeviation"] <= lat["maximum"]

    # followers refuse, as etcd does
    for m in followers:
        cl = m.client()
        try:
            r = cl.request("GET", "/v2/stats/leader")
            assert r.status == 403
            assert r.json() == {"message": "not current leader"}
        finally:
            cl.close()


def test_killed_follower_fail_count_grows(cluster):
    leader = cluster.wait_leader()
    dead, live = [m for m in cluster.members if m is not leader]
    dead_id, live_id = dead.self_stats()["id"], live.self_stats()["id"]

    def counts(fid):
        return leader_stats(leader)[1]["followers"][fid]["counts"]

    fail0 = counts(dead_id)["fail"]
    dead.kill9()
    # Heartbeats and appends to a dead member cannot be sent: failures.
    # Once they start, nothing more from it can be answered.
    cu.poll(lambda: counts(dead_id)["fail"] > fail0, 10, "a first failure")
    dead_start, live_start = counts(dead_id), counts(live_id)
    cu.poll(lambda: counts(dead_id)["fail"] >= dead_start["fail"] + 3, 10,
            "fail count growing")
    put_n(leader, 10, "/stats/after")
    assert counts(dead_id)["success"] == dead_start["success"]
    assert counts(live_id)["success"] >= live_start["success"] + 10
