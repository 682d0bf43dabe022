# Durability: a write load over HTTP, SIGKILL at a random moment, restart on
# the same data dir: every write that was acknowledged (2xx) must be there
# with its value, every acknowledged delete must stay done, and the index
# must not go back. Several rounds, one server.
# ETCFS_DUR_SEED=n picks the kill moments.
import os
import random
import threading
import time

import harness

ROUNDS = 3
THREADS = 4


def load_until_killed(server, rnd, acked, deleted, doubt, stop):
    """THREADS writers, each on its own keep-alive connection, distinct keys."""
    lock = threading.Lock()

    def writer(t):
        cl = server.client(timeout=5)
        n = 0
        try:
            while not stop.is_set():
                key = "/dur/r%d/t%d/k%d" % (rnd, t, n)
                val = "r%d-t%d-n%d-%s" % (rnd, t, n, "x" * (n % 50))
                try:
                    r = cl.put(key, value=val)
                except OSError:
                    return  # the server is gone: in-flight write unknown
                except Exception:
                    return
                if 200 <= r.status < 300:
                    with lock:
                        acked[key] = (val, r.etcd_index)
                n += 1
                if n % 5 == 0:
                    # delete the key written two writes ago: once acknowledged
                    # it must stay deleted; in doubt while unanswered
                    dkey = "/dur/r%d/t%d/k%d" % (rnd, t, n - 3)
                    with lock:
                        if dkey not in acked:
                            continue
                        doubt[dkey] = acked.pop(dkey)
                    try:
                        r = cl.delete(dkey)
                    except Exception:
                        return
                    with lock:
                        v = doubt.pop(dkey)
                        if r.status == 200:
                            deleted[dkey] = r.etcd_index
                        else:
                            acked[dkey] = v
        finally:
            cl.close()

    ths = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(THREADS)]
    for t in ths:
        t.start()
    return ths


def fetch_all(cl):
    r = cl.get("/dur", recursive="true")
    assert r.status == 200, r
    out = {}

    def walk(n):
        for ch in n.get("nodes", []):
            if ch.get("dir"):
                walk(ch)
            else:
                out[ch["key"]] = ch["value"]
    walk(r.json()["node"])
    return out, r.etcd_index


def test_sigkill_during_writes_loses_no_acknowledged_write(make_server):
    seed = int(os.environ.get("ETCFS_DUR_SEED", str(random.SystemRandom().randint(1, 10**6))))
    print("durability seed %d (rerun: ETCFS_DUR_SEED=%d)" % (seed, seed))
    rng = random.Random(seed)
    s = make_server()
    acked = {}    # key -> (value, index) of acknowledged writes
    deleted = {}  # key -> index of acknowledged deletes
    doubt = {}    # deletes sent but not answered when the server died
    for rnd in range(ROUNDS):
        stop = threading.Event()
        before = len(acked)
        ths = load_until_killed(s, rnd, acked, deleted, doubt, stop)
        # let some writes through, then kill at a random moment
        harness.deadline_poll(lambda: len(acked) >= before + 20, 30, 0.005,
                              "20 acknowledged writes in round %d" % rnd)
        time.sleep(rng.uniform(0.0, 0.8))
        s.kill9()
        stop.set()
        for t in ths:
            t.join(10)
        n_acked = len(acked)
        max_idx = max([i for _, i in acked.values()] + list(deleted.values()))
        s.start(keep_ports=True)
        cl = s.client()
        try:
            got, idx = fetch_all(cl)
            missing = [k for k in acked if k not in got]
            wrong = [(k, got[k], acked[k][0]) for k in acked if k in got and got[k] != acked[k][0]]
            assert not missing and not wrong, (
                "seed %d round %d: %d acknowledged writes lost, %d wrong (of %d); first: %r %r"
                % (seed, rnd, len(missing), len(wrong), n_acked, missing[:3], wrong[:3]))
            back = [k for k in deleted if k in got]
            assert not back, "seed %d round %d: acknowledged deletes undone: %r" % (
                seed, rnd, back[:3])
            doubt.clear()
            assert idx >= max_idx, "index went back after restart: %d < %d" % (idx, max_idx)
            # and it takes new writes after the restart
            r = cl.put("/dur/after%d" % rnd, value="ok")
            assert r.status == 201 and r.etcd_index > max_idx
        finally:
            cl.close()
