/* Internals of etcfs_raftd shared by node.c (loop, storage, apply), api.c
 * (the v2 HTTP handlers), stats.c and metrics.c. Not part of the public
 * contract (raftd.h). */
#ifndef ETCFS_RAFTD_NODE_INT_H
#define ETCFS_RAFTD_NODE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "http.h"
#include "raft.h"
#include "raftd.h"
#include "snap.h"
#include "store.h"
#include "wal.h"

#define NODE_WAITER_BUCKETS 4096u /* power of two */
#define NODE_SYNC_INTERVAL_MS 500 /* etcd's SYNC cadence */
/* WAL segment size. Smaller than etcd's 64 MiB: creating, preallocating
 * (zero-filling) and replaying a segment all scale with it, and a 64 MiB
 * zero-fill right after start halves the first seconds' write rate. */
#define NODE_WAL_SEGMENT_SIZE (8u << 20)
#define NODE_SNAPSHOT_CATCHUP 5000u /* entries kept after a snapshot */
/* Entries since the last snapshot that make close take one. */
#define NODE_CLOSE_SNAPSHOT_MIN 1000u
/* How long a single-voter loop keeps polling after applying (node.c). */
#define NODE_HOT_NS 60000
/* How long the idle poller keeps the CPUs running after a lone WAL append
 * starts (raftd/poller.c): a few fsyncs' worth. */
#define NODE_POLL_NS 500000

/* Latency histogram buckets (seconds), Prometheus style. */
#define METRICS_N_BUCKETS 12

struct metrics_hist {
    uint64_t buckets[METRICS_N_BUCKETS]; /* cumulative at render time */
    uint64_t count;
    double sum;
};

struct raftd_metrics {
    uint64_t http_requests[8]; /* by method class, see metrics.c */
    struct metrics_hist put_latency;
    struct metrics_hist get_latency;
    struct metrics_hist fsync_latency;
    struct metrics_hist apply_latency;
    uint64_t proposals_committed;
    uint64_t proposals_failed;
    uint64_t snapshots;
    uint64_t wal_batches;
    uint64_t wal_entries;
    /* Connections moved to an HTTP thread, and back (atomic: workers). */
    uint64_t moves_to_threads;
    uint64_t moves_to_loop;
};

void metrics_observe(struct metrics_hist *h, double seconds);
int metrics_render(struct raftd *n, struct store_buf *b);

struct raftd_read_req;
struct node_conf_op;

/* /v2/stats/leader: what the leader measured of one follower (stats.c).
 * Latencies in milliseconds, as etcd's FollowerStats. */
#define STATS_APP_RING 64 /* unanswered appends timed per follower */
struct stats_follower {
    uint64_t id;
    double current, average, average_square, stddev, minimum, maximum;
    uint64_t fail, success;
    /* Appends sent and not answered yet: the last index each carries and
     * when it was queued; the oldest first. */
    struct {
        uint64_t index;
        int64_t ns;
    } app[STATS_APP_RING];
    unsigned app_head, app_len;
    int64_t heartbeat_ns; /* the oldest unanswered heartbeat, 0 if none */
};

struct raftd {
    uv_loop_t *loop;
    struct poller *poller; /* --idle-poll threads; NULL when off */
    const struct raftd_config *cfg; /* borrowed until raftd_close's cb */
    struct raftd_log log;

    uint64_t member_id;
    uint64_t cluster_id;
    char member_id_hex[17];
    char cluster_id_hex[17];

    struct store *store;
    struct raft *raft;
    struct wal *wal;
    struct snap_options snap_opts;
    char *member_dir;
    char *wal_dir;
    char *snap_dir;

    uv_timer_t tick_timer;
    uv_timer_t sync_timer;
    uv_check_t ready_check;
    /* Active only while a proposal made outside the poll phase (a timer
     * callback, a caller before uv_run) waits for ready_check, and for
     * NODE_HOT_NS after a single voter applied entries: it keeps the loop
     * from blocking in poll. */
    uv_idle_t kick;
    int64_t hot_until_ns; /* kick stays active until then (node_stay_hot) */
    int handles_open;

    struct http_server *http;
    int client_port;

