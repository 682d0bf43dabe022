# Regression: a path that flips between directory and key by remote
# changes, read at once, while the inotify replayer (which answers with
# the state before each change) races the reader's own requests.
import os
import time

from fs_util import wait_for


def test_dir_key_flip_repeated(fsm_make):
    """Each remote rmdir + set must end, for a reader that polls the path,
    in a regular file with the new value: never EIO (an inode number whose
    type changed) nor an empty read (the replayer's shadow create, size 0,
    clobbering the kernel's attributes of the real inode)."""
    for opts in ("timeout=0", "timeout=1"):
        m = fsm_make(opts)
        d = m.p("d")
        deadline = time.monotonic() + 1.5
        i = 0
        while time.monotonic() < deadline or i < 10:
            os.mkdir(d)
            assert os.path.isdir(d)
            m.control("rmdir /d")
            m.control("set /d v%d" % i)
            wait_for(lambda: os.path.isfile(d), 3, "dir -> key %d" % i)
            assert open(d).read() == "v%d" % i
            m.control("rm /d")
            m.control("mkdir /d")
            wait_for(lambda: os.path.isdir(d), 3, "key -> dir %d" % i)
            assert os.listdir(d) == []
            m.control("rmdir /d")
            wait_for(lambda: not os.path.exists(d), 3, "dir gone %d" % i)
            i += 1
