/* The HTTP/1.1 server: libuv listeners and connections, http-parser
 * callbacks into a per-connection arena, request finalisation (Go's URL and
 * form rules), and Go-formatted responses. One request is in flight per
 * connection at a time (Go's model), which keeps pipelined answers in order
 * without per-request output queues and lets the request live inside the
 * connection: no allocation per request once a connection's buffers have
 * grown to its working size. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>

#include "http_int.h"

#define READ_BUF_SIZE (64u << 10)
/* How long a closing connection keeps draining input after its final
 * response, so that the client reads the response instead of a reset
 * (Go's rstAvoidanceDelay is 500 ms). */
#define LINGER_MS 500
/* Buffers above this are freed once a request is done, so parked and idle
 * connections stay small. */
#define KEEP_BUF_MAX (64u << 10)
#define GO_MAX_FORM_SIZE (10u << 20)
/* cmux (in front of etcd's net/http) reads a connection's first line
 * through a 4096-byte bufio.Reader: a longer line matches nothing. */
#define CMUX_MAX_LINE 4096u
/* After a POST, Go discards up to this many CR/LF bytes before the next
 * request line (server.go, numLeadingCRorLF on a 4-byte peek). */
#define GO_POST_CRLF_SKIP 4u

struct list {
    struct list *prev, *next;
};

static void list_init(struct list *l)
{
    l->prev = l->next = l;
}

static int list_empty(const struct list *l)
{
    return l->next == l;
}

static void list_remove(struct list *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    list_init(e);
}

static void list_push_tail(struct list *head, struct list *e)
{
    e->prev = head->prev;
    e->next = head;
    head->prev->next = e;
    head->prev = e;
}

#define CONTAINER_OF(ptr, type, field)                                         \
    ((type *)(void *)((char *)(ptr)-offsetof(type, field)))

struct str_off {
    size_t name_off, name_len, val_off, val_len;
};

enum parse_cur { CUR_NONE, CUR_URL, CUR_FIELD, CUR_VALUE };

struct conn {
    uv_tcp_t tcp;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    struct http_server *srv;
    struct list all;   /* srv->conns */
    struct list timed; /* srv->idle or srv->linger, or alone */
    struct conn *ready_next;
    struct conn *inbox_next;        /* in move_to's inbox */
    struct http_server *move_to;    /* while moving */
    int move_fd;                    /* the socket, dup'd, while in transit */
    unsigned next_seq;              /* the next request's req.seq */
    unsigned moves;                 /* req.moves */
    uint64_t stamp; /* last activity (idle) or linger start */
    http_parser parser;
    struct http_request req;
    http_close_cb close_cb;
    int close_status;

    struct http_buf arena; /* the request's strings and arrays */
    struct http_buf in;    /* unparsed input kept while a request is busy */
    struct http_buf out;   /* response bytes not yet given to uv_write */
    struct http_buf wbuf;  /* response bytes being written */
    struct http_buf rh;    /* response header strings */
    struct str_off *hoffs; /* request headers (offsets into arena) */
    size_t nh, hcap;
    struct str_off *rhs; /* response headers (offsets into rh) */
    size_t nrh, rhcap;
    struct http_param_vec params;
    size_t url_off, url_len, body_off, body_len, header_bytes;
    enum parse_cur cur;
    int err_status;
    const char *err_body; /* NULL: status text */

    unsigned busy : 1, in_handler : 1, msg_done : 1, in_ready : 1,
        closing : 1, handle_closed : 1, close_after : 1, rd_eof : 1,
        reading : 1, writing : 1, notify_pending : 1, notified : 1,
        began : 1, chunked : 1, nobody : 1, lingering : 1, in_process : 1,
        nosock : 1, keep_alive : 1, shut : 1, is_form : 1,
        form_too_large : 1, line_ok : 1, not_first : 1, after_post : 1,
        bad_major : 1, moving : 1, in_transit : 1;
    size_t line_scan; /* bytes of an unfinished request line scanned */
    char remote_addr[64];
    char form_err[HTTP_ERR_MSG_MAX];
};

struct listener {
    uv_tcp_t tcp;
    struct http_server *srv;
};

struct http_server {
    uv_loop_t *loop;
    struct http_server_config cfg;
    struct listener **listeners;
    size_t nlisteners;
    struct list conns;
    size_t nconns;
    struct list idle;   /* not busy, oldest activity first */
    struct list linger; /* closing, oldest first */
    struct conn *ready_head, *ready_tail;
    uv_idle_t ready_handle;
    uv_timer_t timer;
    int timer_on;
    size_t open_handles; /* listeners + ready_handle + timer (+ inbox)
                            until closed */
    int closing, handles_closing;
    http_server_close_cb close_cb;
    struct http_buf *test_sink; /* http_parse_for_test output */
    size_t dispatched;          /* requests given to the handler */
    time_t date_sec;
    char date[40];
    /* Connections other servers move here (http_request_move), from any
     * thread: the mutex guards the list and the shut
     * flag, and is held across uv_async_send so that a closing server's
     * async handle is never signalled after it is closed. */
    int has_inbox;
    /* The memory outlives the close while a move toward this server is
     * under way on another thread: each such move holds a reference, and
     * so does the server itself until its close completes. */
    unsigned refs;
    uv_async_t inbox_async;
    pthread_mutex_t inbox_mu;
    struct conn *inbox_head, *inbox_tail;
    int inbox_shut;

    char rbuf[READ_BUF_SIZE];
};

static void conn_flush(struct conn *c);
static void conn_close(struct conn *c, int status);
static void schedule_ready(struct conn *c);
static void maybe_finish_close(struct http_server *srv);
static void timer_update(struct http_server *srv);
static void on_ready(uv_idle_t *h);
static void move_step(struct conn *c);
static void server_unref(struct http_server *srv);
static size_t kept_input_max(const struct conn *c);

/* ---- request parsing ---------------------------------------------------- */

static int arena_add(struct conn *c, const char *at, size_t len)
{
    return http_buf_append(&c->arena, at, len) == 0 ? 0 : -1;
}

/* Ends the string being collected (URL, header name or value). */
static int parse_switch(struct conn *c, enum parse_cur next)
{
    if (c->cur != CUR_NONE && c->cur != next) {
        if (arena_add(c, "", 1) != 0)
            return -1;
    }
    c->cur = next;
    return 0;
}

