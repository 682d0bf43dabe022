/* /v2/stats/self and /v2/stats/leader bodies, as etcd's v2stats encodes
 * them (json.Marshal, no trailing newline): Go's RFC 3339 nano time and
 * time.Duration strings included. */
#include <stdio.h>
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

int stats_leader_json(struct raftd *n, struct store_buf *b)
{
    char line[128];
    int len = snprintf(line, sizeof(line),
                       "{\"leader\":\"%s\",\"followers\":{}}",
                       n->member_id_hex);
    return store_buf_append(b, line, (size_t)len);
}
