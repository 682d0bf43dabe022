# Multi-member raftd clusters on loopback for the cluster tests: N raftd
# processes bootstrapped with --initial-cluster on free ports, fast timers
# (heartbeat 50 ms, election 500 ms by default), SIGKILL/restart of one
# member, the leader as every member sees it, and teardown that always
# kills every process and removes the temp dirs (failing on a sanitizer
# report, like the single-member harness).
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness  # noqa: E402


class Member:
    def __init__(self, cluster, idx, name):
        self.cluster = cluster
        self.idx = idx
        self.name = name
        # the member's own loopback address (cluster.hosts, e.g. 127.0.0.2
        # inside a network namespace: partition_util.py)
        self.host = cluster.hosts[idx] if cluster.hosts else "127.0.0.1"
        self.client_port = harness.free_port()
        self.peer_port = harness.free_port()
        self.data_dir = os.path.join(cluster.tmp, name)
        self.log_path = os.path.join(cluster.tmp, name + ".log")
        self.proc = None
        # A member joining a running cluster (Cluster.new_member) starts
        # with its own --initial-cluster and state "existing".
        self.initial_cluster = None
        self.state = "new"
        self.extra_args = []

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.client_port)

    @property
    def peer_url(self):
        return "http://%s:%d" % (self.host, self.peer_port)

    def argv(self):
        c = self.cluster
        return c.exec_prefix + [harness.raftd_bin(),
                "--name", self.name, "--data-dir", self.data_dir,
                "--listen-client-urls", self.url,
                "--advertise-client-urls", self.url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.initial_cluster or c.initial_cluster(),
                "--initial-cluster-state", self.state,
                "--initial-cluster-token", c.token,
                "--heartbeat-interval", str(c.heartbeat_ms),
                "--election-timeout", str(c.election_ms)] + c.extra_args \
            + self.extra_args

    def start(self):
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        for k in [k for k in env if k.startswith("ETCD_")]:
            del env[k]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, env=env,
                                     cwd=self.cluster.tmp)
        log.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout=20):
        return harness.stop_process(self.proc, timeout)

    def wait_exit(self, timeout):
        """The exit code once the process ends within timeout."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running after %.0f s:\n%s"
                                 % (self.name, timeout, self.stderr_text()[-3000:]))

    def client(self, timeout=5):
        return harness.Client(self.host, self.client_port, timeout)

    def stderr_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def sanitizer_report(self):
        return harness.sanitizer_report(self.stderr_text())

    def get_json(self, path, timeout=2):
        """(status, parsed JSON or None); (None, None) if unreachable."""
        cl = self.client(timeout)
        try:
            r = cl.request("GET", path)
            try:
                return r.status, json.loads(r.body)
            except ValueError:
                return r.status, None
        except OSError:
            return None, None
        finally:
            cl.close()

    def self_stats(self):
        st, js = self.get_json("/v2/stats/self")
        return js if st == 200 else None


class Cluster:
    def __init__(self, n=3, heartbeat_ms=50, election_ms=500, extra_args=(),
                 hosts=None, exec_prefix=()):
        # hosts: one address per member (default all 127.0.0.1);
        # exec_prefix: argv before raftd's, e.g. ["ip", "netns", "exec", ns]
        self.hosts = list(hosts) if hosts else None
        self.exec_prefix = list(exec_prefix)
        self.tmp = tempfile.mkdtemp(prefix="etcfs-cluster-")
        self.token = "etcfs-test-%d" % os.getpid()
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.extra_args = list(extra_args)
        self.members = [Member(self, i, "m%d" % i) for i in range(n)]

    def initial_cluster(self):
        return ",".join("%s=%s" % (m.name, m.peer_url) for m in self.members
                        if m.state == "new")

    def new_member(self, name, current):
        """A member (not started) to join with --initial-cluster-state
        existing: its --initial-cluster lists current (the members of the
        cluster now) and itself. Added to self.members for teardown."""
        m = Member(self, len(self.members), name)
        m.state = "existing"
        m.initial_cluster = ",".join("%s=%s" % (x.name, x.peer_url)
                                     for x in list(current) + [m])
        self.members.append(m)
        return m

    def start(self, timeout=30):
        for m in self.members:
            m.start()
        self.wait_leader(timeout)
        for m in self.members:
            self.wait_serving(m, timeout)

    def wait_serving(self, m, timeout=30):
        def ok():
            if not m.alive():
                raise AssertionError("%s exited:\n%s" % (m.name, m.stderr_text()[-3000:]))
            st, _ = m.get_json("/v2/keys/")
            return st == 200
        harness.deadline_poll(ok, timeout, 0.05, "%s serving" % m.name)

    def leader(self, members=None):
        """The member every live member (of members) names as leader, or None."""
        members = [m for m in (members or self.members) if m.alive()]
        ids = set()
        for m in members:
            s = m.self_stats()
            if s is None:
                return None
            ids.add(s.get("leaderInfo", {}).get("leader", ""))
        if len(ids) != 1 or "" in ids:
            return None
        lid = ids.pop()
        for m in members:
            s = m.self_stats()
            if s is not None and s.get("id") == lid:
                return m
        return None

    def wait_leader(self, timeout=30, members=None):
        return harness.deadline_poll(lambda: self.leader(members), timeout, 0.05,
                                     "an agreed leader")

    def close(self, failed=False):
        """Kill everything, remove the temp dir; returns sanitizer reports."""
        reports = []
        for m in self.members:
            try:
                m.stop()
            finally:
                if m.proc is not None and m.proc.poll() is None:
                    m.kill9()
            rep = m.sanitizer_report()
            if rep:
                reports.append("%s:\n%s" % (m.name, rep))
            if failed:
                sys.stdout.write("---- %s stderr (tail) ----\n%s\n"
                                 % (m.name, m.stderr_text()[-4000:]))
        shutil.rmtree(self.tmp, ignore_errors=True)
        return reports


def poll(cond, timeout, what, interval=0.05):
    return harness.deadline_poll(cond, timeout, interval, what)


def keys_on(m, d, timeout=2.0):
    """{key: value} of the keys under directory d on member m (recursive),
    or None if m did not answer 200."""
    cl = m.client(timeout)
    try:
        r = cl.get(d, recursive="true")
        if r.status != 200:
            return None
        return {n["key"]: n["value"] for n in r.json()["node"].get("nodes", [])}
    except OSError:
        return None
    finally:
        cl.close()


def put_many(m, n_keys, n_threads=8, fmt="/snap/k%05d", value=None):
    """PUT fmt % i = value(i) ("v<i>" by default) for i < n_keys on member
    m from n_threads threads; returns the failures [(i, status)]."""
    if value is None:
        value = lambda i: "v%d" % i
    failures = []

    def writer(t):
        cl = m.client(10)
        try:
            for i in range(t, n_keys, n_threads):
                r = cl.put(fmt % i, value=value(i))
                if r.status not in (200, 201):
                    failures.append((i, r.status))
        finally:
            cl.close()
    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


def test_failed(request):
    """True unless the test using the fixture of request passed (also when
    it never ran, or for a module-scoped fixture)."""
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


def close_or_fail(c, failed):
    """Close cluster c (printing the members' logs if failed) and fail the
    test on a sanitizer report."""
    reports = c.close(failed)
    if reports:
        pytest.fail("sanitizer report:\n" + "\n".join(reports))


def started(request, n=3, prepare=None, **cluster_args):
    """The body of a cluster fixture (use with `yield from`): skip unless
    the target is raftd, start an n-member Cluster(**cluster_args) after
    prepare(c) (to change members' arguments), hand it to the test, then
    close it as close_or_fail does."""
    if harness.target() != "raftd":
        pytest.skip("cluster tests start raftd processes")
    if not os.path.isfile(harness.raftd_bin()):
        pytest.fail("raftd binary not found at %s" % harness.raftd_bin())
    c = Cluster(n, **cluster_args)
    if prepare is not None:
        prepare(c)
    failed = True
    try:
        c.start()
        yield c
        failed = test_failed(request)
    finally:
        close_or_fail(c, failed)