static int header_budget(struct conn *c, size_t len)
{
    c->header_bytes += len;
    if (c->header_bytes > c->srv->cfg.max_header_bytes) {
        c->err_status = 431;
        return -1;
    }
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct conn *c = p->data;
    c->arena.len = 0;
    c->nh = 0;
    c->params.n = 0;
    c->url_off = c->url_len = c->body_off = c->body_len = 0;
    c->header_bytes = 0;
    c->cur = CUR_NONE;
    c->err_status = 0;
    c->err_body = NULL;
    c->is_form = 0;
    c->form_too_large = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (header_budget(c, len) != 0)
        return -1;
    if (c->cur != CUR_URL) {
        c->cur = CUR_URL;
        c->url_off = c->arena.len;
    }
    c->url_len += len;
    return arena_add(c, at, len);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (header_budget(c, len) != 0)
        return -1;
    if (c->cur != CUR_FIELD) {
        if (parse_switch(c, CUR_FIELD) != 0)
            return -1;
        if (c->nh == c->hcap) {
            size_t cap = c->hcap ? c->hcap * 2 : 16;
            struct str_off *h = realloc(c->hoffs, cap * sizeof(*h));
            if (h == NULL)
                return -1;
            c->hoffs = h;
            c->hcap = cap;
        }
        struct str_off *h = &c->hoffs[c->nh++];
        h->name_off = c->arena.len;
        h->name_len = 0;
        h->val_off = 0;
        h->val_len = 0;
    }
    c->hoffs[c->nh - 1].name_len += len;
    return arena_add(c, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (header_budget(c, len) != 0)
        return -1;
    if (c->cur != CUR_VALUE) {
        if (parse_switch(c, CUR_VALUE) != 0)
            return -1;
        c->hoffs[c->nh - 1].val_off = c->arena.len;
    }
    c->hoffs[c->nh - 1].val_len += len;
    return arena_add(c, at, len);
}

/* Case-insensitive lookup over the offsets (before finalisation). */
static const struct str_off *find_header_off(const struct conn *c,
                                             const char *name, size_t *count)
{
    const struct str_off *first = NULL;
    size_t n = 0, len = strlen(name);
    for (size_t i = 0; i < c->nh; i++) {
        const struct str_off *h = &c->hoffs[i];
        if (h->name_len == len &&
            strncasecmp(c->arena.p + h->name_off, name, len) == 0) {
            if (first == NULL)
                first = h;
            n++;
        }
    }
    if (count != NULL)
        *count = n;
    return first;
}

static int method_has_form(const char *m)
{
    return strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 ||
           strcmp(m, "PATCH") == 0;
}

static int on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    if (parse_switch(c, CUR_NONE) != 0)
        return -1;
    /* A header with an empty value got no on_header_value call. */
    for (size_t i = 0; i < c->nh; i++) {
        struct str_off *h = &c->hoffs[i];
        if (h->val_off == 0) {
            h->val_off = h->name_off + h->name_len; /* its NUL */
            h->val_len = 0;
        }
        /* Go trims trailing blanks (textproto); http-parser keeps them. */
        while (h->val_len > 0 && (c->arena.p[h->val_off + h->val_len - 1] ==
                                      ' ' ||
                                  c->arena.p[h->val_off + h->val_len - 1] ==
                                      '\t')) {
            h->val_len--;
            c->arena.p[h->val_off + h->val_len] = 0;
        }
    }
    if (c->bad_major) {
        /* Go decides this after reading the headers (server.go). */
        c->err_status = 505;
        c->err_body = "505 HTTP Version Not Supported: unsupported protocol "
                      "version";
        return -1;
    }
    if (p->method == HTTP_CONNECT) {
        c->err_status = 400;
        return -1;
    }
    if (p->http_major == 1 && p->http_minor >= 1) {
        size_t nhost;
        find_header_off(c, "Host", &nhost);
        if (nhost == 0) {
            c->err_status = 400;
            c->err_body = "400 Bad Request: missing required Host header";
            return -1;
        }
        if (nhost > 1) {
            c->err_status = 400; /* Go 1.19 says no more than that */
            return -1;
        }
    }
    if ((p->flags & F_CONTENTLENGTH) &&
        p->content_length > c->srv->cfg.max_body_bytes) {
        c->err_status = 413;
        return -1;
    }
    const struct str_off *ex = find_header_off(c, "Expect", NULL);
    if (ex != NULL && p->http_major == 1 && p->http_minor >= 1 &&
        ex->val_len == 12 &&
        strncasecmp(c->arena.p + ex->val_off, "100-continue", 12) == 0 &&
        ((p->flags & F_CHUNKED) ||
         ((p->flags & F_CONTENTLENGTH) && p->content_length > 0))) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (http_buf_append(&c->out, cont, sizeof(cont) - 1) != 0)
            return -1;
    }
    if (method_has_form(http_method_str((enum http_method)p->method))) {
        const struct str_off *ct = find_header_off(c, "Content-Type", NULL);
        char mt[64];
        if (ct != NULL) {
            http_media_type(c->arena.p + ct->val_off, ct->val_len, mt,
                            sizeof(mt));
            c->is_form = strcmp(mt, "application/x-www-form-urlencoded") == 0;
        }
    }
    c->body_off = c->arena.len;
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->body_len + len > c->srv->cfg.max_body_bytes) {
        c->err_status = 413;
        return -1;
    }
    if (c->is_form && c->body_len + len > GO_MAX_FORM_SIZE) {
        /* Go's ParseForm reads 10 MB + 1 and fails with "http: POST too
         * large"; etcd answers that as error 210. Keep 10 MB, drop the
         * rest, and let the handler see the form error. */
        c->form_too_large = 1;
        size_t keep = c->body_len < GO_MAX_FORM_SIZE
                          ? GO_MAX_FORM_SIZE - c->body_len
                          : 0;
        c->body_len += keep;
        return keep ? arena_add(c, at, keep) : 0;
    }
    c->body_len += len;
    return arena_add(c, at, len);
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    if (c->body_off == 0)
        c->body_off = c->arena.len;
    if (arena_add(c, "", 1) != 0)
        return -1;
    c->keep_alive = http_should_keep_alive(p) != 0;
    c->msg_done = 1;
    /* Stop here: the next pipelined request waits for this one's answer. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Copies arena bytes [off, off+len) to the end as a NUL-terminated string. */
static int arena_copy(struct conn *c, size_t off, size_t len, size_t *out)
{
    int rv = http_buf_reserve(&c->arena, len + 1);
    if (rv != 0)
        return rv;
    memcpy(c->arena.p + c->arena.len, c->arena.p + off, len);
    c->arena.p[c->arena.len + len] = 0;
    *out = c->arena.len;
    c->arena.len += len + 1;
    return 0;
}

/* Builds c->req from the arena. Returns 0, -EINVAL (Go would answer 400)
 * or -ENOMEM. After it returns 0 the arena does not move again until the
 * request is finished, so the pointers in req stay valid. */
static int finalize_request(struct conn *c)
{
    struct http_request *r = &c->req;
    const char *u = c->arena.p + c->url_off;
    size_t ulen = c->url_len;
    size_t path_start = 0;
    int rv;

    /* Go's url.ParseRequestURI: "*", an absolute path, or an absolute URL
     * whose path we take. */
    if (ulen == 0)
        return -EINVAL;
    if (!(ulen == 1 && u[0] == '*') && u[0] != '/') {
        const char *sep = memchr(u, ':', ulen);
        if (sep == NULL || sep + 3 > u + ulen || sep[1] != '/' ||
            sep[2] != '/')
            return -EINVAL;
        const char *a = sep + 3;
        while (a < u + ulen && *a != '/' && *a != '?')
            a++;
        path_start = (size_t)(a - u);
    }
    const char *q = memchr(u + path_start, '?', ulen - path_start);
    size_t plen = q ? (size_t)(q - u) - path_start : ulen - path_start;
    size_t qoff = q ? (size_t)(q - u) + 1 : ulen;
    size_t raw_path_off, raw_query_off, path_off, path_len;
    size_t url_off = c->url_off;
    rv = arena_copy(c, url_off + path_start, plen, &raw_path_off);
    if (rv != 0)
        return rv;
    rv = arena_copy(c, url_off + qoff, ulen - qoff, &raw_query_off);
    if (rv != 0)
        return rv;
    rv = http_unescape(&c->arena, raw_path_off, plen, HTTP_UNESCAPE_PATH,
                       &path_off, &path_len, NULL);
    if (rv != 0)
        return rv;

    /* r.ParseForm(): body parameters first, then the query's. */
    const char *method = http_method_str((enum http_method)c->parser.method);
    char qerr[HTTP_ERR_MSG_MAX];
    c->form_err[0] = 0;
    qerr[0] = 0;
    int form_error = 0;
    if (method_has_form(method)) {
        const struct str_off *ct = find_header_off(c, "Content-Type", NULL);
        if (ct != NULL) {
            char mt[64];
            const char *merr = http_media_type(c->arena.p + ct->val_off,
                                               ct->val_len, mt, sizeof(mt));
            if (strcmp(mt, "application/x-www-form-urlencoded") == 0) {
                if (c->form_too_large) {
                    /* Go answers and closes without reading the rest. */
                    c->keep_alive = 0;
                    strcpy(c->form_err, "http: POST too large");
                    form_error = -EINVAL;
                    merr = NULL;
                } else {
                    rv = http_parse_query(&c->arena, &c->params, c->body_off,
                                          c->body_len, c->form_err);
                    if (rv == -ENOMEM)
                        return rv;
                    if (rv != 0)
                        form_error = rv;
                }
            }
            if (merr != NULL) {
                /* ParseMediaType's error comes first in Go. */
                snprintf(c->form_err, sizeof(c->form_err), "%s", merr);
                form_error = -EINVAL;
            }
        }
    }
    size_t post_count = c->params.n;
    rv = http_parse_query(&c->arena, &c->params, raw_query_off, ulen - qoff,
                          qerr);
    if (rv == -ENOMEM)
        return rv;
    if (rv != 0 && form_error == 0) {
        form_error = rv;
        memcpy(c->form_err, qerr, sizeof(qerr));
    }

    /* The arrays go at the end, aligned; nothing is appended after them. */
    size_t align = _Alignof(max_align_t);
    size_t pad = (align - c->arena.len % align) % align;
    size_t hsz = c->nh * sizeof(struct http_header);
    size_t psz = c->params.n * sizeof(struct http_param);
    rv = http_buf_reserve(&c->arena, pad + hsz + psz);
    if (rv != 0)
        return rv;
    c->arena.len += pad;
    char *base = c->arena.p;
    struct http_header *hdrs = (struct http_header *)(void *)(base +
                                                              c->arena.len);
    c->arena.len += hsz;
    struct http_param *params = (struct http_param *)(void *)(base +
                                                              c->arena.len);
    c->arena.len += psz;
    for (size_t i = 0; i < c->nh; i++) {
        hdrs[i].name = base + c->hoffs[i].name_off;
        hdrs[i].value = base + c->hoffs[i].val_off;
    }
    for (size_t i = 0; i < c->params.n; i++) {
        const struct http_param_off *po = &c->params.v[i];
        params[i].key = base + po->key_off;
        params[i].key_len = po->key_len;
        params[i].value = base + po->val_off;
        params[i].value_len = po->val_len;
    }

    void *server_data = r->server_data;
    struct sockaddr_storage remote = r->remote;
    memset(r, 0, sizeof(*r));
    r->server_data = server_data;
    r->remote = remote;
    r->server = c->srv;
    r->moves = c->moves;
    r->method = method;
    r->http_major = c->parser.http_major;
    r->http_minor = c->parser.http_minor;
    r->keep_alive = c->keep_alive;
    r->raw_path = base + raw_path_off;
    r->path = base + path_off;
    r->path_len = path_len;
    r->raw_query = base + raw_query_off;
    r->headers = hdrs;
    r->header_count = c->nh;
    r->body = base + c->body_off;
    r->body_len = c->body_len;
    r->form = params;
    r->form_count = c->params.n;
    r->post_form_count = post_count;
    r->query = params + post_count;
    r->query_count = c->params.n - post_count;
    r->form_error = form_error;
    r->form_error_msg = form_error ? c->form_err : NULL;
    r->remote_addr = c->remote_addr;
    return 0;
}

