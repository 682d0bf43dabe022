# /v2/auth with auth disabled (etcd's default): the read-only answers, and
# the refusals that change nothing, byte for byte.
import pytest

AUTH = [
    ("GET", "/v2/auth/enable", 200, b'{"enabled":false}\n'),
    ("GET", "/v2/auth/users", 200, b'{"users":null}\n'),
    ("GET", "/v2/auth/roles", 200,
     b'{"roles":[{"role":"root","permissions":{"kv":{"read":["/*"],"write":["/*"]}}}]}\n'),
    ("GET", "/v2/auth/roles/root", 200,
     b'{"role":"root","permissions":{"kv":{"read":["/*"],"write":["/*"]}}}\n'),
    ("GET", "/v2/auth/users/root", 404, b'{"message":"auth: User root does not exist."}'),
    ("GET", "/v2/auth/users/nobody", 404, b'{"message":"auth: User nobody does not exist."}'),
    ("GET", "/v2/auth/roles/guest", 404, b'{"message":"auth: Role guest does not exist."}'),
    ("DELETE", "/v2/auth/enable", 409, b'{"message":"auth: already disabled"}'),
    ("PUT", "/v2/auth/enable", 409,
     b'{"message":"auth: No root user available, please create one"}'),
    ("PUT", "/v2/auth/users/bob", 400, b'{"message":"Invalid JSON in request body."}'),
]


@pytest.mark.parametrize("method,path,status,body", AUTH,
                         ids=["%s-%s" % (a[0], a[1][9:].replace("/", "-")) for a in AUTH])
def test_auth_disabled(c, method, path, status, body):
    r = c.request(method, path)
    assert (r.status, r.body) == (status, body)
    assert r.headers["Content-Type"] == "application/json"


def test_auth_unknown_path(c):
    r = c.request("GET", "/v2/auth")
    assert (r.status, r.body) == (404, b"404 page not found\n")
