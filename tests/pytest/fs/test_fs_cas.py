# -o cas: close() stores with the modifiedIndex seen at open as prevIndex
# (or prevExist=false for a key absent at open); a write that raced in
# between fails the close with ECANCELED (EEXIST for a create) and nothing
# is written. Without cas the last writer wins. Both the memfs test backend
# (remote writes through its control channel) and raftd --mount (remote
# writes over HTTP).
import errno
import os
import subprocess

import pytest

from fs_util import wait_for, xattr
from test_fs_raftd import fsm_raftd, http  # noqa: F401 (fixture)


def _mi(path):
    return int(xattr(path, "user.etcd.modifiedIndex"))


def _read(path):
    with open(path) as f:
        return f.read()


def _remote_set_memfs(m, key, value):
    before = _mi(m.p(key)) if os.path.exists(m.p(key)) else 0
    m.control("set /%s %s" % (key, value))
    # The control channel is asynchronous: wait until the store has it.
    wait_for(lambda: _mi_or_0(m.p(key)) > before, 5, "remote set")


def _mi_or_0(path):
    try:
        return _mi(path)
    except OSError:
        return 0


def _close_errno(fd):
    try:
        os.close(fd)
    except OSError as e:
        return e.errno
    return 0


def test_cas_close_after_remote_change_is_ecanceled(fsm_make):
    m = fsm_make("cas")
    with open(m.p("k"), "w") as f:
        f.write("base")
    for flags in (os.O_WRONLY | os.O_TRUNC, os.O_RDWR):
        fd = os.open(m.p("k"), flags)
        _remote_set_memfs(m, "k", "theirs")
        theirs = _mi(m.p("k"))
        os.pwrite(fd, b"mine", 0)
        assert _close_errno(fd) == errno.ECANCELED
        # Nothing written: the other writer's value and index stay, and the
        # kernel does not keep the refused bytes.
        assert _read(m.p("k")) == "theirs"
        assert _mi(m.p("k")) == theirs
        assert os.stat(m.p("k")).st_size == len("theirs")
        with open(m.p("k"), "w") as f:
            f.write("base")


def test_cas_without_interference_is_one_set(fsm_make):
    m = fsm_make("cas")
    with open(m.p("k"), "w") as f:
        f.write("v0")
    mi0 = _mi(m.p("k"))
    with open(m.p("k"), "w") as f:        # O_TRUNC
        f.write("v1")
    assert _read(m.p("k")) == "v1"
    assert _mi(m.p("k")) == mi0 + 1
    with open(m.p("k"), "r+") as f:       # read-modify-write
        assert f.read() == "v1"
        f.seek(0)
        f.write("v2")
    assert _read(m.p("k")) == "v2"
    assert _mi(m.p("k")) == mi0 + 2
    # Two stores through one fd: the second is conditional on the first's
    # index, not the open's.
    fd = os.open(m.p("k"), os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"a")
    os.fsync(fd)
    os.write(fd, b"b")
    os.close(fd)
    assert _read(m.p("k")) == "ab"
    assert _mi(m.p("k")) == mi0 + 4
    # The shell: echo and append work as usual.
    subprocess.run(["sh", "-c", "echo x > %s && echo y >> %s" % (m.p("k"), m.p("k"))],
                   check=True)
    assert _read(m.p("k")) == "x\ny\n"


