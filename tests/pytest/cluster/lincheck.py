# Linearizability checker for a single read/write/compare-and-swap register.
#
# Pure Python 3.11, stdlib only. The search is the Wing-Gong-Lowe algorithm
# with Lowe's memoisation of (set of linearized ops, register state), in the
# shape porcupine (anishathalye/porcupine, checker.go) uses: the history is a
# doubly linked list of call/return entries sorted by time; linearizing an op
# lifts its call and return entries out of the list, backtracking puts them
# back. Our own code, written for speed in CPython: the list is index arrays,
# bitsets are ints, the memo is a set of (bitset, state) tuples.
#
# Semantics of an operation (see docs/linearizability.md):
#   status 'ok'   it took effect exactly once between call_time and
#                 return_time, with the recorded output;
#   status 'fail' it certainly did not take effect: it is dropped;
#   status 'info' (or return_time None) unknown: it may have taken effect at
#                 any point after call_time, or never; its output is unknown.
#                 An unknown read constrains nothing and is dropped.
# Kinds: 'read' (input ignored; output the value read, None = unset),
#        'write' (input the value), 'cas' (input (old, new); output True if it
#        swapped, False if the compare failed: a cas that returned
#        "compare failed" is status 'ok' with output False, not 'fail').
#
# Public API:
#   check(ops, timeout=None) -> (ok, info)      raises LincheckTimeout
#   check_by_key(ops, timeout=None) -> (ok, {key: info})  one register per
#                 op['key']; linearizability is local, so this is exact
#   parse_jepsen_log(text) -> list of op dicts
#   check_jepsen_file(path, timeout=None) -> (ok, info)
import math
import re
import time

__all__ = ["check", "check_by_key", "parse_jepsen_log", "check_jepsen_file", "describe_op",
           "LincheckTimeout", "HistoryError"]

_READ, _WRITE, _CAS = 0, 1, 2
_KINDS = {"read": _READ, "write": _WRITE, "cas": _CAS}
_UNKNOWN = object()        # output of an op whose result is unknown


class LincheckTimeout(Exception):
    """The search did not finish within the time limit: no verdict."""


class HistoryError(ValueError):
    """The history itself is malformed (bad kind/status, return before call)."""


def _field(op, name, default=None):
    if isinstance(op, dict):
        return op.get(name, default)
    return getattr(op, name, default)


def describe_op(op):
    """One line, e.g. 'p3 cas(1, 2) -> False [12.0, 13.5]'."""
    kind = _field(op, "kind")
    inp = _field(op, "input")
    out = _field(op, "output")
    status = _field(op, "status", "ok")
    rt = _field(op, "return_time")
    if kind == "read":
        call = "read()"
    elif kind == "write":
        call = "write(%r)" % (inp,)
    else:
        call = "cas(%r, %r)" % tuple(inp)
    if status == "ok" and rt is not None:
        res = "" if kind == "write" else " -> %r" % (out,)
    else:
        res = " -> ?"
    return "p%s %s%s [%s, %s]" % (_field(op, "process"), call, res,
                                  _field(op, "call_time"),
                                  "inf" if rt is None or status != "ok" else rt)


def _normalise(ops):
    """Validate; return (kept, dropped_count) where kept is a list of
    (index_in_ops, kind_code, input, output_or_UNKNOWN, call, ret)."""
    kept = []
    dropped = 0
    for i, op in enumerate(ops):
        kind = _field(op, "kind")
        status = _field(op, "status", "ok")
        if kind not in _KINDS:
            raise HistoryError("op %d: bad kind %r" % (i, kind))
        if status not in ("ok", "fail", "info"):
            raise HistoryError("op %d: bad status %r" % (i, status))
        call = _field(op, "call_time")
        ret = _field(op, "return_time")
        if call is None:
            raise HistoryError("op %d: no call_time" % i)
        if status == "fail":
            dropped += 1
            continue
        k = _KINDS[kind]
        inp = _field(op, "input")
        if k == _CAS:
            if not isinstance(inp, (tuple, list)) or len(inp) != 2:
                raise HistoryError("op %d: cas input must be (old, new)" % i)
            inp = (inp[0], inp[1])
        if status == "info" or ret is None:
            if k == _READ:
                dropped += 1     # an unknown read neither constrains nor acts
                continue
            out = _UNKNOWN
            ret = math.inf
        else:
            if ret < call:
                raise HistoryError("op %d: return_time %r < call_time %r"
                                   % (i, ret, call))
            out = _field(op, "output")
            if k == _CAS and not isinstance(out, bool):
                raise HistoryError("op %d: cas output must be True/False" % i)
        kept.append((i, k, inp, out, call, ret))
    return kept, dropped


