/* Snapshot files: a checksummed header, then the store image as a chain of
 * independently lz4-compressed, CRC-32C-checked frames, so an image of any
 * size is written and read with one chunk in memory, and a follower can be
 * sent the file piecewise.
 *
 * Byte layout of member/snap/%016x-%016x.snap (all integers little-endian):
 *
 *   header, 64 bytes
 *     0   8  magic "ETCFSNP1"
 *     8   4  version (1)
 *     12  4  header_len = 64 + meta_len: file offset of the first frame
 *     16  8  term
 *     24  8  index
 *     32  8  image_size: total uncompressed image bytes
 *     40  8  payload_size: bytes of all frames, end frame included;
 *            file size == header_len + payload_size exactly
 *     48  4  chunk_size: the most image bytes one frame may carry
 *     52  4  meta_len (<= SNAP_META_MAX)
 *     56  4  payload_crc: the crc field of the end frame (see below)
 *     60  4  header_crc: CRC-32C of bytes 0..59 followed by the meta bytes
 *   64  meta_len bytes: the caller's opaque metadata blob
 *   frames, back to back from header_len:
 *     0   4  image_len: image bytes in this frame, 1..chunk_size; 0 marks
 *            the end frame, which is last and carries no data
 *     4   4  stored_len: bytes of data that follow; bit 31 set means the
 *            data is stored uncompressed (then the low bits == image_len),
 *            else it is one LZ4 block that decompresses to image_len bytes
 *     8   4  crc: CRC-32C of bytes 0..7 of this frame and its data, seeded
 *            with the previous frame's crc (0 for the first frame)
 *     12  stored data
 *
 * Because the crcs chain, the end frame's crc covers every payload byte in
 * order; the header repeats it, so a dropped, duplicated or reordered frame
 * is caught even where each frame is self-consistent. The writer writes a
 * zero header first and the real one (pwrite at 0) just before fsync. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lz4.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snap_int.h"

#define SNAP_NAME_LEN 38 /* 16 hex, '-', 16 hex, ".snap" */

/* Where log messages go and how disk calls are made: copies of the
 * option fields. */
struct snap_env {
    snap_log_cb cb;
    void *data;
    const struct snap_hooks *hooks; /* NULL: real syscalls */
};

struct snap_hdr {
    uint32_t version;
    uint32_t header_len;
    uint64_t term;
    uint64_t index;
    uint64_t image_size;
    uint64_t payload_size;
    uint32_t chunk_size;
    uint32_t meta_len;
    uint32_t payload_crc;
    uint32_t header_crc;
};

struct snap_writer {
    struct snap_env log;
    char *dir;
    char *tmp_path;
    unsigned max_snapshots;
    uint32_t chunk_size;
    int fd;
    int file_mode; /* 1: receives a whole file (snap_writer_new_file) */
    int err;       /* first error; poisons the writer */
    uint64_t term;
    uint64_t index;
    uint64_t image_size;
    uint64_t offset; /* file bytes written so far */
    uint32_t crc;    /* chained frame crc */
    uint32_t meta_len;
    unsigned char *meta;
    unsigned char *in; /* chunk_size bytes of pending image */
    size_t in_len;
    unsigned char *out; /* frame header + compressBound(chunk_size) */
    size_t out_cap;
};

struct snap_reader {
    struct snap_env log;
    char *path;
    int fd;
    struct snap_hdr hdr;
    unsigned char *meta;
    unsigned char *in; /* one frame's stored data */
    size_t in_cap;
    unsigned char *out; /* one decompressed chunk */
    size_t out_len;
    size_t out_pos;
    uint64_t frame_off; /* file offset of the next frame */
    uint64_t image_done;
    uint32_t crc;
    int done;
    uint64_t file_off; /* cursor of snap_reader_read_file */
};

/* ---- small helpers --------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static void
snap_logf(const struct snap_env *log, enum snap_log_level level,
          const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    if (log == NULL || log->cb == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log->cb(log->data, level, msg);
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static char *snap_path(const char *dir, uint64_t term, uint64_t index,
                       const char *suffix)
{
    size_t n = strlen(dir) + 1 + SNAP_NAME_LEN + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%016" PRIx64 "-%016" PRIx64 ".snap%s", dir, term,
                 index, suffix);
    return p;
}

/* Parse exactly "%016x-%016x.snap" in lower-case hex, as we write them. */
static int snap_name_parse(const char *name, struct snap_id *id)
{
    uint64_t v[2] = {0, 0};
    if (strlen(name) != SNAP_NAME_LEN || name[16] != '-' ||
        strcmp(name + 33, ".snap") != 0)
        return -EINVAL;
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 16; i++) {
            char c = name[k * 17 + i];
            unsigned d;
            if (c >= '0' && c <= '9')
                d = (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                d = (unsigned)(c - 'a' + 10);
            else
                return -EINVAL;
            v[k] = v[k] << 4 | d;
        }
    }
    id->term = v[0];
    id->index = v[1];
    return 0;
}

static int snap_id_cmp(const void *a, const void *b)
{
    const struct snap_id *x = a, *y = b;
    if (x->term != y->term)
        return x->term < y->term ? -1 : 1;
    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    return 0;
}

