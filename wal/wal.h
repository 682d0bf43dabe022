/* wal/wal.h: the whole public contract of the write-ahead log. A WAL is a
 * directory of preallocated segment files holding CRC-32C-chained records
 * (metadata, entries, hard state, snapshot markers); the byte layout is at
 * the top of wal/wal.c and in docs/wal.md. */
#ifndef ETCFS_WAL_H
#define ETCFS_WAL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

/* Default segment size: 64 MiB, zero-filled before use. */
#define WAL_SEGMENT_SIZE (64u * 1024u * 1024u)
/* Default number of segment files wal_purge() keeps (etcd's --max-wals). */
#define WAL_MAX_WALS 5

/* Error codes beyond plain errno. Every error is a negative errno value.
 * WAL_ECORRUPT: a bad CRC or malformed record before the tail, a missing
 *   segment, a gap in indices or a bad segment name. Never repaired
 *   silently; wal_last_error() names the file and byte offset.
 * WAL_ELOCKED: another wal handle (this or another process) holds the lock.
 * WAL_ECANCELED: the request was queued but never written (wal_close). */
#define WAL_ECORRUPT (-EBADMSG)
#define WAL_ELOCKED (-EBUSY)
#define WAL_ECANCELED (-ECANCELED)

struct wal; /* opaque */

/* Identity of the member that owns this WAL; written at the head of every
 * segment. */
struct wal_metadata {
    uint64_t node_id;
    uint64_t cluster_id;
};

/* Raft hard state. */
struct wal_hard_state {
    uint64_t term;
    uint64_t vote;
    uint64_t commit;
};

/* A snapshot position: the snapshot holds every entry up to index. */
struct wal_snapshot {
    uint64_t term;
    uint64_t index;
};

/* One log entry. data is opaque bytes to the WAL.
 * In wal_append(): borrowed for the duration of the call only (the WAL
 * encodes it before returning). In struct wal_read_result: owned by the
 * result, freed by wal_read_result_free(). */
struct wal_entry {
    uint64_t term;
    uint64_t index;
    uint32_t type;
    const void *data;
    size_t len;
};

/* What wal_read_all() returns. entries[k].index == snapshot index + 1 + k:
 * entries superseded by a later rewrite are already dropped. */
struct wal_read_result {
    struct wal_metadata metadata;
    struct wal_hard_state hard_state;  /* newest one read; zero if none */
    struct wal_snapshot last_snapshot; /* newest marker read; zero if none */
    struct wal_entry *entries;         /* owned; see wal_read_result_free */
    size_t n_entries;
};

/* Storage hooks: every disk call the WAL makes goes through these, so
 * tests can fail the Nth call or make short writes. Each returns what the
 * syscall returns on success and a NEGATIVE ERRNO on failure (never -1
 * with errno). A NULL member means the real syscall. ctx is passed back
 * unchanged. With a uv loop the calls come from the WAL's writer and
 * preallocator threads, so hooks must be thread-safe. */
struct wal_hooks {
    void *ctx;
    int (*open)(void *ctx, const char *path, int flags, mode_t mode);
    int (*close)(void *ctx, int fd);
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t n, off_t off);
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t n, off_t off);
    int (*fsync)(void *ctx, int fd);
    int (*fdatasync)(void *ctx, int fd);
    int (*ftruncate)(void *ctx, int fd, off_t len);
    int (*rename)(void *ctx, const char *from, const char *to);
    int (*unlink)(void *ctx, const char *path);
    int (*mkdir)(void *ctx, const char *path, mode_t mode);
};

enum wal_log_level {
    WAL_LOG_DEBUG,
    WAL_LOG_INFO,
    WAL_LOG_WARN,
    WAL_LOG_ERROR,
};

/* Log sink for warnings such as a torn-tail repair. May be called from the
 * WAL's internal threads; must be thread-safe. msg is borrowed for the
 * call. */
typedef void (*wal_log_cb)(void *data, enum wal_log_level level,
                           const char *msg);

/* Options for wal_create() / wal_open(). Zero-initialise, then set what you
 * need; the struct itself is copied, the pointers are borrowed until the
 * WAL is closed. */
