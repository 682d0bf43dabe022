/* Unit tests of snap/: round trips of several sizes, purge, torn temp
 * files, corruption falling back to the previous snapshot (renamed
 * .broken), raw file transfer, and the error paths of the public API. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snap.h"
#include "test.h"
#include "wal.h"

struct logcap {
    int warns;
    int errors;
    char last[512];
};

static void log_cb(void *data, enum snap_log_level level, const char *msg)
{
    struct logcap *c = data;
    if (level == SNAP_LOG_WARN)
        c->warns++;
    if (level == SNAP_LOG_ERROR)
        c->errors++;
    snprintf(c->last, sizeof(c->last), "%s", msg);
}

/* A fresh directory per test, with options pointing at it. */
struct fixture {
    char dir[64];
    struct snap_options opts;
    struct logcap log;
};

static int fixture_init(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_snap.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -errno;
    snap_options_init(&f->opts);
    f->opts.dir = f->dir;
    f->opts.log = log_cb;
    f->opts.log_data = &f->log;
    return 0;
}

/* Remove a directory of plain files. */
static void rm_flat(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
    rmdir(dir);
}

static void fixture_close(struct fixture *f)
{
    rm_flat(f->dir);
}

static int count_files(const char *dir, const char *substr)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.' && strstr(de->d_name, substr) != NULL)
            n++;
    closedir(d);
    return n;
}

static void snap_name(char *buf, size_t cap, const char *dir, uint64_t term,
                      uint64_t index, const char *suffix)
{
    snprintf(buf, cap, "%s/%016" PRIx64 "-%016" PRIx64 ".snap%s", dir, term,
             index, suffix);
}

/* Deterministic test image: runs of text (compressible) mixed with
 * xorshift noise (incompressible, exercising the stored-raw frames). */
static void fill_image(unsigned char *p, size_t n, uint64_t seed)
{
    uint64_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        if ((i / 50000) % 3 == 2) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p[i] = (unsigned char)x;
        } else {
            p[i] = (unsigned char)("/bench/k0000001 value "[i % 22]);
        }
    }
}

/* Write an image in uneven pieces (to cross chunk boundaries oddly). */
static int save(struct fixture *f, uint64_t term, uint64_t index,
                const void *img, size_t n, const char *meta)
{
    struct snap_writer *w;
    const unsigned char *p = img;
    size_t off = 0, step = 1;
    int rv = snap_writer_new(&f->opts, term, index, meta,
                             meta ? strlen(meta) : 0, &w);
    if (rv != 0)
        return rv;
    while (off < n) {
        size_t k = step < n - off ? step : n - off;
        rv = snap_write_cb(w, p + off, k);
        if (rv != 0) {
            snap_writer_abort(w);
            return rv;
        }
        off += k;
        step = step * 3 + 7;
        if (step > 300000)
            step = 5;
    }
    return snap_writer_commit(w);
}

/* Read the whole image of r into a fresh buffer, in uneven pieces. */
static int load_all(struct snap_reader *r, unsigned char **out, size_t *len)
{
    size_t cap = (size_t)snap_reader_image_size(r) + 1, got = 0, step = 3;
    unsigned char *buf = malloc(cap);
    int rv = 0;
    if (buf == NULL)
        return -ENOMEM;
    for (;;) {
        size_t n, want = step < cap - got ? step : cap - got;
        rv = snap_reader_read(r, buf + got, want, &n);
        if (rv != 0 || n == 0)
            break;
        got += n;
        step = step * 5 + 1;
        if (step > 500000)
            step = 2;
        if (got == cap)
            break; /* more than image_size: the caller's check fails */
    }
    *out = buf;
    *len = got;
    return rv;
}

