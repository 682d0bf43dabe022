# Network partitions for the cluster tests. Each test gets a network
# namespace of its own (`ip netns add`); every member runs inside it
# (`ip netns exec`) on its own loopback address, 127.0.0.2, .3, ...
# (127.0.0.1 is left to the test's clients, so cutting members apart never
# cuts the test off from them). raftd dials its peers from the address of
# its own peer URL, so iptables can cut by address: `cut(a, b)` drops every
# packet between the two groups, both directions, in the namespace's INPUT
# chain; `heal()` flushes the chain. Established TCP connections stall
# rather than reset, as when a switch drops packets.
#
# The test reaches the members by moving its own thread into the namespace
# with setns(2) (`Netns.enter`, undone by `leave`): the network namespace
# is per thread, and threads started from that thread inherit it, so
# client threads, cluster_util's helpers and harness.Client work unchanged.
#
# `partitioned_cluster()` is the whole life cycle: namespace, members,
# teardown that always kills every process, leaves and deletes the
# namespace (also stale ones a killed earlier run left behind).
import contextlib
import ctypes
import http.client
import itertools
import json
import os
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_util as cu  # noqa: E402
import harness  # noqa: E402

CLONE_NEWNET = 0x40000000
NS_PREFIX = "etcfs-"
_libc = ctypes.CDLL(None, use_errno=True)
_seq = itertools.count()


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: " + os.strerror(e))


def _run(*argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), r.returncode,
                                                r.stderr.strip()))
    return r.stdout


def member_hosts(n):
    return ["127.0.0.%d" % (i + 2) for i in range(n)]


def _reap_stale():
    """Deletes namespaces left by test processes that no longer exist."""
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if not name.startswith(NS_PREFIX) or len(parts) != 3 or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        except OSError:
            pass


class Netns:
    def __init__(self):
        self.name = "%s%d-%d" % (NS_PREFIX, os.getpid(), next(_seq))
        self.created = False
        self._home = None
        self.cuts = []

    def create(self):
        """Creates the namespace with lo up; pytest.skip if this process may
        not (not root), RuntimeError for any other failure."""
        if os.geteuid() != 0:
            pytest.skip("partition tests need root for `ip netns add`")
        _reap_stale()
        r = subprocess.run(["ip", "netns", "add", self.name],
                           capture_output=True, text=True)
        if r.returncode != 0:
            if "Operation not permitted" in r.stderr or "Permission denied" in r.stderr:
                pytest.skip("`ip netns add` not permitted: %s" % r.stderr.strip())
            raise RuntimeError("ip netns add %s: %s" % (self.name, r.stderr.strip()))
        self.created = True
        _run("ip", "-n", self.name, "link", "set", "lo", "up")

    @property
    def exec_prefix(self):
        return ["ip", "netns", "exec", self.name]

    def enter(self):
        """Moves the calling thread (and threads it starts later) in."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open("/run/netns/" + self.name, os.O_RDONLY)
        try:
            _setns(fd)
        except BaseException:
            os.close(home)
            raise
        finally:
            os.close(fd)
        self._home = home

    def leave(self):
        if self._home is not None:
            try:
                _setns(self._home)
            finally:
                os.close(self._home)
                self._home = None

    def iptables(self, *args):
        _run(*(self.exec_prefix + ["iptables", "-w"] + list(args)))

    def cut(self, side_a, side_b):
        """Drops all traffic between the hosts of side_a and of side_b
        (member objects or addresses), both directions."""
        ha = [getattr(x, "host", x) for x in side_a]
        hb = [getattr(x, "host", x) for x in side_b]
        for a in ha:
            for b in hb:
                self.iptables("-A", "INPUT", "-s", a, "-d", b, "-j", "DROP")
                self.iptables("-A", "INPUT", "-s", b, "-d", a, "-j", "DROP")
        self.cuts.append((ha, hb))

    def isolate(self, members, all_members):
        """Cuts members off from the rest of all_members."""
        rest = [m for m in all_members if m not in members]
        self.cut(members, rest)

    def heal(self):
        if self.created:
            self.iptables("-F", "INPUT")
        self.cuts = []

    def delete(self):
        self.leave()
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            self.created = False


def resume_all(cluster):
    """SIGCONT to every member (a paused member would ignore SIGTERM)."""
    for m in cluster.members:
        if m.alive():
            m.proc.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def partitioned_cluster(n=3, heartbeat_ms=50, election_ms=500,
                        extra_args=()):
    """A started n-member cluster inside a fresh namespace the calling
    thread has entered; torn down whatever happens (fails the test on a
    sanitizer report, prints the members' stderr when the test failed)."""
    if harness.target() != "raftd":
        pytest.skip("cluster tests start raftd processes")
    if not os.path.isfile(harness.raftd_bin()):
        pytest.fail("raftd binary not found at %s" % harness.raftd_bin())
    ns = Netns()
    reports = []
    c = None
    failed = True
    try:
        ns.create()
        ns.enter()
        c = cu.Cluster(n, heartbeat_ms=heartbeat_ms, election_ms=election_ms,
                       extra_args=extra_args, hosts=member_hosts(n),
                       exec_prefix=ns.exec_prefix)
        c.netns = ns
        c.start()
        yield c
        failed = False
    except BaseException:
        failed = True
        raise
    finally:
        try:
            if c is not None:
                resume_all(c)
                reports = c.close(failed)
        finally:
            try:
                ns.heal()
            except RuntimeError:
                pass
            ns.delete()
    if reports:
        pytest.fail("sanitizer report:\n" + "\n".join(reports))


# ---- one-shot HTTP operations, no retries --------------------------------

class Result:
    """Outcome of one request: status/body/headers if answered; else
    error 'refused' (certainly not sent) or 'timeout'/'reset' (unknown)."""

    def __init__(self, status=None, body=b"", headers=None, error=None):
        self.status, self.body, self.headers, self.error = status, body, headers or {}, error

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def ok(self):
        return self.status in (200, 201)

    def __repr__(self):
        if self.error:
            return "<%s>" % self.error
        return "<%s %s>" % (self.status, self.body[:200])


def request(member, method, path, form=None, timeout=2.0):
    """One request on a fresh connection from this thread's namespace."""
    conn = http.client.HTTPConnection(member.host, member.client_port, timeout=timeout)
    body = None
    hdrs = {}
    if form is not None:
        body = harness.enc(form)
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return Result(r.status, data, dict(r.getheaders()))
    except ConnectionRefusedError:
        return Result(error="refused")
    except TimeoutError:
        return Result(error="timeout")
    except (OSError, http.client.HTTPException):
        return Result(error="reset")
    finally:
        conn.close()


def put(member, key, value, prev_value=None, timeout=2.0):
    form = {"value": value}
    if prev_value is not None:
        form["prevValue"] = prev_value
    return request(member, "PUT", "/v2/keys" + key, form=form, timeout=timeout)


def get(member, key, quorum=False, timeout=2.0):
    q = "?quorum=true" if quorum else ""
    return request(member, "GET", "/v2/keys" + key + q, timeout=timeout)


def value_of(res):
    """The node value of a 200 GET, else None."""
    js = res.json() if res.status == 200 else None
    return js["node"].get("value") if js else None
