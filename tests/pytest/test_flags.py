# raftd takes etcd's command line: flags with one dash or two, "=" or a
# separate value, ETCD_* environment variables, flag/env conflicts, and
# refuses unknown flags.
import os
import subprocess

import pytest

import harness


def member_name(s):
    c = s.client()
    try:
        r = c.request("GET", "/v2/members")
        assert r.status == 200
        return r.json()["members"][0]["name"]
    finally:
        c.close()


@pytest.mark.parametrize("style", ["single", "equals", "env"])
def test_flag_spellings(make_server, style):
    s = make_server(name="n-" + style, flag_style=style)
    assert member_name(s) == "n-" + style
    c = s.client()
    try:
        assert c.put("/flags", value=style).status == 201
    finally:
        c.close()


def test_flag_and_env_conflict(make_server):
    """etcd 3.4 refuses to start when ETCD_NAME and --name are both given
    ("conflicting environment variable ... is shadowed"); DESIGN.md says
    the flag wins. Either is accepted; starting with the env value is not."""
    s = make_server(name="fromflag", extra_env={"ETCD_NAME": "fromenv"}, start=False)
    try:
        s.start(timeout=20)
    except AssertionError as e:
        assert "ETCD_NAME" in str(e), str(e)[-2000:]
        return
    assert member_name(s) == "fromflag"


def binary(kind):
    if kind == "etcd":
        if not harness.etcd_available():
            pytest.skip("no etcd")
        return [harness.ETCD_BIN, "--enable-v2=true"]
    import os
    if not os.path.isfile(harness.raftd_bin()):
        pytest.fail("raftd binary not found at %s" % harness.raftd_bin())
    return [harness.raftd_bin()]


def test_unknown_flag_refused(tmp_path):
    argv = binary(harness.target()) + ["--data-dir", str(tmp_path / "d"),
                                       "--no-such-flag-at-all", "1"]
    p = subprocess.run(argv, capture_output=True, timeout=20, env={"PATH": "/usr/bin:/bin"})
    assert p.returncode != 0
    assert b"no-such-flag-at-all" in p.stderr + p.stdout


def test_version_flag(tmp_path):
    argv = binary(harness.target()) + ["--version"]
    p = subprocess.run(argv, capture_output=True, timeout=20, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip()


def test_default_data_dir_is_name_dot_etcd(make_server):
    """Without --data-dir the member lives in ./<name>.etcd/member."""
    import os
    s = make_server(name="dflt", data_dir="DEFAULT")
    c = s.client()
    try:
        assert c.put("/d", value="1").status == 201
    finally:
        c.close()
    assert os.path.isdir(os.path.join(s.tmp, "dflt.etcd", "member"))
    # and a restart finds the data there
    s.stop()
    s.start(keep_ports=True)
    c = s.client()
    try:
        assert c.get("/d").json()["node"]["value"] == "1"
    finally:
        c.close()


def test_two_client_urls(make_server):
    """A comma-separated --listen-client-urls serves on every URL, and
    /v2/members lists every advertised client URL."""
    s = make_server(start=False)
    extra = harness.free_port()
    base_pairs = s.flag_pairs

    def pairs():
        out = []
        for k, v in base_pairs():
            if k in ("listen-client-urls", "advertise-client-urls"):
                v = v + ",http://127.0.0.1:%d" % extra
            out.append((k, v))
        return out
    s.flag_pairs = pairs
    s.start()
    a = s.client()
    b = harness.Client("127.0.0.1", extra)
    try:
        assert a.put("/two", value="1").status == 201
        assert b.get("/two").json()["node"]["value"] == "1"
        urls = b.request("GET", "/v2/members").json()["members"][0]["clientURLs"]
        assert sorted(urls) == sorted([s.url, "http://127.0.0.1:%d" % extra])
        assert sorted(b.request("GET", "/v2/machines").body.decode().split(", ")) == sorted(urls)
    finally:
        a.close()
        b.close()


def poller_threads(pid):
    """(threads named raftd-poll, how many of them run at SCHED_IDLE)."""
    names = idle = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                if f.read().strip() != "raftd-poll":
                    continue
        except FileNotFoundError:
            continue
        names += 1
        if os.sched_getscheduler(int(tid)) == os.SCHED_IDLE:
            idle += 1
    return names, idle


@pytest.mark.parametrize("flag", [None, "--idle-poll=false"])
def test_idle_poller_threads(make_server, flag):
    """Ours: one SCHED_IDLE poller thread per usable CPU (none on one CPU),
    none with --idle-poll=false; never a refusal in the log."""
    if harness.target() != "raftd":
        pytest.skip("a raftd flag")
    s = make_server(extra_args=[flag] if flag else [])
    cpus = len(os.sched_getaffinity(0))
    want = 0 if flag or cpus < 2 else cpus
    assert poller_threads(s.proc.pid) == (want, want)
    assert "idle poller not started" not in s.stderr_text()
