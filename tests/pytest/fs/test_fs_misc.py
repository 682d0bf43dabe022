# xattrs and TTLs, DIR/.new, rename, cache invalidation on remote changes,
# mount options and clean shutdown.
import errno
import shutil
import os
import signal
import subprocess

from fs_util import errno_of, wait_for, xattr


def test_xattrs_and_ttl(fsm):
    open(fsm.p("k"), "w").write("v")
    out = subprocess.run(["getfattr", "-d", fsm.p("k")], capture_output=True,
                         text=True)
    if out.returncode == 0:  # attr package present
        assert 'user.etcd.createdIndex="1"' in out.stdout
    assert xattr(fsm.p("k"), "user.etcd.createdIndex") == "1"
    assert xattr(fsm.p("k"), "user.etcd.modifiedIndex") == "1"
    assert errno_of(os.getxattr, fsm.p("k"), "user.etcd.ttl") == errno.ENODATA
    assert sorted(os.listxattr(fsm.p("k"))) == ["user.etcd.createdIndex",
                                                 "user.etcd.modifiedIndex"]
    os.setxattr(fsm.p("k"), "user.etcd.ttl", b"30")
    assert 28 <= int(xattr(fsm.p("k"), "user.etcd.ttl")) <= 30
    assert xattr(fsm.p("k"), "user.etcd.expiration").endswith("Z")
    assert open(fsm.p("k")).read() == "v"  # value kept
    os.setxattr(fsm.p("k"), "user.etcd.ttl", b"")
    assert errno_of(os.getxattr, fsm.p("k"), "user.etcd.ttl") == errno.ENODATA
    assert errno_of(os.setxattr, fsm.p("k"), "user.etcd.ttl", b"abc") == errno.EINVAL
    assert errno_of(os.setxattr, fsm.p("k"), "user.etcd.createdIndex", b"1") == errno.EPERM
    # A directory TTL: the directory expires with its keys.
    os.makedirs(fsm.p("d"))
    open(fsm.p("d", "x"), "w").write("1")
    os.setxattr(fsm.p("d"), "user.etcd.ttl", b"1")
    assert xattr(fsm.p("d"), "user.etcd.ttl") == "1"
    wait_for(lambda: not os.path.exists(fsm.p("d")), 5, "dir expiry")
    assert errno_of(os.stat, fsm.p("d", "x")) == errno.ENOENT


def test_new_posts_in_order_keys(fsm):
    os.mkdir(fsm.p("q"))
    names = []
    for v in (b"job1", b"job2"):
        fd = os.open(fsm.p("q", ".new"), os.O_RDWR)
        os.write(fd, v)
        name = os.read(fd, 100)
        os.close(fd)
        assert name.endswith(b"\n")
        names.append(name.strip().decode())
    assert len(names[0]) == 20 and names[0] < names[1]
    assert sorted(os.listdir(fsm.p("q"))) == names
    assert open(fsm.p("q", names[1]), "rb").read() == b"job2"
    # Plain shell redirection posts at close.
    subprocess.run("echo job3 > q/.new", shell=True, cwd=fsm.path, check=True)
    assert len(os.listdir(fsm.p("q"))) == 3


def test_rename_is_one_op_and_editor_save(fsm):
    open(fsm.p("a"), "w").write("A")
    ino = os.stat(fsm.p("a")).st_ino
    before = int(xattr(fsm.p(".watch"), "user.etcd.index"))
    subprocess.run(["mv", fsm.p("a"), fsm.p("b")], check=True)
    assert int(xattr(fsm.p(".watch"), "user.etcd.index")) == before + 1
    assert not os.path.exists(fsm.p("a"))
    assert open(fsm.p("b")).read() == "A"
    assert os.stat(fsm.p("b")).st_ino == ino
    # Directories move with their subtree.
    os.makedirs(fsm.p("d1", "sub"))
    open(fsm.p("d1", "sub", "f"), "w").write("deep")
    os.rename(fsm.p("d1"), fsm.p("d2"))
    assert open(fsm.p("d2", "sub", "f")).read() == "deep"
    assert not os.path.exists(fsm.p("d1"))
    # Editors: write a temporary file, then rename it over the original.
    tmp = fsm.p(".b.swp")
    with open(tmp, "w") as f:
        f.write("edited")
    os.replace(tmp, fsm.p("b"))
    assert open(fsm.p("b")).read() == "edited"
    assert sorted(os.listdir(fsm.path)) == ["b", "d2"]


