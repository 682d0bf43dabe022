# The raftd backend end to end: a one-member cluster with its tree mounted
# in-process (raftd --mount DIR); the HTTP API and the mount are two views
# of the same store.
import errno
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import pytest

from fs_util import wait_for, xattr


def raftd_mount_bin():
    from fs_util import memfs_bin
    build = os.path.dirname(os.path.dirname(memfs_bin()))
    return os.path.join(build, "raftd", "raftd")


def free_port():
    for _ in range(100):
        p = random.randint(20000, 60000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                s2 = socket.socket()
                s2.bind(("127.0.0.1", p + 1))
                s2.close()
                return p
            except OSError:
                continue
    raise RuntimeError("no free port")


@pytest.fixture
def fsm_raftd(request):
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    if not os.path.isfile(raftd_mount_bin()):
        pytest.skip("raftd not built")
    tmp = tempfile.mkdtemp(prefix="etcfs-fsr-")
    mnt = os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    peer = "http://127.0.0.1:%d" % (port + 1)
    log = open(os.path.join(tmp, "log"), "w+")
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    env["ETCFS_FS_OPTS"] = getattr(request, "param", "timeout=30")
    proc = subprocess.Popen(
        [raftd_mount_bin(), "--name", "default", "--data-dir", os.path.join(tmp, "data"),
         "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", "default=" + peer, "--mount", mnt],
        stdout=log, stderr=log, env=env)

    class R:
        pass
    r = R()
    r.url, r.mnt, r.proc = url, mnt, proc
    r.p = lambda *a: os.path.join(mnt, *a)
    try:
        wait_for(lambda: os.path.ismount(mnt) or proc.poll() is not None, 15, "mount")
        assert proc.poll() is None, "raftd --mount exited"
        wait_for(lambda: _ok(url + "/v2/keys/"), 15, "leader")
        yield r
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt], stderr=subprocess.DEVNULL)
        log.seek(0)
        text = log.read()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if "Sanitizer" in text or "runtime error" in text:
            pytest.fail("sanitizer report from raftd --mount:\n" + text[-6000:])
        assert proc.returncode == 0, text[-3000:]


def _ok(u):
    try:
        urllib.request.urlopen(u, timeout=1).read()
        return True
    except Exception:
        return False


def http(method, url, **form):
    data = urllib.parse.urlencode(form).encode() if form else None
    req = urllib.request.Request(url, data=data, method=method)
    if data:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_raftd_mount_is_the_same_tree(fsm_raftd):
    r = fsm_raftd
    with open(r.p("k"), "w") as f:
        f.write("from fuse")
    st, body = http("GET", r.url + "/v2/keys/k")
    assert st == 200 and json.loads(body)["node"]["value"] == "from fuse"
    idx = json.loads(body)["node"]["modifiedIndex"]
    assert int(xattr(r.p("k"), "user.etcd.modifiedIndex")) == idx
    # Remote write through HTTP: visible despite 30 s kernel caches.
    assert open(r.p("k")).read() == "from fuse"
    http("PUT", r.url + "/v2/keys/k", value="from http")
    wait_for(lambda: open(r.p("k")).read() == "from http", 3, "invalidation")
    # mkdir / rmdir / errors go through Raft too.
    os.mkdir(r.p("d"))
    st, body = http("GET", r.url + "/v2/keys/d")
    assert json.loads(body)["node"]["dir"] is True
    open(r.p("d", "x"), "w").write("1")
    try:
        os.rmdir(r.p("d"))
        assert False
    except OSError as e:
        assert e.errno == 39  # ENOTEMPTY
    # mv is one index.
    before = int(xattr(r.p(".watch"), "user.etcd.index"))
    os.rename(r.p("d", "x"), r.p("d", "y"))
    assert int(xattr(r.p(".watch"), "user.etcd.index")) == before + 1
    st, body = http("GET", r.url + "/v2/keys/d/y")
    assert json.loads(body)["node"]["value"] == "1"


def test_raftd_watch_lines_equal_http_stream_bytes(fsm_raftd):
    r = fsm_raftd
    os.mkdir(r.p("w"))
    fd = os.open(r.p("w", ".watch"), os.O_RDONLY)
    got = []
    resp = urllib.request.urlopen(
        r.url + "/v2/keys/w?wait=true&recursive=true&stream=true", timeout=10)

    def reader():
        for _ in range(3):
            got.append(resp.readline())
    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.3)
    open(r.p("w", "a"), "w").write("va<&>\u00e9\n")
    http("PUT", r.url + "/v2/keys/w/b", value="x", ttl="100")
    http("DELETE", r.url + "/v2/keys/w/a")
    lines = [os.read(fd, 65536) for _ in range(3)]
    t.join(10)
    os.close(fd)
    resp.close()
    assert [l for l in lines] == got, (lines, got)
    assert json.loads(lines[1])["node"]["ttl"] == 100


