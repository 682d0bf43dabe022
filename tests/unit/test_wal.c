/* Unit tests for wal/: round trips, reopen, cut, purge, big entries,
 * rewrites, torn tails at every byte, flipped bytes, storage-hook failures,
 * async group commit on a libuv loop, and real SIGKILL crashes of a child
 * appender. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "wal.h"
#include "wal_int.h"

/* ---- helpers ------------------------------------------------------------ */

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: deterministic per seed, no global state. */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ull;
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    return remove(p);
}

static void rm_rf(const char *p)
{
    nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

struct tdir {
    char root[64];
    char wal[96];
};

static void tdir_make(struct tdir *t)
{
    strcpy(t->root, "/tmp/test_wal.XXXXXX");
    if (!mkdtemp(t->root))
        abort();
    snprintf(t->wal, sizeof(t->wal), "%s/wal", t->root);
}

static void tdir_free(struct tdir *t)
{
    rm_rf(t->root);
}

/* Entry payload: a deterministic pattern of index, term and length. */
static void fill_data(unsigned char *p, size_t len, uint64_t index,
                      uint64_t term)
{
    uint64_t s = index * 1000003u + term * 7919u + len + 1;
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(rng_next(&s) >> 56);
}

static int check_data(const struct wal_entry *e, size_t want_len)
{
    unsigned char *buf = malloc(want_len ? want_len : 1);
    int ok;
    fill_data(buf, want_len, e->index, e->term);
    ok = e->len == want_len &&
         (want_len == 0 || memcmp(e->data, buf, want_len) == 0);
    free(buf);
    return ok;
}

static size_t len_for(uint64_t index)
{
    return (size_t)((index * 37) % 200);
}

/* Append entries [from, to] of term with len_for() payloads, sync. */
static int append_range(struct wal *w, uint64_t from, uint64_t to,
                        uint64_t term, const struct wal_hard_state *hs)
{
    int rv = 0;
    for (uint64_t i = from; i <= to && !rv; i++) {
        size_t len = len_for(i);
        unsigned char *buf = malloc(len ? len : 1);
        struct wal_entry e = {term, i, 1, buf, len};
        fill_data(buf, len, i, term);
        rv = wal_append_sync(w, i == to ? hs : NULL, &e, 1);
        free(buf);
    }
    return rv;
}

/* Storage hooks for tests: count calls, fail the Nth call of one kind (or
 * of any kind), make short writes, or skip syncs for speed. Thread-safe. */
enum hk {
    HK_OPEN,
    HK_PWRITE,
    HK_FSYNC,
    HK_FDATASYNC,
    HK_RENAME,
    HK_TRUNC,
    HK_OTHER,
    HK_ANY,
    HK_N
};

struct thooks {
    struct wal_hooks h;
    long calls[HK_N];
    int fail_kind;    /* HK_* or -1 */
    long fail_at;     /* fail the fail_at-th call of fail_kind (1-based) */
    int fail_errno;   /* default EIO */
    long failed;      /* how many calls were failed */
    size_t max_write; /* short writes: at most this many bytes per call */
    int nosync;       /* fsync/fdatasync succeed without syncing */
};

static int th_hit(struct thooks *t, int kind)
{
    long n = __atomic_add_fetch(&t->calls[kind], 1, __ATOMIC_SEQ_CST);
    long any = __atomic_add_fetch(&t->calls[HK_ANY], 1, __ATOMIC_SEQ_CST);
    if (t->fail_at <= 0)
        return 0;
    if ((t->fail_kind == kind && n == t->fail_at) ||
        (t->fail_kind == HK_ANY && any == t->fail_at)) {
        __atomic_add_fetch(&t->failed, 1, __ATOMIC_SEQ_CST);
        return -(t->fail_errno ? t->fail_errno : EIO);
    }
    return 0;
}

static int th_open(void *c, const char *p, int f, mode_t m)
{
    int rv = th_hit(c, HK_OPEN), fd;
    if (rv)
        return rv;
    fd = open(p, f | O_CLOEXEC, m);
    return fd < 0 ? -errno : fd;
}
static ssize_t th_pwrite(void *c, int fd, const void *b, size_t n, off_t o)
{
    struct thooks *t = c;
    ssize_t r;
    int rv = th_hit(t, HK_PWRITE);
    if (rv)
        return rv;
    if (t->max_write && n > t->max_write)
        n = t->max_write;
    r = pwrite(fd, b, n, o);
    return r < 0 ? -errno : r;
}
static int th_fsync(void *c, int fd)
{
    struct thooks *t = c;
    int rv = th_hit(t, HK_FSYNC);
    if (rv)
        return rv;
    if (t->nosync)
        return 0;
    return fsync(fd) < 0 ? -errno : 0;
}
static int th_fdatasync(void *c, int fd)
{
    struct thooks *t = c;
    int rv = th_hit(t, HK_FDATASYNC);
    if (rv)
        return rv;
    if (t->nosync)
        return 0;
    return fdatasync(fd) < 0 ? -errno : 0;
}
static int th_rename(void *c, const char *a, const char *b)
{
    int rv = th_hit(c, HK_RENAME);
    if (rv)
        return rv;
    return rename(a, b) < 0 ? -errno : 0;
}
static int th_ftruncate(void *c, int fd, off_t len)
{
    int rv = th_hit(c, HK_TRUNC);
    if (rv)
        return rv;
    return ftruncate(fd, len) < 0 ? -errno : 0;
}
static int th_unlink(void *c, const char *p)
{
    int rv = th_hit(c, HK_OTHER);
    if (rv)
        return rv;
    return unlink(p) < 0 ? -errno : 0;
}
static int th_mkdir(void *c, const char *p, mode_t m)
{
    int rv = th_hit(c, HK_OTHER);
    if (rv)
        return rv;
    return mkdir(p, m) < 0 ? -errno : 0;
}

static void th_init(struct thooks *t)
{
    memset(t, 0, sizeof(*t));
    t->fail_kind = -1;
    t->h.ctx = t;
    t->h.open = th_open;
    t->h.pwrite = th_pwrite;
    t->h.fsync = th_fsync;
    t->h.fdatasync = th_fdatasync;
    t->h.rename = th_rename;
    t->h.ftruncate = th_ftruncate;
    t->h.unlink = th_unlink;
    t->h.mkdir = th_mkdir;
}

/* Log sink collecting counts per level and the last warning. */
struct tlog {
    pthread_mutex_t mu;
    int n[4];
    char last_warn[1024];
};

static void tlog_cb(void *data, enum wal_log_level lvl, const char *msg)
{
    struct tlog *l = data;
    pthread_mutex_lock(&l->mu);
    l->n[lvl]++;
    if (lvl == WAL_LOG_WARN)
        snprintf(l->last_warn, sizeof(l->last_warn), "%s", msg);
    pthread_mutex_unlock(&l->mu);
}

static void tlog_init(struct tlog *l)
{
    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
}

static const struct wal_metadata MD = {0x1234, 0xabcdef};

/* Open dir, read everything after snap (NULL: all), keep the handle in
 * read-done state in *wp (or close it if wp is NULL). */
static int reopen(const char *dir, const struct wal_options *o,
                  const struct wal_snapshot *snap, struct wal_read_result *res,
                  struct wal **wp, char *err, size_t errlen)
{
    struct wal *w;
    int rv = wal_open(&w, dir, o);
    if (rv)
        return rv;
    rv = wal_read_all(w, snap, res);
    if (err)
        snprintf(err, errlen, "%s", wal_last_error(w));
    if (wp && !rv)
        *wp = w;
    else
        wal_close(w, NULL, NULL);
    return rv;
}

/* Check res holds entries [from, to] of term written by append_range. */
static int res_has_range(const struct wal_read_result *r, size_t at,
                         uint64_t from, uint64_t to, uint64_t term)
{
    for (uint64_t i = from; i <= to; i++, at++) {
        const struct wal_entry *e;
        if (at >= r->n_entries)
            return 0;
        e = &r->entries[at];
        if (e->index != i || e->term != term || !check_data(e, len_for(i)))
            return 0;
    }
    return 1;
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    size_t sl = strlen(suffix);
    if (!d)
        return -1;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l >= sl && strcmp(de->d_name + l - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* Path of the i-th segment (sorted by name) into out. */
static int seg_at(const char *dir, int i, char *out, size_t outlen)
{
    struct dirent **list;
    int n = scandir(dir, &list, NULL, alphasort), k = 0, found = -1;
    for (int j = 0; j < n; j++) {
        size_t l = strlen(list[j]->d_name);
        if (l == 37 && strcmp(list[j]->d_name + 33, ".wal") == 0) {
            if (k == i || (i < 0 && 1)) {
                snprintf(out, outlen, "%s/%s", dir, list[j]->d_name);
                found = 0;
            }
            k++;
        }
        free(list[j]);
    }
    free(list);
    return found;
}

static int read_whole(const char *path, unsigned char **buf, size_t *len)
{
    struct stat st;
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) < 0)
        return -1;
    *buf = malloc((size_t)st.st_size + 1);
    *len = (size_t)pread(fd, *buf, (size_t)st.st_size, 0);
    close(fd);
    return 0;
}

static int write_whole(const char *path, const unsigned char *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_TRUNC | O_CREAT, 0644);
    ssize_t r;
    if (fd < 0)
        return -1;
    r = pwrite(fd, buf, len, 0);
    close(fd);
    return r == (ssize_t)len ? 0 : -1;
}

