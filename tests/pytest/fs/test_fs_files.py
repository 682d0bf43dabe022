# Keys as files and directories through a real mount: exact bytes, one set
# per close, open flags, shell tools, hidden keys, inode numbers.
import os
import subprocess

from fs_util import errno_of, wait_for, xattr

import errno


def sh(cmd, cwd):
    return subprocess.run(cmd, shell=True, cwd=cwd, check=True,
                          capture_output=True).stdout


def midx(path):
    return int(xattr(path, "user.etcd.modifiedIndex"))


def test_cat_returns_exact_bytes(fsm):
    data = bytes(range(256)) + b"\x00\xff\xfe tail \n\n"
    with open(fsm.p("bin"), "wb") as f:
        f.write(data)
    assert sh("cat bin", fsm.path) == data
    assert os.path.getsize(fsm.p("bin")) == len(data)
    sh("echo v > k", fsm.path)
    assert sh("cat k", fsm.path) == b"v\n"
    sh("printf 'no newline' > k2", fsm.path)
    assert open(fsm.p("k2"), "rb").read() == b"no newline"


def test_one_set_per_close(fsm):
    sh("echo start > k", fsm.path)
    i0 = midx(fsm.p("k"))
    fd = os.open(fsm.p("k"), os.O_WRONLY | os.O_TRUNC)
    for i in range(50):
        os.write(fd, b"chunk%d\n" % i)
    assert midx(fsm.p("k")) == i0  # nothing stored before close
    os.close(fd)
    assert midx(fsm.p("k")) == i0 + 1
    assert open(fsm.p("k"), "rb").read() == b"".join(b"chunk%d\n" % i for i in range(50))
    # A close without writes stores nothing.
    open(fsm.p("k"), "rb").read()
    assert midx(fsm.p("k")) == i0 + 1


def test_append_truncate_seek_partial(fsm):
    sh("printf abc > k", fsm.path)
    sh("echo more | tee -a k >/dev/null", fsm.path)
    assert open(fsm.p("k"), "rb").read() == b"abcmore\n"
    fd = os.open(fsm.p("k"), os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"X")
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"Y")  # O_APPEND: still at the end
    os.close(fd)
    assert open(fsm.p("k"), "rb").read() == b"abcmore\nXY"
    # Partial overwrite in the middle, keeping the rest.
    with open(fsm.p("k"), "r+b") as f:
        f.seek(1)
        f.write(b"ZZ")
    assert open(fsm.p("k"), "rb").read() == b"aZZmore\nXY"
    sh("truncate -s 3 k", fsm.path)
    assert open(fsm.p("k"), "rb").read() == b"aZZ"
    sh("truncate -s 5 k", fsm.path)
    assert open(fsm.p("k"), "rb").read() == b"aZZ\x00\x00"
    with open(fsm.p("k"), "r+b") as f:
        f.truncate(1)
    assert open(fsm.p("k"), "rb").read() == b"a"
    sh("dd if=/dev/zero of=k bs=1 count=2 seek=4 conv=notrunc status=none", fsm.path)
    assert open(fsm.p("k"), "rb").read() == b"a\x00\x00\x00\x00\x00"