def test_raftd_shell_redirection_is_one_store(fsm_raftd):
    """sh and bash open the file, dup2() it to fd 1 and close the original
    before they write: that first close's FLUSH must not store an empty
    value (watchers would see the key empty first). Each command below is
    exactly one store, in order; `: > k` (nothing written) stores the empty
    value at the shell's second close."""
    r = fsm_raftd
    os.mkdir(r.p("sh"))
    k = r.p("sh", "k")
    fd = os.open(r.p("sh", ".watch"), os.O_RDONLY)
    try:
        cmds = [("sh", "echo v1 > %s"), ("sh", "echo v2 > %s"),
                ("bash", "echo v3 > %s"), ("sh", ": > %s"),
                ("sh", "printf x >> %s")]
        for shell, cmd in cmds:
            subprocess.run([shell, "-c", cmd % k], check=True, timeout=10)
        # One close, nothing written: the empty value is stored at the
        # release, which close(2) does not wait for; an open on this mount
        # right after still reads after that store.
        os.close(os.open(k, os.O_WRONLY | os.O_TRUNC))
        with open(k, "a") as f:
            f.write("y")
        events, buf = [], b""
        deadline = time.monotonic() + 10
        while len(events) < len(cmds) + 2 and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                buf += os.read(fd, 65536)
                *lines, buf = buf.split(b"\n")
                events += [json.loads(l) for l in lines if l]
        assert [(e["action"], e["node"]["value"]) for e in events] == [
            ("set", "v1\n"), ("set", "v2\n"), ("set", "v3\n"),
            ("set", ""), ("set", "x"), ("set", ""), ("set", "y")]
        # Nothing else was stored: the store's index is the last event's.
        st, body = http("GET", r.url + "/v2/keys/sh/k")
        assert json.loads(body)["node"]["modifiedIndex"] == \
            events[-1]["node"]["modifiedIndex"]
        assert int(xattr(r.p(".watch"), "user.etcd.index")) == \
            events[-1]["node"]["modifiedIndex"]
    finally:
        os.close(fd)


@pytest.mark.parametrize("fsm_raftd", ["timeout=30,quorum"], indirect=True)
def test_raftd_quorum_opens(fsm_raftd):
    r = fsm_raftd
    for i in range(20):
        http("PUT", r.url + "/v2/keys/q", value="v%d" % i)
        # -o quorum: an open after the write returned reads it (ReadIndex).
        with open(r.p("q")) as f:
            assert f.read() == "v%d" % i


def _inotify_watches(pid):
    """Number of inotify watches process pid holds (from /proc fdinfo)."""
    n = 0
    fddir = "/proc/%d/fdinfo" % pid
    for fd in os.listdir(fddir):
        try:
            with open(os.path.join(fddir, fd)) as f:
                n += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            pass
    return n


def test_raftd_inotifywait_sees_http_changes(fsm_raftd, tmp_path):
    """inotifywait -m -r (inotify-tools) on the mount reports changes made
    over HTTP: the notifier replays them through the mount (docs/fs.md)."""
    if shutil.which("inotifywait") is None:
        pytest.skip("inotifywait (inotify-tools) not installed")
    r = fsm_raftd
    out = tmp_path / "events"
    err = tmp_path / "err"
    with open(out, "w") as fo, open(err, "w") as fe:
        ino = subprocess.Popen(
            ["inotifywait", "-m", "-r", "--format", "%e %w%f", r.mnt],
            stdout=fo, stderr=fe)
    try:
        wait_for(lambda: "Watches established" in err.read_text()
                 or ino.poll() is not None, 10, "inotifywait start")
        assert ino.poll() is None, err.read_text()

        def lines():
            return [l.split(" ", 1) for l in out.read_text().splitlines()]

        def seen(ev, path):
            """All inotifywait lines for path whose events include ev."""
            return [e for e, p in lines() if p == path and ev in e.split(",")]

        k = r.p("k")
        st, body = http("PUT", r.url + "/v2/keys/k", value="v1")
        assert st == 201
        first = json.loads(body)["node"]["modifiedIndex"]
        wait_for(lambda: seen("CREATE", k), 5, "CREATE k")
        wait_for(lambda: seen("CLOSE_WRITE", k), 5, "CLOSE_WRITE after create")
        n_close = len(seen("CLOSE_WRITE", k))

        st, _ = http("PUT", r.url + "/v2/keys/k", value="v2")
        assert st == 200
        wait_for(lambda: seen("MODIFY", k), 5, "MODIFY k")
        wait_for(lambda: len(seen("CLOSE_WRITE", k)) > n_close, 5,
                 "CLOSE_WRITE after change")
        assert len(seen("CREATE", k)) == 1, lines()
        # The replay wrote nothing to the store: same value, no new index.
        assert open(k).read() == "v2"

        d = r.p("d")
        st, _ = http("PUT", r.url + "/v2/keys/d", dir="true")
        assert st == 201
        wait_for(lambda: seen("CREATE", d) and seen("ISDIR", d), 5,
                 "CREATE,ISDIR d")
        # -r: inotifywait adds a watch on the new directory; once it holds
        # two, a key created inside is reported with the nested path.
        wait_for(lambda: _inotify_watches(ino.pid) >= 2, 5, "watch on d")
        st, _ = http("PUT", r.url + "/v2/keys/d/x", value="in d")
        assert st == 201
        wait_for(lambda: seen("CREATE", os.path.join(d, "x")), 5, "CREATE d/x")

        st, _ = http("DELETE", r.url + "/v2/keys/k")
        assert st == 200
        wait_for(lambda: seen("DELETE", k), 5, "DELETE k")
        st, body = http("DELETE", r.url + "/v2/keys/d?recursive=true")
        assert st == 200
        wait_for(lambda: seen("DELETE", d), 5, "DELETE d")
        assert not os.path.exists(k) and not os.path.exists(d)
        # Nothing the replays did reached the store: six HTTP writes, six
        # indexes, and still six once the replays are done.
        assert json.loads(body)["node"]["modifiedIndex"] == first + 5
        assert int(xattr(r.p(".watch"), "user.etcd.index")) == first + 5
        st, body = http("GET", r.url + "/v2/keys/")
        assert not json.loads(body)["node"].get("nodes")
    finally:
        if ino.poll() is None:
            ino.kill()
        ino.wait(5)