def test_cas_create_raced_is_eexist(fsm_make):
    m = fsm_make("cas")
    fd = os.open(m.p("new"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    m.control("set /new theirs")
    wait_for(lambda: _mi_or_0(m.p("new")) > 0, 5, "remote create")
    theirs = _mi(m.p("new"))
    os.write(fd, b"mine")
    assert _close_errno(fd) == errno.EEXIST
    assert _read(m.p("new")) == "theirs"
    assert _mi(m.p("new")) == theirs
    # Unraced creates still work (touch and echo).
    subprocess.run(["sh", "-c", "echo v > %s && touch %s" % (m.p("a"), m.p("b"))],
                   check=True)
    assert _read(m.p("a")) == "v\n" and _read(m.p("b")) == ""


def test_cas_key_deleted_since_open_is_enoent(fsm_make):
    m = fsm_make("cas")
    with open(m.p("k"), "w") as f:
        f.write("v")
    fd = os.open(m.p("k"), os.O_WRONLY | os.O_TRUNC)
    m.control("rm /k")
    wait_for(lambda: not os.path.exists(m.p("k")), 5, "remote delete")
    os.write(fd, b"mine")
    assert _close_errno(fd) == errno.ENOENT
    assert not os.path.exists(m.p("k"))


def test_cas_truncate_and_shell_message(fsm_make):
    m = fsm_make("cas")
    with open(m.p("k"), "w") as f:
        f.write("hello")
    os.truncate(m.p("k"), 2)                 # get + set with prevIndex
    assert _read(m.p("k")) == "he"
    # From the shell: the redirection's close fails, and sh says so.
    # cat's close of its stdout (a dup of fd 3) stores, and fails. No other
    # process may hold fd 3 meanwhile: the exit of a pipeline's echo closed
    # its inherited copy after cat's write and took the store (and the
    # error) from cat, now and then.
    script = 'exec 3>%s; echo opened >&2; read _; cat >&3 <<<mine' % m.p("k")
    p = subprocess.Popen(["bash", "-c", script], stdin=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stderr.readline().strip() == "opened"
    _remote_set_memfs(m, "k", "theirs")
    _, err = p.communicate("go\n", timeout=10)
    assert p.returncode != 0
    assert "Operation canceled" in err, err
    assert _read(m.p("k")) == "theirs"


def test_default_last_writer_wins(fsm):
    # Without -o cas the same race silently overwrites the other writer.
    with open(fsm.p("k"), "w") as f:
        f.write("base")
    fd = os.open(fsm.p("k"), os.O_WRONLY | os.O_TRUNC)
    _remote_set_memfs(fsm, "k", "theirs")
    os.write(fd, b"mine")
    os.close(fd)
    assert _read(fsm.p("k")) == "mine"
    fd = os.open(fsm.p("new"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    fsm.control("set /new theirs")
    wait_for(lambda: _mi_or_0(fsm.p("new")) > 0, 5, "remote create")
    os.write(fd, b"mine")
    os.close(fd)
    assert _read(fsm.p("new")) == "mine"


def test_cas_option_is_parsed(fsm_make):
    m = fsm_make("cas,timeout=30,noinotify")
    with open(m.p("k"), "w") as f:
        f.write("v")
    assert _read(m.p("k")) == "v"


@pytest.mark.parametrize("fsm_raftd", ["timeout=30,cas"], indirect=True)
def test_raftd_cas(fsm_raftd):
    r = fsm_raftd
    with open(r.p("k"), "w") as f:
        f.write("base")
    mi0 = _mi(r.p("k"))
    # (2) no interference: one set, the index advances by exactly one.
    with open(r.p("k"), "w") as f:
        f.write("v1")
    assert _mi(r.p("k")) == mi0 + 1
    # (1) a PUT over HTTP between open and close: ECANCELED, HTTP's value.
    fd = os.open(r.p("k"), os.O_WRONLY | os.O_TRUNC)
    st, _ = http("PUT", r.url + "/v2/keys/k", value="theirs")
    assert st == 200
    os.write(fd, b"mine")
    assert _close_errno(fd) == errno.ECANCELED
    assert _read(r.p("k")) == "theirs"
    assert _mi(r.p("k")) == mi0 + 2
    # (3) the create case: EEXIST, nothing written.
    fd = os.open(r.p("new"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    st, _ = http("PUT", r.url + "/v2/keys/new", value="theirs")
    assert st == 201
    os.write(fd, b"mine")
    assert _close_errno(fd) == errno.EEXIST
    st, body = http("GET", r.url + "/v2/keys/new")
    assert b'"value":"theirs"' in body
    assert _mi(r.p("new")) == mi0 + 3


def test_raftd_default_last_writer_wins(fsm_raftd):
    r = fsm_raftd
    with open(r.p("k"), "w") as f:
        f.write("base")
    fd = os.open(r.p("k"), os.O_WRONLY | os.O_TRUNC)
    st, _ = http("PUT", r.url + "/v2/keys/k", value="theirs")
    assert st == 200
    os.write(fd, b"mine")
    os.close(fd)
    st, body = http("GET", r.url + "/v2/keys/k")
    assert b'"value":"mine"' in body