static int flip_byte(const char *path, off_t off)
{
    unsigned char c;
    int fd = open(path, O_RDWR);
    int rv = -1;
    if (fd < 0)
        return -errno;
    if (pread(fd, &c, 1, off) == 1) {
        c ^= 0x40;
        rv = pwrite(fd, &c, 1, off) == 1 ? 0 : -EIO;
    }
    close(fd);
    return rv;
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

TEST(roundtrip_empty)
{
    struct fixture f;
    struct snap_reader *r;
    unsigned char buf[16];
    size_t n, mlen;
    const void *meta;
    ASSERT_OK(fixture_init(&f));
    /* etcd's --max-snapshots default, and the documented chunk size. */
    ASSERT_EQ(f.opts.max_snapshots, 5);
    ASSERT_EQ(f.opts.chunk_size, 1u << 20);
    ASSERT(f.opts.hooks == NULL && f.opts.log != NULL);
    ASSERT_OK(save(&f, 1, 1, NULL, 0, NULL));
    ASSERT_OK(snap_reader_open(&f.opts, &r));
    ASSERT_EQ(snap_reader_term(r), 1);
    ASSERT_EQ(snap_reader_index(r), 1);
    ASSERT_EQ(snap_reader_image_size(r), 0);
    meta = snap_reader_meta(r, &mlen);
    ASSERT_EQ(mlen, 0);
    (void)meta;
    ASSERT_OK(snap_reader_read(r, buf, sizeof(buf), &n));
    ASSERT_EQ(n, 0);
    ASSERT_EQ(snap_read_cb(r, buf, 1), -ENODATA);
    ASSERT_OK(snap_read_cb(r, buf, 0));
    snap_reader_free(r);
    ASSERT_EQ(count_files(f.dir, ".tmp."), 0);
    fixture_close(&f);
}

TEST(roundtrip_small)
{
    struct fixture f;
    struct snap_reader *r;
    char buf[32];
    size_t mlen;
    const char *meta;
    ASSERT_OK(fixture_init(&f));
    ASSERT_OK(save(&f, 3, 0x1234567890ull, "hello, snapshot", 15,
                   "conf:1,2,3"));
    ASSERT_OK(snap_reader_open(&f.opts, &r));
    ASSERT_EQ(snap_reader_term(r), 3);
    ASSERT_EQ(snap_reader_index(r), 0x1234567890ull);
    ASSERT_EQ(snap_reader_image_size(r), 15);
    meta = snap_reader_meta(r, &mlen);
    ASSERT_EQ(mlen, 10);
    ASSERT_MEM_EQ(meta, "conf:1,2,3", 10);
    ASSERT(strstr(snap_reader_path(r),
                  "0000000000000003-0000001234567890.snap") != NULL);
    ASSERT_EQ(snap_reader_file_size(r), file_size(snap_reader_path(r)));
    ASSERT_OK(snap_read_cb(r, buf, 15));
    ASSERT_MEM_EQ(buf, "hello, snapshot", 15);
    ASSERT_EQ(snap_read_cb(r, buf, 1), -ENODATA);
    snap_reader_free(r);
    fixture_close(&f);
}

/* Several MB through small chunks and the default chunk, mixing
 * compressible and incompressible data. */
TEST(roundtrip_many_mb)
{
    const size_t n = 6u << 20;
    const uint32_t chunks[] = {4096, SNAP_CHUNK_SIZE_DEFAULT};
    unsigned char *img = malloc(n), *back = NULL;
    struct fixture f;
    ASSERT(img != NULL);
    fill_image(img, n, 42);
    ASSERT_OK(fixture_init(&f));
    for (size_t c = 0; c < 2; c++) {
        struct snap_reader *r;
        size_t len;
        f.opts.chunk_size = chunks[c];
        ASSERT_OK(save(&f, 2, 100 + c, img, n, "m"));
        ASSERT_OK(snap_reader_open(&f.opts, &r));
        ASSERT_EQ(snap_reader_index(r), 100 + c);
        ASSERT_EQ(snap_reader_image_size(r), n);
        /* Compressed, yet the noise thirds stay stored raw. */
        ASSERT_LT(snap_reader_file_size(r), n * 2 / 3);
        ASSERT_GT(snap_reader_file_size(r), n / 4);
        ASSERT_OK(load_all(r, &back, &len));
        snap_reader_free(r);
        ASSERT_EQ(len, n);
        ASSERT_MEM_EQ(back, img, n);
        free(back);
        back = NULL;
    }
    free(img);
    fixture_close(&f);
}

TEST(purge_keeps_max_snapshots)
{
    struct fixture f;
    struct snap_id *ids;
    size_t n;
    ASSERT_OK(fixture_init(&f));
    f.opts.max_snapshots = 3;
    for (uint64_t i = 1; i <= 7; i++)
        ASSERT_OK(save(&f, 1 + i / 4, i * 10, "x", 1, NULL));
    ASSERT_OK(snap_list(&f.opts, &ids, &n));
    ASSERT_EQ(n, 3);
    ASSERT_EQ(ids[0].index, 50);
    ASSERT_EQ(ids[1].index, 60);
    ASSERT_EQ(ids[2].index, 70);
    ASSERT_EQ(ids[2].term, 2);
    free(ids);
    /* 0 keeps everything, as etcd's --max-snapshots 0. */
    f.opts.max_snapshots = 0;
    for (uint64_t i = 8; i <= 9; i++)
        ASSERT_OK(save(&f, 3, i * 10, "x", 1, NULL));
    ASSERT_OK(snap_purge(&f.opts));
    ASSERT_OK(snap_list(&f.opts, &ids, &n));
    ASSERT_EQ(n, 5);
    free(ids);
    /* Broken files are never purged. */
    ASSERT_OK(save(&f, 3, 100, "x", 1, NULL));
    f.opts.max_snapshots = 1;
    {
        char p[128], b[128];
        snap_name(p, sizeof(p), f.dir, 3, 90, "");
        snap_name(b, sizeof(b), f.dir, 3, 90, ".broken");
        ASSERT_OK(rename(p, b));
    }
    ASSERT_OK(snap_purge(&f.opts));
    ASSERT_OK(snap_list(&f.opts, &ids, &n));
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ids[0].index, 100);
    free(ids);
    ASSERT_EQ(count_files(f.dir, ".broken"), 1);
    fixture_close(&f);
}

