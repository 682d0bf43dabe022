/* The node loop: one member on a libuv loop. Proposals become Raft entries;
 * every ready batch's entries go to the WAL in ONE append (group commit, one
 * fdatasync per batch); committed entries are applied to the store with the
 * time carried in the entry and answer their waiters by request id. Also
 * startup (snapshot load + WAL replay), SYNC/TTL proposals, snapshots and
 * WAL purge, linearizable reads (ReadIndex) and the orderly close. */
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "node_int.h"
#include "poller.h"
#include "request.pb-c.h"

/* ---- small helpers --------------------------------------------------- */

int64_t node_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t node_raft_index(const struct raftd *n)
{
    return raft_commit_index(n->raft);
}

uint64_t node_raft_term(const struct raftd *n)
{
    return raft_current_term(n->raft);
}

void node_store_wrlock(struct raftd *n)
{
    if (n->store_locking)
        pthread_rwlock_wrlock(&n->store_lock);
}

void node_store_rdlock(struct raftd *n)
{
    if (n->store_locking)
        pthread_rwlock_rdlock(&n->store_lock);
}

void node_store_unlock(struct raftd *n)
{
    if (n->store_locking)
        pthread_rwlock_unlock(&n->store_lock);
}

void node_publish_raft_state(struct raftd *n)
{
    __atomic_store_n(&n->pub_commit, raft_commit_index(n->raft),
                     __ATOMIC_RELAXED);
    __atomic_store_n(&n->pub_term, raft_current_term(n->raft),
                     __ATOMIC_RELAXED);
}

struct store *raftd_store(struct raftd *n)
{
    return n->store;
}

uint64_t raftd_member_id_get(const struct raftd *n)
{
    return n->member_id;
}

int raftd_is_ready(const struct raftd *n)
{
    return __atomic_load_n(&n->serving, __ATOMIC_ACQUIRE);
}

int raftd_client_port(const struct raftd *n)
{
    return n->client_port;
}

uint64_t raftd_cluster_id_get(const struct raftd *n)
{
    return n->cluster_id;
}

uint64_t raftd_leader(const struct raftd *n)
{
    return raft_leader(n->raft);
}

static char *path_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (p == NULL)
        return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

/* mkdir -p with mode 0700, as etcd's fileutil.TouchDirAll. */
static int mkdir_one(const char *path)
{
    char *p = strdup(path);
    int rv = 0;
    if (p == NULL)
        return -ENOMEM;
    for (char *c = p + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            rv = -errno;
        *c = '/';
        if (rv != 0)
            break;
    }
    if (rv == 0 && mkdir(p, 0700) != 0 && errno != EEXIST)
        rv = -errno;
    free(p);
    return rv;
}

static void wal_log_bridge(void *data, enum wal_log_level level,
                           const char *msg)
{
    struct raftd *n = data;
    static const enum raftd_log_level map[] = {
        RAFTD_LOG_DEBUG, RAFTD_LOG_INFO, RAFTD_LOG_WARN, RAFTD_LOG_ERROR};
    raftd_logf(&n->log, map[level <= WAL_LOG_ERROR ? level : WAL_LOG_ERROR],
               "wal", "%s", msg);
}

static void snap_log_bridge(void *data, enum snap_log_level level,
                            const char *msg)
{
    struct raftd *n = data;
    static const enum raftd_log_level map[] = {RAFTD_LOG_INFO, RAFTD_LOG_WARN,
                                               RAFTD_LOG_ERROR};
    raftd_logf(&n->log,
               map[level <= SNAP_LOG_ERROR ? level : SNAP_LOG_ERROR], "snap",
               "%s", msg);
}

/* ---- waiters ---------------------------------------------------------- */

static void waiter_insert(struct raftd *n, struct raftd_write_req *req)
{
    size_t b = (size_t)(req->id_ & (NODE_WAITER_BUCKETS - 1));
    req->next_ = n->waiters[b];
    n->waiters[b] = req;
    n->n_waiters++;
}

static struct raftd_write_req *waiter_take(struct raftd *n, uint64_t id)
{
    size_t b = (size_t)(id & (NODE_WAITER_BUCKETS - 1));
    for (struct raftd_write_req **p = &n->waiters[b]; *p; p = &(*p)->next_) {
        if ((*p)->id_ == id) {
            struct raftd_write_req *req = *p;
            *p = req->next_;
            n->n_waiters--;
            return req;
        }
    }
    return NULL;
}

static void waiters_fail_all(struct raftd *n, int status)
{
    for (size_t b = 0; b < NODE_WAITER_BUCKETS; b++) {
        while (n->waiters[b]) {
            struct raftd_write_req *req = n->waiters[b];
            n->waiters[b] = req->next_;
            n->n_waiters--;
            n->metrics.proposals_failed++;
            req->cb_(req, status, NULL, NULL);
        }
    }
}

static void reads_fail_all(struct raftd *n, int status)
{
    struct raftd_read_req *lists[2] = {n->reads_asked, n->reads_ready};
    n->reads_asked = n->reads_ready = NULL;
    for (int i = 0; i < 2; i++) {
        while (lists[i]) {
            struct raftd_read_req *r = lists[i];
            lists[i] = r->next_;
            r->cb_(r, status);
        }
    }
}

/* ---- proposals -------------------------------------------------------- */

static const char *const method_names[] = {"PUT",  "POST", "DELETE", "QGET",
                                           "GET",  "SYNC", "RENAME"};

static void node_publish(struct raftd *n);
static void node_transfer_check(struct raftd *n);
static void node_close_now(struct raftd *n);

/* A single voter publishes once it leads; a member of a larger cluster as
 * soon as it knows a leader (the publish is forwarded to it). */
static bool node_can_publish(const struct raftd *n)
{
    return n->single_voter ? raft_role(n->raft) == RAFT_LEADER
                           : raft_leader(n->raft) != 0;
}

/* Encode r as a raftd Request with id and time, and propose it. */
static int node_propose(struct raftd *n, const struct store_request *r,
                        uint64_t id, int64_t now)
{
    Etcfs__Request pb = ETCFS__REQUEST__INIT;
    unsigned char stackbuf[2048], *buf = stackbuf;
    size_t len;
    int rv;

    if ((unsigned)r->method >= sizeof(method_names) / sizeof(method_names[0]))
        return -EINVAL;
    pb.has_id = 1;
    pb.id = id;
    pb.method = (char *)method_names[r->method];
    pb.path = (char *)(r->path ? r->path : "");
    if (r->val_len > 0) {
        pb.has_val = 1;
        pb.val.data = (uint8_t *)r->val;
        pb.val.len = r->val_len;
    }
    if (r->dir)
        pb.has_dir = 1, pb.dir = 1;
    if (r->prev_value_len > 0) {
        pb.has_prev_value = 1;
        pb.prev_value.data = (uint8_t *)r->prev_value;
        pb.prev_value.len = r->prev_value_len;
    }
    if (r->prev_index)
        pb.has_prev_index = 1, pb.prev_index = r->prev_index;
    if (r->prev_exist >= 0)
        pb.has_prev_exist = 1, pb.prev_exist = r->prev_exist != 0;
    if (r->expiration)
        pb.has_expiration = 1, pb.expiration = r->expiration;
    if (r->recursive)
        pb.has_recursive = 1, pb.recursive = 1;
    if (r->sorted)
        pb.has_sorted = 1, pb.sorted = 1;
    if (r->refresh)
        pb.has_refresh = 1, pb.refresh = 1;
    pb.has_time = 1;
    pb.time = now;
    if (r->new_path)
        pb.new_path = (char *)r->new_path;

    len = etcfs__request__get_packed_size(&pb);
    if (len > sizeof(stackbuf)) {
        buf = malloc(len);
        if (buf == NULL)
            return -ENOMEM;
    }
    etcfs__request__pack(&pb, buf);
    /* On the leader this is raft_propose(); a follower sends it to the
     * leader, and the waiter matches the applied entry by request id. */
    rv = raft_forward(n->raft, RAFT_ENTRY_NORMAL, buf, len);
    if (buf != stackbuf)
        free(buf);
    return rv;
}

int raftd_write(struct raftd *n, struct raftd_write_req *req,
                const struct store_request *r, raftd_write_cb cb)
{
    int rv;
    if (n->closing)
        return -ECANCELED;
    if (n->wal_error)
        return -EIO;
    /* Our attribute entries go before any client write, as in etcd
     * (whose member publishes before it serves clients). */
    if (!n->published && node_can_publish(n))
        node_publish(n);
    req->id_ = ++n->next_req_id;
    req->cb_ = cb;
    req->start_ns_ = node_now_ns();
    rv = node_propose(n, r, req->id_, req->start_ns_);
    if (rv != 0) {
        if (rv == -RAFT_ENOTLEADER || rv == -RAFT_ENOLEADER ||
            rv == -RAFT_ETRANSFER)
            return -EAGAIN;
        return rv < 0 && rv > -4096 ? rv : -EIO;
    }
    waiter_insert(n, req);
    node_kick(n);
    return 0;
}