/* Offsets of the records in a segment image (up to the zero fill). */
static size_t rec_offsets(const unsigned char *b, size_t len, size_t *offs,
                          size_t max)
{
    size_t off = 0, n = 0;
    while (off + 16 <= len && n < max) {
        uint32_t plen = (uint32_t)b[off] | (uint32_t)b[off + 1] << 8 |
                        (uint32_t)b[off + 2] << 16 | (uint32_t)b[off + 3] << 24;
        uint32_t type = b[off + 4];
        if (type == 0)
            break;
        offs[n++] = off;
        off += wal_rec_size(plen);
    }
    return n;
}

/* ---- tests ---------------------------------------------------------------*/

TEST(crc32c_paths)
{
    static const char check[] = "123456789";
    unsigned char buf[1027];
    uint64_t s = 42;
    ASSERT_EQ(wal_crc32c(0, check, 9), 0xe3069283u);
    ASSERT_EQ(wal_crc32c_sw(0, check, 9), 0xe3069283u);
    ASSERT_EQ(wal_crc32c(0, "", 0), 0);
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (unsigned char)rng_next(&s);
    /* Every length and misalignment, and chaining in two pieces, agree. */
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n + off <= sizeof(buf); n += 1 + n / 8) {
            uint32_t a = wal_crc32c(7, buf + off, n);
            uint32_t b = wal_crc32c_sw(7, buf + off, n);
            uint32_t c = wal_crc32c_sw(wal_crc32c(7, buf + off, n / 3),
                                       buf + off + n / 3, n - n / 3);
            ASSERT_EQ(a, b);
            ASSERT_EQ(a, c);
        }
    if (!wal_crc32c_hw_available())
        fprintf(stderr, "note: no SSE4.2, both paths are the table\n");
}

TEST(create_empty_reopen)
{
    struct tdir t;
    struct wal *w;
    struct wal_read_result res;
    struct wal_options o = {.segment_size = 8192};
    tdir_make(&t);
    ASSERT_EQ(wal_exists(t.wal), 0);
    ASSERT_OK(wal_create(&w, t.wal, &MD, &o));
    ASSERT_EQ(wal_exists(t.wal), 1);
    wal_close(w, NULL, NULL);
    ASSERT_EQ(wal_create(&w, t.wal, &MD, &o), -EEXIST);

    ASSERT_OK(wal_open(&w, t.wal, &o));
    /* Read mode: no appends. */
    ASSERT_EQ(wal_append_sync(w, NULL, NULL, 0), -EINVAL);
    ASSERT_OK(wal_read_all(w, NULL, &res));
    ASSERT_EQ(res.metadata.node_id, MD.node_id);
    ASSERT_EQ(res.metadata.cluster_id, MD.cluster_id);
    ASSERT_EQ(res.n_entries, 0);
    ASSERT_EQ(res.hard_state.term, 0);
    wal_read_result_free(&res);
    ASSERT_EQ(wal_read_all(w, NULL, &res), -EINVAL);
    ASSERT_OK(wal_start_append(w));
    ASSERT_EQ(wal_read_all(w, NULL, &res), -EINVAL);
    {
        struct wal_hard_state hs = {3, 2, 1};
        ASSERT_OK(wal_append_sync(w, &hs, NULL, 0));
    }
    wal_close(w, NULL, NULL);
    ASSERT_OK(reopen(t.wal, &o, NULL, &res, NULL, NULL, 0));
    ASSERT_EQ(res.hard_state.term, 3);
    ASSERT_EQ(res.hard_state.vote, 2);
    ASSERT_EQ(res.hard_state.commit, 1);
    wal_read_result_free(&res);
    ASSERT_EQ(wal_open(&w, t.root, &o), -ENOENT);
    tdir_free(&t);
}

