# Three raftd processes on loopback as one cluster (raftd/peer.c): writes on
# any member are readable on all; the cluster lists every member; a killed
# leader is replaced within 3 election timeouts and no acknowledged write
# is lost; a killed follower restarted catches up. Timers are small
# (heartbeat 50 ms, election 500 ms); every process is killed in teardown.
import base64
import hashlib
import os
import re
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_util as cu  # noqa: E402
import harness  # noqa: E402

ELECTION_MS = 500


@pytest.fixture
def cluster(request):
    yield from cu.started(request, 3, heartbeat_ms=50, election_ms=ELECTION_MS)


def try_put(m, key, value, timeout=1.0):
    """Status of PUT key=value on member m, None if it did not answer."""
    cl = m.client(timeout)
    try:
        return cl.put(key, value=value).status
    except OSError:
        return None
    finally:
        cl.close()


def value_on(m, key, timeout=1.0):
    cl = m.client(timeout)
    try:
        r = cl.get(key)
        return r.json()["node"]["value"] if r.status == 200 else None
    except OSError:
        return None
    finally:
        cl.close()


keys_on = cu.keys_on


def test_write_on_any_member_is_readable_on_all(cluster):
    for i, m in enumerate(cluster.members):
        assert try_put(m, "/any/k%d" % i, "v%d" % i) in (200, 201)
    for m in cluster.members:
        cu.poll(lambda m=m: keys_on(m, "/any") == {
            "/any/k0": "v0", "/any/k1": "v1", "/any/k2": "v2"},
            10, "all writes visible on %s" % m.name)
    # a quorum read on a follower goes through the leader's read index
    leader = cluster.wait_leader()
    f = next(m for m in cluster.members if m is not leader)
    cl = f.client()
    try:
        r = cl.get("/any/k0", quorum="true")
        assert r.status == 200 and r.json()["node"]["value"] == "v0"
        r = cl.request("GET", "/v2/stats/leader")
        assert r.status == 403
        assert cl.request("GET", "/health").json() == {"health": "true"}
    finally:
        cl.close()
    cl = leader.client()
    try:
        assert cl.request("GET", "/v2/stats/leader").status == 200
    finally:
        cl.close()


def test_members_and_machines_list_every_member(cluster):
    want = {m.name: (m.peer_url, m.url) for m in cluster.members}
    for m in cluster.members:
        def listed(m=m):
            st, js = m.get_json("/v2/members")
            if st != 200:
                return False
            got = {x["name"]: (x["peerURLs"], x["clientURLs"]) for x in js["members"]}
            return got == {k: ([p], [c]) for k, (p, c) in want.items()}
        cu.poll(listed, 10, "/v2/members on %s" % m.name)
        cl = m.client()
        try:
            machines = cl.request("GET", "/v2/machines").body.decode().split(", ")
        finally:
            cl.close()
        assert sorted(machines) == sorted(c for _, c in want.values())


def test_leader_kill_fails_over_without_losing_acknowledged_writes(cluster):
    leader = cluster.wait_leader()
    acked = {}
    stop = threading.Event()
    errors = []

    def writer(idx):
        # each writer writes its own keys through every member in turn
        n = 0
        while not stop.is_set():
            m = cluster.members[n % 3]
            key = "/ack/w%d_%d" % (idx, n)
            st = try_put(m, key, str(n), timeout=0.5) if m.alive() else None
            if st in (200, 201):
                acked[key] = str(n)
            elif st is not None and st >= 500 and st not in (500, 503):
                errors.append((key, st))
            n += 1

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        cu.poll(lambda: len(acked) >= 20, 15, "writes before the kill")
        t0 = time.monotonic()
        leader.kill9()
        rest = [m for m in cluster.members if m is not leader]

        def served():
            # short timeouts: a write forwarded to the dead leader is lost
            # and would only fail after etcd's request timeout
            for m in rest:
                if try_put(m, "/failover/probe", "1", timeout=0.1) in (200, 201):
                    return True
            return False
        cu.poll(served, 10, "a write after the leader was killed", interval=0.01)
        failover = time.monotonic() - t0
        new_leader = cluster.wait_leader(members=rest)
        assert new_leader is not leader
        before = len(acked)
        cu.poll(lambda: len(acked) >= before + 20, 15, "writes after failover")
    finally:
        stop.set()
        for t in threads:
            t.join()
    sys.stdout.write("failover (kill to first acknowledged write): %.3f s\n" % failover)
    assert failover < 3 * ELECTION_MS / 1000.0, (
        "failover took %.3f s; survivors' logs:\n%s" % (failover, "\n".join(
            m.stderr_text()[-1500:] for m in rest)))
    assert not errors, errors
    # every acknowledged write is on every survivor
    for m in rest:
        cu.poll(lambda m=m: (lambda got: got is not None and all(
            got.get(k) == v for k, v in acked.items()))(keys_on(m, "/ack")),
            10, "acknowledged writes on %s" % m.name)
    # the old leader comes back as a follower and catches up
    leader.start()
    cluster.wait_serving(leader)
    cu.poll(lambda: (lambda got: got is not None and all(
        got.get(k) == v for k, v in acked.items()))(keys_on(leader, "/ack")),
        15, "acknowledged writes on the restarted old leader")


