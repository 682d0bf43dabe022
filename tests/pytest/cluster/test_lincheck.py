# Tests of the linearizability checker (lincheck.py) before we trust it on
# our own cluster histories: hand-made histories with known answers, a
# brute-force cross-check on small random histories, and the 102 Jepsen etcd
# histories with porcupine's verdicts from ../shared/testdata/jepsen-etcd.
import itertools
import os
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lincheck  # noqa: E402
from lincheck import check, parse_jepsen_log  # noqa: E402

# <repo>/tests/pytest/cluster/this file -> parents[3] is <repo>; shared/ is
# beside the repo.
JEPSEN_DIR = Path(os.environ.get(
    "ETCFS_JEPSEN_DIR",
    Path(__file__).resolve().parents[4] / "shared" / "testdata" / "jepsen-etcd"))
JEPSEN_TIMEOUT = 20.0      # seconds per history; exceeding it FAILS the test


def op(process, kind, inp, out, call, ret, status="ok"):
    return {"process": process, "kind": kind, "input": inp, "output": out,
            "call_time": call, "return_time": ret, "status": status}


def W(p, v, c, r, status="ok"):
    return op(p, "write", v, None, c, r, status)


def R(p, v, c, r, status="ok"):
    return op(p, "read", None, v, c, r, status)


def C(p, old, new, res, c, r, status="ok"):
    return op(p, "cas", (old, new), res, c, r, status)


def lin(ops):
    ok, info = check(ops, timeout=10)
    return ok


# ---------------------------------------------------------------- hand-made

def test_empty_history_is_linearizable():
    assert lin([])


def test_sequential():
    assert lin([R(0, None, 0, 1), W(0, 1, 2, 3), R(1, 1, 4, 5),
                W(1, 2, 6, 7), R(0, 2, 8, 9)])
    assert not lin([W(0, 1, 0, 1), R(1, 2, 2, 3)])
    assert not lin([W(0, 1, 0, 1), R(1, None, 2, 3)])   # unset after write


def test_initial_value():
    assert check([R(0, 7, 0, 1)], initial=7)[0]
    assert not check([R(0, None, 0, 1)], initial=7)[0]


def test_concurrent_write_and_reads():
    # write(1) spans both reads: old then new is fine ...
    assert lin([W(0, 1, 0, 10), R(1, None, 1, 2), R(1, 1, 3, 4)])
    # ... but new then old is not (the write cannot un-happen)
    assert not lin([W(0, 1, 0, 10), R(1, 1, 1, 2), R(1, None, 3, 4)])
    # two overlapping writes may land in either order
    assert lin([W(0, 1, 0, 10), W(1, 2, 0, 10), R(2, 1, 11, 12)])
    assert lin([W(0, 1, 0, 10), W(1, 2, 0, 10), R(2, 2, 11, 12)])


def test_stale_read_is_a_violation():
    ops = [W(0, 1, 0, 1), W(0, 2, 2, 3), R(1, 1, 4, 5)]
    ok, info = check(ops)
    assert not ok
    assert info["stuck"] is ops[2]
    assert [o["input"] for o in info["longest_prefix"]] == [1, 2]
    assert "p1 read() -> 1" in info["explanation"]


def test_equal_timestamps_count_as_concurrent():
    assert lin([W(0, 1, 5, 5), R(1, None, 5, 5)])


def test_info_write_that_later_shows_up():
    # unknown write, seen later: fine, at any point after its invocation
    assert lin([W(0, 5, 0, None, "info"), R(1, None, 1, 2), R(1, 5, 10, 11)])
    # never seen: also fine (it may never have happened)
    assert lin([W(0, 5, 0, None, "info"), R(1, None, 10, 11)])
    # seen, then gone without any other write: violation
    assert not lin([W(0, 5, 0, None, "info"), R(1, 5, 3, 4), R(1, None, 5, 6)])
    # cannot take effect before its invocation
    assert not lin([R(1, 5, 0, 1), W(0, 5, 2, None, "info")])
    # status 'info' with a return_time is still unknown
    assert lin([W(0, 5, 0, 1, "info"), R(1, None, 10, 11)])