/* ---- public request helpers --------------------------------------------- */

const char *http_request_header(const struct http_request *req,
                                const char *name)
{
    for (size_t i = 0; i < req->header_count; i++) {
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    }
    return NULL;
}

static const struct http_param *param_find(const struct http_param *p,
                                           size_t n, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < n; i++) {
        if (p[i].key_len == klen && memcmp(p[i].key, key, klen) == 0)
            return &p[i];
    }
    return NULL;
}

const struct http_param *http_request_form_get(const struct http_request *req,
                                               const char *key)
{
    return param_find(req->form, req->form_count, key);
}

const char *http_request_form_value(const struct http_request *req,
                                    const char *key)
{
    const struct http_param *p = param_find(req->form, req->form_count, key);
    return p ? p->value : NULL;
}

const char *http_request_query_value(const struct http_request *req,
                                     const char *key)
{
    const struct http_param *p = param_find(req->query, req->query_count, key);
    return p ? p->value : NULL;
}

void http_request_set_close_cb(struct http_request *req, http_close_cb cb)
{
    CONTAINER_OF(req, struct conn, req)->close_cb = cb;
}

/* ---- response formatting ------------------------------------------------- */

static const char *date_header(struct http_server *srv)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed",
                                    "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr",
                                        "May", "Jun", "Jul", "Aug",
                                        "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != srv->date_sec || srv->date[0] == 0) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(srv->date, sizeof(srv->date),
                 "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
                 tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        srv->date_sec = now;
    }
    return srv->date;
}

int http_response_add_header(struct http_request *req, const char *name,
                             const char *value)
{
    struct conn *c = CONTAINER_OF(req, struct conn, req);
    if (c->began)
        return -EINVAL;
    /* One pass over the name: length, forbidden bytes, and whether it is
     * already in canonical form (then http_canonical_key would change
     * nothing, valid token or not). This runs for every header of every
     * response. */
    size_t nlen = 0, vlen;
    int canonical = 1, upper = 1;
    for (unsigned char ch; (ch = (unsigned char)name[nlen]) != '\0'; nlen++) {
        if (ch == '\r' || ch == '\n' || ch == ':')
            return -EINVAL;
        if (upper ? (ch >= 'a' && ch <= 'z') : (ch >= 'A' && ch <= 'Z'))
            canonical = 0;
        upper = ch == '-';
    }
    vlen = strcspn(value, "\r\n");
    if (nlen == 0 || value[vlen] != '\0')
        return -EINVAL;
    if (c->nrh == c->rhcap) {
        size_t cap = c->rhcap ? c->rhcap * 2 : 8;
        struct str_off *r = realloc(c->rhs, cap * sizeof(*r));
        if (r == NULL)
            return -ENOMEM;
        c->rhs = r;
        c->rhcap = cap;
    }
    if (http_buf_reserve(&c->rh, nlen + vlen + 2) != 0)
        return -ENOMEM;
    struct str_off *h = &c->rhs[c->nrh++];
    h->name_off = c->rh.len;
    h->name_len = nlen;
    memcpy(c->rh.p + c->rh.len, name, nlen + 1);
    if (!canonical)
        http_canonical_key(c->rh.p + c->rh.len, nlen);
    c->rh.len += nlen + 1;
    h->val_off = c->rh.len;
    h->val_len = vlen;
    memcpy(c->rh.p + c->rh.len, value, vlen + 1);
    c->rh.len += vlen + 1;
    return 0;
}

static int body_allowed(int status)
{
    return !(status >= 100 && status < 200) && status != 204 && status != 304;
}

static int append_str(struct http_buf *b, const char *s)
{
    return http_buf_append(b, s, strlen(s));
}

/* Writes the status line and headers as Go's chunkWriter.writeHeader does.
 * stream: 0 for a whole response of body_len bytes. */
static int write_head(struct conn *c, int status, int stream, size_t body_len)
{
    struct http_buf *o = &c->out;
    int is11 = c->req.http_major > 1 ||
               (c->req.http_major == 1 && c->req.http_minor >= 1);
    int is_head = strcmp(c->req.method, "HEAD") == 0;
    int allowed = body_allowed(status);
    char line[96];
    const char *text = http_status_text(status);
    size_t start = o->len;

    /* Sort the handler's headers by name, stably (insertion sort: there
     * are a handful). */
    for (size_t i = 1; i < c->nrh; i++) {
        struct str_off t = c->rhs[i];
        size_t j = i;
        while (j > 0 && strcmp(c->rh.p + c->rhs[j - 1].name_off,
                               c->rh.p + t.name_off) > 0) {
            c->rhs[j] = c->rhs[j - 1];
            j--;
        }
        c->rhs[j] = t;
    }
    int rv;
    if (text != NULL && status >= 100 && status <= 999) {
        /* The common case without snprintf: "HTTP/1.1 200 OK\r\n". */
        size_t tlen = strlen(text);
        rv = http_buf_reserve(o, 15 + tlen);
        if (rv == 0) {
            char *p = o->p + o->len;
            memcpy(p, "HTTP/1.", 7);
            p[7] = (char)('0' + is11);
            p[8] = ' ';
            p[9] = (char)('0' + status / 100);
            p[10] = (char)('0' + status / 10 % 10);
            p[11] = (char)('0' + status % 10);
            p[12] = ' ';
            memcpy(p + 13, text, tlen);
            memcpy(p + 13 + tlen, "\r\n", 2);
            o->len += 15 + tlen;
        }
    } else {
        if (text != NULL)
            snprintf(line, sizeof(line), "HTTP/1.%d %03d %s\r\n", is11,
                     status, text);
        else
            snprintf(line, sizeof(line), "HTTP/1.%d %03d status code %d\r\n",
                     is11, status, status);
        rv = append_str(o, line);
    }
    int has_ct = 0;
    for (size_t i = 0; rv == 0 && i < c->nrh; i++) {
        const struct str_off *h = &c->rhs[i];
        if (h->name_len == 12 &&
            memcmp(c->rh.p + h->name_off, "Content-Type", 12) == 0)
            has_ct = 1;
        rv = http_buf_reserve(o, h->name_len + h->val_len + 4);
        if (rv == 0) {
            memcpy(o->p + o->len, c->rh.p + h->name_off, h->name_len);
            o->len += h->name_len;
            memcpy(o->p + o->len, ": ", 2);
            o->len += 2;
            memcpy(o->p + o->len, c->rh.p + h->val_off, h->val_len);
            o->len += h->val_len;
            memcpy(o->p + o->len, "\r\n", 2);
            o->len += 2;
        }
    }
    if (rv == 0) {
        rv = append_str(o, "Date: ");
        if (rv == 0)
            rv = append_str(o, date_header(c->srv));
        if (rv == 0)
            rv = append_str(o, "\r\n");
    }
    if (rv == 0 && !stream && allowed && (!is_head || body_len > 0)) {
        /* Decimal digits by hand: snprintf was a visible share of a GET. */
        char digits[24];
        size_t nd = 0, v = body_len;
        do {
            digits[sizeof(digits) - 1 - nd++] = (char)('0' + v % 10);
            v /= 10;
        } while (v != 0);
        rv = append_str(o, "Content-Length: ");
        if (rv == 0)
            rv = http_buf_append(o, digits + sizeof(digits) - nd, nd);
        if (rv == 0)
            rv = append_str(o, "\r\n");
    }
    if (rv == 0 && !stream && allowed && !has_ct && body_len > 0)
        rv = append_str(o, "Content-Type: text/plain; charset=utf-8\r\n");
    /* A stream to a 1.0 client is delimited by closing the connection. */
    c->chunked = stream && is11 && allowed && !is_head;
    c->nobody = !allowed || is_head;
    if (stream && !is11 && !c->nobody)
        c->keep_alive = 0;
    if (!c->keep_alive)
        c->close_after = 1;
    if (rv == 0 && c->close_after && is11)
        rv = append_str(o, "Connection: close\r\n");
    else if (rv == 0 && !is11 && !c->close_after)
        rv = append_str(o, "Connection: keep-alive\r\n");
    if (rv == 0 && c->chunked)
        rv = append_str(o, "Transfer-Encoding: chunked\r\n");
    if (rv == 0)
        rv = append_str(o, "\r\n");
    if (rv != 0)
        o->len = start;
    return rv;
}