TEST(round_trip_reopen_cut)
{
    struct tdir t;
    struct wal *w;
    struct wal_read_result res;
    struct wal_options o = {.segment_size = 4096};
    struct wal_hard_state hs = {1, 1, 150};
    char first[256];
    tdir_make(&t);
    ASSERT_OK(wal_create(&w, t.wal, &MD, &o));
    ASSERT_OK(append_range(w, 1, 150, 1, &hs));
    ASSERT_EQ(wal_last_index(w), 150);
    wal_close(w, NULL, NULL);
    ASSERT_GT(count_files(t.wal, ".wal"), 3); /* segments were cut */
    ASSERT_OK(seg_at(t.wal, 1, first, sizeof(first)));
    /* The second segment is named after the index it starts at. */
    {
        struct wal_read_result r2;
        unsigned long long seq, fi;
        const char *base = strrchr(first, '/') + 1;
        ASSERT_EQ(sscanf(base, "%16llx-%16llx.wal", &seq, &fi), 2);
        ASSERT_EQ(seq, 1);
        ASSERT_GT(fi, 1);
        ASSERT_OK(reopen(t.wal, &o, NULL, &r2, NULL, NULL, 0));
        ASSERT_EQ(r2.n_entries, 150);
        wal_read_result_free(&r2);
    }

    /* Reopen, append more, reopen again. */
    ASSERT_OK(reopen(t.wal, &o, NULL, &res, &w, NULL, 0));
    ASSERT_EQ(res.n_entries, 150);
    ASSERT(res_has_range(&res, 0, 1, 150, 1));
    ASSERT_EQ(res.hard_state.commit, 150);
    wal_read_result_free(&res);
    ASSERT_OK(wal_start_append(w));
    hs.commit = 300;
    ASSERT_OK(append_range(w, 151, 300, 1, &hs));
    wal_close(w, NULL, NULL);
    ASSERT_OK(reopen(t.wal, &o, NULL, &res, NULL, NULL, 0));
    ASSERT_EQ(res.n_entries, 300);
    ASSERT(res_has_range(&res, 0, 1, 300, 1));
    ASSERT_EQ(res.hard_state.commit, 300);
    wal_read_result_free(&res);

    /* From a snapshot: only what follows it. */
    {
        struct wal_snapshot sn = {1, 200};
        ASSERT_OK(reopen(t.wal, &o, &sn, &res, NULL, NULL, 0));
        ASSERT_EQ(res.n_entries, 100);
        ASSERT(res_has_range(&res, 0, 201, 300, 1));
        wal_read_result_free(&res);
    }
    tdir_free(&t);
}

TEST(big_entries)
{
    struct tdir t;
    struct wal *w;
    struct wal_read_result res;
    struct wal_options o = {.segment_size = 65536};
    size_t sizes[] = {1u << 20, 3u << 20, 100, (1u << 20) + 5};
    tdir_make(&t);
    ASSERT_OK(wal_create(&w, t.wal, &MD, &o));
    for (size_t i = 0; i < 4; i++) {
        unsigned char *b = malloc(sizes[i]);
        struct wal_entry e = {2, i + 1, 0, b, sizes[i]};
        fill_data(b, sizes[i], i + 1, 2);
        ASSERT_OK(wal_append_sync(w, NULL, &e, 1));
        free(b);
    }
    wal_close(w, NULL, NULL);
    ASSERT_OK(reopen(t.wal, &o, NULL, &res, NULL, NULL, 0));
    ASSERT_EQ(res.n_entries, 4);
    for (size_t i = 0; i < 4; i++)
        ASSERT(check_data(&res.entries[i], sizes[i]));
    wal_read_result_free(&res);
    tdir_free(&t);
}

TEST(rewrite_by_later_term)
{
    struct tdir t;
    struct wal *w;
    struct wal_read_result res;
    struct wal_options o = {.segment_size = 4096};
    tdir_make(&t);
    ASSERT_OK(wal_create(&w, t.wal, &MD, &o));
    ASSERT_OK(append_range(w, 1, 60, 1, NULL));
    /* A new leader rewrites from 41 on (across a segment boundary). */
    ASSERT_OK(append_range(w, 41, 50, 2, NULL));
    ASSERT_EQ(wal_last_index(w), 50);
    wal_close(w, NULL, NULL);
    ASSERT_OK(reopen(t.wal, &o, NULL, &res, &w, NULL, 0));
    ASSERT_EQ(res.n_entries, 50);
    ASSERT(res_has_range(&res, 0, 1, 40, 1));
    ASSERT(res_has_range(&res, 40, 41, 50, 2));
    wal_read_result_free(&res);
    ASSERT_OK(wal_start_append(w));
    ASSERT_OK(append_range(w, 20, 30, 3, NULL)); /* and again */
    ASSERT_OK(append_range(w, 31, 200, 3, NULL));
    wal_close(w, NULL, NULL);
    ASSERT_OK(reopen(t.wal, &o, NULL, &res, NULL, NULL, 0));
    ASSERT_EQ(res.n_entries, 200);
    ASSERT(res_has_range(&res, 0, 1, 19, 1));
    ASSERT(res_has_range(&res, 19, 20, 200, 3));
    wal_read_result_free(&res);
    tdir_free(&t);
}

TEST(snapshot_and_purge)
{
    struct tdir t;
    struct wal *w;
    struct wal_read_result res;
    struct wal_options o = {.segment_size = 4096};
    struct wal_snapshot sn = {1, 250};
    char err[600];
    int before, after;
    tdir_make(&t);
    ASSERT_OK(wal_create(&w, t.wal, &MD, &o));
    ASSERT_OK(append_range(w, 1, 300, 1, NULL));
    ASSERT_OK(wal_save_snapshot_sync(w, &sn));
    before = count_files(t.wal, ".wal");
    ASSERT_GT(before, 6);
    /* max_wals 0 keeps everything; a snapshot at 0 covers nothing. */
    ASSERT_EQ(wal_purge(w, 250, 0), 0);
    ASSERT_EQ(wal_purge(w, 0, 1), 0);
    ASSERT_GT(wal_purge(w, 250, 2), 0);
    after = count_files(t.wal, ".wal");
    ASSERT_LT(after, before);
    ASSERT_GE(after, 2);
    ASSERT_OK(append_range(w, 301, 320, 1, NULL));
    wal_close(w, NULL, NULL);

    ASSERT_OK(reopen(t.wal, &o, &sn, &res, NULL, NULL, 0));
    ASSERT_EQ(res.n_entries, 70);
    ASSERT(res_has_range(&res, 0, 251, 320, 1));
    ASSERT_EQ(res.last_snapshot.index, 250);
    ASSERT_EQ(res.last_snapshot.term, 1);
    wal_read_result_free(&res);
    /* The purged history is really gone: refused, not silently empty. */
    ASSERT_EQ(reopen(t.wal, &o, NULL, &res, NULL, err, sizeof(err)),
              WAL_ECORRUPT);
    ASSERT(strstr(err, "missing") != NULL);
    tdir_free(&t);
}

TEST(lock_keeps_second_handle_out)
{
    struct tdir t;
    struct wal *w, *w2;
    struct wal_options o = {.segment_size = 4096};
    tdir_make(&t);
    ASSERT_OK(wal_create(&w, t.wal, &MD, &o));
    ASSERT_EQ(wal_open(&w2, t.wal, &o), WAL_ELOCKED);
    {
        /* Another process is kept out too. */
        int st;
        pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0)
            _exit(wal_open(&w2, t.wal, &o) == WAL_ELOCKED ? 0 : 1);
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    wal_close(w, NULL, NULL);
    ASSERT_OK(wal_open(&w2, t.wal, &o));
    ASSERT_EQ(wal_open(&w, t.wal, &o), WAL_ELOCKED);
    wal_close(w2, NULL, NULL);
    tdir_free(&t);
}

