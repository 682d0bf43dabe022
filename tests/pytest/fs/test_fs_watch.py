# DIR/.watch: blocking reads of one v2 event line each, per-fd queues,
# poll readiness, history replay by writing an index, the 401 line.
import json
import os
import select
import threading
import time

from fs_util import wait_for, xattr


def read_line(fd, timeout=5.0):
    r, _, _ = select.select([fd], [], [], timeout)
    assert r, "no .watch event within %.1fs" % timeout
    line = os.read(fd, 65536)
    assert line.endswith(b"\n"), line
    return json.loads(line)


def test_watch_blocks_until_event(fsm):
    os.mkdir(fsm.p("d"))
    fd = os.open(fsm.p("d", ".watch"), os.O_RDONLY)
    got = []
    t = threading.Thread(target=lambda: got.append(os.read(fd, 65536)))
    t.start()
    time.sleep(0.2)
    assert got == []  # blocked: nothing happened yet
    with open(fsm.p("d", "k"), "w") as f:
        f.write("v1")
    t.join(5)
    assert not t.is_alive()
    ev = json.loads(got[0])
    assert got[0].count(b"\n") == 1
    assert ev["action"] == "set"
    assert ev["node"]["key"] == "/d/k" and ev["node"]["value"] == "v1"
    assert ev["node"]["modifiedIndex"] == int(xattr(fsm.p("d", "k"), "user.etcd.modifiedIndex"))
    # Events outside the directory are not seen; below it (recursive) are.
    open(fsm.p("outside"), "w").write("x")
    os.makedirs(fsm.p("d", "sub"))
    ev = read_line(fd)
    assert ev["action"] == "create" and ev["node"]["key"] == "/d/sub" and ev["node"]["dir"]
    os.close(fd)


def test_watch_1000_writes_in_order_two_readers(fsm):
    os.mkdir(fsm.p("w"))
    fds = [os.open(fsm.p("w", ".watch"), os.O_RDONLY) for _ in range(2)]
    fsm.control("seq /w 1000")
    for fd in fds:
        f = os.fdopen(fd, "rb", buffering=0)
        idx = None
        for i in range(1000):
            r, _, _ = select.select([f], [], [], 5)
            assert r, "event %d missing" % i
            ev = json.loads(f.readline())
            assert ev["node"]["key"] == "/w/%d" % i
            assert ev["node"]["value"] == str(i)
            if idx is not None:
                assert ev["node"]["modifiedIndex"] == idx + 1
            idx = ev["node"]["modifiedIndex"]
        f.close()


def test_watch_through_mount_writes(fsm):
    os.mkdir(fsm.p("m"))
    fd = os.open(fsm.p("m", ".watch"), os.O_RDONLY)
    for i in range(100):
        with open(fsm.p("m", "k"), "w") as f:
            f.write(str(i))
    for i in range(100):
        ev = read_line(fd)
        assert ev["node"]["value"] == str(i)
    os.close(fd)


def test_poll_readiness_and_nonblock(fsm):
    fd = os.open(fsm.p(".watch"), os.O_RDONLY | os.O_NONBLOCK)
    p = select.poll()
    p.register(fd, select.POLLIN)
    assert p.poll(100) == []
    try:
        os.read(fd, 100)
        assert False, "read should be EAGAIN"
    except BlockingIOError:
        pass
    fsm.control("set /x 1")
    ev = p.poll(5000)
    assert ev and ev[0][1] & select.POLLIN
    assert json.loads(os.read(fd, 65536))["node"]["key"] == "/x"
    assert p.poll(100) == []
    os.close(fd)


def test_queue_starts_at_open_and_index_replay(fsm):
    fsm.control("set /a 1")
    fsm.control("set /a 2")
    wait_for(lambda: os.path.exists(fsm.p("a")), what="remote set")
    wait_for(lambda: open(fsm.p("a")).read() == "2", what="second set")
    idx = int(xattr(fsm.p(".watch"), "user.etcd.index"))
    fd = os.open(fsm.p(".watch"), os.O_RDWR)
    fsm.control("set /a 3")
    assert read_line(fd)["node"]["value"] == "3"  # not 1 or 2: after open
    # Writing an index replays from it: the history, then live events.
    os.write(fd, b"%d\n" % (idx - 1))
    assert read_line(fd)["node"]["value"] == "1"
    assert read_line(fd)["node"]["value"] == "2"
    assert read_line(fd)["node"]["value"] == "3"
    fsm.control("set /a 4")
    assert read_line(fd)["node"]["value"] == "4"
    os.close(fd)


def test_history_cleared_gives_401_line(fsm):
    fsm.control("seq /h 1100")
    wait_for(lambda: int(xattr(fsm.p(".watch"), "user.etcd.index")) >= 1100,
             what="1100 sets")
    fd = os.open(fsm.p(".watch"), os.O_RDWR)
    os.write(fd, b"1")
    err = read_line(fd)
    assert err["errorCode"] == 401
    assert "cleared" in err["message"]
    assert os.read(fd, 100) == b""  # then end of stream
    os.close(fd)


def test_watch_rejects_garbage_index(fsm):
    fd = os.open(fsm.p(".watch"), os.O_RDWR)
    try:
        os.write(fd, b"not-a-number")
        assert False
    except OSError as e:
        assert e.errno == 22
    os.close(fd)


def test_blocked_reader_killed_and_interrupted(fsm):
    import signal
    import subprocess
    # SIGINT as a terminal gives it: a suite started in the background by
    # a non-interactive shell ignores SIGINT, and exec keeps that.
    p = subprocess.Popen(["cat", fsm.p(".watch")], stdout=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                          signal.SIG_DFL))
    time.sleep(0.2)
    assert p.poll() is None  # blocked in read
    p.send_signal(signal.SIGINT)
    assert p.wait(5) != 0
    # A Python reader interrupted by a signal handler gets EINTR retried by
    # Python (PEP 475) and still receives the next event.
    fd = os.open(fsm.p(".watch"), os.O_RDONLY)
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        threading.Timer(0.5, lambda: fsm.control("set /after x")).start()
        ev = json.loads(os.read(fd, 65536))
    finally:
        signal.signal(signal.SIGALRM, old)
    assert fired and ev["node"]["key"] == "/after"
    os.close(fd)
