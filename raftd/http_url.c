/* Go's net/url and mime rules as etcd's v2 API sees them through
 * r.ParseForm(): percent-decoding, query parsing, media types, error texts
 * (strconv.Quote), plus the http://host:port URL parsing raftd's flags use.
 * Pure functions over caller buffers; no I/O. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_int.h"

int http_buf_reserve(struct http_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return -ENOMEM;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int http_buf_append(struct http_buf *b, const void *d, size_t n)
{
    int rv = http_buf_reserve(b, n);
    if (rv != 0)
        return rv;
    if (n > 0)
        memcpy(b->p + b->len, d, n);
    b->len += n;
    return 0;
}

void http_buf_free(struct http_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void http_param_vec_free(struct http_param_vec *vec)
{
    free(vec->v);
    vec->v = NULL;
    vec->n = vec->cap = 0;
}

static int param_vec_push(struct http_param_vec *vec,
                          const struct http_param_off *po)
{
    if (vec->n == vec->cap) {
        size_t cap = vec->cap ? vec->cap * 2 : 8;
        struct http_param_off *v = realloc(vec->v, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        vec->v = v;
        vec->cap = cap;
    }
    vec->v[vec->n++] = *po;
    return 0;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Length of a valid UTF-8 sequence at s (n bytes available) and its rune,
 * or 0 if the bytes there are not valid UTF-8 (Go then quotes one byte as
 * \xNN). */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *r)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *r = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *r = v;
    return len;
}

size_t http_go_quote(char *out, size_t outsz, const char *s, size_t n)
{
    size_t o = 0;
    char tmp[16];
    if (outsz == 0)
        return 0;
#define PUT(str)                                                               \
    do {                                                                       \
        size_t l_ = strlen(str);                                               \
        if (o + l_ < outsz) {                                                  \
            memcpy(out + o, (str), l_);                                        \
            o += l_;                                                           \
        }                                                                      \
    } while (0)
    PUT("\"");
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        uint32_t r;
        size_t l = utf8_decode(u + i, n - i, &r);
        if (l == 0) {
            snprintf(tmp, sizeof(tmp), "\\x%02x", u[i]);
            PUT(tmp);
            i++;
            continue;
        }
        if (r == '"' || r == '\\') {
            tmp[0] = '\\', tmp[1] = (char)r, tmp[2] = 0;
        } else if (r >= 0x20 && r < 0x7F) {
            tmp[0] = (char)r, tmp[1] = 0;
        } else if (r == '\a') {
            strcpy(tmp, "\\a");
        } else if (r == '\b') {
            strcpy(tmp, "\\b");
        } else if (r == '\f') {
            strcpy(tmp, "\\f");
        } else if (r == '\n') {
            strcpy(tmp, "\\n");
        } else if (r == '\r') {
            strcpy(tmp, "\\r");
        } else if (r == '\t') {
            strcpy(tmp, "\\t");
        } else if (r == '\v') {
            strcpy(tmp, "\\v");
        } else if (r < 0x20 || r == 0x7F) {
            snprintf(tmp, sizeof(tmp), "\\x%02x", (unsigned)r);
        } else if ((r >= 0x80 && r <= 0x9F) || r == 0xAD) {
            /* Latin-1 controls and the soft hyphen are not printable in
             * Go's unicode tables; rarer non-printable runes beyond these
             * are kept verbatim (an approximation). */
            snprintf(tmp, sizeof(tmp), "\\u%04x", (unsigned)r);
        } else {
            memcpy(tmp, u + i, l);
            tmp[l] = 0;
        }
        PUT(tmp);
        i += l;
    }
    PUT("\"");
#undef PUT
    out[o] = 0;
    return o;
}

static void escape_error(char *err, const char *s, size_t n)
{
    if (err == NULL)
        return;
    static const char prefix[] = "invalid URL escape ";
    memcpy(err, prefix, sizeof(prefix));
    http_go_quote(err + sizeof(prefix) - 1,
                  HTTP_ERR_MSG_MAX - (sizeof(prefix) - 1), s, n);
}