/* A crash mid-write leaves a temp file (and possibly a torn final-named
 * file from a foreign tool): load must use the last good snapshot. */
TEST(torn_temp_file_ignored)
{
    struct fixture f;
    struct snap_reader *r;
    struct snap_writer *w;
    char path[128], tmp[160], buf[8];
    unsigned char img[5000];
    int fd;
    ASSERT_OK(fixture_init(&f));
    ASSERT_OK(save(&f, 1, 10, "good", 4, NULL));
    /* An unfinished writer: its temp file exists with a zero header. */
    fill_image(img, sizeof(img), 7);
    ASSERT_OK(snap_writer_new(&f.opts, 1, 20, NULL, 0, &w));
    ASSERT_OK(snap_writer_write(w, img, sizeof(img)));
    ASSERT_EQ(count_files(f.dir, ".snap.tmp."), 1);
    ASSERT_OK(snap_reader_open(&f.opts, &r));
    ASSERT_EQ(snap_reader_index(r), 10);
    snap_reader_free(r);
    snap_writer_abort(w);
    ASSERT_EQ(count_files(f.dir, ".snap.tmp."), 0);
    /* A torn temp file as a crash leaves it, then startup cleanup. */
    snap_name(path, sizeof(path), f.dir, 1, 30, "");
    snprintf(tmp, sizeof(tmp), "%s.tmp.abc123", path);
    fd = open(tmp, O_CREAT | O_WRONLY, 0600);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, "ETCFSNP1\1\0", 10), 10);
    close(fd);
    ASSERT_OK(snap_reader_open(&f.opts, &r));
    ASSERT_EQ(snap_reader_index(r), 10);
    ASSERT_OK(snap_read_cb(r, buf, 4));
    ASSERT_MEM_EQ(buf, "good", 4);
    snap_reader_free(r);
    ASSERT_OK(snap_dir_init(&f.opts));
    ASSERT_EQ(count_files(f.dir, ".tmp."), 0);
    ASSERT_EQ(count_files(f.dir, ".snap"), 1);
    /* A truncated file under a final name is broken, not trusted. */
    ASSERT_OK(save(&f, 1, 40, img, sizeof(img), NULL));
    snap_name(path, sizeof(path), f.dir, 1, 40, "");
    ASSERT_OK(truncate(path, file_size(path) - 5));
    ASSERT_OK(snap_reader_open(&f.opts, &r));
    ASSERT_EQ(snap_reader_index(r), 10);
    snap_reader_free(r);
    ASSERT_EQ(count_files(f.dir, ".broken"), 1);
    fixture_close(&f);
}