/* Go's answer to a request it cannot parse (server.go, c.serve):
 * "HTTP/1.1 " + public + errorHeaders + body, where public is the status
 * ("400 Bad Request", or with a reason "400 Bad Request: missing required
 * Host header") and body is public again except for 501. */
static void send_error(struct conn *c, int status, const char *public_text,
                       const char *body)
{
    char buf[384], deflt[96];
    const char *text = http_status_text(status);
    if (public_text == NULL) {
        snprintf(deflt, sizeof(deflt), "%d %s", status, text ? text : "");
        public_text = deflt;
    }
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %s\r\nContent-Type: text/plain; "
                     "charset=utf-8\r\nConnection: close\r\n\r\n%s",
                     public_text, body ? body : public_text);
    if (n > 0 && (size_t)n < sizeof(buf))
        (void)http_buf_append(&c->out, buf, (size_t)n);
    c->close_after = 1;
}

/* ---- finishing requests ---------------------------------------------------- */

static size_t out_pending(const struct conn *c)
{
    return c->out.len + c->wbuf.len;
}

static void idle_touch(struct conn *c)
{
    struct http_server *srv = c->srv;
    if (srv->cfg.idle_timeout_ms == 0 || c->nosock)
        return;
    c->stamp = uv_now(srv->loop);
    list_remove(&c->timed);
    list_push_tail(&srv->idle, &c->timed);
    timer_update(srv);
}

static void finish_request(struct conn *c)
{
    c->busy = 0;
    c->close_cb = NULL;
    c->began = 0;
    c->chunked = 0;
    c->nobody = 0;
    c->notify_pending = 0;
    c->notified = 0;
    c->nrh = 0;
    c->rh.len = 0;
    c->req.data = NULL;
    if (!c->keep_alive)
        c->close_after = 1;
    if (c->arena.cap > KEEP_BUF_MAX)
        http_buf_free(&c->arena);
    if (c->closing) {
        schedule_ready(c); /* frees it once the handle is closed */
        return;
    }
    if (!c->close_after)
        idle_touch(c);
    if (c->in_handler)
        return; /* the parse loop or ready loop flushes and goes on */
    conn_flush(c);
    if (!c->closing)
        schedule_ready(c); /* resume pipelined input and reading */
}

int http_respond(struct http_request *req, int status, const void *body,
                 size_t len)
{
    struct conn *c = CONTAINER_OF(req, struct conn, req);
    int rv = 0;
    if (c->closing) {
        rv = -ECONNRESET;
    } else if (c->began) {
        rv = -EINVAL;
    } else {
        rv = write_head(c, status, 0, len);
        if (rv == 0 && !c->nobody && len > 0)
            rv = http_buf_append(&c->out, body, len);
        if (rv != 0)
            c->close_after = 1;
    }
    if (c->closing)
        rv = -ECONNRESET;
    finish_request(c);
    return rv;
}

int http_stream_begin(struct http_request *req, int status)
{
    struct conn *c = CONTAINER_OF(req, struct conn, req);
    if (c->began)
        return -EINVAL;
    if (c->closing)
        return -ECONNRESET;
    int rv = write_head(c, status, 1, 0);
    if (rv != 0)
        return rv;
    c->began = 1;
    if (!c->in_handler || !c->in_process)
        conn_flush(c);
    return 0;
}

int http_stream_write(struct http_request *req, const void *buf, size_t len)
{
    struct conn *c = CONTAINER_OF(req, struct conn, req);
    if (c->closing)
        return -ECONNRESET;
    if (!c->began)
        return -EINVAL;
    if (len == 0 || c->nobody)
        return 0;
    if (out_pending(c) + len > c->srv->cfg.max_output_bytes) {
        conn_close(c, -ENOBUFS);
        return -ENOBUFS;
    }
    int rv;
    if (c->chunked) {
        char hdr[24];
        int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
        rv = http_buf_reserve(&c->out, (size_t)n + len + 2);
        if (rv == 0) {
            http_buf_append(&c->out, hdr, (size_t)n);
            http_buf_append(&c->out, buf, len);
            http_buf_append(&c->out, "\r\n", 2);
        }
    } else {
        rv = http_buf_append(&c->out, buf, len);
    }
    if (rv != 0)
        return rv;
    if (!c->in_handler || !c->in_process)
        conn_flush(c);
    return c->closing ? -ECONNRESET : 0;
}

int http_stream_end(struct http_request *req)
{
    struct conn *c = CONTAINER_OF(req, struct conn, req);
    int rv = 0;
    if (c->closing) {
        rv = -ECONNRESET;
    } else if (!c->began) {
        /* Never begun (its begin failed): the connection state is
         * unknown to the client, so it cannot be reused. */
        c->close_after = 1;
        rv = -EINVAL;
    } else if (c->chunked) {
        rv = http_buf_append(&c->out, "0\r\n\r\n", 5);
        if (rv != 0)
            c->close_after = 1;
    }
    finish_request(c);
    return rv;
}

/* ---- connection I/O ------------------------------------------------------- */

static void schedule_ready(struct conn *c)
{
    struct http_server *srv = c->srv;
    if (c->in_ready)
        return;
    c->in_ready = 1;
    c->ready_next = NULL;
    if (srv->ready_tail)
        srv->ready_tail->ready_next = c;
    else
        srv->ready_head = c;
    srv->ready_tail = c;
    if (!c->nosock && !uv_is_active((uv_handle_t *)&srv->ready_handle))
        uv_idle_start(&srv->ready_handle, on_ready);
}

static void conn_count(struct http_server *srv, int delta)
{
    /* Read from other threads by http_server_connection_count. */
    __atomic_fetch_add(&srv->nconns, (size_t)(ptrdiff_t)delta,
                       __ATOMIC_RELAXED);
}

static void free_conn_memory(struct conn *c)
{
    http_buf_free(&c->arena);
    http_buf_free(&c->in);
    http_buf_free(&c->out);
    http_buf_free(&c->wbuf);
    http_buf_free(&c->rh);
    free(c->hoffs);
    free(c->rhs);
    http_param_vec_free(&c->params);
    free(c);
}