int http_unescape(struct http_buf *arena, size_t src_off, size_t n, int mode,
                  size_t *out_off, size_t *out_len, char *err)
{
    /* Validate first so that nothing is appended on error, as Go returns
     * "" with the error. */
    const char *s = arena->p + src_off;
    for (size_t i = 0; i < n;) {
        if (s[i] == '%') {
            if (i + 2 >= n || hexval((unsigned char)s[i + 1]) < 0 ||
                hexval((unsigned char)s[i + 2]) < 0) {
                escape_error(err, s + i, n - i > 3 ? 3 : n - i);
                return -EINVAL;
            }
            i += 3;
        } else {
            i++;
        }
    }
    int rv = http_buf_reserve(arena, n + 1);
    if (rv != 0)
        return rv;
    s = arena->p + src_off; /* the reserve may have moved the arena */
    char *d = arena->p + arena->len;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (c == '%') {
            d[o++] = (char)(hexval((unsigned char)s[i + 1]) * 16 +
                            hexval((unsigned char)s[i + 2]));
            i += 3;
        } else {
            d[o++] = (c == '+' && mode == HTTP_UNESCAPE_QUERY) ? ' ' : c;
            i++;
        }
    }
    d[o] = 0;
    *out_off = arena->len;
    *out_len = o;
    arena->len += o + 1;
    return 0;
}

int http_parse_query(struct http_buf *arena, struct http_param_vec *vec,
                     size_t src_off, size_t n, char *err)
{
    int result = 0;
    size_t i = 0;
    while (i < n) {
        /* key, query, _ = strings.Cut(query, "&") */
        const char *s = arena->p + src_off;
        size_t start = i;
        while (i < n && s[i] != '&')
            i++;
        size_t end = i;
        if (i < n)
            i++; /* skip '&' */
        if (memchr(s + start, ';', end - start) != NULL) {
            /* Go overwrites any earlier error here (err = fmt.Errorf). */
            if (err != NULL)
                strcpy(err, "invalid semicolon separator in query");
            result = -EINVAL;
            continue;
        }
        if (end == start)
            continue;
        const char *eq = memchr(s + start, '=', end - start);
        size_t klen = eq ? (size_t)(eq - (s + start)) : end - start;
        size_t voff = eq ? (size_t)(eq - s) + 1 : end;
        struct http_param_off po;
        char *e1 = (result == 0 && err != NULL) ? err : NULL;
        int rv = http_unescape(arena, src_off + start, klen,
                               HTTP_UNESCAPE_QUERY, &po.key_off, &po.key_len,
                               e1);
        if (rv == -ENOMEM)
            return rv;
        if (rv != 0) {
            if (result == 0)
                result = rv;
            continue;
        }
        size_t mark = arena->len;
        rv = http_unescape(arena, src_off + voff, end - voff,
                           HTTP_UNESCAPE_QUERY, &po.val_off, &po.val_len, e1);
        if (rv == -ENOMEM)
            return rv;
        if (rv != 0) {
            arena->len = mark; /* nothing was added, kept for clarity */
            if (result == 0)
                result = rv;
            continue;
        }
        rv = param_vec_push(vec, &po);
        if (rv != 0)
            return rv;
    }
    return result;
}

static int is_tspecial(unsigned char c)
{
    /* A switch, not strchr: this runs for every byte of every response
     * header name (http_canonical_key). */
    switch (c) {
    case '(': case ')': case '<': case '>': case '@': case ',': case ';':
    case ':': case '\\': case '"': case '/': case '[': case ']': case '?':
    case '=':
        return 1;
    default:
        return 0;
    }
}

static int is_token_char(unsigned char c)
{
    return c > 0x20 && c < 0x7F && !is_tspecial(c);
}

/* mime.consumeToken: the longest token prefix of s[*i..n). */
static size_t consume_token(const char *s, size_t n, size_t *i)
{
    size_t start = *i;
    while (*i < n && is_token_char((unsigned char)s[*i]))
        (*i)++;
    return *i - start;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

const char *http_media_type(const char *v, size_t n, char *out, size_t outsz)
{
    out[0] = 0;
    /* base, _, _ := strings.Cut(v, ";"); mediatype = lower(trim(base)) */
    const char *semi = memchr(v, ';', n);
    size_t blen = semi ? (size_t)(semi - v) : n;
    size_t b0 = 0, b1 = blen;
    while (b0 < b1 && is_space(v[b0]))
        b0++;
    while (b1 > b0 && is_space(v[b1 - 1]))
        b1--;
    const char *mt = v + b0;
    size_t mtlen = b1 - b0;
    /* checkMediaTypeDisposition */
    size_t i = 0;
    if (consume_token(mt, mtlen, &i) == 0)
        return "mime: no media type";
    if (i < mtlen) {
        if (mt[i] != '/')
            return "mime: expected slash after first token";
        i++;
        if (consume_token(mt, mtlen, &i) == 0)
            return "mime: expected token after slash";
        if (i < mtlen)
            return "mime: unexpected content after media subtype";
    }
    size_t o = 0;
    for (size_t k = 0; k < mtlen && o + 1 < outsz; k++)
        out[o++] = (char)tolower((unsigned char)mt[k]);
    out[o] = 0;
    if (semi == NULL)
        return NULL;
    /* Parameters: each "; token=token|quoted-string". Go returns the
     * media type together with ErrInvalidMediaParameter on a bad one. The
     * RFC 2231 continuations and duplicate-name checks are not modelled. */
    size_t p = (size_t)(semi - v);
    while (p < n) {
        while (p < n && is_space(v[p]))
            p++;
        if (p >= n)
            break;
        if (v[p] != ';')
            return "mime: invalid media parameter";
        p++;
        while (p < n && is_space(v[p]))
            p++;
        if (p >= n)
            break; /* trailing ";" is accepted by Go */
        if (consume_token(v, n, &p) == 0)
            return "mime: invalid media parameter";
        while (p < n && is_space(v[p]))
            p++;
        if (p >= n || v[p] != '=')
            return "mime: invalid media parameter";
        p++;
        while (p < n && is_space(v[p]))
            p++;
        if (p < n && v[p] == '"') {
            p++;
            while (p < n && v[p] != '"') {
                if (v[p] == '\\' && p + 1 < n)
                    p++;
                p++;
            }
            if (p >= n)
                return "mime: invalid media parameter";
            p++;
        } else if (consume_token(v, n, &p) == 0) {
            return "mime: invalid media parameter";
        }
    }
    return NULL;
}

void http_canonical_key(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_token_char(c))
            return; /* Go leaves keys with invalid bytes untouched */
    }
    int upper = 1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (upper && c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        else if (!upper && c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        s[i] = c;
        upper = c == '-';
    }
}