/* A byte flipped anywhere in the newest snapshot (header, meta, a frame
 * header, compressed data, the end frame) makes load fall back to the
 * previous one, renaming the bad file .broken with a warning. */
TEST(flipped_byte_falls_back)
{
    const size_t n = 300000;
    unsigned char *img = malloc(n);
    struct fixture f;
    off_t size, offs[8];
    char path[128], broken[128];
    ASSERT(img != NULL);
    fill_image(img, n, 9);
    ASSERT_OK(fixture_init(&f));
    f.opts.chunk_size = 65536;
    ASSERT_OK(save(&f, 1, 5, "old", 3, "meta-old"));
    snap_name(path, sizeof(path), f.dir, 2, 9, "");
    snap_name(broken, sizeof(broken), f.dir, 2, 9, ".broken");
    ASSERT_OK(save(&f, 2, 9, img, n, "meta-new"));
    size = file_size(path);
    ASSERT_GT(size, 1000);
    offs[0] = 3;          /* magic */
    offs[1] = 20;         /* term */
    offs[2] = 66;         /* meta */
    offs[3] = 72;         /* first frame header */
    offs[4] = 90;         /* first frame data */
    offs[5] = size / 2;   /* somewhere in the middle */
    offs[6] = size - 13;  /* last data byte */
    offs[7] = size - 2;   /* end frame crc */
    for (int i = 0; i < 8; i++) {
        struct snap_reader *r;
        char buf[3];
        int warns = f.log.warns;
        if (i > 0) {
            ASSERT_OK(rename(broken, path)); /* undo the previous flip */
            ASSERT_OK(flip_byte(path, offs[i - 1]));
        }
        ASSERT_OK(flip_byte(path, offs[i]));
        ASSERT_OK(snap_reader_open(&f.opts, &r));
        ASSERT_EQ(snap_reader_index(r), 5);
        ASSERT_OK(snap_read_cb(r, buf, 3));
        ASSERT_MEM_EQ(buf, "old", 3);
        snap_reader_free(r);
        ASSERT_EQ(f.log.warns, warns + 1);
        ASSERT(strstr(f.log.last, ".broken") != NULL);
        ASSERT_EQ(file_size(path), -1);
        ASSERT_EQ(file_size(broken), size);
    }
    /* The .broken file is ignored from now on: one good snapshot left. */
    {
        struct snap_id *ids;
        size_t k;
        ASSERT_OK(snap_list(&f.opts, &ids, &k));
        ASSERT_EQ(k, 1);
        free(ids);
    }
    free(img);
    fixture_close(&f);
}

TEST(all_broken_is_enoent)
{
    struct fixture f;
    struct snap_reader *r;
    char path[128];
    ASSERT_OK(fixture_init(&f));
    ASSERT_EQ(snap_reader_open(&f.opts, &r), -ENOENT);
    ASSERT_OK(save(&f, 1, 1, "a", 1, NULL));
    snap_name(path, sizeof(path), f.dir, 1, 1, "");
    ASSERT_OK(flip_byte(path, 40));
    ASSERT_EQ(snap_reader_open(&f.opts, &r), -ENOENT);
    ASSERT_EQ(count_files(f.dir, ".broken"), 1);
    fixture_close(&f);
    /* A missing directory is no snapshot, not an error. */
    ASSERT_EQ(snap_reader_open(&f.opts, &r), -ENOENT);
}

TEST(open_at_is_exact_and_non_destructive)
{
    struct fixture f;
    struct snap_reader *r;
    char path[128];
    ASSERT_OK(fixture_init(&f));
    ASSERT_OK(save(&f, 1, 1, "a", 1, NULL));
    ASSERT_OK(save(&f, 1, 2, "b", 1, NULL));
    ASSERT_OK(snap_reader_open_at(&f.opts, 1, 1, &r));
    ASSERT_EQ(snap_reader_index(r), 1);
    snap_reader_free(r);
    ASSERT_EQ(snap_reader_open_at(&f.opts, 1, 3, &r), -ENOENT);
    snap_name(path, sizeof(path), f.dir, 1, 2, "");
    ASSERT_OK(flip_byte(path, file_size(path) - 1));
    ASSERT_EQ(snap_reader_open_at(&f.opts, 1, 2, &r), -EBADMSG);
    ASSERT(strstr(f.log.last, "offset") != NULL);
    ASSERT(strstr(f.log.last, "0000000000000002.snap") != NULL);
    ASSERT_EQ(count_files(f.dir, ".broken"), 0);
    fixture_close(&f);
}