static void free_conn(struct conn *c)
{
    struct http_server *srv = c->srv;
    list_remove(&c->all);
    list_remove(&c->timed);
    conn_count(srv, -1);
    free_conn_memory(c);
    maybe_finish_close(srv);
}

static void maybe_free(struct conn *c)
{
    if (c->closing && c->handle_closed && !c->busy && !c->in_ready &&
        !c->in_handler && !c->writing && !c->nosock)
        free_conn(c);
}

static void on_handle_close(uv_handle_t *h)
{
    struct conn *c = h->data;
    c->handle_closed = 1;
    maybe_free(c);
}

static void conn_close(struct conn *c, int status)
{
    if (c->closing || c->in_transit)
        return; /* in transit: its handle is already closing */
    c->closing = 1;
    list_remove(&c->timed);
    c->out.len = 0;
    if (c->moving) {
        c->busy = 0; /* no handler owns a request on its way: dropped */
        c->moving = 0;
        server_unref(c->move_to);
    }
    if (c->busy && !c->notified) {
        c->close_status = status;
        c->notify_pending = 1;
        schedule_ready(c);
    }
    if (c->nosock) {
        c->handle_closed = 1;
        schedule_ready(c);
        return;
    }
    /* Pending writes complete with UV_ECANCELED before the close callback,
     * which clears c->writing. */
    uv_close((uv_handle_t *)&c->tcp, on_handle_close);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (c->closing)
        return;
    if (status < 0 || c->rd_eof) {
        conn_close(c, -ECONNRESET);
        return;
    }
    /* Drain the client's remaining input for a moment before closing. */
    c->lingering = 1;
    c->in.len = 0;
    c->stamp = uv_now(c->srv->loop);
    list_remove(&c->timed);
    list_push_tail(&c->srv->linger, &c->timed);
    timer_update(c->srv);
}

static void begin_shutdown(struct conn *c)
{
    if (c->shut || c->closing)
        return;
    c->shut = 1;
    list_remove(&c->timed);
    if (c->nosock) {
        conn_close(c, -ECONNRESET);
        return;
    }
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        conn_close(c, -ECONNRESET);
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    c->writing = 0;
    c->wbuf.len = 0;
    if (c->wbuf.cap > KEEP_BUF_MAX)
        http_buf_free(&c->wbuf);
    if (c->closing) {
        maybe_free(c);
        return;
    }
    if (status < 0) {
        conn_close(c, -ECONNRESET);
        return;
    }
    if (c->moving) {
        move_step(c);
        return;
    }
    conn_flush(c);
    /* Input may have waited for output to drain (backpressure). */
    if (!c->closing && !c->busy && (c->in.len > 0 || !c->reading))
        schedule_ready(c);
}

/* A parked long poll (headers sent, output drained) keeps only the
 * connection and the request's arena: the parse and response scratch
 * buffers are released, so 10k parked watchers stay cheap. */
static void trim_if_parked(struct conn *c)
{
    if (!c->busy || !c->began || c->writing || c->out.len > 0)
        return;
    http_buf_free(&c->out);
    http_buf_free(&c->wbuf);
    http_buf_free(&c->rh);
    free(c->rhs);
    c->rhs = NULL;
    c->nrh = c->rhcap = 0;
    free(c->hoffs);
    c->hoffs = NULL;
    c->nh = c->hcap = 0;
    http_param_vec_free(&c->params);
    if (c->in.len == 0)
        http_buf_free(&c->in);
}

static void conn_flush(struct conn *c)
{
    if (c->closing) {
        c->out.len = 0;
        return;
    }
    if (c->nosock) {
        if (c->srv->test_sink != NULL)
            (void)http_buf_append(c->srv->test_sink, c->out.p, c->out.len);
        c->out.len = 0;
        if (c->close_after && !c->busy)
            begin_shutdown(c);
        return;
    }
    if (c->writing)
        return;
    if (c->out.len == 0) {
        if (c->close_after && !c->busy)
            begin_shutdown(c);
        trim_if_parked(c);
        return;
    }
    uv_buf_t b = uv_buf_init(c->out.p, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)c->out.len) {
        c->out.len = 0;
        if (c->out.cap > KEEP_BUF_MAX)
            http_buf_free(&c->out);
        if (c->close_after && !c->busy)
            begin_shutdown(c);
        trim_if_parked(c);
        /* Parsing may have stopped for backpressure: go on later. */
        if (!c->busy && !c->closing && c->in.len > 0)
            schedule_ready(c);
        return;
    }
    if (n < 0 && n != UV_EAGAIN && n != UV_ENOSYS) {
        conn_close(c, -ECONNRESET);
        return;
    }
    if (n < 0)
        n = 0;
    /* Hand the rest to uv_write; new output collects in out meanwhile. */
    struct http_buf t = c->wbuf;
    c->wbuf = c->out;
    c->out = t;
    c->out.len = 0;
    b = uv_buf_init(c->wbuf.p + n, (unsigned)(c->wbuf.len - (size_t)n));
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        c->wbuf.len = 0;
        conn_close(c, -ECONNRESET);
        return;
    }
    c->writing = 1;
}

/* ---- the request line, Go's way ------------------------------------------ */

enum line_verdict {
    LINE_MORE,  /* no complete line yet */
    LINE_OK,    /* give it to http-parser */
    LINE_CLOSE, /* close without a word (cmux matched nothing) */
    LINE_400,   /* net/http: 400 Bad Request */
    LINE_431,   /* net/http: the line alone is over the header budget */
};

/* Go's validMethod: a non-empty RFC 7230 token. */
static int go_valid_method(const char *m, size_t len)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = m[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || (ch != 0 && strchr(extra, ch))))
            return 0;
    }
    return 1;
}

/* Go 1.19's http.ParseHTTPVersion: "HTTP/1.1", "HTTP/1.0", or exactly
 * "HTTP/" digit "." digit. Returns 0 and the major version in *major, or
 * -1. */
