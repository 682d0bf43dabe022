/* snap/: snapshots of the store image, lz4-compressed in independently
 * checksummed chunks and written atomically (temp file, fsync, rename, dir
 * fsync). This header is the whole contract of the module; the byte layout
 * of a .snap file is given at the top of snap/snap.c and in docs/snap.md. */
#ifndef ETCFS_SNAP_H
#define ETCFS_SNAP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Files live in one directory (member/snap), named like etcd's:
 *   %016x-%016x.snap          (term, index in hex) a committed snapshot
 *   <name>.snap.broken        failed its checksum; kept, ignored
 *   <name>.snap.tmp.XXXXXX    being written; ignored by load
 *
 * Blocking: every function here does synchronous disk I/O (and a commit
 * fsyncs twice). The node loop must call them from a worker thread
 * (uv_queue_work), never from the loop thread. Objects are not thread-safe;
 * distinct objects may be used from distinct threads at once. No function
 * keeps global state, so several members can share one process.
 *
 * Errors: 0 on success, negative errno on failure. Corrupt on-disk input is
 * -EBADMSG, never an abort. A snapshot written by a newer format version is
 * -EPROTONOSUPPORT (and is not treated as broken). Every error is also
 * reported through opts->log with the file name and byte offset. */

#define SNAP_MAX_SNAPSHOTS_DEFAULT 5u          /* etcd --max-snapshots */
#define SNAP_CHUNK_SIZE_DEFAULT (1u << 20)     /* image bytes per chunk */
#define SNAP_CHUNK_SIZE_MAX (16u << 20)        /* readers refuse larger */
#define SNAP_META_MAX (64u << 10)              /* caller metadata blob cap */

enum snap_log_level {
    SNAP_LOG_INFO = 0,
    SNAP_LOG_WARN = 1,  /* e.g. "renamed broken snapshot X to X.broken" */
    SNAP_LOG_ERROR = 2, /* the message behind a failing return */
};

/* msg is borrowed for the duration of the call only; no trailing newline.
 * Called on the thread that made the snap call (a uv worker thread when
 * used as advised above), so the callback must be thread-safe. */
typedef void (*snap_log_cb)(void *data, enum snap_log_level level,
                            const char *msg);

/* Storage hooks, as in wal.h: every pread, pwrite, fsync (file and
 * directory), rename and unlink goes through these so tests can fail the
 * Nth call or make short writes. Each returns what the syscall returns on
 * success and a NEGATIVE ERRNO on failure (never -1 with errno). A NULL
 * member means the real syscall; ctx is passed back unchanged. Opening
 * and creating files (mkostemp, open) are not hooked. */
struct snap_hooks {
    void *ctx;
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t n, off_t off);
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t n,
                      off_t off);
    int (*fsync)(void *ctx, int fd);
    int (*rename)(void *ctx, const char *from, const char *to);
    int (*unlink)(void *ctx, const char *path);
};

struct snap_options {
    /* Snapshot directory (member/snap). Borrowed for the call that takes
     * the options; writers and readers keep their own copy. */
    const char *dir;
    /* Committed snapshots kept by purge (newest first); 0 keeps all, as
     * in etcd. */
    unsigned max_snapshots;
    /* Image bytes per compressed chunk on write, 4 KiB..SNAP_CHUNK_SIZE_MAX.
     * It is also the unit a follower could receive, so keep it modest. */
    uint32_t chunk_size;
    /* May be NULL: then messages are dropped (errors are still returned). */
    snap_log_cb log;
    void *log_data;
    /* NULL: real syscalls. Borrowed; must outlive every writer and reader
     * made with these options. */
    const struct snap_hooks *hooks;
};

/* Fill *opts with defaults: dir NULL (caller must set it),
 * SNAP_MAX_SNAPSHOTS_DEFAULT, SNAP_CHUNK_SIZE_DEFAULT, no log. */
void snap_options_init(struct snap_options *opts);

/* Prepare opts->dir at startup: create it (mode 0700) if missing and remove
 * leftover temp files of writes interrupted by a crash. Call it once before
 * any writer exists for this dir (it would delete a live writer's temp). */
int snap_dir_init(const struct snap_options *opts);

/* The (term, index) of every committed, not-broken snapshot in opts->dir,
 * sorted oldest first. Names only: files are not opened or validated.
 * *ids is returned, free it with free(); *n may be 0 (then *ids is NULL).
 * A missing directory is an empty list. */
struct snap_id {
    uint64_t term;
    uint64_t index;
};
int snap_list(const struct snap_options *opts, struct snap_id **ids,
              size_t *n);

/* Delete the oldest committed snapshots beyond opts->max_snapshots.
 * snap_writer_commit calls it; exposed for raftd startup and tests.
 * Broken and temp files are never touched here. */
int snap_purge(const struct snap_options *opts);

/* ---- writing --------------------------------------------------------- */

struct snap_writer;

/* Start a snapshot of the store image at (term, index). meta/meta_len is an
 * opaque blob (e.g. the raft conf state) stored in the header and returned
 * by snap_reader_meta(); it is copied, borrowed for this call only;
 * meta_len <= SNAP_META_MAX (else -EINVAL); meta may be NULL if meta_len 0.
 * Creates the temp file now. On success *w is returned and must be ended by
 * exactly one of snap_writer_commit or snap_writer_abort. */