/* A newer format version with a valid crc is refused, not renamed. */
TEST(newer_version_refused)
{
    struct fixture f;
    struct snap_reader *r;
    unsigned char hdr[64];
    char path[128];
    uint32_t crc;
    int fd;
    ASSERT_OK(fixture_init(&f));
    ASSERT_OK(save(&f, 1, 1, "a", 1, NULL));
    snap_name(path, sizeof(path), f.dir, 1, 1, "");
    fd = open(path, O_RDWR);
    ASSERT(fd >= 0);
    ASSERT_EQ(pread(fd, hdr, 64, 0), 64);
    hdr[8] = 2;
    crc = wal_crc32c(0, hdr, 60);
    for (int i = 0; i < 4; i++)
        hdr[60 + i] = (unsigned char)(crc >> (8 * i));
    ASSERT_EQ(pwrite(fd, hdr, 64, 0), 64);
    close(fd);
    ASSERT_EQ(snap_reader_open(&f.opts, &r), -EPROTONOSUPPORT);
    ASSERT_EQ(count_files(f.dir, ".broken"), 0);
    fixture_close(&f);
}

/* Leader to follower: the file bytes, piecewise, into a file writer. */
TEST(file_transfer)
{
    const size_t n = 1u << 20;
    unsigned char *img = malloc(n), *back, buf[7000];
    struct fixture a, b;
    struct snap_reader *r, *r2;
    struct snap_writer *w;
    size_t k, len;
    ASSERT(img != NULL);
    fill_image(img, n, 3);
    ASSERT_OK(fixture_init(&a));
    ASSERT_OK(fixture_init(&b));
    a.opts.chunk_size = 100000;
    ASSERT_OK(save(&a, 4, 77, img, n, "conf"));
    ASSERT_OK(snap_reader_open(&a.opts, &r));
    ASSERT_OK(snap_writer_new_file(&b.opts, 4, 77, &w));
    ASSERT_EQ(snap_writer_write(w, "x", 1), -EINVAL);
    for (;;) {
        ASSERT_OK(snap_reader_read_file(r, buf, sizeof(buf), &k));
        if (k == 0)
            break;
        ASSERT_OK(snap_writer_write_file(w, buf, k));
    }
    ASSERT_OK(snap_writer_commit(w));
    snap_reader_free(r);
    ASSERT_OK(snap_reader_open(&b.opts, &r2));
    ASSERT_EQ(snap_reader_term(r2), 4);
    ASSERT_EQ(snap_reader_index(r2), 77);
    ASSERT_OK(load_all(r2, &back, &len));
    ASSERT_EQ(len, n);
    ASSERT_MEM_EQ(back, img, n);
    free(back);
    snap_reader_free(r2);

    /* Announced (term, index) must match the bytes. */
    ASSERT_OK(snap_reader_open(&a.opts, &r));
    ASSERT_OK(snap_writer_new_file(&b.opts, 4, 78, &w));
    while (snap_reader_read_file(r, buf, sizeof(buf), &k) == 0 && k > 0)
        ASSERT_OK(snap_writer_write_file(w, buf, k));
    ASSERT_EQ(snap_writer_commit(w), -EINVAL);
    snap_reader_free(r);
    /* A corrupted transfer is refused and leaves nothing behind. */
    ASSERT_OK(snap_reader_open(&a.opts, &r));
    ASSERT_OK(snap_writer_new_file(&b.opts, 4, 79, &w));
    while (snap_reader_read_file(r, buf, sizeof(buf), &k) == 0 && k > 0) {
        buf[k / 2] ^= 1;
        ASSERT_OK(snap_writer_write_file(w, buf, k));
    }
    ASSERT_EQ(snap_writer_commit(w), -EBADMSG);
    snap_reader_free(r);
    ASSERT_EQ(count_files(b.dir, ".snap"), 1);
    ASSERT_EQ(count_files(b.dir, ".tmp."), 0);
    free(img);
    fixture_close(&a);
    fixture_close(&b);
}