def check(ops, timeout=None, initial=None):
    """Is the history of one register linearizable?

    ops: iterable of dicts (or objects with the same attributes) with keys
    process, kind, input, output, call_time, return_time (None = never
    returned), status ('ok' | 'fail' | 'info'). initial: the register's value
    before the history (None = unset). timeout: seconds; raises
    LincheckTimeout rather than guess.

    Returns (ok, info). info has 'ops' (checked), 'dropped', 'elapsed',
    'states' (memo size) and, when ok is False, 'explanation' (text),
    'longest_prefix' (ops of the longest partial linearization found, in
    order) and 'stuck' (the op whose response came before it could be
    linearized at that deepest point)."""
    ops = list(ops)
    t0 = time.monotonic()
    kept, dropped = _normalise(ops)
    n = len(kept)
    info = {"ops": n, "dropped": dropped, "states": 0}
    if n == 0:
        info["elapsed"] = time.monotonic() - t0
        return True, info

    # Entries: call of op j is 2j, its return 2j+1; sorted by time, calls
    # before returns at equal times (so equal stamps count as concurrent).
    order = sorted(range(2 * n), key=lambda e: (
        kept[e >> 1][4 + (e & 1)], e & 1, e >> 1))
    # Linked list over positions 1..2n; 0 = head sentinel, 2n+1 = tail.
    size = 2 * n + 2
    nxt = list(range(1, size + 1))
    prv = list(range(-1, size - 1))
    pos_of = [0] * (2 * n)
    for p, e in enumerate(order, start=1):
        pos_of[e] = p
    # Per position: op index (j), and for call positions the return position
    # (match > 0); return positions have match 0.
    opj = [-1] * size
    match = [0] * size
    kinds = [0] * size
    arg1 = [None] * size
    arg2 = [None] * size
    outs = [None] * size
    for j, (_, k, inp, out, _, _) in enumerate(kept):
        cp = pos_of[2 * j]
        rp = pos_of[2 * j + 1]
        opj[cp] = opj[rp] = j
        match[cp] = rp
        kinds[cp] = k
        outs[cp] = out
        if k == _WRITE:
            arg1[cp] = inp
        elif k == _CAS:
            arg1[cp], arg2[cp] = inp
    tail = size - 1

    unknown = _UNKNOWN
    cache = set()
    calls = []                 # stack of (call position, state before)
    state = initial
    lin = 0                    # bitset of linearized op indices
    best_depth = -1
    best_stack = []
    stuck = None
    deadline = None if timeout is None else t0 + timeout
    steps = 0
    entry = nxt[0]
    while nxt[0] != tail:
        steps += 1
        if deadline is not None and not (steps & 0xFFF) \
                and time.monotonic() > deadline:
            info["states"] = len(cache)
            raise LincheckTimeout("no verdict after %.1f s (%d ops, %d states)"
                                  % (timeout, n, len(cache)))
        m = match[entry]
        if m:
            # A call: try to linearize this op now.
            k = kinds[entry]
            out = outs[entry]
            if k == _READ:
                ok = out == state
                new = state
            elif k == _WRITE:
                ok = True
                new = arg1[entry]
            else:
                hit = state == arg1[entry]
                new = arg2[entry] if hit else state
                ok = out is unknown or out == hit
            if ok:
                nlin = lin | (1 << opj[entry])
                key = (nlin, new)
                if key not in cache:
                    cache.add(key)
                    calls.append((entry, state))
                    state = new
                    lin = nlin
                    # lift the call and its return out of the list
                    a, b = prv[entry], nxt[entry]
                    nxt[a] = b
                    prv[b] = a
                    a, b = prv[m], nxt[m]
                    nxt[a] = b
                    prv[b] = a
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:
            # A return whose op is not linearized yet: backtrack.
            if len(calls) > best_depth:
                best_depth = len(calls)
                best_stack = [opj[c] for c, _ in calls]
                stuck = opj[entry]
            if not calls:
                break
            entry, state = calls.pop()
            lin &= ~(1 << opj[entry])
            m = match[entry]
            # unlift: return first (it was removed last), then the call
            nxt[prv[m]] = m
            prv[nxt[m]] = m
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry
            entry = nxt[entry]
    info["states"] = len(cache)
    info["elapsed"] = time.monotonic() - t0
    if nxt[0] == tail:
        return True, info

    prefix = [ops[kept[j][0]] for j in best_stack]
    stuck_op = ops[kept[stuck][0]]
    info["longest_prefix"] = prefix
    info["stuck"] = stuck_op
    lines = ["not linearizable: %d of %d ops linearized at best; then"
             % (len(prefix), n),
             "  %s" % describe_op(stuck_op),
             "returned before it could be linearized. That prefix "
             "(last 10 of %d):" % len(prefix)]
    lines += ["  %s" % describe_op(o) for o in prefix[-10:]]
    info["explanation"] = "\n".join(lines)
    return False, info


