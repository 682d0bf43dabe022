# /v2/keys: every verb, every precondition and every error code etcd 3.4
# returns, compared byte for byte (status, body, field order, Go escaping)
# with indices taken from the response's own X-Etcd-Index.
import re

import pytest

from harness import err_body, go_json


def check(r, status, obj):
    """Exact status and body (etcd's JSON + '\\n')."""
    want = obj if isinstance(obj, bytes) else go_json(obj)
    assert (r.status, r.body) == (status, want), "got %d %r\nwant %d %r" % (
        r.status, r.body, status, want)


def node(key, value=None, mi=None, ci=None, dir=False, nodes=None, **extra):
    """Node JSON in etcd's field order: key value dir expiration ttl nodes
    modifiedIndex createdIndex."""
    n = {}
    if key is not None:
        n["key"] = key
    if value is not None:
        n["value"] = value
    if dir:
        n["dir"] = True
    for f in ("expiration", "ttl"):
        if f in extra:
            n[f] = extra[f]
    if nodes is not None:
        n["nodes"] = nodes
    if mi is not None:
        n["modifiedIndex"] = mi
    if ci is not None:
        n["createdIndex"] = ci if ci is not None else mi
    return n


def ev(action, n, prev=None):
    d = {"action": action, "node": n}
    if prev is not None:
        d["prevNode"] = prev
    return d


def keys_headers_ok(r, raft=True):
    assert r.headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"\d+", r.headers.get("X-Etcd-Index", "")), r.headers
    assert re.fullmatch(r"[0-9a-f]+", r.headers.get("X-Etcd-Cluster-Id", "")), r.headers
    if raft:
        assert re.fullmatch(r"\d+", r.headers.get("X-Raft-Index", "")), r.headers
        assert re.fullmatch(r"\d+", r.headers.get("X-Raft-Term", "")), r.headers


# ---------------------------------------------------------------- set / get

def test_set_new_then_replace(c, uniq):
    k = uniq + "/a"
    r = c.put(k, value="1")
    keys_headers_ok(r)
    i = r.etcd_index
    check(r, 201, ev("set", node(k, "1", i, i)))
    r = c.put(k, value="2")
    keys_headers_ok(r)
    j = r.etcd_index
    assert j == i + 1
    check(r, 200, ev("set", node(k, "2", j, j), node(k, "1", i, i)))
    assert int(r.headers["X-Raft-Index"]) >= j


def test_get_key_and_missing(c, uniq):
    k = uniq + "/a"
    i = c.put(k, value="v").etcd_index
    r = c.get(k)
    keys_headers_ok(r)
    assert r.etcd_index >= i
    check(r, 200, ev("get", node(k, "v", i, i)))
    r = c.get(uniq + "/nope")
    keys_headers_ok(r, raft=False)
    check(r, 404, err_body(100, "Key not found", uniq + "/nope", r.etcd_index))


def test_get_quorum(c, uniq):
    k = uniq + "/q"
    i = c.put(k, value="v").etcd_index
    r = c.get(k, quorum="true")
    check(r, 200, ev("get", node(k, "v", i, i)))


def test_head(c, uniq):
    k = uniq + "/h"
    c.put(k, value="v")
    r = c.request("HEAD", "/v2/keys" + k)
    assert r.status == 200 and r.body == b""
    assert "X-Etcd-Index" in r.headers
    r = c.request("HEAD", "/v2/keys" + uniq + "/missing")
    assert r.status == 404 and r.body == b""


def test_empty_value_and_query_value(c, uniq):
    k = uniq + "/e"
    r = c.put(k)
    i = r.etcd_index
    check(r, 201, ev("set", node(k, "", i, i)))
    # etcd reads the form with FormValue: a value in the query string counts
    r = c.request("PUT", "/v2/keys" + k + "?value=fromquery")
    j = r.etcd_index
    check(r, 200, ev("set", node(k, "fromquery", j, j), node(k, "", i, i)))


