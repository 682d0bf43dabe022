# Differential test: the same seeded random request sequences against the
# target (raftd) and against real etcd 3.4; every response must match after
# normalising indices (relative to each server's index when the sequence
# began), expiration/ttl, and unsorted listing order. Bodies are compared
# byte for byte otherwise, so field order and Go escaping count.
# ETCFS_DIFF_SEED=n (or 1,5 or 1-50) runs those seeds instead; ETCFS_DIFF_OPS=n
# sets the sequence length.
import json
import os
import random
import re
import urllib.parse

import pytest

from harness import go_json

SEEDS = [1, 2, 3, 4]
if os.environ.get("ETCFS_DIFF_SEED"):  # "7", "1,5,9" or "1-50"
    SEEDS = []
    for part in os.environ["ETCFS_DIFF_SEED"].split(","):
        lo, _, hi = part.partition("-")
        SEEDS += list(range(int(lo), int(hi or lo) + 1))
OPS = int(os.environ.get("ETCFS_DIFF_OPS", "150"))

VALUES = ["v1", "v2", "v3", "", "<a&b>", "\u00fc\u4e2d", "two\nlines", "q\"uote", "a b+c%d"]
LEAVES = ["x", "y", "z", "_h", "sp ace", "p%25ct", "\u00e9t\u00e9"]


class Idx:
    """An index relative to the server's index when the sequence began."""

    def __init__(self, rel):
        self.rel = rel


def resolve(params, base):
    if params is None:
        return None
    return {k: (str(base + v.rel) if isinstance(v, Idx) else v) for k, v in params.items()}


