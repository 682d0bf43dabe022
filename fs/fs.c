/* fs.c - the FUSE front-end: libfuse3 low-level operations over the
 * asynchronous backend of fs.h, driven from a libuv loop (uv_poll on the
 * session fd), so replies may be deferred (a .watch read replies when an
 * event arrives) and the backend needs no locks. docs/fs.md. */
#define FUSE_USE_VERSION 34
#include "fs.h"
#include "fs_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <linux/fuse.h>

/* ------------------------------------------------------------------ */
/* The one status -> errno table                                        */
/* ------------------------------------------------------------------ */

int fs_status_errno(int status)
{
    if (status <= 0)
        return status;
    switch (status) {
    case 100: return -ENOENT;
    case 101: return -ECANCELED; /* compare failed: a lost race, retry */
    case 102: return -EISDIR;
    case 104: return -ENOTDIR;
    case 105: return -EEXIST;
    case 106: return -EPERM;
    case 107: return -EROFS;
    case 108: return -ENOTEMPTY;
    case 110: return -EACCES;
    case 401: return -ERANGE;
    default:
        if (status >= 200 && status < 300)
            return -EINVAL;
        return -EIO;
    }
}

/* ------------------------------------------------------------------ */
/* Options                                                              */
/* ------------------------------------------------------------------ */

void fs_options_init(struct fs_options *o)
{
    memset(o, 0, sizeof(*o));
    o->root = "/";
    o->uid = getuid();
    o->gid = getgid();
    o->file_mode = 0644;
    o->dir_mode = 0755;
    o->entry_timeout = 1.0;
    o->attr_timeout = 1.0;
    o->max_value = 1536 * 1024;
    o->keep_inodes = 65536;
}

static int parse_ull(const char *s, int base, unsigned long long *out)
{
    char *end;
    if (*s == '\0' || *s == '-')
        return -EINVAL;
    errno = 0;
    *out = strtoull(s, &end, base);
    if (errno != 0 || *end != '\0')
        return -EINVAL;
    return 0;
}

/* A number of seconds from min to a million (no NaN, no infinity). */
static int parse_seconds(const char *s, double min, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (end == s || *end != '\0' || errno != 0 || !(d >= min && d <= 1e6))
        return -EINVAL;
    *out = d;
    return 0;
}

int fs_options_parse(struct fs_options *o, const char *opts, char **opts_copy)
{
    char *copy = strdup(opts);
    char *save = NULL;
    unsigned long long v;
    int rv = 0;

    if (copy == NULL)
        return -ENOMEM;
    for (char *t = strtok_r(copy, ",", &save); t != NULL;
         t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        const char *val = eq != NULL ? eq + 1 : NULL;
        if (eq != NULL)
            *eq = '\0';
        if (strcmp(t, "allow_other") == 0 && val == NULL) {
            o->allow_other = true;
        } else if (strcmp(t, "ro") == 0 && val == NULL) {
            o->ro = true;
        } else if (strcmp(t, "rw") == 0 && val == NULL) {
            o->ro = false;
        } else if (strcmp(t, "debug") == 0 && val == NULL) {
            o->debug = true;
        } else if (strcmp(t, "noinotify") == 0 && val == NULL) {
            o->no_inotify = true;
        } else if (strcmp(t, "quorum") == 0 && val == NULL) {
            o->quorum = true;
        } else if (strcmp(t, "cas") == 0 && val == NULL) {
            o->cas = true;
        } else if (strcmp(t, "root") == 0 && val != NULL && val[0] == '/') {
            o->root = val;
        } else if (val == NULL) {
            rv = -EINVAL;
        } else if (strcmp(t, "uid") == 0) {
            if ((rv = parse_ull(val, 10, &v)) == 0)
                o->uid = (uid_t)v;
        } else if (strcmp(t, "gid") == 0) {
            if ((rv = parse_ull(val, 10, &v)) == 0)
                o->gid = (gid_t)v;
        } else if (strcmp(t, "mode") == 0) {
            if ((rv = parse_ull(val, 8, &v)) == 0 && v > 0777)
                rv = -EINVAL;
            if (rv == 0) {
                o->file_mode = (mode_t)v;
                /* Directories are searchable wherever they are readable. */
                o->dir_mode = (mode_t)(v | ((v & 0444) >> 2));
            }
        } else if (strcmp(t, "max_value") == 0) {
            if ((rv = parse_ull(val, 10, &v)) == 0)
                o->max_value = (size_t)v;
        } else if (strcmp(t, "keep_inodes") == 0) {
            if ((rv = parse_ull(val, 10, &v)) == 0)
                o->keep_inodes = (size_t)v;
        } else if (strcmp(t, "timeout") == 0) {
            double d;
            if ((rv = parse_seconds(val, 0, &d)) == 0)
                o->entry_timeout = o->attr_timeout = d;
        } else if (strcmp(t, "leader_wait") == 0) {
            double d;
            if ((rv = parse_seconds(val, 0.001, &d)) == 0)
                o->leader_wait_ms = (unsigned)(d * 1000 + 0.5);
        } else {
            rv = -EINVAL;
        }
        if (rv != 0)
            break;
    }
    if (rv != 0) {
        free(copy);
        return rv;
    }
    *opts_copy = copy;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Paths                                                                */
/* ------------------------------------------------------------------ */

/* Inode paths are relative to the mount root: "" for the root, "/a/b"
 * below it. Special files (.watch, .new) have their directory's path. */

static char *path_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + 1 + lb + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

/* The store path of a mount-relative path. */
static char *store_path(const struct fs *fs, const char *rel)
{
    size_t lr = strlen(fs->root), lp = strlen(rel);
    char *p = malloc(lr + lp + 2);
    if (p == NULL)
        return NULL;
    memcpy(p, fs->root, lr);
    memcpy(p + lr, rel, lp + 1);
    if (p[0] == '\0') {
        p[0] = '/';
        p[1] = '\0';
    }
    return p;
}

/* The mount-relative path of a store key, NULL if outside the mount. */
static const char *rel_path(const struct fs *fs, const char *key)
{
    size_t lr = strlen(fs->root);
    if (strncmp(key, fs->root, lr) != 0)
        return NULL;
    if (key[lr] != '\0' && key[lr] != '/')
        return NULL;
    return key + lr;
}

static bool is_special(const char *name)
{
    return strcmp(name, FS_WATCH_NAME) == 0 || strcmp(name, FS_NEW_NAME) == 0;
}

/* ------------------------------------------------------------------ */
/* Inode table: path <-> inode, with kernel lookup counts               */
/* ------------------------------------------------------------------ */

static uint64_t hash_str(const char *s, int kind)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)kind;
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int table_grow(struct fs *fs)
{
    size_t n = fs->n_buckets == 0 ? 256 : fs->n_buckets * 2;
    struct fs_inode **by_ino = calloc(n, sizeof(*by_ino));
    struct fs_inode **by_path = calloc(n, sizeof(*by_path));
    if (by_ino == NULL || by_path == NULL) {
        free(by_ino);
        free(by_path);
        return -ENOMEM;
    }
    for (size_t i = 0; i < fs->n_buckets; i++) {
        struct fs_inode *in, *next;
        for (in = fs->by_ino[i]; in != NULL; in = next) {
            next = in->next_ino;
            in->next_ino = by_ino[in->ino & (n - 1)];
            by_ino[in->ino & (n - 1)] = in;
        }
        for (in = fs->by_path[i]; in != NULL; in = next) {
            next = in->next_path;
            size_t b = hash_str(in->path, in->kind) & (n - 1);
            in->next_path = by_path[b];
            by_path[b] = in;
        }
    }
    free(fs->by_ino);
    free(fs->by_path);
    fs->by_ino = by_ino;
    fs->by_path = by_path;
    fs->n_buckets = n;
    return 0;
}

static struct fs_inode *inode_get(struct fs *fs, fuse_ino_t ino)
{
    struct fs_inode *in = fs->by_ino[ino & (fs->n_buckets - 1)];
    while (in != NULL && in->ino != ino)
        in = in->next_ino;
    return in;
}

static struct fs_inode *inode_find(struct fs *fs, const char *path, int kind)
{
    size_t b = hash_str(path, kind) & (fs->n_buckets - 1);
    struct fs_inode *in = fs->by_path[b];
    while (in != NULL && (in->kind != kind || strcmp(in->path, path) != 0))
        in = in->next_path;
    return in;
}

static void path_unlink(struct fs *fs, struct fs_inode *in)
{
    if (!in->hashed)
        return;
    struct fs_inode **pp =
        &fs->by_path[hash_str(in->path, in->kind) & (fs->n_buckets - 1)];
    while (*pp != in)
        pp = &(*pp)->next_path;
    *pp = in->next_path;
    in->hashed = false;
}

static void path_link(struct fs *fs, struct fs_inode *in)
{
    size_t b = hash_str(in->path, in->kind) & (fs->n_buckets - 1);
    in->next_path = fs->by_path[b];
    fs->by_path[b] = in;
    in->hashed = true;
}

/* The inode for (path, kind), created if absent. Does not count a lookup. */
static struct fs_inode *inode_obtain(struct fs *fs, const char *path, int kind)
{
    struct fs_inode *in = inode_find(fs, path, kind);
    if (in != NULL)
        return in;
    if (fs->n_inodes + 1 > fs->n_buckets && table_grow(fs) != 0)
        return NULL;
    in = calloc(1, sizeof(*in));
    if (in == NULL)
        return NULL;
    in->path = strdup(path);
    if (in->path == NULL) {
        free(in);
        return NULL;
    }
    in->kind = kind;
    in->ino = fs->next_ino++;
    in->next_ino = fs->by_ino[in->ino & (fs->n_buckets - 1)];
    fs->by_ino[in->ino & (fs->n_buckets - 1)] = in;
    path_link(fs, in);
    fs->n_inodes++;
    return in;
}

static void inode_maybe_free(struct fs *fs, struct fs_inode *in);

/* The inode for a key or directory at path that the kernel is about to be
 * told is of type dir. If the path's inode was shown to the kernel with
 * the other type (the key was deleted and recreated as a directory, or the
 * reverse, and the kernel may still hold the old inode), the old number is
 * orphaned until forgotten and the path gets a new one: reusing it would
 * make the kernel mark the inode bad and answer EIO. */
static struct fs_inode *inode_obtain_typed(struct fs *fs, const char *path,
                                           bool dir)
{
    unsigned char t = dir ? FS_TYPE_DIR : FS_TYPE_FILE;
    struct fs_inode *in = inode_find(fs, path, FS_KIND_NODE);
    if (in != NULL && in->kernel_type != 0 && in->kernel_type != t &&
        in->ino != FUSE_ROOT_ID) {
        path_unlink(fs, in);
        in->known_dir = false;
        inode_maybe_free(fs, in);
    }
    in = inode_obtain(fs, path, FS_KIND_NODE);
    if (in != NULL)
        in->kernel_type = t;
    return in;
}

/* A new number for the replayer's view of path (a shadow, see
 * shadow_entry), outside the path table: nothing but the replayer's own
 * requests ever reaches it, and it is freed once the kernel forgets it. */
static struct fs_inode *inode_new_shadow(struct fs *fs, const char *path,
                                         bool dir)
{
    if (fs->n_inodes + 1 > fs->n_buckets && table_grow(fs) != 0)
        return NULL;
    struct fs_inode *in = calloc(1, sizeof(*in));
    if (in == NULL)
        return NULL;
    in->path = strdup(path);
    if (in->path == NULL) {
        free(in);
        return NULL;
    }
    in->kind = FS_KIND_NODE;
    in->kernel_type = dir ? FS_TYPE_DIR : FS_TYPE_FILE;
    in->ino = fs->next_ino++;
    in->next_ino = fs->by_ino[in->ino & (fs->n_buckets - 1)];
    fs->by_ino[in->ino & (fs->n_buckets - 1)] = in;
    fs->n_inodes++;
    return in;
}

static void lru_remove(struct fs *fs, struct fs_inode *in)
{
    if (!in->in_lru)
        return;
    if (in->lru_prev != NULL)
        in->lru_prev->lru_next = in->lru_next;
    else
        fs->lru_head = in->lru_next;
    if (in->lru_next != NULL)
        in->lru_next->lru_prev = in->lru_prev;
    else
        fs->lru_tail = in->lru_prev;
    in->lru_prev = in->lru_next = NULL;
    in->in_lru = false;
    fs->n_lru--;
}

/* Remember an idle inode (no lookups, no opens) of a live path; beyond
 * opt.keep_inodes of them the oldest are forgotten here too. An inode that
 * became busy again is only dropped from the list when it reaches the
 * head (lazy), and kept. */
static void lru_add(struct fs *fs, struct fs_inode *in)
{
    if (in->in_lru)
        return;
    in->lru_prev = fs->lru_tail;
    in->lru_next = NULL;
    if (fs->lru_tail != NULL)
        fs->lru_tail->lru_next = in;
    else
        fs->lru_head = in;
    fs->lru_tail = in;
    in->in_lru = true;
    fs->n_lru++;
    while (fs->n_lru > fs->opt.keep_inodes) {
        struct fs_inode *old = fs->lru_head;
        lru_remove(fs, old);
        if (old->nlookup == 0 && old->opens == 0) {
            path_unlink(fs, old);
            inode_maybe_free(fs, old);
        }
    }
}

/* Free in once its path is gone from the store (or replaced) and neither
 * the kernel (lookups) nor an open file uses it. Idle inodes of live paths
 * are kept (up to opt.keep_inodes, least recently idle dropped first), so
 * a path keeps its number after the kernel forgets it. */