def test_rename_dir_over_empty_dir_replaces_it(fsm):
    """POSIX rename(2): a directory replaces an empty directory (a delete
    then the move: two indexes); a non-empty target is ENOTEMPTY and kept;
    a file onto a directory EISDIR, a directory onto a file ENOTDIR."""
    from fs_util import Inotify
    os.makedirs(fsm.p("src", "sub"))
    open(fsm.p("src", "sub", "f"), "w").write("deep")
    os.mkdir(fsm.p("empty"))
    os.mkdir(fsm.p("full"))
    open(fsm.p("full", "x"), "w").write("1")
    open(fsm.p("file"), "w").write("F")
    ino = os.stat(fsm.p("src")).st_ino
    ev = Inotify(fsm.path)
    try:
        before = int(xattr(fsm.p(".watch"), "user.etcd.index"))
        os.rename(fsm.p("src"), fsm.p("empty"))
        assert int(xattr(fsm.p(".watch"), "user.etcd.index")) == before + 2
        assert open(fsm.p("empty", "sub", "f")).read() == "deep"
        assert os.stat(fsm.p("empty")).st_ino == ino
        assert not os.path.exists(fsm.p("src"))
        seen = ev.wait(Inotify.IN_MOVED_TO | Inotify.IN_ISDIR, "empty")
        seen += [(hex(m), n) for m, n in ev.backlog + ev.events(0.3)]
        # The delete of the old target is the mount's own: no replay.
        assert not [e for e in seen if int(e[0], 16) & Inotify.IN_DELETE], seen
    finally:
        ev.close()
    assert errno_of(os.rename, fsm.p("empty"), fsm.p("full")) == errno.ENOTEMPTY
    assert os.listdir(fsm.p("full")) == ["x"]
    assert open(fsm.p("empty", "sub", "f")).read() == "deep"
    assert errno_of(os.rename, fsm.p("file"), fsm.p("full")) == errno.EISDIR
    assert errno_of(os.rename, fsm.p("full"), fsm.p("file")) == errno.ENOTDIR
    assert sorted(os.listdir(fsm.path)) == ["empty", "file", "full"]


def test_remote_changes_invalidate_kernel_caches(fsm_make):
    m = fsm_make("timeout=60")  # without invalidation, caches would hold 60 s
    os.mkdir(m.p("d"))
    open(m.p("d", "k"), "w").write("old")
    assert open(m.p("d", "k")).read() == "old"
    assert os.listdir(m.p("d")) == ["k"]
    m.control("set /d/k newer")
    wait_for(lambda: open(m.p("d", "k")).read() == "newer", 3, "data inval")
    assert os.stat(m.p("d", "k")).st_size == 5
    m.control("rm /d/k")
    wait_for(lambda: not os.path.exists(m.p("d", "k")), 3, "entry inval")
    assert errno_of(os.stat, m.p("nope")) == errno.ENOENT
    m.control("set /nope here")
    wait_for(lambda: os.path.exists(m.p("nope")), 3, "negative entry inval")
    m.control("mv /nope /moved")
    wait_for(lambda: os.path.exists(m.p("moved")) and not os.path.exists(m.p("nope")),
             3, "rename inval")