/* The disk calls, through the hooks when set; all return negative errno. */
static ssize_t io_pread(const struct snap_env *env, int fd, void *buf,
                        size_t n, uint64_t off)
{
    ssize_t rv;
    if (env->hooks != NULL && env->hooks->pread != NULL)
        return env->hooks->pread(env->hooks->ctx, fd, buf, n, (off_t)off);
    rv = pread(fd, buf, n, (off_t)off);
    return rv < 0 ? -errno : rv;
}

static ssize_t io_pwrite(const struct snap_env *env, int fd, const void *buf,
                         size_t n, uint64_t off)
{
    ssize_t rv;
    if (env->hooks != NULL && env->hooks->pwrite != NULL)
        return env->hooks->pwrite(env->hooks->ctx, fd, buf, n, (off_t)off);
    rv = pwrite(fd, buf, n, (off_t)off);
    return rv < 0 ? -errno : rv;
}

static int io_fsync(const struct snap_env *env, int fd)
{
    if (env->hooks != NULL && env->hooks->fsync != NULL)
        return env->hooks->fsync(env->hooks->ctx, fd);
    return fsync(fd) != 0 ? -errno : 0;
}

static int io_rename(const struct snap_env *env, const char *from,
                     const char *to)
{
    if (env->hooks != NULL && env->hooks->rename != NULL)
        return env->hooks->rename(env->hooks->ctx, from, to);
    return rename(from, to) != 0 ? -errno : 0;
}

static int io_unlink(const struct snap_env *env, const char *path)
{
    if (env->hooks != NULL && env->hooks->unlink != NULL)
        return env->hooks->unlink(env->hooks->ctx, path);
    return unlink(path) != 0 ? -errno : 0;
}

/* Write all of buf at off (a short write is retried, as is EINTR). */
static int write_all(const struct snap_env *env, int fd, const void *buf,
                     size_t len, uint64_t off)
{
    const unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = io_pwrite(env, fd, p, len, off);
        if (n == -EINTR)
            continue;
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Read exactly len bytes at off; -EBADMSG if the file ends first. */
static int pread_all(const struct snap_env *env, int fd, void *buf,
                     size_t len, uint64_t off)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = io_pread(env, fd, p, len, off);
        if (n == -EINTR)
            continue;
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -EBADMSG;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int fsync_dir(const struct snap_env *env, const char *dir)
{
    int rv;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    rv = io_fsync(env, fd);
    close(fd);
    return rv;
}

/* ---- options, directory ---------------------------------------------- */

void snap_options_init(struct snap_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->max_snapshots = SNAP_MAX_SNAPSHOTS_DEFAULT;
    opts->chunk_size = SNAP_CHUNK_SIZE_DEFAULT;
}

static int snap_mkdir_p(const char *dir)
{
    int rv = 0;
    char *p = strdup(dir);
    if (p == NULL)
        return -ENOMEM;
    for (char *s = p + 1; *s != '\0'; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            rv = -errno;
            goto out;
        }
        *s = '/';
    }
    if (mkdir(p, 0700) != 0 && errno != EEXIST)
        rv = -errno;
out:
    free(p);
    return rv;
}

int snap_dir_init(const struct snap_options *opts)
{
    struct snap_env log = {opts->log, opts->log_data, opts->hooks};
    struct dirent *de;
    DIR *d;
    int rv;

    if (opts->dir == NULL)
        return -EINVAL;
    rv = snap_mkdir_p(opts->dir);
    if (rv != 0) {
        snap_logf(&log, SNAP_LOG_ERROR, "snap: mkdir %s: %s", opts->dir,
                  strerror(-rv));
        return rv;
    }
    d = opendir(opts->dir);
    if (d == NULL) {
        rv = -errno;
        snap_logf(&log, SNAP_LOG_ERROR, "snap: opendir %s: %s", opts->dir,
                  strerror(-rv));
        return rv;
    }
    while ((de = readdir(d)) != NULL) {
        if (strstr(de->d_name, ".snap.tmp.") == NULL)
            continue;
        char *p = malloc(strlen(opts->dir) + strlen(de->d_name) + 2);
        if (p == NULL) {
            rv = -ENOMEM;
            break;
        }
        sprintf(p, "%s/%s", opts->dir, de->d_name);
        rv = io_unlink(&log, p);
        free(p);
        if (rv == -ENOENT)
            rv = 0;
        if (rv != 0) {
            snap_logf(&log, SNAP_LOG_ERROR, "snap: remove %s/%s: %s",
                      opts->dir, de->d_name, strerror(-rv));
            break;
        }
        snap_logf(&log, SNAP_LOG_INFO, "snap: removed stale temp file %s/%s",
                  opts->dir, de->d_name);
    }
    closedir(d);
    return rv;
}

int snap_list(const struct snap_options *opts, struct snap_id **ids,
              size_t *n)
{
    struct snap_id *v = NULL, id;
    size_t len = 0, cap = 0;
    struct dirent *de;
    DIR *d;

    *ids = NULL;
    *n = 0;
    if (opts->dir == NULL)
        return -EINVAL;
    d = opendir(opts->dir);
    if (d == NULL)
        return errno == ENOENT ? 0 : -errno;
    while ((de = readdir(d)) != NULL) {
        if (snap_name_parse(de->d_name, &id) != 0)
            continue;
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct snap_id *nv = realloc(v, ncap * sizeof(*v));
            if (nv == NULL) {
                free(v);
                closedir(d);
                return -ENOMEM;
            }
            v = nv;
            cap = ncap;
        }
        v[len++] = id;
    }
    closedir(d);
    if (len > 0)
        qsort(v, len, sizeof(*v), snap_id_cmp);
    *ids = v;
    *n = len;
    return 0;
}