int raftd_read_index(struct raftd *n, struct raftd_read_req *req,
                     raftd_read_cb cb)
{
    int rv;
    if (n->closing)
        return -ECANCELED;
    req->ctx_ = ++n->next_read_ctx;
    req->cb_ = cb;
    req->index_ = 0;
    rv = raft_read_index(n->raft, req->ctx_);
    if (rv != 0)
        return rv == -RAFT_ENOLEADER ? -EAGAIN : (rv > -4096 ? rv : -EIO);
    req->next_ = n->reads_asked;
    n->reads_asked = req;
    node_kick(n);
    return 0;
}

/* Internal writes (member attributes, cluster version, SYNC): no waiter. */
static void node_propose_internal(struct raftd *n,
                                  const struct store_request *r)
{
    int rv = node_propose(n, r, 0, node_now_ns());
    if (rv == 0 && r->method != STORE_METHOD_SYNC &&
        raft_role(n->raft) == RAFT_LEADER)
        n->publish_index = raft_last_index(n->raft);
    if (rv == 0)
        node_kick(n);
    else
        raftd_logf(&n->log, RAFTD_LOG_WARN, "raftd",
                   "internal proposal %s %s failed: %s",
                   method_names[r->method], r->path ? r->path : "",
                   raft_strerror(rv));
}

/* etcd's first entries after a fresh start put each member's raft
 * attributes (when the bootstrap conf change entries apply, see
 * node_apply_conf), then the member's published attributes and the cluster
 * version into the store's internal tree, so its first user key gets index
 * 4 at raft index 5. We do the same under the hidden "/_etcfs" directory so
 * indexes match etcd's answer for answer; after a restart etcd publishes
 * the attributes again, and so do we. */
static void node_publish(struct raftd *n)
{
    if (n->published)
        return;
    const struct raftd_config *cfg = n->cfg;
    struct store_request r;
    char path[96];
    struct store_buf b;

    store_buf_init(&b);
    memset(&r, 0, sizeof(r));
    r.method = STORE_METHOD_PUT;
    r.prev_exist = -1;
    store_buf_append(&b, "{\"name\":", 8);
    store_json_string(&b, cfg->name, strlen(cfg->name));
    store_buf_append(&b, ",\"clientURLs\":[", 15);
    for (size_t i = 0; i < cfg->advertise_client_urls.n; i++) {
        const char *u = cfg->advertise_client_urls.v[i];
        if (i)
            store_buf_append(&b, ",", 1);
        store_json_string(&b, u, strlen(u));
    }
    store_buf_append(&b, "]}", 2);
    snprintf(path, sizeof(path), "/_etcfs/members/%s/attributes",
             n->member_id_hex);
    r.path = path;
    r.val = b.data;
    r.val_len = b.len;
    n->publish_ns = node_now_ns();
    node_propose_internal(n, &r);
    if (n->fresh && raft_role(n->raft) == RAFT_LEADER) {
        r.path = "/_etcfs/version";
        r.val = RAFTD_CLUSTER_VERSION;
        r.val_len = strlen(RAFTD_CLUSTER_VERSION);
        node_propose_internal(n, &r);
    }
    store_buf_free(&b);
    n->published = true;
    raftd_logf(&n->log, RAFTD_LOG_INFO, "raftd",
               "published {Name:%s ClientURLs:[%s]} to cluster %s",
               cfg->name,
               cfg->advertise_client_urls.n ? cfg->advertise_client_urls.v[0]
                                            : "",
               n->cluster_id_hex);
}

/* ---- persistence ------------------------------------------------------ */

struct node_batch {
    struct wal_append_req req;
    struct raftd *n;
    raft_index persist_index;
    raft_term persist_term;
    double start;
    /* The ready batch, kept when it has messages that may only leave once
     * it is durable (votes, append responses). */
    struct raft_ready rd;
    bool has_rd;
};

static int meta_decode(const unsigned char *p, size_t len,
                       struct raft_snapshot_meta *m);

/* A snapshot file on its way to one peer: read from the file and queued
 * piece by piece as the peer's socket takes them, then the
 * RAFT_MSG_SNAPSHOT; never more than NODE_SNAP_WINDOW bytes of it in
 * memory. */
struct node_snap_send {
    struct node_snap_send *next;
    uint64_t to;
    uint64_t conn; /* peer_transport_conn when it started */
    struct snap_reader *sr;
    struct raft_message msg;
    uint64_t off, total;
    unsigned char buf[NODE_SNAP_CHUNK]; /* the piece being read */
};

static void snap_send_free(struct node_snap_send *s)
{
    snap_reader_free(s->sr);
    free(s);
}

/* The core wants snapshot m->snapshot.index sent to m->to: stream our
 * newest snapshot file (replacing the message's meta with the file's if a
 * newer one was saved meanwhile, as raft.h requires), then the message.
 * The core hears how it went when the message is queued or the transfer
 * fails (node_snap_pump); a request while one is under way for that peer
 * is dropped, the core asks again. */
static void node_send_snapshot(struct raftd *n, const struct raft_message *m)
{
    struct node_snap_send *s;
    struct stat st;
    const void *meta;
    size_t ml;
    int rv;

    for (s = n->snap_sends; s != NULL; s = s->next)
        if (s->to == m->to)
            return;
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        raft_report_snapshot(n->raft, m->to, false);
        return;
    }
    s->to = m->to;
    s->msg = *m;
    s->conn = peer_transport_conn(n->peers, m->to);
    rv = s->conn == 0 ? -ENOTCONN : snap_reader_open(&n->snap_opts, &s->sr);
    if (rv == 0) {
        meta = snap_reader_meta(s->sr, &ml);
        rv = meta_decode(meta, ml, &s->msg.snapshot);
    }
    if (rv == 0 && stat(snap_reader_path(s->sr), &st) != 0)
        rv = -errno;
    if (rv != 0) {
        raftd_logf(&n->log, RAFTD_LOG_WARN, "raft",
                   "cannot send a snapshot to peer %llx: %s",
                   (unsigned long long)m->to, strerror(-rv));
        if (s->sr)
            snap_reader_free(s->sr);
        free(s);
        raft_report_snapshot(n->raft, m->to, false);
        return;
    }
    s->total = (uint64_t)st.st_size;
    s->next = n->snap_sends;
    n->snap_sends = s;
    raftd_logf(&n->log, RAFTD_LOG_INFO, "raft",
               "sending snapshot at index %llu (%llu bytes) to peer %llx",
               (unsigned long long)s->msg.snapshot.index,
               (unsigned long long)s->total, (unsigned long long)m->to);
}

/* Queue the next pieces of one transfer while its peer has room (the
 * window bounds a turn's work to about two pieces). 1: done (the message
 * is queued), 0: more to send, negative errno: failed. */
static int snap_send_step(struct raftd *n, struct node_snap_send *s)
{
    unsigned char *buf = s->buf;
    if (peer_transport_conn(n->peers, s->to) != s->conn)
        return -ECONNRESET; /* what was queued went with the connection */
    while (s->off < s->total &&
           peer_transport_pending(n->peers, s->to) < NODE_SNAP_WINDOW) {
        struct peer_snap_piece piece;
        size_t got = 0;
        int rv;
        while (got < NODE_SNAP_CHUNK && s->off + got < s->total) {
            size_t n_read = 0;
            rv = snap_reader_read_file(s->sr, buf + got,
                                       NODE_SNAP_CHUNK - got, &n_read);
            if (rv != 0)
                return rv;
            if (n_read == 0)
                return -EIO; /* shorter than its size said */
            got += n_read;
        }
        piece.term = s->msg.snapshot.term;
        piece.index = s->msg.snapshot.index;
        piece.offset = s->off;
        piece.total = s->total;
        piece.data = buf;
        piece.len = got;
        rv = peer_transport_send_snapshot(n->peers, s->to, &piece);
        if (rv != 0)
            return rv;
        s->off += got;
    }
    if (s->off < s->total)
        return 0;
    return peer_transport_send(n->peers, &s->msg) == 0 ? 1 : -ENOBUFS;
}

/* Every loop turn, before the transport's flush: move the snapshot
 * transfers on. */
static void node_snap_pump(struct raftd *n)
{
    struct node_snap_send **pp = &n->snap_sends;
    while (*pp != NULL) {
        struct node_snap_send *s = *pp;
        int rv = snap_send_step(n, s);
        if (rv == 0) {
            pp = &s->next;
            continue;
        }
        raftd_logf(&n->log, rv > 0 ? RAFTD_LOG_INFO : RAFTD_LOG_WARN, "raft",
                   "snapshot at index %llu to peer %llx: %s",
                   (unsigned long long)s->msg.snapshot.index,
                   (unsigned long long)s->to,
                   rv > 0 ? "sent" : strerror(-rv));
        raft_report_snapshot(n->raft, s->to, rv > 0);
        *pp = s->next;
        snap_send_free(s);
    }
}

