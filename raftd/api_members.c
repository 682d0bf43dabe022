/* etcd's /v2/members POST, PUT and DELETE (etcd 3.4 v2http membersHandler):
 * content type, the JSON body decoded as Go's encoding/json does (its
 * syntax and type error texts), peer URL checks and member ids; then the
 * change itself (members.c): an add or a removal through a conf-change
 * entry, new peer URLs through a write of the member's raftAttributes,
 * each answered once applied here. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_int.h"

/* ---- Go's encoding/json scanner errors -------------------------------- */

struct gj {
    const unsigned char *p, *end;
    char *msg;
    size_t msglen;
    int err;
};

/* Go's quoteChar. */
static void quote_char(unsigned c, char *out, size_t outlen)
{
    if (c == '\'') {
        snprintf(out, outlen, "'\\''");
    } else if (c == '"') {
        snprintf(out, outlen, "'\"'");
    } else if (c >= 0x20 && c < 0x7f) {
        snprintf(out, outlen, "'%c'", c);
    } else {
        static const char esc[] = "abtnvfr";
        if (c >= 7 && c <= 13)
            snprintf(out, outlen, "'\\%c'", esc[c - 7]);
        else if (c < 0x80)
            snprintf(out, outlen, "'\\x%02x'", c);
        else if (c < 0xa1 || c == 0xad)
            snprintf(out, outlen, "'\\u%04x'", c);
        else
            snprintf(out, outlen, "'%c%c'", 0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    }
}

/* At the end of input Go's scanner steps one ' ' (scanner.eof): where a
 * space is an error (inside a literal, number or escape) the message names
 * it, elsewhere it is "unexpected end of JSON input". */
static int gj_fail_at(struct gj *g, const char *context, int space_at_eof)
{
    char q[16];
    if (g->err)
        return -1;
    g->err = 1;
    if (g->p >= g->end && space_at_eof) {
        snprintf(g->msg, g->msglen, "invalid character ' ' %s", context);
    } else if (g->p >= g->end) {
        snprintf(g->msg, g->msglen, "unexpected end of JSON input");
    } else {
        quote_char(*g->p, q, sizeof(q));
        snprintf(g->msg, g->msglen, "invalid character %s %s", q, context);
    }
    return -1;
}

static int gj_fail(struct gj *g, const char *context)
{
    return gj_fail_at(g, context, 0);
}

static int gj_fail_sp(struct gj *g, const char *context)
{
    return gj_fail_at(g, context, 1);
}

static void gj_ws(struct gj *g)
{
    while (g->p < g->end && (*g->p == ' ' || *g->p == '\t' ||
                             *g->p == '\n' || *g->p == '\r'))
        g->p++;
}

static int gj_value(struct gj *g, int depth);

static int gj_string(struct gj *g)
{
    g->p++; /* opening quote */
    while (g->p < g->end) {
        unsigned c = *g->p;
        if (c == '"') {
            g->p++;
            return 0;
        }
        if (c < 0x20)
            return gj_fail(g, "in string literal");
        if (c == '\\') {
            g->p++;
            if (g->p >= g->end)
                return gj_fail_sp(g, "in string escape code");
            if (*g->p == 'u') {
                g->p++;
                for (int i = 0; i < 4; i++, g->p++)
                    if (g->p >= g->end || !isxdigit(*g->p))
                        return gj_fail_sp(g,
                                       "in \\u hexadecimal character escape");
                continue;
            }
            if (!strchr("bfnrt\\/\"", *g->p) || *g->p == '\0')
                return gj_fail_sp(g, "in string escape code");
        }
        g->p++;
    }
    return gj_fail(g, "");
}

static int gj_number(struct gj *g)
{
    if (*g->p == '-') {
        g->p++;
        if (g->p >= g->end || !isdigit(*g->p))
            return gj_fail_sp(g, "in numeric literal");
    }
    if (*g->p == '0')
        g->p++;
    else
        while (g->p < g->end && isdigit(*g->p))
            g->p++;
    if (g->p < g->end && *g->p == '.') {
        g->p++;
        if (g->p >= g->end || !isdigit(*g->p))
            return gj_fail_sp(g, "after decimal point in numeric literal");
        while (g->p < g->end && isdigit(*g->p))
            g->p++;
    }
    if (g->p < g->end && (*g->p == 'e' || *g->p == 'E')) {
        g->p++;
        if (g->p < g->end && (*g->p == '+' || *g->p == '-'))
            g->p++;
        if (g->p >= g->end || !isdigit(*g->p))
            return gj_fail_sp(g, "in exponent of numeric literal");
        while (g->p < g->end && isdigit(*g->p))
            g->p++;
    }
    return 0;
}

static int gj_literal(struct gj *g, const char *word)
{
    char ctx[48];
    for (size_t i = 1; word[i]; i++) {
        g->p++;
        if (g->p >= g->end || *g->p != (unsigned char)word[i]) {
            snprintf(ctx, sizeof(ctx), "in literal %s (expecting '%c')", word,
                     word[i]);
            return gj_fail_sp(g, ctx);
        }
    }
    g->p++;
    return 0;
}

/* After an object member or array element: 1 on ',' (another follows),
 * 0 on the closing character, else Go's syntax error (-1). */
static int gj_after_element(struct gj *g, char close, const char *context)
{
    gj_ws(g);
    if (g->p < g->end && (*g->p == ',' || *g->p == close))
        return *g->p++ == ',';
    return gj_fail(g, context);
}

static int gj_value(struct gj *g, int depth)
{
    int rv;
    gj_ws(g);
    if (g->p >= g->end)
        return gj_fail(g, "");
    if (depth > 10000)
        return gj_fail(g, "exceeded max depth");
    switch (*g->p) {
    case '{':
        g->p++;
        gj_ws(g);
        if (g->p < g->end && *g->p == '}') {
            g->p++;
            return 0;
        }
        for (;;) {
            gj_ws(g);
            if (g->p >= g->end || *g->p != '"')
                return gj_fail(g, "looking for beginning of object key string");
            if (gj_string(g))
                return -1;
            gj_ws(g);
            if (g->p >= g->end || *g->p != ':')
                return gj_fail(g, "after object key");
            g->p++;
            if (gj_value(g, depth + 1))
                return -1;
            if ((rv = gj_after_element(g, '}', "after object key:value pair")) <= 0)
                return rv;
        }
    case '[':
        g->p++;
        gj_ws(g);
        if (g->p < g->end && *g->p == ']') {
            g->p++;
            return 0;
        }
        for (;;) {
            if (gj_value(g, depth + 1))
                return -1;
            if ((rv = gj_after_element(g, ']', "after array element")) <= 0)
                return rv;
        }
    case '"':
        return gj_string(g);
    case 't':
        return gj_literal(g, "true");
    case 'f':
        return gj_literal(g, "false");
    case 'n':
        return gj_literal(g, "null");
    default:
        if (*g->p == '-' || isdigit(*g->p))
            return gj_number(g);
        return gj_fail(g, "looking for beginning of value");
    }
}

/* 0 if body is one valid JSON value; else writes Go's error text. */
static int go_json_valid(const char *body, size_t len, char *msg,
                         size_t msglen)
{
    struct gj g = {(const unsigned char *)body,
                   (const unsigned char *)body + len, msg, msglen, 0};
    if (gj_value(&g, 0))
        return -1;
    gj_ws(&g);
    if (g.p < g.end)
        return gj_fail(&g, "after top-level value");
    return 0;
}

int api_json_valid(const char *body, size_t len)
{
    char msg[128];
    return go_json_valid(body, len, msg, sizeof(msg)) == 0;
}

/* ---- decoding {"peerURLs": [...]} ------------------------------------ */

static const char *const go_struct_type =
    "struct { PeerURLs []string \"json:\\\"peerURLs\\\"\" }";

static const char *gj_kind(unsigned char c)
{
    switch (c) {
    case '{':
        return "object";
    case '[':
        return "array";
    case '"':
        return "string";
    case 't':
    case 'f':
        return "bool";
    case 'n':
        return "null";
    default:
        return "number";
    }
}

/* Skip one (valid) value. */
static void gj_skip(struct gj *g)
{
    gj_value(g, 0);
}

/* Decode a JSON string at g->p (valid) into out (escapes resolved for the
 * ASCII cases URLs use). */
static void gj_take_string(struct gj *g, char *out, size_t outlen)
{
    size_t k = 0;
    g->p++;
    while (g->p < g->end && *g->p != '"') {
        unsigned c = *g->p++;
        if (c == '\\' && g->p < g->end) {
            unsigned e = *g->p++;
            if (e == 'u' && g->end - g->p >= 4) {
                char hex[5] = {0};
                memcpy(hex, g->p, 4);
                g->p += 4;
                c = (unsigned)strtoul(hex, NULL, 16);
                if (c > 0x7f)
                    c = '?';
            } else {
                c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r'
                  : e == 'b' ? '\b' : e == 'f' ? '\f' : e;
            }
        }
        if (k + 1 < outlen)
            out[k++] = (char)c;
    }
    g->p++;
    out[k] = '\0';
}

/* etcd's MemberCreateRequest/MemberUpdateRequest UnmarshalJSON: Go's
 * json.Unmarshal into struct{PeerURLs []string} (keys matched without
 * regard to case, first type error reported after the whole decode), then
 * types.NewURLs. Returns 0 (and *n_urls) or -1 with msg set. */
static void urls_clear(struct raftd_urls *u)
{
    for (size_t i = 0; i < u->n; i++)
        free(u->v[i]);
    free(u->v);
    u->v = NULL;
    u->n = 0;
}

static int urls_push(struct raftd_urls *u, const char *url)
{
    char **nv = realloc(u->v, (u->n + 1) * sizeof(*nv));
    if (nv == NULL)
        return -1;
    u->v = nv;
    u->v[u->n] = strdup(url);
    return u->v[u->n] == NULL ? -1 : (u->n++, 0);
}

static int cmp_url(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int api_members_decode(const char *body, size_t len, char *msg,
                       size_t msglen, struct raftd_urls *urls)
{
    size_t n_urls_storage = 0, *n_urls = &n_urls_storage;
    struct gj g = {(const unsigned char *)body,
                   (const unsigned char *)body + len, msg, msglen, 0};
    char type_err[256] = "", url[512], why[600], url_err[600] = "";
    int have_urls = 0;

    *n_urls = 0;
    if (go_json_valid(body, len, msg, msglen))
        return -1;
    gj_ws(&g);
    if (*g.p != '{') {
        if (*g.p == 'n')
            goto urls; /* null leaves the struct zero */
        snprintf(msg, msglen, "json: cannot unmarshal %s into Go value of "
                              "type %s", gj_kind(*g.p), go_struct_type);
        return -1;
    }
    g.p++;
    for (;;) {
        char key[64];
        gj_ws(&g);
        if (*g.p == '}')
            break;
        gj_take_string(&g, key, sizeof(key));
        gj_ws(&g);
        g.p++; /* ':' */
        gj_ws(&g);
        if (strcasecmp(key, "peerURLs") != 0) {
            gj_skip(&g);
        } else if (*g.p == 'n') {
            gj_skip(&g);
        } else if (*g.p != '[') {
            if (type_err[0] == '\0')
                snprintf(type_err, sizeof(type_err),
                         "json: cannot unmarshal %s into Go struct field "
                         ".peerURLs of type []string",
                         gj_kind(*g.p));
            gj_skip(&g);
        } else {
            *n_urls = 0; /* a repeated key replaces the list, as in Go */
            urls_clear(urls);
            url_err[0] = '\0';
            have_urls = 1;
            g.p++;
            for (;;) {
                gj_ws(&g);
                if (*g.p == ']') {
                    g.p++;
                    break;
                }
                if (*g.p == '"') {
                    gj_take_string(&g, url, sizeof(url));
                    if (url_err[0] == '\0' &&
                        raftd_url_check(url, why, sizeof(why)) != 0)
                        snprintf(url_err, sizeof(url_err), "%s", why);
                    if (urls_push(urls, url) != 0) {
                        snprintf(msg, msglen, "out of memory");
                        return -1;
                    }
                    (*n_urls)++;
                } else {
                    if (type_err[0] == '\0')
                        snprintf(type_err, sizeof(type_err),
                                 "json: cannot unmarshal %s into Go struct "
                                 "field .peerURLs of type string",
                                 gj_kind(*g.p));
                    gj_skip(&g);
                    (*n_urls)++;
                }
                gj_ws(&g);
                if (*g.p == ',')
                    g.p++;
            }
        }
        gj_ws(&g);
        if (*g.p == ',')
            g.p++;
    }
    if (type_err[0] != '\0') {
        snprintf(msg, msglen, "%s", type_err);
        return -1;
    }
urls:
    (void)have_urls;
    if (url_err[0] != '\0') {
        /* the first bad URL, as types.NewURLs reports it */
        snprintf(msg, msglen, "%s", url_err);
        return -1;
    }
    if (*n_urls == 0) {
        snprintf(msg, msglen, "no valid URLs given");
        return -1;
    }
    /* types.NewURLs sorts them. */
    qsort(urls->v, urls->n, sizeof(char *), cmp_url);
    return 0;
}

/* unmarshalRequest: Content-Type, then the body. 0 if valid (urls set;
 * urls_clear() them), else answered. */
static int members_unmarshal(struct raftd *n, struct http_request *req,
                             struct raftd_urls *urls)
{
    const char *ct = http_request_header(req, "Content-Type");
    char ctype[128] = "", msg[700] = "";

    if (ct) {
        const char *semi = strchr(ct, ';');
        size_t l = semi ? (size_t)(semi - ct) : strlen(ct);
        if (l >= sizeof(ctype))
            l = sizeof(ctype) - 1;
        memcpy(ctype, ct, l);
        ctype[l] = '\0';
        if (semi) {
            /* Go lower-cases and trims only when a ';' exists. */
            char *s = ctype, *e;
            for (char *c = ctype; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            while (*s == ' ' || *s == '\t')
                s++;
            e = s + strlen(s);
            while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
                *--e = '\0';
            memmove(ctype, s, strlen(s) + 1);
        }
    }
    if (strcmp(ctype, "application/json") != 0) {
        snprintf(msg, sizeof(msg),
                 "Bad Content-Type %s, accept application/json", ctype);
        api_message_error(n, req, 415, msg);
        return -1;
    }
    if (api_members_decode(req->body, req->body_len, msg, sizeof(msg),
                           urls) != 0) {
        urls_clear(urls);
        api_message_error(n, req, 400, msg);
        return -1;
    }
    return 0;
}

/* getID: the hex id after /v2/members/; answers and returns -1 if bad. */
static int members_get_id(struct raftd *n, struct http_request *req,
                          const char *sub, uint64_t *id)
{
    char msg[600], *end;
    unsigned long long v;

    if (sub[0] == '\0') {
        api_http_error(req, 405, "Method Not Allowed");
        return -1;
    }
    errno = 0;
    v = strtoull(sub, &end, 16);
    if (errno != 0 || *end != '\0' ||
        strspn(sub, "0123456789abcdefABCDEF") != strlen(sub)) {
        snprintf(msg, sizeof(msg), "No such member: %.500s", sub);
        api_message_error(n, req, 404, msg);
        return -1;
    }
    *id = v;
    return 0;
}

/* ---- the changes -------------------------------------------------------- */

enum members_op { MEMBERS_ADD, MEMBERS_UPDATE, MEMBERS_REMOVE };

struct members_ctx {
    struct raftd_write_req w;
    struct raftd *n;
    struct http_request *req;
    enum members_op op;
    uint64_t id;
    char *attrs; /* {"peerURLs":[...]} */
    struct store_request sr;
    char path[96];
};

static void ctx_free(struct members_ctx *c)
{
    struct raftd *n = c->n;
    free(c->attrs);
    free(c);
    node_api_release(n);
}

/* What etcd's writeError answers for an error that is not an HTTPError
 * (a timeout, no leader, too few started members): 500 with a fixed
 * message; the reason goes to the log. */
static void members_internal(struct raftd *n, struct http_request *req,
                             const char *what, uint64_t id, int status)
{
    raftd_logf(&n->log, RAFTD_LOG_ERROR, "etcdhttp",
               "error %s member %llx (%s)", what, (unsigned long long)id,
               status == -ETIMEDOUT ? "etcdserver: request timed out"
               : status == -EAGAIN  ? "etcdserver: no leader"
               : status == -EINVAL  ? "etcdserver: unhealthy cluster"
               : status == -EIDRM   ? "membership: ID removed"
                                    : strerror(status < 0 ? -status : status));
    api_message_error(n, req, 500, "Internal Server Error");
}

static void members_done(struct raftd_write_req *w, int status,
                         struct store_event *ev, const struct store_error *err)
{
    struct members_ctx *c = w->data;
    struct raftd *n = c->n;
    static const char *const what[] = {"adding", "updating", "removing"};
    char msg[64];
    (void)ev;
    if (status != 0) {
        members_internal(n, c->req, what[c->op], c->id, status);
    } else if (err != NULL) {
        /* The member was removed while its update was on its way. */
        snprintf(msg, sizeof(msg), "No such member: %llx",
                 (unsigned long long)c->id);
        api_message_error(n, c->req, 404, msg);
    } else if (c->op == MEMBERS_ADD) {
        /* newMember(m): the id, no name, the (sorted) peer URLs, no
         * client URLs; json.Encoder adds the newline. */
        struct store_buf *b = api_scratch();
        char head[48];
        snprintf(head, sizeof(head), "{\"id\":\"%llx\",\"name\":\"\",",
                 (unsigned long long)c->id);
        b->len = 0;
        store_buf_append(b, head, strlen(head));
        store_buf_append(b, c->attrs + 1, strlen(c->attrs) - 2);
        store_buf_append(b, ",\"clientURLs\":[]}\n", 18);
        http_response_add_header(c->req, "Content-Type", "application/json");
        http_respond(c->req, 201, b->data, b->len);
    } else {
        http_respond(c->req, 204, NULL, 0);
    }
    ctx_free(c);
}

static char *attrs_json(const struct raftd_urls *urls)
{
    struct store_buf b;
    store_buf_init(&b);
    if (members_attrs_json(&b, urls) != 0) {
        store_buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* etcd's ValidateConfigurationChange, checked before proposing (the core
 * applies a committed conf change unconditionally): a peer URL another
 * member has -> 409. */
static bool url_taken(struct raftd *n, const struct raftd_urls *urls,
                      uint64_t skip)
{
    for (size_t i = 0; i < urls->n; i++)
        if (members_find_url(n, urls->v[i], skip) != NULL)
            return true;
    return false;
}

static bool connected(const struct raftd *n, uint64_t id)
{
    return id == n->member_id || peer_transport_connected(n->peers, id);
}

/* etcd's mayAddMember (--strict-reconfig-check, on by default): with the
 * new member counted, the members already started (those with a name)
 * must be a quorum, except when a one-member cluster gets its second; and
 * this member must be connected to every other member (etcd: for the last
 * 5 s; here: now). Otherwise etcd answers 500. */
static bool ready_to_add(const struct raftd *n)
{
    size_t total = n->n_members + 1, started = 0;
    for (size_t i = 0; i < n->n_members; i++) {
        started += n->members[i].name[0] != '\0';
        if (!connected(n, n->members[i].id))
            return false;
    }
    return (started == 1 && total == 2) || started >= total / 2 + 1;
}

/* etcd's mayRemoveMember: removing a member that is connected must leave
 * a quorum of the remaining members connected (a member that is down can
 * always be removed). */
static bool ready_to_remove(const struct raftd *n, uint64_t id)
{
    size_t active = 0;
    if (id != n->member_id && !connected(n, id))
        return true;
    for (size_t i = 0; i < n->n_members; i++)
        active += connected(n, n->members[i].id);
    return active - 1 >= 1 + (n->n_members - 1) / 2;
}

/* membership.NewMember("", urls, "", &now): sha1 over the sorted URLs
 * and the decimal Unix time, as etcd's v2 POST does (no cluster token). */
static uint64_t new_member_id(const struct raftd_urls *urls)
{
    char now[24];
    snprintf(now, sizeof(now), "%lld",
             (long long)(node_now_ns() / 1000000000));
    return raftd_member_id((const char *const *)urls->v, urls->n, now);
}

void api_members_change(struct raftd *n, struct http_request *req,
                        const char *sub)
{
    struct raftd_urls urls = {0, NULL};
    struct members_ctx *c;
    char msg[64];
    uint64_t id = 0;
    enum members_op op;
    int rv;

    if (strcmp(req->method, "POST") == 0) {
        if (members_unmarshal(n, req, &urls) != 0)
            return;
        op = MEMBERS_ADD;
        id = new_member_id(&urls);
    } else {
        if (members_get_id(n, req, sub, &id) != 0)
            return;
        op = strcmp(req->method, "PUT") == 0 ? MEMBERS_UPDATE
                                              : MEMBERS_REMOVE;
        if (op == MEMBERS_UPDATE && members_unmarshal(n, req, &urls) != 0)
            return;
    }
    if (op != MEMBERS_ADD && members_is_removed(n, id)) {
        /* DELETE: 410; PUT: etcd's generic 500 (ErrIDRemoved). */
        snprintf(msg, sizeof(msg), "Member permanently removed: %llx",
                 (unsigned long long)id);
        if (op == MEMBERS_REMOVE)
            api_message_error(n, req, 410, msg);
        else
            members_internal(n, req, "updating", id, -EIDRM);
        goto out;
    }
    if (op != MEMBERS_ADD && members_find(n, id) == NULL) {
        snprintf(msg, sizeof(msg), "No such member: %llx",
                 (unsigned long long)id);
        api_message_error(n, req, 404, msg);
        goto out;
    }
    if ((op == MEMBERS_ADD && !ready_to_add(n)) ||
        (op == MEMBERS_REMOVE && !ready_to_remove(n, id))) {
        members_internal(n, req, op == MEMBERS_ADD ? "adding" : "removing",
                         id, -EINVAL);
        goto out;
    }
    if (op != MEMBERS_REMOVE && url_taken(n, &urls, id)) {
        api_message_error(n, req, 409, "membership: peerURL exists");
        goto out;
    }
    if (op == MEMBERS_ADD && members_find(n, id) != NULL) {
        api_message_error(n, req, 409, "membership: ID exists");
        goto out;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        members_internal(n, req, "changing", id, -ENOMEM);
        goto out;
    }
    c->n = n;
    c->req = req;
    c->op = op;
    c->id = id;
    c->w.data = c;
    n->api_active++;
    if (op != MEMBERS_REMOVE && (c->attrs = attrs_json(&urls)) == NULL) {
        rv = -ENOMEM;
    } else if (op == MEMBERS_UPDATE) {
        /* etcd's ConfChangeUpdateNode stores the new raftAttributes (one
         * store index); a write of that key through the log does the
         * same, and prevExist fails it if the member went away. */
        snprintf(c->path, sizeof(c->path),
                 "/_etcfs/members/%llx/raftAttributes",
                 (unsigned long long)id);
        c->sr.method = STORE_METHOD_PUT;
        c->sr.path = c->path;
        c->sr.val = c->attrs;
        c->sr.val_len = strlen(c->attrs);
        c->sr.prev_exist = 1;
        rv = raftd_write(n, &c->w, &c->sr, members_done);
    } else {
        rv = members_propose(n, &c->w, op == MEMBERS_ADD, id, c->attrs,
                             members_done);
    }
    if (rv != 0) {
        members_internal(n, req, "changing", id, rv);
        ctx_free(c);
    }
out:
    urls_clear(&urls);
}