int snap_purge(const struct snap_options *opts)
{
    struct snap_env log = {opts->log, opts->log_data, opts->hooks};
    struct snap_id *ids;
    size_t n;
    int rv, first_err = 0;

    rv = snap_list(opts, &ids, &n);
    if (rv != 0)
        return rv;
    for (size_t i = 0; opts->max_snapshots > 0 && i + opts->max_snapshots < n;
         i++) {
        char *p = snap_path(opts->dir, ids[i].term, ids[i].index, "");
        if (p == NULL) {
            first_err = -ENOMEM;
            break;
        }
        rv = io_unlink(&log, p);
        if (rv != 0 && rv != -ENOENT) {
            snap_logf(&log, SNAP_LOG_ERROR, "snap: purge %s: %s", p,
                      strerror(-rv));
            if (first_err == 0)
                first_err = rv;
        }
        free(p);
    }
    free(ids);
    return first_err;
}

/* ---- verification ---------------------------------------------------- */

static size_t snap_stored_max(uint32_t chunk_size)
{
    int b = LZ4_compressBound((int)chunk_size);
    return b > (int)chunk_size ? (size_t)b : chunk_size;
}

/* Parse and check the fixed header and meta at the start of fd. On success
 * *meta is returned (malloc'd, NULL if meta_len 0; caller frees). */
static int snap_read_header(const struct snap_env *log, int fd,
                            const char *path, struct snap_hdr *h,
                            unsigned char **meta)
{
    unsigned char b[SNAP_HEADER_SIZE];
    unsigned char *m = NULL;
    uint32_t crc;
    struct stat st;
    int rv;

    *meta = NULL;
    if (fstat(fd, &st) != 0) {
        rv = -errno;
        snap_logf(log, SNAP_LOG_ERROR, "snap: stat %s: %s", path,
                  strerror(-rv));
        return rv;
    }
    rv = pread_all(log, fd, b, sizeof(b), 0);
    if (rv == -EBADMSG) {
        snap_logf(log, SNAP_LOG_ERROR,
                  "snap: %s: offset 0: file too short for a header (%lld "
                  "bytes)",
                  path, (long long)st.st_size);
        return rv;
    }
    if (rv != 0) {
        snap_logf(log, SNAP_LOG_ERROR, "snap: read %s: %s", path,
                  strerror(-rv));
        return rv;
    }
    if (memcmp(b, SNAP_MAGIC, SNAP_MAGIC_LEN) != 0) {
        snap_logf(log, SNAP_LOG_ERROR, "snap: %s: offset 0: bad magic", path);
        return -EBADMSG;
    }
    h->version = get32(b + 8);
    h->header_len = get32(b + 12);
    h->term = get64(b + 16);
    h->index = get64(b + 24);
    h->image_size = get64(b + 32);
    h->payload_size = get64(b + 40);
    h->chunk_size = get32(b + 48);
    h->meta_len = get32(b + 52);
    h->payload_crc = get32(b + 56);
    h->header_crc = get32(b + 60);
    if (h->meta_len > SNAP_META_MAX ||
        h->header_len != SNAP_HEADER_SIZE + h->meta_len) {
        snap_logf(log, SNAP_LOG_ERROR,
                  "snap: %s: offset 12: bad header_len %" PRIu32
                  " / meta_len %" PRIu32,
                  path, h->header_len, h->meta_len);
        return -EBADMSG;
    }
    if (h->meta_len > 0) {
        m = malloc(h->meta_len);
        if (m == NULL)
            return -ENOMEM;
        rv = pread_all(log, fd, m, h->meta_len, SNAP_HEADER_SIZE);
        if (rv != 0) {
            snap_logf(log, SNAP_LOG_ERROR,
                      "snap: %s: offset %u: reading metadata: %s", path,
                      SNAP_HEADER_SIZE,
                      rv == -EBADMSG ? "file truncated" : strerror(-rv));
            goto err_after_meta_alloc;
        }
    }
    crc = wal_crc32c(0, b, 60);
    if (h->meta_len > 0)
        crc = wal_crc32c(crc, m, h->meta_len);
    if (crc != h->header_crc) {
        snap_logf(log, SNAP_LOG_ERROR,
                  "snap: %s: offset 60: header crc mismatch (stored %08" PRIx32
                  ", computed %08" PRIx32 ")",
                  path, h->header_crc, crc);
        rv = -EBADMSG;
        goto err_after_meta_alloc;
    }
    /* The crc is good, so an unknown version really is a newer writer, not
     * damage: refuse without calling it broken. */
    if (h->version != SNAP_VERSION) {
        snap_logf(log, SNAP_LOG_ERROR,
                  "snap: %s: offset 8: format version %" PRIu32
                  " not supported (this build reads %u)",
                  path, h->version, SNAP_VERSION);
        rv = -EPROTONOSUPPORT;
        goto err_after_meta_alloc;
    }
    if (h->chunk_size == 0 || h->chunk_size > SNAP_CHUNK_SIZE_MAX ||
        h->payload_size < SNAP_FRAME_SIZE ||
        h->payload_size > (uint64_t)INT64_MAX - h->header_len) {
        snap_logf(log, SNAP_LOG_ERROR,
                  "snap: %s: offset 40: bad chunk_size %" PRIu32
                  " or payload_size %" PRIu64,
                  path, h->chunk_size, h->payload_size);
        rv = -EBADMSG;
        goto err_after_meta_alloc;
    }
    if ((uint64_t)st.st_size != h->header_len + h->payload_size) {
        snap_logf(log, SNAP_LOG_ERROR,
                  "snap: %s: offset %lld: file size %lld, header says %" PRIu64,
                  path, (long long)st.st_size, (long long)st.st_size,
                  h->header_len + h->payload_size);
        rv = -EBADMSG;
        goto err_after_meta_alloc;
    }
    *meta = m;
    return 0;

err_after_meta_alloc:
    free(m);
    return rv;
}