/* After the flush: a transfer whose socket took everything has room for
 * more now, and no write completion will come to wake the loop, so keep
 * the loop turning; one whose socket is full waits for the completion. */
static void node_snap_keep_going(struct raftd *n)
{
    for (struct node_snap_send *s = n->snap_sends; s != NULL; s = s->next)
        if (peer_transport_pending(n->peers, s->to) < NODE_SNAP_WINDOW) {
            node_kick(n);
            return;
        }
}

static void snap_sends_free(struct raftd *n)
{
    while (n->snap_sends != NULL) {
        struct node_snap_send *s = n->snap_sends;
        n->snap_sends = s->next;
        snap_send_free(s);
    }
}

static void recv_snap_reset(struct raftd *n)
{
    if (n->recv_w != NULL)
        snap_writer_abort(n->recv_w);
    n->recv_w = NULL;
    n->recv_off = n->recv_total = 0;
    n->recv_w_term = n->recv_w_index = 0;
    n->recv_snap_term = n->recv_snap_index = 0;
}

/* A piece of a snapshot file the leader streams: written to a temp file
 * as it comes. A piece out of order (a connection was lost) drops the
 * transfer; the leader starts over when its core asks again. */
void node_recv_snapshot(void *data, uint64_t from,
                        const struct peer_snap_piece *s)
{
    struct raftd *n = data;
    int rv;
    (void)from;
    if (n->closing)
        return;
    if (s->offset == 0) {
        recv_snap_reset(n);
        rv = snap_writer_new_file(&n->snap_opts, s->term, s->index,
                                  &n->recv_w);
        if (rv != 0) {
            n->recv_w = NULL;
            raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                       "cannot receive the snapshot at index %llu: %s",
                       (unsigned long long)s->index, strerror(-rv));
            return;
        }
        n->recv_w_term = s->term;
        n->recv_w_index = s->index;
        n->recv_total = s->total;
    }
    if (n->recv_w == NULL || s->term != n->recv_w_term ||
        s->index != n->recv_w_index || s->total != n->recv_total ||
        s->offset != n->recv_off) {
        if (n->recv_w != NULL)
            raftd_logf(&n->log, RAFTD_LOG_WARN, "raftd",
                       "snapshot at index %llu: piece at offset %llu, "
                       "expected %llu; dropped the transfer",
                       (unsigned long long)n->recv_w_index,
                       (unsigned long long)s->offset,
                       (unsigned long long)n->recv_off);
        recv_snap_reset(n);
        return;
    }
    rv = s->len ? snap_writer_write_file(n->recv_w, s->data, s->len) : 0;
    if (rv != 0) {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                   "writing the snapshot at index %llu: %s",
                   (unsigned long long)s->index, strerror(-rv));
        recv_snap_reset(n);
        return;
    }
    n->recv_off += s->len;
    if (n->recv_off == n->recv_total) {
        n->recv_snap_term = s->term;
        n->recv_snap_index = s->index;
    }
}

/* Hand messages to the peer transport (peer.c), which writes them at the
 * end of this loop turn. A cluster of one sends none. A message the
 * transport cannot take (peer down, queue full) is dropped and the peer
 * reported unreachable, which Raft tolerates (it probes again). */
static void node_send(struct raftd *n, const struct raft_message *msgs,
                      size_t count)
{
    for (size_t i = 0; i < count; i++) {
        const struct raft_message *m = &msgs[i];
        int rv;
        if (n->peers == NULL || m->to == n->member_id) {
            raftd_logf(&n->log, RAFTD_LOG_DEBUG, "raft",
                       "no transport: dropped message type %d to %llx",
                       (int)m->type, (unsigned long long)m->to);
            continue;
        }
        if (m->type == RAFT_MSG_SNAPSHOT) {
            node_send_snapshot(n, m);
            continue;
        }
        rv = peer_transport_send(n->peers, m);
        stats_follower_sent(n, m, rv);
        if (rv != 0)
            raft_report_unreachable(n->raft, m->to);
        else if (m->type == RAFT_MSG_APPEND)
            n->send_append_cnt++;
    }
}

/* A message from a peer (peer.c). */
void node_recv(void *data, const struct raft_message *m)
{
    struct raftd *n = data;
    if (n->closing)
        return;
    /* A snapshot message without its file (or with another one) cannot be
     * installed: drop it, the leader sends it again. */
    if (m->type == RAFT_MSG_SNAPSHOT &&
        (m->snapshot.index != n->recv_snap_index ||
         m->snapshot.term != n->recv_snap_term))
        return;
    if (m->type == RAFT_MSG_APPEND)
        n->recv_append_cnt++;
    stats_follower_answer(n, m);
    raft_step(n->raft, m);
    node_kick(n);
}

static void node_batch_cb(struct wal_append_req *req, int status)
{
    struct node_batch *b = req->data;
    struct raftd *n = b->n;

    n->batches_in_flight--;
    if (status != 0) {
        if (status != WAL_ECANCELED && !n->wal_error) {
            raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                       "WAL append failed: %s (%s); refusing writes",
                       strerror(-status), wal_last_error(n->wal));
            n->wal_error = status;
            waiters_fail_all(n, -EIO);
        }
    } else if (!n->closing) {
        metrics_observe(&n->metrics.fsync_latency, mono_s() - b->start);
        if (b->persist_index)
            raft_persisted(n->raft, b->persist_index, b->persist_term);
        if (b->has_rd) {
            node_send(n, b->rd.messages_after_persist,
                      b->rd.n_messages_after_persist);
            peer_transport_flush(n->peers);
        }
    }
    if (b->has_rd)
        raft_ready_free(&b->rd);
    free(b);
}

static void snap_install_marker_cb(struct wal_append_req *req, int status)
{
    (void)status; /* the batch queued after it reports WAL failures */
    free(req);
}

/* A follower installs the snapshot the leader streamed: write the file
 * (snap/), load the store from it, queue the WAL snapshot marker ahead of
 * this ready's batch (so the batch's fsync covers it before anything is
 * acknowledged) and tell the core it is applied. Blocking file I/O on the
 * loop thread. */
static int node_install_snapshot(struct raftd *n,
                                 const struct raft_snapshot_meta *sm)
{
    struct snap_writer *w = NULL;
    struct snap_reader *sr = NULL;
    struct wal_append_req *req;
    struct wal_snapshot ws;
    int rv;

    if (sm->index != n->recv_snap_index || sm->term != n->recv_snap_term ||
        n->recv_w == NULL) {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                   "snapshot at index %llu to install but no file for it",
                   (unsigned long long)sm->index);
        return -EIO;
    }
    /* Verifies every byte received, fsyncs, renames into place. */
    w = n->recv_w;
    n->recv_w = NULL;
    recv_snap_reset(n);
    rv = snap_writer_commit(w);
    if (rv == 0)
        rv = snap_reader_open_at(&n->snap_opts, sm->term, sm->index, &sr);
    if (rv == 0) {
        node_store_wrlock(n);
        rv = store_load(n->store, snap_read_cb, sr);
        node_store_unlock(n);
        snap_reader_free(sr);
    }
    if (rv != 0) {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                   "installing snapshot at index %llu: %s",
                   (unsigned long long)sm->index, strerror(-rv));
        return rv;
    }
    req = calloc(1, sizeof(*req));
    if (req == NULL)
        return -ENOMEM;
    ws.term = sm->term;
    ws.index = sm->index;
    rv = wal_save_snapshot(n->wal, req, &ws, snap_install_marker_cb);
    if (rv != 0) {
        free(req);
        return rv;
    }
    raft_applied(n->raft, sm->index);
    n->snap_index = sm->index;
    /* The snapshot may carry membership changes this member never saw
     * as entries (members added, re-pointed or removed meanwhile). */
    members_changed(n);
    raftd_logf(&n->log, RAFTD_LOG_INFO, "raftd",
               "installed the leader's snapshot at index %llu",
               (unsigned long long)sm->index);
    return 0;
}

static int node_persist(struct raftd *n, const struct raft_ready *rd,
                        struct node_batch **out)
{
    struct wal_entry stackents[64], *ents = stackents;
    struct wal_hard_state hs;
    struct node_batch *b;
    int rv;