def test_go_escaping_of_values_and_keys(c, uniq):
    k = uniq + "/esc<&>\u00e9"
    val = "<b>&amp;\"quote\" \\ \t\n\r\x01\x7f \u00e9\u4e2d \u2028\u2029"
    r = c.put(k, value=val)
    i = r.etcd_index
    check(r, 201, ev("set", node(k, val, i, i)))
    assert b"\\u003cb\\u003e\\u0026amp;" in r.body and b"\\u0001" in r.body
    r = c.get(k)
    check(r, 200, ev("get", node(k, val, i, i)))


def test_large_value_roundtrip(c, uniq):
    k = uniq + "/big"
    val = "x" * 200000
    r = c.put(k, value=val)
    assert r.status == 201
    r = c.get(k)
    assert r.status == 200 and r.json()["node"]["value"] == val


# ---------------------------------------------------------------- dirs

def test_dir_create_and_errors(c, uniq):
    d = uniq + "/d"
    r = c.put(d, dir="true")
    i = r.etcd_index
    check(r, 201, ev("set", node(d, mi=i, ci=i, dir=True)))
    r = c.put(d, dir="true")
    check(r, 403, err_body(102, "Not a file", d, i))
    r = c.put(d, value="x")
    check(r, 403, err_body(102, "Not a file", d, i))
    r = c.put(d, value="x", prevValue="y")
    check(r, 403, err_body(102, "Not a file", d, i))
    # dir=true with prevExist=true on an existing dir: an update (TTL refresh path)
    r = c.put(d, dir="true", prevExist="true")
    j = r.etcd_index
    check(r, 200, ev("update", node(d, mi=j, ci=i, dir=True), node(d, mi=i, ci=i, dir=True)))


def test_not_a_directory(c, uniq):
    f = uniq + "/f"
    i = c.put(f, value="1").etcd_index
    r = c.put(f + "/child", value="x")
    check(r, 400, err_body(104, "Not a directory", f, i))
    r = c.post(f, value="x")
    check(r, 400, err_body(104, "Not a directory", f, i))
    check(c.get(f + "/child"), 400, err_body(104, "Not a directory", f, i))


def test_listing_sorted_recursive_hidden(c, uniq):
    d = uniq + "/l"
    ia = c.put(d + "/a", value="A").etcd_index
    ib = c.put(d + "/b/c", value="C").etcd_index
    ih = c.put(d + "/_h", value="H").etcd_index
    idd = c.put(d + "/b/e", dir="true").etcd_index
    r = c.get(d, sorted="true")
    check(r, 200, ev("get", node(d, mi=ia, ci=ia, dir=True, nodes=[
        node(d + "/a", "A", ia, ia),
        node(d + "/b", mi=ib, ci=ib, dir=True)])))
    r = c.get(d, sorted="true", recursive="true")
    check(r, 200, ev("get", node(d, mi=ia, ci=ia, dir=True, nodes=[
        node(d + "/a", "A", ia, ia),
        node(d + "/b", mi=ib, ci=ib, dir=True, nodes=[
            node(d + "/b/c", "C", ib, ib),
            node(d + "/b/e", mi=idd, ci=idd, dir=True)])])))
    # without sorted the order is unspecified, the content is not
    r = c.get(d, recursive="true")
    got = sorted(n["key"] for n in r.json()["node"]["nodes"])
    assert got == [d + "/a", d + "/b"]
    # hidden key: not listed, but readable by name
    r = c.get(d + "/_h")
    check(r, 200, ev("get", node(d + "/_h", "H", ih, ih)))


def test_root(c):
    r = c.get("/")
    assert r.status == 200
    j = r.json()
    assert list(j) == ["action", "node"]
    assert list(j["node"])[:1] == ["dir"] and "key" not in j["node"]
    idx = r.etcd_index
    check(c.put("/", value="x"), 400, err_body(107, "Root is read only", "/", idx))
    check(c.delete("/"), 400, err_body(107, "Root is read only", "/", idx))
    check(c.delete("/", recursive="true"), 400, err_body(107, "Root is read only", "/", idx))


