#!/usr/bin/python3
# Helpers for bench_http.sh: a pipelined key loader, a wait-until-serving
# timer, and the markdown results table.
#   load URL N             PUT /v2/keys/load/k<i> (100-byte values), i < N
#   serving URL KEY T0 TO  seconds from epoch time T0 until GET KEY is 200
#   table TSV              markdown table of etcd vs raftd from the tsv
#   leader URL...          the index (0-based) of the URL that is leader
#   failover PID URL...    SIGKILL PID, then a new PUT on every URL every
#                          20 ms until one is acknowledged: prints the seconds
#   cluster-table TSV      the table of bench_cluster.sh
import http.client
import os
import selectors
import signal
import socket
import sys
import time
import urllib.parse

VALUE = b"v" * 100


def load(url, n, conns=32, depth=32):
    u = urllib.parse.urlparse(url)
    host, port = u.hostname, u.port
    sel = selectors.DefaultSelector()
    nxt = 0
    done = 0
    bad = 0
    state = {}
    t0 = time.monotonic()

    def req(i):
        body = b"value=" + VALUE
        return (b"PUT /v2/keys/load/k%d HTTP/1.1\r\nHost: %s\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: %d\r\n\r\n" % (i, host.encode(), len(body)) + body)

    for _ in range(conns):
        s = socket.create_connection((host, port))
        s.setblocking(False)
        state[s] = {"out": b"", "inflight": 0, "buf": b""}
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    while done < n:
        for key, mask in sel.select(timeout=5):
            s = key.fileobj
            st = state[s]
            if mask & selectors.EVENT_WRITE:
                while st["inflight"] < depth and nxt < n:
                    st["out"] += req(nxt)
                    nxt += 1
                    st["inflight"] += 1
                if st["out"]:
                    try:
                        k = s.send(st["out"])
                        st["out"] = st["out"][k:]
                    except BlockingIOError:
                        pass
            if mask & selectors.EVENT_READ:
                data = s.recv(1 << 20)
                if not data:
                    sys.exit("loader: server closed a connection")
                st["buf"] += data
                # responses are small and have Content-Length: count whole ones
                while True:
                    i = st["buf"].find(b"\r\n\r\n")
                    if i < 0:
                        break
                    head = st["buf"][:i]
                    cl = 0
                    for ln in head.split(b"\r\n"):
                        if ln.lower().startswith(b"content-length:"):
                            cl = int(ln.split(b":")[1])
                    if len(st["buf"]) < i + 4 + cl:
                        break
                    if not (head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.1 201")):
                        bad += 1
                    st["buf"] = st["buf"][i + 4 + cl:]
                    st["inflight"] -= 1
                    done += 1
            want = selectors.EVENT_READ
            if st["out"] or (st["inflight"] < depth and nxt < n):
                want |= selectors.EVENT_WRITE
            sel.modify(s, want)
    dt = time.monotonic() - t0
    for s in state:
        s.close()
    if bad:
        sys.exit("loader: %d non-2xx answers" % bad)
    print("loaded %d keys in %.1fs (%.0f/s)" % (n, dt, n / dt), file=sys.stderr)


def serving(url, key, t0, timeout):
    u = urllib.parse.urlparse(url)
    end = time.time() + timeout
    while time.time() < end:
        try:
            s = socket.create_connection((u.hostname, u.port), timeout=1)
            s.sendall(b"GET /v2/keys%s HTTP/1.1\r\nHost: x\r\n\r\n" % key.encode())
            data = s.recv(100)
            s.close()
            if data.startswith(b"HTTP/1.1 200"):
                print("%.3f" % (time.time() - t0))
                return
        except OSError:
            pass
        time.sleep(0.005)
    sys.exit("not serving %s after %ss" % (key, timeout))


GOALS = {"put_seq": (2.0, "higher"), "put_64": (3.0, "higher"), "get_64": (2.5, "higher"),
         "get_64_t1": (2.5, "higher"),
         "rss_200k_mb": (3.0, "lower"), "restart_200k_s": (3.0, "lower")}
LABELS = {"put_seq": "sequential PUT, 1 connection (req/s)",
          "put_64": "PUT, 64 connections (req/s)",
          "get_64": "GET, 64 connections, wrk -t2 (req/s)",
          "get_64_t1": "GET, 64 connections, wrk -t1 (req/s)",
          "rss_200k_mb": "RSS with 200,000 keys (MB)",
          "restart_200k_s": "restart to serving, 200,000 keys (s)"}


def table(tsv):
    import os
    keys = "{:,}".format(int(os.environ.get("KEYS", "200000")))
    for m in ("rss_200k_mb", "restart_200k_s"):
        LABELS[m] = LABELS[m].replace("200,000", keys)
    res = {}
    for ln in open(tsv):
        kind, metric, val = ln.split()
        res[(kind, metric)] = float(val)
    print("| metric | etcd 3.4 | raftd | raftd advantage | goal |")
    print("|---|---:|---:|---:|---|")
    for m, label in LABELS.items():
        e, r = res.get(("etcd", m)), res.get(("raftd", m))
        goal, better = GOALS[m]
        fmt = (lambda v: "%.0f" % v) if m.startswith(("put", "get", "rss")) else (lambda v: "%.2f" % v)
        ratio = ok = ""
        if e and r:
            # advantage: throughput raftd/etcd; memory and time etcd/raftd
            x = r / e if better == "higher" else e / r
            ratio = "%.2fx" % x
            ok = " (met)" if x >= goal else " (missed)"
        print("| %s | %s | %s | %s | %sx%s |" % (label, fmt(e) if e else "-", fmt(r) if r else "-",
                                                 ratio, goal, ok))


def leader(urls, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        for i, url in enumerate(urls):
            u = urllib.parse.urlparse(url)
            try:
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=1)
                c.request("GET", "/v2/stats/leader")
                if c.getresponse().status == 200:
                    print(i)
                    return
            except OSError:
                pass
        time.sleep(0.02)
    sys.exit("no leader after %ss" % timeout)


def failover(pid, urls, timeout=30, every=0.02):
    """Kill the leader, then start a PUT on every survivor every `every`
    seconds (each on its own connection and thread, so a write parked on
    a dead leader does not hold up later ones): the time to the first
    acknowledged write."""
    import threading
    done = threading.Event()
    first = []

    def put(url, i):
        u = urllib.parse.urlparse(url)
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
            c.request("PUT", "/v2/keys/failover/%d" % i, body="value=x",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
            if c.getresponse().status in (200, 201):
                first.append(time.monotonic())
                done.set()
            c.close()
        except OSError:
            pass

    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    i = 0
    while not done.is_set() and time.monotonic() < t0 + timeout:
        for url in urls:
            i += 1
            threading.Thread(target=put, args=(url, i), daemon=True).start()
        done.wait(every)
    if not first:
        sys.exit("no write acknowledged %ss after the kill" % timeout)
    print("%.3f" % (min(first) - t0))


CLUSTER_GOALS = {"put_seq": (3.0, "higher"), "put_64": (3.0, "higher"),
                 "get_64": (2.5, "higher"), "qget_64": (2.5, "higher"),
                 "failover_s": (None, "lower")}
CLUSTER_LABELS = {"put_seq": "sequential PUT, 1 connection to the leader (req/s)",
                  "put_64": "PUT, 64 connections to the leader (req/s)",
                  "get_64": "GET, 64 connections to the leader (req/s)",
                  "qget_64": "GET ?quorum=true, 64 connections to the leader (req/s)",
                  "failover_s": "leader SIGKILL to first acknowledged write (s)"}


def cluster_table(tsv):
    res = {}
    for ln in open(tsv):
        kind, metric, val = ln.split()
        res[(kind, metric)] = float(val)
    print("| metric | etcd 3.4 | raftd | raftd advantage | goal |")
    print("|---|---:|---:|---:|---|")
    for m, label in CLUSTER_LABELS.items():
        e, r = res.get(("etcd", m)), res.get(("raftd", m))
        goal, better = CLUSTER_GOALS[m]
        fmt = (lambda v: "%.2f" % v) if m == "failover_s" else (lambda v: "%.0f" % v)
        ratio = ""
        goal_s = "%sx" % goal if goal else "-"
        if e and r:
            x = r / e if better == "higher" else e / r
            ratio = "%.2fx" % x
            if goal:
                goal_s += " (met)" if x >= goal else " (missed)"
        print("| %s | %s | %s | %s | %s |" % (label, fmt(e) if e else "-",
                                              fmt(r) if r else "-", ratio, goal_s))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "load":
        load(sys.argv[2], int(sys.argv[3]))
    elif cmd == "serving":
        serving(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
    elif cmd == "table":
        table(sys.argv[2])
    elif cmd == "leader":
        leader(sys.argv[2:])
    elif cmd == "failover":
        failover(int(sys.argv[2]), sys.argv[3:])
    elif cmd == "cluster-table":
        cluster_table(sys.argv[2])
    else:
        sys.exit("unknown command " + cmd)