    if (rd->has_hard_state) {
        n->hs_latest.term = rd->hard_state.term;
        n->hs_latest.vote = rd->hard_state.vote;
        n->hs_latest.commit = rd->hard_state.commit;
        n->hs_dirty = true;
        if (rd->hard_state.term != n->hs_written.term ||
            rd->hard_state.vote != n->hs_written.vote)
            n->hs_must_sync = true;
    }
    if (rd->has_snapshot) {
        rv = node_install_snapshot(n, &rd->snapshot);
        if (rv != 0)
            return rv;
    }
    /* A hard state that only moves commit need not be durable (Raft
     * re-derives commit after a restart), so it is not worth a WAL write
     * of its own: it rides along with the next batch of entries. This
     * halves the WAL appends of sequential writes. Term and vote changes
     * are written (and fsynced) at once. */
    *out = NULL;
    if (rd->n_entries == 0 && !n->hs_must_sync && !rd->has_snapshot) {
        if (rd->persist_index)
            raft_persisted(n->raft, rd->persist_index, rd->persist_term);
        return 0;
    }
    if (n->wal_error)
        return n->wal_error;
    b = malloc(sizeof(*b));
    if (b == NULL)
        return -ENOMEM;
    if (rd->n_entries > sizeof(stackents) / sizeof(stackents[0])) {
        ents = malloc(rd->n_entries * sizeof(*ents));
        if (ents == NULL) {
            free(b);
            return -ENOMEM;
        }
    }
    for (size_t i = 0; i < rd->n_entries; i++) {
        ents[i].term = rd->entries[i].term;
        ents[i].index = rd->entries[i].index;
        ents[i].type = (uint32_t)rd->entries[i].type;
        ents[i].data = rd->entries[i].data;
        ents[i].len = rd->entries[i].len;
    }
    hs = n->hs_latest;
    b->req.data = b;
    b->n = n;
    b->persist_index = rd->persist_index;
    b->persist_term = rd->persist_term;
    b->start = mono_s();
    b->has_rd = false;
    /* A lone entry with nothing else in flight: a client is waiting on
     * this fsync alone, and its latency is the whole story. */
    if (rd->n_entries <= 1 && n->batches_in_flight == 0)
        poller_extend(n->poller, NODE_POLL_NS);
    rv = wal_append(n->wal, &b->req, n->hs_dirty ? &hs : NULL, ents,
                    rd->n_entries, node_batch_cb);
    if (rv == 0 && n->hs_dirty) {
        n->hs_written = hs;
        n->hs_dirty = false;
        n->hs_must_sync = false;
    }
    if (ents != stackents)
        free(ents);
    if (rv != 0) {
        free(b);
        return rv;
    }
    *out = b;
    n->batches_in_flight++;
    n->metrics.wal_batches++;
    n->metrics.wal_entries += rd->n_entries;
    return 0;
}

/* A batch that writes nothing: its callback runs once everything queued
 * before it is durable. NULL if it cannot be queued (then the caller sends
 * at once: the WAL has failed or memory is short, and Raft tolerates a
 * lost message better than a stuck one). */
static struct node_batch *node_barrier(struct raftd *n)
{
    struct node_batch *b;
    if (n->wal_error)
        return NULL;
    b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->req.data = b;
    b->n = n;
    b->start = mono_s();
    if (wal_append(n->wal, &b->req, NULL, NULL, 0, node_batch_cb) != 0) {
        free(b);
        return NULL;
    }
    n->batches_in_flight++;
    return b;
}

/* ---- apply ------------------------------------------------------------ */

static void node_maybe_snapshot(struct raftd *n);

static void node_apply_one(struct raftd *n, const struct raft_entry *e)
{
    Etcfs__Request *rq;
    struct store_request sr;
    struct store_event *ev = NULL;
    struct store_error err;
    struct raftd_write_req *w = NULL;
    int method, rv;

    if (e->type == RAFT_ENTRY_CONF_CHANGE) {
        members_apply_conf(n, e);
        return;
    }
    if (e->len == 0)
        return; /* a leader's no-op */
    rq = etcfs__request__unpack(NULL, e->len, e->data);
    if (rq == NULL) {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                   "entry %llu: undecodable request, skipped",
                   (unsigned long long)e->index);
        return;
    }
    method = rq->method ? store_method_parse(rq->method) : -EINVAL;
    if (rq->has_id && rq->id)
        w = waiter_take(n, rq->id);
    if (method < 0) {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                   "entry %llu: unknown method %s",
                   (unsigned long long)e->index,
                   rq->method ? rq->method : "(none)");
        if (w)
            w->cb_(w, -EINVAL, NULL, NULL);
        etcfs__request__free_unpacked(rq, NULL);
        return;
    }
    memset(&sr, 0, sizeof(sr));
    memset(&err, 0, sizeof(err));
    sr.method = (enum store_method)method;
    sr.path = rq->path ? rq->path : "/";
    sr.val = rq->has_val ? rq->val.data : NULL;
    sr.val_len = rq->has_val ? rq->val.len : 0;
    sr.dir = rq->has_dir && rq->dir;
    sr.prev_value = rq->has_prev_value ? rq->prev_value.data : NULL;
    sr.prev_value_len = rq->has_prev_value ? rq->prev_value.len : 0;
    sr.prev_index = rq->has_prev_index ? rq->prev_index : 0;
    sr.prev_exist = rq->has_prev_exist ? (rq->prev_exist ? 1 : 0) : -1;
    sr.expiration = rq->has_expiration ? rq->expiration : 0;
    sr.recursive = rq->has_recursive && rq->recursive;
    sr.sorted = rq->has_sorted && rq->sorted;
    sr.refresh = rq->has_refresh && rq->refresh;
    sr.time = rq->has_time ? rq->time : 0;
    sr.new_path = rq->new_path;
    rv = store_apply(n->store, &sr, sr.time, &ev, &err);
    /* A member's peer URLs (PUT /v2/members/<id>) or name changed. */
    if (rv == 0 && strncmp(sr.path, "/_etcfs/members/", 16) == 0)
        members_changed(n);
    if (!n->publish_applied && sr.time >= n->start_time_ns &&
        strncmp(sr.path, "/_etcfs/members/", 16) == 0 &&
        strncmp(sr.path + 16, n->member_id_hex,
                strlen(n->member_id_hex)) == 0 &&
        strcmp(sr.path + 16 + strlen(n->member_id_hex), "/attributes") == 0)
        n->publish_applied = true;
    if (w) {
        double lat = (double)(node_now_ns() - w->start_ns_) / 1e9;
        metrics_observe(&n->metrics.put_latency, lat > 0 ? lat : 0);
        n->metrics.proposals_committed++;
        if (rv == 0)
            w->cb_(w, 0, ev, NULL);
        else if (rv == STORE_EV2)
            w->cb_(w, 0, NULL, &err);
        else
            w->cb_(w, rv, NULL, NULL);
    }
    if (ev)
        store_event_unref(ev);
    store_error_clear(&err);
    etcfs__request__free_unpacked(rq, NULL);
}

static void node_serve_reads(struct raftd *n)
{
    raft_index applied = raft_applied_index(n->raft);
    struct raftd_read_req **p = &n->reads_ready;
    while (*p) {
        struct raftd_read_req *r = *p;
        if (r->index_ <= applied) {
            *p = r->next_;
            r->cb_(r, 0);
        } else {
            p = &r->next_;
        }
    }
}

static void node_read_states(struct raftd *n, const struct raft_ready *rd)
{
    for (size_t i = 0; i < rd->n_read_states; i++) {
        const struct raft_read_state *rs = &rd->read_states[i];
        for (struct raftd_read_req **p = &n->reads_asked; *p;
             p = &(*p)->next_) {
            if ((*p)->ctx_ == rs->ctx) {
                struct raftd_read_req *r = *p;
                *p = r->next_;
                r->index_ = rs->index;
                r->next_ = n->reads_ready;
                n->reads_ready = r;
                break;
            }
        }
    }
}

static void node_track_leader(struct raftd *n, const struct raft_ready *rd)
{
    if (rd->leader != n->last_leader) {
        n->last_leader = rd->leader;
        n->leader_start_ns = node_now_ns();
        if (rd->leader)
            raftd_logf(&n->log, RAFTD_LOG_INFO, "raft",
                       "raft.node: %s elected leader %016llx at term %llu",
                       n->member_id_hex, (unsigned long long)rd->leader,
                       (unsigned long long)rd->term);
        else
            raftd_logf(&n->log, RAFTD_LOG_INFO, "raft",
                       "raft.node: %s lost leader at term %llu",
                       n->member_id_hex, (unsigned long long)rd->term);
    }
}

