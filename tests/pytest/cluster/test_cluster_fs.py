# The FUSE front-end on a three-member cluster: every member runs with
# `--mount`, and each mount shows what any member wrote — through its own
# mount, another member's mount or HTTP — in `cat`, in `.watch` lines and in
# inotify events; writes through a follower's mount are forwarded to the
# leader; `-o quorum` makes a follower's open linearizable; with the
# leader killed a mount write gets a bounded answer, never a hang.
# Every process is stopped and every mount point unmounted in teardown.
import json
import os
import select
import shutil
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_util as cu  # noqa: E402

ELECTION_MS = 500


def _start_mounted(request, monkeypatch, fs_opts):
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    mounts = []

    def add_mounts(c):
        for m in c.members:
            m.mnt = os.path.join(c.tmp, m.name + ".mnt")
            os.mkdir(m.mnt)
            mounts.append(m.mnt)
            m.argv = (lambda argv, mnt: lambda: argv() + ["--mount", mnt])(m.argv, m.mnt)
    # Member.start passes the environment on: the mount options go to all.
    monkeypatch.setenv("ETCFS_FS_OPTS", fs_opts)
    try:
        for c in cu.started(request, 3, prepare=add_mounts, heartbeat_ms=50,
                            election_ms=ELECTION_MS):
            for m in c.members:
                cu.poll(lambda: os.path.ismount(m.mnt), 15, "%s mounted" % m.name)
            yield c
    finally:
        for mnt in mounts:
            if os.path.ismount(mnt):
                subprocess.run(["fusermount3", "-u", "-z", mnt],
                               stderr=subprocess.DEVNULL)


@pytest.fixture
def fs_cluster(request, monkeypatch):
    yield from _start_mounted(request, monkeypatch, "timeout=30,leader_wait=2")


@pytest.fixture
def quorum_cluster(request, monkeypatch):
    yield from _start_mounted(request, monkeypatch, "timeout=30,quorum")


def followers(c):
    lead = c.wait_leader()
    return lead, [m for m in c.members if m is not lead]


def http(m, method, key, **form):
    cl = m.client(5)
    try:
        return cl.request(method, "/v2/keys" + key, form=form or None)
    finally:
        cl.close()


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def sh(cmd):
    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True,
                          timeout=30)


def test_each_mount_shows_writes_made_through_every_other(fs_cluster):
    c = fs_cluster
    lead, _ = followers(c)
    for i, m in enumerate(c.members):
        r = sh("echo v%d > %s/k%d" % (i, m.mnt, i))
        assert r.returncode == 0, r.stderr
        # Acknowledged by close(): on the leader's store already.
        got = http(lead, "GET", "/k%d" % i)
        assert got.status == 200 and got.json()["node"]["value"] == "v%d\n" % i
    for m in c.members:
        for i in range(len(c.members)):
            p = os.path.join(m.mnt, "k%d" % i)
            cu.poll(lambda: read(p) == "v%d\n" % i, 5, "%s shows k%d" % (m.name, i))
    # A directory and an atomic rename through one follower's mount are
    # one store operation each, seen by the other mounts.
    _, (f1, f2) = followers(c)
    assert sh("mkdir -p %s/d/e && echo x > %s/d/e/f && mv %s/d/e/f %s/d/g"
              % ((f1.mnt,) * 4)).returncode == 0
    got = http(lead, "GET", "/d/g")
    assert got.status == 200 and got.json()["node"]["value"] == "x\n"
    cu.poll(lambda: read(os.path.join(f2.mnt, "d", "g")) == "x\n", 5, "d/g on f2")
    cu.poll(lambda: not os.path.exists(os.path.join(f2.mnt, "d", "e", "f")), 5,
            "d/e/f gone on f2")
    assert sorted(os.listdir(os.path.join(f2.mnt, "d"))) == ["e", "g"]


def test_watch_file_on_a_follower_gets_every_member_write_in_order(fs_cluster):
    c = fs_cluster
    _, (f1, _) = followers(c)
    n = 60
    fd = os.open(os.path.join(f1.mnt, ".watch"), os.O_RDONLY)
    try:
        for i in range(n):
            m = c.members[i % 3]
            assert http(m, "PUT", "/w/k", value=str(i)).status in (200, 201)
        events = []
        buf = b""
        deadline = time.monotonic() + 10
        while len(events) < n and time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if not r:
                continue
            buf += os.read(fd, 65536)
            *lines, buf = buf.split(b"\n")
            events += [json.loads(l) for l in lines if l]
        assert [e["node"]["value"] for e in events] == [str(i) for i in range(n)]
        idx = [e["node"]["modifiedIndex"] for e in events]
        assert idx == sorted(idx) and len(set(idx)) == n
    finally:
        os.close(fd)