def test_killed_follower_restarted_catches_up(cluster):
    leader = cluster.wait_leader()
    f = next(m for m in cluster.members if m is not leader)
    f.kill9()
    for i in range(50):
        assert try_put(leader, "/catch/k%02d" % i, "v%d" % i, timeout=5) in (200, 201)
    f.start()
    cluster.wait_serving(f)
    want = {"/catch/k%02d" % i: "v%d" % i for i in range(50)}
    cu.poll(lambda: keys_on(f, "/catch") == want, 15, "the follower catching up")
    # and it takes part again: a write through it is seen by the leader
    assert try_put(f, "/catch/after", "x", timeout=5) in (200, 201)
    cu.poll(lambda: value_on(leader, "/catch/after") == "x", 10, "write via follower")


@pytest.fixture
def snap_cluster(request):
    yield from cu.started(request, 3, heartbeat_ms=50, election_ms=ELECTION_MS,
                          extra_args=["--snapshot-count", "1000"])


def big_value(i):
    """About 1 KB that LZ4 cannot shrink much: the snapshot of 6500 of
    them spans several 1 MiB pieces."""
    h = hashlib.sha512(b"%d" % i).digest()
    out = bytearray()
    while len(out) < 760:
        h = hashlib.sha512(h).digest()
        out += h
    return "v%d-" % i + base64.b64encode(bytes(out)).decode()


def test_lagging_follower_gets_a_snapshot(snap_cluster):
    """A follower down while the leader wrote more entries than it keeps
    after a snapshot (5000) is streamed the snapshot file, in pieces, and
    catches up."""
    c = snap_cluster
    leader = c.wait_leader()
    f = next(m for m in c.members if m is not leader)
    f.kill9()
    # With --snapshot-count 1000 the last snapshot before n_keys entries
    # is at about 1001 * (n_keys // 1001) and the log keeps the 5000
    # entries before it: 5600 keys left the follower's next index just
    # inside that window now and then (caught up from the log, no
    # snapshot); 6500 puts it 1000 entries out.
    n_keys = 6500
    failures = cu.put_many(leader, n_keys, value=big_value)
    assert not failures, failures[:5]
    cu.poll(lambda: "saved snapshot" in leader.stderr_text(), 20,
            "a snapshot on the leader")
    f.start()
    c.wait_serving(f, 30)

    want = {"/snap/k%05d" % i: big_value(i) for i in range(n_keys)}
    cu.poll(lambda: keys_on(f, "/snap", timeout=5) == want, 30,
            "the lagging follower catching up", interval=0.2)
    assert "installed the leader's snapshot" in f.stderr_text()
    sent = [int(b) for b in re.findall(
        r"sending snapshot at index \d+ \((\d+) bytes\) to peer",
        leader.stderr_text())]
    assert sent and max(sent) > 3 * (1 << 20), sent  # several pieces
    assert re.search(r"snapshot at index \d+ to peer \w+: sent",
                     leader.stderr_text())
    # it keeps following: a new write reaches it
    assert try_put(leader, "/snap/after", "x", timeout=5) in (200, 201)
    cu.poll(lambda: value_on(f, "/snap/after") == "x", 10, "a write after the snapshot")
    # and it restarts from what it installed
    f.stop()
    f.start()
    c.wait_serving(f, 30)
    cu.poll(lambda: value_on(f, "/snap/after") == "x", 10, "state after restart")
    assert value_on(f, "/snap/k00000") == big_value(0)