/* Read and check the frame header at off. On success the frame's image
 * and stored lengths are returned and *crc is advanced over the 8 length
 * bytes (the caller continues it over the data and compares with *want). */
static int snap_frame_header(const struct snap_env *log, int fd,
                             const char *path, const struct snap_hdr *h,
                             uint64_t off, uint32_t *image_len,
                             uint32_t *stored_len, int *raw, uint32_t *crc,
                             uint32_t *want)
{
    unsigned char b[SNAP_FRAME_SIZE];
    uint64_t end = h->header_len + h->payload_size;
    uint32_t il, sl;
    int rv;

    if (end - off < SNAP_FRAME_SIZE) {
        snap_logf(log, SNAP_LOG_ERROR,
                  "snap: %s: offset %" PRIu64 ": frame runs past the payload",
                  path, off);
        return -EBADMSG;
    }
    rv = pread_all(log, fd, b, sizeof(b), off);
    if (rv != 0) {
        snap_logf(log, SNAP_LOG_ERROR, "snap: %s: offset %" PRIu64 ": %s",
                  path, off,
                  rv == -EBADMSG ? "file truncated" : strerror(-rv));
        return rv;
    }
    il = get32(b);
    sl = get32(b + 4);
    *raw = (sl & SNAP_STORED_RAW) != 0;
    sl &= ~SNAP_STORED_RAW;
    if (il > h->chunk_size || (il == 0 && (sl != 0 || *raw)) ||
        (il != 0 && sl == 0) || (*raw && sl != il) ||
        sl > snap_stored_max(h->chunk_size) ||
        sl > end - off - SNAP_FRAME_SIZE) {
        snap_logf(log, SNAP_LOG_ERROR,
                  "snap: %s: offset %" PRIu64 ": bad frame lengths (image %" PRIu32
                  ", stored %" PRIu32 ")",
                  path, off, il, sl);
        return -EBADMSG;
    }
    *image_len = il;
    *stored_len = sl;
    *crc = wal_crc32c(*crc, b, 8);
    *want = get32(b + 8);
    return 0;
}

/* The cheap pass: walk every frame, checking lengths and the crc chain,
 * without decompressing. scratch must hold snap_stored_max(chunk_size). */
static int snap_verify_frames(const struct snap_env *log, int fd,
                              const char *path, const struct snap_hdr *h,
                              unsigned char *scratch)
{
    uint64_t off = h->header_len, end = h->header_len + h->payload_size;
    uint64_t image = 0;
    uint32_t crc = 0;
    int rv;

    for (;;) {
        uint32_t il, sl, want;
        int raw;
        rv = snap_frame_header(log, fd, path, h, off, &il, &sl, &raw, &crc,
                               &want);
        if (rv != 0)
            return rv;
        if (sl > 0) {
            rv = pread_all(log, fd, scratch, sl, off + SNAP_FRAME_SIZE);
            if (rv != 0) {
                snap_logf(log, SNAP_LOG_ERROR,
                          "snap: %s: offset %" PRIu64 ": %s", path,
                          off + SNAP_FRAME_SIZE,
                          rv == -EBADMSG ? "file truncated" : strerror(-rv));
                return rv;
            }
            crc = wal_crc32c(crc, scratch, sl);
        }
        if (crc != want) {
            snap_logf(log, SNAP_LOG_ERROR,
                      "snap: %s: offset %" PRIu64 ": frame crc mismatch "
                      "(stored %08" PRIx32 ", computed %08" PRIx32 ")",
                      path, off, want, crc);
            return -EBADMSG;
        }
        off += SNAP_FRAME_SIZE + sl;
        image += il;
        if (il == 0)
            break;
    }
    if (off != end || image != h->image_size || crc != h->payload_crc) {
        snap_logf(log, SNAP_LOG_ERROR,
                  "snap: %s: offset %" PRIu64 ": end frame disagrees with the "
                  "header (end %" PRIu64 ", image %" PRIu64 "/%" PRIu64
                  ", crc %08" PRIx32 "/%08" PRIx32 ")",
                  path, off, end, image, h->image_size, crc, h->payload_crc);
        return -EBADMSG;
    }
    return 0;
}

/* Verify the whole file open at fd. On success *h and *meta (caller frees)
 * are returned. */
