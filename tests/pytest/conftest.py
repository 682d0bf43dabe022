# Fixtures for the black-box suites. ETCFS_TARGET=raftd (default) runs them
# against $ETCFS_BUILD/raftd/raftd; ETCFS_TARGET=etcd against real etcd 3.4,
# the reference every test must pass against.
import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (10k watchers etc.)")


def pytest_report_header(config):
    t = harness.target()
    where = harness.raftd_bin() if t == "raftd" else harness.ETCD_BIN
    return "etcfs black-box target: %s (%s)" % (t, where)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _check_kind(kind):
    if kind == "raftd" and not os.path.isfile(harness.raftd_bin()):
        pytest.fail("raftd binary not found at %s (build it, set ETCFS_BUILD, "
                    "or run with ETCFS_TARGET=etcd)" % harness.raftd_bin())
    if kind == "etcd" and not harness.etcd_available():
        pytest.skip("etcd binary not found at %s" % harness.ETCD_BIN)


def _finish(servers, failed):
    """Stop every server; print logs if the test failed; fail on sanitizer
    reports (a leak or UB found at shutdown is a bug even if answers were right)."""
    reports = []
    for s in servers:
        try:
            s.stop()
            rep = s.sanitizer_report()
            if rep:
                reports.append("%s %s:\n%s" % (s.kind, s.url, rep))
            if failed:
                sys.stdout.write("---- %s stderr (tail) ----\n%s\n"
                                 % (s.kind, s.stderr_text()[-4000:]))
        finally:
            s.cleanup()
    if reports:
        pytest.fail("sanitizer report from server:\n" + "\n".join(reports))


@pytest.fixture(scope="session")
def server():
    """One long-lived server shared by tests that use distinct key prefixes."""
    kind = harness.target()
    _check_kind(kind)
    s = harness.Server(kind)
    try:
        s.start()
    except BaseException:
        s.cleanup()
        raise
    yield s
    _finish([s], False)


@pytest.fixture(autouse=True)
def _shared_server_alive(request):
    """If the shared server died during a test, that test fails with the
    server's stderr (so a crash is blamed on the request that caused it) and
    a fresh server is started for the tests after it."""
    if "server" not in request.fixturenames:
        yield
        return
    s = request.getfixturevalue("server")
    yield
    if s.proc.poll() is None:
        return
    code = s.proc.returncode
    tail = s.stderr_text()[-6000:]
    s.data_dir = os.path.join(s.tmp, "data-%s" % uuid.uuid4().hex[:6])
    open(s.log_path, "w").close()
    s.start()
    pytest.fail("shared %s server died during this test (exit %s); restarted. stderr tail:\n%s"
                % (s.kind, code, tail))


@pytest.fixture
def c(server):
    cl = server.client()
    yield cl
    cl.close()


@pytest.fixture
def uniq(request):
    """A key prefix no other test uses."""
    name = request.node.name.replace("[", "_").replace("]", "").replace("-", "_")
    return "/%s_%s" % (name[:40], uuid.uuid4().hex[:8])


@pytest.fixture
def make_server(request):
    """Factory: make_server(kind=None, start=True) -> harness.Server, torn down
    (kill, wait, temp dir removed) after the test whatever happens."""
    made = []

    def make(kind=None, start=True, **kw):
        kind = kind or harness.target()
        _check_kind(kind)
        s = harness.Server(kind, **kw)
        made.append(s)
        if start:
            s.start()
        return s

    yield make
    rep = getattr(request.node, "rep_call", None)
    _finish(made, rep is not None and rep.failed)