class Gen:
    def __init__(self, seed, prefix):
        self.r = random.Random(seed)
        self.p = prefix
        self.dirs = [prefix, prefix + "/a", prefix + "/a/b", prefix + "/c", prefix + "/_hd"]
        self.touched = []   # (rel index, key) of successful writes (etcd's view)
        self.cur = 0        # etcd's current relative index
        self.expiries = 0   # short-TTL expiries done (each costs ~1 s)

    def key(self):
        return self.r.choice(self.dirs) + "/" + self.r.choice(LEAVES)

    def anypath(self):
        return self.r.choice([self.key(), self.r.choice(self.dirs)])

    def val(self):
        return self.r.choice(VALUES)

    def idx(self):
        if self.touched and self.r.random() < 0.7:
            return Idx(self.r.choice(self.touched)[0])
        return Idx(self.r.randint(1, max(1, self.cur + 2)))

    def op(self):
        r = self.r
        if self.expiries < 2 and r.random() < 0.01:
            # a key (or dir) with ttl=1, then wait until it expired on both
            # sides: with nothing else written meanwhile, the expire events
            # get the same relative index on both
            self.expiries += 1
            if r.random() < 0.5:
                return ("EXPIRE", self.key(), None, {"value": self.val(), "ttl": "1"})
            return ("EXPIRE", r.choice(self.dirs[1:]), None, {"dir": "true", "ttl": "1"})
        k = r.choice([
            "set", "set", "set", "setttl", "mkdir", "create", "update", "refresh",
            "cas_v", "cas_i", "cad_v", "cad_i", "del", "del_dir", "del_rec",
            "post", "get", "get", "get_dir", "get_unsorted", "invalid", "wait", "root",
            "edge", "edge"])
        key = self.key()
        if k == "set":
            return ("PUT", key, None, {"value": self.val()})
        if k == "setttl":
            return ("PUT", key, None, {"value": self.val(), "ttl": "1000"})
        if k == "mkdir":
            f = {"dir": "true"}
            if r.random() < 0.3:
                f["prevExist"] = r.choice(["true", "false"])
            return ("PUT", r.choice(self.dirs + [key]), None, f)
        if k == "create":
            return ("PUT", key, None, {"value": self.val(), "prevExist": "false"})
        if k == "update":
            return ("PUT", key, None, {"value": self.val(), "prevExist": "true"})
        if k == "refresh":
            f = {"refresh": "true", "ttl": "1000"}
            if r.random() < 0.2:
                f.pop("ttl")
            return ("PUT", key, None, f)
        if k == "cas_v":
            return ("PUT", key, None, {"value": self.val(), "prevValue": self.val() or "v1"})
        if k == "cas_i":
            f = {"value": self.val(), "prevIndex": self.idx()}
            if r.random() < 0.3:
                f["prevValue"] = self.val() or "v2"
            return ("PUT", key, None, f)
        if k == "cad_v":
            return ("DELETE", key, {"prevValue": self.val() or "v1"}, None)
        if k == "cad_i":
            return ("DELETE", key, {"prevIndex": self.idx()}, None)
        if k == "del":
            return ("DELETE", self.anypath(), None, None)
        if k == "del_dir":
            return ("DELETE", r.choice(self.dirs[1:]), {"dir": "true"}, None)
        if k == "del_rec":
            return ("DELETE", r.choice(self.dirs[1:] + [key]), {"recursive": "true"}, None)
        if k == "post":
            f = {"value": self.val()}
            if r.random() < 0.3:
                f["ttl"] = "1000"
            return ("POST", r.choice(self.dirs + [key]), None, f)
        if k == "get":
            return ("GET", key, r.choice([None, {"quorum": "true"}]), None)
        if k == "get_dir":
            return ("GET", r.choice(self.dirs), {"recursive": r.choice(["true", "false"]),
                                                 "sorted": "true"}, None)
        if k == "get_unsorted":
            return ("GET", r.choice(self.dirs), {"recursive": r.choice(["true", "false"])}, None)
        if k == "invalid":
            return r.choice([
                ("PUT", key, None, {"value": "1", "ttl": "abc"}),
                ("PUT", key, None, {"value": "1", "prevIndex": "x"}),
                ("PUT", key, None, {"value": "1", "prevExist": "maybe"}),
                ("PUT", key, None, {"value": "1", "prevValue": ""}),
                ("PUT", key, None, {"refresh": "true", "ttl": "5", "value": "x"}),
                ("GET", key, {"recursive": "maybe"}, None),
                ("GET", key, {"wait": "true", "waitIndex": "x"}, None),
                ("DELETE", key, {"prevValue": ""}, None),
                ("PUT", key + "/child/deeper", None, {"value": "1"}),
            ])
        if k == "edge":
            d = r.choice(self.dirs)
            return r.choice([
                ("PUT", key, None, {"value": self.val(), "dir": "true"}),
                ("PUT", d, None, {"dir": "true", "prevExist": "false"}),
                ("PUT", d, None, {"dir": "true", "ttl": "1000", "prevExist": "true"}),
                ("PUT", d, None, {"dir": "true", "ttl": "", "prevExist": "true"}),
                ("PUT", d, None, {"refresh": "true", "ttl": "1000"}),
                ("PUT", key, None, {"value": self.val(), "ttl": ""}),
                ("PUT", key, None, {"value": self.val(), "prevIndex": "0"}),
                ("PUT", key, None, {"value": self.val(), "prevExist": "true",
                                    "prevValue": self.val() or "v3"}),
                ("PUT", key, None, {"value": self.val(), "prevExist": "false",
                                    "prevValue": self.val() or "v3"}),
                ("PUT", d, None, {"value": "x", "prevValue": "x"}),
                ("POST", d, None, {"value": self.val(), "prevExist": "true"}),
                ("POST", d, None, {"dir": "true"}),
                ("DELETE", key, {"dir": "true", "recursive": "true"}, None),
                ("DELETE", d, {"prevIndex": "0"}, None),
                ("DELETE", d, {"recursive": "true", "prevValue": "v1"}, None),
                ("DELETE", key, {"prevExist": "true"}, None),
                ("GET", d + "/a/../c", None, None),
                ("GET", d, {"recursive": "true", "sorted": "true", "quorum": "true"}, None),
                ("GET", key, {"wait": "false", "waitIndex": "1"}, None),
                ("PUT", d + "/deep/er/still/" + r.choice(LEAVES), None, {"value": self.val()}),
                ("GET", key + "/", None, None),
                ("GET", d + "/", {"sorted": "true"}, None),
                ("PUT", key + "/", None, {"value": self.val()}),
                ("DELETE", key + "/", None, None),
                ("PUT", key, {"value": "fromquery"}, {"value": self.val()}),
                ("PUT", key, {"value": "fromquery", "ttl": "1000"}, None),
                ("DELETE", key, {"prevValue": self.val() or "v1", "prevIndex": self.idx()}, None),
            ])
        if k == "wait":
            if not self.touched:
                return ("GET", key, None, None)
            rel, wkey = r.choice(self.touched)
            q = {"wait": "true", "waitIndex": Idx(rel)}
            parent = wkey.rsplit("/", 1)[0]
            if r.random() < 0.3 and parent.startswith(self.p):
                wkey = parent
                q["recursive"] = "true"
            return ("GET", wkey, q, None)
        return r.choice([("PUT", "/", None, {"value": "1"}),
                         ("DELETE", "/", {"recursive": "true"}, None),
                         ("POST", "/", None, {"value": "1"})])


