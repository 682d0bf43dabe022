/* etcfs_raftd: the cluster member (config, logging, node loop, v2 HTTP API)
 * as a library. The raftd program is a thin main() over it; the FUSE
 * front-end (raftd --mount) uses the raftd_get/raftd_write/raftd_watch
 * calls below as its in-process backend, from the member's own loop. */
#ifndef ETCFS_RAFTD_H
#define ETCFS_RAFTD_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- logging ---------------------------------------------------------
 * One line per event on a FILE (stderr for the program), in etcd's
 * capnslog layout so operators' greps keep working:
 *   2026-11-21 05:21:22.599209 I | raftd: message
 * Levels are etcd's --log-level names. */
enum raftd_log_level {
    RAFTD_LOG_DEBUG = 0,
    RAFTD_LOG_INFO = 1,
    RAFTD_LOG_WARN = 2,
    RAFTD_LOG_ERROR = 3,
    RAFTD_LOG_PANIC = 4,
    RAFTD_LOG_FATAL = 5,
};

struct raftd_log {
    FILE *out;                 /* borrowed; NULL drops everything */
    enum raftd_log_level level; /* lines below it are dropped */
};

void raftd_log_init(struct raftd_log *log, FILE *out,
                    enum raftd_log_level level);
/* Parse an etcd --log-level name; -EINVAL if unknown. */
int raftd_log_level_parse(const char *s, enum raftd_log_level *out);
/* pkg is the subsystem ("raftd", "wal", "http", ...), borrowed. */
void raftd_logf(const struct raftd_log *log, enum raftd_log_level level,
                const char *pkg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- configuration ---------------------------------------------------
 * etcd's command line: every etcd 3.4 flag is accepted with one dash or
 * two, "-f v", "-f=v", "--f v" or "--f=v" (Go's flag package rules), and
 * the matching ETCD_* environment variable is used when the flag is not on
 * the command line. Flags raftd does not implement are accepted and
 * ignored (logged at debug level), as a user swapping etcd for raftd would
 * expect. */

#define RAFTD_VERSION "3.4.23"        /* reported as etcdserver */
#define RAFTD_CLUSTER_VERSION "3.4.0" /* reported as etcdcluster */

struct raftd_urls {
    size_t n;
    char **v; /* owned, each a validated scheme://host:port, sorted */
};

struct raftd_member_cfg {
    char *name;                /* owned */
    struct raftd_urls peer_urls;
    uint64_t id;               /* etcd's NewMember id (sha1) */
};

struct raftd_config {
    char *name;
    char *data_dir;            /* default "${name}.etcd" */
    char *wal_dir;             /* "" = data_dir/member/wal */
    struct raftd_urls listen_client_urls;
    struct raftd_urls advertise_client_urls;
    struct raftd_urls listen_peer_urls;
    struct raftd_urls initial_advertise_peer_urls;
    char *initial_cluster;     /* as given, "name=url,..." */
    char *initial_cluster_state; /* "new" or "existing" */
    char *initial_cluster_token;
    uint64_t snapshot_count;   /* etcd 3.4 default 100000 */
    unsigned heartbeat_ms;     /* default 100 */
    unsigned election_ms;      /* default 1000 */
    unsigned max_snapshots;    /* default 5, 0 unlimited */
    unsigned max_wals;         /* default 5, 0 unlimited */
    enum raftd_log_level log_level;
    int print_version;         /* --version given */
    int print_help;            /* -h/--help given */
    int force_new_cluster;
    char *mount;               /* --mount DIR (ours); NULL if absent */
    int idle_poll;             /* --idle-poll (ours), default 1: poller.c */
    unsigned http_threads;     /* --http-threads (ours), default one per
                                  CPU when there are 2 or more: workers.c */
    /* The first ETCD_* variable also given as a flag (the flag won; etcd
     * would refuse to start), or NULL. */
    char *shadowed_env;

    /* Derived from initial_cluster and the token. */
    struct raftd_member_cfg *members; /* owned, sorted by id */
    size_t n_members;
    uint64_t member_id;        /* this member's id */
    uint64_t cluster_id;       /* etcd's genID over the member ids */
};

#define RAFTD_HTTP_THREADS_MAX 64u

/* Parse argv (argv[0] is skipped) and the environment (envp, NULL-ended
 * "K=V" strings, borrowed; NULL means no environment). On failure returns
 * a negative errno, writes a one-line reason into err (size errlen) and
 * sets *exit_code to what etcd exits with for that mistake: 2 for flag
 * syntax (unknown flag, bad value on the command line), 1 for the rest.
 * On success cfg is filled and must be released with raftd_config_free(),
 * which is also safe after a failure. */
int raftd_config_parse(struct raftd_config *cfg, int argc, char **argv,
                       char **envp, char *err, size_t errlen,
                       int *exit_code);
void raftd_config_free(struct raftd_config *cfg);

/* One URL checked as etcd's types.NewURLs does (scheme http, https, unix
 * or unixs; host:port; no path). 0, or -EINVAL with etcd's reason in why,
 * e.g. "URL scheme must be http, https, unix, or unixs: x". */
int raftd_url_check(const char *url, char *why, size_t whylen);

/* The usage text, etcd-like, for -h and flag errors. */
void raftd_config_usage(FILE *out);

/* etcd's member id: sha1 over the sorted peer URLs concatenated, then the
 * cluster token; the first 8 bytes big-endian. urls are borrowed. */
uint64_t raftd_member_id(const char *const *urls, size_t n,
                         const char *token);
/* etcd's cluster id: sha1 over the sorted member ids, 8 bytes big-endian
 * each; the first 8 bytes big-endian. ids is borrowed (not modified). */
uint64_t raftd_cluster_id(const uint64_t *ids, size_t n);

/* SHA-1 of len bytes into out[20]; used by the two ids above. */
void raftd_sha1(const void *data, size_t len, unsigned char out[20]);

/* ---- the member --------------------------------------------------------
 * A struct raftd is one cluster member on a libuv loop: storage (WAL and
 * snapshots under data_dir/member), the Raft core, the v2 store and the
 * client HTTP listeners. Every call below is made on the loop thread.
 * Several members may live in one process (no globals). */

struct uv_loop_s;
struct store;
struct store_event;
struct store_error;
struct store_request;
struct raftd;

/* Open (or create) the data dir, load the newest snapshot and replay the
 * WAL, build the Raft core. Blocking disk I/O (startup only). cfg and log
 * are borrowed until raftd_close's callback. On success *out is returned;
 * release it with raftd_close. */
int raftd_new(struct uv_loop_s *loop, const struct raftd_config *cfg,
              const struct raftd_log *log, struct raftd **out);

/* Start ticking, elect (at once when this is the only voter), listen on
 * the client URLs. Returns 0 or a negative errno (e.g. -EADDRINUSE), after
 * which only raftd_close is allowed. */
int raftd_start(struct raftd *n);

/* Stop listening, fail waiting requests with -ECANCELED, close the WAL
 * (what is being written completes first), free everything; cb(arg) runs
 * on the loop once every handle is closed (n is then freed). */
void raftd_close(struct raftd *n, void (*cb)(void *arg), void *arg);

/* cb(arg, why) runs once (on the loop) when the member must stop on its
 * own: it was removed from the cluster (it applied its removal, its data
 * dir records it, or a peer refused it as removed). The owner then
 * raftd_close()s it (etcd 3.4 then exits 0). Without a callback the
 * member keeps running, idle. */
void raftd_on_stop(struct raftd *n, void (*cb)(void *arg, const char *why),
                   void *arg);

/* The member's store, for local reads and watches from the loop (store.h).
 * Borrowed; never mutate it directly: writes go through raftd_write. */
struct store *raftd_store(struct raftd *n);
uint64_t raftd_member_id_get(const struct raftd *n);
/* 1 once the member has applied every entry its WAL held at start (local
 * reads are then at least as new as anything acknowledged before a
 * restart); HTTP requests arriving earlier are held until then. */
int raftd_is_ready(const struct raftd *n);
/* The port the first client listener bound (useful with port 0), or 0. */
int raftd_client_port(const struct raftd *n);
uint64_t raftd_cluster_id_get(const struct raftd *n);
/* The leader this member knows of, 0 when there is none (an election is
 * on or this member cannot reach a quorum): raftd_write would answer
 * -EAGAIN. */
uint64_t raftd_leader(const struct raftd *n);
/* Work was done for a client outside the HTTP server (raftd --mount's
 * kernel requests): a member that is its own quorum keeps its loop
 * polling for a moment, as after applying entries, so the client's next
 * request does not have to wake a sleeping loop. */
void raftd_stay_hot(struct raftd *n);

/* A write through the log. cb runs exactly once (unless raftd_write
 * returns an error): after the entry is durable and applied, with status
 * 0 and ev (a store event, borrowed for the call; store_event_ref to keep)
 * or err (an etcd v2 error, borrowed), or with a negative errno and both
 * NULL (-ECANCELED on close, -EIO when the WAL failed). raft_index and
 * raft_term are the X-Raft-Index/X-Raft-Term of the reply. */
struct raftd_write_req;
typedef void (*raftd_write_cb)(struct raftd_write_req *req, int status,
                               struct store_event *ev,
                               const struct store_error *err);
struct raftd_write_req {
    void *data; /* the caller's */
    /* private */
    struct raftd_write_req *next_;
    uint64_t id_;
    raftd_write_cb cb_;
    int64_t start_ns_;
};

/* Propose r (borrowed for the call: it is encoded at once). The request's
 * time is set to this member's clock now; r->expiration must already be
 * absolute (now + ttl). req is caller-allocated and must live until cb.
 * Returns 0, -EAGAIN (no leader yet: retry), -EIO (WAL failed), -ENOMEM. */
int raftd_write(struct raftd *n, struct raftd_write_req *req,
                const struct store_request *r, raftd_write_cb cb);

/* A linearizable read point: cb runs once this member's store has applied
 * everything committed when the read was asked (ReadIndex), with status 0;
 * then read the store. -ECANCELED on close. */
struct raftd_read_req;
typedef void (*raftd_read_cb)(struct raftd_read_req *req, int status);
struct raftd_read_req {
    void *data;
    /* private */
    struct raftd_read_req *next_;
    uint64_t ctx_;
    uint64_t index_;
    raftd_read_cb cb_;
};
int raftd_read_index(struct raftd *n, struct raftd_read_req *req,
                     raftd_read_cb cb);

#endif /* ETCFS_RAFTD_H */
