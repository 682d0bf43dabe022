# Black-box test harness: starts raftd or real etcd on free loopback ports,
# talks HTTP/1.1 to it (keep-alive, raw bytes kept for exact comparison) and
# tears everything down. Shared by every tests/pytest/test_*.py.
import http.client
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ETCD_BIN = os.environ.get("ETCFS_ETCD", shutil.which("etcd") or "/usr/bin/etcd")
START_TIMEOUT = float(os.environ.get("ETCFS_START_TIMEOUT", "30"))


def target():
    """Which server the suite tests: 'raftd' (default) or 'etcd'."""
    return os.environ.get("ETCFS_TARGET", "raftd")


def raftd_bin():
    build = os.environ.get("ETCFS_BUILD", os.path.join(REPO, "build", "san"))
    if not os.path.isabs(build):
        build = os.path.join(REPO, build)
    return os.path.join(build, "raftd", "raftd")


def etcd_available():
    return os.path.isfile(ETCD_BIN) and os.access(ETCD_BIN, os.X_OK)


def deadline_poll(cond, timeout, interval=0.02, what="condition"):
    """Call cond() until it returns a truthy value or timeout expires."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= end:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# Ports: random picks in 20000-32000 (below Linux's ephemeral range, so an
# outgoing connection cannot be holding them), checked by binding, and the
# server start is retried with new ports if it still loses a race.
_rng = random.SystemRandom()


_ports_given = set()


def free_port():
    """A loopback port nothing is bound to now and that this process has
    not handed out before: checking only the first let two cluster members
    not started yet get the same port ("Address already in use")."""
    for _ in range(200):
        port = _rng.randint(20000, 32000)
        if port in _ports_given:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _ports_given.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


SANITIZER_MARKERS = (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer",
                     b"runtime error:", b"SUMMARY: UndefinedBehaviorSanitizer")


def stop_process(proc, timeout=20):
    """SIGTERM proc (a Popen or None), wait; SIGKILL if it does not exit
    in time. Returns its exit code (None if it never started)."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode


def sanitizer_report(text):
    """The first ASan/UBSan/LSan report in a process's stderr text (with
    some context before it), or None."""
    raw = text.encode()
    for m in SANITIZER_MARKERS:
        i = raw.find(m)
        if i >= 0:
            return raw[max(0, i - 200):i + 4000].decode("utf-8", "replace")
    return None