def test_mount_options(fsm_make):
    m = fsm_make("uid=1234,gid=4321,mode=600,root=/config")
    open(m.p("k"), "w").write("v")
    st = os.stat(m.p("k"))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1234, 4321, 0o600)
    assert os.stat(m.path).st_mode & 0o777 == 0o700
    # The subtree root: the key lives at /config/k in the store.
    m.control("set /elsewhere x")
    m.control("set /config/remote y")
    wait_for(lambda: os.path.exists(m.p("remote")), 3, "subtree set")
    assert sorted(os.listdir(m.path)) == ["k", "remote"]
    fd = os.open(m.p(".watch"), os.O_RDONLY)
    m.control("set /elsewhere z")
    m.control("set /config/k2 w")
    import json
    ev = json.loads(os.read(fd, 65536))
    assert ev["node"]["key"] == "/config/k2"
    os.close(fd)


def test_sigterm_and_external_unmount_are_clean(fsm_make):
    m = fsm_make()
    open(m.p("k"), "w").write("v")
    fd = os.open(m.p(".watch"), os.O_RDONLY)  # a watcher open at shutdown
    assert m.stop(signal.SIGTERM) == 0
    try:
        os.close(fd)
    except OSError as e:  # the daemon is gone: the kernel says so
        assert e.errno == errno.ENOTCONN
    assert not os.path.ismount(m.path)
    m2 = fsm_make()
    subprocess.run(["fusermount3", "-u", m2.path], check=True)
    assert m2.proc.wait(10) == 0
    # Shutdown while remote changes are being replayed for inotify.
    m3 = fsm_make()
    os.mkdir(m3.p("busy"))
    m3.control("seq /busy 500")
    wait_for(lambda: len(os.listdir(m3.p("busy"))) > 0, 5, "first sets")
    assert m3.stop(signal.SIGTERM) == 0


def test_inotify_sees_remote_changes(fsm):
    from fs_util import Inotify
    os.mkdir(fsm.p("d"))
    ino = Inotify(fsm.p("d"))
    try:
        fsm.control("set /d/new v")
        ino.wait(Inotify.IN_CREATE, "new")
        fsm.control("set /d/new v2")
        ino.wait(Inotify.IN_MODIFY, "new")
        assert open(fsm.p("d", "new")).read() == "v2"  # the replay wrote nothing
        fsm.control("mkdir /d/sub")
        ino.wait(Inotify.IN_CREATE | Inotify.IN_ISDIR, "sub")
        fsm.control("mv /d/new /d/renamed")
        ino.wait(Inotify.IN_MOVED_FROM, "new")
        ino.wait(Inotify.IN_MOVED_TO, "renamed")
        fsm.control("rm /d/renamed")
        ino.wait(Inotify.IN_DELETE, "renamed")
        fsm.control("rmdir /d/sub")
        ino.wait(Inotify.IN_DELETE | Inotify.IN_ISDIR, "sub")
        assert os.listdir(fsm.p("d")) == []
        fsm.control("ttl /d/short 1")  # expiry is a remote change too
        ino.wait(Inotify.IN_CREATE, "short")
        ino.wait(Inotify.IN_DELETE, "short", timeout=5)
        # Local changes are reported once by the kernel itself, not twice.
        with open(fsm.p("d", "local"), "w") as f:
            f.write("x")
        evs = ino.events(0.5)
        creates = [e for e in evs if e[1] == "local" and e[0] & Inotify.IN_CREATE]
        assert len(creates) == 1, evs
        assert open(fsm.p("d", "local")).read() == "x"
    finally:
        ino.close()


def _as_nobody(*cmd):
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534",
                           "--clear-groups"] + list(cmd), capture_output=True)