static int snap_verify_fd(const struct snap_env *log, int fd,
                          const char *path, struct snap_hdr *h,
                          unsigned char **meta)
{
    unsigned char *scratch;
    int rv = snap_read_header(log, fd, path, h, meta);
    if (rv != 0)
        return rv;
    scratch = malloc(snap_stored_max(h->chunk_size));
    if (scratch == NULL) {
        rv = -ENOMEM;
        goto err_after_header;
    }
    rv = snap_verify_frames(log, fd, path, h, scratch);
    free(scratch);
    if (rv != 0)
        goto err_after_header;
    return 0;

err_after_header:
    free(*meta);
    *meta = NULL;
    return rv;
}

/* ---- writer ---------------------------------------------------------- */

static int snap_writer_alloc(const struct snap_options *opts, uint64_t term,
                             uint64_t index, int file_mode,
                             struct snap_writer **out)
{
    struct snap_writer *w;
    char *tpl;
    int rv;

    if (opts->dir == NULL)
        return -EINVAL;
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->log.cb = opts->log;
    w->log.data = opts->log_data;
    w->log.hooks = opts->hooks;
    w->fd = -1;
    w->term = term;
    w->index = index;
    w->file_mode = file_mode;
    w->max_snapshots = opts->max_snapshots;
    w->chunk_size = opts->chunk_size;
    w->dir = strdup(opts->dir);
    tpl = snap_path(opts->dir, term, index, ".tmp.XXXXXX");
    if (w->dir == NULL || tpl == NULL) {
        free(tpl);
        rv = -ENOMEM;
        goto err_after_alloc;
    }
    w->tmp_path = tpl;
    w->fd = mkostemp(w->tmp_path, O_CLOEXEC);
    if (w->fd < 0) {
        rv = -errno;
        snap_logf(&w->log, SNAP_LOG_ERROR, "snap: create %s: %s", w->tmp_path,
                  strerror(-rv));
        goto err_after_alloc;
    }
    *out = w;
    return 0;

err_after_alloc:
    free(w->tmp_path);
    free(w->dir);
    free(w);
    return rv;
}

static void snap_writer_free(struct snap_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    free(w->in);
    free(w->out);
    free(w->meta);
    free(w->tmp_path);
    free(w->dir);
    free(w);
}

int snap_writer_new(const struct snap_options *opts, uint64_t term,
                    uint64_t index, const void *meta, size_t meta_len,
                    struct snap_writer **out)
{
    unsigned char zero[SNAP_HEADER_SIZE] = {0};
    struct snap_writer *w;
    int rv;

    if (meta_len > SNAP_META_MAX || (meta == NULL && meta_len > 0) ||
        opts->chunk_size < SNAP_CHUNK_SIZE_MIN ||
        opts->chunk_size > SNAP_CHUNK_SIZE_MAX)
        return -EINVAL;
    rv = snap_writer_alloc(opts, term, index, 0, &w);
    if (rv != 0)
        return rv;
    w->meta_len = (uint32_t)meta_len;
    w->out_cap = SNAP_FRAME_SIZE + snap_stored_max(w->chunk_size);
    w->in = malloc(w->chunk_size);
    w->out = malloc(w->out_cap);
    w->meta = meta_len > 0 ? malloc(meta_len) : NULL;
    if (w->in == NULL || w->out == NULL || (meta_len > 0 && w->meta == NULL)) {
        rv = -ENOMEM;
        goto err_after_writer;
    }
    if (meta_len > 0)
        memcpy(w->meta, meta, meta_len);
    /* A zero header marks the file unfinished until commit rewrites it;
     * the meta goes in now so frames can follow it directly. */
    rv = write_all(&w->log, w->fd, zero, sizeof(zero), 0);
    if (rv == 0 && meta_len > 0)
        rv = write_all(&w->log, w->fd, meta, meta_len, SNAP_HEADER_SIZE);
    if (rv != 0) {
        snap_logf(&w->log, SNAP_LOG_ERROR, "snap: write %s: offset 0: %s",
                  w->tmp_path, strerror(-rv));
        goto err_after_writer;
    }
    w->offset = SNAP_HEADER_SIZE + meta_len;
    *out = w;
    return 0;

err_after_writer:
    io_unlink(&w->log, w->tmp_path);
    snap_writer_free(w);
    return rv;
}

int snap_writer_new_file(const struct snap_options *opts, uint64_t term,
                         uint64_t index, struct snap_writer **out)
{
    return snap_writer_alloc(opts, term, index, 1, out);
}

/* Compress the pending image bytes into one frame and append it; with
 * in_len 0 this writes the end frame. */