def test_failed_op_did_not_happen():
    assert not lin([W(0, 5, 0, 1, "fail"), R(1, 5, 2, 3)])
    assert lin([W(0, 5, 0, 1, "fail"), R(1, None, 2, 3)])
    ok, info = check([W(0, 5, 0, 1, "fail"), R(1, None, 2, 3)])
    assert info["dropped"] == 1 and info["ops"] == 1


def test_unknown_read_constrains_nothing():
    ok, info = check([W(0, 1, 0, 1), R(1, 99, 2, None, "info")])
    assert ok and info["dropped"] == 1


def test_cas_semantics():
    base = [W(0, 1, 0, 1)]
    assert lin(base + [C(1, 1, 2, True, 2, 3), R(0, 2, 4, 5)])
    assert not lin(base + [C(1, 1, 2, True, 2, 3), R(0, 1, 4, 5)])
    # compare failed although the value matched: violation
    assert not lin(base + [C(1, 1, 2, False, 2, 3)])
    # compare failed on a mismatch: fine, and nothing changes
    assert lin(base + [C(1, 3, 4, False, 2, 3), R(0, 1, 4, 5)])
    # swapped although the value did not match: violation
    assert not lin(base + [C(1, 3, 4, True, 2, 3)])
    # cas on an unset register compares with None
    assert not lin([C(1, 0, 1, True, 0, 1)])
    # two concurrent cas(1 -> x) cannot both succeed
    assert not lin(base + [C(1, 1, 2, True, 2, 5), C(2, 1, 3, True, 2, 5)])
    assert lin(base + [C(1, 1, 2, True, 2, 5), C(2, 1, 3, False, 2, 5),
                       R(0, 2, 6, 7)])


def test_info_cas_may_or_may_not_apply():
    base = [W(0, 1, 0, 1), C(1, 1, 2, None, 2, None, "info")]
    assert lin(base + [R(0, 2, 5, 6)])
    assert lin(base + [R(0, 1, 5, 6)])
    assert lin(base + [R(0, 1, 5, 6), R(0, 2, 7, 8)])
    assert not lin(base + [R(0, 2, 5, 6), R(0, 1, 7, 8)])
    # it can only apply when the compare matches
    assert not lin([W(0, 3, 0, 1), C(1, 1, 2, None, 2, None, "info"),
                    R(0, 2, 5, 6)])
    # an info cas that applied after a later write was seen
    assert lin([W(0, 1, 0, 1), C(1, 1, 2, None, 2, None, "info"),
                W(0, 1, 3, 4), R(0, 2, 5, 6)])


def test_check_by_key_checks_each_register_alone():
    a = [dict(W(0, 1, 0, 1), key="a"), dict(R(1, 1, 2, 3), key="a")]
    b = [dict(W(0, 2, 0, 1), key="b"), dict(R(1, 2, 2, 3), key="b")]
    ok, infos = lincheck.check_by_key(a + b)
    assert ok and set(infos) == {"a", "b"}
    # as one register the same ops are not linearizable
    assert not lin(a + b)
    b[1]["output"] = 1        # a value only written to the other key
    ok, infos = lincheck.check_by_key(a + b)
    assert not ok and "key 'b'" in infos["b"]["explanation"]


def test_malformed_history_is_rejected():
    with pytest.raises(lincheck.HistoryError):
        check([W(0, 1, 5, 4)])
    with pytest.raises(lincheck.HistoryError):
        check([op(0, "delete", None, None, 0, 1)])
    with pytest.raises(lincheck.HistoryError):
        check([C(0, 1, 2, "yes", 0, 1)])


def test_timeout_raises_instead_of_guessing():
    # 18 mutually concurrent writes and a read of a value never written: the
    # search must visit every subset of the writes before giving up.
    ops = [W(i, i, 0, 100) for i in range(18)] + [R(99, 99, 101, 102)]
    with pytest.raises(lincheck.LincheckTimeout):
        check(ops, timeout=0.05)