/* For every byte offset of the last record: a tail cut there, or filled
 * with garbage from there, reopens to exactly the records before it. */
TEST(torn_tail_every_offset)
{
    struct tdir t;
    struct wal *w;
    struct wal_read_result res;
    struct thooks th;
    struct tlog lg;
    struct wal_options o = {.segment_size = 8192};
    char path[256], broken[300];
    unsigned char *orig, *buf;
    size_t len, offs[256], n, last_start, last_end;
    uint64_t s = 7;
    tdir_make(&t);
    th_init(&th);
    th.nosync = 1; /* the page cache is what we inspect: keep it fast */
    tlog_init(&lg);
    o.hooks = &th.h;
    o.log = tlog_cb;
    o.log_data = &lg;
    ASSERT_OK(wal_create(&w, t.wal, &MD, &o));
    ASSERT_OK(append_range(w, 1, 20, 1, NULL));
    {
        unsigned char big[300];
        struct wal_entry e = {1, 21, 0, big, sizeof(big)};
        fill_data(big, sizeof(big), 21, 1);
        ASSERT_OK(wal_append_sync(w, NULL, &e, 1));
    }
    wal_close(w, NULL, NULL);
    ASSERT_EQ(count_files(t.wal, ".wal"), 1);
    ASSERT_OK(seg_at(t.wal, 0, path, sizeof(path)));
    snprintf(broken, sizeof(broken), "%s.broken", path);
    ASSERT_OK(read_whole(path, &orig, &len));
    n = rec_offsets(orig, len, offs, 256);
    last_start = offs[n - 1];
    last_end = last_start + wal_rec_size(300);
    buf = malloc(len);
    for (int mode = 0; mode < 2; mode++) {
        for (size_t cut = last_start; cut < last_end; cut++) {
            size_t wlen = len;
            int warns = lg.n[WAL_LOG_WARN];
            memcpy(buf, orig, len);
            if (mode == 0) {
                wlen = cut; /* truncated file */
            } else {
                for (size_t i = cut; i < len; i++)
                    buf[i] = (unsigned char)rng_next(&s);
            }
            ASSERT_OK(write_whole(path, buf, wlen));
            unlink(broken);
            ASSERT_OK(reopen(t.wal, &o, NULL, &res, &w, NULL, 0));
            ASSERT_EQ(res.n_entries, 20);
            ASSERT(res_has_range(&res, 0, 1, 20, 1));
            wal_read_result_free(&res);
            if (cut > last_start) {
                /* Bytes were cut: kept aside, and a warning. */
                ASSERT_EQ(lg.n[WAL_LOG_WARN], warns + 1);
                ASSERT(strstr(lg.last_warn, "torn tail") != NULL);
                ASSERT_EQ(access(broken, F_OK), 0);
            }
            if (cut % 37 == 0) {
                /* The repaired WAL takes appends and reads back. */
                ASSERT_OK(wal_start_append(w));
                ASSERT_OK(append_range(w, 21, 25, 1, NULL));
                wal_close(w, NULL, NULL);
                ASSERT_OK(reopen(t.wal, &o, NULL, &res, NULL, NULL, 0));
                ASSERT_EQ(res.n_entries, 25);
                ASSERT(res_has_range(&res, 20, 21, 25, 1));
                wal_read_result_free(&res);
            } else {
                wal_close(w, NULL, NULL);
            }
        }
    }
    ASSERT_EQ(lg.n[WAL_LOG_ERROR], 0);
    free(buf);
    free(orig);
    tdir_free(&t);
}

/* A flipped byte anywhere before the last record is refused, naming the
 * file and the offset of the record that holds it. */
TEST(flipped_byte_refused)
{
    struct tdir t;
    struct wal *w;
    struct wal_read_result res;
    struct thooks th;
    struct wal_options o = {.segment_size = 4096};
    char paths[3][256], err[900], want[900];
    unsigned char *orig[3];
    size_t lens[3], offs[3][256], nrec[3];
    uint64_t s = 99;
    int tried = 0;
    tdir_make(&t);
    th_init(&th);
    th.nosync = 1;
    o.hooks = &th.h;
    ASSERT_OK(wal_create(&w, t.wal, &MD, &o));
    ASSERT_OK(append_range(w, 1, 80, 1, NULL));
    wal_close(w, NULL, NULL);
    ASSERT_GE(count_files(t.wal, ".wal"), 3);
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(seg_at(t.wal, i, paths[i], sizeof(paths[i])));
        ASSERT_OK(read_whole(paths[i], &orig[i], &lens[i]));
        nrec[i] = rec_offsets(orig[i], lens[i], offs[i], 256);
        ASSERT_GT(nrec[i], 3);
    }
    for (int round = 0; round < 600; round++) {
        int seg = (int)(rng_next(&s) % 3);
        size_t end = offs[seg][nrec[seg] - 1]; /* up to the last record */
        size_t pos, rec = 0;
        unsigned char flipbit;
        int is_last_seg = count_files(t.wal, ".wal") == seg + 1;
        if (is_last_seg)
            end = offs[seg][nrec[seg] - 2] + 8; /* keep resync possible */
        pos = (size_t)(rng_next(&s) % end);
        for (size_t r = 0; r < nrec[seg]; r++)
            if (offs[seg][r] <= pos)
                rec = offs[seg][r];
        flipbit = (unsigned char)(1u << (rng_next(&s) % 8));
        orig[seg][pos] ^= flipbit;
        ASSERT_OK(write_whole(paths[seg], orig[seg], lens[seg]));
        ASSERT_EQ(reopen(t.wal, &o, NULL, &res, NULL, err, sizeof(err)),
                  WAL_ECORRUPT);
        snprintf(want, sizeof(want), "%s: offset %zu:", paths[seg], rec);
        if (seg == 0 && rec == 0 && pos >= 12) {
            /* Segment 0's chain value is not checked against a previous
             * segment: the flip shows at the first record chained from it. */
            snprintf(want, sizeof(want), "%s: offset %zu:", paths[seg],
                     offs[seg][1]);
        }
        if (strstr(err, want) == NULL) {
            fprintf(stderr, "flip at %s:%zu (record %zu): %s\n", paths[seg],
                    pos, rec, err);
            ASSERT(0);
        }
        /* Undo the flip for the next round. */
        orig[seg][pos] ^= flipbit;
        ASSERT_OK(write_whole(paths[seg], orig[seg], lens[seg]));
        tried++;
    }
    ASSERT_GT(tried, 0);
    for (int i = 0; i < 3; i++)
        free(orig[i]);
    tdir_free(&t);
}