def test_follower_killed_mid_snapshot_catches_up(snap_cluster):
    """A follower killed while the leader streams it a snapshot: the
    leader's transfer fails with the connection (and is not reported as
    sent), the follower's half-written temp file is removed when it
    restarts, and the next transfer, from the first piece, catches it up."""
    c = snap_cluster
    leader = c.wait_leader()
    f = next(m for m in c.members if m is not leader)
    f.kill9()
    # 17 MB: more than loopback's socket buffers and the 2 MiB window
    # hold, so the leader is still sending when the follower stops.
    n_keys = 16000
    failures = cu.put_many(leader, n_keys, fmt="/mid/k%05d", value=big_value)
    assert not failures, failures[:5]
    cu.poll(lambda: "saved snapshot" in leader.stderr_text(), 20,
            "a snapshot on the leader")
    snap_dir = os.path.join(f.data_dir, "member", "snap")
    sent_re = re.compile(r"snapshot at index \d+ to peer \w+: sent")
    f.start()
    # The follower creates its temp file at the first piece: kill it then.
    deadline = time.monotonic() + 30
    tmp = []
    while not tmp and time.monotonic() < deadline:
        try:
            tmp = [x for x in os.listdir(snap_dir) if ".snap.tmp." in x]
        except FileNotFoundError:
            pass
        if not tmp:
            time.sleep(0.001)
    assert tmp, "no snapshot transfer began"
    f.kill9()
    cut = not sent_re.search(leader.stderr_text())
    if cut:  # killed mid-transfer: the leader must say it failed
        cu.poll(lambda: re.search(
            r"snapshot at index \d+ to peer \w+: (?!sent)",
            leader.stderr_text()), 15, "the failed transfer on the leader")
        assert not sent_re.search(leader.stderr_text())
    f.start()
    c.wait_serving(f, 30)
    want = {"/mid/k%05d" % i: big_value(i) for i in range(n_keys)}
    cu.poll(lambda: keys_on(f, "/mid", timeout=5) == want, 30,
            "the follower catching up after the cut", interval=0.2)
    assert sent_re.search(leader.stderr_text())
    if cut:
        assert "removed stale temp file" in f.stderr_text()
    assert not [x for x in os.listdir(snap_dir) if ".snap.tmp." in x]


def test_member_of_another_cluster_is_refused(cluster):
    """A raftd bootstrapped into another cluster that names one of our
    members as its peer is refused at the handshake (logged, as etcd), and
    our cluster keeps serving."""
    target = cluster.members[0]
    other = cu.Cluster(1, heartbeat_ms=50, election_ms=ELECTION_MS)
    try:
        x = other.members[0]
        x.name = "intruder"
        other.token = "another-cluster"
        other.initial_cluster = lambda: "intruder=%s,%s=%s" % (
            x.peer_url, target.name, target.peer_url)
        x.start()
        cu.poll(lambda: "cluster ID mismatch" in target.stderr_text(), 10,
                "the refusal logged by %s" % target.name)
        # the intruder never gets a leader: it has no quorum
        st, js = x.get_json("/health")
        assert st != 200 or js != {"health": "true"}
    finally:
        other.close()
    assert try_put(target, "/refused/ok", "1", timeout=5) in (200, 201)


def test_health_follows_quorum(cluster):
    leader = cluster.wait_leader()
    followers = [m for m in cluster.members if m is not leader]
    for m in cluster.members:
        assert m.get_json("/health") == (200, {"health": "true"})
    for f in followers:
        f.kill9()
    # the leader steps down once it has not heard from a quorum (check
    # quorum, one election timeout), and then reports unhealthy
    cu.poll(lambda: leader.get_json("/health")[0] == 503, 10,
            "/health false without quorum")
    assert try_put(leader, "/health/x", "1", timeout=2) not in (200, 201)
    followers[0].start()
    cu.poll(lambda: leader.get_json("/health") == (200, {"health": "true"}), 15,
            "/health true with a quorum again")


def test_five_members_survive_two_failures():
    if harness.target() != "raftd":
        pytest.skip("cluster tests start raftd processes")
    c = cu.Cluster(5, heartbeat_ms=50, election_ms=ELECTION_MS)
    failed = True
    try:
        c.start()
        for i, m in enumerate(c.members):
            assert try_put(m, "/five/k%d" % i, "v%d" % i, timeout=5) in (200, 201)
        leader = c.wait_leader()
        other = next(m for m in c.members if m is not leader)
        leader.kill9()
        other.kill9()
        rest = [m for m in c.members if m.alive()]
        c.wait_leader(15, members=rest)
        cu.poll(lambda: any(try_put(m, "/five/after", "x", timeout=0.5) in (200, 201)
                            for m in rest), 15, "a write with 3 of 5 members")
        want = {"/five/k%d" % i: "v%d" % i for i in range(5)}
        want["/five/after"] = "x"
        for m in rest:
            cu.poll(lambda m=m: keys_on(m, "/five") == want, 10,
                    "all writes on %s" % m.name)
        failed = False
    finally:
        reports = c.close(failed)
    if reports:
        pytest.fail("sanitizer report:\n" + "\n".join(reports))
