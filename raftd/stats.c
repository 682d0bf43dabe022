/* /v2/stats/self and /v2/stats/leader bodies, as etcd's v2stats encodes
 * them (json.Marshal, no trailing newline): Go's RFC 3339 nano time,
 * time.Duration and float64 strings included; and the leader's follower
 * measurements behind /v2/stats/leader. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node_int.h"

/* time.Time.Format(time.RFC3339Nano) in UTC: fraction trimmed of zeros. */
static void go_time(int64_t ns, char *out, size_t outlen)
{
    time_t sec = (time_t)(ns / 1000000000);
    long frac = (long)(ns % 1000000000);
    struct tm tm;
    char fbuf[16] = "";
    int n;

    gmtime_r(&sec, &tm);
    if (frac) {
        snprintf(fbuf, sizeof(fbuf), ".%09ld", frac);
        n = (int)strlen(fbuf);
        while (fbuf[n - 1] == '0')
            fbuf[--n] = '\0';
    }
    snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d%sZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, fbuf);
}

/* "%llu.%0*llu" with trailing zeros (and a bare dot) removed. */
static int frac_fmt(char *out, size_t outlen, unsigned long long whole,
                    unsigned long long frac, int digits, const char *unit)
{
    char fbuf[32] = "";
    if (frac) {
        int n = snprintf(fbuf, sizeof(fbuf), ".%0*llu", digits, frac);
        while (n > 1 && fbuf[n - 1] == '0')
            fbuf[--n] = '\0';
    }
    return snprintf(out, outlen, "%llu%s%s", whole, fbuf, unit);
}

/* time.Duration.String(). */
void stats_go_duration(int64_t d, char *out, size_t outlen)
{
    unsigned long long u = d < 0 ? (unsigned long long)-d : (unsigned long long)d;
    const char *sign = d < 0 ? "-" : "";
    char body[64];

    if (u == 0) {
        snprintf(out, outlen, "0s");
        return;
    }
    if (u < 1000ULL) {
        snprintf(body, sizeof(body), "%lluns", u);
    } else if (u < 1000000ULL) {
        frac_fmt(body, sizeof(body), u / 1000, u % 1000, 3, "\xc2\xb5s");
    } else if (u < 1000000000ULL) {
        frac_fmt(body, sizeof(body), u / 1000000, u % 1000000, 6, "ms");
    } else {
        unsigned long long secs = u / 1000000000ULL;
        unsigned long long h = secs / 3600, m = secs / 60 % 60;
        char sbuf[40];
        frac_fmt(sbuf, sizeof(sbuf), secs % 60, u % 1000000000ULL, 9, "s");
        if (h)
            snprintf(body, sizeof(body), "%lluh%llum%s", h, m, sbuf);
        else if (m)
            snprintf(body, sizeof(body), "%llum%s", m, sbuf);
        else
            snprintf(body, sizeof(body), "%s", sbuf);
    }
    snprintf(out, outlen, "%s%s", sign, body);
}

int stats_self_json(struct raftd *n, struct store_buf *b)
{
    char start[48], lstart[48], up[64], leader[24], line[512];
    enum raft_role role = raft_role(n->raft);
    uint64_t lid = raft_leader(n->raft);
    int len, rv;

    go_time(n->start_time_ns, start, sizeof(start));
    go_time(n->leader_start_ns ? n->leader_start_ns : n->start_time_ns,
            lstart, sizeof(lstart));
    stats_go_duration(node_now_ns() - (n->leader_start_ns ? n->leader_start_ns
                                                          : n->start_time_ns),
                      up, sizeof(up));
    snprintf(leader, sizeof(leader), "%llx", (unsigned long long)lid);
    rv = store_buf_append(b, "{\"name\":", 8);
    if (rv == 0)
        rv = store_json_string(b, n->cfg->name, strlen(n->cfg->name));
    if (rv != 0)
        return rv;
    len = snprintf(line, sizeof(line),
                   ",\"id\":\"%s\",\"state\":\"%s\",\"startTime\":\"%s\","
                   "\"leaderInfo\":{\"leader\":\"%s\",\"uptime\":\"%s\","
                   "\"startTime\":\"%s\"},\"recvAppendRequestCnt\":%llu,"
                   "\"sendAppendRequestCnt\":%llu}",
                   n->member_id_hex, raft_role_name(role), start,
                   lid ? leader : "", up, lstart,
                   (unsigned long long)n->recv_append_cnt,
                   (unsigned long long)n->send_append_cnt);
    return store_buf_append(b, line, (size_t)len);
}