TEST(short_writes_round_trip)
{
    struct tdir t;
    struct wal *w;
    struct wal_read_result res;
    struct thooks th;
    struct wal_options o = {.segment_size = 4096};
    tdir_make(&t);
    th_init(&th);
    th.nosync = 1;
    th.max_write = 7;
    o.hooks = &th.h;
    ASSERT_OK(wal_create(&w, t.wal, &MD, &o));
    ASSERT_OK(append_range(w, 1, 60, 1, NULL));
    wal_close(w, NULL, NULL);
    ASSERT_GT(th.calls[HK_PWRITE], 1000); /* really were short */
    ASSERT_OK(reopen(t.wal, NULL, NULL, &res, NULL, NULL, 0));
    ASSERT_EQ(res.n_entries, 60);
    ASSERT(res_has_range(&res, 0, 1, 60, 1));
    wal_read_result_free(&res);
    tdir_free(&t);
}

/* Run create + 40 appends (with cuts) failing the n-th hook call of kind;
 * returns the last acknowledged index, or -1 if create failed. Checks that
 * after the first failure every later append fails too. */
static int64_t failing_scenario(const char *dir, int kind, long n,
                                int *sticky_ok, long *calls)
{
    struct thooks th;
    struct wal *w;
    struct wal_options o = {.segment_size = 4096};
    int64_t acked = 0;
    int failed = 0;
    th_init(&th);
    th.nosync = 1;
    th.fail_kind = kind;
    th.fail_at = n;
    o.hooks = &th.h;
    *sticky_ok = 1;
    if (wal_create(&w, dir, &MD, &o) != 0) {
        *calls = th.calls[HK_ANY];
        return -1;
    }
    for (uint64_t i = 1; i <= 40; i++) {
        int rv = append_range(w, i, i, 1, NULL);
        if (rv == 0 && failed)
            *sticky_ok = 0;
        if (rv)
            failed = 1;
        else
            acked = (int64_t)i;
    }
    wal_close(w, NULL, NULL);
    *calls = th.calls[HK_ANY];
    return acked;
}

/* Fail every single storage call in turn: whatever was acknowledged reads
 * back intact, and nothing is acknowledged after a failure. */
TEST(every_storage_call_fails_once)
{
    long total = 0;
    int sticky_ok;
    struct tdir t;
    int kinds[] = {HK_ANY, HK_FDATASYNC, HK_RENAME};
    tdir_make(&t);
    failing_scenario(t.wal, -1, 0, &sticky_ok, &total);
    rm_rf(t.wal);
    ASSERT_GT(total, 60);
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        long max = kinds[k] == HK_ANY ? total : 12;
        for (long n = 1; n <= max; n++) {
            struct wal_read_result res;
            long calls;
            char err[900];
            int64_t acked =
                failing_scenario(t.wal, kinds[k], n, &sticky_ok, &calls);
            int rv;
            ASSERT(sticky_ok);
            if (acked < 0 && !wal_exists(t.wal)) {
                rm_rf(t.wal);
                continue;
            }
            rv = reopen(t.wal, NULL, NULL, &res, NULL, err, sizeof(err));
            if (rv) {
                fprintf(stderr, "kind %d call %ld: %d %s\n", kinds[k], n, rv,
                        err);
                ASSERT_OK(rv);
            }
            if (acked > 0) {
                ASSERT_GE(res.n_entries, (size_t)acked);
                ASSERT(res_has_range(&res, 0, 1, (uint64_t)acked, 1));
            }
            /* Anything beyond was written but never acknowledged; it may
             * or may not be there, but it must be intact. */
            ASSERT(res_has_range(&res, 0, 1, res.n_entries, 1));
            wal_read_result_free(&res);
            rm_rf(t.wal);
        }
    }
    tdir_free(&t);
}

TEST(failed_fsync_is_sticky)
{
    struct tdir t;
    struct wal *w;
    struct thooks th;
    struct wal_options o = {.segment_size = 1u << 20};
    struct wal_hard_state hs = {1, 0, 1};
    tdir_make(&t);
    th_init(&th);
    th.nosync = 1;
    o.hooks = &th.h;
    ASSERT_OK(wal_create(&w, t.wal, &MD, &o));
    ASSERT_OK(append_range(w, 1, 3, 1, NULL));
    th.fail_kind = HK_FDATASYNC;
    th.fail_at = th.calls[HK_FDATASYNC] + 1;
    ASSERT_EQ(append_range(w, 4, 4, 1, NULL), -EIO);
    ASSERT_EQ(append_range(w, 5, 5, 1, NULL), -EIO);
    ASSERT_EQ(wal_append_sync(w, &hs, NULL, 0), -EIO);
    ASSERT_EQ(wal_save_snapshot_sync(w, &(struct wal_snapshot){1, 1}), -EIO);
    ASSERT_EQ(th.failed, 1); /* refused without even trying again */
    wal_close(w, NULL, NULL);
    tdir_free(&t);
}

TEST(commit_only_hard_state_skips_fsync)
{
    struct tdir t;
    struct wal *w;
    struct thooks th;
    struct wal_read_result res;
    struct wal_options o = {.segment_size = 1u << 20};
    struct wal_hard_state hs = {1, 0, 1};
    long before;
    tdir_make(&t);
    th_init(&th);
    th.nosync = 1;
    o.hooks = &th.h;
    ASSERT_OK(wal_create(&w, t.wal, &MD, &o));
    before = th.calls[HK_FDATASYNC];
    ASSERT_OK(wal_append_sync(w, &hs, NULL, 0)); /* new term: synced */
    ASSERT_EQ(th.calls[HK_FDATASYNC], before + 1);
    hs.commit = 2;
    ASSERT_OK(wal_append_sync(w, &hs, NULL, 0)); /* commit only: not */
    ASSERT_EQ(th.calls[HK_FDATASYNC], before + 1);
    hs.vote = 3;
    ASSERT_OK(wal_append_sync(w, &hs, NULL, 0)); /* vote: synced */
    ASSERT_EQ(th.calls[HK_FDATASYNC], before + 2);
    ASSERT_OK(wal_append_sync(w, NULL, NULL, 0)); /* barrier: synced */
    ASSERT_EQ(th.calls[HK_FDATASYNC], before + 3);
    wal_close(w, NULL, NULL);
    ASSERT_OK(reopen(t.wal, NULL, NULL, &res, NULL, NULL, 0));
    ASSERT_EQ(res.hard_state.vote, 3);
    ASSERT_EQ(res.hard_state.commit, 2);
    wal_read_result_free(&res);
    tdir_free(&t);
}

