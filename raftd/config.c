/* raftd's command line: etcd 3.4's flags parsed by Go's flag-package rules,
 * ETCD_* environment fallbacks, etcd's defaults and validation, and the
 * member/cluster ids computed exactly as etcd's membership package does. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "raftd.h"

enum flag_kind {
    FLAG_STR,   /* char * */
    FLAG_BOOL,  /* int */
    FLAG_UINT,  /* unsigned */
    FLAG_U64,   /* uint64_t */
    FLAG_URLS,  /* struct raftd_urls */
    FLAG_LEVEL, /* enum raftd_log_level */
    FLAG_STATE, /* char *, "new" or "existing" */
    FLAG_IGN,   /* accepted and ignored: takes a value */
    FLAG_IGNB,  /* accepted and ignored: a bool */
};

struct flag_def {
    const char *name;
    enum flag_kind kind;
    size_t off; /* into struct raftd_config, unused for FLAG_IGN* */
};

#define CFG_OFF(f) offsetof(struct raftd_config, f)

/* Every flag etcd 3.4.23 defines (etcd -h), so an etcd command line is an
 * raftd command line. Only those with an offset do something. */
static const struct flag_def flag_defs[] = {
    {"name", FLAG_STR, CFG_OFF(name)},
    {"data-dir", FLAG_STR, CFG_OFF(data_dir)},
    {"wal-dir", FLAG_STR, CFG_OFF(wal_dir)},
    {"snapshot-count", FLAG_U64, CFG_OFF(snapshot_count)},
    {"heartbeat-interval", FLAG_UINT, CFG_OFF(heartbeat_ms)},
    {"election-timeout", FLAG_UINT, CFG_OFF(election_ms)},
    {"listen-peer-urls", FLAG_URLS, CFG_OFF(listen_peer_urls)},
    {"listen-client-urls", FLAG_URLS, CFG_OFF(listen_client_urls)},
    {"max-snapshots", FLAG_UINT, CFG_OFF(max_snapshots)},
    {"max-wals", FLAG_UINT, CFG_OFF(max_wals)},
    {"initial-advertise-peer-urls", FLAG_URLS,
     CFG_OFF(initial_advertise_peer_urls)},
    {"initial-cluster", FLAG_STR, CFG_OFF(initial_cluster)},
    {"initial-cluster-state", FLAG_STATE, CFG_OFF(initial_cluster_state)},
    {"initial-cluster-token", FLAG_STR, CFG_OFF(initial_cluster_token)},
    {"advertise-client-urls", FLAG_URLS, CFG_OFF(advertise_client_urls)},
    {"log-level", FLAG_LEVEL, CFG_OFF(log_level)},
    {"version", FLAG_BOOL, CFG_OFF(print_version)},
    {"force-new-cluster", FLAG_BOOL, CFG_OFF(force_new_cluster)},
    {"mount", FLAG_STR, CFG_OFF(mount)},
    {"idle-poll", FLAG_BOOL, CFG_OFF(idle_poll)},
    {"http-threads", FLAG_UINT, CFG_OFF(http_threads)},
    {"enable-v2", FLAG_IGNB, 0},
    {"initial-election-tick-advance", FLAG_IGNB, 0},
    {"quota-backend-bytes", FLAG_IGN, 0},
    {"backend-batch-interval", FLAG_IGN, 0},
    {"backend-batch-limit", FLAG_IGN, 0},
    {"max-txn-ops", FLAG_IGN, 0},
    {"max-request-bytes", FLAG_IGN, 0},
    {"max-concurrent-streams", FLAG_IGN, 0},
    {"grpc-keepalive-min-time", FLAG_IGN, 0},
    {"grpc-keepalive-interval", FLAG_IGN, 0},
    {"grpc-keepalive-timeout", FLAG_IGN, 0},
    {"discovery", FLAG_IGN, 0},
    {"discovery-fallback", FLAG_IGN, 0},
    {"discovery-proxy", FLAG_IGN, 0},
    {"discovery-srv", FLAG_IGN, 0},
    {"discovery-srv-name", FLAG_IGN, 0},
    {"strict-reconfig-check", FLAG_IGNB, 0},
    {"pre-vote", FLAG_IGNB, 0},
    {"auto-compaction-retention", FLAG_IGN, 0},
    {"auto-compaction-mode", FLAG_IGN, 0},
    {"cert-file", FLAG_IGN, 0},
    {"key-file", FLAG_IGN, 0},
    {"client-cert-auth", FLAG_IGNB, 0},
    {"client-crl-file", FLAG_IGN, 0},
    {"client-cert-allowed-hostname", FLAG_IGN, 0},
    {"trusted-ca-file", FLAG_IGN, 0},
    {"auto-tls", FLAG_IGNB, 0},
    {"peer-cert-file", FLAG_IGN, 0},
    {"peer-key-file", FLAG_IGN, 0},
    {"peer-client-cert-auth", FLAG_IGNB, 0},
    {"peer-trusted-ca-file", FLAG_IGN, 0},
    {"peer-cert-allowed-cn", FLAG_IGN, 0},
    {"peer-cert-allowed-hostname", FLAG_IGN, 0},
    {"peer-auto-tls", FLAG_IGNB, 0},
    {"peer-crl-file", FLAG_IGN, 0},
    {"cipher-suites", FLAG_IGN, 0},
    {"cors", FLAG_IGN, 0},
    {"host-whitelist", FLAG_IGN, 0},
    {"auth-token", FLAG_IGN, 0},
    {"bcrypt-cost", FLAG_IGN, 0},
    {"auth-token-ttl", FLAG_IGN, 0},
    {"enable-pprof", FLAG_IGNB, 0},
    {"metrics", FLAG_IGN, 0},
    {"listen-metrics-urls", FLAG_IGN, 0},
    {"logger", FLAG_IGN, 0},
    {"log-outputs", FLAG_IGN, 0},
    {"proxy", FLAG_IGN, 0},
    {"proxy-failure-wait", FLAG_IGN, 0},
    {"proxy-refresh-interval", FLAG_IGN, 0},
    {"proxy-dial-timeout", FLAG_IGN, 0},
    {"proxy-write-timeout", FLAG_IGN, 0},
    {"proxy-read-timeout", FLAG_IGN, 0},
    {"experimental-initial-corrupt-check", FLAG_IGNB, 0},
    {"experimental-corrupt-check-time", FLAG_IGN, 0},
    {"experimental-enable-v2v3", FLAG_IGN, 0},
    {"experimental-backend-bbolt-freelist-type", FLAG_IGN, 0},
    {"experimental-enable-lease-checkpoint", FLAG_IGNB, 0},
    {"experimental-compaction-batch-limit", FLAG_IGN, 0},
    {"experimental-peer-skip-client-san-verification", FLAG_IGNB, 0},
    {"experimental-watch-progress-notify-interval", FLAG_IGN, 0},
    {"experimental-warning-apply-duration", FLAG_IGN, 0},
    {"debug", FLAG_IGNB, 0},
    {"log-package-levels", FLAG_IGN, 0},
    {"config-file", FLAG_IGN, 0},
};
#define N_FLAGS (sizeof(flag_defs) / sizeof(flag_defs[0]))