# ---------------------------------------------------------------- create / update

def test_create_prev_exist_false(c, uniq):
    k = uniq + "/c"
    r = c.put(k, value="1", prevExist="false")
    i = r.etcd_index
    check(r, 201, ev("create", node(k, "1", i, i)))
    r = c.put(k, value="2", prevExist="false")
    keys_headers_ok(r, raft=False)
    check(r, 412, err_body(105, "Key already exists", k, i))


def test_update_prev_exist_true(c, uniq):
    k = uniq + "/u"
    # the cause names the first missing path component, here the parent
    r = c.put(k, value="1", prevExist="true")
    check(r, 404, err_body(100, "Key not found", uniq, r.etcd_index))
    c.put(uniq + "/other", value="x")
    r = c.put(k, value="1", prevExist="true")
    check(r, 404, err_body(100, "Key not found", k, r.etcd_index))
    i = c.put(k, value="1").etcd_index
    r = c.put(k, value="2", prevExist="true")
    j = r.etcd_index
    check(r, 200, ev("update", node(k, "2", j, i), node(k, "1", i, i)))


# ---------------------------------------------------------------- CAS / CAD

def test_compare_and_swap(c, uniq):
    k = uniq + "/cas"
    r = c.put(k, value="1", prevValue="1")
    check(r, 404, err_body(100, "Key not found", uniq, r.etcd_index))
    i = c.put(k, value="1").etcd_index
    r = c.put(k, value="2", prevValue="1")
    j = r.etcd_index
    check(r, 200, ev("compareAndSwap", node(k, "2", j, i), node(k, "1", i, i)))
    r = c.put(k, value="3", prevValue="9")
    check(r, 412, err_body(101, "Compare failed", "[9 != 2]", j))
    r = c.put(k, value="3", prevIndex=str(i))
    check(r, 412, err_body(101, "Compare failed", "[%d != %d]" % (i, j), j))
    r = c.put(k, value="3", prevIndex=str(i), prevValue="9")
    check(r, 412, err_body(101, "Compare failed", "[9 != 2] [%d != %d]" % (i, j), j))
    r = c.put(k, value="3", prevIndex=str(j), prevValue="2")
    m = r.etcd_index
    check(r, 200, ev("compareAndSwap", node(k, "3", m, i), node(k, "2", j, i)))
    r = c.put(k, value="4", prevValue="")
    check(r, 400, err_body(201, "PrevValue is Required in POST form",
                           '"prevValue" cannot be empty', 0))


def test_compare_and_delete(c, uniq):
    k = uniq + "/cad"
    r = c.delete(k, prevValue="1")
    check(r, 404, err_body(100, "Key not found", uniq, r.etcd_index))
    c.put(uniq + "/other", value="x")
    r = c.delete(k, prevValue="1")
    check(r, 404, err_body(100, "Key not found", k, r.etcd_index))
    i = c.put(k, value="1").etcd_index
    r = c.delete(k, prevValue="2")
    check(r, 412, err_body(101, "Compare failed", "[2 != 1]", i))
    r = c.delete(k, prevIndex=str(i + 100))
    check(r, 412, err_body(101, "Compare failed", "[%d != %d]" % (i + 100, i), i))
    r = c.delete(k, prevValue="1", prevIndex=str(i))
    j = r.etcd_index
    check(r, 200, ev("compareAndDelete", node(k, mi=j, ci=i), node(k, "1", i, i)))
    r = c.delete(uniq + "/z", prevValue="")
    check(r, 400, err_body(201, "PrevValue is Required in POST form",
                           '"prevValue" cannot be empty', 0))


# ---------------------------------------------------------------- delete