def test_inotify_on_a_follower_mount_sees_changes_from_other_members(fs_cluster, tmp_path):
    if shutil.which("inotifywait") is None:
        pytest.skip("inotifywait (inotify-tools) not installed")
    c = fs_cluster
    lead, (f1, f2) = followers(c)
    out, err = tmp_path / "events", tmp_path / "err"
    with open(out, "w") as fo, open(err, "w") as fe:
        ino = subprocess.Popen(["inotifywait", "-m", "-r", "--format", "%e %w%f",
                                f1.mnt], stdout=fo, stderr=fe)
    try:
        cu.poll(lambda: "Watches established" in err.read_text()
                or ino.poll() is not None, 10, "inotifywait start")
        assert ino.poll() is None, err.read_text()

        def seen(ev, name):
            path = os.path.join(f1.mnt, name)
            return any(p == path and ev in e.split(",")
                       for e, p in (l.split(" ", 1)
                                    for l in out.read_text().splitlines()))

        assert http(lead, "PUT", "/a", value="1").status == 201   # HTTP, leader
        cu.poll(lambda: seen("CREATE", "a"), 5, "CREATE a")
        assert sh("echo 2 > %s/a" % f2.mnt).returncode == 0       # other mount
        cu.poll(lambda: seen("MODIFY", "a"), 5, "MODIFY a")
        cu.poll(lambda: read(os.path.join(f1.mnt, "a")) == "2\n", 5, "a = 2")
        assert http(f2, "DELETE", "/a").status == 200             # HTTP, follower
        cu.poll(lambda: seen("DELETE", "a"), 5, "DELETE a")
        assert not os.path.exists(os.path.join(f1.mnt, "a"))
    finally:
        if ino.poll() is None:
            ino.kill()
        ino.wait(5)


def test_quorum_mount_on_a_follower_reads_what_the_leader_acknowledged(quorum_cluster):
    c = quorum_cluster
    lead, (f1, _) = followers(c)
    assert http(lead, "PUT", "/q", value="start").status == 201
    path = os.path.join(f1.mnt, "q")
    cu.poll(lambda: read(path) == "start", 5, "q on the follower")
    for i in range(40):
        assert http(lead, "PUT", "/q", value="v%d" % i).status == 200
        # Acknowledged by the leader; the follower may not have applied it
        # yet, but -o quorum makes this open wait for its ReadIndex.
        assert read(path) == "v%d" % i


def kill_and_unmount(m):
    """SIGKILL leaves the mount point dead ("Transport endpoint is not
    connected") until fusermount3 -u, as docs/fs.md says."""
    m.kill9()
    subprocess.run(["fusermount3", "-u", "-z", m.mnt], check=True)


def test_mount_write_without_a_leader_fails_in_bounded_time(fs_cluster):
    c = fs_cluster
    lead, (f1, f2) = followers(c)
    kill_and_unmount(f2)
    kill_and_unmount(lead)

    def no_leader():
        s = f1.self_stats()
        return s is not None and not s.get("leaderInfo", {}).get("leader")
    cu.poll(no_leader, 10, "f1 to notice it has no leader")
    # One member of three: no quorum, so a write through its mount must
    # fail with EIO after the mount's leader_wait (2 s) — never succeed,
    # never hang.
    t0 = time.monotonic()
    r = sh("echo lost > %s/nq" % f1.mnt)
    took = time.monotonic() - t0
    assert r.returncode != 0 and "Input/output error" in r.stderr, r
    assert 1.5 < took < 5, took
    lead.start()
    c.wait_leader(30, members=[lead, f1])
    cu.poll(lambda: os.path.ismount(lead.mnt), 15, "lead mounted again")
    # With a quorum again the same mount takes writes, and the failed one
    # left nothing behind.
    cu.poll(lambda: sh("echo back > %s/nq" % f1.mnt).returncode == 0, 15,
            "a write through f1's mount")
    got = http(lead, "GET", "/nq")
    assert got.status == 200 and got.json()["node"]["value"] == "back\n"
    assert read(os.path.join(lead.mnt, "nq")) == "back\n"