class Server:
    """One single-member cluster of `kind` ('raftd' or 'etcd')."""

    def __init__(self, kind, data_dir=None, name="default", extra_args=(),
                 flag_style="double", extra_env=None):
        self.kind = kind
        self.flag_style = flag_style
        self.extra_env = dict(extra_env or {})
        self.name = name
        self.extra_args = list(extra_args)
        self.tmp = tempfile.mkdtemp(prefix="etcfs-bb-%s-" % kind)
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.log_path = os.path.join(self.tmp, "stderr.log")
        self.proc = None
        self.client_port = None
        self.peer_port = None
        self.logs = b""          # stderr of earlier incarnations
        self.start_seconds = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.client_port

    def argv(self):
        if self.kind == "etcd":
            argv = [ETCD_BIN, "--enable-v2=true"]
        else:
            argv = [raftd_bin()]
        for k, v in self.flag_pairs():
            if self.flag_style == "single":      # -name x (Go's flag package)
                argv += ["-" + k, v]
            elif self.flag_style == "equals":    # --name=x
                argv += ["--%s=%s" % (k, v)]
            elif self.flag_style == "env":       # ETCD_NAME=x, no flags
                pass
            else:
                argv += ["--" + k, v]
        return argv + self.extra_args

    def flag_pairs(self):
        c, p = self.client_port, self.peer_port
        dd = [] if self.data_dir == "DEFAULT" else [("data-dir", self.data_dir)]
        return [("name", self.name)] + dd + [
                ("listen-client-urls", "http://127.0.0.1:%d" % c),
                ("advertise-client-urls", "http://127.0.0.1:%d" % c),
                ("listen-peer-urls", "http://127.0.0.1:%d" % p),
                ("initial-advertise-peer-urls", "http://127.0.0.1:%d" % p),
                ("initial-cluster", "%s=http://127.0.0.1:%d" % (self.name, p))]

    def flag_env(self):
        if self.flag_style != "env":
            return {}
        return {"ETCD_" + k.upper().replace("-", "_"): v for k, v in self.flag_pairs()}

    def start(self, timeout=START_TIMEOUT, keep_ports=False):
        """Start and wait until GET /v2/keys/ answers 200. Returns seconds taken."""
        last = None
        for attempt in range(4):
            if not keep_ports or self.client_port is None:
                self.client_port, self.peer_port = free_port(), free_port()
                while self.peer_port == self.client_port:
                    self.peer_port = free_port()
            env = dict(os.environ)
            env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
            env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
            for k in [k for k in env if k.startswith("ETCD_")]:
                del env[k]
            env.update(self.flag_env())
            env.update(self.extra_env)
            log = open(self.log_path, "ab")
            t0 = time.monotonic()
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, env=env, cwd=self.tmp,
                                         preexec_fn=_raise_nofile)
            log.close()
            try:
                self._wait_ready(timeout)
                self.start_seconds = time.monotonic() - t0
                return self.start_seconds
            except _PortTaken as e:
                last = e
                self._reap()
                if keep_ports:
                    time.sleep(0.2)
                elif self.data_dir.startswith(self.tmp):
                    # a first start that lost its ports may have created a
                    # member already: start afresh on the new ports
                    shutil.rmtree(self.data_dir, ignore_errors=True)
                continue
        raise AssertionError("could not start %s: %s" % (self.kind, last))

    def _wait_ready(self, timeout):
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                text = self.stderr_text()
                if "address already in use" in text.lower():
                    raise _PortTaken(text[-300:])
                raise AssertionError("%s exited with %s before serving:\n%s"
                                     % (self.kind, self.proc.returncode, text[-3000:]))
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=2)
                c.request("GET", "/v2/keys/")
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    # etcd writes the cluster version into its store just
                    # after it starts serving; wait for that so indices are
                    # stable when a test begins
                    c.request("GET", "/version")
                    v = c.getresponse()
                    body = v.read()
                    if v.status != 200 or b"not_decided" not in body:
                        c.close()
                        return
                c.close()
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > end:
                raise AssertionError("%s not serving after %.0fs:\n%s"
                                     % (self.kind, timeout, self.stderr_text()[-3000:]))
            time.sleep(0.02)

    def stderr_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _reap(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def kill9(self):
        """SIGKILL: a crash, no chance to flush anything."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout=20):
        """SIGTERM, wait; SIGKILL if it does not exit. Returns exit code."""
        return stop_process(self.proc, timeout)

    def sanitizer_report(self):
        """The first sanitizer report in stderr, or None."""
        return sanitizer_report(self.stderr_text())

    def cleanup(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def client(self, timeout=10):
        return Client("127.0.0.1", self.client_port, timeout)


class _PortTaken(Exception):
    pass


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers          # http.client.HTTPMessage
        self.body = body                # bytes, exactly as sent

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def header(self, name):
        return self.headers.get(name)

    @property
    def etcd_index(self):
        return int(self.headers["X-Etcd-Index"])

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:300])


def enc(params):
    """Form/query encoding; values may be str or (for raw tests) bytes."""
    return urllib.parse.urlencode(params)


class Client:
    """Keep-alive HTTP/1.1 client that returns raw bodies."""

    def __init__(self, host, port, timeout=10):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, query=None, form=None, body=None,
                headers=None, timeout=None):
        if query:
            path = path + ("&" if "?" in path else "?") + (
                query if isinstance(query, str) else enc(query))
        hdrs = dict(headers or {})
        if form is not None:
            body = form if isinstance(form, (str, bytes)) else enc(form)
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if isinstance(body, str):
            body = body.encode()
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(self.host, self.port,
                                                       timeout=timeout or self.timeout)
            elif timeout is not None:
                self.conn.timeout = timeout
                if self.conn.sock is not None:
                    self.conn.sock.settimeout(timeout)
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                r = self.conn.getresponse()
                data = r.read()
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError):
                self.close()
                if fresh or attempt:
                    raise
                continue  # stale keep-alive connection: retry once
            except Exception:
                self.close()
                raise
            if timeout is not None and self.conn is not None:
                self.conn.timeout = self.timeout
                if self.conn.sock is not None:
                    self.conn.sock.settimeout(self.timeout)
            if r.will_close:
                self.close()
            return Response(r.status, r.reason, r.headers, data)

    # v2 keys shortcuts
    def get(self, key, **q):
        return self.request("GET", "/v2/keys" + urllib.parse.quote(key, safe="/"), query=_q(q))

    def put(self, key, query=None, **form):
        return self.request("PUT", "/v2/keys" + urllib.parse.quote(key, safe="/"), query=query, form=_q(form))

    def post(self, key, query=None, **form):
        return self.request("POST", "/v2/keys" + urllib.parse.quote(key, safe="/"), query=query, form=_q(form))

    def delete(self, key, **q):
        return self.request("DELETE", "/v2/keys" + urllib.parse.quote(key, safe="/"), query=_q(q))


def _q(d):
    out = {}
    for k, v in d.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        out[k] = str(v) if not isinstance(v, bytes) else v
    return out


def go_json(obj):
    """Encode like Go's encoding/json (json.Encoder adds the newline):
    compact, UTF-8 kept raw, <>& and U+2028/9 escaped, and control
    characters other than \\n \\r \\t as \\u00XX (Go 1.19)."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    s = (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
         .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
         .replace("\\b", "\\u0008").replace("\\f", "\\u000c"))
    return (s + "\n").encode("utf-8")


