# Helpers of the FUSE suites: an etcfs-memfs mount (fs/ over an in-process
# store, tests/fs/) in a temporary directory, and polling helpers.
import os
import shutil
import signal
import subprocess
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def memfs_bin():
    build = os.environ.get("ETCFS_BUILD", os.path.join(REPO, "build", "san"))
    return os.path.join(build, "fs", "etcfs-memfs")


def wait_for(pred, timeout=5.0, what="condition"):
    """Poll pred() until it is truthy; return its value or fail."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.01)


class Mount:
    """One etcfs-memfs process and its mountpoint."""

    def __init__(self, opts=None):
        self.tmp = tempfile.mkdtemp(prefix="etcfs-fs-")
        self.path = os.path.join(self.tmp, "mnt")
        os.mkdir(self.path)
        self.fifo = os.path.join(self.tmp, "control")
        os.mkfifo(self.fifo)
        self.log = open(os.path.join(self.tmp, "log"), "w+")
        args = [memfs_bin(), "--control", self.fifo]
        if opts:
            args += ["-o", opts]
        args.append(self.path)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log,
                                     env=env)
        self._ctl = None
        try:
            wait_for(lambda: os.path.ismount(self.path) or self.proc.poll() is not None,
                     10, "mount")
            if self.proc.poll() is not None:
                raise AssertionError("etcfs-memfs exited: " + self.log_text())
            self._ctl = os.open(self.fifo, os.O_WRONLY)
        except BaseException:
            self.stop()
            raise

    def p(self, *parts):
        return os.path.join(self.path, *parts)

    def control(self, line):
        """A "remote" change, applied to the store behind the mount's back."""
        os.write(self._ctl, (line + "\n").encode())

    def log_text(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig=signal.SIGTERM):
        """SIGTERM (clean unmount); escalate to fusermount3 -u and SIGKILL."""
        if self._ctl is not None:
            os.close(self._ctl)
            self._ctl = None
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(10)
            except subprocess.TimeoutExpired:
                subprocess.run(["fusermount3", "-u", "-z", self.path],
                               stderr=subprocess.DEVNULL)
                self.proc.kill()
                rc = self.proc.wait()
        if os.path.ismount(self.path):
            subprocess.run(["fusermount3", "-u", "-z", self.path],
                           stderr=subprocess.DEVNULL)
        return rc

    def cleanup(self):
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def errno_of(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


def xattr(path, name):
    return os.getxattr(path, name).decode()


class Inotify:
    """A minimal inotify reader over ctypes (no third-party module)."""

    IN_MODIFY = 0x2
    IN_CLOSE_WRITE = 0x8
    IN_MOVED_FROM = 0x40
    IN_MOVED_TO = 0x80
    IN_CREATE = 0x100
    IN_DELETE = 0x200
    IN_ISDIR = 0x40000000
    ALL = 0xfff

    def __init__(self, path):
        import ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0
        wd = self.libc.inotify_add_watch(self.fd, path.encode(), self.ALL)
        assert wd >= 0, "inotify_add_watch: errno %d" % ctypes.get_errno()

    def events(self, timeout=0.5):
        """(mask, name) pairs read until timeout passes without news."""
        import select
        import struct
        out = []
        while True:
            r, _, _ = select.select([self.fd], [], [], timeout)
            if not r:
                return out
            buf = os.read(self.fd, 65536)
            i = 0
            while i < len(buf):
                _wd, mask, _cookie, n = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16:i + 16 + n].rstrip(b"\0").decode()
                out.append((mask, name))
                i += 16 + n

    def wait(self, mask, name, timeout=5.0):
        """Return once an event with all bits of mask for name arrives."""
        deadline = time.monotonic() + timeout
        seen = []
        backlog = getattr(self, "backlog", [])
        while time.monotonic() < deadline:
            batch = backlog + self.events(0.1)
            backlog = []
            for i, (m, n) in enumerate(batch):
                seen.append((hex(m), n))
                if n == name and m & mask == mask:
                    self.backlog = batch[i + 1:]
                    return seen
        self.backlog = []
        raise AssertionError("no inotify %s for %r; saw %r" % (hex(mask), name, seen))

    def close(self):
        os.close(self.fd)