# ------------------------------------------------------------ normalisation

NUM_FIELDS = re.compile(rb'"(modifiedIndex|createdIndex|index)":(\d+)')
EXPIRATION = re.compile(rb'"expiration":"[^"]*"')
TTL = re.compile(rb'"ttl":-?\d+')
INORDER = re.compile(rb'/(\d{20})"')
CMP_CAUSE = re.compile(rb'\[(\d+) != (\d+)\]')
CLEARED = re.compile(rb'cleared \[(\d+)/(\d+)\]')


def normalise(body, base, sort_listing):
    def rel(n):
        return b"%d" % (int(n) - base)
    if sort_listing and body.startswith(b'{"action":"get"'):
        body = resort(body)
    body = NUM_FIELDS.sub(lambda m: b'"' + m.group(1) + b'":' + rel(m.group(2)), body)
    body = EXPIRATION.sub(b'"expiration":"EXP"', body)
    body = TTL.sub(b'"ttl":TTL', body)
    body = INORDER.sub(lambda m: b"/POST+" + rel(m.group(1)) + b'"', body)
    if b'"errorCode":101' in body:
        body = CMP_CAUSE.sub(lambda m: b"[" + rel(m.group(1)) + b" != " + rel(m.group(2)) + b"]",
                             body)
    body = CLEARED.sub(lambda m: b"cleared [" + rel(m.group(1)) + b"/" + rel(m.group(2)) + b"]",
                       body)
    return body


def resort(body):
    """An unsorted listing's order is Go map order: sort it, keep the rest."""
    j = json.loads(body)

    def s(n):
        if "nodes" in n:
            n["nodes"].sort(key=lambda c: c["key"])
            for ch in n["nodes"]:
                s(ch)
    s(j["node"])
    return go_json(j)


class Side:
    def __init__(self, server):
        self.server = server
        self.c = server.client(timeout=10)
        self.base = None

    def begin(self):
        # the base must not move under us: a server may still be applying
        # its own startup writes (member attributes, cluster version) when it
        # starts answering, so wait until the index reads the same 3 times
        # 50 ms apart
        seen = []

        def stable():
            r = self.c.request("GET", "/v2/keys/")
            assert r.status == 200
            seen.append(int(r.headers["X-Etcd-Index"]))
            return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]
        import harness
        harness.deadline_poll(stable, 10, 0.05, "a stable X-Etcd-Index before the sequence")
        self.base = seen[-1]

    def do(self, method, path, query, form, sort_listing):
        q = resolve(query, self.base)
        f = resolve(form, self.base)
        url = "/v2/keys" + urllib.parse.quote(path, safe="/")
        try:
            r = self.c.request(method, url, query=q, form=f, timeout=5)
        except OSError as e:  # a wait that never fires, or a dead server
            return ("ERROR %s" % type(e).__name__, {}, b"")
        h = {"Content-Type": r.headers.get("Content-Type")}
        if "X-Etcd-Index" in r.headers:
            h["X-Etcd-Index"] = int(r.headers["X-Etcd-Index"]) - self.base
        for name in ("X-Raft-Index", "X-Raft-Term", "X-Etcd-Cluster-Id"):
            h[name + " present"] = name in r.headers
        return (r.status, h, normalise(r.body, self.base, sort_listing))


