# Concurrent clients: compare-and-swap counters must not lose or duplicate
# increments; create (prevExist=false) races have exactly one winner.
import threading



def run_threads(n, fn):
    errors = []

    def wrap(t):
        try:
            fn(t)
        except Exception as e:  # reported by the caller
            errors.append(e)
    ths = [threading.Thread(target=wrap, args=(t,)) for t in range(n)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(120)
    assert not errors, errors[:3]


def test_cas_counter(server, uniq):
    k = uniq + "/counter"
    c0 = server.client()
    c0.put(k, value="0")
    wins = [[] for _ in range(6)]

    def worker(t):
        cl = server.client()
        try:
            while len(wins[t]) < 15:
                r = cl.get(k)
                cur = r.json()["node"]["value"]
                r = cl.put(k, value=str(int(cur) + 1), prevValue=cur)
                if r.status == 200:
                    wins[t].append(int(cur) + 1)
                else:
                    assert r.status == 412 and r.json()["errorCode"] == 101, r
        finally:
            cl.close()
    run_threads(6, worker)
    allwins = sorted(v for w in wins for v in w)
    assert allwins == list(range(1, 91)), "lost or duplicated CAS increments"
    assert c0.get(k).json()["node"]["value"] == "90"
    c0.close()


def test_create_race_has_one_winner(server, uniq):
    results = [[] for _ in range(8)]

    def worker(t):
        cl = server.client()
        try:
            for n in range(20):
                r = cl.put("%s/k%d" % (uniq, n), value="t%d" % t, prevExist="false")
                results[t].append(r.status)
        finally:
            cl.close()
    run_threads(8, worker)
    c = server.client()
    try:
        for n in range(20):
            st = [results[t][n] for t in range(8)]
            assert sorted(st) == [201] + [412] * 7, (n, st)
            winner = [t for t in range(8) if results[t][n] == 201][0]
            assert c.get("%s/k%d" % (uniq, n)).json()["node"]["value"] == "t%d" % winner
    finally:
        c.close()