static void inode_maybe_free(struct fs *fs, struct fs_inode *in)
{
    if (in->nlookup > 0 || in->opens > 0 || in->ino == FUSE_ROOT_ID)
        return;
    if (in->hashed) {
        lru_add(fs, in);
        return;
    }
    lru_remove(fs, in);
    struct fs_inode **pp = &fs->by_ino[in->ino & (fs->n_buckets - 1)];
    while (*pp != in)
        pp = &(*pp)->next_ino;
    *pp = in->next_ino;
    fs->n_inodes--;
    free(in->path);
    free(in);
}

/* After a rename: every inode at old or below it moves under new. */
static int inode_move(struct fs *fs, const char *old, const char *new_)
{
    size_t lo = strlen(old);
    /* Done already (the rename's event and its reply both call this). */
    if (inode_find(fs, old, FS_KIND_NODE) == NULL)
        return 0;
    struct fs_inode *victim = inode_find(fs, new_, FS_KIND_NODE);
    if (victim != NULL) {
        path_unlink(fs, victim); /* replaced: orphaned until forgotten */
        inode_maybe_free(fs, victim);
    }
    for (size_t i = 0; i < fs->n_buckets; i++) {
        for (struct fs_inode *in = fs->by_ino[i]; in != NULL;
             in = in->next_ino) {
            if (!in->hashed || strncmp(in->path, old, lo) != 0 ||
                (in->path[lo] != '\0' && in->path[lo] != '/'))
                continue;
            char *p = malloc(strlen(new_) + strlen(in->path + lo) + 1);
            if (p == NULL)
                return -ENOMEM;
            strcpy(p, new_);
            strcat(p, in->path + lo);
            path_unlink(fs, in);
            free(in->path);
            in->path = p;
            in->moved = true;
        }
    }
    /* Relink after the walk so a moved inode is not visited twice. */
    for (size_t i = 0; i < fs->n_buckets; i++)
        for (struct fs_inode *in = fs->by_ino[i]; in != NULL;
             in = in->next_ino)
            if (in->moved) {
                in->moved = false;
                path_link(fs, in);
            }
    return 0;
}

/* The store deleted path (and its subtree): unhash their inodes so the
 * numbers are not reused for a new key there, and free unused ones. */