def describe(n, req, a, b):
    m, path, q, f = req
    show = lambda d: {k: (("IDX+%d" % v.rel) if isinstance(v, Idx) else v)
                      for k, v in (d or {}).items()}
    return ("op #%d: %s %s query=%s form=%s\n  etcd:   %r %r\n          %r\n"
            "  target: %r %r\n          %r" % (n, m, path, show(q), show(f),
                                              a[0], a[1], a[2], b[0], b[1], b[2]))


def expire_both(ref, tgt, seed, n, req, g):
    _, path, q, f = req
    put = ("PUT", path, q, f)
    a = ref.do(*put, False)
    b = tgt.do(*put, False)
    assert a == b, "differential mismatch, seed=%d\n%s" % (seed, describe(n, put, a, b))
    if a[0] not in (200, 201):
        return
    get = ("GET", path, None, None)
    import harness
    harness.deadline_poll(lambda: ref.do(*get, False)[0] == 404 and tgt.do(*get, False)[0] == 404,
                          10, 0.05, "ttl=1 %s to expire on both servers" % path)
    a = ref.do(*get, False)
    b = tgt.do(*get, False)
    assert a == b, "after expiry, seed=%d\n%s" % (seed, describe(n, get, a, b))
    # the expire event is at the index the 404 reports: later waits replay it
    g.cur = max(g.cur, a[1]["X-Etcd-Index"])
    g.touched.append((a[1]["X-Etcd-Index"], path))


@pytest.mark.parametrize("seed", SEEDS)
def test_differential(make_server, seed):
    import harness
    if not harness.etcd_available():
        pytest.skip("etcd binary not found at %s: nothing to compare with" % harness.ETCD_BIN)
    ref = Side(make_server("etcd"))
    tgt = Side(make_server())
    prefix = "/diff%d" % seed
    ref.begin()
    tgt.begin()
    g = Gen(seed, prefix)
    try:
        for n in range(OPS):
            req = g.op()
            m, path, q, f = req
            if m == "EXPIRE":
                expire_both(ref, tgt, seed, n, req, g)
                continue
            unsorted = m == "GET" and not (q and q.get("sorted") == "true")
            a = ref.do(m, path, q, f, unsorted)
            b = tgt.do(m, path, q, f, unsorted)
            assert a == b, "differential mismatch, seed=%d (rerun: ETCFS_DIFF_SEED=%d)\n%s" % (
                seed, seed, describe(n, req, a, b))
            if isinstance(a[0], int) and "X-Etcd-Index" in a[1]:
                g.cur = max(g.cur, a[1]["X-Etcd-Index"])
            if isinstance(a[0], int) and 200 <= a[0] < 300 and m != "GET":
                body = json.loads(a[2].replace(b":TTL", b":0"))
                if "POST+" not in body["node"]["key"]:
                    g.touched.append((body["node"]["modifiedIndex"], body["node"]["key"]))
        final = ("GET", prefix, {"recursive": "true", "sorted": "true"}, None)
        a = ref.do(*final, False)
        b = tgt.do(*final, False)
        assert a == b, "final state differs, seed=%d\n%s" % (seed, describe(OPS, final, a, b))
    finally:
        ref.c.close()
        tgt.c.close()
