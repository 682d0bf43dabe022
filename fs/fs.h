/* fs.h - the etcd v2 key tree as a FUSE filesystem (libfuse3 low-level API
 * driven from a libuv loop), over an asynchronous backend interface that
 * raftd (in-process), the HTTP client, or a test store can implement.
 * The mapping from shell operations to store operations is in docs/fs.md. */
#ifndef ETCFS_FS_H
#define ETCFS_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

struct fs;

/* ------------------------------------------------------------------ */
/* Status codes and the one errno table                                 */
/* ------------------------------------------------------------------ */

/* Every backend completion carries an int status:
 *   0        success;
 *   > 0      an etcd v2 error code (100 key not found, 101 compare failed,
 *            ..., the numbers of store.h's STORE_ECODE_*);
 *   < 0      a negative errno from the transport (-EIO unreachable, no
 *            leader after the backend's bounded wait, -ECANCELED when the
 *            backend is shutting down, -ENOMEM).
 * fs_status_errno() is the one table turning a status into the negative
 * errno the FUSE edge replies with: 100 ENOENT, 101 ECANCELED (compare
 * failed), 102 EISDIR, 104 ENOTDIR, 105 EEXIST, 106 EPERM, 107 EROFS,
 * 108 ENOTEMPTY, 110 EACCES, 200-212 EINVAL, 300/301 EIO, 401 ERANGE
 * (history cleared), anything else EIO; negative statuses pass through. */
int fs_status_errno(int status);

/* ------------------------------------------------------------------ */
/* Backend interface                                                    */
/* ------------------------------------------------------------------ */

/* Metadata of one node, as the store's NodeExtern. */
struct fs_meta {
    bool dir;
    uint64_t created_index;
    uint64_t modified_index;
    int64_t expiration; /* absolute ns since the epoch; 0 = permanent */
    int64_t ttl;        /* seconds left, rounded up; 0 = permanent */
};

/* One child in a listing. name is the last path element only. */
struct fs_dirent {
    const char *name;
    struct fs_meta meta;
};

/* A write (etcd PUT) with etcd's conditions. All pointers borrowed for the
 * duration of the backend call (the backend copies what it keeps). */
struct fs_set_args {
    const char *path;       /* full store path, e.g. "/config/a" */
    const void *value;      /* ignored for dir */
    size_t value_len;
    bool dir;               /* create (or re-TTL) a directory */
    int prev_exist;         /* -1 not given, 0 create only, 1 must exist */
    uint64_t prev_index;    /* 0 = not given */
    const void *prev_value; /* prev_value_len 0 = not given */
    size_t prev_value_len;
    int64_t ttl;            /* seconds; 0 = no TTL (removes one) */
};

/* One watch event. json is exactly what etcd's HTTP watch stream writes
 * for it (store_event_json: one line ending in "\n"); key/prev_key/action/
 * index are parsed out of it for cache invalidation. All borrowed for the
 * duration of the callback. On a final status-401 call json is the error's
 * JSON line ({"errorCode":401,...}\n) and the other fields are empty. */
struct fs_event {
    const char *json;
    size_t json_len;
    const char *action;   /* "set", "create", "delete", "expire", "rename"... */
    const char *key;      /* node.key */
    const char *prev_key; /* prevNode.key, NULL when absent */
    bool dir;             /* node.dir, or prevNode.dir (etcd leaves dir
                           * out of an expire event's node) */
    uint64_t index;       /* node.modifiedIndex (the event's index) */
};

struct fs_backend_watch; /* opaque, the backend's */

/* Completion callbacks. arg is the caller's, passed through untouched.
 * Every pointer argument is borrowed for the duration of the callback. */
typedef void (*fs_get_cb)(void *arg, int status, const struct fs_meta *meta,
                          const void *value, size_t value_len);
typedef void (*fs_list_cb)(void *arg, int status, const struct fs_meta *meta,
                           const struct fs_dirent *ents, size_t n_ents);
typedef void (*fs_write_cb)(void *arg, int status, const struct fs_meta *meta);
typedef void (*fs_post_cb)(void *arg, int status, const char *key,
                           const struct fs_meta *meta);
/* Streaming: called with status 0 once per event, in index order. A call
 * with status != 0 is the last (401 history cleared, -ECANCELED when the
 * backend closes); the handle is then dead and must not be cancelled. */
typedef void (*fs_watch_cb)(void *arg, int status, const struct fs_event *ev);

/* The backend: a table of operations over a void *data.
 *
 * Async contract (every operation but index and watch_cancel, which are
 * synchronous): if the call returns a negative errno, the callback is
 * never called; if it returns 0, the callback is called exactly once
 * (possibly before the call returns; watch: once per event until a final
 * non-zero status or watch_cancel), on the loop thread that drives the
 * fs. Paths are full store paths, borrowed for the call only. */