    /* Peers (NULL for a cluster of one): the transport, and whether our
     * published attributes have been applied (a forwarded publish can be
     * lost with a leader; it is retried). */
    struct peer_transport *peers;
    /* The configuration as the store has it (members.c): members sorted
     * by id (owned), ids removed for good, membership proposals waiting
     * for their conf change to apply. */
    struct raftd_member_cfg *members;
    size_t n_members;
    uint64_t *removed;
    size_t n_removed;
    struct node_conf_op *conf_ops;
    bool joining;      /* started with an empty log to join a cluster */
    bool removed_self; /* learned it was removed: stopping */
    int64_t removed_ns;
    void (*stop_cb)(void *arg, const char *why);
    void *stop_arg;
    bool publish_applied;
    int64_t publish_ns;
    /* The snapshot file a leader is streaming to us, written piece by
     * piece into a temp file (snap_writer_new_file) and committed when
     * the RAFT_MSG_SNAPSHOT that follows it is installed. recv_snap_term
     * and recv_snap_index are set once every byte has arrived. */
    struct snap_writer *recv_w;
    uint64_t recv_w_term, recv_w_index, recv_off, recv_total;
    uint64_t recv_snap_term, recv_snap_index;
    /* Snapshot files being sent, one per peer at most (node.c). */
    struct node_snap_send *snap_sends;

    /* Proposals waiting for their entry to be applied, by request id. */
    struct raftd_write_req *waiters[NODE_WAITER_BUCKETS];
    uint64_t next_req_id;
    uint64_t n_waiters;

    /* Linearizable reads: asked (no read state yet) and ready (index
     * known, waiting for apply). */
    struct raftd_read_req *reads_asked;
    struct raftd_read_req *reads_ready;
    uint64_t next_read_ctx;

    /* Persistence pipeline. hs_latest is the newest hard state the core
     * handed out, hs_written the last one given to the WAL. */
    struct wal_hard_state hs_latest;
    struct wal_hard_state hs_written;
    bool hs_dirty;
    bool hs_must_sync;
    unsigned batches_in_flight;
    int wal_error; /* sticky: a failed fsync stops writes for good */

    /* Snapshots. */
    uint64_t snap_index;   /* index of the newest durable snapshot */
    bool snap_in_progress;

    /* Bootstrap bookkeeping, to number the store like etcd does. */
    bool fresh;
    bool published;
    /* Requests are parked until the store has applied every entry the
     * WAL held at start (a restarted member must not answer from a store
     * that is behind what it acknowledged before). */
    bool started;
    bool serving;
    uint64_t replay_target;
    uint64_t publish_index; /* raft index of our last attribute entry */
    bool single_voter;      /* the configuration at start is just us */
    struct http_request **parked;
    size_t n_parked, cap_parked;

    /* Stats (/v2/stats/self, /v2/stats/leader). */
    int64_t start_time_ns;
    int64_t leader_start_ns;
    uint64_t last_leader;
    uint64_t recv_append_cnt;
    uint64_t send_append_cnt;
    struct stats_follower *followers;
    size_t n_followers;

    struct raftd_metrics metrics;

    /* HTTP worker threads (--http-threads, workers.c). While there are
     * any, they read the store under store_lock, which the loop thread
     * takes for writing around every change to the store; pub_commit and
     * pub_term are the Raft commit index and term they put in headers. */
    struct raftd_worker **workers;
    size_t n_workers, next_worker;
    bool store_locking;
    pthread_rwlock_t store_lock;
    uint64_t pub_commit, pub_term;

    /* Requests the HTTP API holds unfinished (watches, writes, reads):
     * close waits for them. */
    uint64_t api_active;
    bool wal_closing;
    bool closing;
    void (*close_cb)(void *arg);
    void *close_arg;
    /* A leader asked to close hands leadership to this voter first
     * (raftd_close); 0 when no transfer is under way. */
    uint64_t transfer_to;
    int64_t transfer_start_ns;
};


/* ---- peer transport (peer_codec.c, peer.c; docs/raftd.md) ------------- */

#define PEER_VERSION 1u
#define PEER_FRAME_HEADER 5u            /* u32 BE length, u8 kind */
#define PEER_FRAME_MAX (64u << 20)      /* kind + payload */
#define PEER_KIND_HELLO 1
#define PEER_KIND_MESSAGE 2
/* A piece of a .snap file: be64 term, index, offset, total, then the bytes
 * [offset, offset + n) of the file of total bytes. */