static int go_parse_version(const char *v, size_t len, int *major)
{
    if (len != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' ||
        v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9')
        return -1;
    *major = v[5] - '0';
    return 0;
}

/* Checks the request line at the start of data (len bytes, not consumed
 * yet) the way etcd's front end does before http-parser, which is far
 * more lenient, sees it. The first request of a connection goes through
 * cmux's HTTP1 matcher: a line that is not METHOD SP URI SP HTTP/1.x
 * (split at the first two spaces, Go's version syntax) gets the
 * connection closed without an answer. Later requests go straight to
 * net/http: 400 for the same faults, and a well-formed version whose major
 * is not 1 is answered 505 after the headers (c->bad_major). */
static enum line_verdict line_check(struct conn *c, const char *data,
                                    size_t len)
{
    size_t skip = 0;
    if (c->after_post) {
        while (skip < len && skip < GO_POST_CRLF_SKIP &&
               (data[skip] == '\r' || data[skip] == '\n'))
            skip++;
    }
    size_t from = c->line_scan > skip ? c->line_scan : skip;
    const char *nl = from < len ? memchr(data + from, '\n', len - from)
                                : NULL;
    size_t limit = c->not_first ? c->srv->cfg.max_header_bytes
                                : CMUX_MAX_LINE;
    if (nl == NULL) {
        c->line_scan = len;
        if (len - skip < limit)
            return LINE_MORE;
        return c->not_first ? LINE_431 : LINE_CLOSE;
    }
    const char *line = data + skip;
    size_t n = (size_t)(nl - line); /* without the LF */
    if (n + 1 > limit)
        return c->not_first ? LINE_431 : LINE_CLOSE;
    if (n > 0 && line[n - 1] == '\r')
        n--;
    enum line_verdict bad = c->not_first ? LINE_400 : LINE_CLOSE;
    const char *s1 = memchr(line, ' ', n);
    if (s1 == NULL)
        return bad;
    const char *s2 = memchr(s1 + 1, ' ', n - (size_t)(s1 + 1 - line));
    if (s2 == NULL)
        return bad;
    int major;
    const char *ver = s2 + 1;
    if (go_parse_version(ver, n - (size_t)(ver - line), &major) != 0)
        return bad;
    if (major != 1 && !c->not_first)
        return LINE_CLOSE; /* cmux wants HTTP/1.x */
    if (!go_valid_method(line, (size_t)(s1 - line)))
        return LINE_400; /* cmux does not look: net/http does */
    c->bad_major = major != 1;
    return LINE_OK;
}

static void dispatch(struct conn *c)
{
    int rv = finalize_request(c);
    if (rv != 0) {
        if (rv == -ENOMEM)
            send_error(c, 500, NULL, NULL);
        else
            send_error(c, 400, NULL, NULL);
        return;
    }
    c->busy = 1;
    c->not_first = 1;
    c->req.seq = c->next_seq++;
    c->after_post = c->parser.method == HTTP_POST;
    c->srv->dispatched++;
    list_remove(&c->timed);
    c->in_handler = 1;
    c->srv->cfg.handler(&c->req);
    c->in_handler = 0;
}

/* Runs the parser over data, dispatching each complete request while the
 * previous one is finished. Returns the number of bytes consumed; the rest
 * must be kept for later (a request is busy, or output is backed up). */
static size_t conn_parse(struct conn *c, const char *data, size_t len)
{
    size_t done = 0;
    while (done < len && !c->busy && !c->closing && !c->close_after) {
        if (out_pending(c) > c->srv->cfg.max_output_bytes)
            break; /* the client does not read: stop taking requests */
        if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
            http_parser_pause(&c->parser, 0);
        if (!c->line_ok) {
            enum line_verdict v = line_check(c, data + done, len - done);
            if (v == LINE_MORE && c->rd_eof)
                v = LINE_CLOSE; /* Go: EOF mid-line is no request */
            if (v == LINE_MORE)
                break;
            c->line_scan = 0;
            if (v != LINE_OK) {
                if (v == LINE_400)
                    send_error(c, 400, NULL, NULL);
                else if (v == LINE_431)
                    send_error(c, 431, NULL, NULL);
                c->close_after = 1;
                return len;
            }
            c->line_ok = 1;
        }
        size_t n = http_parser_execute(&c->parser, &parser_settings,
                                       data + done, len - done);
        done += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (c->msg_done) {
            c->msg_done = 0;
            c->line_ok = 0; /* the next request's line is checked anew */
            dispatch(c);
            continue;
        }
        if (e != HPE_OK && e != HPE_PAUSED) {
            if (c->err_status != 0)
                send_error(c, c->err_status, c->err_body, NULL);
            else if (e == HPE_HEADER_OVERFLOW)
                send_error(c, 431, NULL, NULL);
            else if (e == HPE_INVALID_TRANSFER_ENCODING)
                send_error(c, 501, NULL, "Unsupported transfer encoding");
            else
                send_error(c, 400, NULL, NULL);
            return len;
        }
        if (n == 0)
            break; /* no progress: should not happen, never spin */
    }
    if (c->closing || c->close_after)
        return len; /* input after a final response is dropped */
    return done;
}

/* Parses input kept in c->in. */
static void conn_parse_kept(struct conn *c)
{
    if (c->in.len == 0)
        return;
    c->in_process = 1;
    size_t n = conn_parse(c, c->in.p, c->in.len);
    c->in_process = 0;
    if (n > 0 && n < c->in.len)
        memmove(c->in.p, c->in.p + n, c->in.len - n);
    c->in.len -= n;
    if (c->in.len == 0 && c->in.cap > KEEP_BUF_MAX)
        http_buf_free(&c->in);
}

static size_t kept_input_max(const struct conn *c)
{
    return c->srv->cfg.max_header_bytes + READ_BUF_SIZE;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    /* One read buffer per server: read callbacks consume it at once and
     * copy only what must wait, so connections hold no read buffer. */
    struct conn *c = h->data;
    (void)suggested;
    buf->base = c->srv->rbuf;
    buf->len = READ_BUF_SIZE;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        c->reading = 0;
        if (nread != UV_EOF || c->lingering) {
            conn_close(c, -ECONNRESET);
            return;
        }
        c->rd_eof = 1;
        if (c->busy) {
            /* Go cancels the request's context when the client closes;
             * the answer, if any, is still written before closing. */
            if (!c->notified && !c->notify_pending) {
                c->close_status = -ECONNRESET;
                c->notify_pending = 1;
                schedule_ready(c);
            }
            c->close_after = 1;
            return;
        }
        if (c->in.len > 0) {
            /* Answer the complete pipelined requests first (unless the
             * connection is already closing after an answer). */
            schedule_ready(c);
            return;
        }
        c->close_after = 1;
        conn_flush(c); /* shuts down, then closes, once output is out */
        return;
    }
    if (c->lingering)
        return; /* drained and dropped */
    if (!c->busy && !c->close_after)
        idle_touch(c);
    if (c->busy || c->in.len > 0 || c->close_after) {
        if (c->close_after)
            return;
        if (http_buf_append(&c->in, buf->base, (size_t)nread) != 0) {
            conn_close(c, -ECONNRESET);
            return;
        }
        if (c->in.len > kept_input_max(c)) {
            uv_read_stop(s);
            c->reading = 0;
        }
        if (!c->busy)
            schedule_ready(c);
        return;
    }
    c->in_process = 1;
    size_t n = conn_parse(c, buf->base, (size_t)nread);
    c->in_process = 0;
    if (n < (size_t)nread && !c->closing) {
        if (http_buf_append(&c->in, buf->base + n, (size_t)nread - n) != 0) {
            conn_close(c, -ECONNRESET);
            return;
        }
        if (c->in.len > kept_input_max(c)) {
            uv_read_stop(s);
            c->reading = 0;
        }
    }
    conn_flush(c);
}

/* The deferred work: close notifications, resuming pipelined input after
 * an asynchronous answer, frees. Runs from the loop, never inside a call
 * the handler made. */
static void process_ready(struct http_server *srv)
{
    struct conn *c;
    while ((c = srv->ready_head) != NULL) {
        srv->ready_head = c->ready_next;
        if (srv->ready_head == NULL)
            srv->ready_tail = NULL;
        c->in_ready = 0;
        if (c->moving) {
            move_step(c);
            continue;
        }
        if (c->notify_pending && c->busy) {
            c->notify_pending = 0;
            c->notified = 1;
            if (c->close_cb != NULL) {
                c->in_handler = 1;
                c->close_cb(&c->req, c->close_status);
                c->in_handler = 0;
            }
        }
        if (c->closing) {
            maybe_free(c);
            continue;
        }
        if (c->busy)
            continue;
        c->in_process = 1;
        conn_parse_kept(c);
        c->in_process = 0;
        if (c->closing) {
            maybe_free(c);
            continue;
        }
        if (c->rd_eof && !c->busy && c->in.len == 0)
            c->close_after = 1;
        conn_flush(c);
        if (!c->closing && !c->busy && !c->reading && !c->rd_eof &&
            !c->nosock && !c->shut && c->in.len <= kept_input_max(c)) {
            if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
                c->reading = 1;
        }
    }
}

static void on_ready(uv_idle_t *h)
{
    struct http_server *srv = h->data;
    process_ready(srv);
    if (srv->ready_head == NULL)
        uv_idle_stop(h);
}

static void on_connection(uv_stream_t *ls, int status)
{
    struct listener *l = ls->data;
    struct http_server *srv = l->srv;
    if (status < 0 || srv->closing)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->srv = srv;
    list_init(&c->all);
    list_init(&c->timed);
    if (uv_tcp_init(srv->loop, &c->tcp) != 0) {
        free(c);
        return;
    }
    c->tcp.data = c;
    list_push_tail(&srv->conns, &c->all);
    conn_count(srv, 1);
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
        c->closing = 1;
        uv_close((uv_handle_t *)&c->tcp, on_handle_close);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    int alen = sizeof(c->req.remote);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->req.remote,
                           &alen) == 0) {
        char ip[INET6_ADDRSTRLEN] = "";
        if (c->req.remote.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&c->req.remote;
            uv_ip6_name(a, ip, sizeof(ip));
            snprintf(c->remote_addr, sizeof(c->remote_addr), "[%s]:%u", ip,
                     ntohs(a->sin6_port));
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&c->req.remote;
            uv_ip4_name(a, ip, sizeof(ip));
            snprintf(c->remote_addr, sizeof(c->remote_addr), "%s:%u", ip,
                     ntohs(a->sin_port));
        }
    }
    c->req.server = srv;
    c->req.server_data = srv->cfg.data;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c, 0);
        return;
    }
    c->reading = 1;
    idle_touch(c);
}

/* ---- timers: idle connections and lingering closes ----------------------- */

