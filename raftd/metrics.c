/* /metrics in the Prometheus text exposition format (0.0.4): request
 * counts and latencies, WAL fsync latency, Raft index and term, watchers,
 * with etcd's metric names where etcd has one. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "node_int.h"

static const double bucket_le[METRICS_N_BUCKETS] = {
    0.0001, 0.0005, 0.001, 0.002, 0.004, 0.008,
    0.016,  0.032,  0.064, 0.128, 0.256, 0.512};

static const char *const method_class[8] = {"GET",  "PUT",    "POST",
                                            "DELETE", "HEAD", "OPTIONS",
                                            "QGET", "other"};

void metrics_observe(struct metrics_hist *h, double seconds)
{
    for (int i = 0; i < METRICS_N_BUCKETS; i++) {
        if (seconds <= bucket_le[i]) {
            h->buckets[i]++;
            break;
        }
    }
    h->count++;
    h->sum += seconds;
}

void api_metrics_count(struct raftd *n, const char *method)
{
    int i;
    for (i = 0; i < 7; i++)
        if (strcmp(method, method_class[i]) == 0)
            break;
    /* From the HTTP threads too. */
    __atomic_fetch_add(&n->metrics.http_requests[i], 1, __ATOMIC_RELAXED);
}

static int emit(struct store_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int emit(struct store_buf *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int len;
    va_start(ap, fmt);
    len = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (len < 0)
        return -1;
    if ((size_t)len >= sizeof(line))
        len = sizeof(line) - 1;
    return store_buf_append(b, line, (size_t)len);
}

static int emit_hist(struct store_buf *b, const char *name, const char *help,
                     const struct metrics_hist *h)
{
    uint64_t cum = 0;
    int rv = emit(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int i = 0; rv == 0 && i < METRICS_N_BUCKETS; i++) {
        cum += h->buckets[i];
        rv = emit(b, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_le[i],
                  (unsigned long long)cum);
    }
    if (rv == 0)
        rv = emit(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9g\n%s_count %llu\n",
                  name, (unsigned long long)h->count, name, h->sum, name,
                  (unsigned long long)h->count);
    return rv;
}

static int emit_gauge(struct store_buf *b, const char *name, const char *type,
                      const char *help, double v)
{
    return emit(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name,
                type, name, v);
}

int metrics_render(struct raftd *n, struct store_buf *b)
{
    const struct raftd_metrics *m = &n->metrics;
    int rv = emit(b, "# HELP etcd_http_received_total Counter of requests "
                     "received into the system (successfully parsed and "
                     "authd).\n# TYPE etcd_http_received_total counter\n");
    for (int i = 0; rv == 0 && i < 8; i++)
        rv = emit(b, "etcd_http_received_total{method=\"%s\"} %llu\n",
                  method_class[i],
                  (unsigned long long)__atomic_load_n(&m->http_requests[i],
                                                      __ATOMIC_RELAXED));
    if (rv == 0)
        rv = emit_hist(b, "etcd_http_successful_duration_seconds",
                       "Bucketed histogram of processing time (s) of "
                       "successfully handled writes (propose to apply).",
                       &m->put_latency);
    if (rv == 0)
        rv = emit_hist(b, "etcd_disk_wal_fsync_duration_seconds",
                       "The latency distributions of fsync called by WAL.",
                       &m->fsync_latency);
    if (rv == 0)
        rv = emit_hist(b, "etcd_disk_backend_commit_duration_seconds",
                       "Time to apply one ready batch of committed entries.",
                       &m->apply_latency);
    if (rv == 0)
        rv = emit_gauge(b, "etcd_server_has_leader", "gauge",
                        "Whether or not a leader exists. 1 is existence, 0 "
                        "is not.",
                        raft_leader(n->raft) ? 1 : 0);
    if (rv == 0)
        rv = emit_gauge(b, "etcd_server_is_leader", "gauge",
                        "Whether or not this member is a leader.",
                        raft_role(n->raft) == RAFT_LEADER ? 1 : 0);
    if (rv == 0)
        rv = emit_gauge(b, "etcd_server_proposals_committed_total", "gauge",
                        "The total number of consensus proposals committed.",
                        (double)raft_commit_index(n->raft));
    if (rv == 0)
        rv = emit_gauge(b, "etcd_server_proposals_applied_total", "gauge",
                        "The total number of consensus proposals applied.",
                        (double)raft_applied_index(n->raft));
    if (rv == 0)
        rv = emit_gauge(b, "etcd_server_proposals_pending", "gauge",
                        "The current number of pending proposals to commit.",
                        (double)n->n_waiters);
    if (rv == 0)
        rv = emit_gauge(b, "etcd_server_proposals_failed_total", "counter",
                        "The total number of failed proposals seen.",
                        (double)m->proposals_failed);
    if (rv == 0)
        rv = emit_gauge(b, "etcd_server_term", "gauge",
                        "The current Raft term.",
                        (double)raft_current_term(n->raft));
    if (rv == 0)
        rv = emit_gauge(b, "etcd_debugging_store_watchers", "gauge",
                        "Count of currently active watchers.",
                        (double)store_watcher_count(n->store));
    if (rv == 0)
        rv = emit_gauge(b, "etcd_debugging_store_index", "gauge",
                        "The v2 store index (X-Etcd-Index).",
                        (double)store_index(n->store));
    if (rv == 0)
        rv = emit_gauge(b, "etcfs_wal_batches_total", "counter",
                        "WAL appends (each one fdatasync at most).",
                        (double)m->wal_batches);
    if (rv == 0)
        rv = emit_gauge(b, "etcfs_wal_entries_total", "counter",
                        "Entries written to the WAL.",
                        (double)m->wal_entries);
    if (rv == 0)
        rv = emit_gauge(b, "etcd_debugging_snap_save_total_count", "counter",
                        "Snapshots saved.", (double)m->snapshots);
    if (rv == 0)
        rv = emit_gauge(b, "etcfs_http_connections", "gauge",
                        "Open client connections.",
                        (double)workers_connection_count(n));
    if (rv == 0)
        rv = emit_gauge(b, "etcfs_http_moved_to_threads_total", "counter",
                        "Client connections moved to an HTTP thread.",
                        (double)m->moves_to_threads);
    if (rv == 0)
        rv = emit_gauge(b, "etcfs_http_moved_to_loop_total", "counter",
                        "Client connections an HTTP thread moved back to "
                        "the loop thread.",
                        (double)__atomic_load_n(&m->moves_to_loop,
                                                __ATOMIC_RELAXED));
    return rv;
}