#define PEER_KIND_SNAPSHOT 3
#define PEER_KIND_REMOVED 4  /* listener -> a removed member; empty */
#define PEER_KIND_MEMBERS_REQ 5 /* a joining member's first frame; empty */
#define PEER_KIND_MEMBERS 6  /* the answer: JSON, see members.c */
#define PEER_QUEUE_MAX_BYTES (16u << 20) /* per peer, encoded, unsent */
#define PEER_QUEUE_MAX_MSGS 8192u
/* A snapshot goes out in pieces of this size, at most NODE_SNAP_WINDOW
 * bytes of them queued or in flight per peer (node.c). */
#define NODE_SNAP_CHUNK (1u << 20)
#define NODE_SNAP_WINDOW (2u * NODE_SNAP_CHUNK)
#define PEER_BACKOFF_MIN_MS 20u
#define PEER_BACKOFF_MAX_MS 500u

struct peer_hello {
    uint32_t version;
    uint64_t cluster_id;
    uint64_t from;
    uint64_t to;
};

/* A decoded message: msg borrows from the private fields; release with
 * peer_decoded_free() (also safe on a zeroed struct). */
struct peer_decoded {
    struct raft_message msg;
    void *pb_;
    struct raft_entry *ents_;
};

/* Append one frame of the given kind and raw payload to out. */
int peer_frame_encode(uint8_t kind, const void *payload, size_t len,
                      struct store_buf *out);
/* Append one frame to out. 0, -ENOMEM, -EMSGSIZE, -EINVAL. */
int peer_hello_encode(const struct peer_hello *h, struct store_buf *out);
int peer_msg_encode(const struct raft_message *m, struct store_buf *out);
/* A snapshot piece: s->data[0..s->len) is the file's bytes at s->offset. */
struct peer_snap_piece {
    uint64_t term, index, offset, total;
    const uint8_t *data;
    size_t len;
};
int peer_snap_encode(const struct peer_snap_piece *s, struct store_buf *out);
/* s->data points into p. 0, or -EBADMSG (short, index 0, or the piece
 * reaching past total). */
int peer_snap_decode(const uint8_t *p, size_t len, struct peer_snap_piece *s);
/* The first frame in buf[0..len): returns its total size (> 0) and sets
 * kind, payload (pointing into buf) and plen; 0 if buf holds only part of
 * a frame; -EBADMSG for a bad length or kind. */
int peer_frame_next(const void *buf, size_t len, uint8_t *kind,
                    const uint8_t **payload, size_t *plen);
/* Payload decoders: 0, -EBADMSG (malformed, unknown type, bad hello),
 * -ENOMEM. peer_msg_decode leaves d zeroed on failure. */
int peer_hello_decode(const uint8_t *p, size_t len, struct peer_hello *h);
int peer_msg_decode(const uint8_t *p, size_t len, struct peer_decoded *d);
void peer_decoded_free(struct peer_decoded *d);

/* The transport: one outbound TCP connection per peer (reconnect with
 * backoff, a bounded queue flushed once per loop turn), a listener per
 * peer URL for inbound connections. Loop thread only. */
struct peer_transport;
struct peer_callbacks {
    void *data;
    /* A message from a peer (m borrowed for the call; m->from is the
     * authenticated sender, m->to this member). */
    void (*recv)(void *data, const struct raft_message *m);
    /* A piece of a snapshot file from peer `from` (bytes borrowed for the
     * call); the pieces come in order, then the RAFT_MSG_SNAPSHOT message
     * describing the file. May be NULL. */
    void (*snapshot)(void *data, uint64_t from,
                     const struct peer_snap_piece *s);
    /* Peer `from` refused us as a member removed from the cluster. */
    void (*removed)(void *data, uint64_t from);
    /* The answer to a joining member's MEMBERS_REQ, appended to out.
     * May be NULL (the request is then refused). */
    int (*members)(void *data, struct store_buf *out);
};
/* members: the initial peers (id and peer URLs; self is skipped), copied. */
int peer_transport_new(uv_loop_t *loop, const struct raftd_log *log,
                       uint64_t cluster_id, uint64_t self_id,
                       const struct raftd_member_cfg *members,
                       size_t n_members, const struct peer_callbacks *cb,
                       struct peer_transport **out);