def err_body(code, message, cause, index):
    return go_json({"errorCode": code, "message": message, "cause": cause,
                    "index": index})


def raw_exchange(port, data, timeout=5.0, half_close=False):
    """Send raw bytes on a fresh connection; return everything read until the
    server closes, the timeout passes, or one complete response arrived."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading it all
        if half_close:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
            if _complete(buf):
                break
        return buf
    finally:
        s.close()


def _complete(buf):
    i = buf.find(b"\r\n\r\n")
    if i < 0:
        return False
    head = buf[:i].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(buf) - i - 4 >= int(line.split(b":")[1])
    if b"transfer-encoding: chunked" in head:
        return buf.endswith(b"0\r\n\r\n")
    return False


def status_of(raw):
    """Status code of a raw response, or None."""
    if not raw.startswith(b"HTTP/1."):
        return None
    try:
        return int(raw.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def body_of(raw):
    i = raw.find(b"\r\n\r\n")
    return raw[i + 4:] if i >= 0 else b""


class RawConn:
    """A raw socket that sends one request and parses the response as it
    arrives: for long polls (is it still parked?) and streams (one chunk at
    a time)."""

    def __init__(self, port, timeout=10.0, sock=None):
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.status = None
        self.headers = {}
        self.chunked = False

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def get(self, path):
        self.send(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path).encode())

    def _fill(self, end):
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline passed")
        self.sock.settimeout(remaining)
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def idle_for(self, seconds):
        """True if no response body starts within `seconds` (a parked poll).
        Headers alone may arrive: etcd flushes them when the watch parks."""
        end = time.monotonic() + seconds
        while True:
            if self.status is None and b"\r\n\r\n" in self.buf:
                self.read_head()
            if self.status is not None and self.buf:
                return False
            remaining = end - time.monotonic()
            if remaining <= 0:
                return True
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return True
            if not data:
                return False
            self.buf += data

    def read_head(self, timeout=10.0):
        if self.status is not None:
            return self.status
        end = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(end)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        for ln in lines[1:]:
            k, v = ln.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        return self.status

    def read_chunk(self, timeout=10.0):
        """Next chunk's payload of a chunked body (b'' for the last chunk)."""
        end = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            self._fill(end)
        size_line, rest = self.buf.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        while len(rest) < size + 2:
            self._fill(end)
            rest = self.buf.split(b"\r\n", 1)[1]
        self.buf = rest[size + 2:]
        return rest[:size]

    def read_body(self, timeout=10.0):
        """The whole body (de-chunked) of the response."""
        if self.status is None:
            self.read_head(timeout)
        end = time.monotonic() + timeout
        if self.chunked:
            out = b""
            while True:
                c = self.read_chunk(max(0.001, end - time.monotonic()))
                if not c:
                    return out
                out += c
        n = int(self.headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill(end)
        body, self.buf = self.buf[:n], self.buf[n:]
        return body

    def read_event(self, timeout=10.0):
        """Next newline-terminated JSON line of a stream (chunks may split
        or join lines)."""
        end = time.monotonic() + timeout
        if self.status is None:
            self.read_head(timeout)
        pending = getattr(self, "_lines", b"")
        while b"\n" not in pending:
            c = self.read_chunk(max(0.001, end - time.monotonic()))
            if not c:
                raise ConnectionError("stream ended")
            pending += c
        line, self._lines = pending.split(b"\n", 1)
        return line + b"\n"