static void node_process(struct raftd *n)
{
    while (!n->closing && raft_has_ready(n->raft)) {
        struct raft_ready rd;
        struct node_batch *batch = NULL;
        double t0;
        int rv;

        memset(&rd, 0, sizeof(rd));
        if (raft_ready(n->raft, &rd) != 0)
            break;
        node_track_leader(n, &rd);
        /* Messages that need nothing durable go out first, before the WAL
         * writer is woken: a leader's appends then reach the followers
         * while its own fsync runs (Raft thesis 10.2.1), and the
         * followers' round trip, not the leader's fsync, is the longer
         * path of a write. The core sends none to a cluster of one. */
        node_send(n, rd.messages, rd.n_messages);
        if (rd.n_messages > 0)
            peer_transport_flush(n->peers);
        rv = node_persist(n, &rd, &batch);
        if (rv != 0 && !n->wal_error) {
            raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                       "WAL append refused: %s", strerror(-rv));
            n->wal_error = rv;
            waiters_fail_all(n, -EIO);
        }
        t0 = mono_s();
        if (rd.n_committed) {
            node_store_wrlock(n);
            for (size_t i = 0; i < rd.n_committed; i++)
                node_apply_one(n, &rd.committed[i]);
            raft_applied(n->raft, rd.committed[rd.n_committed - 1].index);
            node_publish_raft_state(n);
            node_store_unlock(n);
            metrics_observe(&n->metrics.apply_latency, mono_s() - t0);
        }
        node_read_states(n, &rd);
        if (rd.n_messages_after_persist > 0 && batch != NULL) {
            /* Keep the batch until its fsync: those messages promise
             * durability. (The WAL callback never runs synchronously.) */
            batch->rd = rd;
            batch->has_rd = true;
        } else if (rd.n_messages_after_persist > 0 &&
                   n->batches_in_flight > 0 &&
                   (batch = node_barrier(n)) != NULL) {
            /* Nothing of this batch to write, but earlier writes may still
             * be in flight: a WAL barrier orders the send after them. */
            batch->rd = rd;
            batch->has_rd = true;
        } else {
            if (rd.n_messages_after_persist > 0)
                node_send(n, rd.messages_after_persist,
                          rd.n_messages_after_persist);
            raft_ready_free(&rd);
        }
    }
    if (n->closing)
        return;
    node_publish_raft_state(n);
    if (n->snap_sends != NULL)
        node_snap_pump(n);
    peer_transport_flush(n->peers);
    if (n->snap_sends != NULL)
        node_snap_keep_going(n);
    if (n->reads_ready)
        node_serve_reads(n);
    if (!n->published && node_can_publish(n))
        node_publish(n);
    /* Serve once the replayed log and our own published attributes are
     * applied: etcd publishes before it serves clients, so its first
     * answer already has the store index those entries give. */
    if (!n->serving && n->started && (n->published || !n->single_voter) &&
        raft_applied_index(n->raft) >= n->replay_target &&
        raft_applied_index(n->raft) >= n->publish_index) {
        __atomic_store_n(&n->serving, true, __ATOMIC_RELEASE);
        raftd_logf(&n->log, RAFTD_LOG_INFO, "raftd",
                   "applied the log up to index %llu; serving reads",
                   (unsigned long long)n->replay_target);
        api_unpark(n);
    }
    node_maybe_snapshot(n);
    node_transfer_check(n);
}

static void node_kick_cb(uv_idle_t *h)
{
    (void)h; /* its being active is the point: poll does not block */
}

/* After a loop turn that applied entries on a member that is its own
 * quorum, the loop polls without blocking for NODE_HOT_NS: a client's next
 * request, sent as soon as the answer arrives, then finds the loop
 * running instead of having to wake a halted vCPU (sequential PUT +12-19%
 * on this VM, for 10-20 us more CPU per write). Not with peers: on a small
 * machine that polling takes CPU the other members need (-12% with
 * three). */
static void node_stay_hot(struct raftd *n)
{
    struct raft_conf_state conf;
    if (!n->handles_open || n->closing)
        return;
    raft_conf(n->raft, &conf);
    if (conf.n_voters != 1)
        return;
    n->hot_until_ns = node_now_ns() + NODE_HOT_NS;
    if (!uv_is_active((uv_handle_t *)&n->kick))
        uv_idle_start(&n->kick, node_kick_cb);
}

void raftd_stay_hot(struct raftd *n)
{
    node_stay_hot(n);
}

static void node_check_cb(uv_check_t *h)
{
    struct raftd *n = h->data;
    raft_index applied = raft_applied_index(n->raft);
    if (node_now_ns() >= n->hot_until_ns)
        uv_idle_stop(&n->kick);
    node_process(n);
    if (raft_applied_index(n->raft) != applied)
        node_stay_hot(n);
}

/* New input for the core: make sure ready_check runs this loop turn. */
void node_kick(struct raftd *n)
{
    if (n->handles_open && !uv_is_active((uv_handle_t *)&n->kick))
        uv_idle_start(&n->kick, node_kick_cb);
}

static void node_tick_cb(uv_timer_t *t)
{
    struct raftd *n = t->data;
    raft_tick(n->raft);
    node_kick(n);
    node_transfer_check(n);
}

/* As etcd's leader does: every 500 ms, while any key has a TTL, propose a
 * SYNC entry carrying our clock; applying it expires the keys whose time
 * has come, so every member expires the same keys at the same index. */
/* With peers, a proposal forwarded to a leader that then fails, or a
 * read index asked of one, can be lost. Every SYNC tick: fail writes older
 * than etcd's request timeout (5 s + 2 election timeouts) with
 * -ETIMEDOUT, ask again for read points still unanswered (failing them
 * when no leader is known), and publish our attributes again if the last
 * publish has not been applied within two seconds. */
static void node_peer_housekeeping(struct raftd *n)
{
    int64_t now = node_now_ns();
    int64_t cutoff = now - (5000 + 2 * (int64_t)n->cfg->election_ms) *
                               1000000;
    struct raftd_read_req *asked = n->reads_asked, *keep = NULL;

    for (size_t b = 0; n->n_waiters > 0 && b < NODE_WAITER_BUCKETS; b++) {
        struct raftd_write_req **p = &n->waiters[b];
        while (*p) {
            struct raftd_write_req *req = *p;
            if (req->start_ns_ < cutoff) {
                *p = req->next_;
                n->n_waiters--;
                n->metrics.proposals_failed++;
                req->cb_(req, -ETIMEDOUT, NULL, NULL);
            } else {
                p = &req->next_;
            }
        }
    }
    n->reads_asked = NULL;
    while (asked) {
        struct raftd_read_req *r = asked;
        asked = r->next_;
        if (raft_read_index(n->raft, r->ctx_) == 0) {
            r->next_ = keep;
            keep = r;
        } else {
            r->cb_(r, -EAGAIN);
        }
    }
    n->reads_asked = keep;
    if (n->published && !n->publish_applied &&
        now - n->publish_ns > 2000000000LL)
        n->published = false; /* node_process publishes again */
    node_kick(n);
}

static void node_sync_cb(uv_timer_t *t)
{
    struct raftd *n = t->data;
    struct store_request r;

    if (n->peers != NULL && !n->closing)
        node_peer_housekeeping(n);
    if (!n->closing)
        members_housekeeping(n);
    if (n->closing || n->wal_error || raft_role(n->raft) != RAFT_LEADER ||
        !store_has_ttl_keys(n->store))
        return;
    memset(&r, 0, sizeof(r));
    r.method = STORE_METHOD_SYNC;
    r.path = "";
    r.prev_exist = -1;
    r.time = node_now_ns();
    node_propose_internal(n, &r);
}

/* ---- snapshots -------------------------------------------------------- */

struct snap_job {
    uv_work_t work;
    struct raftd *n;
    struct store_buf image;
    uint64_t term, index;
    unsigned char meta[8 + 8 + 4 + 8 * RAFT_MAX_VOTERS];
    size_t meta_len;
    int status;
    struct wal_append_req req;
};

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Snapshot meta blob: le64 index, le64 term, le32 n_voters, le64 voters. */
static size_t meta_encode(const struct raft_snapshot_meta *m,
                          unsigned char *out)
{
    put_le64(out, m->index);
    put_le64(out + 8, m->term);
    for (int i = 0; i < 4; i++)
        out[16 + i] = (unsigned char)(m->conf.n_voters >> (8 * i));
    for (unsigned i = 0; i < m->conf.n_voters; i++)
        put_le64(out + 20 + 8 * i, m->conf.voters[i]);
    return 20 + 8 * (size_t)m->conf.n_voters;
}

static int meta_decode(const unsigned char *p, size_t len,
                       struct raft_snapshot_meta *m)
{
    uint32_t nv = 0;
    memset(m, 0, sizeof(*m));
    if (len < 20)
        return -EBADMSG;
    m->index = get_le64(p);
    m->term = get_le64(p + 8);
    for (int i = 3; i >= 0; i--)
        nv = nv << 8 | p[16 + i];
    if (nv > RAFT_MAX_VOTERS || len != 20 + 8 * (size_t)nv)
        return -EBADMSG;
    m->conf.n_voters = nv;
    for (unsigned i = 0; i < nv; i++)
        m->conf.voters[i] = get_le64(p + 20 + 8 * i);
    return 0;
}

static int buf_write_cb(void *data, const void *buf, size_t len)
{
    return store_buf_append(data, buf, len);
}

static void snap_work_cb(uv_work_t *w)
{
    struct snap_job *job = w->data;
    struct snap_writer *sw;
    int rv = snap_writer_new(&job->n->snap_opts, job->term, job->index,
                             job->meta, job->meta_len, &sw);
    if (rv == 0) {
        rv = snap_writer_write(sw, job->image.data, job->image.len);
        if (rv == 0)
            rv = snap_writer_commit(sw);
        else
            snap_writer_abort(sw);
    }
    job->status = rv;
}