static void on_timer(uv_timer_t *t)
{
    struct http_server *srv = t->data;
    uint64_t now = uv_now(srv->loop);
    while (!list_empty(&srv->linger)) {
        struct conn *c = CONTAINER_OF(srv->linger.next, struct conn, timed);
        if (now - c->stamp < LINGER_MS)
            break;
        conn_close(c, 0);
    }
    uint64_t idle = srv->cfg.idle_timeout_ms;
    while (idle > 0 && !list_empty(&srv->idle)) {
        struct conn *c = CONTAINER_OF(srv->idle.next, struct conn, timed);
        if (now - c->stamp < idle)
            break;
        conn_close(c, 0);
    }
    timer_update(srv);
}

static void timer_update(struct http_server *srv)
{
    int want = !srv->handles_closing &&
               (!list_empty(&srv->linger) || !list_empty(&srv->idle));
    if (want && !srv->timer_on) {
        uint64_t tick = 100;
        if (srv->cfg.idle_timeout_ms > 0 && srv->cfg.idle_timeout_ms / 4 < tick)
            tick = srv->cfg.idle_timeout_ms / 4 ? srv->cfg.idle_timeout_ms / 4
                                                : 1;
        uv_timer_start(&srv->timer, on_timer, tick, tick);
        srv->timer_on = 1;
    } else if (!want && srv->timer_on) {
        uv_timer_stop(&srv->timer);
        srv->timer_on = 0;
    }
}

/* ---- moving connections between servers ------------------------------------
 *
 * A connection belongs to one server and so to one loop. To move it, the
 * source waits until its output is written, dups the socket and closes its
 * own handle; once the handle is closed, the connection (parser, buffers,
 * a request being moved) goes into the destination's inbox, and the
 * destination's loop opens a handle on the dup'd socket. No bytes are in
 * libuv's hands at either end, so none is lost or reordered. */

static void on_move_close(uv_handle_t *h);

static void server_unref(struct http_server *srv)
{
    if (__atomic_sub_fetch(&srv->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    pthread_mutex_destroy(&srv->inbox_mu);
    free(srv->listeners);
    free(srv);
}

static int inbox_push(struct http_server *dst, struct conn *c)
{
    int rv = 0;
    pthread_mutex_lock(&dst->inbox_mu);
    if (dst->inbox_shut) {
        rv = -ECANCELED;
    } else {
        c->inbox_next = NULL;
        if (dst->inbox_tail)
            dst->inbox_tail->inbox_next = c;
        else
            dst->inbox_head = c;
        dst->inbox_tail = c;
        uv_async_send(&dst->inbox_async);
    }
    pthread_mutex_unlock(&dst->inbox_mu);
    return rv;
}

/* One step of a move, from the source's loop: flush, wait for the write,
 * then hand the socket over. */
static void move_step(struct conn *c)
{
    if (c->in_ready)
        return; /* process_ready comes back here: the connection must be
                   off this server's ready list before it leaves */
    if (c->closing) {
        maybe_free(c);
        return;
    }
    conn_flush(c);
    if (c->closing) {
        maybe_free(c);
        return;
    }
    if (c->writing)
        return; /* on_write comes back here */
    int fd = -1;
    uv_os_fd_t ofd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &ofd) == 0)
        fd = fcntl(ofd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        conn_close(c, -ECONNRESET); /* drops a moved request */
        return;
    }
    c->move_fd = fd;
    c->in_transit = 1;
    list_remove(&c->timed);
    uv_close((uv_handle_t *)&c->tcp, on_move_close);
}

static void on_move_close(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct http_server *src = c->srv, *dst = c->move_to;
    list_remove(&c->all);
    conn_count(src, -1);
    /* Once pushed, c belongs to dst's thread: not touched again here. */
    if (inbox_push(dst, c) != 0) {
        close(c->move_fd);
        free_conn_memory(c);
    }
    server_unref(dst);
    maybe_finish_close(src);
}

/* On the destination's loop: give the connection a handle and dispatch
 * its moved request. */
static void adopt(struct http_server *srv, struct conn *c)
{
    c->srv = srv;
    c->req.server = srv;
    c->req.server_data = srv->cfg.data;
    c->req.moves = ++c->moves;
    c->moving = 0;
    c->in_transit = 0;
    c->in_ready = 0;
    c->reading = 0;
    list_init(&c->timed);
    list_push_tail(&srv->conns, &c->all);
    conn_count(srv, 1);
    int rv = uv_tcp_init(srv->loop, &c->tcp);
    if (rv != 0) {
        close(c->move_fd);
        list_remove(&c->all);
        conn_count(srv, -1);
        free_conn_memory(c);
        return;
    }
    c->tcp.data = c;
    if (uv_tcp_open(&c->tcp, c->move_fd) != 0) {
        close(c->move_fd);
        c->busy = 0;
        conn_close(c, 0);
        return;
    }
    srv->dispatched++;
    c->in_handler = 1;
    srv->cfg.handler(&c->req);
    c->in_handler = 0;
    if (c->closing)
        return;
    /* Read on while a request is busy, as a connection that never moved
     * does: a long poll must see its client go away. */
    if (!c->rd_eof && !c->shut && c->in.len <= kept_input_max(c) &&
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = 1;
    schedule_ready(c); /* flush, and parse pipelined input */
}

static void on_inbox(uv_async_t *h)
{
    struct http_server *srv = h->data;
    pthread_mutex_lock(&srv->inbox_mu);
    struct conn *c = srv->inbox_head;
    srv->inbox_head = srv->inbox_tail = NULL;
    pthread_mutex_unlock(&srv->inbox_mu);
    while (c != NULL) {
        struct conn *next = c->inbox_next;
        adopt(srv, c);
        c = next;
    }
}

/* Stops taking connections and closes those still queued. */
static void inbox_shut(struct http_server *srv)
{
    if (!srv->has_inbox)
        return;
    pthread_mutex_lock(&srv->inbox_mu);
    srv->inbox_shut = 1;
    struct conn *c = srv->inbox_head;
    srv->inbox_head = srv->inbox_tail = NULL;
    pthread_mutex_unlock(&srv->inbox_mu);
    while (c != NULL) {
        struct conn *next = c->inbox_next;
        close(c->move_fd);
        free_conn_memory(c);
        c = next;
    }
}

void http_request_move(struct http_request *req, struct http_server *dst)
{
    struct conn *c = CONTAINER_OF(req, struct conn, req);
    c->close_cb = NULL;
    c->nrh = 0;
    c->rh.len = 0;
    if (c->closing || c->nosock) {
        c->busy = 0; /* dropped: the connection is going anyway */
        schedule_ready(c);
        return;
    }
    c->moving = 1;
    c->move_to = dst;
    __atomic_add_fetch(&dst->refs, 1, __ATOMIC_RELAXED);
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    list_remove(&c->timed);
    schedule_ready(c);
}

/* ---- server lifecycle ------------------------------------------------------ */

int http_server_new(uv_loop_t *loop, const struct http_server_config *config,
                    struct http_server **out)
{
    if (config == NULL || config->handler == NULL || loop == NULL)
        return -EINVAL;
    struct http_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return -ENOMEM;
    srv->loop = loop;
    srv->cfg = *config;
    if (srv->cfg.max_body_bytes == 0)
        srv->cfg.max_body_bytes = HTTP_DEFAULT_MAX_BODY_BYTES;
    if (srv->cfg.max_header_bytes == 0)
        srv->cfg.max_header_bytes = HTTP_DEFAULT_MAX_HEADER_BYTES;
    if (srv->cfg.max_output_bytes == 0)
        srv->cfg.max_output_bytes = HTTP_DEFAULT_MAX_OUTPUT_BYTES;
    list_init(&srv->conns);
    list_init(&srv->idle);
    list_init(&srv->linger);
    if (pthread_mutex_init(&srv->inbox_mu, NULL) != 0) {
        free(srv);
        return -ENOMEM;
    }
    if (uv_async_init(loop, &srv->inbox_async, on_inbox) != 0) {
        pthread_mutex_destroy(&srv->inbox_mu);
        free(srv);
        return -ENOMEM;
    }
    srv->inbox_async.data = srv;
    srv->has_inbox = 1;
    srv->refs = 1;
    uv_idle_init(loop, &srv->ready_handle);
    srv->ready_handle.data = srv;
    uv_timer_init(loop, &srv->timer);
    srv->timer.data = srv;
    uv_unref((uv_handle_t *)&srv->timer);
    srv->open_handles = 3;
    *out = srv;
    return 0;
}

static void on_listener_close(uv_handle_t *h)
{
    struct listener *l = h->data;
    struct http_server *srv = l->srv;
    free(l);
    srv->open_handles--;
    maybe_finish_close(srv);
}

int http_server_listen(struct http_server *srv, const char *url,
                       int *port_out)
{
    struct http_url u;
    struct sockaddr_storage ss;
    int rv = http_url_parse(url, &u);
    if (rv != 0)
        return rv;
    if (strcmp(u.scheme, "http") != 0)
        return -EPROTONOSUPPORT;
    if (srv->closing)
        return -EINVAL;
    memset(&ss, 0, sizeof(ss));
    if (u.host[0] == 0) {
        rv = uv_ip6_addr("::", u.port, (struct sockaddr_in6 *)&ss);
    } else if (uv_ip4_addr(u.host, u.port, (struct sockaddr_in *)&ss) == 0) {
        rv = 0;
    } else if (uv_ip6_addr(u.host, u.port, (struct sockaddr_in6 *)&ss) == 0) {
        rv = 0;
    } else {
        /* A name: resolve synchronously (NULL callback), IPv4 first. */
        uv_getaddrinfo_t gai;
        struct addrinfo hints;
        memset(&hints, 0, sizeof(hints));
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_family = AF_UNSPEC;
        rv = uv_getaddrinfo(srv->loop, &gai, NULL, u.host, NULL, &hints);
        if (rv != 0)
            return -ENOENT;
        struct addrinfo *pick = NULL;
        for (struct addrinfo *a = gai.addrinfo; a; a = a->ai_next) {
            if (a->ai_family == AF_INET) {
                pick = a;
                break;
            }
            if (pick == NULL && a->ai_family == AF_INET6)
                pick = a;
        }
        if (pick != NULL) {
            memcpy(&ss, pick->ai_addr, pick->ai_addrlen);
            if (ss.ss_family == AF_INET)
                ((struct sockaddr_in *)&ss)->sin_port = htons(u.port);
            else
                ((struct sockaddr_in6 *)&ss)->sin6_port = htons(u.port);
        }
        uv_freeaddrinfo(gai.addrinfo);
        if (pick == NULL)
            return -ENOENT;
    }
    if (rv != 0)
        return -EINVAL;

    struct listener **ls = realloc(srv->listeners,
                                   (srv->nlisteners + 1) * sizeof(*ls));
    if (ls == NULL)
        return -ENOMEM;
    srv->listeners = ls;
    struct listener *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    l->srv = srv;
    rv = uv_tcp_init(srv->loop, &l->tcp);
    if (rv != 0) {
        free(l);
        return rv;
    }
    l->tcp.data = l;
    srv->listeners[srv->nlisteners++] = l;
    srv->open_handles++;
    /* From here on, failures close the handle; the listener slot is
     * released by on_listener_close. */
    rv = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&ss, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&l->tcp, 4096, on_connection);
    if (rv == 0 && port_out != NULL) {
        struct sockaddr_storage b;
        int blen = sizeof(b);
        rv = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&b, &blen);
        if (rv == 0)
            *port_out = ntohs(b.ss_family == AF_INET6
                                  ? ((struct sockaddr_in6 *)&b)->sin6_port
                                  : ((struct sockaddr_in *)&b)->sin_port);
    }
    if (rv != 0) {
        srv->nlisteners--;
        uv_close((uv_handle_t *)&l->tcp, on_listener_close);
        return rv;
    }
    return 0;
}