static int snap_writer_flush(struct snap_writer *w)
{
    unsigned char *data = w->out + SNAP_FRAME_SIZE;
    uint32_t stored;
    int n = 0, rv;

    if (w->in_len > 0)
        n = LZ4_compress_default((const char *)w->in, (char *)data,
                                 (int)w->in_len,
                                 (int)(w->out_cap - SNAP_FRAME_SIZE));
    if (w->in_len == 0) {
        stored = 0;
    } else if (n <= 0 || (size_t)n >= w->in_len) {
        /* Incompressible (or lz4 refused): store the bytes as they are. */
        memcpy(data, w->in, w->in_len);
        stored = (uint32_t)w->in_len | SNAP_STORED_RAW;
        n = (int)w->in_len;
    } else {
        stored = (uint32_t)n;
    }
    put32(w->out, (uint32_t)w->in_len);
    put32(w->out + 4, stored);
    w->crc = wal_crc32c(w->crc, w->out, 8);
    w->crc = wal_crc32c(w->crc, data, (size_t)n);
    put32(w->out + 8, w->crc);
    rv = write_all(&w->log, w->fd, w->out, SNAP_FRAME_SIZE + (size_t)n,
                   w->offset);
    if (rv != 0) {
        snap_logf(&w->log, SNAP_LOG_ERROR,
                  "snap: write %s: offset %" PRIu64 ": %s", w->tmp_path,
                  w->offset, strerror(-rv));
        return rv;
    }
    w->offset += SNAP_FRAME_SIZE + (uint64_t)n;
    w->image_size += w->in_len;
    w->in_len = 0;
    return 0;
}

int snap_writer_write(struct snap_writer *w, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    if (w->file_mode)
        return -EINVAL;
    if (w->err != 0)
        return w->err;
    while (len > 0) {
        size_t k = w->chunk_size - w->in_len;
        if (k > len)
            k = len;
        memcpy(w->in + w->in_len, p, k);
        w->in_len += k;
        p += k;
        len -= k;
        if (w->in_len == w->chunk_size) {
            int rv = snap_writer_flush(w);
            if (rv != 0) {
                w->err = rv;
                return rv;
            }
        }
    }
    return 0;
}

int snap_write_cb(void *data, const void *buf, size_t len)
{
    return snap_writer_write(data, buf, len);
}

int snap_writer_write_file(struct snap_writer *w, const void *buf, size_t len)
{
    int rv;
    if (!w->file_mode)
        return -EINVAL;
    if (w->err != 0)
        return w->err;
    rv = write_all(&w->log, w->fd, buf, len, w->offset);
    if (rv != 0) {
        snap_logf(&w->log, SNAP_LOG_ERROR,
                  "snap: write %s: offset %" PRIu64 ": %s", w->tmp_path,
                  w->offset, strerror(-rv));
        w->err = rv;
        return rv;
    }
    w->offset += len;
    return 0;
}

/* Finish an image writer's file: last chunk, end frame, real header. */
static int snap_writer_finish_image(struct snap_writer *w)
{
    unsigned char b[SNAP_HEADER_SIZE];
    uint32_t crc;
    int rv;

    if (w->in_len > 0) {
        rv = snap_writer_flush(w);
        if (rv != 0)
            return rv;
    }
    rv = snap_writer_flush(w); /* the end frame */
    if (rv != 0)
        return rv;
    memcpy(b, SNAP_MAGIC, SNAP_MAGIC_LEN);
    put32(b + 8, SNAP_VERSION);
    put32(b + 12, SNAP_HEADER_SIZE + w->meta_len);
    put64(b + 16, w->term);
    put64(b + 24, w->index);
    put64(b + 32, w->image_size);
    put64(b + 40, w->offset - SNAP_HEADER_SIZE - w->meta_len);
    put32(b + 48, w->chunk_size);
    put32(b + 52, w->meta_len);
    put32(b + 56, w->crc);
    crc = wal_crc32c(0, b, 60);
    if (w->meta_len > 0)
        crc = wal_crc32c(crc, w->meta, w->meta_len);
    put32(b + 60, crc);
    rv = write_all(&w->log, w->fd, b, sizeof(b), 0);
    if (rv != 0) {
        snap_logf(&w->log, SNAP_LOG_ERROR, "snap: write %s: offset 0: %s",
                  w->tmp_path, strerror(-rv));
        return rv;
    }
    return 0;
}

/* Check a received file before it may take a .snap name. */
static int snap_writer_check_file(struct snap_writer *w)
{
    struct snap_hdr h;
    unsigned char *meta;
    int rv = snap_verify_fd(&w->log, w->fd, w->tmp_path, &h, &meta);
    if (rv != 0)
        return rv;
    free(meta);
    if (h.term != w->term || h.index != w->index) {
        snap_logf(&w->log, SNAP_LOG_ERROR,
                  "snap: %s: offset 16: received snapshot is (term %" PRIu64
                  ", index %" PRIu64 "), expected (%" PRIu64 ", %" PRIu64 ")",
                  w->tmp_path, h.term, h.index, w->term, w->index);
        return -EINVAL;
    }
    return 0;
}