static void node_close_continue(struct raftd *n);

static void snap_done(struct raftd *n, struct snap_job *job)
{
    n->snap_in_progress = false;
    store_buf_free(&job->image);
    free(job);
    /* The store image and the compacted log entries were tens of MB in
     * the middle of the heap: give the pages back rather than keep them
     * until malloc happens to reuse them (RSS would depend on the order
     * in which a snapshot's buffers were freed). Once per snapshot. */
    malloc_trim(0);
    if (n->closing)
        node_close_continue(n);
}

static void snap_marker_cb(struct wal_append_req *req, int status)
{
    struct snap_job *job = req->data;
    struct raftd *n = job->n;
    if (status == 0) {
        int purged = wal_purge(n->wal, job->index, n->cfg->max_wals);
        uint64_t keep = job->index > NODE_SNAPSHOT_CATCHUP
                            ? job->index - NODE_SNAPSHOT_CATCHUP
                            : 0;
        if (purged < 0)
            raftd_logf(&n->log, RAFTD_LOG_WARN, "raftd",
                       "WAL purge failed: %s", strerror(-purged));
        else if (purged > 0)
            raftd_logf(&n->log, RAFTD_LOG_INFO, "raftd",
                       "purged %d WAL file(s)", purged);
        if (keep)
            raft_compact(n->raft, keep);
        n->snap_index = job->index;
        n->metrics.snapshots++;
        raftd_logf(&n->log, RAFTD_LOG_INFO, "raftd",
                   "saved snapshot at index %llu",
                   (unsigned long long)job->index);
    }
    snap_done(n, job);
}

static void snap_after_cb(uv_work_t *w, int status)
{
    struct snap_job *job = w->data;
    struct raftd *n = job->n;
    struct wal_snapshot ws;

    if (status == 0)
        status = job->status;
    store_buf_free(&job->image);
    if (status != 0 || n->wal == NULL || n->wal_closing) {
        if (status != 0)
            raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                       "snapshot at index %llu failed: %s",
                       (unsigned long long)job->index, strerror(-status));
        snap_done(n, job);
        return;
    }
    ws.term = job->term;
    ws.index = job->index;
    job->req.data = job;
    status = wal_save_snapshot(n->wal, &job->req, &ws, snap_marker_cb);
    if (status != 0) {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                   "snapshot marker at index %llu failed: %s",
                   (unsigned long long)job->index, strerror(-status));
        snap_done(n, job);
    }
}

/* etcd snapshots once applied - last snapshot > --snapshot-count. The
 * store image is serialised on the loop (a consistent cut, no locking);
 * compression and the fsyncs happen on a worker thread. */
static void node_snapshot_start(struct raftd *n);

static void node_maybe_snapshot(struct raftd *n)
{
    raft_index applied = raft_applied_index(n->raft);
    if (n->snap_in_progress || n->wal_error || applied <= n->snap_index ||
        applied - n->snap_index <= n->cfg->snapshot_count)
        return;
    node_snapshot_start(n);
}

static void node_snapshot_start(struct raftd *n)
{
    raft_index applied = raft_applied_index(n->raft);
    struct raft_snapshot_meta sm;
    struct snap_job *job;
    int rv;

    if (raft_snapshot_meta(n->raft, applied, &sm) != 0)
        return;
    job = calloc(1, sizeof(*job));
    if (job == NULL)
        return;
    job->n = n;
    job->work.data = job;
    job->term = sm.term;
    job->index = sm.index;
    job->meta_len = meta_encode(&sm, job->meta);
    store_buf_init(&job->image);
    rv = store_save(n->store, buf_write_cb, &job->image);
    if (rv == 0)
        rv = uv_queue_work(n->loop, &job->work, snap_work_cb, snap_after_cb);
    if (rv != 0) {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                   "snapshot at index %llu not started: %s",
                   (unsigned long long)sm.index, strerror(-rv));
        store_buf_free(&job->image);
        free(job);
        /* Do not retry on every loop turn. */
        n->snap_index = applied;
        return;
    }
    n->snap_in_progress = true;
}

/* ---- startup ---------------------------------------------------------- */

static void raft_cfg_fill(struct raftd *n, struct raft_config *rc,
                          raft_id *voters, size_t *nv)
{
    const struct raftd_config *cfg = n->cfg;
    memset(rc, 0, sizeof(*rc));
    rc->id = n->member_id;
    rc->heartbeat_tick = 1;
    rc->election_tick = cfg->heartbeat_ms ? cfg->election_ms / cfg->heartbeat_ms
                                          : 10;
    if (rc->election_tick < 2)
        rc->election_tick = 2;
    rc->seed = n->member_id ^ (uint64_t)node_now_ns();
    /* Pre-vote (etcd 3.5's default; 3.4 has it behind --pre-vote): a
     * member cut off by a partition does not raise its term, so it does
     * not depose a working leader when the partition heals. Both also
     * for a single voter (it counts itself): the cluster may grow. */
    rc->pre_vote = true;
    rc->check_quorum = true;
    *nv = 0;
    if (n->joining) {
        /* Learns the configuration from the leader's log. */
        rc->voters = voters;
        rc->n_voters = 0;
        return;
    }
    for (size_t i = 0; i < cfg->n_members && *nv < RAFT_MAX_VOTERS; i++)
        voters[(*nv)++] = cfg->members[i].id;
    if (*nv == 0 || n->member_id != cfg->member_id) {
        /* Restarted with a data dir from another command line: the
         * member the WAL names is the cluster. */
        voters[0] = n->member_id;
        *nv = 1;
    }
    rc->voters = voters;
    rc->n_voters = *nv;
}

/* Opening and reading the WAL runs on a helper thread while the loop
 * thread loads the snapshot into the store: the two are independent once
 * the snapshot's index is known, and a restart is their maximum instead of
 * their sum. */
struct wal_loader {
    uv_thread_t tid;
    struct raftd *n;
    const struct wal_options *wo;
    struct wal_snapshot ws;
    struct wal_read_result res;
    int open_rv;
    int read_rv;
};

static void wal_loader_run(void *arg)
{
    struct wal_loader *l = arg;
    l->read_rv = 0;
    l->open_rv = wal_open(&l->n->wal, l->n->wal_dir, l->wo);
    if (l->open_rv == 0)
        l->read_rv =
            wal_read_all(l->n->wal, l->ws.index ? &l->ws : NULL, &l->res);
}

static int node_restore(struct raftd *n, const struct wal_options *wo)
{
    struct raft_snapshot_meta sm;
    struct wal_loader wl;
    struct snap_reader *sr = NULL;
    struct raft_config rc;
    struct raft_entry *ents = NULL;
    raft_id voters[RAFT_MAX_VOTERS];
    struct raft_hard_state hs;
    size_t nv, n_ents = 0, own_from = SIZE_MAX;
    int rv, threaded = 0;

    memset(&sm, 0, sizeof(sm));
    memset(&wl, 0, sizeof(wl));
    wl.n = n;
    wl.wo = wo;
    rv = snap_reader_open(&n->snap_opts, &sr);
    if (rv == 0) {
        size_t ml;
        const void *meta = snap_reader_meta(sr, &ml);
        rv = meta_decode(meta, ml, &sm);
        if (rv == 0) {
            wl.ws.term = sm.term;
            wl.ws.index = sm.index;
            threaded = uv_thread_create(&wl.tid, wal_loader_run, &wl) == 0;
            rv = store_load(n->store, snap_read_cb, sr);
        }
        if (rv != 0)
            raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                       "loading snapshot %s: %s", snap_reader_path(sr),
                       strerror(-rv));
        else
            raftd_logf(&n->log, RAFTD_LOG_INFO, "raftd",
                       "recovered store from snapshot at index %llu",
                       (unsigned long long)sm.index);
        snap_reader_free(sr);
    } else if (rv == -ENOENT) {
        rv = 0;
    } else {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                   "opening snapshot: %s", strerror(-rv));
        return rv;
    }
    if (threaded)
        uv_thread_join(&wl.tid);
    else if (rv == 0)
        wal_loader_run(&wl);
    if (rv != 0) {
        wal_read_result_free(&wl.res);
        return rv;
    }
    if (wl.open_rv != 0) {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd", "opening WAL %s: %s",
                   n->wal_dir, strerror(-wl.open_rv));
        n->wal = NULL;
        return wl.open_rv;
    }
    if (wl.read_rv != 0) {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd", "reading WAL: %s",
                   wal_last_error(n->wal));
        wal_read_result_free(&wl.res);
        return wl.read_rv;
    }
    n->member_id = wl.res.metadata.node_id;
    n->cluster_id = wl.res.metadata.cluster_id;
    rv = wal_start_append(n->wal);
    if (rv != 0)
        goto out;
    if (wl.res.n_entries) {
        ents = calloc(wl.res.n_entries, sizeof(*ents));
        if (ents == NULL) {
            rv = -ENOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < wl.res.n_entries; i++) {
        ents[i].term = wl.res.entries[i].term;
        ents[i].index = wl.res.entries[i].index;
        ents[i].type = (enum raft_entry_type)wl.res.entries[i].type;
        ents[i].data = (void *)wl.res.entries[i].data;
        ents[i].len = wl.res.entries[i].len;
    }
    hs.term = wl.res.hard_state.term;
    hs.vote = wl.res.hard_state.vote;
    hs.commit = wl.res.hard_state.commit;
    /* The hard state's commit may lag (commit-only records are not
     * synced) and must not exceed the log we have. */
    {
        uint64_t last = wl.res.n_entries ? wl.res.entries[wl.res.n_entries - 1].index
                                      : sm.index;
        if (hs.commit > last)
            hs.commit = last;
        if (hs.commit < sm.index)
            hs.commit = sm.index;
    }
    n_ents = wl.res.n_entries;
    if (n->cfg->force_new_cluster) {
        rv = members_force_new_cluster(n, &sm, &hs, &ents, &n_ents,
                                       &own_from);
        if (rv != 0)
            goto out;
    }
    raft_cfg_fill(n, &rc, voters, &nv);
    if (sm.index == 0 && nv == 1)
        voters[0] = n->member_id;
    rv = raft_new(&rc, &hs, sm.index ? &sm : NULL, ents, n_ents, &n->raft);
    if (rv != 0) {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                   "restoring raft state: %s", raft_strerror(rv));
        goto out;
    }
    n->snap_index = sm.index;
    raftd_logf(&n->log, RAFTD_LOG_INFO, "raftd",
               "restarting member %016llx in cluster %016llx at commit "
               "index %llu (%zu WAL entries)",
               (unsigned long long)n->member_id,
               (unsigned long long)n->cluster_id,
               (unsigned long long)hs.commit, wl.res.n_entries);