def test_objects_with_attributes_are_accepted():
    class Op:
        def __init__(self, **kw):
            self.__dict__.update(kw)
    assert lin([Op(**W(0, 1, 0, 1)), Op(**R(1, 1, 2, 3))])


# ---------------------------------------------------- Jepsen log format

def test_parse_jepsen_log():
    text = "\n".join([
        "INFO  jepsen.util - 0\t:invoke\t:write\t4",
        "INFO  jepsen.util - 1   :invoke   :cas    [4 0]",
        "INFO  jepsen.util - 2\t:invoke\t:read\tnil",
        "INFO  jepsen.util - 3\t:invoke\t:read\tnil",
        "some other line",
        "INFO  jepsen.util - 0\t:ok\t:write\t4",
        "INFO  jepsen.util - 1\t:fail\t:cas\t[4 0]",
        "INFO  jepsen.util - 2\t:ok\t:read\t4",
        "INFO  jepsen.util - 3\t:fail\t:read\t:timed-out",
        "INFO  jepsen.util - 4\t:invoke\t:cas\t[4 1]",
        "INFO  jepsen.util - 4\t:info\t:cas\t:timed-out",
        "INFO  jepsen.util - 5\t:invoke\t:write\t2",
    ])
    ops = parse_jepsen_log(text)
    by = {o["process"]: o for o in ops}
    assert by[0]["status"] == "ok" and by[0]["input"] == 4
    assert by[0]["call_time"] < by[0]["return_time"]
    assert by[1]["status"] == "ok" and by[1]["output"] is False
    assert by[1]["input"] == (4, 0)
    assert by[2]["output"] == 4
    assert by[3]["status"] == "fail"
    assert by[4]["status"] == "info" and by[4]["return_time"] is None
    assert by[5]["status"] == "info" and by[5]["return_time"] is None
    assert check(ops)[0]
    dropped = parse_jepsen_log(text, fail_cas_observed=False)
    assert [o["status"] for o in dropped if o["process"] == 1] == ["fail"]
    with pytest.raises(lincheck.HistoryError):
        parse_jepsen_log("INFO  jepsen.util - 0\t:invoke\t:read\tnil\n"
                         "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n")
    with pytest.raises(lincheck.HistoryError):
        parse_jepsen_log("INFO  jepsen.util - 0\t:ok\t:read\t1\n")


# --------------------------------- brute-force cross-check, random histories

def _brute(ops):
    """Try every order that respects real time; unknown ops may be left out
    (equivalently, placed last)."""
    kept = [o for o in ops if o["status"] != "fail"
            and not (o["kind"] == "read" and (o["status"] == "info"
                                              or o["return_time"] is None))]
    inf = float("inf")

    def ret(o):
        return inf if o["status"] == "info" or o["return_time"] is None \
            else o["return_time"]
    must = [o for o in kept if ret(o) != inf]
    maybe = [o for o in kept if ret(o) == inf]
    for r in range(len(maybe) + 1):
        for sub in itertools.combinations(maybe, r):
            for perm in itertools.permutations(must + list(sub)):
                if any(ret(perm[j]) < perm[i]["call_time"]
                       for i in range(len(perm)) for j in range(i + 1, len(perm))):
                    continue
                st = None
                good = True
                for o in perm:
                    k, unk = o["kind"], ret(o) == inf
                    if k == "read":
                        good = o["output"] == st
                    elif k == "write":
                        st = o["input"]
                    else:
                        hit = st == o["input"][0]
                        good = unk or o["output"] == hit
                        if hit:
                            st = o["input"][1]
                    if not good:
                        break
                if good:
                    return True
    return False


def _random_history(rng, n):
    ops = []
    for i in range(n):
        c = rng.randrange(0, 12)
        r = c + rng.randrange(0, 6)
        k = rng.choice(["read", "write", "cas"])
        status = rng.choice(["ok"] * 6 + ["info", "fail"])
        if k == "read":
            ops.append(R(i, rng.choice([None, 0, 1, 2]), c, r, status))
        elif k == "write":
            ops.append(W(i, rng.randrange(3), c, r, status))
        else:
            ops.append(C(i, rng.randrange(3), rng.randrange(3),
                         rng.random() < 0.5, c, r, status))
        if status == "info" and rng.random() < 0.5:
            ops[-1]["return_time"] = None
    return ops