def test_allow_other_and_permissions(fsm_make):
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        import pytest
        pytest.skip("needs root and setpriv")
    private = fsm_make()
    shared = fsm_make("allow_other,mode=640")
    for m in (private, shared):
        os.chmod(os.path.dirname(m.path), 0o755)
        open(m.p("k"), "w").write("secret")
        open(m.p("pub"), "w").write("open")
    # Without allow_other, FUSE refuses every other user.
    assert _as_nobody("cat", private.p("pub")).returncode != 0
    # With it, the kernel checks the mount's uid/gid/mode (default_permissions).
    r = _as_nobody("cat", shared.p("pub"))
    assert r.returncode != 0 and b"Permission denied" in r.stderr  # mode 640
    shared2 = fsm_make("allow_other,mode=644")
    os.chmod(os.path.dirname(shared2.path), 0o755)
    open(shared2.p("pub"), "w").write("open")
    r = _as_nobody("cat", shared2.p("pub"))
    assert r.returncode == 0 and r.stdout == b"open"
    r = _as_nobody("sh", "-c", "echo x > " + shared2.p("pub"))
    assert r.returncode != 0  # not the owner: read-only for others


def test_concurrent_load_stays_consistent(fsm):
    """Writers, renames, recursive deletes, readers, a .watch reader and a
    stream of remote changes at once for 3 s: no unexpected errno, every
    .watch line parses, and the daemon ends clean (sanitizers included)."""
    import json
    import select
    import threading
    import time
    stop = time.monotonic() + 3
    errs = []

    def writer(n):
        i = 0
        while time.monotonic() < stop:
            d = fsm.p("d%d" % (i % 3))
            try:
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, "k%d" % (i % 7)), "w") as f:
                    f.write("w%d-%d" % (n, i))
                if i % 5 == 0:
                    os.rename(os.path.join(d, "k%d" % (i % 7)), os.path.join(d, "r%d" % n))
                if i % 11 == 0:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError as e:
                # races with the other writers and remote rmdir are expected
                if e.errno not in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY,
                                   errno.ENOTDIR):
                    errs.append(("w", e))
            i += 1

    def reader():
        while time.monotonic() < stop:
            for root, _dirs, files in os.walk(fsm.path):
                for f in files:
                    try:
                        open(os.path.join(root, f)).read()
                    except OSError as e:
                        if e.errno != errno.ENOENT:
                            errs.append(("r", e))

    def remote():
        i = 0
        while time.monotonic() < stop:
            fsm.control("set /d%d/k%d remote%d" % (i % 3, i % 7, i))
            fsm.control("rmdir /d%d" % ((i + 1) % 3))
            i += 1
            time.sleep(0.002)

    lines = []

    def watcher():
        fd = os.open(fsm.p(".watch"), os.O_RDONLY)
        while time.monotonic() < stop:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                lines.append(json.loads(os.read(fd, 65536)))
        os.close(fd)

    ts = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    ts += [threading.Thread(target=reader), threading.Thread(target=remote),
           threading.Thread(target=watcher)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errs == []
    assert len(lines) > 100
    idx = [ev["node"]["modifiedIndex"] for ev in lines]
    assert idx == sorted(idx)


def test_directory_replaced_by_key_and_back(fsm_make):
    """Directories are answered from the inode table after the first
    lookup; every way a directory can go must end that."""
    m = fsm_make("timeout=0")
    os.makedirs(m.p("d", "sub"))
    assert os.path.isdir(m.p("d"))
    m.control("rmdir /d")
    m.control("set /d now-a-key")
    wait_for(lambda: os.path.isfile(m.p("d")), 3, "dir -> key (remote)")
    assert open(m.p("d")).read() == "now-a-key"
    os.unlink(m.p("d"))
    os.mkdir(m.p("d"))
    assert os.path.isdir(m.p("d"))
    m.control("mv /d /e")
    wait_for(lambda: not os.path.exists(m.p("d")), 3, "dir moved away")
    assert os.path.isdir(m.p("e"))
    m.control("set /d file")
    wait_for(lambda: os.path.isfile(m.p("d")), 3, "new key at old dir path")
    m.control("ttl /t 1")
    m.control("rm /t")
    m.control("mkdir /t")
    wait_for(lambda: os.path.isdir(m.p("t")), 3, "dir created remotely")
    os.setxattr(m.p("t"), "user.etcd.ttl", b"1")
    wait_for(lambda: not os.path.exists(m.p("t")), 5, "dir expired")
