/* store_json.c - the v2 error table and the JSON encoders that reproduce
 * etcd's bytes: Go encoding/json string escaping, RFC 3339 times, omitempty
 * fields, the trailing newline of json.Encoder. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* ------------------------------------------------------------------ */
/* The error table                                                      */
/* ------------------------------------------------------------------ */

static const struct {
    int code;
    const char *message;
} error_table[] = {
    {100, "Key not found"},
    {101, "Compare failed"},
    {102, "Not a file"},
    {103, "Reached the max number of peers in the cluster"},
    {104, "Not a directory"},
    {105, "Key already exists"},
    {106, "The prefix of given key is a keyword in etcd"},
    {107, "Root is read only"},
    {108, "Directory not empty"},
    {109, "Peer address has existed"},
    {110, "The request requires user authentication"},
    {200, "Value is Required in POST form"},
    {201, "PrevValue is Required in POST form"},
    {202, "The given TTL in POST form is not a number"},
    {203, "The given index in POST form is not a number"},
    {204, "Value or TTL is required in POST form"},
    {205, "The given timeout in POST form is not a number"},
    {206, "Name is required in POST form"},
    {207, "Index or value is required"},
    {208, "Index and value cannot both be specified"},
    {209, "Invalid field"},
    {210, "Invalid POST form"},
    {211, "Value provided on refresh"},
    {212, "A TTL must be provided on refresh"},
    {300, "Raft Internal Error"},
    {301, "During Leader Election"},
    {400, "watcher is cleared due to etcd recovery"},
    {401, "The event in requested index is outdated and cleared"},
    {402, "Standby Internal Error"},
    {403, "Invalid active size"},
    {404, "Standby remove delay"},
    {500, "Client Internal Error"},
};

const char *store_error_message(int code)
{
    for (size_t i = 0; i < sizeof(error_table) / sizeof(error_table[0]); i++)
        if (error_table[i].code == code)
            return error_table[i].message;
    return "";
}

int store_error_http_status(int code)
{
    switch (code) {
    case STORE_ECODE_KEY_NOT_FOUND:
        return 404;
    case STORE_ECODE_NOT_FILE:
    case STORE_ECODE_DIR_NOT_EMPTY:
        return 403;
    case STORE_ECODE_UNAUTHORIZED:
        return 401;
    case STORE_ECODE_TEST_FAILED:
    case STORE_ECODE_NODE_EXIST:
        return 412;
    case STORE_ECODE_RAFT_INTERNAL:
    case STORE_ECODE_LEADER_ELECT:
        return 500;
    default:
        return 400;
    }
}

void store_error_clear(struct store_error *err)
{
    if (err == NULL)
        return;
    free(err->cause);
    memset(err, 0, sizeof(*err));
}