/* Talk to member id at url (copied): add it, or re-point it when the URL
 * changed. A removed id is never added again. 0 or -ENOMEM. */
int peer_transport_add(struct peer_transport *t, uint64_t id,
                       const char *url);
/* Member id was removed from the cluster: close its connections, and
 * answer its later dials with a REMOVED frame. 0 or -ENOMEM. */
int peer_transport_remove(struct peer_transport *t, uint64_t id);
/* Listen on one peer URL ("http://127.0.0.1:2380"). 0 or negative errno. */
int peer_transport_listen(struct peer_transport *t, const char *url);
/* Queue m for its peer: 0, or -ENOTCONN (not connected / backing off),
 * -ENOBUFS (queue full), -ENOENT (unknown member): the message is dropped
 * and the caller reports the peer unreachable. */
int peer_transport_send(struct peer_transport *t, const struct raft_message *m);
/* The port the first listener bound (useful with port 0), or 0. */
int peer_transport_port(const struct peer_transport *t);
/* Queue a piece of a snapshot file for peer `to` (the pieces in order,
 * then its RAFT_MSG_SNAPSHOT). Same errors as peer_transport_send, and
 * -EMSGSIZE past PEER_FRAME_MAX. */
int peer_transport_send_snapshot(struct peer_transport *t, uint64_t to,
                                 const struct peer_snap_piece *s);
/* Bytes queued for peer `to` or being written to its socket (0 for an
 * unknown peer). */
size_t peer_transport_pending(const struct peer_transport *t, uint64_t to);
/* Which connection to peer `to` is current: a number that changes each
 * time the connection is lost; 0 when there is none (or no such peer).
 * What was queued on a lost connection is gone. */
uint64_t peer_transport_conn(const struct peer_transport *t, uint64_t to);
/* Start writing what was queued (once per loop turn). */
void peer_transport_flush(struct peer_transport *t);
/* True if an outbound connection to id is up. */
bool peer_transport_connected(const struct peer_transport *t, uint64_t id);
/* Close every handle; cb(arg) once all are closed (t is then freed). */
void peer_transport_close(struct peer_transport *t, void (*cb)(void *),
                          void *arg);

int64_t node_now_ns(void);
/* The store lock (see struct raftd): the loop thread's write side, and a
 * worker's read side; no-ops without workers. */
void node_store_wrlock(struct raftd *n);
void node_store_rdlock(struct raftd *n);
void node_store_unlock(struct raftd *n);
/* Publishes the commit index and term for the workers' headers. */
void node_publish_raft_state(struct raftd *n);

/* ---- workers.c ---- */
/* Starts --http-threads workers; 0 or a negative errno (then none is
 * running). */
int workers_start(struct raftd *n);
/* The next worker's server, round robin (n_workers > 0). */
struct http_server *workers_next(struct raftd *n);
/* Stops and joins them; connections they hold are closed. Loop thread. */
void workers_stop(struct raftd *n);
/* Open client connections, the loop thread's and the workers'. */
size_t workers_connection_count(const struct raftd *n);
/* A worker's handler (api.c): serves plain reads of /v2/keys, moves
 * everything else to n->http. server_data is the struct raftd. */
void api_handle_worker(struct http_request *req);
/* The calling thread's reply buffer (api.c); freed by api_thread_exit. */
struct store_buf *api_scratch(void);
void api_thread_exit(void);
/* New input for the core: drain it this loop turn. */
void node_kick(struct raftd *n);
/* The transport's callbacks (node.c). */
void node_recv(void *data, const struct raft_message *m);
void node_recv_snapshot(void *data, uint64_t from,
                        const struct peer_snap_piece *s);

/* ---- membership (members.c) ------------------------------------------- */

/* A JSON list's inside ("a","b") / raftAttributes ({"peerURLs":[..]}). */
int members_urls_json(struct store_buf *b, const struct raftd_urls *u);
int members_attrs_json(struct store_buf *b, const struct raftd_urls *u);
/* Rebuild the member table and removed ids from the store. */
int members_reload(struct raftd *n);
/* Start the transport once there is a peer; add, re-point and remove
 * peers to match the table. */
