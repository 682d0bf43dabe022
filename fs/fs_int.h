/* fs_int.h - internals of fs/ shared by its files: the inode table, open
 * file handles, deferred-request contexts and the notifier queue. */
#ifndef ETCFS_FS_INT_H
#define ETCFS_FS_INT_H

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <time.h>

#include "fs.h"

#define FS_WATCH_NAME ".watch"
#define FS_NEW_NAME ".new"
/* Longest name (bytes) of one path element, as most Linux filesystems. */
#define FS_NAME_MAX 255
/* Bytes of undelivered events one .watch fd may hold before its stream is
 * ended with a 401 line. */
#define FS_WATCH_QUEUE_MAX (64u * 1024 * 1024)
/* Remote changes waiting to be replayed for inotify beyond which further
 * ones are not replayed (watchers miss them, as on IN_Q_OVERFLOW). */
#define FS_REPLAY_QUEUE_MAX 16384u

enum {
    FS_KIND_NODE = 0, /* a key or directory of the store */
    FS_KIND_WATCH,    /* DIR/.watch */
    FS_KIND_NEW,      /* DIR/.new */
    FS_KIND_DIR,      /* only for handles: an open directory */
    FS_KIND_NOOP,     /* only for handles: the replayer's, does nothing */
};

/* Jobs of the notifier thread. */
enum {
    FS_JOB_INVAL_INODE,
    FS_JOB_INVAL_ENTRY,
    FS_JOB_REPLAY, /* redo a remote change through the mount for inotify */
};

/* What a replay job does through the mount (and what the daemon answers
 * the replayer's requests with: the state before the change). */
enum {
    FS_REPLAY_CREATE_FILE, /* open(O_CREAT|O_EXCL) + close */
    FS_REPLAY_CREATE_DIR,  /* mkdir */
    FS_REPLAY_MODIFY,      /* open + 1-byte write (ignored) + close */
    FS_REPLAY_DELETE_FILE, /* unlink */
    FS_REPLAY_DELETE_DIR,  /* rmdir */
    FS_REPLAY_RENAME,      /* rename(rel2, rel) */
};

/* File types of struct fs_inode.kernel_type. */
enum { FS_TYPE_FILE = 1, FS_TYPE_DIR = 2 };

/* One inode: a mount-relative path ("" root, "/a/b"; for .watch/.new the
 * directory's path) with the kernel's lookup count. The number stays the
 * same for a path as long as the kernel or an open file holds it. A shadow
 * inode (the replayer's view of a name before a remote change) is never
 * in the path table, so real lookups never share its number. */
struct fs_inode {
    fuse_ino_t ino;
    char *path;
    int kind;
    uint64_t nlookup;
    unsigned opens;        /* open handles pointing here */
    unsigned pending;      /* created here, not yet in the store */
    unsigned storing;      /* handles' sets in flight (fh_store) */
    struct fs_ctx *open_waiters; /* opens that load the value once no set
                                  * is in flight (a release's set does not
                                  * hold close(2) up) */
    /* Versions (modifiedIndex) of what the kernel holds: the size in its
     * last attribute reply (0 = unknown), and the pages it may cache
     * (those of the last open allowed to use the page cache). */
    uint64_t attr_index;
    uint64_t cache_index;
    size_t pending_size;
    bool hashed;           /* in the path table (false once replaced) */
    bool moved;            /* scratch for inode_move */
    bool in_lru;           /* on fs->lru (idle, kept for its number) */
    bool known_dir;        /* a directory, while hashed (dir_cached) */
    /* The file type the kernel was last told for this inode number:
     * 0 none yet, FS_TYPE_FILE or FS_TYPE_DIR. The kernel marks an inode
     * bad (EIO) if its type ever changes, so a path that turns from a
     * directory into a key (or back) must get a new number. */
    unsigned char kernel_type;
    struct fs_inode *lru_prev, *lru_next;
    struct fs_inode *next_ino;
    struct fs_inode *next_path;
};

/* One queued .watch line. */
struct fs_line {
    struct fs_line *next;
    size_t len;
    size_t pos; /* bytes already read */
    char data[];
};

struct fs_dent {
    const char *name;
    bool dir;
};