int snap_writer_commit(struct snap_writer *w)
{
    struct snap_options po;
    char *final = NULL;
    int rv = w->err;

    if (rv != 0)
        goto err_after_temp;
    rv = w->file_mode ? snap_writer_check_file(w)
                      : snap_writer_finish_image(w);
    if (rv != 0)
        goto err_after_temp;
    rv = io_fsync(&w->log, w->fd);
    if (rv != 0) {
        snap_logf(&w->log, SNAP_LOG_ERROR, "snap: fsync %s: %s", w->tmp_path,
                  strerror(-rv));
        goto err_after_temp;
    }
    final = snap_path(w->dir, w->term, w->index, "");
    if (final == NULL) {
        rv = -ENOMEM;
        goto err_after_temp;
    }
    rv = io_rename(&w->log, w->tmp_path, final);
    if (rv != 0) {
        snap_logf(&w->log, SNAP_LOG_ERROR, "snap: rename %s to %s: %s",
                  w->tmp_path, final, strerror(-rv));
        goto err_after_temp;
    }
    /* From here the temp name is gone; errors must not unlink it. */
    rv = fsync_dir(&w->log, w->dir);
    if (rv != 0) {
        /* The rename may not be durable: say so, and let the caller treat
         * the snapshot as not taken (the file itself is complete). */
        snap_logf(&w->log, SNAP_LOG_ERROR, "snap: fsync dir %s: %s", w->dir,
                  strerror(-rv));
        goto out;
    }
    snap_options_init(&po);
    po.dir = w->dir;
    po.max_snapshots = w->max_snapshots;
    po.log = w->log.cb;
    po.log_data = w->log.data;
    po.hooks = w->log.hooks;
    if (snap_purge(&po) != 0)
        snap_logf(&w->log, SNAP_LOG_WARN,
                  "snap: purge of old snapshots in %s failed; will retry at "
                  "the next snapshot",
                  w->dir);
    snap_logf(&w->log, SNAP_LOG_INFO,
              "snap: saved %s (%" PRIu64 " bytes on disk)", final, w->offset);
out:
    free(final);
    snap_writer_free(w);
    return rv;

err_after_temp:
    io_unlink(&w->log, w->tmp_path);
    free(final);
    snap_writer_free(w);
    return rv;
}

void snap_writer_abort(struct snap_writer *w)
{
    if (w == NULL)
        return;
    io_unlink(&w->log, w->tmp_path);
    snap_writer_free(w);
}

/* ---- reader ---------------------------------------------------------- */

void snap_reader_free(struct snap_reader *r)
{
    if (r == NULL)
        return;
    if (r->fd >= 0)
        close(r->fd);
    free(r->in);
    free(r->out);
    free(r->meta);
    free(r->path);
    free(r);
}

/* Open and verify the file at path (borrowed for the call). */
static int snap_reader_open_path(const struct snap_env *log, const char *path,
                                 struct snap_reader **out)
{
    struct snap_reader *r = calloc(1, sizeof(*r));
    int rv;

    if (r == NULL)
        return -ENOMEM;
    r->log = *log;
    r->fd = -1;
    r->path = strdup(path);
    if (r->path == NULL) {
        rv = -ENOMEM;
        goto err_after_reader;
    }
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        rv = -errno;
        if (rv != -ENOENT)
            snap_logf(log, SNAP_LOG_ERROR, "snap: open %s: %s", path,
                      strerror(-rv));
        goto err_after_reader;
    }
    rv = snap_verify_fd(log, r->fd, path, &r->hdr, &r->meta);
    if (rv != 0)
        goto err_after_reader;
    r->in_cap = snap_stored_max(r->hdr.chunk_size);
    r->in = malloc(r->in_cap);
    r->out = malloc(r->hdr.chunk_size);
    if (r->in == NULL || r->out == NULL) {
        rv = -ENOMEM;
        goto err_after_reader;
    }
    r->frame_off = r->hdr.header_len;
    *out = r;
    return 0;

err_after_reader:
    snap_reader_free(r);
    return rv;
}

int snap_reader_open_at(const struct snap_options *opts, uint64_t term,
                        uint64_t index, struct snap_reader **out)
{
    struct snap_env log = {opts->log, opts->log_data, opts->hooks};
    char *path;
    int rv;

    if (opts->dir == NULL)
        return -EINVAL;
    path = snap_path(opts->dir, term, index, "");
    if (path == NULL)
        return -ENOMEM;
    rv = snap_reader_open_path(&log, path, out);
    free(path);
    return rv;
}

int snap_reader_open(const struct snap_options *opts,
                     struct snap_reader **out)
{
    struct snap_env log = {opts->log, opts->log_data, opts->hooks};
    struct snap_id *ids;
    size_t n;
    int rv;

    rv = snap_list(opts, &ids, &n);
    if (rv != 0) {
        snap_logf(&log, SNAP_LOG_ERROR, "snap: list %s: %s",
                  opts->dir ? opts->dir : "(null)", strerror(-rv));
        return rv;
    }
    rv = -ENOENT;
    for (size_t i = n; i-- > 0;) {
        char *path = snap_path(opts->dir, ids[i].term, ids[i].index, "");
        char *broken = snap_path(opts->dir, ids[i].term, ids[i].index,
                                 ".broken");
        if (path == NULL || broken == NULL) {
            free(path);
            free(broken);
            rv = -ENOMEM;
            break;
        }
        rv = snap_reader_open_path(&log, path, out);
        if (rv == -EBADMSG) {
            /* Keep the evidence under a name load ignores, like etcd. A
             * failed rename is logged but does not stop the fallback. */
            int e = io_rename(&log, path, broken);
            if (e != 0)
                snap_logf(&log, SNAP_LOG_ERROR, "snap: rename %s to %s: %s",
                          path, broken, strerror(-e));
            else
                snap_logf(&log, SNAP_LOG_WARN,
                          "snap: %s failed verification, renamed to %s; "
                          "falling back to the previous snapshot",
                          path, broken);
        }
        free(path);
        free(broken);
        /* -ENOENT: purged between listing and opening; try the next. */
        if (rv == -EBADMSG || rv == -ENOENT) {
            rv = -ENOENT;
            continue;
        }
        break;
    }
    free(ids);
    return rv;
}