struct wal_options {
    /* Segment size in bytes; 0 means WAL_SEGMENT_SIZE. Rounded up to a
     * multiple of 8 and at least 4096. A segment is cut once it holds this
     * many bytes, so a segment can exceed it by one batch (a large entry
     * never splits). */
    uint64_t segment_size;
    /* Loop for the asynchronous API. NULL: only the *_sync calls work, and
     * no internal threads are started (deterministic hook tests). */
    uv_loop_t *loop;
    const struct wal_hooks *hooks; /* NULL: real syscalls */
    wal_log_cb log;                /* NULL: silent */
    void *log_data;
};

/* ---- lifecycle ---------------------------------------------------------
 *
 * Read mode:   wal_open() -> wal_read_all() -> wal_start_append()
 * Append mode: wal_create(), or after wal_start_append().
 * Never both: appends fail with -EINVAL in read mode, wal_read_all() fails
 * with -EINVAL in append mode.
 *
 * dir is the WAL directory itself (e.g. "<data-dir>/member/wal"); the
 * segments are dir/%016x-%016x.wal (sequence, first index). */

/* With opts->loop set, wal_create(), wal_start_append() and every call
 * below that takes a request must run on the loop thread.
 *
 * 1 if dir holds at least one segment file, 0 if not (or missing). */
int wal_exists(const char *dir);

/* Create a new WAL in dir (which must not exist or be empty of segments;
 * its parent must exist) with the first segment 0000000000000000-
 * 0000000000000000.wal holding md, built in "dir.tmp" and renamed into
 * place so a half-created WAL is never seen. Takes the lock. On success
 * *out is a WAL in append mode, freed with wal_close().
 * Errors: -EEXIST if dir already holds segments, other negative errno. */
int wal_create(struct wal **out, const char *dir, const struct wal_metadata *md,
               const struct wal_options *opts);

/* Open an existing WAL in read mode and take its lock. No segment is read
 * yet. On success *out is freed with wal_close().
 * Errors: -ENOENT if there is no segment, WAL_ELOCKED, negative errno. */
int wal_open(struct wal **out, const char *dir, const struct wal_options *opts);

/* Read the WAL from the segment holding snap->index + 1 on (snap NULL or
 * zero: from the start) and return its metadata, the newest hard state and
 * the entries with index > snap->index, later-term rewrites resolved: an
 * entry at index i supersedes the earlier i and everything after it.
 * May be called once, in read mode.
 *
 * A torn tail of the LAST segment (partial record, zeros or garbage after
 * the last good record) is repaired: the file is truncated to the last good
 * record, the cut bytes are appended to "<segment>.broken" and a WAL_LOG_WARN
 * message is logged. Anything else that does not verify (bad CRC before the
 * tail, a missing segment, an index gap) fails with WAL_ECORRUPT and
 * wal_last_error() says "<path>: offset <n>: <what>".
 * On success *out is filled and must be freed with wal_read_result_free();
 * on failure *out is left zeroed. */
int wal_read_all(struct wal *w, const struct wal_snapshot *snap,
                 struct wal_read_result *out);

/* Free what wal_read_all() put in r (not r itself). r may be zeroed. */
void wal_read_result_free(struct wal_read_result *r);

/* Switch a WAL whose wal_read_all() succeeded to append mode: the last
 * segment is zero-filled back to the segment size, the writer (and, with a
 * loop, the preallocator) thread starts. */
int wal_start_append(struct wal *w);

/* Close the WAL and release its lock. Requests already being written
 * complete normally (their callbacks run with their real status, from
 * within wal_close); requests still queued get WAL_ECANCELED. If the WAL
 * reached append mode with a loop, close_cb(arg) (may be NULL) runs on the
 * loop once its uv handle is closed and w is freed; otherwise w is freed
 * and close_cb runs before wal_close returns. Either way w must not be
 * used after the call. Must be called on the loop thread. */
void wal_close(struct wal *w, void (*close_cb)(void *arg), void *arg);

/* Message of the last error this handle returned (or "" if none), e.g.
 * "/d/member/wal/0000000000000001-0000000000000064.wal: offset 4096: bad
 * crc". Borrowed until the next call on w. */