out:
    for (size_t i = own_from; i < n_ents; i++)
        free(ents[i].data);
    free(ents);
    wal_read_result_free(&wl.res);
    return rv;
}

static int node_bootstrap(struct raftd *n, const struct wal_options *wo)
{
    struct wal_metadata md;
    struct raft_config rc;
    raft_id voters[RAFT_MAX_VOTERS];
    size_t nv;
    int rv;

    n->member_id = n->cfg->member_id;
    n->cluster_id = n->cfg->cluster_id;
    if (strcmp(n->cfg->initial_cluster_state, "existing") == 0) {
        /* Joining: ids and members come from the cluster. */
        n->member_id = 0;
        rv = members_join(n);
        if (rv != 0)
            return rv;
    }
    md.node_id = n->member_id;
    md.cluster_id = n->cluster_id;
    rv = wal_create(&n->wal, n->wal_dir, &md, wo);
    if (rv != 0) {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd", "creating WAL %s: %s",
                   n->wal_dir, strerror(-rv));
        return rv;
    }
    raft_cfg_fill(n, &rc, voters, &nv);
    rv = raft_new(&rc, NULL, NULL, NULL, 0, &n->raft);
    if (rv != 0)
        return rv;
    n->fresh = !n->joining;
    raftd_logf(&n->log, RAFTD_LOG_INFO, "raftd",
               "starting member %016llx in cluster %016llx",
               (unsigned long long)n->member_id,
               (unsigned long long)n->cluster_id);
    return 0;
}

static void node_free(struct raftd *n)
{
    if (n->raft)
        raft_free(n->raft);
    if (n->store)
        store_free(n->store);
    members_free(n);
    api_thread_exit();
    if (n->store_locking)
        pthread_rwlock_destroy(&n->store_lock);
    recv_snap_reset(n);
    snap_sends_free(n);
    stats_free(n);
    free(n->member_dir);
    free(n->wal_dir);
    free(n->snap_dir);
    free(n);
}

int raftd_new(uv_loop_t *loop, const struct raftd_config *cfg,
              const struct raftd_log *log, struct raftd **out)
{
    struct raftd *n;
    struct wal_options wo;
    int rv;

    n = calloc(1, sizeof(*n));
    if (n == NULL)
        return -ENOMEM;
    n->loop = loop;
    n->cfg = cfg;
    n->log = *log;
    n->start_time_ns = node_now_ns();
    n->next_req_id = ((cfg->member_id & 0xffff) << 48) |
                     (((uint64_t)n->start_time_ns / 1000000) & 0xffffffffffULL)
                         << 8;
    n->store = store_new();
    n->member_dir = path_join(cfg->data_dir, "member");
    n->snap_dir = n->member_dir ? path_join(n->member_dir, "snap") : NULL;
    n->wal_dir = cfg->wal_dir && cfg->wal_dir[0]
                     ? strdup(cfg->wal_dir)
                     : (n->member_dir ? path_join(n->member_dir, "wal")
                                      : NULL);
    if (!n->store || !n->member_dir || !n->snap_dir || !n->wal_dir) {
        rv = -ENOMEM;
        goto err_free;
    }
    rv = mkdir_one(cfg->data_dir);
    if (rv == 0)
        rv = mkdir_one(n->member_dir);
    if (rv != 0) {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                   "cannot create data dir %s: %s", cfg->data_dir,
                   strerror(-rv));
        goto err_free;
    }
    snap_options_init(&n->snap_opts);
    n->snap_opts.dir = n->snap_dir;
    n->snap_opts.max_snapshots = cfg->max_snapshots;
    n->snap_opts.log = snap_log_bridge;
    n->snap_opts.log_data = n;
    rv = snap_dir_init(&n->snap_opts);
    if (rv != 0)
        goto err_free;
    memset(&wo, 0, sizeof(wo));
    wo.loop = loop;
    wo.log = wal_log_bridge;
    wo.log_data = n;
    wo.segment_size = NODE_WAL_SEGMENT_SIZE;
    if (wal_exists(n->wal_dir))
        rv = node_restore(n, &wo);
    else
        rv = node_bootstrap(n, &wo);
    if (rv != 0)
        goto err_close_wal;
    /* etcd prints ids without leading zeros (types.ID.String). */
    snprintf(n->member_id_hex, sizeof(n->member_id_hex), "%llx",
             (unsigned long long)n->member_id);
    snprintf(n->cluster_id_hex, sizeof(n->cluster_id_hex), "%llx",
             (unsigned long long)n->cluster_id);
    *out = n;
    return 0;

err_close_wal:
    if (n->wal) {
        wal_close(n->wal, NULL, NULL);
        /* wal_close with a loop finishes on the loop: run it out. */
        uv_run(loop, UV_RUN_NOWAIT);
        n->wal = NULL;
    }
err_free:
    node_free(n);
    return rv;
}

/* The ids come from the data dir, not the flags (as etcd, which ignores
 * --initial-cluster once it has a WAL, so changed peer URLs are fine).
 * Refused: a data dir whose member is known to the cluster under another
 * name than --name, i.e. another member's data dir (etcd would run it
 * under the other member's id). */
static int node_check_name(struct raftd *n)
{
    const struct raftd_member_cfg *m = members_find(n, n->member_id);
    if (m == NULL || m->name[0] == '\0' || strcmp(m->name, n->cfg->name) == 0)
        return 0;
    raftd_logf(&n->log, RAFTD_LOG_FATAL, "etcdmain",
               "data dir %s belongs to member %s (%s) of cluster %s, not to "
               "--name %s; start it with its own data dir or an empty one",
               n->cfg->data_dir, m->name, n->member_id_hex,
               n->cluster_id_hex, n->cfg->name);
    return -EINVAL;
}