def test_agrees_with_brute_force_on_random_histories():
    rng = random.Random(5)
    seen = {True: 0, False: 0}
    for _ in range(600):
        ops = _random_history(rng, rng.randrange(1, 7))
        want = _brute(ops)
        got, info = check(ops, timeout=10)
        assert got == want, ops
        seen[got] += 1
    assert seen[True] > 50 and seen[False] > 50, seen


def test_histories_of_a_real_register_are_linearizable():
    # Simulate a correct register: each op takes effect at a random instant
    # inside its interval; ~10% are reported 'info'.
    rng = random.Random(11)
    for _ in range(30):
        events = []
        for p in range(6):
            t = rng.random()
            for _ in range(12):
                c = t + rng.random()
                at = c + rng.random()
                r = at + rng.random()
                events.append((at, p, c, r))
                t = r
        events.sort()
        st = None
        ops = []
        for at, p, c, r in events:
            k = rng.choice(["read", "write", "cas"])
            if k == "read":
                ops.append(R(p, st, c, r))
            elif k == "write":
                v = rng.randrange(5)
                ops.append(W(p, v, c, r))
                st = v
            else:
                old, new = rng.randrange(5), rng.randrange(5)
                hit = st == old
                ops.append(C(p, old, new, hit, c, r))
                if hit:
                    st = new
            if k != "read" and rng.random() < 0.1:
                ops[-1]["status"] = "info"
        ok, info = check(ops, timeout=10)
        assert ok, info
        # corrupt one read to a value never written: must be caught
        reads = [o for o in ops if o["kind"] == "read"]
        if reads:
            rng.choice(reads)["output"] = 42
            assert not check(ops, timeout=10)[0]


# --------------------------------------- Jepsen etcd histories with verdicts

def _jepsen_cases():
    if not JEPSEN_DIR.is_dir():
        return [pytest.param(None, None, marks=pytest.mark.skip(
            reason="Jepsen histories not found at %s (shared/ must sit "
                   "beside the repo, or set ETCFS_JEPSEN_DIR)" % JEPSEN_DIR),
            id="no-jepsen-data")]
    verdicts = {}
    vf = JEPSEN_DIR / "VERDICTS.tsv"
    if vf.is_file():
        for line in vf.read_text().splitlines():
            if line.strip():
                name, v = line.split()
                verdicts[name] = v
    cases = []
    for p in sorted(JEPSEN_DIR.glob("etcd_*.log")):
        v = verdicts.get(p.name)
        marks = () if v else (pytest.mark.skip(
            reason="no known verdict for %s" % p.name),)
        cases.append(pytest.param(p, v, marks=marks, id=p.stem))
    return cases


@pytest.mark.parametrize("path,verdict", _jepsen_cases())
def test_jepsen_etcd_verdict(path, verdict):
    assert verdict in ("linearizable", "not-linearizable")
    try:
        ok, info = lincheck.check_jepsen_file(path, timeout=JEPSEN_TIMEOUT)
    except lincheck.LincheckTimeout as e:
        pytest.fail("%s: %s" % (path.name, e))
    got = "linearizable" if ok else "not-linearizable"
    assert got == verdict, "%s: %s\n%s" % (path.name, got,
                                          info.get("explanation", ""))
    if not ok:
        assert info["stuck"] is not None and info["explanation"]


def test_jepsen_etcd_verdicts_complete():
    """All 102 verdicts are present and the checker runs them in budget."""
    if not JEPSEN_DIR.is_dir():
        pytest.skip("Jepsen histories not found at %s" % JEPSEN_DIR)
    lines = [ln for ln in (JEPSEN_DIR / "VERDICTS.tsv").read_text().splitlines()
             if ln.strip()]
    assert len(lines) == 102
    assert sum(ln.split()[1] == "linearizable" for ln in lines) == 23