uint64_t snap_reader_term(const struct snap_reader *r)
{
    return r->hdr.term;
}

uint64_t snap_reader_index(const struct snap_reader *r)
{
    return r->hdr.index;
}

const void *snap_reader_meta(const struct snap_reader *r, size_t *len)
{
    *len = r->hdr.meta_len;
    return r->meta;
}

uint64_t snap_reader_image_size(const struct snap_reader *r)
{
    return r->hdr.image_size;
}

uint64_t snap_reader_file_size(const struct snap_reader *r)
{
    return r->hdr.header_len + r->hdr.payload_size;
}

const char *snap_reader_path(const struct snap_reader *r)
{
    return r->path;
}

/* Decode the next frame into r->out. Lengths and crcs are checked again:
 * the file was verified at open, but may have changed since. */
static int snap_reader_next(struct snap_reader *r)
{
    uint32_t il, sl, want;
    int raw, rv;

    rv = snap_frame_header(&r->log, r->fd, r->path, &r->hdr, r->frame_off,
                           &il, &sl, &raw, &r->crc, &want);
    if (rv != 0)
        return rv;
    if (sl > 0) {
        rv = pread_all(&r->log, r->fd, r->in, sl,
                       r->frame_off + SNAP_FRAME_SIZE);
        if (rv != 0) {
            snap_logf(&r->log, SNAP_LOG_ERROR,
                      "snap: %s: offset %" PRIu64 ": %s", r->path,
                      r->frame_off + SNAP_FRAME_SIZE,
                      rv == -EBADMSG ? "file truncated" : strerror(-rv));
            return rv;
        }
        r->crc = wal_crc32c(r->crc, r->in, sl);
    }
    if (r->crc != want) {
        snap_logf(&r->log, SNAP_LOG_ERROR,
                  "snap: %s: offset %" PRIu64 ": frame crc mismatch (file "
                  "changed since it was verified)",
                  r->path, r->frame_off);
        return -EBADMSG;
    }
    if (il == 0) {
        if (r->image_done != r->hdr.image_size || r->crc != r->hdr.payload_crc) {
            snap_logf(&r->log, SNAP_LOG_ERROR,
                      "snap: %s: offset %" PRIu64 ": end frame disagrees "
                      "with the header",
                      r->path, r->frame_off);
            return -EBADMSG;
        }
        r->done = 1;
        return 0;
    }
    if (raw) {
        memcpy(r->out, r->in, il);
    } else {
        int n = LZ4_decompress_safe((const char *)r->in, (char *)r->out,
                                    (int)sl, (int)r->hdr.chunk_size);
        if (n < 0 || (uint32_t)n != il) {
            snap_logf(&r->log, SNAP_LOG_ERROR,
                      "snap: %s: offset %" PRIu64 ": lz4 block does not "
                      "decompress to %" PRIu32 " bytes",
                      r->path, r->frame_off, il);
            return -EBADMSG;
        }
    }
    r->frame_off += SNAP_FRAME_SIZE + sl;
    r->image_done += il;
    r->out_len = il;
    r->out_pos = 0;
    return 0;
}

int snap_reader_read(struct snap_reader *r, void *buf, size_t len,
                     size_t *nread)
{
    unsigned char *p = buf;
    size_t got = 0;
    int rv = 0;

    while (got < len) {
        size_t k;
        if (r->out_pos == r->out_len) {
            if (r->done)
                break;
            rv = snap_reader_next(r);
            if (rv != 0)
                break;
            continue;
        }
        k = r->out_len - r->out_pos;
        if (k > len - got)
            k = len - got;
        memcpy(p + got, r->out + r->out_pos, k);
        r->out_pos += k;
        got += k;
    }
    *nread = got;
    return rv;
}

int snap_read_cb(void *data, void *buf, size_t len)
{
    struct snap_reader *r = data;
    size_t n;
    int rv = snap_reader_read(r, buf, len, &n);
    if (rv != 0)
        return rv;
    if (n < len) {
        snap_logf(&r->log, SNAP_LOG_ERROR,
                  "snap: %s: image truncated: wanted %zu more bytes at image "
                  "offset %" PRIu64 ", the image has %" PRIu64,
                  r->path, len - n, r->image_done, r->hdr.image_size);
        return -ENODATA;
    }
    return 0;
}

int snap_reader_read_file(struct snap_reader *r, void *buf, size_t len,
                          size_t *nread)
{
    uint64_t size = snap_reader_file_size(r);
    uint64_t left = size - r->file_off;
    int rv;

    if (len > left)
        len = (size_t)left;
    *nread = 0;
    if (len == 0)
        return 0;
    rv = pread_all(&r->log, r->fd, buf, len, r->file_off);
    if (rv != 0) {
        snap_logf(&r->log, SNAP_LOG_ERROR, "snap: read %s: offset %" PRIu64
                  ": %s", r->path, r->file_off,
                  rv == -EBADMSG ? "file truncated" : strerror(-rv));
        return rv;
    }
    r->file_off += len;
    *nread = len;
    return 0;
}
