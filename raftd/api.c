/* The etcd v2 client API on the HTTP server: routing as Go's ServeMux does
 * it for etcd 3.4 (clean-path redirects, 404s, 405s with Allow), etcd's
 * CORS headers, and /v2/keys: parseKeyRequest's checks in etcd's order,
 * reads from the applied store, writes through the log, quorum reads via
 * ReadIndex, long-poll and streamed watches. Other endpoints: api_misc.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api_int.h"

/* ---- per-thread state ------------------------------------------------- */

/* Reply bodies are built here: one buffer per thread (the loop thread's
 * and each HTTP thread's), reused, never nested. */
static _Thread_local struct store_buf tl_scratch;
/* Set on HTTP threads (workers.c): they read the Raft state published
 * for them instead of the core's. */
static _Thread_local bool tl_worker;

struct store_buf *api_scratch(void)
{
    return &tl_scratch;
}

void api_thread_exit(void)
{
    store_buf_free(&tl_scratch);
}

/* ---- response helpers ------------------------------------------------- */

void api_cors(struct http_request *req)
{
    http_response_add_header(req, "Access-Control-Allow-Headers",
                             "accept, content-type, authorization");
    http_response_add_header(req, "Access-Control-Allow-Methods",
                             "POST, GET, OPTIONS, PUT, DELETE");
    http_response_add_header(req, "Access-Control-Allow-Origin", "*");
}