int members_sync_transport(struct raftd *n);
/* After an applied write under /_etcfs/members: reload and sync. */
void members_changed(struct raftd *n);
const struct raftd_member_cfg *members_find(const struct raftd *n,
                                            uint64_t id);
const struct raftd_member_cfg *members_find_url(const struct raftd *n,
                                                const char *url,
                                                uint64_t skip);
bool members_is_removed(const struct raftd *n, uint64_t id);
/* Apply a committed conf-change entry to the store, table, transport. */
void members_apply_conf(struct raftd *n, const struct raft_entry *e);
/* Propose adding (attrs: the raftAttributes JSON, borrowed) or removing
 * member id; cb(req, 0, NULL, NULL) once applied here, or with
 * -ETIMEDOUT / -ECANCELED. Returns 0, -EAGAIN (no leader), -EINVAL (the
 * core refused it), -EIO, -ENOMEM; then cb is never called. */
int members_propose(struct raftd *n, struct raftd_write_req *req, bool add,
                    uint64_t id, const char *attrs, raftd_write_cb cb);
/* Every sync tick: re-propose, time out, stop a removed member. */
void members_housekeeping(struct raftd *n);
/* Log that this member was removed; it stops after 10 heartbeats. */
void members_stop_removed(struct raftd *n, const char *how);
/* Fail waiting proposals with -ECANCELED (close). */
void members_close(struct raftd *n);
void members_free(struct raftd *n);
/* --force-new-cluster on restart: append to *ents conf changes removing
 * every other voter (and adding this member if missing), commit the whole
 * log in *hs and write them to the WAL before returning (etcd's
 * restartAsStandaloneNode). *ents is reallocated; the data of the entries
 * from *first_owned on is the caller's to free(). */
int members_force_new_cluster(struct raftd *n,
                              const struct raft_snapshot_meta *sm,
                              struct raft_hard_state *hs,
                              struct raft_entry **ents, size_t *n_ents,
                              size_t *first_owned);
/* A MEMBERS answer's JSON (untrusted): 0, -EBADMSG, -ENOMEM; free with
 * members_answer_free (also safe after a failure). */
struct members_answer {
    uint64_t cluster_id;
    struct raftd_member_cfg *members; /* owned; peer URLs sorted */
    size_t n_members;
    uint64_t *removed;
    size_t n_removed;
};
int members_answer_parse(const uint8_t *payload, size_t len,
                         struct members_answer *a);
void members_answer_free(struct members_answer *a);
/* --initial-cluster-state existing: learn cluster id, members and our id
 * from a member's peer port (blocking). 0, or an error already logged. */
int members_join(struct raftd *n);

/* The X-Raft-Index / X-Raft-Term of a reply. */
uint64_t node_raft_index(const struct raftd *n);
uint64_t node_raft_term(const struct raftd *n);

/* The API finished a request it held (api_active--). */
void node_api_release(struct raftd *n);

/* HTTP: the handler for every request of the client server. */
void api_handle(struct http_request *req);
/* Dispatch the requests parked while the member was catching up. */
void api_unpark(struct raftd *n);
/* JSON bodies of the stats endpoints (stats.c), no trailing newline. */
int stats_self_json(struct raftd *n, struct store_buf *b);
int stats_leader_json(struct raftd *n, struct store_buf *b);
/* The leader handed append or heartbeat m to the transport (rv: what
 * peer_transport_send returned), or got an answer from a follower. Other
 * message types are ignored. */
void stats_follower_sent(struct raftd *n, const struct raft_message *m,
                         int rv);
void stats_follower_answer(struct raftd *n, const struct raft_message *m);
void stats_free(struct raftd *n);
/* Go's strconv.FormatFloat(v, 'f' or 'e', -1, 64) as encoding/json
 * writes a float64 (shortest digits that read back as v). */
void stats_go_float(double v, char *out, size_t outlen);
/* Go's time.Duration.String() of d nanoseconds. */
void stats_go_duration(int64_t d, char *out, size_t outlen);

#endif /* ETCFS_RAFTD_NODE_INT_H */