/* The file changes under an open reader: the read pass notices. */
TEST(changed_after_open)
{
    const size_t n = 200000;
    unsigned char *img = malloc(n), *back;
    struct fixture f;
    struct snap_reader *r;
    char path[128];
    size_t len;
    ASSERT(img != NULL);
    fill_image(img, n, 5);
    ASSERT_OK(fixture_init(&f));
    f.opts.chunk_size = 8192;
    ASSERT_OK(save(&f, 1, 1, img, n, NULL));
    ASSERT_OK(snap_reader_open(&f.opts, &r));
    snap_name(path, sizeof(path), f.dir, 1, 1, "");
    ASSERT_OK(flip_byte(path, file_size(path) - 100));
    ASSERT_EQ(load_all(r, &back, &len), -EBADMSG);
    ASSERT_LT(len, n);
    free(back);
    snap_reader_free(r);
    free(img);
    fixture_close(&f);
}

TEST(bad_arguments)
{
    struct fixture f;
    struct snap_writer *w;
    char *big = calloc(1, SNAP_META_MAX + 1);
    ASSERT(big != NULL);
    ASSERT_OK(fixture_init(&f));
    ASSERT_EQ(snap_writer_new(&f.opts, 1, 1, big, SNAP_META_MAX + 1, &w),
              -EINVAL);
    ASSERT_OK(snap_writer_new(&f.opts, 1, 1, big, SNAP_META_MAX, &w));
    snap_writer_abort(w);
    f.opts.chunk_size = 100;
    ASSERT_EQ(snap_writer_new(&f.opts, 1, 1, NULL, 0, &w), -EINVAL);
    f.opts.chunk_size = SNAP_CHUNK_SIZE_MAX + 1;
    ASSERT_EQ(snap_writer_new(&f.opts, 1, 1, NULL, 0, &w), -EINVAL);
    f.opts.chunk_size = SNAP_CHUNK_SIZE_DEFAULT;
    ASSERT_OK(snap_writer_new_file(&f.opts, 1, 1, &w));
    ASSERT_EQ(snap_write_cb(w, "x", 1), -EINVAL);
    snap_writer_abort(w);
    ASSERT_EQ(count_files(f.dir, ""), 0);
    fixture_close(&f);
    /* A missing directory: the error is returned and logged with the path. */
    ASSERT_EQ(snap_writer_new(&f.opts, 1, 1, NULL, 0, &w), -ENOENT);
    ASSERT(strstr(f.log.last, f.dir) != NULL);
    /* snap_dir_init creates it (and its parents). */
    {
        char sub[96], member[80];
        snprintf(member, sizeof(member), "%s/member", f.dir);
        snprintf(sub, sizeof(sub), "%s/snap", member);
        f.opts.dir = sub;
        ASSERT_OK(snap_dir_init(&f.opts));
        ASSERT_OK(snap_writer_new(&f.opts, 1, 1, NULL, 0, &w));
        ASSERT_OK(snap_writer_commit(w));
        ASSERT_EQ(count_files(sub, ".snap"), 1);
        rm_flat(sub);
        rmdir(member);
        rmdir(f.dir);
    }
    free(big);
}

/* ---- fault injection through snap_hooks -------------------------------- */

enum fault_op { F_NONE, F_PREAD, F_PWRITE, F_FSYNC, F_RENAME, F_UNLINK };

struct fault {
    enum fault_op op; /* which call fails */
    int countdown;    /* fail the call when this reaches 0 (1 = first) */
    int err;          /* negative errno to return */
    int short_writes; /* write at most half of each pwrite */
    int fired;
};

static int fault_hit(struct fault *f, enum fault_op op)
{
    if (f->op != op || f->countdown <= 0)
        return 0;
    if (--f->countdown > 0)
        return 0;
    f->fired++;
    return 1;
}

