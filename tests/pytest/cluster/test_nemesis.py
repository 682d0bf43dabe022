# A randomised Jepsen-style run against raftd (issue 5): concurrent clients
# do quorum reads, writes and compare-and-swaps on a few keys while a
# nemesis kills (SIGKILL + restart), restarts gracefully (SIGTERM +
# restart), pauses (SIGSTOP/SIGCONT; any member or the leader) and
# partitions (iptables in the test's network namespace, partition_util.py;
# a random minority or the leader; or a cut plus a kill) members at random. The history
# (invoke/complete with status ok, fail or info as Jepsen records it) is
# checked with lincheck.py, key by key: zero violations. Then, with every
# member up and healed: every member converges to the same values, and no
# acknowledged write is lost (the final value of a key was written by an
# operation that did not fail, and not by one that finished before the
# last acknowledged write began).
#
# Environment (docs/testing.md):
#   ETCFS_NEMESIS_SEED     seed of the nemesis schedule and the clients'
#                          choices (random by default; always printed)
#   ETCFS_NEMESIS_SECONDS  length of the faulty period (default 40)
#   ETCFS_NEMESIS_MEMBERS  3 (default) or 5
#   ETCFS_NEMESIS_HISTORY  write the history (JSON lines) to this file
#   ETCFS_NEMESIS_ARGS     extra raftd flags (default "--snapshot-count 500":
#                          members snapshot every few seconds, so kills and
#                          restarts also load snapshots; "" for none)
# The clients move to 3 fresh keys every 2 s (/nemesis/g<period>/r<i>):
# each key's history stays a few hundred operations, which keeps the
# checker's search short (docs/linearizability.md), and every key's final
# value is checked.
# A seed replays the same schedule of faults and operations; the exact
# interleaving with the servers still varies from run to run.
import json
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_util as cu  # noqa: E402
import lincheck  # noqa: E402
import partition_util as pu  # noqa: E402

ELECTION_MS = 500
N_CLIENTS = 5
KEYS_PER_PERIOD = 3
KEY_PERIOD = 2.0          # seconds; then the clients move to fresh keys
OP_TIMEOUT = 1.5          # seconds; a timeout is :info (indeterminate)
LINCHECK_TIMEOUT = 120.0  # per key; exceeding it fails (no verdict)


class History:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []
        self.t0 = time.monotonic()

    def now(self):
        return time.monotonic() - self.t0

    def add(self, op):
        with self.lock:
            self.ops.append(op)


def classify_write(res, cas):
    """(status, output) of a write or cas from its HTTP result."""
    if res.error == "refused":
        return "fail", None          # never reached a server
    if res.error is not None:
        return "info", None          # timeout or reset: unknown
    if res.ok:
        return "ok", True if cas else None
    js = res.json() or {}
    code = js.get("errorCode")
    if cas and code in (100, 101):   # key not found / compare failed
        return "ok", False
    if code == 300 and js.get("cause") == "etcdserver: no leader":
        return "fail", None          # refused before it was proposed
    return "info", None              # request timed out, server stopped, ...


class Client(threading.Thread):
    def __init__(self, idx, cluster, history, seed, stop, values):
        super().__init__(name="client%d" % idx)
        self.idx = idx
        self.cluster = cluster
        self.history = history
        self.rng = random.Random(seed * 1000 + idx)
        self.stop = stop
        self.values = values        # shared counter for unique values
        self.process = idx          # renamed after an :info, as Jepsen does
        self.seen = {}              # key -> last value this client saw
        self.counts = {"ok": 0, "fail": 0, "info": 0}

    def next_value(self):
        with self.values["lock"]:
            self.values["n"] += 1
            return self.values["n"]

    def one(self):
        h = self.history
        key = "/nemesis/g%d/r%d" % (int(h.now() / KEY_PERIOD),
                                    self.rng.randrange(KEYS_PER_PERIOD))
        m = self.rng.choice(self.cluster.members)
        r = self.rng.random()
        op = {"process": self.process, "key": key, "member": m.name}
        if r < 0.4:
            op.update(kind="read", input=None, call_time=h.now())
            res = pu.get(m, key, quorum=True, timeout=OP_TIMEOUT)
            op["return_time"] = h.now()
            js = res.json() if res.status is not None else None
            if res.status == 200:
                op.update(status="ok", output=int(js["node"]["value"]))
            elif res.status == 404 and js and js.get("errorCode") == 100:
                op.update(status="ok", output=None)
            else:
                op.update(status="fail" if res.error == "refused" or res.status else "info",
                          output=None)
            if op["status"] == "ok":
                self.seen[key] = op["output"]
        else:
            cas = r >= 0.7
            new = self.next_value()
            if cas:
                old = self.seen.get(key)
                if old is None:
                    old = self.rng.randint(1, max(1, self.values["n"]))
                op.update(kind="cas", input=(old, new), call_time=h.now())
                res = pu.put(m, key, str(new), prev_value=str(old), timeout=OP_TIMEOUT)
            else:
                op.update(kind="write", input=new, call_time=h.now())
                res = pu.put(m, key, str(new), timeout=OP_TIMEOUT)
            op["return_time"] = h.now()
            op["status"], op["output"] = classify_write(res, cas)
            if op["status"] == "ok" and (not cas or op["output"]):
                self.seen[key] = new
        op["answer"] = repr(res)[:160]
        if op["status"] == "info":
            op["return_time"] = None
        h.add(op)
        self.counts[op["status"]] += 1
        if op["status"] == "info":
            self.process += N_CLIENTS

    def run(self):
        while not self.stop.is_set():
            self.one()
            time.sleep(self.rng.uniform(0, 0.01))


