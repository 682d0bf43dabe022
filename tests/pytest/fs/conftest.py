# Fixtures for the FUSE suites: real mounts of etcfs-memfs in temporary
# directories, always unmounted and killed, even when a test fails. Fixture
# names start with "fsm" so they never clash with the black-box fixtures of
# tests/pytest/conftest.py.
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fs_util import Mount, memfs_bin  # noqa: E402


def _check():
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    if not os.path.isfile(memfs_bin()):
        pytest.fail("etcfs-memfs not found at %s (build it or set ETCFS_BUILD)"
                    % memfs_bin())


def _finish(m, request):
    rc = m.stop()
    text = m.log_text()
    m.cleanup()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print("---- etcfs-memfs log ----\n" + text[-4000:])
    if "Sanitizer" in text or "runtime error" in text:
        pytest.fail("sanitizer report from etcfs-memfs:\n" + text[-6000:])
    assert rc == 0, "etcfs-memfs exit status %r:\n%s" % (rc, text[-3000:])


@pytest.fixture
def fsm(request):
    """A fresh mount with default options (1 s kernel cache timeouts)."""
    _check()
    m = Mount()
    yield m
    _finish(m, request)


@pytest.fixture
def fsm_make(request):
    """Factory for mounts with options: fsm_make("ro,uid=5")."""
    _check()
    mounts = []

    def make(opts=None):
        m = Mount(opts)
        mounts.append(m)
        return m

    yield make
    for m in mounts:
        _finish(m, request)