#define DEFAULT_NAME "default"
#define DEFAULT_CLIENT_URL "http://localhost:2379"
#define DEFAULT_PEER_URL "http://localhost:2380"

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- SHA-1 (FIPS 180-4), only for etcd's ids ------------------------- */

static uint32_t rol32(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void sha1_block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80], a, b, c, d, e, f, k, t;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        if (i < 20)
            f = (b & c) | (~b & d), k = 0x5A827999u;
        else if (i < 40)
            f = b ^ c ^ d, k = 0x6ED9EBA1u;
        else if (i < 60)
            f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDCu;
        else
            f = b ^ c ^ d, k = 0xCA62C1D6u;
        t = rol32(a, 5) + f + e + k + w[i];
        e = d, d = c, c = rol32(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

void raftd_sha1(const void *data, size_t len, unsigned char out[20])
{
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u,
                     0xC3D2E1F0u};
    const unsigned char *p = data;
    unsigned char tail[128];
    size_t full = len / 64 * 64, rest = len - full, tn;
    uint64_t bits = (uint64_t)len * 8;

    for (size_t i = 0; i < full; i += 64)
        sha1_block(h, p + i);
    memset(tail, 0, sizeof(tail));
    if (rest)
        memcpy(tail, p + full, rest);
    tail[rest] = 0x80;
    tn = rest + 1 + 8 <= 64 ? 64 : 128;
    for (int i = 0; i < 8; i++)
        tail[tn - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t i = 0; i < tn; i += 64)
        sha1_block(h, tail + i);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8);
        out[4 * i + 3] = (unsigned char)h[i];
    }
}