class Nemesis(threading.Thread):
    """One fault at a time (or a cut plus a kill): inject, hold 0.3-2.5 s,
    repair, 0.2-1 s quiet."""

    def __init__(self, cluster, seed, stop, log):
        super().__init__(name="nemesis")
        self.c = cluster
        self.rng = random.Random(seed)
        self.stop = stop
        self.log = log
        self.counts = {}
        self.error = None

    def note(self, what):
        self.log.append("%8.3f %s" % (time.monotonic(), what))
        self.counts[what.split()[0]] = self.counts.get(what.split()[0], 0) + 1

    def hold(self, lo, hi):
        self.stop.wait(self.rng.uniform(lo, hi))

    def fault(self):
        c, rng = self.c, self.rng
        kind = rng.choice(["kill", "restart", "pause", "pause-leader", "partition",
                           "partition-leader", "partition+kill"])
        if kind == "partition+kill":
            # two faults at once: one member cut off, another killed (no
            # quorum at all with 3 members)
            cut, dead = rng.sample(c.members, 2)
            self.note("%s %s/%s" % (kind, cut.name, dead.name))
            c.netns.isolate([cut], c.members)
            dead.kill9()
            self.hold(0.5, 2.0)
            dead.start()
            self.hold(0.0, 1.0)
            c.netns.heal()
        elif kind == "pause-leader":
            # a paused leader wakes up still believing it leads: it must
            # not answer a quorum read or acknowledge a write from that
            m = c.leader() or rng.choice(c.members)
            self.note("%s %s" % (kind, m.name))
            m.proc.send_signal(signal.SIGSTOP)
            self.hold(0.6, 2.5)
            m.proc.send_signal(signal.SIGCONT)
        elif kind == "kill":
            m = rng.choice(c.members)
            self.note("kill %s" % m.name)
            m.kill9()
            self.hold(0.3, 2.0)
            m.start()
        elif kind == "restart":
            m = rng.choice(c.members)
            self.note("restart %s" % m.name)
            m.stop()
            self.hold(0.1, 1.0)
            m.start()
        elif kind == "pause":
            m = rng.choice(c.members)
            self.note("pause %s" % m.name)
            m.proc.send_signal(signal.SIGSTOP)
            self.hold(0.3, 2.5)
            m.proc.send_signal(signal.SIGCONT)
        else:
            n = len(c.members)
            if kind == "partition-leader":
                lead = c.leader()
                side = [lead] if lead is not None else [rng.choice(c.members)]
                if n == 5:
                    side.append(rng.choice([m for m in c.members if m not in side]))
            else:
                side = rng.sample(c.members, rng.randint(1, (n - 1) // 2))
            self.note("%s %s" % (kind, "+".join(m.name for m in side)))
            c.netns.isolate(side, c.members)
            self.hold(0.5, 2.5)
            c.netns.heal()
        self.note("repaired")

    def run(self):
        try:
            self.hold(0.5, 1.0)
            while not self.stop.is_set():
                self.fault()
                self.hold(0.2, 1.0)
        except Exception as e:  # reported by the test
            self.error = e


def heal_everything(c):
    c.netns.heal()
    pu.resume_all(c)
    for m in c.members:
        if not m.alive():
            m.start()
    c.wait_leader(30)
    for m in c.members:
        c.wait_serving(m, 30)


def final_reads(c, history):
    """On every member, one quorum read of the whole /nemesis tree, recorded
    in the history as a read of every key at that point (it pins the final
    state: an acknowledged write lost would make the history
    non-linearizable). Returns {key: value}, asserting the members agree."""
    keys = sorted({o["key"] for o in history.ops})
    views = []
    for m in c.members:
        def read(m=m):
            t = history.now()
            res = pu.request(m, "GET", "/v2/keys/nemesis?recursive=true&quorum=true",
                             timeout=5)
            if res.status != 200:
                return None
            got = {}
            stack = [res.json()["node"]]
            while stack:
                node = stack.pop()
                stack.extend(node.get("nodes", []))
                if not node.get("dir"):
                    got[node["key"]] = int(node["value"])
            return t, history.now(), got
        t, r, got = cu.poll(read, 30, "a quorum read of /nemesis on %s" % m.name,
                            interval=0.1)
        for key in keys:
            history.add({"process": "final", "key": key, "member": m.name,
                         "kind": "read", "input": None, "output": got.get(key),
                         "call_time": t, "return_time": r, "status": "ok"})
        views.append(got)
    for m, got in zip(c.members[1:], views[1:]):
        assert got == views[0], "%s and %s disagree after healing" % (m.name, c.members[0].name)
    return {key: views[0].get(key) for key in keys}


def check_lost_writes(ops, final):
    """Explicit lost-write check, independent of the search: per key, the
    writer of the final value exists and did not fail, and it did not
    finish before the last acknowledged write began (that write would
    have overwritten it)."""
    problems = []
    for key in final:
        writes = [o for o in ops if o["key"] == key and o["kind"] in ("write", "cas")]
        acked = [o for o in writes if o["status"] == "ok" and
                 (o["kind"] == "write" or o["output"] is True)]
        v = final[key]
        new_of = (lambda o: o["input"] if o["kind"] == "write" else o["input"][1])
        writer = [o for o in writes if new_of(o) == v]
        if v is None:
            if acked:
                problems.append("%s: unset at the end, %d writes acknowledged"
                                % (key, len(acked)))
            continue
        if len(writer) != 1:
            problems.append("%s: final value %r written by %d operations" % (key, v, len(writer)))
            continue
        w = writer[0]
        if w["status"] == "fail" or (w["kind"] == "cas" and w["output"] is False):
            problems.append("%s: final value %r from a failed operation %r" % (key, v, w))
            continue
        if acked:
            last = max(acked, key=lambda o: o["return_time"])
            if w is not last and w["return_time"] is not None and \
                    w["return_time"] < last["call_time"]:
                problems.append("%s: acknowledged write %r lost: final %r was "
                                "written before it began" % (key, last, v))
    return problems


def test_nemesis_linearizable(request):
    seed = int(os.environ.get("ETCFS_NEMESIS_SEED") or random.SystemRandom().randint(1, 10**6))
    seconds = float(os.environ.get("ETCFS_NEMESIS_SECONDS", "40"))
    n = int(os.environ.get("ETCFS_NEMESIS_MEMBERS", "3"))
    extra = os.environ.get("ETCFS_NEMESIS_ARGS", "--snapshot-count 500").split()
    sys.stdout.write("nemesis: seed %d (ETCFS_NEMESIS_SEED=%d replays), %d members, %.0f s, "
                     "raftd flags %r\n" % (seed, seed, n, seconds, extra))
    history = History()
    stop = threading.Event()
    log = []
    with pu.partitioned_cluster(n, election_ms=ELECTION_MS, extra_args=extra) as c:
        values = {"n": 0, "lock": threading.Lock()}
        clients = [Client(i, c, history, seed, stop, values) for i in range(N_CLIENTS)]
        nemesis = Nemesis(c, seed, stop, log)
        for t in clients + [nemesis]:
            t.start()
        try:
            stop.wait(seconds)
        finally:
            stop.set()
            for t in clients + [nemesis]:
                t.join()
        assert nemesis.error is None, "nemesis failed: %r" % (nemesis.error,)
        heal_everything(c)
        final = final_reads(c, history)

    ops = history.ops
    if os.environ.get("ETCFS_NEMESIS_HISTORY"):
        with open(os.environ["ETCFS_NEMESIS_HISTORY"], "w") as f:
            for o in ops:
                f.write(json.dumps(o) + "\n")
    totals = {"ok": 0, "fail": 0, "info": 0}
    for cl in clients:
        for k, v in cl.counts.items():
            totals[k] += v
    by_kind = {}
    for o in ops:
        if o["process"] != "final":
            d = by_kind.setdefault(o["kind"], {"ok": 0, "fail": 0, "info": 0})
            d[o["status"]] += 1
    sys.stdout.write("nemesis: faults %s\n" % sorted(nemesis.counts.items()))
    sys.stdout.write("nemesis: %d ops %s, by kind %s\n" % (sum(totals.values()), totals, by_kind))
    assert totals["ok"] >= 50, "too few operations succeeded: %r" % totals
    acked_writes = sum(1 for o in ops if o["status"] == "ok" and
                       (o["kind"] == "write" or (o["kind"] == "cas" and o["output"])))
    assert acked_writes >= 20, "too few acknowledged writes: %d" % acked_writes

    t0 = time.monotonic()
    ok, infos = lincheck.check_by_key(ops, timeout=LINCHECK_TIMEOUT)
    elapsed = time.monotonic() - t0
    sys.stdout.write("nemesis: lincheck %s in %.1f s (%d keys, %d ops checked, "
                     "at most %d on a key, %d memo states)\n" % (
                         "linearizable" if ok else "VIOLATION", elapsed, len(infos),
                         sum(i["ops"] for i in infos.values()),
                         max(i["ops"] for i in infos.values()),
                         sum(i["states"] for i in infos.values())))
    assert ok, "seed %d: not linearizable:\n%s\nnemesis log:\n%s" % (
        seed, "\n".join(i["explanation"] for i in infos.values() if "explanation" in i),
        "\n".join(log))
    problems = check_lost_writes(ops, final)
    assert not problems, "seed %d: %s" % (seed, "\n".join(problems))
    sys.stdout.write("nemesis: no lost write (%d acknowledged writes, %d final values "
                     "checked)\n" % (acked_writes, len(final)))