void api_header_u64(struct http_request *req, const char *name, uint64_t v)
{
    char buf[24], *p = buf + sizeof(buf) - 1;
    *p = '\0';
    do { /* on every reply: cheaper than snprintf */
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    http_response_add_header(req, name, p);
}

/* Go's http.Error(w, msg, code): text/plain, nosniff, msg + "\n". */
void api_http_error(struct http_request *req, int status, const char *msg)
{
    char body[128];
    int len = snprintf(body, sizeof(body), "%s\n", msg);
    http_response_add_header(req, "Content-Type", "text/plain; charset=utf-8");
    http_response_add_header(req, "X-Content-Type-Options", "nosniff");
    http_respond(req, status, body, (size_t)len);
}

void api_not_found(struct http_request *req)
{
    api_http_error(req, 404, "404 page not found");
}

/* etcd's allowMethod: 405 with "Allow: A,B,C" unless method is listed. */
bool api_allow(struct http_request *req, const char *allow_list)
{
    const char *p = allow_list, *m = req->method;
    size_t ml = strlen(m);
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t l = comma ? (size_t)(comma - p) : strlen(p);
        if (l == ml && strncmp(p, m, l) == 0)
            return true;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    http_response_add_header(req, "Allow", allow_list);
    api_http_error(req, 405, "Method Not Allowed");
    return false;
}

/* httptypes.HTTPError.WriteTo: {"message":...} without a newline. */
void api_message_error(struct raftd *n, struct http_request *req, int status,
                       const char *msg)
{
    struct store_buf *b = api_scratch();
    b->len = 0;
    store_buf_append(b, "{\"message\":", 11);
    store_json_string(b, msg, strlen(msg));
    store_buf_append(b, "}", 1);
    http_response_add_header(req, "Content-Type", "application/json");
    http_respond(req, status, b->data, b->len);
}

/* v2error.Error.WriteTo. */
static void api_store_error(struct raftd *n, struct http_request *req,
                            const struct store_error *err)
{
    struct store_buf *b = api_scratch();
    b->len = 0;
    api_header_u64(req, "X-Etcd-Index", err->index);
    http_response_add_header(req, "Content-Type", "application/json");
    if (store_error_json(b, err) != 0) {
        http_respond(req, 500, NULL, 0);
        return;
    }
    http_respond(req, store_error_http_status(err->code), b->data, b->len);
}

static void api_error(struct raftd *n, struct http_request *req, int code,
                      const char *cause, uint64_t index)
{
    struct store_error err;
    memset(&err, 0, sizeof(err));
    store_error_set(&err, code, cause, index);
    api_store_error(n, req, &err);
    store_error_clear(&err);
}

/* A failure that is not a v2 error (no leader, WAL failure, shutdown):
 * etcd answers those with 300 "Raft Internal Error". */
static void api_internal_error(struct raftd *n, struct http_request *req,
                               int status)
{
    const char *cause = "etcdserver: request timed out";
    if (status == -ECANCELED)
        cause = "etcdserver: server stopped";
    else if (status == -EAGAIN)
        cause = "etcdserver: no leader";
    else if (status == -ENOMEM)
        cause = "etcdserver: out of memory";
    else if (status == -EIO)
        cause = "etcdserver: write-ahead log failed";
    api_error(n, req, STORE_ECODE_RAFT_INTERNAL, cause, 0);
}

/* writeKeyEvent. */
static void api_key_event(struct raftd *n, struct http_request *req,
                          const struct store_event *ev, bool no_value)
{
    struct store_buf *b = api_scratch();
    int rv;

    b->len = 0;
    http_response_add_header(req, "Content-Type", "application/json");
    api_header_u64(req, "X-Etcd-Index", ev->etcd_index);
    if (tl_worker) {
        api_header_u64(req, "X-Raft-Index",
                       __atomic_load_n(&n->pub_commit, __ATOMIC_RELAXED));
        api_header_u64(req, "X-Raft-Term",
                       __atomic_load_n(&n->pub_term, __ATOMIC_RELAXED));
    } else {
        api_header_u64(req, "X-Raft-Index", node_raft_index(n));
        api_header_u64(req, "X-Raft-Term", node_raft_term(n));
    }
    rv = no_value ? store_event_json_novalue(b, ev) : store_event_json(b, ev);
    if (rv != 0) {
        http_respond(req, 500, NULL, 0);
        return;
    }
    http_respond(req, store_event_is_created(ev) ? 201 : 200, b->data, b->len);
}

/* ---- parseKeyRequest -------------------------------------------------- */

/* Go's strconv.ParseUint(s, 10, 64). */
static int parse_u64(const struct http_param *p, uint64_t *out)
{
    uint64_t v = 0;
    if (p->value_len == 0)
        return -EINVAL;
    for (size_t i = 0; i < p->value_len; i++) {
        unsigned d = (unsigned char)p->value[i] - '0';
        if (d > 9)
            return -EINVAL;
        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Go's strconv.ParseBool. */
static int parse_bool(const struct http_param *p, bool *out)
{
    static const char *const t[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const f[] = {"0", "f", "F", "FALSE", "false", "False"};
    if (strlen(p->value) != p->value_len)
        return -EINVAL;
    for (int i = 0; i < 6; i++) {
        if (strcmp(p->value, t[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(p->value, f[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

struct key_request {
    struct store_request sr;
    const char *method; /* "GET", "HEAD", ... */
    bool wait, stream, quorum, no_value;
    uint64_t wait_index;
};

static int get_u64(struct http_request *req, const char *key, uint64_t *out)
{
    const struct http_param *p = http_request_form_get(req, key);
    *out = 0;
    return p ? parse_u64(p, out) : 0;
}

static int get_bool(struct http_request *req, const char *key, bool *out)
{
    const struct http_param *p = http_request_form_get(req, key);
    *out = false;
    return p ? parse_bool(p, out) : 0;
}

/* Returns 0, or an etcd error code with *cause set. */
static int parse_key_request(struct raftd *n, struct http_request *req,
                             const char *key, struct key_request *kr,
                             const char **cause)
{
    const struct http_param *pv, *ttlp, *pe, *rf, *val;
    bool b;

    memset(kr, 0, sizeof(*kr));
    kr->sr.prev_exist = -1;
    kr->method = req->method;
    if (req->form_error) {
        *cause = req->form_error_msg ? req->form_error_msg : "";
        return STORE_ECODE_INVALID_FORM;
    }
    kr->sr.path = key;
    if (get_u64(req, "prevIndex", &kr->sr.prev_index)) {
        *cause = "invalid value for \"prevIndex\"";
        return STORE_ECODE_INDEX_NAN;
    }
    if (get_u64(req, "waitIndex", &kr->wait_index)) {
        *cause = "invalid value for \"waitIndex\"";
        return STORE_ECODE_INDEX_NAN;
    }
    if (get_bool(req, "recursive", &kr->sr.recursive)) {
        *cause = "invalid value for \"recursive\"";
        return STORE_ECODE_INVALID_FIELD;
    }
    if (get_bool(req, "sorted", &kr->sr.sorted)) {
        *cause = "invalid value for \"sorted\"";
        return STORE_ECODE_INVALID_FIELD;
    }
    if (get_bool(req, "wait", &kr->wait)) {
        *cause = "invalid value for \"wait\"";
        return STORE_ECODE_INVALID_FIELD;
    }
    if (get_bool(req, "dir", &kr->sr.dir)) {
        *cause = "invalid value for \"dir\"";
        return STORE_ECODE_INVALID_FIELD;
    }
    if (get_bool(req, "quorum", &kr->quorum)) {
        *cause = "invalid value for \"quorum\"";
        return STORE_ECODE_INVALID_FIELD;
    }
    if (get_bool(req, "stream", &kr->stream)) {
        *cause = "invalid value for \"stream\"";
        return STORE_ECODE_INVALID_FIELD;
    }
    if (kr->wait && strcmp(req->method, "GET") != 0) {
        *cause = "\"wait\" can only be used with GET requests";
        return STORE_ECODE_INVALID_FIELD;
    }
    pv = http_request_form_get(req, "prevValue");
    if (pv && pv->value_len == 0) {
        *cause = "\"prevValue\" cannot be empty";
        return STORE_ECODE_PREV_VALUE_REQUIRED;
    }
    if (pv) {
        kr->sr.prev_value = pv->value;
        kr->sr.prev_value_len = pv->value_len;
    }
    if (get_bool(req, "noValueOnSuccess", &kr->no_value)) {
        *cause = "invalid value for \"noValueOnSuccess\"";
        return STORE_ECODE_INVALID_FIELD;
    }
    ttlp = http_request_form_get(req, "ttl");
    if (ttlp && ttlp->value_len > 0) {
        uint64_t ttl;
        if (parse_u64(ttlp, &ttl) != 0) {
            *cause = "invalid value for \"ttl\"";
            return STORE_ECODE_TTL_NAN;
        }
        /* Go: clock.Now().Add(time.Duration(ttl) * time.Second), with
         * its wrap-around on absurd values. */
        kr->sr.expiration =
            (int64_t)((uint64_t)node_now_ns() + ttl * 1000000000ULL);
        if (kr->sr.expiration == 0)
            kr->sr.expiration = 1;
    }
    pe = http_request_form_get(req, "prevExist");
    if (pe) {
        if (parse_bool(pe, &b) != 0) {
            *cause = "invalid value for prevExist";
            return STORE_ECODE_INVALID_FIELD;
        }
        kr->sr.prev_exist = b ? 1 : 0;
    }
    val = http_request_form_get(req, "value");
    rf = http_request_form_get(req, "refresh");
    if (rf) {
        if (parse_bool(rf, &b) != 0) {
            *cause = "invalid value for refresh";
            return STORE_ECODE_INVALID_FIELD;
        }
        kr->sr.refresh = b;
        if (b) {
            if (val && val->value_len > 0) {
                *cause = "A value was provided on a refresh";
                return STORE_ECODE_REFRESH_VALUE;
            }
            if (!(ttlp && ttlp->value_len > 0)) {
                *cause = "No TTL value set";
                return STORE_ECODE_REFRESH_TTL_REQUIRED;
            }
        }
    }
    if (val) {
        kr->sr.val = val->value;
        kr->sr.val_len = val->value_len;
    }
    (void)n;
    return 0;
}

/* ---- async contexts --------------------------------------------------- */

enum ctx_kind { CTX_WRITE, CTX_QREAD, CTX_WATCH };

struct api_ctx {
    struct raftd *n;
    struct http_request *req;
    enum ctx_kind kind;
    bool no_value;
    bool recursive, sorted;
    bool stream;
    bool head;
    struct store_watcher *w;
    struct raftd_write_req wreq;
    struct raftd_read_req rreq;
    char *path; /* QREAD: owned copy */
};

static struct api_ctx *ctx_new(struct raftd *n, struct http_request *req,
                               enum ctx_kind kind)
{
    struct api_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->n = n;
    c->req = req;
    c->kind = kind;
    req->data = c;
    n->api_active++;
    return c;
}

static void ctx_free(struct api_ctx *c)
{
    struct raftd *n = c->n;
    free(c->path);
    free(c);
    node_api_release(n);
}

static void write_done(struct raftd_write_req *wr, int status,
                       struct store_event *ev, const struct store_error *err)
{
    struct api_ctx *c = wr->data;
    struct raftd *n = c->n;
    if (status != 0)
        api_internal_error(n, c->req, status);
    else if (err != NULL)
        api_store_error(n, c->req, err);
    else
        api_key_event(n, c->req, ev, c->no_value);
    ctx_free(c);
}

static void qread_done(struct raftd_read_req *rr, int status)
{
    struct api_ctx *c = rr->data;
    struct raftd *n = c->n;
    struct store_event *ev = NULL;
    struct store_error err;
    int rv;

    if (status != 0) {
        api_internal_error(n, c->req, status);
        ctx_free(c);
        return;
    }
    memset(&err, 0, sizeof(err));
    rv = store_get(n->store, c->path, c->recursive, c->sorted, node_now_ns(),
                   &ev, &err);
    if (rv == 0) {
        api_key_event(n, c->req, ev, false);
        store_event_unref(ev);
    } else if (rv == STORE_EV2) {
        api_store_error(n, c->req, &err);
    } else {
        api_internal_error(n, c->req, rv);
    }
    store_error_clear(&err);
    ctx_free(c);
}

/* ---- watches ---------------------------------------------------------- */

static void watch_finish(struct api_ctx *c)
{
    http_request_set_close_cb(c->req, NULL);
    http_stream_end(c->req);
    ctx_free(c);
}

static int watch_write(struct api_ctx *c, const struct store_event *ev)
{
    struct store_buf *b = api_scratch();
    b->len = 0;
    if (store_event_json(b, ev) != 0)
        return -ENOMEM;
    return http_stream_write(c->req, b->data, b->len);
}

static void watch_cb(struct store_watcher *w, struct store_event *ev,
                     void *data)
{
    struct api_ctx *c = data;
    int rv;

    if (ev == NULL) { /* the store is going away */
        c->w = NULL;
        watch_finish(c);
        return;
    }
    rv = watch_write(c, ev);
    if (!c->stream) {
        c->w = NULL; /* the store frees a fired one-shot watcher */
        watch_finish(c);
        return;
    }
    if (rv != 0) {
        /* A slow or gone stream reader: drop it, never block. */
        store_watcher_cancel(c->n->store, w);
        c->w = NULL;
        watch_finish(c);
    }
}

static void watch_close_cb(struct http_request *req, int status)
{
    struct api_ctx *c = req->data;
    (void)status;
    if (c->w) {
        store_watcher_cancel(c->n->store, c->w);
        c->w = NULL;
    }
    watch_finish(c);
}

static void api_watch(struct raftd *n, struct http_request *req,
                      const struct key_request *kr)
{
    struct store_event *hist = NULL;
    struct store_watcher *w = NULL;
    struct store_error err;
    uint64_t start = 0;
    struct api_ctx *c;
    int rv;

    c = ctx_new(n, req, CTX_WATCH);
    if (c == NULL) {
        api_internal_error(n, req, -ENOMEM);
        return;
    }
    c->stream = kr->stream;
    memset(&err, 0, sizeof(err));
    rv = store_watch(n->store, kr->sr.path, kr->sr.recursive, kr->stream,
                     kr->wait_index, watch_cb, c, &w, &hist, &start, &err);
    if (rv != 0) {
        if (rv == STORE_EV2)
            api_store_error(n, req, &err);
        else
            api_internal_error(n, req, rv);
        store_error_clear(&err);
        req->data = NULL;
        ctx_free(c);
        return;
    }
    c->w = w;
    http_response_add_header(req, "Content-Type", "application/json");
    api_header_u64(req, "X-Etcd-Index", start);
    api_header_u64(req, "X-Raft-Index", node_raft_index(n));
    api_header_u64(req, "X-Raft-Term", node_raft_term(n));
    rv = http_stream_begin(req, 200);
    if (rv != 0) {
        if (c->w)
            store_watcher_cancel(n->store, c->w);
        c->w = NULL;
        if (hist)
            store_event_unref(hist);
        watch_finish(c);
        return;
    }
    if (hist) {
        rv = watch_write(c, hist);
        store_event_unref(hist);
        if (!c->stream || rv != 0) {
            watch_finish(c);
            return;
        }
        /* etcd keeps a stream open after a history hit and sends nothing
         * more; we do the same until the client goes away. */
    }
    http_request_set_close_cb(req, watch_close_cb);
}

/* ---- /v2/keys --------------------------------------------------------- */

static void api_get(struct raftd *n, struct http_request *req,
                    const struct key_request *kr)
{
    struct store_event *ev = NULL;
    struct store_error err;
    int rv;

    memset(&err, 0, sizeof(err));
    if (tl_worker) /* the loop thread is the only writer: no lock there */
        node_store_rdlock(n);
    rv = store_get(n->store, kr->sr.path, kr->sr.recursive, kr->sr.sorted,
                   node_now_ns(), &ev, &err);
    if (tl_worker)
        node_store_unlock(n);
    if (rv == 0) {
        api_key_event(n, req, ev, false);
        store_event_unref(ev);
    } else if (rv == STORE_EV2) {
        api_store_error(n, req, &err);
    } else {
        api_internal_error(n, req, rv);
    }
    store_error_clear(&err);
}

static void api_qget(struct raftd *n, struct http_request *req,
                     const struct key_request *kr)
{
    struct api_ctx *c = ctx_new(n, req, CTX_QREAD);
    int rv;
    if (c == NULL) {
        api_internal_error(n, req, -ENOMEM);
        return;
    }
    c->path = strdup(kr->sr.path);
    c->recursive = kr->sr.recursive;
    c->sorted = kr->sr.sorted;
    c->rreq.data = c;
    if (c->path == NULL) {
        rv = -ENOMEM;
    } else {
        rv = raftd_read_index(n, &c->rreq, qread_done);
    }
    if (rv != 0) {
        api_internal_error(n, req, rv);
        ctx_free(c);
    }
}

static void api_write(struct raftd *n, struct http_request *req,
                      struct key_request *kr)
{
    struct api_ctx *c = ctx_new(n, req, CTX_WRITE);
    int rv;
    if (c == NULL) {
        api_internal_error(n, req, -ENOMEM);
        return;
    }
    c->no_value = kr->no_value;
    c->wreq.data = c;
    if (strcmp(kr->method, "PUT") == 0)
        kr->sr.method = STORE_METHOD_PUT;
    else if (strcmp(kr->method, "POST") == 0)
        kr->sr.method = STORE_METHOD_POST;
    else
        kr->sr.method = STORE_METHOD_DELETE;
    rv = raftd_write(n, &c->wreq, &kr->sr, write_done);
    if (rv != 0) {
        api_internal_error(n, req, rv);
        ctx_free(c);
    }
}

/* On an HTTP thread: a GET or HEAD of /v2/keys without wait or quorum
 * is answered from the store as api_keys would; true if it was. */
static bool api_plain_read(struct raftd *n, struct http_request *req,
                           const char *key)
{
    struct key_request kr;
    const char *cause = NULL;

    if (parse_key_request(n, req, key, &kr, &cause) != 0 || kr.quorum ||
        kr.wait || strlen(req->path) != req->path_len)
        return false; /* the loop thread answers, errors included */
    api_metrics_count(n, req->method);
    api_cors(req);
    http_response_add_header(req, "X-Etcd-Cluster-Id", n->cluster_id_hex);
    api_get(n, req, &kr);
    return true;
}

static void api_keys(struct raftd *n, struct http_request *req,
                     const char *key)
{
    struct key_request kr;
    const char *cause = NULL;
    int code;

    if (!api_allow(req, "HEAD,GET,PUT,POST,DELETE"))
        return;
    http_response_add_header(req, "X-Etcd-Cluster-Id", n->cluster_id_hex);
    code = parse_key_request(n, req, key, &kr, &cause);
    if (code == 0 && strlen(req->path) != req->path_len) {
        /* etcd accepts a NUL byte in a key; our store's paths are C
         * strings, so refuse rather than silently use a shorter key. */
        code = STORE_ECODE_INVALID_FIELD;
        cause = "key contains a NUL byte (%00), which raftd does not support";
    }
    if (code != 0) {
        api_error(n, req, code, cause, 0);
        return;
    }
    if (strcmp(req->method, "GET") == 0) {
        if (kr.quorum)
            api_qget(n, req, &kr);
        else if (kr.wait)
            api_watch(n, req, &kr);
        else
            api_get(n, req, &kr);
    } else if (strcmp(req->method, "HEAD") == 0) {
        api_get(n, req, &kr);
    } else {
        api_write(n, req, &kr);
    }
}

/* ---- routing ---------------------------------------------------------- */

/* Go's cleanPath: path.Clean, keeping a trailing slash. Writes into out
 * (at least strlen(p) + 2 bytes). */
static void clean_path(const char *p, size_t len, char *out)
{
    size_t w = 0, r = 0;
    out[w++] = '/';
    if (len > 0 && p[0] == '/')
        r = 1;
    while (r < len) {
        if (p[r] == '/') {
            r++;
        } else if (p[r] == '.' && (r + 1 == len || p[r + 1] == '/')) {
            r++;
        } else if (p[r] == '.' && p[r + 1] == '.' &&
                   (r + 2 == len || p[r + 2] == '/')) {
            r += 2;
            if (w > 1) {
                w--;
                while (w > 1 && out[w - 1] != '/')
                    w--;
                if (w > 1)
                    w--;
            }
        } else {
            if (w > 1)
                out[w++] = '/';
            while (r < len && p[r] != '/')
                out[w++] = p[r++];
        }
    }
    if (w > 1 && len > 0 && p[len - 1] == '/')
        out[w++] = '/';
    out[w] = '\0';
}

static void api_redirect(struct http_request *req, const char *to)
{
    const char *q = req->raw_query;
    size_t ql = strlen(q), tl = strlen(to);
    char *loc = malloc(tl + ql + 2);
    bool get = strcmp(req->method, "GET") == 0;
    if (loc == NULL) {
        http_respond(req, 500, NULL, 0);
        return;
    }
    memcpy(loc, to, tl + 1);
    if (ql) {
        loc[tl] = '?';
        memcpy(loc + tl + 1, q, ql + 1);
    }
    http_response_add_header(req, "Location", loc);
    if (get || strcmp(req->method, "HEAD") == 0)
        http_response_add_header(req, "Content-Type",
                                 "text/html; charset=utf-8");
    if (get) {
        size_t bl = strlen(loc) * 1 + 64;
        char *body = malloc(bl);
        if (body != NULL) {
            /* Go html-escapes the URL; keys rarely need it. */
            int len = snprintf(body, bl,
                               "<a href=\"%s\">Moved Permanently</a>.\n\n",
                               loc);
            http_respond(req, 301, body, (size_t)len);
            free(body);
            free(loc);
            return;
        }
    }
    http_respond(req, 301, NULL, 0);
    free(loc);
}

static void parked_close_cb(struct http_request *req, int status)
{
    /* Stays parked: answered (into the void) when the member is ready, or
     * failed by raftd_close through api_unpark. */
    (void)req;
    (void)status;
}

static void api_dispatch(struct raftd *n, struct http_request *req);

/* The key a /v2/keys path names ("/v2/keys" -> "/", "/v2/keys/a" ->
 * "/a"), or NULL for any other path. */
static const char *keys_key(const char *path)
{
    if (strcmp(path, "/v2/keys") == 0)
        return "/";
    if (strncmp(path, "/v2/keys/", 9) == 0)
        return path + 8;
    return NULL;
}

void api_handle_worker(struct http_request *req)
{
    struct raftd *n = req->server_data;
    const char *path = req->path, *key = keys_key(path);
    size_t len = strlen(path);
    char clean[512];

    tl_worker = true;
    req->data = NULL;
    if (key != NULL && __atomic_load_n(&n->serving, __ATOMIC_ACQUIRE) &&
        (strcmp(req->method, "GET") == 0 ||
         strcmp(req->method, "HEAD") == 0) &&
        len + 2 <= sizeof(clean)) {
        clean_path(path, len, clean);
        if (strcmp(clean, path) == 0 && api_plain_read(n, req, key))
            return;
    }
    __atomic_fetch_add(&n->metrics.moves_to_loop, 1, __ATOMIC_RELAXED);
    http_request_move(req, n->http);
}

void api_unpark(struct raftd *n)
{
    struct http_request **list = n->parked;
    size_t count = n->n_parked;
    n->parked = NULL;
    n->n_parked = n->cap_parked = 0;
    for (size_t i = 0; i < count; i++) {
        http_request_set_close_cb(list[i], NULL);
        node_api_release(n);
        if (n->closing)
            api_internal_error(n, list[i], -ECANCELED);
        else
            api_dispatch(n, list[i]);
    }
    free(list);
}

/* On the loop thread: a connection whose second or later request is a
 * plain read, and that never moved, goes to an HTTP thread with that
 * request (the thread checks it fully and sends it back if it is not). */
static bool api_hand_to_worker(struct raftd *n, struct http_request *req)
{
    if (n->n_workers == 0 || req->seq == 0 || req->moves > 0 ||
        !n->serving || n->closing)
        return false;
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0)
        return false;
    if (keys_key(req->path) == NULL)
        return false;
    if (http_request_form_get(req, "wait") != NULL ||
        http_request_form_get(req, "quorum") != NULL)
        return false;
    n->metrics.moves_to_threads++;
    http_request_move(req, workers_next(n));
    return true;
}

void api_handle(struct http_request *req)
{
    struct raftd *n = req->server_data;

    req->data = NULL;
    if (api_hand_to_worker(n, req))
        return;
    if (!n->serving && !n->closing) {
        if (n->n_parked == n->cap_parked) {
            size_t cap = n->cap_parked ? 2 * n->cap_parked : 16;
            struct http_request **p =
                realloc(n->parked, cap * sizeof(*p));
            if (p == NULL) {
                api_cors(req);
                api_internal_error(n, req, -ENOMEM);
                return;
            }
            n->parked = p;
            n->cap_parked = cap;
        }
        n->parked[n->n_parked++] = req;
        n->api_active++;
        http_request_set_close_cb(req, parked_close_cb);
        return;
    }
    api_dispatch(n, req);
}

static void api_dispatch(struct raftd *n, struct http_request *req)
{
    const char *path = req->path;
    size_t len = strlen(path);
    char stackbuf[512], *clean = stackbuf;

    api_metrics_count(n, req->method);
    api_cors(req);
    if (strcmp(req->method, "OPTIONS") == 0) {
        http_respond(req, 200, NULL, 0);
        return;
    }
    if (len + 2 > sizeof(stackbuf)) {
        clean = malloc(len + 2);
        if (clean == NULL) {
            http_respond(req, 500, NULL, 0);
            return;
        }
    }
    clean_path(path, len, clean);
    if (strcmp(clean, path) != 0 && strcmp(req->method, "CONNECT") != 0) {
        api_redirect(req, clean);
        goto out;
    }
    if (keys_key(path) != NULL)
        api_keys(n, req, keys_key(path));
    else
        api_misc(n, req, path);
out:
    if (clean != stackbuf)
        free(clean);
}