static uint64_t be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t raftd_member_id(const char *const *urls, size_t n,
                         const char *token)
{
    unsigned char md[20];
    const char **sorted = NULL;
    char *buf = NULL;
    size_t len = strlen(token), off = 0;
    uint64_t id = 0;

    sorted = malloc((n ? n : 1) * sizeof(*sorted));
    if (sorted == NULL)
        return 0;
    for (size_t i = 0; i < n; i++) {
        sorted[i] = urls[i];
        len += strlen(urls[i]);
    }
    qsort(sorted, n, sizeof(*sorted), cmp_str);
    buf = malloc(len + 1);
    if (buf == NULL)
        goto out_free_sorted;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(sorted[i]);
        memcpy(buf + off, sorted[i], l);
        off += l;
    }
    memcpy(buf + off, token, strlen(token));
    raftd_sha1(buf, len, md);
    id = be64(md);
    free(buf);
out_free_sorted:
    free(sorted);
    return id;
}

uint64_t raftd_cluster_id(const uint64_t *ids, size_t n)
{
    unsigned char md[20];
    uint64_t *sorted;
    unsigned char *buf;
    uint64_t id = 0;

    sorted = malloc((n ? n : 1) * sizeof(*sorted));
    buf = malloc(n * 8 + 1);
    if (sorted == NULL || buf == NULL)
        goto out;
    memcpy(sorted, ids, n * sizeof(*ids));
    qsort(sorted, n, sizeof(*sorted), cmp_u64);
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++)
            buf[8 * i + (size_t)b] = (unsigned char)(sorted[i] >> (56 - 8 * b));
    raftd_sha1(buf, n * 8, md);
    id = be64(md);
out:
    free(buf);
    free(sorted);
    return id;
}

/* ---- value parsers --------------------------------------------------- */