void stats_go_float(double v, char *out, size_t outlen)
{
    char e[40], digits[24];
    const char *p;
    int prec, exp10, nd = 0;
    size_t o = 0;
    double a = fabs(v);

    if (v == 0 || !isfinite(v)) {
        snprintf(out, outlen, "%s", v == 0 ? (signbit(v) ? "-0" : "0")
                                           : "null");
        return;
    }
    /* The fewest significant digits that read back as v. */
    for (prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof(e), "%.*e", prec, v);
        if (strtod(e, NULL) == v)
            break;
    }
    if (a < 1e-6 || a >= 1e21) {
        /* 'e' form; encoding/json writes e-07 as e-7. */
        size_t n = strlen(e);
        if (n >= 4 && e[n - 4] == 'e' && e[n - 3] == '-' && e[n - 2] == '0') {
            e[n - 2] = e[n - 1];
            e[n - 1] = '\0';
        }
        snprintf(out, outlen, "%s", e);
        return;
    }
    /* 'f' form from the digits and exponent of "d.ddde±x". */
    for (p = e; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9')
            digits[nd++] = *p;
    exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
#define PUT(c)                                                                \
    do {                                                                      \
        if (o + 1 < outlen)                                                   \
            out[o++] = (c);                                                   \
    } while (0)
    if (v < 0)
        PUT('-');
    if (exp10 < 0) {
        PUT('0');
        PUT('.');
        for (int z = -1; z > exp10; z--)
            PUT('0');
        for (int i = 0; i < nd; i++)
            PUT(digits[i]);
    } else {
        for (int i = 0; i <= exp10; i++)
            PUT(i < nd ? digits[i] : '0');
        if (nd > exp10 + 1) {
            PUT('.');
            for (int i = exp10 + 1; i < nd; i++)
                PUT(digits[i]);
        }
    }
#undef PUT
    if (outlen)
        out[o] = '\0';
}

/* ---- follower measurements ---------------------------------------------
 *
 * etcd times the encoding of each append onto its stream (so its
 * latencies are a few microseconds) and counts a failure only when a
 * pipelined POST fails. Our transport has no such step worth timing; the
 * leader instead times each round trip it can match: an append from when
 * it is queued to the first successful answer covering its last index
 * (which includes the follower's fsync), and a heartbeat to its answer.
 * A message the transport refuses (peer down, queue full) is a failure
 * and forgets the unanswered ones (they are lost with the connection). */

static struct stats_follower *follower_get(struct raftd *n, uint64_t id)
{
    struct stats_follower *f;
    for (size_t i = 0; i < n->n_followers; i++)
        if (n->followers[i].id == id)
            return &n->followers[i];
    f = realloc(n->followers, (n->n_followers + 1) * sizeof(*f));
    if (f == NULL)
        return NULL;
    n->followers = f;
    f = &f[n->n_followers++];
    memset(f, 0, sizeof(*f));
    f->id = id;
    f->minimum = 9223372036854775808.0; /* 1 << 63, etcd's start value */
    return f;
}

/* etcd's FollowerStats.Succ. */
static void follower_succ(struct stats_follower *f, int64_t ns)
{
    double total = (double)f->success * f->average;
    double total_sq = (double)f->success * f->average_square;
    double var;

    f->success++;
    f->current = (double)ns / 1e6;
    if (f->current > f->maximum)
        f->maximum = f->current;
    if (f->current < f->minimum)
        f->minimum = f->current;
    f->average = (total + f->current) / (double)f->success;
    f->average_square =
        (total_sq + f->current * f->current) / (double)f->success;
    var = f->average_square - f->average * f->average;
    f->stddev = sqrt(var > 0 ? var : 0);
}