const char *http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Request Entity Too Large";
    case 414: return "Request URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Requested Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return NULL;
    }
}

/* ---- config URLs ------------------------------------------------------- */

int http_url_parse(const char *url, struct http_url *out)
{
    memset(out, 0, sizeof(*out));
    const char *sep = strstr(url, "://");
    if (sep == NULL || sep == url || (size_t)(sep - url) >= sizeof(out->scheme))
        return -EINVAL;
    for (size_t i = 0; url + i < sep; i++)
        out->scheme[i] = (char)tolower((unsigned char)url[i]);
    if (strcmp(out->scheme, "http") != 0 && strcmp(out->scheme, "https") != 0)
        return -EINVAL;
    const char *auth = sep + 3;
    size_t alen = strcspn(auth, "/?#");
    const char *rest = auth + alen;
    if (!(rest[0] == 0 || (rest[0] == '/' && rest[1] == 0)))
        return -EINVAL;
    if (memchr(auth, '@', alen) != NULL)
        return -EINVAL;
    const char *host = auth, *colon;
    size_t hlen;
    if (alen > 0 && auth[0] == '[') {
        const char *rb = memchr(auth, ']', alen);
        if (rb == NULL)
            return -EINVAL;
        host = auth + 1;
        hlen = (size_t)(rb - host);
        colon = rb + 1;
        if (colon >= auth + alen || *colon != ':')
            return -EINVAL;
    } else {
        colon = memchr(auth, ':', alen);
        if (colon == NULL)
            return -EINVAL; /* etcd: "missing port in address" */
        if (memchr(colon + 1, ':', (size_t)(auth + alen - colon - 1)))
            return -EINVAL; /* IPv6 needs brackets */
        hlen = (size_t)(colon - auth);
    }
    if (hlen >= sizeof(out->host))
        return -EINVAL;
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)host[i];
        if (c <= 0x20 || c >= 0x7F)
            return -EINVAL;
    }
    memcpy(out->host, host, hlen);
    out->host[hlen] = 0;
    const char *p = colon + 1, *pend = auth + alen;
    if (p == pend || pend - p > 5)
        return -EINVAL;
    unsigned long port = 0;
    for (; p < pend; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port > 65535)
        return -EINVAL;
    out->port = (uint16_t)port;
    return 0;
}

int http_url_parse_list(const char *list, struct http_url **out, size_t *n)
{
    size_t count = 1;
    for (const char *c = list; *c; c++)
        count += *c == ',';
    struct http_url *urls = calloc(count, sizeof(*urls));
    if (urls == NULL)
        return -ENOMEM;
    int rv = 0;
    const char *item = list;
    char tmp[1024];
    for (size_t i = 0; i < count; i++) {
        size_t len = strcspn(item, ",");
        if (len == 0 || len >= sizeof(tmp)) {
            rv = -EINVAL;
            goto err_after_alloc;
        }
        memcpy(tmp, item, len);
        tmp[len] = 0;
        rv = http_url_parse(tmp, &urls[i]);
        if (rv != 0)
            goto err_after_alloc;
        item += len + 1;
    }
    *out = urls;
    *n = count;
    return 0;

err_after_alloc:
    free(urls);
    return rv;
}