int store_error_set(struct store_error *err, int code, const char *cause,
                    uint64_t index)
{
    store_error_clear(err);
    err->code = code;
    err->index = index;
    if (cause && cause[0]) {
        size_t n = strlen(cause);
        err->cause = malloc(n + 1);
        if (err->cause == NULL)
            return -ENOMEM;
        memcpy(err->cause, cause, n + 1);
        err->cause_len = n;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Buffer                                                               */
/* ------------------------------------------------------------------ */

void store_buf_init(struct store_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void store_buf_free(struct store_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

int store_buf_append(struct store_buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap < b->len + n + 1)
            ncap *= 2;
        char *nd = realloc(b->data, ncap);
        if (nd == NULL)
            return -ENOMEM;
        b->data = nd;
        b->cap = ncap;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static int put(struct store_buf *b, const char *s)
{
    return store_buf_append(b, s, strlen(s));
}

/* Decimal digits by hand: two numbers go into every event, and snprintf
 * was a visible share of a GET's own CPU. */
static int put_u64(struct store_buf *b, uint64_t v)
{
    char t[24], *p = t + sizeof(t);
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return store_buf_append(b, p, (size_t)(t + sizeof(t) - p));
}

static int put_i64(struct store_buf *b, int64_t v)
{
    if (v >= 0)
        return put_u64(b, (uint64_t)v);
    int rv = store_buf_append(b, "-", 1);
    /* -(v + 1) + 1: INT64_MIN has no positive counterpart. */
    return rv ? rv : put_u64(b, (uint64_t)-(v + 1) + 1);
}

/* Length of the valid UTF-8 sequence at p (Go's utf8.DecodeRune rules:
 * no overlongs, no surrogates, <= U+10FFFF), or 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n, uint32_t *rune)
{
    unsigned char c = p[0];
    if (c >= 0xc2 && c <= 0xdf) {
        if (n < 2 || (p[1] & 0xc0) != 0x80)
            return 0;
        *rune = ((uint32_t)(c & 0x1f) << 6) | (p[1] & 0x3f);
        return 2;
    }
    if (c >= 0xe0 && c <= 0xef) {
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80;
        unsigned char hi = c == 0xed ? 0x9f : 0xbf;
        if (n < 3 || p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80)
            return 0;
        *rune = ((uint32_t)(c & 0x0f) << 12) | ((uint32_t)(p[1] & 0x3f) << 6) |
                (p[2] & 0x3f);
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80;
        unsigned char hi = c == 0xf4 ? 0x8f : 0xbf;
        if (n < 4 || p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80 ||
            (p[3] & 0xc0) != 0x80)
            return 0;
        *rune = ((uint32_t)(c & 0x07) << 18) |
                ((uint32_t)(p[1] & 0x3f) << 12) |
                ((uint32_t)(p[2] & 0x3f) << 6) | (p[3] & 0x3f);
        return 4;
    }
    return 0;
}

int store_json_string(struct store_buf *b, const void *data, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = data;
    int rv = store_buf_append(b, "\"", 1);
    size_t start = 0, i = 0;
    while (rv == 0 && i < n) {
        unsigned char c = p[i];
        if (c < 0x80) {
            if (c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' &&
                c != '&') {
                i++;
                continue;
            }
            rv = store_buf_append(b, p + start, i - start);
            char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
            size_t el = 2;
            switch (c) {
            case '"':
            case '\\':
                esc[1] = (char)c;
                break;
            case '\n':
                esc[1] = 'n';
                break;
            case '\r':
                esc[1] = 'r';
                break;
            case '\t':
                esc[1] = 't';
                break;
            default:
                memcpy(esc + 1, "u00", 3);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 0xf];
                el = 6;
            }
            if (rv == 0)
                rv = store_buf_append(b, esc, el);
            i++;
            start = i;
            continue;
        }
        uint32_t r = 0;
        size_t l = utf8_len(p + i, n - i, &r);
        if (l == 0) {
            rv = store_buf_append(b, p + start, i - start);
            if (rv == 0)
                rv = put(b, "\\ufffd");
            i++;
            start = i;
            continue;
        }
        if (r == 0x2028 || r == 0x2029) {
            rv = store_buf_append(b, p + start, i - start);
            if (rv == 0)
                rv = put(b, r == 0x2028 ? "\\u2028" : "\\u2029");
            i += l;
            start = i;
            continue;
        }
        i += l;
    }
    if (rv == 0)
        rv = store_buf_append(b, p + start, n - start);
    if (rv == 0)
        rv = store_buf_append(b, "\"", 1);
    return rv;
}

/* Go's time.Time.MarshalJSON in UTC: RFC 3339 with nanoseconds, trailing
 * zeros of the fraction trimmed (no dot at all when it is zero). */
static int put_time(struct store_buf *b, int64_t ns)
{
    int64_t sec = ns / 1000000000LL;
    int64_t frac = ns % 1000000000LL;
    if (frac < 0) {
        frac += 1000000000LL;
        sec--;
    }
    int64_t days = sec / 86400, rem = sec % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    /* Howard Hinnant's civil_from_days. */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y++;
    char t[64];
    int w = snprintf(t, sizeof(t), "\"%04d-%02d-%02dT%02d:%02d:%02d", (int)y,
                     (int)m, (int)d, (int)(rem / 3600), (int)(rem / 60 % 60),
                     (int)(rem % 60));
    if (frac) {
        int digits = 9;
        while (frac % 10 == 0) {
            frac /= 10;
            digits--;
        }
        w += snprintf(t + w, sizeof(t) - (size_t)w, ".%0*d", digits,
                      (int)frac);
    }
    snprintf(t + w, sizeof(t) - (size_t)w, "Z\"");
    return put(b, t);
}

/* NodeExtern: key, value, dir, expiration, ttl, nodes, modifiedIndex,
 * createdIndex, each omitted when empty (Go omitempty). */
static int put_node(struct store_buf *b, const struct store_node *x)
{
    int rv = put(b, "{");
    bool first = true;
#define SEP() (first ? (first = false, 0) : put(b, ","))
    if (rv == 0 && x->key && x->key[0]) {
        rv = SEP();
        if (rv == 0)
            rv = put(b, "\"key\":");
        if (rv == 0)
            rv = store_json_string(b, x->key, strlen(x->key));
    }
    if (rv == 0 && x->value) {
        rv = SEP();
        if (rv == 0)
            rv = put(b, "\"value\":");
        if (rv == 0)
            rv = store_json_string(b, x->value, x->value_len);
    }
    if (rv == 0 && x->dir) {
        rv = SEP();
        if (rv == 0)
            rv = put(b, "\"dir\":true");
    }
    if (rv == 0 && x->expiration) {
        rv = SEP();
        if (rv == 0)
            rv = put(b, "\"expiration\":");
        if (rv == 0)
            rv = put_time(b, x->expiration);
    }
    if (rv == 0 && x->ttl) {
        rv = SEP();
        if (rv == 0)
            rv = put(b, "\"ttl\":");
        if (rv == 0)
            rv = put_i64(b, x->ttl);
    }
    if (rv == 0 && x->n_nodes) {
        rv = SEP();
        if (rv == 0)
            rv = put(b, "\"nodes\":[");
        for (size_t i = 0; rv == 0 && i < x->n_nodes; i++) {
            if (i)
                rv = put(b, ",");
            if (rv == 0)
                rv = put_node(b, &x->nodes[i]);
        }
        if (rv == 0)
            rv = put(b, "]");
    }
    if (rv == 0 && x->modified_index) {
        rv = SEP();
        if (rv == 0)
            rv = put(b, "\"modifiedIndex\":");
        if (rv == 0)
            rv = put_u64(b, x->modified_index);
    }
    if (rv == 0 && x->created_index) {
        rv = SEP();
        if (rv == 0)
            rv = put(b, "\"createdIndex\":");
        if (rv == 0)
            rv = put_u64(b, x->created_index);
    }
#undef SEP
    if (rv == 0)
        rv = put(b, "}");
    return rv;
}

int store_event_json(struct store_buf *b, const struct store_event *ev)
{
    int rv = put(b, "{\"action\":");
    if (rv == 0) {
        const char *a = store_action_name(ev->action);
        rv = store_json_string(b, a, strlen(a));
    }
    if (rv == 0)
        rv = put(b, ",\"node\":");
    if (rv == 0)
        rv = put_node(b, &ev->node);
    if (rv == 0 && ev->prev_node) {
        rv = put(b, ",\"prevNode\":");
        if (rv == 0)
            rv = put_node(b, ev->prev_node);
    }
    if (rv == 0)
        rv = put(b, "}\n");
    return rv;
}

int store_event_json_novalue(struct store_buf *b,
                             const struct store_event *ev)
{
    switch (ev->action) {
    case STORE_ACTION_SET:
    case STORE_ACTION_COMPARE_AND_SWAP:
    case STORE_ACTION_CREATE:
    case STORE_ACTION_UPDATE: {
        const char *a = store_action_name(ev->action);
        int rv = put(b, "{\"action\":");
        if (rv == 0)
            rv = store_json_string(b, a, strlen(a));
        if (rv == 0)
            rv = put(b, "}\n");
        return rv;
    }
    default:
        return store_event_json(b, ev);
    }
}

bool store_event_is_created(const struct store_event *ev)
{
    return ev->action == STORE_ACTION_CREATE ||
           (ev->action == STORE_ACTION_SET && ev->prev_node == NULL);
}

int store_error_json(struct store_buf *b, const struct store_error *err)
{
    int rv = put(b, "{\"errorCode\":");
    if (rv == 0)
        rv = put_i64(b, err->code);
    if (rv == 0)
        rv = put(b, ",\"message\":");
    if (rv == 0) {
        const char *m = store_error_message(err->code);
        rv = store_json_string(b, m, strlen(m));
    }
    if (rv == 0 && err->cause_len) {
        rv = put(b, ",\"cause\":");
        if (rv == 0)
            rv = store_json_string(b, err->cause, err->cause_len);
    }
    if (rv == 0)
        rv = put(b, ",\"index\":");
    if (rv == 0)
        rv = put_u64(b, err->index);
    if (rv == 0)
        rv = put(b, "}\n");
    return rv;
}

int store_stats_json(struct store *s, struct store_buf *b)
{
    static const char *const names[ST_N] = {
        "getsSuccess",          "getsFail",
        "setsSuccess",          "setsFail",
        "deleteSuccess",        "deleteFail",
        "updateSuccess",        "updateFail",
        "createSuccess",        "createFail",
        "compareAndSwapSuccess", "compareAndSwapFail",
        "compareAndDeleteSuccess", "compareAndDeleteFail",
        "expireCount",
    };
    int rv = put(b, "{");
    for (int i = 0; rv == 0 && i < ST_N; i++) {
        char t[80];
        snprintf(t, sizeof(t), "%s\"%s\":%" PRIu64, i ? "," : "", names[i],
                 __atomic_load_n(&s->stats[i], __ATOMIC_RELAXED));
        rv = put(b, t);
    }
    if (rv == 0) {
        char t[48];
        snprintf(t, sizeof(t), ",\"watchers\":%zu}", s->watchers);
        rv = put(b, t);
    }
    return rv;
}