void stats_follower_sent(struct raftd *n, const struct raft_message *m,
                         int rv)
{
    struct stats_follower *f;
    if (m->type != RAFT_MSG_APPEND && m->type != RAFT_MSG_HEARTBEAT)
        return;
    f = follower_get(n, m->to);
    if (f == NULL)
        return;
    if (rv != 0) {
        f->fail++;
        f->app_len = 0;
        f->heartbeat_ns = 0;
        return;
    }
    if (m->type == RAFT_MSG_HEARTBEAT) {
        if (f->heartbeat_ns == 0)
            f->heartbeat_ns = node_now_ns();
    } else if (f->app_len < STATS_APP_RING) {
        unsigned slot = (f->app_head + f->app_len++) % STATS_APP_RING;
        f->app[slot].index = m->index + m->n_entries;
        f->app[slot].ns = node_now_ns();
    }
}

void stats_follower_answer(struct raftd *n, const struct raft_message *m)
{
    struct stats_follower *f;
    int64_t now;
    if (m->type != RAFT_MSG_APPEND_RESP && m->type != RAFT_MSG_HEARTBEAT_RESP)
        return;
    if (raft_role(n->raft) != RAFT_LEADER || (f = follower_get(n, m->from)) == NULL)
        return;
    now = node_now_ns();
    if (m->type == RAFT_MSG_HEARTBEAT_RESP) {
        if (f->heartbeat_ns != 0)
            follower_succ(f, now - f->heartbeat_ns);
        f->heartbeat_ns = 0;
        return;
    }
    if (m->reject) {
        f->app_len = 0; /* the leader backs up and sends again */
        return;
    }
    while (f->app_len > 0 && f->app[f->app_head].index <= m->index) {
        follower_succ(f, now - f->app[f->app_head].ns);
        f->app_head = (f->app_head + 1) % STATS_APP_RING;
        f->app_len--;
    }
}

void stats_free(struct raftd *n)
{
    free(n->followers);
    n->followers = NULL;
    n->n_followers = 0;
}

static int id_hex_cmp(const void *a, const void *b)
{
    char x[24], y[24];
    snprintf(x, sizeof(x), "%llx", *(const unsigned long long *)a);
    snprintf(y, sizeof(y), "%llx", *(const unsigned long long *)b);
    return strcmp(x, y);
}

/* Every other voter, in the order of Go's map keys (their hex strings). */
int stats_leader_json(struct raftd *n, struct store_buf *b)
{
    struct raft_conf_state conf;
    unsigned long long ids[RAFT_MAX_VOTERS];
    size_t nids = 0;
    char line[640];
    int len, rv;

    raft_conf(n->raft, &conf);
    for (unsigned i = 0; i < conf.n_voters; i++)
        if (conf.voters[i] != n->member_id)
            ids[nids++] = conf.voters[i];
    qsort(ids, nids, sizeof(ids[0]), id_hex_cmp);
    len = snprintf(line, sizeof(line), "{\"leader\":\"%s\",\"followers\":{",
                   n->member_id_hex);
    rv = store_buf_append(b, line, (size_t)len);
    for (size_t i = 0; rv == 0 && i < nids; i++) {
        struct stats_follower *f = follower_get(n, ids[i]);
        char cur[32], avg[32], sd[32], mn[32], mx[32];
        if (f == NULL)
            return -ENOMEM;
        stats_go_float(f->current, cur, sizeof(cur));
        stats_go_float(f->average, avg, sizeof(avg));
        stats_go_float(f->stddev, sd, sizeof(sd));
        stats_go_float(f->minimum, mn, sizeof(mn));
        stats_go_float(f->maximum, mx, sizeof(mx));
        len = snprintf(line, sizeof(line),
                       "%s\"%llx\":{\"latency\":{\"current\":%s,\"average\":"
                       "%s,\"standardDeviation\":%s,\"minimum\":%s,"
                       "\"maximum\":%s},\"counts\":{\"fail\":%llu,"
                       "\"success\":%llu}}",
                       i ? "," : "", ids[i], cur, avg, sd, mn, mx,
                       (unsigned long long)f->fail,
                       (unsigned long long)f->success);
        rv = store_buf_append(b, line, (size_t)len);
    }
    return rv == 0 ? store_buf_append(b, "}}", 2) : rv;
}