def test_delete_file_dir_recursive(c, uniq):
    k = uniq + "/f"
    i = c.put(k, value="1").etcd_index
    r = c.delete(k)
    j = r.etcd_index
    keys_headers_ok(r)
    check(r, 200, ev("delete", node(k, mi=j, ci=i), node(k, "1", i, i)))
    check(c.get(k), 404, err_body(100, "Key not found", k, j))
    check(c.delete(k), 404, err_body(100, "Key not found", k, j))

    d = uniq + "/d"
    i = c.put(d + "/x", value="1").etcd_index
    check(c.delete(d), 403, err_body(102, "Not a file", d, i))
    check(c.delete(d, dir="true"), 403, err_body(108, "Directory not empty", d, i))
    r = c.delete(d, recursive="true")
    j = r.etcd_index
    check(r, 200, ev("delete", node(d, mi=j, ci=i, dir=True), node(d, mi=i, ci=i, dir=True)))
    check(c.get(d + "/x"), 404, err_body(100, "Key not found", d, j))

    e = uniq + "/e"
    i = c.put(e, dir="true").etcd_index
    r = c.delete(e, dir="true")
    j = r.etcd_index
    check(r, 200, ev("delete", node(e, mi=j, ci=i, dir=True), node(e, mi=i, ci=i, dir=True)))


# ---------------------------------------------------------------- POST

def test_post_in_order_keys(c, uniq):
    d = uniq + "/q"
    r = c.post(d, value="a")
    i = r.etcd_index
    check(r, 201, ev("create", node("%s/%020d" % (d, i), "a", i, i)))
    r = c.post(d, value="b")
    j = r.etcd_index
    assert j > i
    check(r, 201, ev("create", node("%s/%020d" % (d, j), "b", j, j)))
    r = c.get(d, sorted="true")
    check(r, 200, ev("get", node(d, mi=i, ci=i, dir=True, nodes=[
        node("%s/%020d" % (d, i), "a", i, i),
        node("%s/%020d" % (d, j), "b", j, j)])))


# ---------------------------------------------------------------- TTL

def test_ttl_fields_and_removal(c, uniq):
    k = uniq + "/t"
    r = c.put(k, value="1", ttl="100")
    assert r.status == 201
    n = r.json()["node"]
    assert list(n) == ["key", "value", "expiration", "ttl", "modifiedIndex", "createdIndex"]
    assert n["ttl"] in (99, 100)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", n["expiration"]), n
    # ttl= (empty) on update removes the TTL
    r = c.put(k, value="2", ttl="", prevExist="true")
    j = r.etcd_index
    assert r.status == 200
    assert list(r.json()["node"]) == ["key", "value", "modifiedIndex", "createdIndex"]
    assert list(r.json()["prevNode"]) == list(n)
    r = c.get(k)
    check(r, 200, ev("get", node(k, "2", j, n["createdIndex"])))


def test_ttl_expiry_observed(c, uniq):
    k = uniq + "/exp"
    d = uniq + "/expdir"
    c.put(k, value="1", ttl="1")
    c.put(d, dir="true", ttl="1")
    c.put(d + "/child", value="x")
    from harness import deadline_poll
    deadline_poll(lambda: c.get(k).status == 404, 6, 0.05, "ttl=1 key to expire")
    deadline_poll(lambda: c.get(d + "/child").status == 404, 6, 0.05,
                  "ttl=1 dir and its child to expire")
    r = c.get(k)
    check(r, 404, err_body(100, "Key not found", k, r.etcd_index))


def test_ttl_refresh(c, uniq):
    k = uniq + "/r"
    r = c.put(k, value="v", ttl="100")
    i = r.etcd_index
    r = c.put(k, refresh="true", ttl="200")
    assert r.status == 200, r
    j = r.json()
    assert j["action"] == "set" and j["node"]["value"] == "v" and j["node"]["ttl"] in (199, 200)
    assert j["prevNode"]["value"] == "v"
    r = c.put(k, refresh="true", ttl="5", value="other")
    check(r, 400, err_body(211, "Value provided on refresh",
                           "A value was provided on a refresh", 0))
    r = c.put(k, refresh="true")
    check(r, 400, err_body(212, "A TTL must be provided on refresh", "No TTL value set", 0))
    r = c.put(uniq + "/missing", refresh="true", ttl="5")
    check(r, 404, err_body(100, "Key not found", uniq + "/missing", r.etcd_index))
    assert c.get(k).json()["node"]["value"] == "v" and i