/* An open file or directory. */
struct fs_fh {
    struct fs *fs;
    struct fs_inode *in;
    int kind;
    struct fs_fh *prev, *next; /* fs->fhs */
    bool released;
    /* keys and .new: the value being written */
    char *buf;
    size_t len, cap;
    bool loaded, dirty, flushing, excl, append, pending_create;
    /* Dirty only because the open truncated (no write or truncate since,
     * no flush deferred yet): the first flush then stores nothing. A
     * shell's `echo v > key` opens, dup2()s the fd to 1 and closes the
     * original (a FLUSH) before it writes; storing then would publish an
     * empty value first. The store comes with the next flush (the shell's
     * last close, even with nothing written: `: > key`), an fsync or the
     * release. */
    bool trunc_only;
    /* -o cas: the store at close is conditional on cas_index, the key's
     * modifiedIndex at open (then of this handle's last store); 0 = the
     * key was absent, so the store is a create (prevExist=false). */
    bool cas;
    uint64_t cas_index;
    /* .new */
    char *created; /* "name\n" once posted */
    size_t rpos;
    /* .watch */
    struct fs_backend_watch *bw;
    struct fs_line *qhead, *qtail;
    size_t qbytes;
    bool ended, nonblock, interrupted;
    int start_err;
    fuse_req_t rreq; /* a blocked read */
    size_t rsize;
    struct fuse_pollhandle *ph;
    /* directories: a snapshot of the listing taken at opendir */
    struct fs_dent *dents;
    char *names;
    size_t n_dents;
};

/* The context of one backend call whose completion replies to req. */
struct fs_ctx {
    struct fs *fs;
    fuse_req_t req; /* NULL: nothing to reply (release) */
    fuse_ino_t ino;
    char *path;
    char *path2;
    char *buf;
    size_t len, len2;
    struct fs_fh *fh;
    struct fuse_file_info fi;
    struct fs_local *local;
    struct fs_local *local2; /* rename over an empty directory: its rmdir */
    int step;                /* rename: 1 once the target dir was removed */
    struct fs_ctx *next_waiter; /* in fh->in->open_waiters */
};

/* One job for the notifier thread: invalidate an entry (parent, name) or
 * an inode's attributes and data (ino), or replay a remote change. */
struct fs_notify {
    struct fs_notify *next;
    int type;
    int rkind;     /* FS_REPLAY_* */
    bool dir;      /* replay: the node is a directory */
    fuse_ino_t ino;
    fuse_ino_t parent;
    char *rel;     /* replay: mount-relative target path */
    char *rel2;    /* replay: rename source */
    char name[];
};

/* A mutation this mount has asked the backend for and not yet seen
 * completed: its event is local (the kernel already raised inotify events
 * for it), not a remote change to replay. */
struct fs_local {
    struct fs_local *prev, *next;
    bool post; /* path is the directory of a POST */
    /* A flush's set: the kernel already holds the value it wrote, so the
     * cache invalidation of the first event on path is deferred to the
     * completion and dropped if that event was this set's (same index). */
    bool defer;
    bool seen_entry;     /* the deferred invalidation includes the name */
    uint64_t seen_index; /* the deferred event's index; 0 = none */
    uint64_t done_index; /* the set's own index, once completed */
    char path[];
};

struct fs {
    uv_loop_t *loop;
    const struct fs_backend_ops *ops;
    void *data;
    struct fs_options opt;
    char *root; /* store prefix without trailing "/" ("" = whole tree) */
    struct timespec mount_time;

    struct fuse_session *se;
    struct fuse_buf fbuf;
    uv_poll_t poll;
    uv_timer_t defer;
    int open_handles;
    bool exited, closing, finishing;
    bool njoined; /* the notifier thread is joined (fs_close) */
    /* The kernel's INIT request, seen by io_read, until its reply is
     * written (io_writev): its unique, and whether the kernel offered
     * FUSE_HANDLE_KILLPRIV_V2. */
    uint64_t init_unique;
    bool kernel_killpriv_v2;
    unsigned inflight;

    struct fs_inode **by_ino, **by_path;
    size_t n_buckets, n_inodes;
    struct fs_inode *lru_head, *lru_tail; /* idle inodes, oldest first */
    size_t n_lru;
    fuse_ino_t next_ino;
    struct fs_fh *fhs;
    struct fs_backend_watch *root_watch;

    pthread_t nthread;
    pthread_mutex_t nlock;
    pthread_cond_t ncond;
    struct fs_notify *nhead, *ntail;
    bool nstop;
    /* inotify replay (under nlock): the replayer's thread id and the job
     * it is running, so the loop can answer its requests. */
    char *mountpoint; /* absolute */
    pid_t replay_tid;
    struct fs_notify *replay_cur;
    unsigned n_replays; /* replay jobs queued or running */
    struct fs_local *locals;
};

#endif /* ETCFS_FS_INT_H */