int raftd_start(struct raftd *n)
{
    struct http_server_config hc;
    int rv;

    uv_timer_init(n->loop, &n->tick_timer);
    uv_timer_init(n->loop, &n->sync_timer);
    uv_check_init(n->loop, &n->ready_check);
    uv_idle_init(n->loop, &n->kick);
    n->handles_open = 4;
    if (n->cfg->idle_poll) {
        rv = poller_start(&n->poller);
        if (rv != 0)
            raftd_logf(&n->log, RAFTD_LOG_WARN, "raftd",
                       "idle poller not started: %s", strerror(-rv));
    }
    n->tick_timer.data = n->sync_timer.data = n->ready_check.data = n;
    n->kick.data = n;
    uv_check_start(&n->ready_check, node_check_cb);
    uv_timer_start(&n->tick_timer, node_tick_cb, n->cfg->heartbeat_ms,
                   n->cfg->heartbeat_ms);
    uv_timer_start(&n->sync_timer, node_sync_cb, NODE_SYNC_INTERVAL_MS,
                   NODE_SYNC_INTERVAL_MS);

    {
        /* A single voter will commit every entry its log holds, including
         * ones acknowledged after the last written commit index; with
         * peers, an uncommitted tail may be replaced, so only the known
         * commit index is waited for. */
        struct raft_conf_state cs;
        raft_conf(n->raft, &cs);
        n->single_voter = cs.n_voters == 1;
        n->replay_target = n->single_voter ? raft_last_index(n->raft)
                                           : raft_commit_index(n->raft);
    }
    n->started = true;
    /* Replay what the WAL holds, then (as etcd's initial election tick
     * advance does) fast-forward the clock: a cluster of one elects itself
     * at once instead of after a full election timeout. */
    node_process(n);
    {
        struct raft_conf_state cs;
        raft_conf(n->raft, &cs);
        if (cs.n_voters == 1 && cs.voters[0] == n->member_id) {
            unsigned ticks = 2 * (n->cfg->election_ms /
                                  (n->cfg->heartbeat_ms ? n->cfg->heartbeat_ms
                                                        : 100)) +
                             2;
            for (unsigned i = 0;
                 i < ticks && raft_role(n->raft) != RAFT_LEADER; i++) {
                raft_tick(n->raft);
                node_process(n);
            }
        }
    }

    /* Peers: the transport starts once the configuration has another
     * member (a single member never binds its peer URL). A member whose
     * data dir records its removal stops itself, as etcd's does at its
     * first contact with the cluster. */
    rv = members_reload(n);
    if (rv == 0)
        rv = members_sync_transport(n);
    if (rv != 0)
        return rv;
    if (members_is_removed(n, n->member_id))
        members_stop_removed(n, "its data dir records the removal");
    rv = node_check_name(n);
    if (rv != 0)
        return rv;

    memset(&hc, 0, sizeof(hc));
    hc.handler = api_handle;
    hc.data = n;
    rv = http_server_new(n->loop, &hc, &n->http);
    if (rv != 0)
        return rv;
    for (size_t i = 0; i < n->cfg->listen_client_urls.n; i++) {
        const char *url = n->cfg->listen_client_urls.v[i];
        int port = 0;
        rv = http_server_listen(n->http, url, &port);
        if (rv == 0 && i == 0)
            n->client_port = port;
        if (rv != 0) {
            raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                       "listen tcp %s: %s", url, strerror(-rv));
            return rv;
        }
        raftd_logf(&n->log, RAFTD_LOG_INFO, "embed",
                   "serving insecure client requests on %s", url);
    }
    rv = workers_start(n);
    if (rv != 0) {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                   "starting %u HTTP threads: %s", n->cfg->http_threads,
                   strerror(-rv));
        return rv;
    }
    raftd_logf(&n->log, RAFTD_LOG_INFO, "raftd",
               "ready to serve client requests (member %s, cluster %s)",
               n->member_id_hex, n->cluster_id_hex);
    return 0;
}

/* ---- close ----------------------------------------------------------
 * Order: stop timers, fail waiting writes and reads (their HTTP requests
 * finish), close the HTTP server (watch requests get their close callback
 * and finish), wait for a running snapshot job and for every request the
 * API still holds, close the WAL (in-flight writes complete first), close
 * our handles, free. */

static void node_handle_closed(uv_handle_t *h)
{
    struct raftd *n = h->data;
    void (*cb)(void *);
    void *arg;

    if (--n->handles_open > 0)
        return;
    cb = n->close_cb;
    arg = n->close_arg;
    node_free(n);
    if (cb)
        cb(arg);
}

static void node_wal_closed(void *arg)
{
    struct raftd *n = arg;
    n->wal = NULL;
    if (n->handles_open == 0) {
        void (*cb)(void *) = n->close_cb;
        void *cb_arg = n->close_arg;
        node_free(n);
        if (cb)
            cb(cb_arg);
        return;
    }
    poller_stop(n->poller);
    n->poller = NULL;
    uv_close((uv_handle_t *)&n->tick_timer, node_handle_closed);
    uv_close((uv_handle_t *)&n->sync_timer, node_handle_closed);
    uv_close((uv_handle_t *)&n->ready_check, node_handle_closed);
    uv_close((uv_handle_t *)&n->kick, node_handle_closed);
}

static void node_peers_closed(void *arg)
{
    struct raftd *n = arg;
    n->peers = NULL;
    node_handle_closed((uv_handle_t *)&n->kick);
}

static void node_close_continue(struct raftd *n)
{
    struct wal *w;
    if (n->snap_in_progress || n->api_active > 0 || n->wal_closing)
        return;
    n->wal_closing = true;
    w = n->wal;
    if (w == NULL) {
        node_wal_closed(n);
        return;
    }
    wal_close(w, node_wal_closed, n);
}

void node_api_release(struct raftd *n)
{
    n->api_active--;
    if (n->closing && n->api_active == 0)
        node_close_continue(n);
}

/* The voter to hand leadership to: connected, with the longest log
 * (etcd's longestConnected); 0 if none. */
static uint64_t node_transfer_target(struct raftd *n)
{
    struct raft_conf_state conf;
    uint64_t best = 0;
    raft_index best_match = 0;
    raft_conf(n->raft, &conf);
    for (size_t i = 0; i < conf.n_voters; i++) {
        raft_index match, next;
        uint64_t id = conf.voters[i];
        if (id == n->member_id || !peer_transport_connected(n->peers, id) ||
            raft_progress(n->raft, id, &match, &next) != 0)
            continue;
        if (best == 0 || match > best_match) {
            best = id;
            best_match = match;
        }
    }
    return best;
}

/* As etcd's Stop: a leader of several voters first transfers leadership
 * to the most up-to-date connected follower and waits for it (at most an
 * election timeout, after which the core gives the transfer up anyway),
 * so the cluster has a new leader without waiting out an election
 * timeout. True if a transfer started; the close continues in
 * node_transfer_check(). */
static bool node_transfer_start(struct raftd *n)
{
    uint64_t to;
    if (!n->started || n->wal_error || n->peers == NULL ||
        raft_role(n->raft) != RAFT_LEADER)
        return false;
    to = node_transfer_target(n);
    if (to == 0 || raft_transfer_leader(n->raft, to) != 0)
        return false;
    n->transfer_to = to;
    n->transfer_start_ns = node_now_ns();
    raftd_logf(&n->log, RAFTD_LOG_INFO, "etcdserver",
               "%s starts leadership transfer from %s to %llx",
               n->member_id_hex, n->member_id_hex, (unsigned long long)to);
    node_kick(n);
    return true;
}

/* During a transfer at close: closes once another member leads, or when
 * the transfer has taken longer than an election timeout and a
 * heartbeat (the core has given it up by then). */
static void node_transfer_check(struct raftd *n)
{
    uint64_t lead;
    int64_t took;
    if (n->transfer_to == 0 || n->closing)
        return;
    lead = raft_leader(n->raft);
    took = node_now_ns() - n->transfer_start_ns;
    if (lead != 0 && lead != n->member_id) {
        raftd_logf(&n->log, RAFTD_LOG_INFO, "etcdserver",
                   "%s finished leadership transfer from %s to %llx "
                   "(took %.3fms)", n->member_id_hex, n->member_id_hex,
                   (unsigned long long)lead, (double)took / 1e6);
    } else if (took >= (int64_t)(n->cfg->election_ms +
                                 n->cfg->heartbeat_ms) * 1000000) {
        raftd_logf(&n->log, RAFTD_LOG_WARN, "etcdserver",
                   "%s failed to transfer leadership (etcdserver: request "
                   "timed out, leader transfer took too long)",
                   n->member_id_hex);
    } else {
        return;
    }
    node_close_now(n);
}

void raftd_close(struct raftd *n, void (*cb)(void *arg), void *arg)
{
    if (n->closing || n->transfer_to != 0)
        return;
    n->close_cb = cb;
    n->close_arg = arg;
    if (!node_transfer_start(n))
        node_close_now(n);
}

static void node_close_now(struct raftd *n)
{
    n->closing = true;
    /* Held until the end of this function: failing the waiters below
     * finishes requests, and the last one must not start closing the WAL
     * before the shutdown snapshot has been started. */
    n->api_active++;
    if (n->handles_open) {
        uv_timer_stop(&n->tick_timer);
        uv_timer_stop(&n->sync_timer);
        uv_check_stop(&n->ready_check);
        uv_idle_stop(&n->kick);
    }
    waiters_fail_all(n, -ECANCELED);
    reads_fail_all(n, -ECANCELED);
    members_close(n);
    api_unpark(n);
    if (n->peers)
        peer_transport_close(n->peers, node_peers_closed, n);
    /* A snapshot at shutdown makes the next start a snapshot load instead
     * of a replay of up to --snapshot-count entries; clients cannot tell
     * (a snapshot adds no entry). */
    if (!n->snap_in_progress && !n->wal_error && n->raft && n->started &&
        raft_applied_index(n->raft) >= n->snap_index + NODE_CLOSE_SNAPSHOT_MIN)
        node_snapshot_start(n);
    if (n->http) {
        workers_stop(n);
        http_server_close(n->http, NULL);
        n->http = NULL;
    }
    raftd_logf(&n->log, RAFTD_LOG_INFO, "raftd", "stopping member %s",
               n->member_id_hex);
    node_api_release(n);
}