size_t http_server_connection_count(const struct http_server *srv)
{
    return __atomic_load_n(&srv->nconns, __ATOMIC_RELAXED);
}

static void on_server_handle_close(uv_handle_t *h)
{
    struct http_server *srv = h->data;
    srv->open_handles--;
    maybe_finish_close(srv);
}

static void maybe_finish_close(struct http_server *srv)
{
    if (!srv->closing || srv->nconns > 0 || srv->test_sink != NULL)
        return;
    if (!srv->handles_closing) {
        srv->handles_closing = 1;
        if (srv->timer_on) {
            uv_timer_stop(&srv->timer);
            srv->timer_on = 0;
        }
        uv_close((uv_handle_t *)&srv->ready_handle, on_server_handle_close);
        uv_close((uv_handle_t *)&srv->timer, on_server_handle_close);
        if (srv->has_inbox)
            uv_close((uv_handle_t *)&srv->inbox_async,
                     on_server_handle_close);
        return;
    }
    if (srv->open_handles > 0)
        return;
    if (srv->close_cb != NULL)
        srv->close_cb(srv);
    server_unref(srv);
}

void http_server_close(struct http_server *srv, http_server_close_cb cb)
{
    srv->closing = 1;
    srv->close_cb = cb;
    inbox_shut(srv);
    for (size_t i = 0; i < srv->nlisteners; i++)
        uv_close((uv_handle_t *)&srv->listeners[i]->tcp, on_listener_close);
    srv->nlisteners = 0;
    struct list *e = srv->conns.next;
    while (e != &srv->conns) {
        struct conn *c = CONTAINER_OF(e, struct conn, all);
        e = e->next;
        conn_close(c, -ECANCELED);
    }
    /* With no connection left, the last handles close now; otherwise the
     * last freed connection gets here. */
    maybe_finish_close(srv);
}

/* ---- socket-less entry point (fuzzing, tests) ----------------------------- */

int http_parse_for_test(const struct http_server_config *config,
                        const void *data, size_t len, struct http_buf *out)
{
    struct http_server *srv = calloc(1, sizeof(*srv));
    struct http_buf sink = {0};
    if (srv == NULL)
        return -ENOMEM;
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        free(srv);
        return -ENOMEM;
    }
    srv->cfg = *config;
    if (srv->cfg.max_body_bytes == 0)
        srv->cfg.max_body_bytes = HTTP_DEFAULT_MAX_BODY_BYTES;
    if (srv->cfg.max_header_bytes == 0)
        srv->cfg.max_header_bytes = HTTP_DEFAULT_MAX_HEADER_BYTES;
    if (srv->cfg.max_output_bytes == 0)
        srv->cfg.max_output_bytes = HTTP_DEFAULT_MAX_OUTPUT_BYTES;
    list_init(&srv->conns);
    list_init(&srv->idle);
    list_init(&srv->linger);
    srv->test_sink = &sink;
    c->srv = srv;
    c->nosock = 1;
    list_init(&c->all);
    list_init(&c->timed);
    list_push_tail(&srv->conns, &c->all);
    srv->nconns = 1;
    strcpy(c->remote_addr, "127.0.0.1:1");
    c->req.server_data = config->data;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;

    /* Feed in two pieces to exercise split callbacks. */
    int handled = 0;
    size_t first = len / 2;
    const char *d = data;
    size_t pieces[2][2] = {{0, first}, {first, len - first}};
    for (int i = 0; i < 2 && !c->closing; i++) {
        if (pieces[i][1] == 0)
            continue;
        if (c->in.len > 0 || c->busy) {
            (void)http_buf_append(&c->in, d + pieces[i][0], pieces[i][1]);
        } else {
            c->in_process = 1;
            size_t n = conn_parse(c, d + pieces[i][0], pieces[i][1]);
            c->in_process = 0;
            if (n < pieces[i][1])
                (void)http_buf_append(&c->in, d + pieces[i][0] + n,
                                      pieces[i][1] - n);
        }
        while (!c->closing && !c->busy && c->in.len > 0) {
            size_t before = c->in.len;
            conn_parse_kept(c);
            if (c->in.len == before)
                break;
        }
        process_ready(srv);
        conn_flush(c);
    }
    if (c->busy) {
        /* The handler left it unfinished: cancel it like a close. */
        conn_close(c, -ECANCELED);
        process_ready(srv);
        if (c->busy)
            finish_request(c);
    }
    handled = (int)srv->dispatched;
    if (!c->closing)
        conn_close(c, 0);
    process_ready(srv);
    srv->test_sink = NULL;
    if (out != NULL)
        *out = sink;
    else
        http_buf_free(&sink);
    free_conn(c);
    free(srv);
    return handled;
}