TEST(missing_segment_and_index_gap_refused)
{
    struct tdir t;
    struct wal *w;
    struct wal_read_result res;
    struct wal_options o = {.segment_size = 4096};
    char p1[256], p2[256], err[900];
    tdir_make(&t);
    ASSERT_OK(wal_create(&w, t.wal, &MD, &o));
    ASSERT_OK(append_range(w, 1, 100, 1, NULL));
    wal_close(w, NULL, NULL);
    ASSERT_GE(count_files(t.wal, ".wal"), 4);
    /* A renamed segment: its first index no longer follows on. */
    ASSERT_OK(seg_at(t.wal, 2, p1, sizeof(p1)));
    strcpy(p2, p1);
    p2[strlen(p2) - 5] ^= 1; /* last hex digit of the first index */
    ASSERT_OK(rename(p1, p2));
    ASSERT_EQ(reopen(t.wal, &o, NULL, &res, NULL, err, sizeof(err)),
              WAL_ECORRUPT);
    ASSERT(strstr(err, p2) != NULL);
    ASSERT(strstr(err, "offset 0") != NULL);
    ASSERT_OK(rename(p2, p1));
    ASSERT_OK(reopen(t.wal, &o, NULL, &res, NULL, NULL, 0));
    wal_read_result_free(&res);
    /* A missing segment. */
    ASSERT_OK(unlink(p1));
    ASSERT_EQ(reopen(t.wal, &o, NULL, &res, NULL, err, sizeof(err)),
              WAL_ECORRUPT);
    ASSERT(strstr(err, "missing segment") != NULL);
    tdir_free(&t);
}

/* ---- asynchronous API on a libuv loop ----------------------------------- */

struct slow_hooks {
    struct thooks th;
    long synced; /* fdatasyncs completed */
};

static int slow_fdatasync(void *c, int fd)
{
    struct slow_hooks *s = c;
    int rv = th_hit(&s->th, HK_FDATASYNC);
    struct timespec ts = {0, 300000}; /* a 0.3 ms "disk" */
    if (rv)
        return rv;
    nanosleep(&ts, NULL);
    __atomic_add_fetch(&s->synced, 1, __ATOMIC_SEQ_CST);
    return 0;
}

struct actx {
    struct wal *w;
    struct slow_hooks *sh;
    struct wal_append_req reqs[64];
    long synced_at_submit[64];
    uint64_t index_of[64];
    uint64_t next_index;
    uint64_t total;
    uint64_t done;
    uint64_t last_done_index;
    int errors;
    int order_ok;
    int durable_ok;
    int first_err;
    int canceled;
    int submit_errors;
};

static void acb(struct wal_append_req *req, int status);

static int asubmit(struct actx *a, int slot)
{
    unsigned char buf[128];
    uint64_t i = a->next_index++;
    struct wal_entry e = {1, i, 0, buf, sizeof(buf)};
    int rv;
    fill_data(buf, sizeof(buf), i, 1);
    a->reqs[slot].data = a;
    a->index_of[slot] = i;
    a->synced_at_submit[slot] =
        __atomic_load_n(&a->sh->synced, __ATOMIC_SEQ_CST);
    rv = wal_append(a->w, &a->reqs[slot], NULL, &e, 1, acb);
    if (rv)
        a->next_index--; /* refused: its callback will never run */
    return rv;
}

static void acb(struct wal_append_req *req, int status)
{
    struct actx *a = req->data;
    int slot = (int)(req - a->reqs);
    a->done++;
    if (a->index_of[slot] != a->last_done_index + 1)
        a->order_ok = 0;
    a->last_done_index = a->index_of[slot];
    if (status == WAL_ECANCELED) {
        a->canceled++;
        return;
    }
    if (status) {
        if (!a->errors)
            a->first_err = status;
        a->errors++;
        return;
    }
    if (a->errors)
        a->order_ok = 0; /* success after a failure */
    /* Acknowledged only after an fsync that started after submission. */
    if (__atomic_load_n(&a->sh->synced, __ATOMIC_SEQ_CST) <=
        a->synced_at_submit[slot])
        a->durable_ok = 0;
    if (a->next_index <= a->total && asubmit(a, slot) != 0)
        a->submit_errors++;
}

/* The shared set-up of the asynchronous tests: slow fdatasync hooks, an
 * append context expecting total entries from index 1, and a loop that o
 * points at. Returns uv_loop_init's result. */
static int async_init(struct slow_hooks *sh, struct actx *a,
                      uv_loop_t *loop, struct wal_options *o, uint64_t total)
{
    memset(sh, 0, sizeof(*sh));
    th_init(&sh->th);
    sh->th.h.ctx = sh; /* slow_hooks starts with thooks */
    sh->th.nosync = 1;
    sh->th.h.fdatasync = slow_fdatasync;
    memset(a, 0, sizeof(*a));
    a->sh = sh;
    a->next_index = 1;
    a->total = total;
    a->order_ok = a->durable_ok = 1;
    o->loop = loop;
    o->hooks = &sh->th.h;
    return uv_loop_init(loop);
}