static ssize_t h_pread(void *ctx, int fd, void *buf, size_t n, off_t off)
{
    ssize_t rv;
    if (fault_hit(ctx, F_PREAD))
        return ((struct fault *)ctx)->err;
    rv = pread(fd, buf, n, off);
    return rv < 0 ? -errno : rv;
}

static ssize_t h_pwrite(void *ctx, int fd, const void *buf, size_t n,
                        off_t off)
{
    struct fault *f = ctx;
    ssize_t rv;
    if (fault_hit(f, F_PWRITE))
        return f->err;
    if (f->short_writes && n > 1)
        n /= 2;
    rv = pwrite(fd, buf, n, off);
    return rv < 0 ? -errno : rv;
}

static int h_fsync(void *ctx, int fd)
{
    if (fault_hit(ctx, F_FSYNC))
        return ((struct fault *)ctx)->err;
    return fsync(fd) != 0 ? -errno : 0;
}

static int h_rename(void *ctx, const char *a, const char *b)
{
    if (fault_hit(ctx, F_RENAME))
        return ((struct fault *)ctx)->err;
    return rename(a, b) != 0 ? -errno : 0;
}

static int h_unlink(void *ctx, const char *p)
{
    if (fault_hit(ctx, F_UNLINK))
        return ((struct fault *)ctx)->err;
    return unlink(p) != 0 ? -errno : 0;
}

static void fixture_hook(struct fixture *f, struct snap_hooks *h,
                         struct fault *fl)
{
    memset(h, 0, sizeof(*h));
    memset(fl, 0, sizeof(*fl));
    h->ctx = fl;
    h->pread = h_pread;
    h->pwrite = h_pwrite;
    h->fsync = h_fsync;
    h->rename = h_rename;
    h->unlink = h_unlink;
    f->opts.hooks = h;
}

/* Short writes are retried: the file comes out whole. */
TEST(short_writes_retried)
{
    const size_t n = 100000;
    unsigned char *img = malloc(n), *back;
    struct fixture f;
    struct snap_hooks h;
    struct fault fl;
    struct snap_reader *r;
    size_t len;
    ASSERT(img != NULL);
    fill_image(img, n, 11);
    ASSERT_OK(fixture_init(&f));
    fixture_hook(&f, &h, &fl);
    fl.short_writes = 1;
    f.opts.chunk_size = 8192;
    ASSERT_OK(save(&f, 1, 1, img, n, "m"));
    ASSERT_OK(snap_reader_open(&f.opts, &r));
    ASSERT_OK(load_all(r, &back, &len));
    ASSERT_EQ(len, n);
    ASSERT_MEM_EQ(back, img, n);
    free(back);
    snap_reader_free(r);
    free(img);
    fixture_close(&f);
}

/* Fail the Nth pwrite, fsync or rename of a save, for every N until the
 * save succeeds: each failure is returned, and leaves neither a temp file
 * nor a .snap; the earlier snapshot stays the one loaded. */
TEST(every_write_failure_leaves_nothing)
{
    const size_t n = 60000;
    const enum fault_op ops[] = {F_PWRITE, F_FSYNC, F_RENAME};
    unsigned char *img = malloc(n);
    struct fixture f;
    struct snap_hooks h;
    struct fault fl;
    ASSERT(img != NULL);
    fill_image(img, n, 13);
    ASSERT_OK(fixture_init(&f));
    fixture_hook(&f, &h, &fl);
    f.opts.chunk_size = 8192;
    ASSERT_OK(save(&f, 1, 1, "base", 4, NULL));
    for (size_t k = 0; k < 3; k++) {
        int nth;
        for (nth = 1; nth < 100; nth++) {
            struct snap_reader *r;
            int rv;
            fl.op = ops[k];
            fl.countdown = nth;
            fl.err = -ENOSPC;
            fl.fired = 0;
            rv = save(&f, 2, 2, img, n, "meta");
            if (!fl.fired) {
                ASSERT_OK(rv);
                break;
            }
            ASSERT_EQ(rv, -ENOSPC);
            ASSERT_EQ(count_files(f.dir, ".tmp."), 0);
            if (ops[k] == F_FSYNC && nth == 2) {
                /* The directory fsync: the file was renamed already
                 * (dir_fsync_failure_reported); drop it and go on. */
                char p[128];
                snap_name(p, sizeof(p), f.dir, 2, 2, "");
                ASSERT_OK(unlink(p));
            }
            ASSERT_EQ(count_files(f.dir, ".snap"), 1);
            ASSERT_OK(snap_reader_open(&f.opts, &r));
            ASSERT_EQ(snap_reader_index(r), 1);
            snap_reader_free(r);
        }
        ASSERT_LT(nth, 100);
        /* pwrite: header, meta, 8 frames, end, final header. */
        if (ops[k] == F_PWRITE)
            ASSERT_GE(nth, 10);
        {
            char p[128];
            snap_name(p, sizeof(p), f.dir, 2, 2, "");
            ASSERT_OK(unlink(p));
        }
    }
    free(img);
    fixture_close(&f);
}