# ---------------------------------------------------------------- bad parameters

BAD_PARAMS = [
    ("PUT", {"value": "3", "ttl": "abc"}, 202, "The given TTL in POST form is not a number",
     'invalid value for "ttl"'),
    ("PUT", {"value": "3", "ttl": "-5"}, 202, "The given TTL in POST form is not a number",
     'invalid value for "ttl"'),
    ("PUT", {"value": "3", "ttl": "1.5"}, 202, "The given TTL in POST form is not a number",
     'invalid value for "ttl"'),
    ("PUT", {"value": "3", "prevIndex": "x"}, 203,
     "The given index in POST form is not a number", 'invalid value for "prevIndex"'),
    ("PUT", {"value": "3", "prevExist": "maybe"}, 209, "Invalid field",
     "invalid value for prevExist"),
    ("GET", {"recursive": "maybe"}, 209, "Invalid field", 'invalid value for "recursive"'),
    ("GET", {"sorted": "maybe"}, 209, "Invalid field", 'invalid value for "sorted"'),
    ("GET", {"quorum": "maybe"}, 209, "Invalid field", 'invalid value for "quorum"'),
    ("GET", {"wait": "maybe"}, 209, "Invalid field", 'invalid value for "wait"'),
    ("GET", {"wait": "true", "waitIndex": "x"}, 203,
     "The given index in POST form is not a number", 'invalid value for "waitIndex"'),
]


@pytest.mark.parametrize("method,params,code,msg,cause", BAD_PARAMS,
                         ids=["%s-%s" % (m, "-".join("%s=%s" % kv for kv in p.items()))
                              for m, p, *_ in BAD_PARAMS])
def test_invalid_parameters(c, uniq, method, params, code, msg, cause):
    k = uniq + "/k"
    c.put(k, value="1")
    if method == "GET":
        r = c.get(k, **params)
    else:
        r = c.put(k, **params)
    check(r, 400, err_body(code, msg, cause, 0))
    assert c.get(k).json()["node"]["value"] == "1"


def test_method_not_allowed(c, uniq):
    r = c.request("PATCH", "/v2/keys" + uniq)
    assert r.status == 405
    assert r.headers["Allow"] == "HEAD,GET,PUT,POST,DELETE"
    assert r.body == b"Method Not Allowed\n"
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_unclean_path_redirects(c, uniq):
    r = c.request("GET", "/v2/keys" + uniq + "/a/../b")
    assert r.status == 301
    assert r.headers["Location"] == "/v2/keys" + uniq + "/b"
    r = c.request("GET", "/v2/keys" + uniq + "//x")
    assert r.status == 301
    assert r.headers["Location"] == "/v2/keys" + uniq + "/x"


def test_percent_encoded_key(c, uniq):
    r = c.request("PUT", "/v2/keys" + uniq + "/sp%20ace%2Fslash", form={"value": "1"})
    i = r.etcd_index
    check(r, 201, ev("set", node(uniq + "/sp ace/slash", "1", i, i)))
    r = c.request("GET", "/v2/keys" + uniq + "/sp%20ace/slash")
    check(r, 200, ev("get", node(uniq + "/sp ace/slash", "1", i, i)))


def test_cors_headers(c, uniq):
    r = c.get(uniq)
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Access-Control-Allow-Methods"] == "POST, GET, OPTIONS, PUT, DELETE"
    assert r.headers["Access-Control-Allow-Headers"] == "accept, content-type, authorization"