TEST(async_group_commit)
{
    struct tdir t;
    uv_loop_t loop;
    struct slow_hooks sh;
    struct actx a;
    struct wal_read_result res;
    struct wal_options o = {.segment_size = 65536};
    tdir_make(&t);
    ASSERT_OK(async_init(&sh, &a, &loop, &o, 3000));
    ASSERT_OK(wal_create(&a.w, t.wal, &MD, &o));
    ASSERT_EQ(wal_append_sync(a.w, NULL, NULL, 0), 0);
    for (int i = 0; i < 64; i++)
        ASSERT_OK(asubmit(&a, i));
    while (a.done < a.total && uv_run(&loop, UV_RUN_ONCE))
        ;
    ASSERT_EQ(a.done, a.total);
    ASSERT_EQ(a.errors, 0);
    ASSERT_EQ(a.submit_errors, 0);
    ASSERT(a.order_ok);
    ASSERT(a.durable_ok);
    /* Group commit: far fewer fsyncs than appends. */
    ASSERT_LT(sh.synced, (long)a.total / 8);
    ASSERT_GT(count_files(t.wal, ".wal"), 3); /* cut off the loop thread */
    wal_close(a.w, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_OK(uv_loop_close(&loop));
    ASSERT_OK(reopen(t.wal, NULL, NULL, &res, NULL, NULL, 0));
    ASSERT_EQ(res.n_entries, a.total);
    for (size_t i = 0; i < res.n_entries; i++)
        ASSERT(res.entries[i].index == i + 1 &&
               check_data(&res.entries[i], 128));
    wal_read_result_free(&res);
    tdir_free(&t);
}

/* A lone append while the writer is idle is written and synced inside
 * wal_append (no thread hand-off), once per loop turn; its callback still
 * waits for the loop, and a second append of the same turn goes to the
 * writer. */
TEST(async_lone_append_inline)
{
    struct tdir t;
    uv_loop_t loop;
    struct slow_hooks sh;
    struct actx a;
    struct wal_options o = {.segment_size = 65536};
    tdir_make(&t);
    ASSERT_OK(async_init(&sh, &a, &loop, &o, 2)); /* acb resubmits nothing */
    ASSERT_OK(wal_create(&a.w, t.wal, &MD, &o));
    ASSERT_OK(asubmit(&a, 0));
    ASSERT_EQ(__atomic_load_n(&sh.synced, __ATOMIC_SEQ_CST), 1); /* inline */
    ASSERT_OK(asubmit(&a, 1)); /* same turn: queued for the writer */
    ASSERT_EQ(a.done, 0);      /* never called from inside wal_append */
    while (a.done < 2 && uv_run(&loop, UV_RUN_ONCE))
        ;
    ASSERT_EQ(a.done, 2);
    ASSERT_EQ(__atomic_load_n(&sh.synced, __ATOMIC_SEQ_CST), 2);
    ASSERT(a.order_ok);
    ASSERT(a.durable_ok);
    /* Callbacks delivered: the next lone append is inline again. */
    a.total = 3;
    ASSERT_OK(asubmit(&a, 2));
    ASSERT_EQ(__atomic_load_n(&sh.synced, __ATOMIC_SEQ_CST), 3);
    while (a.done < 3 && uv_run(&loop, UV_RUN_ONCE))
        ;
    ASSERT_EQ(a.done, 3);
    ASSERT_EQ(a.errors, 0);
    wal_close(a.w, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_OK(uv_loop_close(&loop));
    tdir_free(&t);
}

TEST(async_fsync_failure)
{
    struct tdir t;
    uv_loop_t loop;
    struct slow_hooks sh;
    struct actx a;
    struct wal_read_result res;
    struct wal_options o = {.segment_size = 1u << 20};
    uint64_t acked;
    tdir_make(&t);
    ASSERT_OK(async_init(&sh, &a, &loop, &o, 500));
    sh.th.fail_kind = HK_FDATASYNC; /* create itself uses only fsync */
    sh.th.fail_at = 5;
    ASSERT_OK(wal_create(&a.w, t.wal, &MD, &o));
    for (int i = 0; i < 16; i++)
        ASSERT_OK(asubmit(&a, i));
    while (a.done < a.next_index - 1 && uv_run(&loop, UV_RUN_ONCE))
        ;
    ASSERT_EQ(a.done, a.next_index - 1); /* every callback, once */
    ASSERT_GT(a.errors, 0);
    ASSERT_EQ(a.first_err, -EIO);
    ASSERT(a.order_ok);
    ASSERT(a.durable_ok);
    acked = a.done - (uint64_t)a.errors;
    /* Refused synchronously from now on; cb never called. */
    ASSERT_EQ(asubmit(&a, 0), -EIO);
    wal_close(a.w, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_OK(uv_loop_close(&loop));
    ASSERT_OK(reopen(t.wal, NULL, NULL, &res, NULL, NULL, 0));
    ASSERT_GE(res.n_entries, acked);
    for (size_t i = 0; i < res.n_entries; i++)
        ASSERT(check_data(&res.entries[i], 128));
    wal_read_result_free(&res);
    tdir_free(&t);
}

static void close_cb_flag(void *arg)
{
    *(int *)arg = 1;
}

TEST(async_close_cancels_queue)
{
    /* Close right after submitting, with segments small enough that the
     * writer is often cutting (and waiting for the preallocator) then. */
    int canceled = 0;
    for (int round = 0; round < 12; round++) {
        struct tdir t;
        uv_loop_t loop;
        struct slow_hooks sh;
        struct actx a;
        struct wal_read_result res;
        struct wal_options o = {.segment_size = round % 2 ? 4096 : 1u << 20};
        int closed = 0;
        tdir_make(&t);
        ASSERT_OK(async_init(&sh, &a, &loop, &o, 64)); /* no resubmission */
        ASSERT_OK(wal_create(&a.w, t.wal, &MD, &o));
        for (int i = 0; i < 64; i++)
            ASSERT_OK(asubmit(&a, i));
        if (round >= 6) {
            /* Let some batches complete first. */
            while (a.done < (uint64_t)round * 4 && uv_run(&loop, UV_RUN_ONCE))
                ;
        }
        wal_close(a.w, close_cb_flag, &closed);
        uv_run(&loop, UV_RUN_DEFAULT);
        ASSERT_EQ(closed, 1);
        ASSERT_EQ(a.done, 64); /* every callback exactly once */
        ASSERT_EQ(a.errors, 0);
        ASSERT(a.order_ok);
        ASSERT_OK(uv_loop_close(&loop));
        ASSERT_OK(reopen(t.wal, NULL, NULL, &res, NULL, NULL, 0));
        ASSERT_GE(res.n_entries, 64 - (size_t)a.canceled);
        for (size_t i = 0; i < res.n_entries; i++)
            ASSERT(check_data(&res.entries[i], 128));
        wal_read_result_free(&res);
        ASSERT_EQ(count_files(t.wal, ".tmp"), 0);
        canceled += a.canceled;
        tdir_free(&t);
    }
    fprintf(stderr, "  %d of 768 appends canceled by close\n", canceled);
}

struct scount {
    int done;
    int status[8];
};

static void scb(struct wal_append_req *req, int status)
{
    struct scount *c = req->data;
    c->status[c->done++] = status;
}

TEST(async_snapshot_marker_and_purge)
{
    struct tdir t;
    uv_loop_t loop;
    struct wal *w;
    struct wal_read_result res;
    struct wal_options o = {.segment_size = 4096};
    struct wal_append_req reqs[4];
    struct scount c;
    struct wal_snapshot sn = {2, 150};
    struct wal_hard_state hs = {2, 1, 150};
    int files;
    tdir_make(&t);
    memset(&c, 0, sizeof(c));
    ASSERT_OK(uv_loop_init(&loop));
    o.loop = &loop;
    ASSERT_OK(wal_create(&w, t.wal, &MD, &o));
    /* The sync variant works alongside the writer thread. */
    ASSERT_OK(append_range(w, 1, 200, 2, &hs));
    for (int i = 0; i < 4; i++)
        reqs[i].data = &c;
    ASSERT_OK(wal_save_snapshot(w, &reqs[0], &sn, scb));
    ASSERT_OK(wal_append(w, &reqs[1], NULL, NULL, 0, scb)); /* barrier */
    ASSERT_EQ(wal_save_snapshot(w, &reqs[2], NULL, scb), -EINVAL);
    while (c.done < 2 && uv_run(&loop, UV_RUN_ONCE))
        ;
    ASSERT_EQ(c.done, 2);
    ASSERT_OK(c.status[0]);
    ASSERT_OK(c.status[1]);
    files = count_files(t.wal, ".wal");
    ASSERT_GT(wal_purge(w, sn.index, 2), 0);
    ASSERT_LT(count_files(t.wal, ".wal"), files);
    wal_close(w, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_OK(uv_loop_close(&loop));
    ASSERT_EQ(c.done, 2);
    ASSERT_OK(reopen(t.wal, NULL, &sn, &res, NULL, NULL, 0));
    ASSERT_EQ(res.last_snapshot.index, 150);
    ASSERT_EQ(res.last_snapshot.term, 2);
    ASSERT_EQ(res.hard_state.commit, 150);
    ASSERT_EQ(res.n_entries, 50);
    ASSERT(res_has_range(&res, 0, 151, 200, 2));
    wal_read_result_free(&res);
    tdir_free(&t);
}

/* ---- real crashes ---------------------------------------------------------*/

struct cctx {
    struct wal *w;
    struct wal_append_req reqs[8];
    uint64_t idx[8]; /* entry index in flight in reqs[k] */
    uint64_t next;
    int fd;
};

static size_t crash_len(uint64_t index)
{
    uint64_t s = index + 17;
    return (size_t)(rng_next(&s) % 700);
}

static void ccb(struct wal_append_req *req, int status);

static void csubmit(struct cctx *c, struct wal_append_req *req)
{
    uint64_t i = c->next++;
    size_t len = crash_len(i);
    unsigned char buf[700];
    struct wal_entry e = {1, i, 0, buf, len};
    struct wal_hard_state hs = {1, 0, i};
    fill_data(buf, len, i, 1);
    req->data = c;
    c->idx[req - c->reqs] = i;
    if (wal_append(c->w, req, i % 5 == 0 ? &hs : NULL, &e, 1, ccb))
        _exit(3);
}

static void ccb(struct wal_append_req *req, int status)
{
    struct cctx *c = req->data;
    uint64_t idx = 0;
    if (status)
        _exit(4);
    /* Acknowledged: the entry is durable. Only now tell the parent. */
    idx = c->idx[req - c->reqs];
    if (write(c->fd, &idx, sizeof(idx)) != sizeof(idx))
        _exit(5);
    csubmit(c, req);
}

static void crash_child(const char *dir, int fd, int short_writes)
{
    uv_loop_t loop;
    struct cctx c;
    struct thooks th;
    struct wal_options o = {.segment_size = 8192};
    struct wal_read_result res;
    int rv;
    memset(&c, 0, sizeof(c));
    c.fd = fd;
    uv_loop_init(&loop);
    o.loop = &loop;
    /* Short writes split each batch over many syscalls, so a kill can land
     * between them and leave a torn tail, as a power cut would. */
    th_init(&th);
    th.max_write = 61;
    th.nosync = 1; /* a killed process loses no page cache anyway */
    if (short_writes)
        o.hooks = &th.h;
    if (!wal_exists(dir)) {
        rv = wal_create(&c.w, dir, &MD, &o);
        c.next = 1;
    } else {
        rv = wal_open(&c.w, dir, &o);
        if (!rv)
            rv = wal_read_all(c.w, NULL, &res);
        if (!rv) {
            c.next = res.n_entries + 1;
            wal_read_result_free(&res);
            rv = wal_start_append(c.w);
        }
    }
    if (rv)
        _exit(2);
    for (int i = 0; i < 8; i++)
        csubmit(&c, &c.reqs[i]);
    uv_run(&loop, UV_RUN_DEFAULT);
    _exit(6);
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

TEST(sigkill_crash_rounds)
{
    struct tdir t;
    uint64_t s = 12345, max_acked = 0;
    int rounds =
        getenv("WAL_CRASH_ROUNDS") ? atoi(getenv("WAL_CRASH_ROUNDS")) : 200;
    int64_t t0 = now_us();
    struct tlog lg;
    struct wal_options vo = {.log = tlog_cb, .log_data = &lg};
    tlog_init(&lg);
    tdir_make(&t);
    for (int round = 0; round < rounds; round++) {
        int p[2], st;
        pid_t pid;
        uint64_t target = 1 + rng_next(&s) % 60, got = 0, idx;
        int64_t kill_at = now_us() + (int64_t)(rng_next(&s) % 20000);
        int by_time = rng_next(&s) % 3 == 0;
        struct wal_read_result res;
        char err[900];
        int rv;
        ASSERT_OK(pipe(p));
        pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            close(p[0]);
            crash_child(t.wal, p[1], round % 2);
        }
        close(p[1]);
        for (;;) {
            struct pollfd pf = {p[0], POLLIN, 0};
            int64_t left = by_time ? kill_at - now_us() : 5000000;
            if (by_time && left <= 0)
                break;
            if (!by_time && got >= target)
                break;
            if (poll(&pf, 1, (int)(left / 1000) + 1) <= 0) {
                if (by_time)
                    continue;
                break; /* child stuck or died: checked below */
            }
            if (read(p[0], &idx, sizeof(idx)) != sizeof(idx))
                break;
            if (idx > max_acked)
                max_acked = idx;
            got++;
        }
        kill(pid, SIGKILL);
        ASSERT_EQ(waitpid(pid, &st, 0), pid);
        /* Anything reported before death counts as acknowledged. */
        while (read(p[0], &idx, sizeof(idx)) == sizeof(idx))
            if (idx > max_acked)
                max_acked = idx;
        close(p[0]);
        if (!WIFSIGNALED(st)) {
            fprintf(stderr, "round %d: child exited %d\n", round,
                    WEXITSTATUS(st));
            ASSERT(0);
        }
        if (!wal_exists(t.wal)) {
            ASSERT_EQ(max_acked, 0);
            continue;
        }
        rv = reopen(t.wal, &vo, NULL, &res, NULL, err, sizeof(err));
        if (rv)
            fprintf(stderr, "round %d: %s\n", round, err);
        ASSERT_OK(rv);
        ASSERT_GE(res.n_entries, max_acked);
        for (size_t i = 0; i < res.n_entries; i++) {
            ASSERT_EQ(res.entries[i].index, i + 1);
            ASSERT(check_data(&res.entries[i], crash_len(i + 1)));
        }
        wal_read_result_free(&res);
    }
    fprintf(stderr,
            "  %d rounds, %" PRIu64 " entries acknowledged, %d torn tails "
            "repaired, %" PRId64 " ms\n",
            rounds, max_acked, lg.n[WAL_LOG_WARN], (now_us() - t0) / 1000);
    ASSERT_EQ(lg.n[WAL_LOG_ERROR], 0);
    ASSERT_GT(max_acked, 100);
    tdir_free(&t);
}

TEST_MAIN(TEST_ENTRY(crc32c_paths), TEST_ENTRY(create_empty_reopen),
          TEST_ENTRY(round_trip_reopen_cut), TEST_ENTRY(big_entries),
          TEST_ENTRY(rewrite_by_later_term), TEST_ENTRY(snapshot_and_purge),
          TEST_ENTRY(lock_keeps_second_handle_out),
          TEST_ENTRY(torn_tail_every_offset), TEST_ENTRY(flipped_byte_refused),
          TEST_ENTRY(short_writes_round_trip),
          TEST_ENTRY(every_storage_call_fails_once),
          TEST_ENTRY(failed_fsync_is_sticky),
          TEST_ENTRY(commit_only_hard_state_skips_fsync),
          TEST_ENTRY(missing_segment_and_index_gap_refused),
          TEST_ENTRY(async_group_commit), TEST_ENTRY(async_lone_append_inline),
          TEST_ENTRY(async_fsync_failure),
          TEST_ENTRY(async_close_cancels_queue),
          TEST_ENTRY(async_snapshot_marker_and_purge),
          TEST_ENTRY(sigkill_crash_rounds))