int snap_writer_new(const struct snap_options *opts, uint64_t term,
                    uint64_t index, const void *meta, size_t meta_len,
                    struct snap_writer **w);

/* Append len bytes of image. buf is borrowed for the call. Data is
 * compressed and written one chunk at a time as it arrives: at most one
 * chunk of input and one of output is ever buffered, never the image.
 * After an error the writer is poisoned (later writes and commit fail with
 * the same error); abort it. */
int snap_writer_write(struct snap_writer *w, const void *buf, size_t len);

/* The same, with the signature store_save() takes: data is the
 * struct snap_writer *. Usage: store_save(s, snap_write_cb, w). */
int snap_write_cb(void *data, const void *buf, size_t len);

/* Flush the last chunk, write the end frame and the final header, fsync the
 * file, rename it to its .snap name (replacing a file of the same term and
 * index), fsync the directory, then snap_purge(). Always frees w. On
 * failure before the rename the temp file is removed and no .snap
 * appears; if only the directory fsync fails, the .snap exists but its
 * name may not survive a crash, and the error is returned so the caller
 * does not record (in the WAL) a snapshot that may vanish. A failing purge
 * after the rename is logged, and commit still returns 0 because the
 * snapshot is durable. For a writer from snap_writer_new_file, the received
 * bytes are fully verified first (-EBADMSG if corrupt, -EINVAL if their
 * term/index differ from the ones given). */
int snap_writer_commit(struct snap_writer *w);

/* Remove the temp file and free w. Safe after any error. */
void snap_writer_abort(struct snap_writer *w);

/* A writer that receives a whole .snap file verbatim, e.g. chunk by chunk
 * from the leader (the bytes a snap_reader_read_file produced). Write the
 * file bytes in order with snap_writer_write_file (snap_writer_write and
 * snap_write_cb are -EINVAL on such a writer), then commit or abort. term
 * and index are what the sender announced; commit checks them. */
int snap_writer_new_file(const struct snap_options *opts, uint64_t term,
                         uint64_t index, struct snap_writer **w);
int snap_writer_write_file(struct snap_writer *w, const void *buf,
                           size_t len);

/* ---- reading --------------------------------------------------------- */

struct snap_reader;

/* Open the newest valid snapshot in opts->dir. Before returning it does a
 * cheap verification pass over the whole file (header CRC, every chunk's
 * CRC, the chained whole-file CRC and all sizes; no decompression), so a
 * caller never consumes bytes from a snapshot that turns out corrupt. A
 * snapshot that fails verification with -EBADMSG is renamed to
 * <name>.broken with a SNAP_LOG_WARN message and the next older one is
 * tried. I/O errors (-EIO, -EACCES, ...) and -EPROTONOSUPPORT (a newer
 * format: a downgrade the operator must see) stop the search and are
 * returned.
 * -ENOENT if no valid snapshot exists (including a missing directory).
 * On success *r is returned; free it with snap_reader_free(). */
int snap_reader_open(const struct snap_options *opts,
                     struct snap_reader **r);

/* Open the snapshot (term, index) exactly, with the same verification but
 * no fallback and no renaming: -ENOENT if absent, -EBADMSG if corrupt. */
int snap_reader_open_at(const struct snap_options *opts, uint64_t term,
                        uint64_t index, struct snap_reader **r);

/* Accessors; valid until snap_reader_free. The meta pointer is borrowed
 * (owned by r); *len receives its length (the pointer may be NULL if 0). */
uint64_t snap_reader_term(const struct snap_reader *r);
uint64_t snap_reader_index(const struct snap_reader *r);
const void *snap_reader_meta(const struct snap_reader *r, size_t *len);
uint64_t snap_reader_image_size(const struct snap_reader *r); /* uncompressed */
uint64_t snap_reader_file_size(const struct snap_reader *r);  /* on disk */
const char *snap_reader_path(const struct snap_reader *r);

/* Read up to len bytes of the uncompressed image into buf (borrowed for the
 * call). *nread receives the count: less than len only at the end of the
 * image, 0 once it is exhausted. Chunk CRCs are checked again as they are
 * decompressed (-EBADMSG if the file changed since open). */
int snap_reader_read(struct snap_reader *r, void *buf, size_t len,
                     size_t *nread);

/* store_load()'s callback: data is the struct snap_reader *. Fills exactly
 * len bytes and returns 0, or returns -ENODATA (the short-image code
 * store.h names) if the image ends first, or an error from
 * snap_reader_read. Usage: store_load(s, snap_read_cb, r). */
int snap_read_cb(void *data, void *buf, size_t len);

/* Read the verified file itself, verbatim from byte 0, for sending to a
 * follower (which feeds it to snap_writer_write_file). Independent of the
 * image cursor of snap_reader_read. *nread is 0 at end of file. */
int snap_reader_read_file(struct snap_reader *r, void *buf, size_t len,
                          size_t *nread);

void snap_reader_free(struct snap_reader *r);

#endif /* ETCFS_SNAP_H */