struct fs_backend_ops {
    /* Read one node: a file's value, or a directory's metadata (value
     * "" of length 0). */
    int (*get)(void *data, const char *path, fs_get_cb cb, void *arg);
    /* A directory's children, sorted, hidden ("_") names left out; meta is
     * the directory's own. A file gives status 104. */
    int (*list)(void *data, const char *path, fs_list_cb cb, void *arg);
    /* PUT with conditions; mkdir is set with dir=true, prev_exist=0. */
    int (*set)(void *data, const struct fs_set_args *a, fs_write_cb cb,
               void *arg);
    /* DELETE; recursive implies dir. meta (on success) is the new index's
     * node with the old metadata. */
    int (*del)(void *data, const char *path, bool dir, bool recursive,
               fs_write_cb cb, void *arg);
    /* POST: create an in-order key under dir_path; cb gets its full key. */
    int (*post)(void *data, const char *dir_path, const void *value,
                size_t value_len, fs_post_cb cb, void *arg);
    /* Move a node (file or directory) in one store operation. A backend
     * without it returns -ENOSYS (the fs then replies EXDEV so mv copies). */
    int (*rename)(void *data, const char *old_path, const char *new_path,
                  fs_write_cb cb, void *arg);
    /* Recursive stream watch on path: every event with index >= since (the
     * history first, then live), in order. since 0 = from the next index.
     * *w (out) is the handle for watch_cancel. */
    int (*watch)(void *data, const char *path, uint64_t since, fs_watch_cb cb,
                 void *arg, struct fs_backend_watch **w);
    /* Stop a watch synchronously: cb is not called again, not even with a
     * cancel status. */
    void (*watch_cancel)(void *data, struct fs_backend_watch *w);
    /* The current index (X-Etcd-Index) as this member knows it. */
    uint64_t (*index)(void *data);
    /* Optional (NULL if the backend cannot): cb once this member has
     * applied everything committed when barrier was called (Raft's
     * ReadIndex), so a read after it is linearizable; meta is NULL. Used
     * by -o quorum before each open's read. */
    int (*barrier)(void *data, fs_write_cb cb, void *arg);
    /* Optional: cb with status 0 (meta NULL) as soon as a write could be
     * proposed (a leader is known), or -EIO after the backend's bounded
     * wait. Opens for writing ask it first: a shell ignores close(2)'s
     * error, so `echo v > key` on a cluster without a leader hears of it
     * only from open. */
    int (*writable)(void *data, fs_write_cb cb, void *arg);
    /* Optional: called on the loop thread after a batch of kernel requests
     * was served. One `echo v > key` is OPEN, WRITE and FLUSH, each sent
     * as soon as the previous answer arrives: a backend that keeps its
     * loop polling for a moment after work (raftd's single voter) does so
     * after these too, instead of sleeping between them. */
    void (*served)(void *data);
};

/* ------------------------------------------------------------------ */
/* The filesystem                                                       */
/* ------------------------------------------------------------------ */

struct fs_options {
    const char *mountpoint; /* borrowed until fs_new returns */
    const char *root;       /* store subtree to mount, "" or "/" = all */
    uid_t uid;              /* owner shown on every node */
    gid_t gid;
    mode_t file_mode;       /* permission bits of files (default 0644) */
    mode_t dir_mode;        /* of directories (default 0755) */
    bool allow_other;
    bool ro;                /* mount read-only: every write is EROFS */
    bool debug;             /* libfuse's -d */
    bool no_inotify;        /* do not replay remote changes for inotify */
    bool quorum;            /* linearizable opens through ops->barrier */
    bool cas;               /* a key's store at close is conditional on the
                             * modifiedIndex seen at open (prevIndex), or
                             * on its absence (prevExist=false) */
    double entry_timeout;   /* kernel cache timeouts, seconds */
    double attr_timeout;
    size_t max_value;       /* larger writes fail with EFBIG */
    size_t keep_inodes;     /* idle inodes kept for stable numbers */
    unsigned leader_wait_ms; /* not used by fs: for the backend, how long a
                              * write waits for a leader before EIO (0: the
                              * backend's default) */
    /* Called once on the loop thread when the kernel ends the session
     * (fusermount3 -u, umount): the owner should then fs_close(). */
    void (*exit_cb)(void *arg);
    void *exit_arg;
};

/* Defaults: root "/", the calling uid/gid, 0644/0755, timeouts 1 s,
 * max_value 1.5 MiB (etcd's request limit), keep_inodes 65536. */
void fs_options_init(struct fs_options *o);

/* Parse one comma-separated -o string (uid=N, gid=N, mode=OCTAL for files
 * (directories get the x bits where r is set), allow_other, ro, root=PATH,
 * debug, max_value=BYTES, timeout=SECONDS, noinotify, quorum, cas,
 * keep_inodes=N, leader_wait=SECONDS) into o.
 * Unknown options are -EINVAL. opts is borrowed; o->root then points into *opts_copy, a heap
 * copy the caller frees with free() after fs_close. */
int fs_options_parse(struct fs_options *o, const char *opts, char **opts_copy);

/* Mount opt->mountpoint and start serving on loop. ops/data are borrowed
 * until fs_close has completed; the backend is used only from loop's
 * thread. Returns 0 and *out, or a negative errno (nothing mounted). */
int fs_new(uv_loop_t *loop, const struct fs_backend_ops *ops, void *data,
           const struct fs_options *opt, struct fs **out);

/* Unmount and release. Pending FUSE requests are answered (EIO/EINTR),
 * watches cancelled; the loop's handles close asynchronously, so keep
 * running loop afterwards until it has no more work. Backend operations
 * still in flight keep the memory alive until their callbacks run. */
void fs_close(struct fs *fs);

#endif /* ETCFS_FS_H */