/* Go's strconv.ParseBool. */
static int parse_bool(const char *s, int *out)
{
    static const char *const t[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const f[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < 6; i++) {
        if (strcmp(s, t[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcmp(s, f[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -EINVAL;
}

/* Go's strconv.ParseUint(s, 0, bits) without underscores: decimal, 0x
 * hex, leading-0 octal; no sign, no spaces. */
static int parse_uint(const char *s, int bits, uint64_t *out)
{
    char *end;
    unsigned long long v;
    if (*s == '\0' || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno != 0 || *end != '\0')
        return -EINVAL;
    if (bits < 64 && v >> bits)
        return -ERANGE;
    *out = v;
    return 0;
}

static void urls_free(struct raftd_urls *u)
{
    for (size_t i = 0; i < u->n; i++)
        free(u->v[i]);
    free(u->v);
    u->v = NULL;
    u->n = 0;
}

/* One URL as etcd's types.NewURLs accepts it: scheme http, https, unix or
 * unixs; "host:port" after "//"; no path. On error writes etcd's reason. */
int raftd_url_check(const char *s, char *why, size_t whylen)
{
    const char *p = strstr(s, "://"), *host, *colon;
    size_t slen;
    if (p == NULL) {
        set_err(why, whylen,
                "URL scheme must be http, https, unix, or unixs: %s", s);
        return -EINVAL;
    }
    slen = (size_t)(p - s);
    if (!((slen == 4 && strncmp(s, "http", 4) == 0) ||
          (slen == 5 && strncmp(s, "https", 5) == 0) ||
          (slen == 4 && strncmp(s, "unix", 4) == 0) ||
          (slen == 5 && strncmp(s, "unixs", 5) == 0))) {
        set_err(why, whylen,
                "URL scheme must be http, https, unix, or unixs: %s", s);
        return -EINVAL;
    }
    host = p + 3;
    colon = strrchr(host, ':');
    if (strchr(host, '/') != NULL && (colon == NULL || strchr(host, '/') <
                                                         colon)) {
        set_err(why, whylen,
                "URL address does not have the form \"host:port\": %s", s);
        return -EINVAL;
    }
    if (colon == NULL || colon[1] == '\0') {
        set_err(why, whylen,
                "URL address does not have the form \"host:port\": %s", s);
        return -EINVAL;
    }
    if (strchr(colon, '/') != NULL) {
        set_err(why, whylen, "URL must not contain a path: %s", s);
        return -EINVAL;
    }
    for (const char *c = colon + 1; *c; c++) {
        if (!isdigit((unsigned char)*c)) {
            set_err(why, whylen,
                    "URL address does not have the form \"host:port\": %s",
                    s);
            return -EINVAL;
        }
    }
    return 0;
}

/* Comma-separated list into *u (replacing it), sorted as etcd sorts. */
static int urls_parse(const char *s, struct raftd_urls *u, char *why,
                      size_t whylen)
{
    struct raftd_urls nu = {0, NULL};
    const char *p = s;
    int rv;

    if (*s == '\0') {
        set_err(why, whylen, "no valid URLs given");
        return -EINVAL;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char *one = strndup(p, len), **nv;
        if (one == NULL) {
            rv = -ENOMEM;
            goto err;
        }
        rv = raftd_url_check(one, why, whylen);
        if (rv != 0) {
            free(one);
            goto err;
        }
        nv = realloc(nu.v, (nu.n + 1) * sizeof(*nv));
        if (nv == NULL) {
            free(one);
            rv = -ENOMEM;
            goto err;
        }
        nu.v = nv;
        nu.v[nu.n++] = one;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    qsort(nu.v, nu.n, sizeof(*nu.v), cmp_str);
    urls_free(u);
    *u = nu;
    return 0;
err:
    urls_free(&nu);
    return rv;
}

static int urls_equal(const struct raftd_urls *a, const struct raftd_urls *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return 0;
    return 1;
}

/* etcd's checkBindURLs: a listen URL's host must be an IP or localhost. */
static int bind_urls_check(const struct raftd_urls *u, char *err,
                           size_t errlen)
{
    for (size_t i = 0; i < u->n; i++) {
        const char *host = strstr(u->v[i], "://") + 3;
        const char *colon = strrchr(host, ':');
        size_t hl = (size_t)(colon - host);
        int ok = 1;
        if (strncmp(u->v[i], "unix", 4) == 0)
            continue;
        if (hl == 9 && strncmp(host, "localhost", 9) == 0)
            continue;
        if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']')
            continue; /* IPv6 literal */
        for (size_t k = 0; k < hl; k++)
            if (!isdigit((unsigned char)host[k]) && host[k] != '.')
                ok = 0;
        if (!ok || hl == 0) {
            set_err(err, errlen,
                    "expected IP in URL for binding (%s)", u->v[i]);
            return -EINVAL;
        }
    }
    return 0;
}

/* ---- flag application ------------------------------------------------ */

static const struct flag_def *flag_find(const char *name, size_t len)
{
    for (size_t i = 0; i < N_FLAGS; i++)
        if (strlen(flag_defs[i].name) == len &&
            strncmp(flag_defs[i].name, name, len) == 0)
            return &flag_defs[i];
    return NULL;
}

static int is_bool(const struct flag_def *d)
{
    return d->kind == FLAG_BOOL || d->kind == FLAG_IGNB;
}

/* Set one flag from its textual value. why receives the reason on error
 * ("parse error", or a URL message). */
static int flag_set(struct raftd_config *cfg, const struct flag_def *d,
                    const char *val, char *why, size_t whylen)
{
    char *base = (char *)cfg;
    uint64_t u;
    int b, rv;

    switch (d->kind) {
    case FLAG_STR: {
        char **dst = (char **)(base + d->off), *copy = strdup(val);
        if (copy == NULL)
            return -ENOMEM;
        free(*dst);
        *dst = copy;
        return 0;
    }
    case FLAG_STATE: {
        char **dst = (char **)(base + d->off), *copy;
        if (strcmp(val, "new") != 0 && strcmp(val, "existing") != 0) {
            set_err(why, whylen, "invalid value");
            return -EINVAL;
        }
        copy = strdup(val);
        if (copy == NULL)
            return -ENOMEM;
        free(*dst);
        *dst = copy;
        return 0;
    }
    case FLAG_BOOL:
        if (parse_bool(val, &b) != 0) {
            set_err(why, whylen, "parse error");
            return -EINVAL;
        }
        *(int *)(base + d->off) = b;
        return 0;
    case FLAG_IGNB:
        if (parse_bool(val, &b) != 0) {
            set_err(why, whylen, "parse error");
            return -EINVAL;
        }
        return 0;
    case FLAG_UINT:
    case FLAG_U64:
        rv = parse_uint(val, d->kind == FLAG_UINT ? 32 : 64, &u);
        if (rv != 0) {
            set_err(why, whylen, rv == -ERANGE ? "value out of range"
                                               : "parse error");
            return -EINVAL;
        }
        if (d->kind == FLAG_UINT)
            *(unsigned *)(base + d->off) = (unsigned)u;
        else
            *(uint64_t *)(base + d->off) = u;
        return 0;
    case FLAG_URLS:
        return urls_parse(val, (struct raftd_urls *)(base + d->off), why,
                          whylen);
    case FLAG_LEVEL:
        if (raftd_log_level_parse(val,
                                  (enum raftd_log_level *)(base + d->off))) {
            set_err(why, whylen, "unknown level \"%s\"", val);
            return -EINVAL;
        }
        return 0;
    case FLAG_IGN:
        return 0;
    }
    return -EINVAL;
}

/* One HTTP thread per CPU, none on a single CPU (the loop thread alone
 * does best there). */
static unsigned default_http_threads(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus <= 1)
        return 0;
    return cpus > RAFTD_HTTP_THREADS_MAX ? RAFTD_HTTP_THREADS_MAX
                                         : (unsigned)cpus;
}

static int config_defaults(struct raftd_config *cfg)
{
    char why[16];
    memset(cfg, 0, sizeof(*cfg));
    cfg->name = strdup(DEFAULT_NAME);
    cfg->wal_dir = strdup("");
    cfg->initial_cluster_state = strdup("new");
    cfg->initial_cluster_token = strdup("etcd-cluster");
    if (!cfg->name || !cfg->wal_dir || !cfg->initial_cluster_state ||
        !cfg->initial_cluster_token)
        return -ENOMEM;
    cfg->snapshot_count = 100000; /* etcd 3.4's DefaultSnapshotCount */
    cfg->heartbeat_ms = 100;
    cfg->election_ms = 1000;
    cfg->max_snapshots = 5;
    cfg->max_wals = 5;
    cfg->idle_poll = 1;
    cfg->http_threads = default_http_threads();
    cfg->log_level = RAFTD_LOG_INFO;
    if (urls_parse(DEFAULT_CLIENT_URL, &cfg->listen_client_urls, why,
                   sizeof(why)) ||
        urls_parse(DEFAULT_CLIENT_URL, &cfg->advertise_client_urls, why,
                   sizeof(why)) ||
        urls_parse(DEFAULT_PEER_URL, &cfg->listen_peer_urls, why,
                   sizeof(why)) ||
        urls_parse(DEFAULT_PEER_URL, &cfg->initial_advertise_peer_urls, why,
                   sizeof(why)))
        return -ENOMEM;
    return 0;
}

/* "name=url1,url2" for cfg's name and advertised peer URLs: etcd's
 * InitialClusterFromName. Returned, free() it. */
static char *cluster_from_name(const struct raftd_config *cfg,
                               const char *name)
{
    size_t len = 1;
    char *s, *p;
    for (size_t i = 0; i < cfg->initial_advertise_peer_urls.n; i++)
        len += strlen(name) + 2 +
               strlen(cfg->initial_advertise_peer_urls.v[i]);
    s = malloc(len);
    if (s == NULL)
        return NULL;
    p = s;
    *p = '\0';
    for (size_t i = 0; i < cfg->initial_advertise_peer_urls.n; i++)
        p += sprintf(p, "%s%s=%s", i ? "," : "", name,
                     cfg->initial_advertise_peer_urls.v[i]);
    return s;
}

static int cmp_member(const void *a, const void *b)
{
    const struct raftd_member_cfg *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Parse "--initial-cluster" into members (grouping URLs by name, as
 * etcd's types.NewURLsMap does) and compute the ids. */
static int cluster_parse(struct raftd_config *cfg, char *err, size_t errlen)
{
    const char *p = cfg->initial_cluster;
    char why[256];
    uint64_t *ids = NULL;
    int rv = 0;

    if (*p == '\0') {
        set_err(err, errlen, "initial cluster unset and no discovery URL found");
        return -EINVAL;
    }
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char *one = strndup(p, len), *eq, **nv;
        struct raftd_member_cfg *m = NULL;
        if (one == NULL)
            return -ENOMEM;
        eq = strchr(one, '=');
        if (eq == NULL) {
            set_err(err, errlen, "missing '=' in initial cluster entry %s",
                    one);
            free(one);
            return -EINVAL;
        }
        *eq = '\0';
        rv = raftd_url_check(eq + 1, why, sizeof(why));
        if (rv != 0) {
            set_err(err, errlen, "%s", why);
            free(one);
            return rv;
        }
        for (size_t i = 0; i < cfg->n_members; i++)
            if (strcmp(cfg->members[i].name, one) == 0)
                m = &cfg->members[i];
        if (m == NULL) {
            struct raftd_member_cfg *nm =
                realloc(cfg->members, (cfg->n_members + 1) * sizeof(*nm));
            if (nm == NULL) {
                free(one);
                return -ENOMEM;
            }
            cfg->members = nm;
            m = &cfg->members[cfg->n_members++];
            memset(m, 0, sizeof(*m));
            m->name = strdup(one);
            if (m->name == NULL) {
                free(one);
                return -ENOMEM;
            }
        }
        nv = realloc(m->peer_urls.v, (m->peer_urls.n + 1) * sizeof(*nv));
        if (nv == NULL) {
            free(one);
            return -ENOMEM;
        }
        m->peer_urls.v = nv;
        m->peer_urls.v[m->peer_urls.n] = strdup(eq + 1);
        free(one);
        if (m->peer_urls.v[m->peer_urls.n] == NULL)
            return -ENOMEM;
        m->peer_urls.n++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    ids = malloc(cfg->n_members * sizeof(*ids));
    if (ids == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->n_members; i++) {
        struct raftd_member_cfg *m = &cfg->members[i];
        qsort(m->peer_urls.v, m->peer_urls.n, sizeof(char *), cmp_str);
        m->id = raftd_member_id((const char *const *)m->peer_urls.v,
                                m->peer_urls.n, cfg->initial_cluster_token);
        ids[i] = m->id;
    }
    cfg->cluster_id = raftd_cluster_id(ids, cfg->n_members);
    free(ids);
    qsort(cfg->members, cfg->n_members, sizeof(*cfg->members), cmp_member);
    for (size_t i = 0; i < cfg->n_members; i++) {
        if (strcmp(cfg->members[i].name, cfg->name) != 0)
            continue;
        if (!urls_equal(&cfg->members[i].peer_urls,
                        &cfg->initial_advertise_peer_urls)) {
            set_err(err, errlen,
                    "--initial-cluster has %s=%s but missing from "
                    "--initial-advertise-peer-urls=%s",
                    cfg->name, cfg->members[i].peer_urls.v[0],
                    cfg->initial_advertise_peer_urls.v[0]);
            return -EINVAL;
        }
        cfg->member_id = cfg->members[i].id;
        return 0;
    }
    set_err(err, errlen,
            "couldn't find local name \"%s\" in the initial cluster "
            "configuration",
            cfg->name);
    return -EINVAL;
}

/* ETCD_LISTEN_CLIENT_URLS for "listen-client-urls". */
static void env_name(const char *flag, char *out, size_t outlen)
{
    size_t i = 0;
    const char *pre = "ETCD_";
    while (*pre && i + 1 < outlen)
        out[i++] = *pre++;
    for (; *flag && i + 1 < outlen; flag++)
        out[i++] = *flag == '-' ? '_' : (char)toupper((unsigned char)*flag);
    out[i] = '\0';
}

static const char *env_lookup(char **envp, const char *key)
{
    size_t kl = strlen(key);
    if (envp == NULL)
        return NULL;
    for (char **e = envp; *e; e++)
        if (strncmp(*e, key, kl) == 0 && (*e)[kl] == '=')
            return *e + kl + 1;
    return NULL;
}

int raftd_config_parse(struct raftd_config *cfg, int argc, char **argv,
                       char **envp, char *err, size_t errlen,
                       int *exit_code)
{
    unsigned char seen[N_FLAGS];
    char why[512];
    int explicit_lcurls = 0, explicit_acurls = 0, explicit_cluster = 0;
    int i, rv;

    *exit_code = 2;
    memset(seen, 0, sizeof(seen));
    rv = config_defaults(cfg);
    if (rv != 0)
        return rv;

    /* Command line, as Go's flag.FlagSet.Parse: stops at the first
     * non-flag argument or after "--". */
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *name, *eq, *val = NULL;
        const struct flag_def *d;
        size_t nlen;

        if (a[0] != '-' || a[1] == '\0')
            break;
        name = a + 1;
        if (name[0] == '-') {
            name++;
            if (name[0] == '\0') {
                i++;
                break;
            }
        }
        if (name[0] == '-' || name[0] == '=') {
            set_err(err, errlen, "bad flag syntax: %s", a);
            return -EINVAL;
        }
        eq = strchr(name, '=');
        nlen = eq ? (size_t)(eq - name) : strlen(name);
        if (eq)
            val = eq + 1;
        d = flag_find(name, nlen);
        if (d == NULL) {
            if ((nlen == 1 && name[0] == 'h') ||
                (nlen == 4 && strncmp(name, "help", 4) == 0)) {
                cfg->print_help = 1;
                *exit_code = 0;
                return 0;
            }
            set_err(err, errlen, "flag provided but not defined: -%.*s",
                    (int)nlen, name);
            return -EINVAL;
        }
        if (val == NULL) {
            if (is_bool(d)) {
                val = "true";
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                set_err(err, errlen, "flag needs an argument: -%.*s",
                        (int)nlen, name);
                return -EINVAL;
            }
        }
        rv = flag_set(cfg, d, val, why, sizeof(why));
        if (rv != 0) {
            if (rv == -EINVAL)
                set_err(err, errlen, "invalid value \"%s\" for flag -%s: %s",
                        val, d->name, why);
            return rv;
        }
        seen[d - flag_defs] = 1;
    }
    *exit_code = 1;
    if (i < argc) {
        set_err(err, errlen, "'%s' is not a valid flag", argv[i]);
        return -EINVAL;
    }
    if (cfg->print_version)
        return 0;

    /* Environment, for flags not given on the command line. */
    for (size_t k = 0; k < N_FLAGS; k++) {
        char key[96];
        const char *val;
        env_name(flag_defs[k].name, key, sizeof(key));
        val = env_lookup(envp, key);
        if (val == NULL)
            continue;
        if (seen[k]) {
            /* etcd refuses to start here; the flag wins in raftd (as
             * DESIGN.md says) and main() warns. */
            if (cfg->shadowed_env == NULL)
                cfg->shadowed_env = strdup(key);
            continue;
        }
        rv = flag_set(cfg, &flag_defs[k], val, why, sizeof(why));
        if (rv != 0) {
            if (rv == -EINVAL)
                set_err(err, errlen, "invalid value \"%s\" for %s: %s", val,
                        key, why);
            return rv;
        }
        seen[k] = 1;
    }
    explicit_lcurls = seen[flag_find("listen-client-urls", 18) - flag_defs];
    explicit_acurls =
        seen[flag_find("advertise-client-urls", 21) - flag_defs];
    explicit_cluster = seen[flag_find("initial-cluster", 15) - flag_defs];

    /* etcd's validation, in its order. */
    if (explicit_lcurls && !explicit_acurls) {
        set_err(err, errlen, "--advertise-client-urls is required when "
                             "--listen-client-urls is set explicitly");
        return -EINVAL;
    }
    if (cfg->election_ms < 5 * cfg->heartbeat_ms) {
        set_err(err, errlen,
                "--election-timeout[%ums] should be at least as 5 times as "
                "--heartbeat-interval[%ums]",
                cfg->election_ms, cfg->heartbeat_ms);
        return -EINVAL;
    }
    if (cfg->heartbeat_ms == 0) {
        set_err(err, errlen, "--heartbeat-interval must be positive");
        return -EINVAL;
    }
    if (cfg->http_threads > RAFTD_HTTP_THREADS_MAX) {
        set_err(err, errlen, "--http-threads must be at most %u",
                RAFTD_HTTP_THREADS_MAX);
        return -EINVAL;
    }
    rv = bind_urls_check(&cfg->listen_client_urls, err, errlen);
    if (rv == 0)
        rv = bind_urls_check(&cfg->listen_peer_urls, err, errlen);
    if (rv != 0)
        return rv;

    if (cfg->data_dir == NULL || cfg->data_dir[0] == '\0') {
        free(cfg->data_dir);
        cfg->data_dir = malloc(strlen(cfg->name) + 6);
        if (cfg->data_dir == NULL)
            return -ENOMEM;
        sprintf(cfg->data_dir, "%s.etcd", cfg->name);
    }
    if (!explicit_cluster || cfg->initial_cluster == NULL) {
        free(cfg->initial_cluster);
        cfg->initial_cluster = cluster_from_name(cfg, DEFAULT_NAME);
        if (cfg->initial_cluster == NULL)
            return -ENOMEM;
    }
    if (strcmp(cfg->name, DEFAULT_NAME) != 0) {
        /* etcd: a renamed member with the default cluster line takes
         * the default line under its own name. */
        char *def = cluster_from_name(cfg, DEFAULT_NAME);
        if (def == NULL)
            return -ENOMEM;
        if (strcmp(def, cfg->initial_cluster) == 0) {
            free(cfg->initial_cluster);
            cfg->initial_cluster = cluster_from_name(cfg, cfg->name);
            if (cfg->initial_cluster == NULL) {
                free(def);
                return -ENOMEM;
            }
        }
        free(def);
    }
    rv = cluster_parse(cfg, err, errlen);
    if (rv != 0)
        return rv;
    *exit_code = 0;
    return 0;
}

void raftd_config_free(struct raftd_config *cfg)
{
    free(cfg->name);
    free(cfg->data_dir);
    free(cfg->wal_dir);
    urls_free(&cfg->listen_client_urls);
    urls_free(&cfg->advertise_client_urls);
    urls_free(&cfg->listen_peer_urls);
    urls_free(&cfg->initial_advertise_peer_urls);
    free(cfg->initial_cluster);
    free(cfg->initial_cluster_state);
    free(cfg->initial_cluster_token);
    free(cfg->mount);
    free(cfg->shadowed_env);
    for (size_t i = 0; i < cfg->n_members; i++) {
        free(cfg->members[i].name);
        urls_free(&cfg->members[i].peer_urls);
    }
    free(cfg->members);
    memset(cfg, 0, sizeof(*cfg));
}

void raftd_config_usage(FILE *out)
{
    fputs("Usage:\n\n"
          "  raftd [flags]\n"
          "    Start a raftd member (etcd v2 API compatible).\n\n"
          "  raftd --version\n"
          "    Show the version.\n\n"
          "  raftd -h | --help\n"
          "    Show the help information.\n\n"
          "Flags (one dash or two; ETCD_<FLAG> environment variables are\n"
          "used for flags not on the command line):\n"
          "  --name 'default'\n"
          "  --data-dir '${name}.etcd'\n"
          "  --wal-dir ''\n"
          "  --snapshot-count '100000'\n"
          "  --heartbeat-interval '100'\n"
          "  --election-timeout '1000'\n"
          "  --listen-peer-urls 'http://localhost:2380'\n"
          "  --listen-client-urls 'http://localhost:2379'\n"
          "  --max-snapshots '5'\n"
          "  --max-wals '5'\n"
          "  --initial-advertise-peer-urls 'http://localhost:2380'\n"
          "  --initial-cluster 'default=http://localhost:2380'\n"
          "  --initial-cluster-state 'new'\n"
          "  --initial-cluster-token 'etcd-cluster'\n"
          "  --advertise-client-urls 'http://localhost:2379'\n"
          "  --enable-v2 (accepted; the v2 API is always on)\n"
          "  --log-level 'info'\n"
          "  --mount '' (mount the tree with FUSE in-process)\n"
          "  --idle-poll 'true' (keep the CPUs polling while a lone write\n"
          "      is in flight)\n"
          "  --http-threads (one per CPU; threads that take the client\n"
          "      connections and answer plain reads, 0: none)\n"
          "Every other etcd 3.4 flag is accepted and ignored.\n",
          out);
}