def check_by_key(ops, timeout=None):
    """Check a multi-register history: ops carry a 'key'; each key is its own
    register, checked separately (linearizability is compositional, so the
    whole history is linearizable iff every key's is). Short per-key
    histories are also what keeps the search fast. timeout applies per key.
    Returns (ok, {key: info}); on failure info of the failing key(s) has the
    explanation."""
    groups = {}
    for o in ops:
        groups.setdefault(_field(o, "key"), []).append(o)
    infos = {}
    ok = True
    for key in groups:
        good, infos[key] = check(groups[key], timeout=timeout)
        if not good:
            infos[key]["explanation"] = "key %r: %s" % (
                key, infos[key]["explanation"])
            ok = False
    return ok, infos


_LINE = re.compile(r"^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(\w+)\s+:(\w+)\s+(.*?)\s*$")
_PAIR = re.compile(r"^\[(\S+)\s+(\S+)\]$")


def _jval(s):
    if s == "nil":
        return None
    try:
        return int(s)
    except ValueError:
        return s


def parse_jepsen_log(text, fail_cas_observed=True):
    """Parse a Jepsen register log (jepsen.util lines) into op dicts; times
    are line numbers. ':fail :cas' becomes an 'ok' cas with output False
    (the Jepsen etcd client reports a failed compare as :fail: the cas was
    applied to the register and observed a different value); pass
    fail_cas_observed=False to treat it as 'did not happen' (dropped) only.
    Any other ':fail' is dropped; ':info' and missing completions are
    unknown. Raises HistoryError on a malformed line or an invoke from a
    process that still has an op pending."""
    ops = []
    pending = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if "jepsen.util" not in line:
            continue
        mt = _LINE.match(line)
        if not mt:
            raise HistoryError("line %d: cannot parse %r" % (lineno, line))
        proc, typ, f, val = int(mt.group(1)), mt.group(2), mt.group(3), mt.group(4)
        if f not in _KINDS:
            raise HistoryError("line %d: unknown op %r" % (lineno, f))
        if typ == "invoke":
            if proc in pending:
                raise HistoryError("line %d: process %d invokes with an op "
                                   "pending" % (lineno, proc))
            if f == "cas":
                pm = _PAIR.match(val)
                if not pm:
                    raise HistoryError("line %d: bad cas value %r" % (lineno, val))
                inp = (_jval(pm.group(1)), _jval(pm.group(2)))
            elif f == "write":
                inp = _jval(val)
            else:
                inp = None
            op = {"process": proc, "kind": f, "input": inp, "output": None,
                  "call_time": lineno, "return_time": None, "status": "info"}
            pending[proc] = op
            ops.append(op)
            continue
        op = pending.pop(proc, None)
        if op is None or op["kind"] != f:
            raise HistoryError("line %d: completion without matching invoke"
                               % lineno)
        if typ == "ok":
            op["status"] = "ok"
            op["return_time"] = lineno
            if f == "read":
                op["output"] = _jval(val)
            elif f == "cas":
                op["output"] = True
        elif typ == "fail":
            if f == "cas" and fail_cas_observed:
                op["status"] = "ok"
                op["return_time"] = lineno
                op["output"] = False
            else:
                op["status"] = "fail"
                op["return_time"] = lineno
        elif typ == "info":
            op["status"] = "info"   # unknown; return_time stays None
        else:
            raise HistoryError("line %d: unknown type %r" % (lineno, typ))
    return ops


def check_jepsen_file(path, timeout=None, **kw):
    with open(path, encoding="utf-8") as fh:
        return check(parse_jepsen_log(fh.read(), **kw), timeout=timeout)


if __name__ == "__main__":
    import sys
    rc = 0
    for p in sys.argv[1:]:
        good, inf = check_jepsen_file(p)
        print("%s\t%s\t%.3fs\t%d states" % (
            p, "linearizable" if good else "not-linearizable",
            inf["elapsed"], inf["states"]))
        if not good:
            rc = 1
    sys.exit(rc)