def test_raftd_local_and_http_writes_race_converge(fsm_raftd):
    """Writes through the mount and over HTTP to one key, interleaved (the
    mount skips the cache invalidation for the event of its own set, only
    for that one): with 30 s kernel caches the size stat() shows and the
    value read end equal to the store's."""
    r = fsm_raftd
    k = r.p("race")
    stop = time.monotonic() + 1.0
    errors = []

    def remote():
        i = 0
        while time.monotonic() < stop:
            st, _ = http("PUT", r.url + "/v2/keys/race", value="R" * (i % 7 + 20))
            if st not in (200, 201):
                errors.append(st)
            i += 1
    t = threading.Thread(target=remote)
    t.start()
    n = 0
    while time.monotonic() < stop:
        with open(k, "w") as f:
            f.write("L" * (n % 5 + 1))
        os.stat(k)  # let the kernel cache the size between writes
        n += 1
    t.join(10)
    assert not errors and n > 10
    st, body = http("GET", r.url + "/v2/keys/race")
    want = json.loads(body)["node"]["value"]
    wait_for(lambda: os.stat(k).st_size == len(want), 3, "size of the last write")
    assert open(k).read() == want


def test_raftd_rename_dir_over_empty_dir(fsm_raftd):
    r = fsm_raftd
    os.makedirs(r.p("src", "sub"))
    open(r.p("src", "sub", "f"), "w").write("deep")
    os.mkdir(r.p("dst"))
    os.rename(r.p("src"), r.p("dst"))
    st, body = http("GET", r.url + "/v2/keys/dst/sub/f")
    assert st == 200 and json.loads(body)["node"]["value"] == "deep"
    assert http("GET", r.url + "/v2/keys/src")[0] == 404
    open(r.p("dst", "x"), "w").write("1")
    os.mkdir(r.p("other"))
    try:
        os.rename(r.p("other"), r.p("dst"))
        assert False, "rename onto a non-empty directory succeeded"
    except OSError as e:
        assert e.errno == errno.ENOTEMPTY
    assert sorted(os.listdir(r.p("dst"))) == ["sub", "x"]


def test_raftd_stops_with_the_mount_busy_and_replays_running(fsm_raftd):
    """SIGTERM while a process has its cwd and an open file in the mount
    (umount would say EBUSY) and HTTP writes keep the notifier replaying:
    raftd exits 0 within seconds and the mount is gone (fs_close aborts
    the connection, joins the notifier, then unmounts)."""
    r = fsm_raftd
    with open(r.p("held"), "w") as f:
        f.write("x")
    holder = subprocess.Popen(["sh", "-c", "exec 3<held; sleep 30"], cwd=r.mnt)
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            try:
                http("PUT", r.url + "/v2/keys/w%d" % (i % 50), value=str(i))
            except OSError:
                return
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        wait_for(lambda: os.path.exists(r.p("w10")), 10, "replays under way")
        r.proc.send_signal(signal.SIGTERM)
        r.proc.wait(15)
        assert r.proc.returncode == 0
        # Not os.path.ismount: a dead FUSE mount fails stat, which
        # ismount takes for "not a mount point".
        def in_mount_table():
            with open("/proc/self/mounts") as f:
                return any(ln.split()[1] == r.mnt for ln in f)
        wait_for(lambda: not in_mount_table(), 5, "mount gone")
    finally:
        stop.set()
        t.join()
        holder.kill()
        holder.wait()