const char *wal_last_error(const struct wal *w);

/* ---- appending (asynchronous, loop thread only) ------------------------
 *
 * Contract: if a call returns an error, cb is never called. Otherwise cb is
 * called exactly once, on the loop thread, with status 0 once the
 * fdatasync covering everything in the request has completed, or a
 * negative errno if the write or fdatasync failed (then every later and
 * every still-queued request fails too: a failed fsync cannot be retried
 * safely, so the WAL refuses all further appends with that error), or
 * WAL_ECANCELED from wal_close(). Callbacks run in submission order.
 *
 * Group commit: requests submitted while a write+fdatasync is in flight
 * are queued and go out together with the next single fdatasync.
 * Durability follows etcd's MustSync: a request with entries, a snapshot
 * marker, or a hard state whose term or vote differs from the last written
 * one is synced; a request that only moves commit is written but its
 * callback does not wait for an fsync of its own.
 *
 * Records are written in submission order; a segment is cut (the next one
 * preallocated ahead by another thread) when the current one is full. */
struct wal_append_req;
typedef void (*wal_append_cb)(struct wal_append_req *req, int status);

/* Caller-allocated; must stay valid until cb runs. Only data is public. */
struct wal_append_req {
    void *data; /* user data, untouched by the WAL */
    /* private */
    struct wal_append_req *next_;
    struct wal *wal_;
    wal_append_cb cb_;
    unsigned char *buf_; /* framed records, owned until cb */
    size_t len_;
    uint64_t last_index_;
    struct wal_hard_state hs_;
    struct wal_snapshot snap_;
    int flags_;
    int status_;
};

/* Append the hard state hs (NULL: none) and entries ents[0..n) (index
 * order; an index at or below the last written index rewrites the log from
 * there). hs and ents are borrowed for the call only. n == 0 and hs == NULL
 * is a barrier: cb runs once everything before it is durable.
 * Errors (cb not called): -EINVAL (read mode, no loop, bad arguments),
 * -ENOMEM, or the sticky error of an earlier failed write/fsync. */
int wal_append(struct wal *w, struct wal_append_req *req,
               const struct wal_hard_state *hs, const struct wal_entry *ents,
               size_t n, wal_append_cb cb);

/* Record that a snapshot at snap (term, index) is durable, queued behind
 * earlier appends like wal_append(). Save the snapshot file (fsynced)
 * first, then this marker, then wal_purge(). */
int wal_save_snapshot(struct wal *w, struct wal_append_req *req,
                      const struct wal_snapshot *snap, wal_append_cb cb);

/* ---- appending (synchronous, for tools and tests) ----------------------
 * Same semantics, but the write and fdatasync happen on the calling thread
 * and the call returns their status. With a loop they are serialised with
 * the writer thread (safe to mix, though it blocks the caller). */
int wal_append_sync(struct wal *w, const struct wal_hard_state *hs,
                    const struct wal_entry *ents, size_t n);
int wal_save_snapshot_sync(struct wal *w, const struct wal_snapshot *snap);

/* ---- purge ---------------------------------------------------------------
 * Remove the oldest segments wholly covered by a snapshot at snap_index
 * (every entry in them has index <= snap_index, and a later segment starts
 * at or before snap_index + 1) while more than max_wals segment files
 * remain; 0 means keep every file (etcd's --max-wals 0). The segment being
 * appended to is never removed. Unlinks, then fsyncs the directory, on the
 * calling thread. Returns the number of files removed or negative errno.
 * Append mode only. */
int wal_purge(struct wal *w, uint64_t snap_index, unsigned max_wals);

/* ---- misc ----------------------------------------------------------------*/

/* CRC-32C (Castagnoli) of buf, continuing from crc (0 to start).
 * wal_crc32c(0, "123456789", 9) == 0xe3069283. */
uint32_t wal_crc32c(uint32_t crc, const void *buf, size_t len);

/* Index of the last entry written (0 if none), for tests and tools. */
uint64_t wal_last_index(const struct wal *w);

#endif /* ETCFS_WAL_H */