def test_o_excl_and_cp(fsm):
    fd = os.open(fsm.p("new"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    os.write(fd, b"first")
    os.close(fd)
    assert errno_of(os.open, fsm.p("new"), os.O_WRONLY | os.O_CREAT | os.O_EXCL) == errno.EEXIST
    assert open(fsm.p("new"), "rb").read() == b"first"
    sh("cp new copy && cp copy copy2", fsm.path)
    assert open(fsm.p("copy2"), "rb").read() == b"first"
    # touch creates an empty key
    sh("touch empty", fsm.path)
    assert open(fsm.p("empty"), "rb").read() == b""
    assert os.stat(fsm.p("empty")).st_size == 0


def test_dirs_and_tools(fsm):
    sh("mkdir d && mkdir -p a/b/c && echo 1 > a/b/c/f && echo 2 > a/g", fsm.path)
    assert sorted(os.listdir(fsm.path)) == ["a", "d"]
    out = sh("find . | sort", fsm.path).decode().split()
    assert out == [".", "./a", "./a/b", "./a/b/c", "./a/b/c/f", "./a/g", "./d"]
    ls = sh("ls -la a", fsm.path).decode()
    assert " g\n" in ls and " b\n" in ls and ls.startswith("total")
    st = os.stat(fsm.p("a", "g"))
    assert st.st_size == 2 and (st.st_mode & 0o170000) == 0o100000
    assert os.path.isdir(fsm.p("a", "b"))
    assert errno_of(os.rmdir, fsm.p("a")) == errno.ENOTEMPTY
    os.rmdir(fsm.p("d"))
    sh("rm -r a", fsm.path)
    assert os.listdir(fsm.path) == []
    assert errno_of(os.stat, fsm.p("a")) == errno.ENOENT


def test_hidden_keys(fsm):
    os.mkdir(fsm.p("d"))
    fsm.control("set /d/_secret s3cret")
    fsm.control("set /d/visible v")
    wait_for(lambda: os.path.exists(fsm.p("d", "visible")), what="remote set")
    assert os.listdir(fsm.p("d")) == ["visible"]
    assert open(fsm.p("d", "_secret"), "rb").read() == b"s3cret"
    # .watch and .new exist in every directory but are not listed.
    assert os.path.isfile(fsm.p("d", ".watch"))
    assert os.path.isfile(fsm.p(".new"))


def test_inode_numbers_stable_per_path(fsm):
    sh("mkdir d && echo x > d/f && echo y > g", fsm.path)
    a = os.stat(fsm.p("d", "f")).st_ino
    b = os.stat(fsm.p("g")).st_ino
    assert a != b
    sh("echo z > d/f", fsm.path)
    assert os.stat(fsm.p("d", "f")).st_ino == a
    fd = os.open(fsm.p("d", "f"), os.O_RDONLY)
    assert os.fstat(fd).st_ino == a
    os.close(fd)
    assert os.stat(fsm.p("d")).st_ino != a


def test_errno_table(fsm_make):
    m = fsm_make("max_value=1000")
    with open(m.p("f"), "w") as f:
        f.write("x")
    os.mkdir(m.p("d"))
    open(m.p("d", "x"), "w").close()
    assert errno_of(open, m.p("missing")) == errno.ENOENT           # 100
    assert errno_of(open, m.p("d"), "w") == errno.EISDIR             # 102
    assert errno_of(os.mkdir, m.p("f", "sub")) == errno.ENOTDIR      # 104
    assert errno_of(os.mkdir, m.p("d")) == errno.EEXIST              # 105
    assert errno_of(os.rmdir, m.p("d")) == errno.ENOTEMPTY           # 108
    assert errno_of(os.unlink, m.p("missing")) == errno.ENOENT
    # Oversize values and bad names are errors, never a crash.
    fd = os.open(m.p("big"), os.O_WRONLY | os.O_CREAT)
    assert errno_of(os.write, fd, b"x" * 2000) == errno.EFBIG
    os.close(fd)
    assert errno_of(os.mkdir, m.p(".watch")) == errno.EEXIST
    assert errno_of(os.unlink, m.p(".new")) == errno.EPERM
    assert errno_of(os.mkdir, m.p("n" * 300)) == errno.ENAMETOOLONG
    assert errno_of(os.mkfifo, m.p("fifo")) == errno.EPERM
    assert errno_of(os.symlink, "f", m.p("sym")) == errno.EPERM
    assert errno_of(os.link, m.p("f"), m.p("hard")) == errno.EPERM
    # still alive
    assert open(m.p("f")).read() == "x"


def test_read_only_mount_is_erofs(fsm_make):
    r = fsm_make("ro")
    r.control("set /k v")
    wait_for(lambda: os.path.exists(r.p("k")), what="remote set")
    assert open(r.p("k")).read() == "v"
    assert errno_of(open, r.p("k"), "w") == errno.EROFS                 # 107
    assert errno_of(os.mkdir, r.p("d")) == errno.EROFS
    assert errno_of(os.setxattr, r.p("k"), "user.etcd.ttl", b"5") == errno.EROFS


def test_unreachable_backend_is_eio_not_hang(fsm_make):
    m = fsm_make("timeout=0,quorum")
    open(m.p("k"), "w").write("v")
    os.mkdir(m.p("d"))
    m.control("down 1")
    wait_for(lambda: errno_of(os.stat, m.p("k")) == errno.EIO, 3, "EIO")
    assert errno_of(open, m.p("k")) == errno.EIO
    assert errno_of(os.listdir, m.p("d")) == errno.EIO
    assert errno_of(os.mkdir, m.p("e")) == errno.EIO
    # A write fails at close, where the set happens.
    def write():
        with open(m.p("new"), "w") as f:
            f.write("x")
    assert errno_of(write) == errno.EIO
    m.control("down 0")
    wait_for(lambda: errno_of(os.stat, m.p("k")) == 0, 3, "recovery")
    assert open(m.p("k")).read() == "v"
    assert not os.path.exists(m.p("new"))


def test_big_values_and_many_entries(fsm):
    big = os.urandom(1024 * 1024)
    with open(fsm.p("big"), "wb") as f:
        f.write(big)
    assert open(fsm.p("big"), "rb").read() == big
    assert sh("md5sum < big", fsm.path).split()[0] == \
        subprocess.run(["md5sum"], input=big, capture_output=True).stdout.split()[0]
    os.mkdir(fsm.p("many"))
    fsm.control("seq /many 1500")
    wait_for(lambda: len(os.listdir(fsm.p("many"))) == 1500, 10, "1500 keys")
    assert sorted(os.listdir(fsm.p("many")), key=int) == [str(i) for i in range(1500)]


def test_sed_in_place_saves_by_rename(fsm):
    with open(fsm.p("conf"), "w") as f:
        f.write("alpha\nbeta\n")
    sh("sed -i s/beta/gamma/ conf", fsm.path)
    assert open(fsm.p("conf")).read() == "alpha\ngamma\n"
    assert os.listdir(fsm.path) == ["conf"]


def test_every_store_code_maps_through_the_mount(fsm):
    """The one table, end to end: the next write fails with an injected
    etcd code and close(2) reports the table's errno."""
    table = {100: errno.ENOENT, 101: errno.ECANCELED, 102: errno.EISDIR,
             104: errno.ENOTDIR, 105: errno.EEXIST, 106: errno.EPERM,
             107: errno.EROFS, 108: errno.ENOTEMPTY, 110: errno.EACCES,
             209: errno.EINVAL, 300: errno.EIO, 301: errno.EIO,
             401: errno.ERANGE}
    open(fsm.p("k"), "w").write("v")
    for code, want in table.items():
        fsm.control("fail %d" % code)
        # the control FIFO is asynchronous: retry until the failure is seen
        def attempt():
            try:
                with open(fsm.p("k"), "w") as f:
                    f.write(str(code))
            except OSError as e:
                return e.errno
            return None
        got = wait_for(attempt, 3, "injected %d" % code)
        assert got == want, (code, got, want)
    # A failed close stores nothing and leaves the mount working.
    with open(fsm.p("k"), "w") as f:
        f.write("after")
    assert open(fsm.p("k")).read() == "after"


def test_failed_close_is_not_retried_at_release(fsm):
    open(fsm.p("k"), "w").write("base")
    fsm.control("fail 300")
    tries = []

    def attempt():
        tries.append(len(tries))
        try:
            with open(fsm.p("k"), "w") as f:
                f.write("try%d" % tries[-1])
        except OSError as e:
            return e.errno
        return None
    assert wait_for(attempt, 3, "injected failure") == errno.EIO
    # The failing close's value was dropped, not stored at release.
    assert open(fsm.p("k")).read() != "try%d" % tries[-1]


def test_idle_inodes_are_bounded(fsm_make):
    """Forgotten inodes of live paths keep their numbers up to keep_inodes;
    older ones are let go (memory stays bounded)."""
    m = fsm_make("keep_inodes=10")
    for i in range(40):
        open(m.p("f%d" % i), "w").write("x")
    first = {i: os.stat(m.p("f%d" % i)).st_ino for i in range(40)}
    # Make the kernel forget every inode (FORGET for each).
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2")
    except OSError:
        import pytest
        pytest.skip("cannot drop the kernel's dentry cache here")
    again = {i: os.stat(m.p("f%d" % i)).st_ino for i in range(40)}
    kept = [i for i in range(40) if first[i] == again[i]]
    assert 0 < len(kept) <= 11, kept
    assert len(set(again.values())) == 40