static void inode_drop_tree(struct fs *fs, const char *path)
{
    size_t l = strlen(path);
    for (size_t i = 0; i < fs->n_buckets; i++) {
        struct fs_inode *in = fs->by_ino[i], *next;
        for (; in != NULL; in = next) {
            next = in->next_ino;
            if (!in->hashed || in->ino == FUSE_ROOT_ID ||
                strncmp(in->path, path, l) != 0 ||
                (in->path[l] != '\0' && in->path[l] != '/'))
                continue;
            path_unlink(fs, in);
            inode_maybe_free(fs, in);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Attributes                                                           */
/* ------------------------------------------------------------------ */

static void attr_fill(const struct fs *fs, struct stat *st, fuse_ino_t ino,
                      int kind, bool dir, size_t size)
{
    mode_t fmode = fs->opt.file_mode, dmode = fs->opt.dir_mode;
    if (fs->opt.ro) {
        fmode &= ~0222u;
        dmode &= ~0222u;
    }
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    if (kind == FS_KIND_WATCH)
        st->st_mode = S_IFREG | (fmode & 0644);
    else if (kind == FS_KIND_NEW)
        st->st_mode = S_IFREG | (fmode & 0666);
    else
        st->st_mode = dir ? (S_IFDIR | dmode) : (S_IFREG | fmode);
    st->st_nlink = dir ? 2 : 1;
    st->st_uid = fs->opt.uid;
    st->st_gid = fs->opt.gid;
    st->st_size = (off_t)size;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((size + 511) / 512);
    st->st_atim = st->st_mtim = st->st_ctim = fs->mount_time;
}

static void entry_fill(const struct fs *fs, struct fuse_entry_param *e,
                       const struct fs_inode *in, bool dir, size_t size)
{
    memset(e, 0, sizeof(*e));
    e->ino = in->ino;
    e->attr_timeout = fs->opt.attr_timeout;
    e->entry_timeout = fs->opt.entry_timeout;
    attr_fill(fs, &e->attr, in->ino, in->kind, dir, size);
}

/* ------------------------------------------------------------------ */
/* Invalidation: queued to a helper thread                              */
/* ------------------------------------------------------------------ */

/* fuse_lowlevel_notify_inval_* may wait on the kernel (page locks held by
 * a read that only this loop can answer), so they never run on the loop
 * thread: jobs go to the notifier thread, which only calls libfuse and,
 * for replays, makes syscalls on the mount that the loop answers. */
static void job_push(struct fs *fs, struct fs_notify *n)
{
    pthread_mutex_lock(&fs->nlock);
    if (fs->ntail != NULL)
        fs->ntail->next = n;
    else
        fs->nhead = n;
    fs->ntail = n;
    pthread_cond_signal(&fs->ncond);
    pthread_mutex_unlock(&fs->nlock);
}

static void job_free(struct fs_notify *n)
{
    free(n->rel);
    free(n->rel2);
    free(n);
}

static void notify_push(struct fs *fs, fuse_ino_t ino, fuse_ino_t parent,
                        const char *name)
{
    struct fs_notify *n = calloc(1, sizeof(*n) + (name ? strlen(name) : 0) + 1);
    if (n == NULL)
        return; /* caches then expire by their timeouts */
    n->type = parent != 0 ? FS_JOB_INVAL_ENTRY : FS_JOB_INVAL_INODE;
    n->ino = ino;
    n->parent = parent;
    if (name != NULL)
        strcpy(n->name, name);
    job_push(fs, n);
}

static void replay_push(struct fs *fs, int rkind, const char *rel,
                        const char *rel2, bool dir)
{
    /* Under a flood of remote changes inotify watchers lose events rather
     * than the replay falling ever further behind (as the kernel's own
     * inotify queue overflows); caches are invalidated regardless. */
    pthread_mutex_lock(&fs->nlock);
    bool full = fs->n_replays >= FS_REPLAY_QUEUE_MAX;
    if (!full)
        fs->n_replays++;
    pthread_mutex_unlock(&fs->nlock);
    if (full)
        return;
    struct fs_notify *n = calloc(1, sizeof(*n) + 1);
    if (n == NULL) {
        pthread_mutex_lock(&fs->nlock);
        fs->n_replays--;
        pthread_mutex_unlock(&fs->nlock);
        return;
    }
    n->type = FS_JOB_REPLAY;
    n->rkind = rkind;
    n->dir = dir;
    n->rel = strdup(rel);
    n->rel2 = rel2 ? strdup(rel2) : NULL;
    if (n->rel == NULL || (rel2 != NULL && n->rel2 == NULL)) {
        pthread_mutex_lock(&fs->nlock);
        fs->n_replays--;
        pthread_mutex_unlock(&fs->nlock);
        job_free(n);
        return;
    }
    job_push(fs, n);
}

/* Redo a remote change through the mount so that the kernel raises the
 * inotify events it raises for local changes (it raises none for
 * notify_inval_*). The loop answers these requests as no-ops describing
 * the state before the change (see replay_job_of). Errors are ignored:
 * then watchers simply miss that event. */
static void replay_run(struct fs *fs, const struct fs_notify *n)
{
    char *p = NULL, *q = NULL;
    int fd;
    if (asprintf(&p, "%s%s", fs->mountpoint, n->rel) < 0)
        return;
    switch (n->rkind) {
    case FS_REPLAY_CREATE_FILE:
        fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0) {
            close(fd);
            break;
        }
        /* The kernel already knew the name: report a modification. */
        /* fall through */
    case FS_REPLAY_MODIFY:
        fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            if (pwrite(fd, "", 1, 0) < 0) {
                /* ignored: watchers miss this one */
            }
            close(fd);
        }
        break;
    case FS_REPLAY_CREATE_DIR:
        mkdir(p, 0755);
        break;
    case FS_REPLAY_DELETE_FILE:
        unlink(p);
        break;
    case FS_REPLAY_DELETE_DIR:
        rmdir(p);
        break;
    case FS_REPLAY_RENAME:
        if (asprintf(&q, "%s%s", fs->mountpoint, n->rel2) >= 0) {
            rename(q, p);
            free(q);
        }
        break;
    }
    free(p);
}

static void *notify_main(void *arg)
{
    struct fs *fs = arg;
    pthread_mutex_lock(&fs->nlock);
    fs->replay_tid = gettid();
    for (;;) {
        while (fs->nhead == NULL && !fs->nstop)
            pthread_cond_wait(&fs->ncond, &fs->nlock);
        if (fs->nhead == NULL)
            break;
        struct fs_notify *n = fs->nhead;
        fs->nhead = n->next;
        if (fs->nhead == NULL)
            fs->ntail = NULL;
        bool stop = fs->nstop;
        if (n->type == FS_JOB_REPLAY)
            fs->replay_cur = n;
        pthread_mutex_unlock(&fs->nlock);
        if (stop)
            ;
        else if (n->type == FS_JOB_INVAL_ENTRY)
            fuse_lowlevel_notify_inval_entry(fs->se, n->parent, n->name,
                                             strlen(n->name));
        else if (n->type == FS_JOB_INVAL_INODE)
            fuse_lowlevel_notify_inval_inode(fs->se, n->ino, 0, 0);
        else
            replay_run(fs, n);
        pthread_mutex_lock(&fs->nlock);
        fs->replay_cur = NULL;
        if (n->type == FS_JOB_REPLAY)
            fs->n_replays--;
        job_free(n);
    }
    pthread_mutex_unlock(&fs->nlock);
    return NULL;
}

/* The replay job when req comes from the replayer thread, copied out
 * (caller frees rel/rel2), else false. */
struct replay_view {
    int rkind;
    bool dir;
    char *rel, *rel2;
};

static bool replay_job_of(struct fs *fs, fuse_req_t req, struct replay_view *v)
{
    bool ok = false;
    pid_t pid = fuse_req_ctx(req)->pid;
    memset(v, 0, sizeof(*v));
    pthread_mutex_lock(&fs->nlock);
    if (pid == fs->replay_tid && fs->replay_cur != NULL) {
        v->rkind = fs->replay_cur->rkind;
        v->dir = fs->replay_cur->dir;
        v->rel = strdup(fs->replay_cur->rel);
        v->rel2 = fs->replay_cur->rel2 ? strdup(fs->replay_cur->rel2) : NULL;
        ok = v->rel != NULL;
    }
    pthread_mutex_unlock(&fs->nlock);
    return ok;
}

static bool is_replayer(struct fs *fs, fuse_req_t req)
{
    bool r;
    pthread_mutex_lock(&fs->nlock);
    r = fuse_req_ctx(req)->pid == fs->replay_tid && fs->replay_cur != NULL;
    pthread_mutex_unlock(&fs->nlock);
    return r;
}

/* Local mutations in flight (see struct fs_local). */
static struct fs_local *local_begin(struct fs *fs, const char *store_path,
                                    bool post)
{
    struct fs_local *l = malloc(sizeof(*l) + strlen(store_path) + 1);
    if (l == NULL)
        return NULL; /* at worst its event is replayed: a duplicate */
    strcpy(l->path, store_path);
    l->post = post;
    l->defer = false;
    l->seen_index = 0;
    l->done_index = 0;
    l->prev = NULL;
    l->next = fs->locals;
    if (fs->locals != NULL)
        fs->locals->prev = l;
    fs->locals = l;
    return l;
}

static void local_end(struct fs *fs, struct fs_local *l)
{
    if (l == NULL)
        return;
    if (l->prev != NULL)
        l->prev->next = l->next;
    else
        fs->locals = l->next;
    if (l->next != NULL)
        l->next->prev = l->prev;
    free(l);
}

/* The record of one of our own mutations that ev is the event of, or
 * NULL (a remote change). */
static struct fs_local *event_local(struct fs *fs, const struct fs_event *ev)
{
    for (struct fs_local *l = fs->locals; l != NULL; l = l->next) {
        if (l->post) {
            size_t n = strlen(l->path);
            if (strncmp(ev->key, l->path, n) == 0 && ev->key[n] == '/' &&
                strchr(ev->key + n + 1, '/') == NULL)
                return l;
        } else if (strcmp(ev->key, l->path) == 0 ||
                   (ev->prev_key != NULL &&
                    strcmp(ev->prev_key, l->path) == 0)) {
            return l;
        }
    }
    return NULL;
}

/* Drop the kernel's cached entry, attributes and data for rel. */
static void invalidate_path(struct fs *fs, const char *rel, bool entry)
{
    struct fs_inode *in = inode_find(fs, rel, FS_KIND_NODE);
    if (in != NULL) {
        in->attr_index = 0; /* the kernel's copy is about to go */
        in->known_dir = false;
        notify_push(fs, in->ino, 0, NULL);
    }
    if (rel[0] == '\0' || !entry)
        return;
    const char *slash = strrchr(rel, '/');
    char *parent = strndup(rel, (size_t)(slash - rel));
    if (parent == NULL)
        return;
    struct fs_inode *p = inode_find(fs, parent, FS_KIND_NODE);
    /* Only the name: a directory's own attributes never change with its
     * children (fixed size, nlink, mode and times). */
    if (p != NULL)
        notify_push(fs, 0, p->ino, slash + 1);
    free(parent);
}

static void root_watch_cb(void *arg, int status, const struct fs_event *ev)
{
    struct fs *fs = arg;
    if (status != 0) {
        /* The backend ended the feed: caches fall back to timeouts. */
        fs->root_watch = NULL;
        return;
    }
    const char *rel = rel_path(fs, ev->key);
    const char *prel = ev->prev_key ? rel_path(fs, ev->prev_key) : NULL;
    bool moved = strcmp(ev->action, "rename") == 0;
    bool removed = strcmp(ev->action, "delete") == 0 ||
                   strcmp(ev->action, "compareAndDelete") == 0 ||
                   strcmp(ev->action, "expire") == 0;
    /* The name changes (not only the value) when a key appears, goes or
     * moves: then the kernel's dentry must go too, not just the inode's
     * cached attributes and pages. */
    bool entry = moved || removed || ev->prev_key == NULL;
    struct fs_local *l = event_local(fs, ev);
    if (l != NULL && l->defer && l->seen_index == 0 && !moved && !removed &&
        !ev->dir && rel != NULL && strcmp(ev->key, l->path) == 0) {
        /* Most likely our own flush's set, whose bytes the kernel already
         * has: invalidating would only cost the next open a GETATTR and
         * the pages. ctx_free decides once the set's index is known. */
        l->seen_index = ev->index;
        l->seen_entry = entry;
        return;
    }
    if (!fs->opt.no_inotify && rel != NULL && l == NULL) {
        if (moved && prel != NULL)
            replay_push(fs, FS_REPLAY_RENAME, rel, prel, ev->dir);
        else if (removed)
            replay_push(fs, ev->dir ? FS_REPLAY_DELETE_DIR
                                    : FS_REPLAY_DELETE_FILE, rel, NULL,
                        ev->dir);
        else if (ev->prev_key == NULL)
            replay_push(fs, ev->dir ? FS_REPLAY_CREATE_DIR
                                    : FS_REPLAY_CREATE_FILE, rel, NULL,
                        ev->dir);
        else if (!ev->dir)
            replay_push(fs, FS_REPLAY_MODIFY, rel, NULL, false);
    }
    if (moved && rel != NULL && prel != NULL)
        inode_move(fs, prel, rel); /* no-op if our rename_cb did it */
    if (rel != NULL)
        invalidate_path(fs, rel, entry);
    if (moved && prel != NULL)
        invalidate_path(fs, prel, true);
    if (moved && rel == NULL && prel != NULL)
        inode_drop_tree(fs, prel); /* moved out of the mounted subtree */
    if (removed && rel != NULL)
        inode_drop_tree(fs, rel);
}

/* ------------------------------------------------------------------ */
/* Request contexts for deferred replies                                */
/* ------------------------------------------------------------------ */

static struct fs_ctx *ctx_new(struct fs *fs, fuse_req_t req)
{
    /* While fs_finish_close drains the session the backend may be gone:
     * no new backend calls (the handlers then reply an error). */
    if (fs->finishing)
        return NULL;
    struct fs_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->fs = fs;
    c->req = req;
    fs->inflight++;
    return c;
}

static void fs_finish_close(struct fs *fs);

static void ctx_free(struct fs_ctx *c)
{
    struct fs *fs = c->fs;
    struct fs_local *l = c->local;
    if (l != NULL && l->seen_index != 0 && l->seen_index != l->done_index &&
        !fs->finishing) {
        /* The deferred event was not our set's (a remote write raced it,
         * or the set failed): invalidate as for any remote change. */
        const char *rel = rel_path(fs, l->path);
        if (rel != NULL)
            invalidate_path(fs, rel, l->seen_entry);
    }
    local_end(fs, l);
    local_end(fs, c->local2);
    free(c->path);
    free(c->path2);
    free(c->buf);
    free(c);
    fs->inflight--;
    if (fs->closing && fs->inflight == 0)
        fs_finish_close(fs);
}

/* A context for a backend call on rel (taken: it becomes c->path) and the
 * store path of rel in *sp (returned; the caller frees it). Out of memory,
 * or closing: replies ENOMEM to req, frees rel and returns NULL. */
static struct fs_ctx *ctx_for_path(struct fs *fs, fuse_req_t req, char *rel,
                                   char **sp)
{
    struct fs_ctx *c = ctx_new(fs, req);
    *sp = store_path(fs, rel);
    if (c == NULL || *sp == NULL) {
        free(rel);
        free(*sp);
        *sp = NULL;
        if (c != NULL)
            ctx_free(c);
        fuse_reply_err(req, ENOMEM);
        return NULL;
    }
    c->path = rel;
    return c;
}

/* Start a backend call; on a synchronous refusal reply the error now. */
static void ctx_check(struct fs_ctx *c, int rv)
{
    if (rv == 0)
        return;
    if (c->req != NULL)
        fuse_reply_err(c->req, -rv);
    ctx_free(c);
}

static struct fs_fh *fh_of(struct fuse_file_info *fi)
{
    return (struct fs_fh *)(uintptr_t)fi->fh;
}

/* ------------------------------------------------------------------ */
/* lookup, getattr, forget                                              */
/* ------------------------------------------------------------------ */

/* A file created by this mount but not yet written to the store (the set
 * happens at close) still answers stat with its pending size. */
static bool pending_attr(struct fs *fs, const char *rel, size_t *size)
{
    struct fs_inode *in = inode_find(fs, rel, FS_KIND_NODE);
    if (in == NULL || in->pending == 0)
        return false;
    *size = in->pending_size;
    return true;
}

/* Whether in is known to be a directory without asking the backend: once
 * a lookup saw a directory at a path, it stays one while the inode is
 * hashed, since a delete, expiry or rename of it (or an ancestor) unhashes
 * or moves it and any event on the path clears the mark. Needs the root
 * watch feed. Saves listing a big directory just to stat it. */
static bool dir_cached(const struct fs *fs, const struct fs_inode *in)
{
    return in->kind == FS_KIND_NODE && in->hashed &&
           fs->root_watch != NULL &&
           (in->known_dir || in->ino == FUSE_ROOT_ID);
}

static void lookup_cb(void *arg, int status, const struct fs_meta *meta,
                      const void *value, size_t len)
{
    struct fs_ctx *c = arg;
    struct fs *fs = c->fs;
    struct fuse_entry_param e;
    bool dir = false;
    size_t size = len;

    if (status == 100 && pending_attr(fs, c->path, &size))
        status = 0;
    else if (status == 0)
        dir = meta->dir;
    if (status != 0) {
        fuse_reply_err(c->req, -fs_status_errno(status));
    } else {
        struct fs_inode *in = inode_obtain_typed(fs, c->path, dir);
        if (in == NULL) {
            fuse_reply_err(c->req, ENOMEM);
        } else {
            in->nlookup++;
            in->attr_index = status == 0 && meta != NULL && !dir
                                 ? meta->modified_index : 0;
            in->known_dir = dir;
            entry_fill(fs, &e, in, dir, size);
            fuse_reply_entry(c->req, &e);
        }
    }
    ctx_free(c);
}

static struct fs_fh *fh_new(struct fs *fs, struct fs_inode *in, int kind);
static void fh_free(struct fs_fh *fh);

/* ---- the replayer's requests: no-ops showing the state before the
 * change being replayed, so that the kernel performs (and reports to
 * inotify) the same change the store already made. */

/* An entry for rel as the replayer must see it. With shadow, a new number
 * outside the path table (inode_new_shadow): the name is about to be
 * created, or is already deleted or renamed away in the store, so what
 * this entry says (size 0, the old type) is not the truth about rel, and
 * the kernel applies a create's or mkdir's attributes unconditionally
 * (no attribute version): on the real inode, which a reader may hold
 * already, a size 0 would land between the reader's GETATTR and its page
 * cache read, and the read would return nothing. Without shadow (the
 * directories on the way, and a directory created remotely, which
 * inotifywait -r must watch on the same number as later lookups) the
 * real, typed inode of rel. */
static void shadow_entry(struct fs *fs, fuse_req_t req, const char *rel,
                         bool dir, bool shadow, struct fuse_file_info *fi)
{
    struct fuse_entry_param e;
    struct fs_inode *in = shadow ? inode_new_shadow(fs, rel, dir)
                                 : inode_obtain_typed(fs, rel, dir);
    struct fs_fh *fh = NULL;
    if (in == NULL || (fi != NULL && (fh = fh_new(fs, in, FS_KIND_NOOP)) ==
                                         NULL)) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    in->nlookup++;
    in->attr_index = 0;
    entry_fill(fs, &e, in, dir, 0);
    e.attr_timeout = 0;
    e.entry_timeout = 0;
    if (fi == NULL) {
        fuse_reply_entry(req, &e);
        return;
    }
    fi->fh = (uintptr_t)fh;
    fi->direct_io = 1;
    if (fuse_reply_create(req, &e, fi) != 0) {
        in->nlookup--;
        fh_free(fh);
    }
}

/* Lookup by the replayer: 1 = answered, 0 = answer normally. */
static int shadow_lookup(struct fs *fs, fuse_req_t req, const char *rel)
{
    struct replay_view v;
    int done = 0;
    if (!replay_job_of(fs, req, &v))
        return 0;
    bool target = strcmp(rel, v.rel) == 0;
    bool source = v.rel2 != NULL && strcmp(rel, v.rel2) == 0;
    size_t l = strlen(rel);
    /* The directories on the way to the target are directories in the
     * store: answer them without a backend read (listing a big directory
     * to stat it is costly, and a replay walks every path). */
    bool ancestor = (strncmp(v.rel, rel, l) == 0 && v.rel[l] == '/') ||
                    (v.rel2 != NULL && strncmp(v.rel2, rel, l) == 0 &&
                     v.rel2[l] == '/');
    if (target && (v.rkind == FS_REPLAY_CREATE_FILE ||
                   v.rkind == FS_REPLAY_CREATE_DIR ||
                   v.rkind == FS_REPLAY_RENAME)) {
        fuse_reply_err(req, ENOENT); /* not there "yet" */
        done = 1;
    } else if ((target && (v.rkind == FS_REPLAY_DELETE_FILE ||
                           v.rkind == FS_REPLAY_DELETE_DIR)) ||
               (source && v.rkind == FS_REPLAY_RENAME)) {
        shadow_entry(fs, req, rel, v.dir, true, NULL); /* still there */
        done = 1;
    } else if (ancestor) {
        shadow_entry(fs, req, rel, true, false, NULL);
        done = 1;
    }
    free(v.rel);
    free(v.rel2);
    return done;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *p = inode_get(fs, parent);
    struct fuse_entry_param e;

    if (p == NULL || p->kind != FS_KIND_NODE) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    if (strlen(name) > FS_NAME_MAX) {
        fuse_reply_err(req, ENAMETOOLONG);
        return;
    }
    char *rel = path_join(p->path, name);
    if (rel == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    if (is_special(name)) {
        int kind = strcmp(name, FS_WATCH_NAME) == 0 ? FS_KIND_WATCH
                                                      : FS_KIND_NEW;
        struct fs_inode *in = inode_obtain(fs, p->path, kind);
        free(rel);
        if (in == NULL) {
            fuse_reply_err(req, ENOMEM);
            return;
        }
        in->nlookup++;
        entry_fill(fs, &e, in, false, 0);
        fuse_reply_entry(req, &e);
        return;
    }
    if (shadow_lookup(fs, req, rel)) {
        free(rel);
        return;
    }
    struct fs_inode *known = inode_find(fs, rel, FS_KIND_NODE);
    if (known != NULL && dir_cached(fs, known)) {
        free(rel);
        known->nlookup++;
        entry_fill(fs, &e, known, true, 0);
        fuse_reply_entry(req, &e);
        return;
    }
    char *sp;
    struct fs_ctx *c = ctx_for_path(fs, req, rel, &sp);
    if (c == NULL)
        return;
    int rv = fs->ops->get(fs->data, sp, lookup_cb, c);
    free(sp);
    ctx_check(c, rv);
}

static void getattr_cb(void *arg, int status, const struct fs_meta *meta,
                       const void *value, size_t len)
{
    struct fs_ctx *c = arg;
    struct fs *fs = c->fs;
    struct stat st;
    bool dir = false;
    size_t size = len;

    if (status == 100 && c->ino == FUSE_ROOT_ID) {
        /* A mounted subtree that does not exist yet is an empty directory;
         * the first write under it creates it. */
        status = 0;
        dir = true;
    } else if (status == 100 && pending_attr(fs, c->path, &size)) {
        status = 0;
    } else if (status == 0) {
        dir = meta->dir;
    }
    if (status != 0) {
        fuse_reply_err(c->req, -fs_status_errno(status));
    } else {
        struct fs_inode *in = inode_get(fs, c->ino);
        unsigned char t = dir ? FS_TYPE_DIR : FS_TYPE_FILE;
        if (in != NULL && in->kernel_type != 0 && in->kernel_type != t &&
            in->ino != FUSE_ROOT_ID) {
            /* The path now holds an object of the other type: this inode
             * is gone (see inode_obtain_typed); the next lookup of the
             * path gets a new number. */
            path_unlink(fs, in);
            in->known_dir = false;
            fuse_reply_err(c->req, ENOENT);
            ctx_free(c);
            return;
        }
        if (in != NULL) {
            in->attr_index = meta != NULL && !dir ? meta->modified_index : 0;
            in->known_dir = dir;
            in->kernel_type = t;
        }
        attr_fill(fs, &st, c->ino, FS_KIND_NODE, dir, size);
        fuse_reply_attr(c->req, &st, fs->opt.attr_timeout);
    }
    ctx_free(c);
}

/* Start a get of in's node for a deferred reply through cb. */
static void start_get(struct fs *fs, fuse_req_t req, struct fs_inode *in,
                      fs_get_cb cb, struct fs_ctx *c)
{
    char *sp = store_path(fs, in->path);
    if (c == NULL || sp == NULL || (c->path = strdup(in->path)) == NULL) {
        free(sp);
        if (c != NULL)
            ctx_free(c);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    c->ino = in->ino;
    int rv = fs->ops->get(fs->data, sp, cb, c);
    free(sp);
    ctx_check(c, rv);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *in = inode_get(fs, ino);
    struct stat st;

    if (in == NULL) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (in->kind != FS_KIND_NODE || dir_cached(fs, in)) {
        attr_fill(fs, &st, ino, in->kind, in->kind == FS_KIND_NODE, 0);
        fuse_reply_attr(req, &st, fs->opt.attr_timeout);
        return;
    }
    if (fi != NULL && fh_of(fi) != NULL && fh_of(fi)->kind == FS_KIND_NODE &&
        fh_of(fi)->loaded) {
        in->attr_index = 0; /* the handle's unsaved size */
        attr_fill(fs, &st, ino, in->kind, false, fh_of(fi)->len);
        fuse_reply_attr(req, &st, fs->opt.attr_timeout);
        return;
    }
    start_get(fs, req, in, getattr_cb, ctx_new(fs, req));
}

static void forget_one(struct fs *fs, fuse_ino_t ino, uint64_t n)
{
    struct fs_inode *in = inode_get(fs, ino);
    if (in == NULL)
        return;
    in->nlookup = in->nlookup > n ? in->nlookup - n : 0;
    inode_maybe_free(fs, in);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    forget_one(fuse_req_userdata(req), ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
                            struct fuse_forget_data *forgets)
{
    struct fs *fs = fuse_req_userdata(req);
    for (size_t i = 0; i < count; i++)
        forget_one(fs, forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

/* The store has only keys and directories: no links of either kind. */
static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
                       const char *name)
{
    fuse_reply_err(req, EPERM);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
                    const char *newname)
{
    fuse_reply_err(req, EPERM);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct statvfs sv;
    memset(&sv, 0, sizeof(sv));
    sv.f_bsize = 4096;
    sv.f_frsize = 4096;
    sv.f_namemax = FS_NAME_MAX;
    fuse_reply_statfs(req, &sv);
}

/* ------------------------------------------------------------------ */
/* Writes to the store: set, mkdir, unlink, rmdir, rename               */
/* ------------------------------------------------------------------ */

static void entry_reply_cb(void *arg, int status, const struct fs_meta *meta)
{
    struct fs_ctx *c = arg;
    struct fs *fs = c->fs;
    struct fuse_entry_param e;

    if (status != 0) {
        fuse_reply_err(c->req, -fs_status_errno(status));
    } else {
        struct fs_inode *in = inode_obtain_typed(fs, c->path, meta->dir);
        if (in == NULL) {
            fuse_reply_err(c->req, ENOMEM);
        } else {
            in->nlookup++;
            in->attr_index = meta->dir ? 0 : meta->modified_index;
            in->known_dir = meta->dir;
            entry_fill(fs, &e, in, meta->dir, c->len);
            fuse_reply_entry(c->req, &e);
        }
    }
    ctx_free(c);
}

static void err_reply_cb(void *arg, int status, const struct fs_meta *meta)
{
    struct fs_ctx *c = arg;
    fuse_reply_err(c->req, -fs_status_errno(status));
    ctx_free(c);
}

/* The child path of parent/name for a create-like request, or an error
 * already replied (NULL). */
static char *child_for_write(struct fs *fs, fuse_req_t req, fuse_ino_t parent,
                             const char *name)
{
    struct fs_inode *p = inode_get(fs, parent);
    if (fs->opt.ro) {
        fuse_reply_err(req, EROFS);
        return NULL;
    }
    if (p == NULL || p->kind != FS_KIND_NODE) {
        fuse_reply_err(req, ENOTDIR);
        return NULL;
    }
    if (is_special(name)) {
        fuse_reply_err(req, EEXIST);
        return NULL;
    }
    if (strlen(name) > FS_NAME_MAX) {
        fuse_reply_err(req, ENAMETOOLONG);
        return NULL;
    }
    char *rel = path_join(p->path, name);
    if (rel == NULL)
        fuse_reply_err(req, ENOMEM);
    return rel;
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
                     mode_t mode)
{
    struct fs *fs = fuse_req_userdata(req);
    char *rel = child_for_write(fs, req, parent, name);
    if (rel == NULL)
        return;
    if (is_replayer(fs, req)) {
        shadow_entry(fs, req, rel, true, false, NULL);
        free(rel);
        return;
    }
    char *sp;
    struct fs_ctx *c = ctx_for_path(fs, req, rel, &sp);
    if (c == NULL)
        return;
    struct fs_set_args a = {.path = sp, .dir = true, .prev_exist = 0};
    c->local = local_begin(fs, sp, false);
    int rv = fs->ops->set(fs->data, &a, entry_reply_cb, c);
    free(sp);
    ctx_check(c, rv);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
                     mode_t mode, dev_t rdev)
{
    struct fs *fs = fuse_req_userdata(req);
    if (!S_ISREG(mode)) {
        fuse_reply_err(req, EPERM); /* only keys: no fifos, devices */
        return;
    }
    char *rel = child_for_write(fs, req, parent, name);
    if (rel == NULL)
        return;
    char *sp;
    struct fs_ctx *c = ctx_for_path(fs, req, rel, &sp);
    if (c == NULL)
        return;
    struct fs_set_args a = {.path = sp, .value = "", .prev_exist = 0};
    c->local = local_begin(fs, sp, false);
    int rv = fs->ops->set(fs->data, &a, entry_reply_cb, c);
    free(sp);
    ctx_check(c, rv);
}

static void remove_common(fuse_req_t req, fuse_ino_t parent, const char *name,
                          bool dir)
{
    struct fs *fs = fuse_req_userdata(req);
    if (is_special(name)) {
        fuse_reply_err(req, EPERM);
        return;
    }
    char *rel = child_for_write(fs, req, parent, name);
    if (rel == NULL)
        return;
    if (is_replayer(fs, req)) {
        /* Nothing to drop: the event unhashed the real inodes, and the
         * replayer's entry is a shadow outside the path table, while a
         * real inode hashed at rel now is a newer object (a key created
         * after the delete), which must keep its number. */
        free(rel);
        fuse_reply_err(req, 0);
        return;
    }
    char *sp;
    struct fs_ctx *c = ctx_for_path(fs, req, rel, &sp);
    if (c == NULL)
        return;
    c->local = local_begin(fs, sp, false);
    int rv = fs->ops->del(fs->data, sp, dir, false, err_reply_cb, c);
    free(sp);
    ctx_check(c, rv);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_common(req, parent, name, false);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_common(req, parent, name, true);
}

static void start_rename(struct fs_ctx *c);
static void replace_dir_get_cb(void *arg, int status, const struct fs_meta *m,
                               const void *value, size_t len);

static void rename_cb(void *arg, int status, const struct fs_meta *meta)
{
    struct fs_ctx *c = arg;
    if (status == 105 && c->step == 0) {
        /* The target exists and the store moves nothing onto it. POSIX
         * replaces an empty directory by a directory: if the source is
         * one, remove the target (only if empty) and rename again. */
        char *sp = store_path(c->fs, c->path);
        int rv = sp ? c->fs->ops->get(c->fs->data, sp, replace_dir_get_cb, c)
                    : -ENOMEM;
        free(sp);
        ctx_check(c, rv);
        return;
    }
    int rv = fs_status_errno(status);
    if (rv == -ENOSYS)
        rv = -EXDEV; /* no atomic rename: let mv copy and delete */
    if (rv == 0)
        rv = inode_move(c->fs, c->path, c->path2);
    fuse_reply_err(c->req, -rv);
    ctx_free(c);
}

static void replace_dir_del_cb(void *arg, int status, const struct fs_meta *m)
{
    struct fs_ctx *c = arg;
    if (status != 0) {
        /* 108: hidden keys, or filled meanwhile. */
        fuse_reply_err(c->req, -fs_status_errno(status));
        ctx_free(c);
        return;
    }
    c->step = 1;
    start_rename(c);
}

static void replace_dir_list_cb(void *arg, int status,
                                const struct fs_meta *meta,
                                const struct fs_dirent *ents, size_t n_ents)
{
    struct fs_ctx *c = arg;
    struct fs *fs = c->fs;
    if (status == 0 && n_ents > 0)
        status = 108;
    if (status != 0) {
        /* 104: the target is a file (a delete with dir=true would remove
         * it); 108: not empty (POSIX allows ENOTEMPTY or EEXIST). */
        fuse_reply_err(c->req, -fs_status_errno(status));
        ctx_free(c);
        return;
    }
    char *sp = store_path(fs, c->path2);
    int rv = -ENOMEM;
    if (sp != NULL) {
        /* Our own delete: its event must not be replayed as remote. */
        c->local2 = local_begin(fs, sp, false);
        rv = fs->ops->del(fs->data, sp, true, false, replace_dir_del_cb, c);
    }
    free(sp);
    ctx_check(c, rv);
}

static void replace_dir_get_cb(void *arg, int status, const struct fs_meta *m,
                               const void *value, size_t len)
{
    struct fs_ctx *c = arg;
    struct fs *fs = c->fs;
    if (status != 0 || !m->dir) {
        /* A file onto a directory (the kernel's stale view let it
         * through): EISDIR; a source gone meanwhile: its error. */
        fuse_reply_err(c->req, status != 0 ? -fs_status_errno(status)
                                           : EISDIR);
        ctx_free(c);
        return;
    }
    char *sp = store_path(fs, c->path2);
    int rv = sp ? fs->ops->list(fs->data, sp, replace_dir_list_cb, c)
                : -ENOMEM;
    free(sp);
    ctx_check(c, rv);
}

static void start_rename(struct fs_ctx *c)
{
    struct fs *fs = c->fs;
    char *a = store_path(fs, c->path), *b = store_path(fs, c->path2);
    int rv = -ENOMEM;
    if (a != NULL && b != NULL) {
        if (c->local == NULL)
            c->local = local_begin(fs, a, false);
        rv = fs->ops->rename(fs->data, a, b, rename_cb, c);
    }
    free(a);
    free(b);
    if (rv == -ENOSYS)
        rv = -EXDEV;
    ctx_check(c, rv);
}

static void noreplace_cb(void *arg, int status, const struct fs_meta *meta,
                         const void *value, size_t len)
{
    struct fs_ctx *c = arg;
    if (status == 0 || status != 100) {
        fuse_reply_err(c->req, status == 0 ? EEXIST
                                           : -fs_status_errno(status));
        ctx_free(c);
        return;
    }
    start_rename(c);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
                      fuse_ino_t newparent, const char *newname,
                      unsigned int flags)
{
    struct fs *fs = fuse_req_userdata(req);
    if (flags & ~(unsigned)RENAME_NOREPLACE) {
        fuse_reply_err(req, EINVAL); /* RENAME_EXCHANGE, WHITEOUT */
        return;
    }
    if (is_special(name)) {
        fuse_reply_err(req, EPERM);
        return;
    }
    char *from = child_for_write(fs, req, parent, name);
    if (from == NULL)
        return;
    char *to = child_for_write(fs, req, newparent, newname);
    if (to == NULL) {
        free(from);
        return;
    }
    if (is_replayer(fs, req)) {
        /* The event moved the real inodes already (inode_move); the
         * source's entry is a shadow (or the moved inode itself, if the
         * kernel still had the name cached). */
        free(from);
        free(to);
        fuse_reply_err(req, 0);
        return;
    }
    struct fs_ctx *c = ctx_new(fs, req);
    if (c == NULL) {
        free(from);
        free(to);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    c->path = from;
    c->path2 = to;
    if (flags & RENAME_NOREPLACE) {
        char *sp = store_path(fs, to);
        int rv = sp ? fs->ops->get(fs->data, sp, noreplace_cb, c) : -ENOMEM;
        free(sp);
        ctx_check(c, rv);
        return;
    }
    start_rename(c);
}

/* ------------------------------------------------------------------ */
/* Regular files: buffered, one set per flush                           */
/* ------------------------------------------------------------------ */

static struct fs_fh *fh_new(struct fs *fs, struct fs_inode *in, int kind)
{
    struct fs_fh *fh = calloc(1, sizeof(*fh));
    if (fh == NULL)
        return NULL;
    fh->fs = fs;
    fh->kind = kind;
    fh->in = in;
    in->opens++;
    fh->next = fs->fhs;
    if (fs->fhs != NULL)
        fs->fhs->prev = fh;
    fs->fhs = fh;
    return fh;
}

static void fh_free(struct fs_fh *fh)
{
    struct fs *fs = fh->fs;
    if (fh->prev != NULL)
        fh->prev->next = fh->next;
    else
        fs->fhs = fh->next;
    if (fh->next != NULL)
        fh->next->prev = fh->prev;
    if (fh->pending_create) {
        fh->in->pending--;
    }
    fh->in->opens--;
    inode_maybe_free(fs, fh->in);
    free(fh->buf);
    free(fh->created);
    for (struct fs_line *l = fh->qhead, *n; l != NULL; l = n) {
        n = l->next;
        free(l);
    }
    if (fh->ph != NULL)
        fuse_pollhandle_destroy(fh->ph);
    free(fh);
}

static int buf_reserve(struct fs_fh *fh, size_t n)
{
    if (n <= fh->cap)
        return 0;
    size_t cap = fh->cap ? fh->cap : 256;
    while (cap < n)
        cap *= 2;
    char *b = realloc(fh->buf, cap);
    if (b == NULL)
        return -ENOMEM;
    fh->buf = b;
    fh->cap = cap;
    return 0;
}

static int buf_resize(struct fs_fh *fh, size_t n)
{
    if (n > fh->fs->opt.max_value)
        return -EFBIG;
    int rv = buf_reserve(fh, n);
    if (rv != 0)
        return rv;
    if (n > fh->len)
        memset(fh->buf + fh->len, 0, n - fh->len);
    fh->len = n;
    if (fh->pending_create)
        fh->in->pending_size = n;
    return 0;
}

static void open_cb(void *arg, int status, const struct fs_meta *meta,
                    const void *value, size_t len)
{
    struct fs_ctx *c = arg;
    struct fs_fh *fh = c->fh;
    struct fuse_file_info fi = c->fi;

    if (status == 0 && meta->dir)
        status = 102;
    if (status == 0 && buf_resize(fh, len) != 0)
        status = -ENOMEM;
    if (status != 0) {
        fh_free(fh);
        fuse_reply_err(c->req, -fs_status_errno(status));
    } else {
        if (len > 0)
            memcpy(fh->buf, value, len);
        fh->loaded = true;
        fh->cas_index = meta->modified_index;
        fi.fh = (uintptr_t)fh;
        /* The kernel's cached size and pages may predate the value just
         * read (the invalidation for a remote change is asynchronous):
         * with a stale size, read directly (no clamp to the old size, no
         * page cache); with a fresh size keep the pages only if they are
         * of this version, else the kernel drops them at this open. */
        struct fs_inode *in = fh->in;
        uint64_t mi = meta->modified_index;
        if (in->attr_index != mi) {
            fi.direct_io = 1;
        } else {
            fi.keep_cache = in->cache_index == mi;
            in->cache_index = mi;
        }
        /* A read-only handle never has anything to store, so spare every
         * close(2) the FLUSH round trip (FOPEN_NOFLUSH, Linux 5.16+; an
         * older kernel ignores the flag and op_flush answers at once). */
        if ((fi.flags & O_ACCMODE) == O_RDONLY)
            fi.noflush = 1;
        if (fuse_reply_open(c->req, &fi) != 0)
            fh_free(fh); /* interrupted: no release will come */
    }
    ctx_free(c);
}

/* -o cas, O_TRUNC: nothing to load, only the version the close's store is
 * conditional on. A key gone since the kernel's lookup makes the store a
 * create, as if the open had created it. */
static void open_trunc_cb(void *arg, int status, const struct fs_meta *meta,
                          const void *value, size_t len)
{
    struct fs_ctx *c = arg;
    struct fs_fh *fh = c->fh;
    struct fuse_file_info fi = c->fi;

    if (status == 0 && meta->dir)
        status = 102;
    if (status == 0) {
        fh->cas_index = meta->modified_index;
    } else if (status == 100) {
        fh->cas_index = 0;
        status = 0;
    }
    if (status != 0) {
        fh_free(fh);
        fuse_reply_err(c->req, -fs_status_errno(status));
    } else {
        /* As the O_TRUNC open without cas: the kernel empties its pages
         * itself (FUSE_CAP_ATOMIC_O_TRUNC). */
        fh->loaded = true;
        fh->dirty = true;
        fh->trunc_only = true;
        fi.fh = (uintptr_t)fh;
        if (fuse_reply_open(c->req, &fi) != 0)
            fh_free(fh);
    }
    ctx_free(c);
}

static void watch_start(struct fs_fh *fh, uint64_t since);

/* The read of an open: the value into the handle's buffer (open_cb), or
 * under -o cas with O_TRUNC only its version (open_trunc_cb). */
static void open_get(struct fs_ctx *c)
{
    struct fs *fs = c->fs;
    struct fs_fh *fh = c->fh;
    if (fh->in->storing > 0) {
        /* A set of this key through the mount is in flight (a release's,
         * which close(2) did not wait for): read after it, so this
         * open sees what an earlier close on this mount stored. */
        c->next_waiter = fh->in->open_waiters;
        fh->in->open_waiters = c;
        return;
    }
    char *sp = store_path(fs, fh->in->path);
    fs_get_cb cb = (c->fi.flags & O_TRUNC) ? open_trunc_cb : open_cb;
    int rv = sp ? fs->ops->get(fs->data, sp, cb, c) : -ENOMEM;
    free(sp);
    if (rv != 0)
        fh_free(fh);
    ctx_check(c, rv);
}

/* A step before an open's read failed (status != 0): free the handle,
 * reply the error, end the call. */
static bool open_step_failed(struct fs_ctx *c, int status)
{
    if (status == 0)
        return false;
    fh_free(c->fh);
    fuse_reply_err(c->req, -fs_status_errno(status));
    ctx_free(c);
    return true;
}

static void open_barrier_cb(void *arg, int status, const struct fs_meta *m)
{
    if (!open_step_failed(arg, status))
        open_get(arg);
}

/* The open of a key once it may go ahead: an O_TRUNC open needs nothing
 * from the store; others load the value, after the ReadIndex barrier under
 * -o quorum. */
static void open_node(struct fs_ctx *c)
{
    struct fs *fs = c->fs;
    struct fs_fh *fh = c->fh;
    if ((c->fi.flags & O_TRUNC) && !fh->cas) {
        fh->loaded = true;
        fh->dirty = true;
        fh->trunc_only = true;
        c->fi.fh = (uintptr_t)fh;
        if (fuse_reply_open(c->req, &c->fi) != 0)
            fh_free(fh);
        ctx_free(c);
        return;
    }
    if (fs->opt.quorum && fs->ops->barrier != NULL) {
        /* -o quorum: read only after this member has applied everything
         * committed when the open was asked (a linearizable open). */
        int rv = fs->ops->barrier(fs->data, open_barrier_cb, c);
        if (rv != 0)
            fh_free(fh);
        ctx_check(c, rv);
        return;
    }
    open_get(c);
}

static void open_writable_cb(void *arg, int status, const struct fs_meta *m)
{
    if (!open_step_failed(arg, status))
        open_node(arg);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *in = inode_get(fs, ino);
    int acc = fi->flags & O_ACCMODE;

    if (in == NULL) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (fs->opt.ro && (acc != O_RDONLY || (fi->flags & O_TRUNC))) {
        fuse_reply_err(req, EROFS);
        return;
    }
    bool replayer = in->kind == FS_KIND_NODE && is_replayer(fs, req);
    struct fs_fh *fh = fh_new(fs, in, replayer ? FS_KIND_NOOP : in->kind);
    if (fh == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    if (replayer) {
        fi->direct_io = 1; /* its write must not touch the page cache */
        fi->fh = (uintptr_t)fh;
        if (fuse_reply_open(req, fi) != 0)
            fh_free(fh);
        return;
    }
    fh->append = (fi->flags & O_APPEND) != 0;
    fh->cas = fs->opt.cas && in->kind == FS_KIND_NODE;
    if (in->kind != FS_KIND_NODE) {
        /* Streams: no page cache, offsets ignored. */
        fi->direct_io = 1;
        fi->nonseekable = 1;
        fh->nonblock = (fi->flags & O_NONBLOCK) != 0;
        if (in->kind == FS_KIND_WATCH)
            watch_start(fh, fs->finishing ? 0 : fs->ops->index(fs->data) + 1);
        fi->fh = (uintptr_t)fh;
        if (fuse_reply_open(req, fi) != 0)
            fh_free(fh);
        return;
    }
    struct fs_ctx *c = ctx_new(fs, req);
    if (c == NULL) {
        fh_free(fh);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    c->fh = fh;
    c->fi = *fi;
    if (acc != O_RDONLY && fs->ops->writable != NULL) {
        int rv = fs->ops->writable(fs->data, open_writable_cb, c);
        if (rv != 0)
            fh_free(fh);
        ctx_check(c, rv);
        return;
    }
    open_node(c);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
                      mode_t mode, struct fuse_file_info *fi);

static void create_excl_cb(void *arg, int status, const struct fs_meta *meta,
                           const void *value, size_t len);

static void create_finish(struct fs *fs, fuse_req_t req, const char *rel,
                          struct fuse_file_info *fi)
{
    struct fs_inode *in = inode_obtain_typed(fs, rel, false);
    struct fuse_entry_param e;
    struct fs_fh *fh = in ? fh_new(fs, in, FS_KIND_NODE) : NULL;
    if (fh == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    in->nlookup++;
    fh->loaded = true;
    fh->dirty = true;
    /* touch (no O_TRUNC) stores the empty key at its close; a shell's
     * redirection (O_TRUNC) waits for what it writes. */
    fh->trunc_only = (fi->flags & O_TRUNC) != 0;
    fh->excl = (fi->flags & O_EXCL) != 0;
    fh->append = (fi->flags & O_APPEND) != 0;
    fh->pending_create = true;
    fh->cas = fs->opt.cas; /* cas_index 0: the store must create */
    in->pending++;
    in->pending_size = 0;
    in->attr_index = 0;
    fi->fh = (uintptr_t)fh;
    entry_fill(fs, &e, in, false, 0);
    if (fuse_reply_create(req, &e, fi) != 0) {
        in->nlookup--;
        fh_free(fh);
    }
}

static void create_excl_cb(void *arg, int status, const struct fs_meta *meta,
                           const void *value, size_t len)
{
    struct fs_ctx *c = arg;
    if (status == 0)
        fuse_reply_err(c->req, EEXIST);
    else if (status != 100)
        fuse_reply_err(c->req, -fs_status_errno(status));
    else
        create_finish(c->fs, c->req, c->path, &c->fi);
    ctx_free(c);
}

/* O_EXCL asks the store whether the key exists; else the create is
 * answered now. */
static void create_go(struct fs_ctx *c)
{
    struct fs *fs = c->fs;
    if (!(c->fi.flags & O_EXCL)) {
        create_finish(fs, c->req, c->path, &c->fi);
        ctx_free(c);
        return;
    }
    char *sp = store_path(fs, c->path);
    int rv = sp ? fs->ops->get(fs->data, sp, create_excl_cb, c) : -ENOMEM;
    free(sp);
    ctx_check(c, rv);
}

static void create_writable_cb(void *arg, int status, const struct fs_meta *m)
{
    struct fs_ctx *c = arg;
    if (status != 0) {
        fuse_reply_err(c->req, -fs_status_errno(status));
        ctx_free(c);
        return;
    }
    create_go(c);
}

/* The key is written at close (one set), so that "echo v > new" is one
 * store operation; until then the inode answers from its pending size.
 * O_EXCL checks now and again at close (prevExist=false). */
static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
                      mode_t mode, struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    char *rel = child_for_write(fs, req, parent, name);
    if (rel == NULL)
        return;
    if (is_replayer(fs, req)) {
        shadow_entry(fs, req, rel, false, true, fi);
        free(rel);
        return;
    }
    struct fs_ctx *c = ctx_new(fs, req);
    if (c == NULL) {
        free(rel);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    c->path = rel;
    c->fi = *fi;
    if (fs->ops->writable != NULL) {
        ctx_check(c, fs->ops->writable(fs->data, create_writable_cb, c));
        return;
    }
    create_go(c);
}

static void read_new(fuse_req_t req, struct fs_fh *fh, size_t size);
static void read_watch(fuse_req_t req, struct fs_fh *fh, size_t size);

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct fs_fh *fh = fh_of(fi);
    if (fh->kind == FS_KIND_NOOP) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if (fh->kind == FS_KIND_WATCH) {
        read_watch(req, fh, size);
        return;
    }
    if (fh->kind == FS_KIND_NEW) {
        read_new(req, fh, size);
        return;
    }
    if (off < 0 || (size_t)off >= fh->len) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    size_t n = fh->len - (size_t)off;
    fuse_reply_buf(req, fh->buf + off, n < size ? n : size);
}

static void write_watch(fuse_req_t req, struct fs_fh *fh, const char *buf,
                        size_t size);

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
                     size_t size, off_t off, struct fuse_file_info *fi)
{
    struct fs_fh *fh = fh_of(fi);
    int rv;

    if (fh->kind == FS_KIND_NOOP) {
        fuse_reply_write(req, size);
        return;
    }
    if (fh->fs->opt.ro) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (fh->kind == FS_KIND_WATCH) {
        write_watch(req, fh, buf, size);
        return;
    }
    if (fh->kind == FS_KIND_NEW) {
        if (fh->created != NULL) {
            fuse_reply_err(req, EBADF); /* one POST per open */
            return;
        }
        off = (off_t)fh->len; /* a stream: writes append */
    }
    if (fh->append)
        off = (off_t)fh->len;
    if (off < 0 || (size_t)off > fh->fs->opt.max_value ||
        size > fh->fs->opt.max_value - (size_t)off) {
        fuse_reply_err(req, EFBIG);
        return;
    }
    size_t end = (size_t)off + size;
    if (end > fh->len && (rv = buf_resize(fh, end)) != 0) {
        fuse_reply_err(req, -rv);
        return;
    }
    memcpy(fh->buf + off, buf, size);
    fh->dirty = true;
    fh->trunc_only = false;
    fuse_reply_write(req, size);
}

/* A handle's set is done: opens waiting for the inode's sets to end load
 * the value now. */
static void store_done(struct fs_inode *in)
{
    if (--in->storing > 0)
        return;
    struct fs_ctx *w = in->open_waiters;
    in->open_waiters = NULL;
    while (w != NULL) {
        struct fs_ctx *next = w->next_waiter;
        open_get(w);
        w = next;
    }
}

static void flush_cb(void *arg, int status, const struct fs_meta *meta)
{
    struct fs_ctx *c = arg;
    struct fs_fh *fh = c->fh;
    if (status == 0 && fh->pending_create) {
        fh->pending_create = false;
        fh->in->pending--;
    }
    if (status == 0 && meta != NULL) {
        /* The kernel saw every byte written: its size and pages are this
         * version's. */
        fh->in->attr_index = meta->modified_index;
        fh->in->cache_index = meta->modified_index;
        if (c->local != NULL)
            c->local->done_index = meta->modified_index;
        fh->cas_index = meta->modified_index; /* the next store's base */
    } else if (status != 0 && fh->kind == FS_KIND_NODE) {
        /* The kernel's size and pages hold bytes the store refused (a
         * compare failed under -o cas, EFBIG, EIO): drop them. */
        fh->in->attr_index = 0;
        fh->in->cache_index = 0;
        notify_push(fh->fs, fh->in->ino, 0, NULL);
    }
    /* A failed store is not retried at release: close(2) has reported
     * the error, and storing the value later would contradict it. */
    fh->flushing = false;
    store_done(fh->in);
    if (c->req != NULL)
        fuse_reply_err(c->req, -fs_status_errno(status));
    if (fh->released)
        fh_free(fh);
    ctx_free(c);
}

static void post_cb(void *arg, int status, const char *key,
                    const struct fs_meta *meta);

/* Write fh's buffer to the store: a set for a key, a POST for .new.
 * req (may be NULL for release) is replied when it completes. */
static void fh_store(struct fs_fh *fh, fuse_req_t req)
{
    struct fs *fs = fh->fs;
    struct fs_ctx *c = ctx_new(fs, req);
    int rv;

    if (c == NULL) {
        if (req != NULL)
            fuse_reply_err(req, ENOMEM);
        else if (fh->released)
            fh_free(fh);
        return;
    }
    c->fh = fh;
    char *sp = store_path(fs, fh->in->path);
    fh->dirty = false;
    fh->flushing = true;
    if (sp == NULL) {
        rv = -ENOMEM;
    } else if (fh->kind == FS_KIND_NEW) {
        c->local = local_begin(fs, sp, true);
        rv = fs->ops->post(fs->data, sp, fh->buf ? fh->buf : "", fh->len,
                           post_cb, c);
    } else {
        struct fs_set_args a = {
            .path = sp,
            .value = fh->buf ? fh->buf : "",
            .value_len = fh->len,
            .prev_exist = fh->excl ? 0 : -1,
        };
        if (fh->cas && fh->cas_index != 0)
            a.prev_index = fh->cas_index; /* 101 if changed since open */
        else if (fh->cas)
            a.prev_exist = 0; /* absent at open: 105 if created since */
        c->local = local_begin(fs, sp, false);
        if (c->local != NULL)
            c->local->defer = true;
        fh->in->storing++;
        rv = fs->ops->set(fs->data, &a, flush_cb, c);
        if (rv != 0)
            store_done(fh->in);
    }
    free(sp);
    if (rv != 0) {
        fh->flushing = false; /* reported, not retried (see flush_cb) */
        if (req == NULL && fh->released)
            fh_free(fh);
        ctx_check(c, rv);
    }
}

/* Store what the handle holds if it changed (close, fsync). */
static void fh_sync(fuse_req_t req, struct fs_fh *fh)
{
    if (fh->kind != FS_KIND_WATCH && fh->kind != FS_KIND_NOOP && fh->dirty &&
        !fh->flushing &&
        !(fh->kind == FS_KIND_NEW && fh->created != NULL)) {
        fh->trunc_only = false;
        fh_store(fh, req);
        return;
    }
    fuse_reply_err(req, 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs_fh *fh = fh_of(fi);
    if (fh->trunc_only) {
        fh->trunc_only = false; /* defer one flush only: see trunc_only */
        fuse_reply_err(req, 0);
        return;
    }
    fh_sync(req, fh);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
                     struct fuse_file_info *fi)
{
    fh_sync(req, fh_of(fi));
}

static void watch_stop(struct fs_fh *fh);

static void op_release(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    struct fs_fh *fh = fh_of(fi);
    fuse_reply_err(req, 0);
    fh->released = true;
    if (fh->kind == FS_KIND_WATCH)
        watch_stop(fh);
    if (fh->flushing)
        return; /* flush_cb frees */
    if (fh->dirty && fh->kind != FS_KIND_WATCH && fh->kind != FS_KIND_NOOP &&
        !(fh->kind == FS_KIND_NEW && fh->created != NULL)) {
        fh_store(fh, NULL); /* a write after the last flush */
        return;
    }
    fh_free(fh);
}

/* truncate(2) by path, or ftruncate on a handle. */
static void truncate_get_cb(void *arg, int status, const struct fs_meta *meta,
                            const void *value, size_t len);

static void truncate_set_cb(void *arg, int status, const struct fs_meta *meta)
{
    struct fs_ctx *c = arg;
    struct stat st;
    if (status != 0) {
        fuse_reply_err(c->req, -fs_status_errno(status));
    } else {
        struct fs_inode *in = inode_get(c->fs, c->ino);
        if (in != NULL)
            in->attr_index = meta->modified_index;
        attr_fill(c->fs, &st, c->ino, FS_KIND_NODE, false, c->len);
        fuse_reply_attr(c->req, &st, c->fs->opt.attr_timeout);
    }
    ctx_free(c);
}

static void truncate_get_cb(void *arg, int status, const struct fs_meta *meta,
                            const void *value, size_t len)
{
    struct fs_ctx *c = arg;
    struct fs *fs = c->fs;
    if (status == 0 && meta->dir)
        status = 102;
    if (status != 0) {
        fuse_reply_err(c->req, -fs_status_errno(status));
        ctx_free(c);
        return;
    }
    c->buf = malloc(c->len + 1);
    if (c->buf == NULL) {
        fuse_reply_err(c->req, ENOMEM);
        ctx_free(c);
        return;
    }
    memset(c->buf, 0, c->len);
    memcpy(c->buf, value, len < c->len ? len : c->len);
    char *sp = store_path(fs, c->path);
    struct fs_set_args a = {.path = sp, .value = c->buf,
                            .value_len = c->len, .prev_exist = 1};
    if (fs->opt.cas)
        a.prev_index = meta->modified_index; /* a change in between: 101 */
    if (sp != NULL)
        c->local = local_begin(fs, sp, false);
    int rv = sp ? fs->ops->set(fs->data, &a, truncate_set_cb, c) : -ENOMEM;
    free(sp);
    ctx_check(c, rv);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
                       int to_set, struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *in = inode_get(fs, ino);
    struct fs_fh *fh = fi != NULL ? fh_of(fi) : NULL;
    struct stat st;
    int rv;

    if (in == NULL) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (!(to_set & FUSE_SET_ATTR_SIZE) || in->kind != FS_KIND_NODE) {
        /* Modes, owners and times are the mount's: accepted, ignored. */
        op_getattr(req, ino, fi);
        return;
    }
    if (fs->opt.ro) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (attr->st_size < 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if ((size_t)attr->st_size > fs->opt.max_value) {
        fuse_reply_err(req, EFBIG);
        return;
    }
    if (fh == NULL) {
        for (fh = fs->fhs; fh != NULL; fh = fh->next)
            if (fh->in == in && fh->kind == FS_KIND_NODE && fh->loaded &&
                !fh->released && fh->pending_create)
                break;
    }
    if (fh != NULL && fh->kind == FS_KIND_NODE && fh->loaded) {
        if ((rv = buf_resize(fh, (size_t)attr->st_size)) != 0) {
            fuse_reply_err(req, -rv);
            return;
        }
        fh->dirty = true;
        fh->trunc_only = false;
        in->attr_index = 0;
        attr_fill(fs, &st, ino, FS_KIND_NODE, false, fh->len);
        fuse_reply_attr(req, &st, fs->opt.attr_timeout);
        return;
    }
    struct fs_ctx *c = ctx_new(fs, req);
    if (c != NULL)
        c->len = (size_t)attr->st_size;
    start_get(fs, req, in, truncate_get_cb, c);
}

/* ------------------------------------------------------------------ */
/* Directories                                                          */
/* ------------------------------------------------------------------ */

static void opendir_cb(void *arg, int status, const struct fs_meta *meta,
                       const struct fs_dirent *ents, size_t n)
{
    struct fs_ctx *c = arg;
    struct fs *fs = c->fs;
    struct fs_fh *fh = c->fh;
    struct fuse_file_info fi = c->fi;
    size_t names = 0;

    if (status == 100 && fh->in->ino == FUSE_ROOT_ID)
        status = 0; /* a missing subtree root lists empty */
    if (status == 0) {
        for (size_t i = 0; i < n; i++)
            names += strlen(ents[i].name) + 1;
        fh->dents = calloc(n + 1, sizeof(*fh->dents));
        fh->names = malloc(names + 1);
        if (fh->dents == NULL || fh->names == NULL)
            status = -ENOMEM;
    }
    if (status != 0) {
        free(fh->dents);
        free(fh->names);
        fh->dents = NULL;
        fh->names = NULL;
        fh_free(fh);
        fuse_reply_err(c->req, -fs_status_errno(status));
        ctx_free(c);
        return;
    }
    char *p = fh->names;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(ents[i].name);
        memcpy(p, ents[i].name, l + 1);
        fh->dents[i].name = p;
        fh->dents[i].dir = ents[i].meta.dir;
        p += l + 1;
    }
    fh->n_dents = n;
    fi.fh = (uintptr_t)fh;
    if (fuse_reply_open(c->req, &fi) != 0)
        fh_free(fh);
    (void)fs;
    ctx_free(c);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *in = inode_get(fs, ino);
    if (in == NULL || in->kind != FS_KIND_NODE) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    struct fs_fh *fh = fh_new(fs, in, FS_KIND_DIR);
    struct fs_ctx *c = fh ? ctx_new(fs, req) : NULL;
    char *sp = store_path(fs, in->path);
    if (fh == NULL || c == NULL || sp == NULL) {
        free(sp);
        if (c != NULL)
            ctx_free(c);
        if (fh != NULL)
            fh_free(fh);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    c->fh = fh;
    c->fi = *fi;
    int rv = fs->ops->list(fs->data, sp, opendir_cb, c);
    free(sp);
    if (rv != 0)
        fh_free(fh);
    ctx_check(c, rv);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_fh *fh = fh_of(fi);
    char *buf = malloc(size);
    size_t used = 0;
    struct stat st;

    if (buf == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    /* Offsets: 0 ".", 1 "..", 2 + i the i-th child; an entry's offset is
     * the one of the entry after it. */
    for (size_t i = (size_t)off; i < fh->n_dents + 2; i++) {
        const char *name;
        memset(&st, 0, sizeof(st));
        st.st_ino = 0xffffffffu; /* unknown, as libfuse's high-level API */
        if (i == 0) {
            name = ".";
            st.st_mode = S_IFDIR;
            st.st_ino = ino;
        } else if (i == 1) {
            name = "..";
            st.st_mode = S_IFDIR;
        } else {
            name = fh->dents[i - 2].name;
            st.st_mode = fh->dents[i - 2].dir ? S_IFDIR : S_IFREG;
            char *rel = path_join(fh->in->path, name);
            struct fs_inode *cin = rel ? inode_find(fs, rel, FS_KIND_NODE)
                                       : NULL;
            if (cin != NULL)
                st.st_ino = cin->ino;
            free(rel);
        }
        size_t l = fuse_add_direntry(req, buf + used, size - used, name, &st,
                                     (off_t)(i + 1));
        if (l > size - used)
            break;
        used += l;
    }
    fuse_reply_buf(req, buf, used);
    free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino,
                          struct fuse_file_info *fi)
{
    struct fs_fh *fh = fh_of(fi);
    free(fh->dents);
    free(fh->names);
    fh_free(fh);
    fuse_reply_err(req, 0);
}

/* ------------------------------------------------------------------ */
/* .new: POST an in-order key, read back its name                       */
/* ------------------------------------------------------------------ */

static void post_cb(void *arg, int status, const char *key,
                    const struct fs_meta *meta)
{
    struct fs_ctx *c = arg;
    struct fs_fh *fh = c->fh;
    fh->flushing = false;
    if (status == 0) {
        const char *slash = strrchr(key, '/');
        size_t l = strlen(slash ? slash + 1 : key);
        fh->created = malloc(l + 2);
        if (fh->created == NULL) {
            status = -ENOMEM;
        } else {
            memcpy(fh->created, slash ? slash + 1 : key, l);
            fh->created[l] = '\n';
            fh->created[l + 1] = '\0';
        }
    }
    if (c->req != NULL) {
        if (status != 0) {
            fuse_reply_err(c->req, -fs_status_errno(status));
        } else if (c->len > 0) { /* a read waiting for the name */
            size_t l = strlen(fh->created);
            size_t n = l < c->len ? l : c->len;
            fh->rpos = n;
            fuse_reply_buf(c->req, fh->created, n);
        } else {
            fuse_reply_err(c->req, 0);
        }
    }
    if (fh->released)
        fh_free(fh);
    ctx_free(c);
}

/* Reading .new after writing POSTs now (if not yet) and returns the new
 * key's name and "\n"; then EOF. Reading before any write is EOF. */
static void read_new(fuse_req_t req, struct fs_fh *fh, size_t size)
{
    if (fh->created != NULL) {
        size_t l = strlen(fh->created);
        size_t n = l - fh->rpos < size ? l - fh->rpos : size;
        fuse_reply_buf(req, fh->created + fh->rpos, n);
        fh->rpos += n;
        return;
    }
    if (!fh->dirty || fh->flushing) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    struct fs_ctx *c = ctx_new(fh->fs, req);
    if (c == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    c->fh = fh;
    c->len = size;
    struct fs *fs = fh->fs;
    char *sp = store_path(fs, fh->in->path);
    fh->dirty = false;
    fh->flushing = true;
    if (sp != NULL)
        c->local = local_begin(fs, sp, true);
    int rv = sp ? fs->ops->post(fs->data, sp, fh->buf ? fh->buf : "",
                                fh->len, post_cb, c)
                : -ENOMEM;
    free(sp);
    if (rv != 0)
        fh->flushing = false; /* reported, not retried (see flush_cb) */
    ctx_check(c, rv);
}

/* ------------------------------------------------------------------ */
/* .watch: a per-fd queue of event lines                                */
/* ------------------------------------------------------------------ */

static void watch_wake(struct fs_fh *fh);
static void defer_cb(uv_timer_t *t);

static int queue_push(struct fs_fh *fh, const char *json, size_t len)
{
    struct fs_line *l = malloc(sizeof(*l) + len);
    if (l == NULL)
        return -ENOMEM;
    l->next = NULL;
    l->len = len;
    l->pos = 0;
    memcpy(l->data, json, len);
    if (fh->qtail != NULL)
        fh->qtail->next = l;
    else
        fh->qhead = l;
    fh->qtail = l;
    fh->qbytes += len;
    return 0;
}

static void fh_watch_cb(void *arg, int status, const struct fs_event *ev)
{
    struct fs_fh *fh = arg;
    if (status != 0) {
        fh->bw = NULL;
        fh->ended = true;
        if (ev != NULL && ev->json_len > 0)
            queue_push(fh, ev->json, ev->json_len);
    } else if (fh->qbytes + ev->json_len > FS_WATCH_QUEUE_MAX) {
        /* A reader too slow to keep up: end its stream with etcd's
         * "history cleared" error rather than grow without bound. */
        static const char overflow[] =
            "{\"errorCode\":401,\"message\":\"The event in requested index "
            "is outdated and cleared\",\"cause\":\"fs watch queue "
            "overflow\",\"index\":0}\n";
        struct fs *fs = fh->fs;
        fs->ops->watch_cancel(fs->data, fh->bw);
        fh->bw = NULL;
        fh->ended = true;
        queue_push(fh, overflow, sizeof(overflow) - 1);
    } else if (queue_push(fh, ev->json, ev->json_len) != 0) {
        return;
    }
    watch_wake(fh);
}

static void watch_start(struct fs_fh *fh, uint64_t since)
{
    struct fs *fs = fh->fs;
    if (fs->finishing) {
        fh->ended = true;
        fh->start_err = -EIO;
        return;
    }
    char *sp = store_path(fs, fh->in->path);
    int rv = sp ? fs->ops->watch(fs->data, sp, since, fh_watch_cb, fh, &fh->bw)
                : -ENOMEM;
    free(sp);
    if (rv != 0) {
        fh->bw = NULL;
        fh->ended = true;
        fh->start_err = rv;
    }
}

static void watch_stop(struct fs_fh *fh)
{
    struct fs *fs = fh->fs;
    if (fh->bw != NULL)
        fs->ops->watch_cancel(fs->data, fh->bw);
    fh->bw = NULL;
    if (fh->rreq != NULL) {
        fuse_reply_err(fh->rreq, EINTR);
        fh->rreq = NULL;
    }
}

/* Reply one line (or what fits of it) to req. */
static void watch_reply(struct fs_fh *fh, fuse_req_t req, size_t size)
{
    struct fs_line *l = fh->qhead;
    size_t n = l->len - l->pos;
    if (n > size)
        n = size;
    fuse_reply_buf(req, l->data + l->pos, n);
    l->pos += n;
    if (l->pos == l->len) {
        fh->qhead = l->next;
        if (fh->qhead == NULL)
            fh->qtail = NULL;
        fh->qbytes -= l->len;
        free(l);
    }
}

static void watch_wake(struct fs_fh *fh)
{
    if (fh->rreq != NULL && fh->qhead != NULL) {
        fuse_req_t req = fh->rreq;
        fh->rreq = NULL;
        watch_reply(fh, req, fh->rsize);
    } else if (fh->rreq != NULL && fh->ended) {
        fuse_reply_buf(fh->rreq, NULL, 0);
        fh->rreq = NULL;
    }
    if (fh->ph != NULL) {
        fuse_lowlevel_notify_poll(fh->ph);
        fuse_pollhandle_destroy(fh->ph);
        fh->ph = NULL;
    }
}

/* An interrupted blocked read (a signal, a killed reader) is answered
 * EINTR. libfuse calls this with the request's lock held, possibly from
 * inside fuse_req_interrupt_func, so the reply is deferred to a timer. */
static void watch_interrupt(fuse_req_t req, void *data)
{
    struct fs_fh *fh = data;
    fh->interrupted = true;
    uv_timer_start(&fh->fs->defer, defer_cb, 0, 0);
}

static void defer_cb(uv_timer_t *t)
{
    struct fs *fs = t->data;
    for (struct fs_fh *fh = fs->fhs; fh != NULL; fh = fh->next) {
        if (fh->interrupted && fh->rreq != NULL) {
            fuse_reply_err(fh->rreq, EINTR);
            fh->rreq = NULL;
        }
        fh->interrupted = false;
    }
}

static void read_watch(fuse_req_t req, struct fs_fh *fh, size_t size)
{
    if (fh->qhead != NULL) {
        watch_reply(fh, req, size);
        return;
    }
    if (fh->ended) {
        fuse_reply_err(req, fh->start_err ? -fs_status_errno(fh->start_err)
                                          : 0);
        return;
    }
    if (fh->nonblock) {
        fuse_reply_err(req, EAGAIN);
        return;
    }
    if (fh->rreq != NULL) {
        fuse_reply_err(req, EBUSY); /* one blocked reader per fd */
        return;
    }
    fh->rreq = req;
    fh->rsize = size;
    fh->interrupted = false;
    fuse_req_interrupt_func(req, watch_interrupt, fh);
}

/* Writing a decimal index restarts the fd's queue from that index (the
 * history first). */
static void write_watch(fuse_req_t req, struct fs_fh *fh, const char *buf,
                        size_t size)
{
    char tmp[32];
    unsigned long long idx;
    size_t n = size;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        n--;
    if (n == 0 || n >= sizeof(tmp)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    memcpy(tmp, buf, n);
    tmp[n] = '\0';
    if (parse_ull(tmp, 10, &idx) != 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    struct fs *fs = fh->fs;
    if (fh->bw != NULL)
        fs->ops->watch_cancel(fs->data, fh->bw);
    fh->bw = NULL;
    for (struct fs_line *l = fh->qhead, *next; l != NULL; l = next) {
        next = l->next;
        free(l);
    }
    fh->qhead = fh->qtail = NULL;
    fh->qbytes = 0;
    fh->ended = false;
    fh->start_err = 0;
    /* Reply first: a synchronous backend may deliver history at once. */
    fuse_reply_write(req, size);
    watch_start(fh, idx);
    watch_wake(fh);
}

static void op_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
                    struct fuse_pollhandle *ph)
{
    struct fs_fh *fh = fh_of(fi);
    if (fh->kind != FS_KIND_WATCH) {
        if (ph != NULL)
            fuse_pollhandle_destroy(ph);
        fuse_reply_poll(req, POLLIN | POLLOUT);
        return;
    }
    if (ph != NULL) {
        if (fh->ph != NULL)
            fuse_pollhandle_destroy(fh->ph);
        fh->ph = ph;
    }
    unsigned ev = POLLOUT;
    if (fh->qhead != NULL || fh->ended)
        ev |= POLLIN;
    fuse_reply_poll(req, ev);
}

/* ------------------------------------------------------------------ */
/* Extended attributes user.etcd.*                                      */
/* ------------------------------------------------------------------ */

#define XA_PREFIX "user.etcd."

/* expiration as etcd's JSON shows it: RFC 3339, UTC, trimmed fraction. */
static void format_time(char *out, size_t n, int64_t ns)
{
    time_t sec = (time_t)(ns / 1000000000);
    long frac = (long)(ns % 1000000000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t l = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    if (frac > 0) {
        char f[16];
        snprintf(f, sizeof(f), ".%09ld", frac);
        size_t fl = strlen(f);
        while (fl > 1 && f[fl - 1] == '0')
            f[--fl] = '\0';
        snprintf(out + l, n - l, "%sZ", f);
    } else {
        snprintf(out + l, n - l, "Z");
    }
}

static void reply_xattr_value(fuse_req_t req, const char *v, size_t size)
{
    size_t l = strlen(v);
    if (size == 0)
        fuse_reply_xattr(req, l);
    else if (size < l)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, v, l);
}

static void getxattr_cb(void *arg, int status, const struct fs_meta *m,
                        const void *value, size_t len)
{
    struct fs_ctx *c = arg;
    char v[64];
    const char *name = c->path2;

    if (status != 0) {
        fuse_reply_err(c->req, status == 100 ? ENODATA
                                             : -fs_status_errno(status));
        ctx_free(c);
        return;
    }
    if (c->len2 == 1) { /* listxattr */
        char list[128];
        size_t l = 0;
        const char *names[] = {XA_PREFIX "createdIndex",
                               XA_PREFIX "modifiedIndex",
                               XA_PREFIX "expiration", XA_PREFIX "ttl"};
        for (size_t i = 0; i < (m->expiration != 0 ? 4u : 2u); i++) {
            memcpy(list + l, names[i], strlen(names[i]) + 1);
            l += strlen(names[i]) + 1;
        }
        if (c->len == 0)
            fuse_reply_xattr(c->req, l);
        else if (c->len < l)
            fuse_reply_err(c->req, ERANGE);
        else
            fuse_reply_buf(c->req, list, l);
        ctx_free(c);
        return;
    }
    if (strcmp(name, XA_PREFIX "createdIndex") == 0) {
        snprintf(v, sizeof(v), "%" PRIu64, m->created_index);
    } else if (strcmp(name, XA_PREFIX "modifiedIndex") == 0) {
        snprintf(v, sizeof(v), "%" PRIu64, m->modified_index);
    } else if (strcmp(name, XA_PREFIX "expiration") == 0 &&
               m->expiration != 0) {
        format_time(v, sizeof(v), m->expiration);
    } else if (strcmp(name, XA_PREFIX "ttl") == 0 && m->expiration != 0) {
        snprintf(v, sizeof(v), "%" PRId64, m->ttl);
    } else {
        fuse_reply_err(c->req, ENODATA);
        ctx_free(c);
        return;
    }
    reply_xattr_value(c->req, v, c->len);
    ctx_free(c);
}

static void xattr_start(fuse_req_t req, fuse_ino_t ino, const char *name,
                        size_t size, bool list)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *in = inode_get(fs, ino);
    if (in == NULL) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (in->kind == FS_KIND_WATCH) {
        char v[32];
        static const char names[] = XA_PREFIX "index";
        if (list) {
            if (size == 0)
                fuse_reply_xattr(req, sizeof(names));
            else if (size < sizeof(names))
                fuse_reply_err(req, ERANGE);
            else
                fuse_reply_buf(req, names, sizeof(names));
            return;
        }
        if (strcmp(name, names) != 0) {
            fuse_reply_err(req, ENODATA);
            return;
        }
        if (fs->finishing) {
            fuse_reply_err(req, EIO);
            return;
        }
        snprintf(v, sizeof(v), "%" PRIu64, fs->ops->index(fs->data));
        reply_xattr_value(req, v, size);
        return;
    }
    if (in->kind != FS_KIND_NODE) {
        if (list)
            fuse_reply_xattr(req, 0);
        else
            fuse_reply_err(req, ENODATA);
        return;
    }
    if (!list && strncmp(name, XA_PREFIX, strlen(XA_PREFIX)) != 0) {
        fuse_reply_err(req, ENODATA);
        return;
    }
    struct fs_ctx *c = ctx_new(fs, req);
    if (c != NULL) {
        c->len = size;
        c->len2 = list ? 1 : 0;
        c->path2 = strdup(list ? "" : name);
        if (c->path2 == NULL) {
            ctx_free(c);
            c = NULL;
        }
    }
    start_get(fs, req, in, getxattr_cb, c);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
                        size_t size)
{
    xattr_start(req, ino, name, size, false);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    xattr_start(req, ino, NULL, size, true);
}

static void ttl_set_cb(void *arg, int status, const struct fs_meta *meta)
{
    struct fs_ctx *c = arg;
    fuse_reply_err(c->req, -fs_status_errno(status));
    ctx_free(c);
}

static void ttl_get_cb(void *arg, int status, const struct fs_meta *m,
                       const void *value, size_t len)
{
    struct fs_ctx *c = arg;
    struct fs *fs = c->fs;
    if (status != 0) {
        fuse_reply_err(c->req, -fs_status_errno(status));
        ctx_free(c);
        return;
    }
    char *sp = store_path(fs, c->path);
    /* prevIndex makes it a compare-and-swap: a write racing in between is
     * ECANCELED rather than silently overwritten with the old value. */
    struct fs_set_args a = {
        .path = sp,
        .dir = m->dir,
        .value = m->dir ? NULL : value,
        .value_len = m->dir ? 0 : len,
        .prev_exist = 1,
        .prev_index = m->dir ? 0 : m->modified_index,
        .ttl = (int64_t)c->len,
    };
    if (sp != NULL)
        c->local = local_begin(fs, sp, false);
    int rv = sp ? fs->ops->set(fs->data, &a, ttl_set_cb, c) : -ENOMEM;
    free(sp);
    ctx_check(c, rv);
}

/* user.etcd.ttl = seconds sets a TTL; "" (or removexattr) removes it. */
static void ttl_start(fuse_req_t req, fuse_ino_t ino, const char *value,
                      size_t size)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *in = inode_get(fs, ino);
    unsigned long long ttl = 0;
    char tmp[32];

    if (in == NULL || in->kind != FS_KIND_NODE) {
        fuse_reply_err(req, in == NULL ? ENOENT : ENOTSUP);
        return;
    }
    if (fs->opt.ro) {
        fuse_reply_err(req, EROFS);
        return;
    }
    while (size > 0 && (value[size - 1] == '\n' || value[size - 1] == '\0'))
        size--;
    if (size >= sizeof(tmp)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (size > 0) {
        memcpy(tmp, value, size);
        tmp[size] = '\0';
        if (parse_ull(tmp, 10, &ttl) != 0 || ttl == 0 || ttl > INT32_MAX) {
            fuse_reply_err(req, EINVAL);
            return;
        }
    }
    struct fs_ctx *c = ctx_new(fs, req);
    if (c != NULL)
        c->len = (size_t)ttl;
    start_get(fs, req, in, ttl_get_cb, c);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
                        const char *value, size_t size, int flags)
{
    if (strcmp(name, XA_PREFIX "ttl") != 0) {
        fuse_reply_err(req, strncmp(name, XA_PREFIX, strlen(XA_PREFIX)) == 0
                                ? EPERM
                                : ENOTSUP);
        return;
    }
    ttl_start(req, ino, value, size);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    if (strcmp(name, XA_PREFIX "ttl") != 0) {
        fuse_reply_err(req, strncmp(name, XA_PREFIX, strlen(XA_PREFIX)) == 0
                                ? EPERM
                                : ENOTSUP);
        return;
    }
    ttl_start(req, ino, "", 0);
}

/* ------------------------------------------------------------------ */
/* Session                                                              */
/* ------------------------------------------------------------------ */

/* libfuse 3.14 cannot ask for FUSE_HANDLE_KILLPRIV_V2 (Linux 5.12): "the
 * filesystem clears suid/sgid/capabilities on write, truncate and
 * chown". Without it the kernel asks for security.capability (a GETXATTR
 * round trip) before every write and every O_TRUNC open, because FUSE
 * superblocks never cache "this inode has no security attributes"; with
 * it they do (SB_NOSEC). We have no suid bits and no security xattrs, so
 * the promise holds trivially. fuse_session_custom_io hands us libfuse's
 * reads and writes on /dev/fuse: the INIT request is noted, and the flag
 * is added to its reply if the kernel offered it. One `echo v > key`
 * loses two of its five round trips. */
static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
    struct fs *fs = userdata;
    ssize_t n = read(fd, buf, len);
    const struct fuse_in_header *h = buf;
    if (n >= (ssize_t)(sizeof(*h) + sizeof(struct fuse_init_in)) &&
        h->opcode == FUSE_INIT) {
        const struct fuse_init_in *in = (const void *)(h + 1);
        fs->init_unique = h->unique;
        fs->kernel_killpriv_v2 = in->major == FUSE_KERNEL_VERSION &&
                                 in->minor >= 33 &&
                                 (in->flags & FUSE_HANDLE_KILLPRIV_V2) != 0;
    }
    return n;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
    struct fs *fs = userdata;
    /* Notifications (unique 0) come from the notifier thread: they are
     * told apart before fs->init_unique, the loop thread's, is read. */
    if (count >= 2 && iov[0].iov_len == sizeof(struct fuse_out_header) &&
        ((struct fuse_out_header *)iov[0].iov_base)->unique != 0 &&
        fs->init_unique != 0 &&
        iov[1].iov_len >= offsetof(struct fuse_init_out, flags) +
                              sizeof(uint32_t)) {
        struct fuse_out_header *oh = iov[0].iov_base;
        if (oh->unique == fs->init_unique) {
            struct fuse_init_out *out = iov[1].iov_base;
            if (oh->error == 0 && fs->kernel_killpriv_v2)
                out->flags |= FUSE_HANDLE_KILLPRIV_V2;
            fs->init_unique = 0;
        }
    }
    return writev(fd, iov, count);
}

static const struct fuse_custom_io fs_io = {.read = io_read,
                                            .writev = io_writev};

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    /* O_TRUNC comes with open, so "echo v > key" is one set, not a
     * truncate followed by a write. */
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

static const struct fuse_lowlevel_ops fs_ll_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .mknod = op_mknod,
    .symlink = op_symlink,
    .link = op_link,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .rename = op_rename,
    .open = op_open,
    .create = op_create,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .fsync = op_fsync,
    .release = op_release,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .poll = op_poll,
};

static void session_ended(struct fs *fs)
{
    if (fs->exited)
        return;
    fs->exited = true;
    uv_poll_stop(&fs->poll);
    if (fs->opt.exit_cb != NULL)
        fs->opt.exit_cb(fs->opt.exit_arg);
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    struct fs *fs = h->data;
    int served = 0;
    /* Bounded batches keep the loop fair to the backend's own work. */
    for (; served < 64 && !fs->exited; served++) {
        int rv = fuse_session_receive_buf(fs->se, &fs->fbuf);
        if (rv == -EINTR || rv == -EAGAIN)
            break;
        if (rv <= 0 || fuse_session_exited(fs->se)) {
            session_ended(fs);
            return;
        }
        fuse_session_process_buf(fs->se, &fs->fbuf);
    }
    if (served > 0 && !fs->exited && fs->ops->served != NULL)
        fs->ops->served(fs->data);
}

/* The memory of a filesystem whose session and handles are gone: the
 * inode table and the struct itself. */
static void fs_free(struct fs *fs)
{
    for (size_t i = 0; i < fs->n_buckets; i++)
        for (struct fs_inode *in = fs->by_ino[i], *n; in != NULL; in = n) {
            n = in->next_ino;
            free(in->path);
            free(in);
        }
    free(fs->by_ino);
    free(fs->by_path);
    free(fs->root);
    free(fs->mountpoint);
    free(fs);
}

int fs_new(uv_loop_t *loop, const struct fs_backend_ops *ops, void *data,
           const struct fs_options *opt, struct fs **out)
{
    struct fs *fs = calloc(1, sizeof(*fs));
    char optbuf[256];
    int rv = -ENOMEM;

    if (fs == NULL)
        return -ENOMEM;
    fs->loop = loop;
    fs->ops = ops;
    fs->data = data;
    fs->opt = *opt;
    fs->opt.mountpoint = NULL;
    fs->next_ino = FUSE_ROOT_ID;
    if (fs->opt.ro)
        fs->opt.no_inotify = true; /* the kernel refuses the replays */
    fs->mountpoint = realpath(opt->mountpoint, NULL);
    if (fs->mountpoint == NULL) {
        rv = -errno;
        free(fs);
        return rv;
    }
    clock_gettime(CLOCK_REALTIME, &fs->mount_time);
    /* The root is kept without a trailing slash: "" for the whole tree. */
    const char *r = opt->root != NULL ? opt->root : "/";
    size_t rl = strlen(r);
    while (rl > 0 && r[rl - 1] == '/')
        rl--;
    fs->root = strndup(r, rl);
    if (fs->root == NULL || table_grow(fs) != 0)
        goto err_after_alloc;
    struct fs_inode *root = inode_obtain(fs, "", FS_KIND_NODE);
    if (root == NULL)
        goto err_after_alloc;
    root->nlookup = 1;

    snprintf(optbuf, sizeof(optbuf),
             "-ofsname=etcfs,subtype=etcfs,default_permissions%s%s",
             opt->allow_other ? ",allow_other" : "", opt->ro ? ",ro" : "");
    char *argv[] = {"etcfs", optbuf, opt->debug ? "-d" : NULL, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(opt->debug ? 3 : 2, argv);
    fs->se = fuse_session_new(&args, &fs_ll_ops, sizeof(fs_ll_ops), fs);
    fuse_opt_free_args(&args);
    if (fs->se == NULL) {
        rv = -EINVAL;
        goto err_after_alloc;
    }
    if (fuse_session_mount(fs->se, opt->mountpoint) != 0) {
        rv = -EIO;
        goto err_after_session;
    }
    int fd = fuse_session_fd(fs->se);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    (void)fuse_session_custom_io(fs->se, &fs_io, fd); /* see io_read */
    pthread_mutex_init(&fs->nlock, NULL);
    pthread_cond_init(&fs->ncond, NULL);
    if (pthread_create(&fs->nthread, NULL, notify_main, fs) != 0) {
        rv = -EAGAIN;
        goto err_after_mount;
    }
    if (uv_poll_init(loop, &fs->poll, fd) != 0) {
        rv = -EIO;
        goto err_after_thread;
    }
    fs->poll.data = fs;
    uv_timer_init(loop, &fs->defer);
    fs->defer.data = fs;
    uv_poll_start(&fs->poll, UV_READABLE, poll_cb);
    char *sp = store_path(fs, "");
    if (sp != NULL) {
        /* Without the feed the mount still works; caches then only age. */
        if (ops->watch(data, sp, 0, root_watch_cb, fs, &fs->root_watch) != 0)
            fs->root_watch = NULL;
        free(sp);
    }
    *out = fs;
    return 0;

err_after_thread:
    pthread_mutex_lock(&fs->nlock);
    fs->nstop = true;
    pthread_cond_signal(&fs->ncond);
    pthread_mutex_unlock(&fs->nlock);
    pthread_join(fs->nthread, NULL);
err_after_mount:
    pthread_cond_destroy(&fs->ncond);
    pthread_mutex_destroy(&fs->nlock);
    fuse_session_unmount(fs->se);
err_after_session:
    fuse_session_destroy(fs->se);
err_after_alloc:
    fs_free(fs);
    return rv;
}

static void handle_closed(uv_handle_t *h)
{
    struct fs *fs = h->data;
    if (--fs->open_handles > 0)
        return;
    fs_free(fs);
}

/* Stops and joins the notifier thread; only once the connection is
 * aborted, when nothing it does can wait on us. */
static void notifier_stop(struct fs *fs)
{
    pthread_mutex_lock(&fs->nlock);
    fs->nstop = true;
    pthread_cond_signal(&fs->ncond);
    pthread_mutex_unlock(&fs->nlock);
    pthread_join(fs->nthread, NULL);
    fs->njoined = true;
}

/* The last step of fs_close, once no backend call is in flight. */
static void fs_finish_close(struct fs *fs)
{
    struct fs_notify *n;
    if (fs->finishing)
        return;
    fs->finishing = true;
    pthread_mutex_lock(&fs->nlock);
    fs->nstop = true;
    pthread_cond_signal(&fs->ncond);
    pthread_mutex_unlock(&fs->nlock);
    /* The notifier may be inside a replay syscall on the mount that only
     * this thread can answer: keep serving the session until it exits
     * (the detached mount's kernel side stays alive until the fd closes). */
    int fd = fuse_session_fd(fs->se);
    while (!fs->njoined && pthread_tryjoin_np(fs->nthread, NULL) == EBUSY) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10) <= 0)
            continue;
        int rv = fuse_session_receive_buf(fs->se, &fs->fbuf);
        if (rv > 0)
            fuse_session_process_buf(fs->se, &fs->fbuf);
        else if (rv != -EAGAIN && rv != -EINTR)
            usleep(1000); /* connection gone: the syscall fails by itself */
    }
    while ((n = fs->nhead) != NULL) {
        fs->nhead = n->next;
        job_free(n);
    }
    while (fs->locals != NULL)
        local_end(fs, fs->locals);
    pthread_cond_destroy(&fs->ncond);
    pthread_mutex_destroy(&fs->nlock);
    while (fs->fhs != NULL) {
        struct fs_fh *fh = fs->fhs;
        if (fh->kind == FS_KIND_WATCH)
            watch_stop(fh); /* opened while draining */
        if (fh->kind == FS_KIND_DIR) {
            free(fh->dents);
            free(fh->names);
        }
        fh_free(fh);
    }
    fuse_session_destroy(fs->se);
    free(fs->fbuf.mem);
    fs->open_handles = 2;
    uv_close((uv_handle_t *)&fs->poll, handle_closed);
    uv_close((uv_handle_t *)&fs->defer, handle_closed);
}

void fs_close(struct fs *fs)
{
    if (fs->closing)
        return;
    fs->closing = true;
    fs->exited = true;
    uv_poll_stop(&fs->poll);
    uv_timer_stop(&fs->defer);
    if (fs->root_watch != NULL)
        fs->ops->watch_cancel(fs->data, fs->root_watch);
    fs->root_watch = NULL;
    for (struct fs_fh *fh = fs->fhs; fh != NULL; fh = fh->next)
        if (fh->kind == FS_KIND_WATCH)
            watch_stop(fh);
    /* The notifier thread must not be waiting on the kernel when we stop
     * serving. As root, MNT_FORCE aborts the FUSE connection (the
     * kernel's umount_begin) without closing our fd: its pending
     * requests and notifications fail, and it can be joined before the
     * fd is closed. Otherwise (fusermount, EPERM) unmounting closes the
     * fd under it, which aborts the connection too, but a notification
     * about to be written could then reach a reused fd number. */
    if (umount2(fs->mountpoint, MNT_FORCE) == 0 || errno == EBUSY) {
        if (errno == EBUSY)
            umount2(fs->mountpoint, MNT_DETACH); /* files still open in it */
        notifier_stop(fs);
    }
    fuse_session_unmount(fs->se);
    if (fs->inflight == 0)
        fs_finish_close(fs);
}
