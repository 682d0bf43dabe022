# Consistency of the event history with the store and with the answers:
# 6 clients issue random writes at once; afterwards the history (read back
# with recursive waitIndex scans) replayed from empty must give exactly the
# final tree, and every acknowledged write must be in the history at the
# index its answer named, with the same action, key and value.
import random
import threading

KEYS = ["/h/a/%s" % k for k in "pqrst"] + ["/h/b/%s" % k for k in "pqrst"]
VALS = ["1", "2", "3"]


def test_history_replays_to_final_tree(make_server):
    s = make_server()
    acks = []
    lock = threading.Lock()

    def client(seed):
        rng = random.Random(seed)
        cl = s.client()
        try:
            for _ in range(100):
                k = rng.choice(KEYS)
                op = rng.random()
                if op < 0.35:
                    r = cl.put(k, value=rng.choice(VALS))
                elif op < 0.5:
                    r = cl.put(k, value=rng.choice(VALS), prevValue=rng.choice(VALS))
                elif op < 0.6:
                    r = cl.put(k, value=rng.choice(VALS), prevExist="false")
                elif op < 0.7:
                    r = cl.put(k, value=rng.choice(VALS), prevExist="true")
                elif op < 0.85:
                    r = cl.delete(k)
                elif op < 0.95:
                    r = cl.delete(k, prevValue=rng.choice(VALS))
                else:
                    r = cl.delete(rng.choice(["/h/a", "/h/b"]), recursive="true")
                if r.status in (200, 201):
                    j = r.json()
                    with lock:
                        acks.append((r.etcd_index, j["action"], j["node"]["key"],
                                     j["node"].get("value")))
        finally:
            cl.close()

    c = s.client()
    try:
        base = c.get("/").etcd_index
        ths = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(120)
        last = c.get("/").etcd_index
        assert last - base < 900, "history window would not hold the run"
        # read the history back
        history = {}
        idx = base + 1
        while idx <= last:
            r = c.get("/h", wait="true", recursive="true", waitIndex=str(idx), timeout=5)
            assert r.status == 200, r
            e = r.json()
            i = e["node"]["modifiedIndex"]
            history[i] = (e["action"], e["node"]["key"], e["node"].get("value"))
            idx = i + 1
        # every acknowledged write is the event at its index
        for i, action, key, value in acks:
            assert history.get(i) == (action, key, value), (i, history.get(i), action, key)
        # replaying the history from empty gives the final tree
        tree = {}
        for i in sorted(history):
            action, key, value = history[i]
            if action in ("set", "create", "update", "compareAndSwap"):
                tree[key] = value
            else:
                for k in [k for k in tree if k == key or k.startswith(key + "/")]:
                    del tree[k]
        actual = {}
        r = c.get("/h", recursive="true")
        if r.status == 200:
            def walk(n):
                for ch in n.get("nodes", []):
                    if ch.get("dir"):
                        walk(ch)
                    else:
                        actual[ch["key"]] = ch["value"]
            walk(r.json()["node"])
        assert actual == tree
        assert len(acks) > 200
    finally:
        c.close()