/* A failed directory fsync is reported: the rename may not be durable. */
TEST(dir_fsync_failure_reported)
{
    struct fixture f;
    struct snap_hooks h;
    struct fault fl;
    ASSERT_OK(fixture_init(&f));
    fixture_hook(&f, &h, &fl);
    fl.op = F_FSYNC;
    fl.countdown = 2; /* the file's fsync passes, the directory's fails */
    fl.err = -EIO;
    ASSERT_EQ(save(&f, 1, 1, "x", 1, NULL), -EIO);
    ASSERT_EQ(fl.fired, 1);
    ASSERT(strstr(f.log.last, "fsync dir") != NULL);
    ASSERT_EQ(count_files(f.dir, ".tmp."), 0);
    fixture_close(&f);
}

/* A read error while verifying is an I/O error, not corruption: the file
 * keeps its name and there is no fallback to an older snapshot. */
TEST(read_error_is_not_corruption)
{
    struct fixture f;
    struct snap_hooks h;
    struct fault fl;
    struct snap_reader *r;
    ASSERT_OK(fixture_init(&f));
    fixture_hook(&f, &h, &fl);
    ASSERT_OK(save(&f, 1, 1, "a", 1, NULL));
    ASSERT_OK(save(&f, 1, 2, "b", 1, NULL));
    for (int nth = 1; nth <= 3; nth++) {
        fl.op = F_PREAD;
        fl.countdown = nth;
        fl.err = -EIO;
        fl.fired = 0;
        ASSERT_EQ(snap_reader_open(&f.opts, &r), -EIO);
        ASSERT_EQ(fl.fired, 1);
        ASSERT_EQ(count_files(f.dir, ".broken"), 0);
    }
    /* Purge failures are logged, not fatal to a commit. */
    f.opts.max_snapshots = 1;
    fl.op = F_UNLINK;
    fl.countdown = 1;
    fl.err = -EACCES;
    fl.fired = 0;
    ASSERT_OK(save(&f, 1, 3, "c", 1, NULL));
    ASSERT_EQ(fl.fired, 1);
    ASSERT_EQ(count_files(f.dir, ".snap"), 2);
    ASSERT_OK(snap_purge(&f.opts));
    ASSERT_EQ(count_files(f.dir, ".snap"), 1);
    ASSERT_OK(snap_reader_open(&f.opts, &r));
    ASSERT_EQ(snap_reader_index(r), 3);
    snap_reader_free(r);
    fixture_close(&f);
}

TEST_MAIN(TEST_ENTRY(roundtrip_empty), TEST_ENTRY(roundtrip_small),
          TEST_ENTRY(roundtrip_many_mb), TEST_ENTRY(purge_keeps_max_snapshots),
          TEST_ENTRY(torn_temp_file_ignored),
          TEST_ENTRY(flipped_byte_falls_back),
          TEST_ENTRY(all_broken_is_enoent),
          TEST_ENTRY(open_at_is_exact_and_non_destructive),
          TEST_ENTRY(newer_version_refused), TEST_ENTRY(file_transfer),
          TEST_ENTRY(changed_after_open), TEST_ENTRY(bad_arguments),
          TEST_ENTRY(short_writes_retried),
          TEST_ENTRY(every_write_failure_leaves_nothing),
          TEST_ENTRY(dir_fsync_failure_reported),
          TEST_ENTRY(read_error_is_not_corruption))
