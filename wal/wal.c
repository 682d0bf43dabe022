/* wal/wal.c: the write-ahead log. Segment files of CRC-32C-chained,
 * 8-byte-aligned records; read mode (replay, torn-tail repair) then append
 * mode (writer thread with group commit, preallocated segments, purge).
 *
 * ON-DISK FORMAT (all integers little-endian)
 *
 * Directory: <dir>/%016llx-%016llx.wal, the hex sequence number (0, 1, 2,
 * ... with no gaps) and the index of the first entry the segment may hold
 * (the last entry index written before it, plus one; 0 for segment 0).
 * "<dir>/segment.tmp" is the next segment being preallocated and is removed
 * on open; "<segment>.broken" holds bytes cut off by a torn-tail repair.
 * The directory itself is flock()ed by the handle that owns it.
 *
 * Segment: a sequence of records from byte 0, then zero bytes up to the
 * preallocated size (only in the last segment: older ones are truncated to
 * their last record when the next one is cut). Every segment starts with
 *   CRC record, METADATA, HARD_STATE (if one was ever written),
 *   SNAPSHOT (the newest marker, if any)
 * so it can be read without the segments before it.
 *
 * Record (16-byte header, payload, zero padding to a multiple of 8):
 *   bytes 0..3    payload length L (bytes, < 2^30)
 *   bytes 4..7    type: 1 METADATA, 2 ENTRY, 3 HARD_STATE, 4 SNAPSHOT,
 *                 5 CRC (0 is never valid, so zero fill never parses)
 *   bytes 8..11   reserved, 0
 *   bytes 12..15  crc: CRC-32C over bytes 0..11 of this header, then the
 *                 payload and its padding, continuing from the crc of the
 *                 previous record (so the crc chains through the segment).
 *                 For a CRC record (L = 0, first in every segment) this
 *                 field is instead the chain value to continue from: the
 *                 crc of the last record of the previous segment (0 in
 *                 segment 0). Everything but that field is covered.
 *   bytes 16..    payload: a protobuf-c message from wal/wal.proto
 *                 (Metadata, Entry, HardState, SnapshotMarker), then
 *                 (8 - L % 8) % 8 zero bytes.
 *
 * RECOVERY RULES
 *   - Segments are read from the newest one whose first index is at most
 *     snapshot index + 1. A sequence gap, a segment whose first index is
 *     not the previous segment's last entry index + 1, a CRC record that
 *     does not continue the previous segment's chain, an entry index gap
 *     after the snapshot, or differing metadata: WAL_ECORRUPT.
 *   - In any segment but the last, every byte must verify: WAL_ECORRUPT
 *     with the file and offset of the first that does not.
 *   - In the last segment, the first record that does not verify ends the
 *     log. If only zeros follow, that is the preallocated space. Otherwise
 *     it is a torn tail and is repaired (truncated there, the cut bytes up
 *     to the last non-zero one appended to <segment>.broken, a warning
 *     logged) UNLESS some later record chains from the bad one (using its
 *     stored or recomputed crc): then acknowledged data follows and it is
 *     refused as WAL_ECORRUPT. A damaged final record is indistinguishable
 *     from a torn write and is cut, as in etcd.
 */
#include "wal_int.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "wal.pb-c.h"

#define SEG_NAME_LEN 37 /* 16 hex, '-', 16 hex, ".wal" */
#define ZERO_CHUNK (1u << 20)
#define TMP_NAME "segment.tmp"
/* How long the writer polls (yielding the CPU) for the next request after
 * a batch before it sleeps: a lone appender resubmits from its callback
 * within tens of microseconds, and a futex sleep plus wakeup costs as much
 * again on a VM. Bounded, so an idle WAL costs nothing after it; and only
 * while requests keep coming back that fast (see writer_main). */
#define WRITER_SPIN_NS 100000u

enum wal_mode { MODE_READ, MODE_READ_DONE, MODE_APPEND, MODE_CLOSING };
enum prep_state { PREP_IDLE, PREP_WANT, PREP_READY, PREP_FAILED };
enum { REQ_SYNC = 1, REQ_HAS_HS = 2, REQ_HAS_SNAP = 4, REQ_HAS_ENTS = 8 };

struct wal_seg {
    uint64_t seq;
    uint64_t first;
};

struct wal {
    char *dir;
    struct wal_hooks h; /* every member set */
    uv_loop_t *loop;
    wal_log_cb log;
    void *log_data;
    uint64_t seg_size;
    int lock_fd;
    enum wal_mode mode;
    char err[640];

    /* Segment list, oldest first. Guarded by io_mtx in append mode. */
    struct wal_seg *segs;
    size_t n_segs, cap_segs;
    uint64_t tail_file_len; /* after read_all: length of the last file */

    /* Append state, guarded by io_mtx (held for every disk write). */
    pthread_mutex_t io_mtx;
    int fd;
    uint64_t off;
    uint32_t crc;
    uint64_t last_index;
    struct wal_metadata md;
    int has_hs;
    struct wal_hard_state hs;
    int has_snap;
    struct wal_snapshot snap;
    unsigned char *wbuf;
    size_t wcap;

    /* Queues between the loop thread and the writer, guarded by mtx. */
    pthread_mutex_t mtx;
    pthread_cond_t cond;
    struct wal_append_req *q_head, *q_tail; /* submitted */
    struct wal_append_req *d_head, *d_tail; /* done, callbacks pending */
    int stopping;
    int q_count; /* requests in q_head; atomic, for the writer's spin */
    int writer_busy; /* a batch is being written (writer or inline) */
    int inline_done; /* loop thread: wrote one inline since deliver_done */
    uint64_t spin_ns;
    int sticky;     /* first write/fsync error; atomic access */
    int sub_has_hs; /* last hard state submitted (for MustSync) */
    struct wal_hard_state sub_hs;
    int threads;
    int async_init; /* notify is initialised */
    pthread_t writer;
    /* Writer -> loop: an eventfd polled by the loop. Not a uv_async_t:
     * libuv's async handshake makes the woken loop thread sched_yield()
     * until the writer returns from uv_async_send, which on a busy 2-core
     * machine cost a PUT up to milliseconds (perf trace: ~1.7 yields per
     * PUT on the loop thread). */
    int evfd;
    uv_poll_t notify;

    /* Preallocator: prepares TMP_NAME ahead, guarded by mtx. */
    pthread_t prep;
    pthread_cond_t prep_cond;
    enum prep_state prep_state;
    int prep_fd;
    int prep_err;

    void (*close_cb)(void *arg);
    void *close_arg;
};

/* ---- default hooks ------------------------------------------------------ */

static int sys_open(void *c, const char *p, int f, mode_t m)
{
    int fd = open(p, f | O_CLOEXEC, m);
    return fd < 0 ? -errno : fd;
}
static int sys_close(void *c, int fd)
{
    return close(fd) < 0 ? -errno : 0;
}
static ssize_t sys_pread(void *c, int fd, void *b, size_t n, off_t o)
{
    ssize_t r = pread(fd, b, n, o);
    return r < 0 ? -errno : r;
}
static ssize_t sys_pwrite(void *c, int fd, const void *b, size_t n, off_t o)
{
    ssize_t r = pwrite(fd, b, n, o);
    return r < 0 ? -errno : r;
}
static int sys_fsync(void *c, int fd)
{
    return fsync(fd) < 0 ? -errno : 0;
}
static int sys_fdatasync(void *c, int fd)
{
    return fdatasync(fd) < 0 ? -errno : 0;
}
static int sys_ftruncate(void *c, int fd, off_t len)
{
    return ftruncate(fd, len) < 0 ? -errno : 0;
}
static int sys_rename(void *c, const char *a, const char *b)
{
    return rename(a, b) < 0 ? -errno : 0;
}
static int sys_unlink(void *c, const char *p)
{
    return unlink(p) < 0 ? -errno : 0;
}
static int sys_mkdir(void *c, const char *p, mode_t m)
{
    return mkdir(p, m) < 0 ? -errno : 0;
}

static void hooks_fill(struct wal_hooks *h, const struct wal_hooks *user)
{
    if (user)
        *h = *user;
    else
        memset(h, 0, sizeof(*h));
#define FILL(name)                                                             \
    do {                                                                       \
        if (!h->name)                                                          \
            h->name = sys_##name;                                              \
    } while (0)
    FILL(open);
    FILL(close);
    FILL(pread);
    FILL(pwrite);
    FILL(fsync);
    FILL(fdatasync);
    FILL(ftruncate);
    FILL(rename);
    FILL(unlink);
    FILL(mkdir);
#undef FILL
}

/* ---- small helpers -------------------------------------------------------*/

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void wal_logf(struct wal *w, enum wal_log_level lvl, const char *fmt,
                     ...) __attribute__((format(printf, 3, 4)));
static void wal_logf(struct wal *w, enum wal_log_level lvl, const char *fmt,
                     ...)
{
    char msg[768];
    va_list ap;
    if (!w->log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    w->log(w->log_data, lvl, msg);
}

/* Record an error message for wal_last_error() (caller's thread only). */
static int wal_fail(struct wal *w, int rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int wal_fail(struct wal *w, int rv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof(w->err), fmt, ap);
    va_end(ap);
    wal_logf(w, WAL_LOG_ERROR, "%s", w->err);
    return rv;
}

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

static void seg_name(char out[SEG_NAME_LEN + 1], uint64_t seq, uint64_t first)
{
    snprintf(out, SEG_NAME_LEN + 1, "%016" PRIx64 "-%016" PRIx64 ".wal", seq,
             first);
}

static char *seg_path(const struct wal *w, const struct wal_seg *s)
{
    char name[SEG_NAME_LEN + 1];
    seg_name(name, s->seq, s->first);
    return path_join(w->dir, name);
}

static int write_all(struct wal *w, int fd, const void *buf, size_t n,
                     uint64_t off)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = w->h.pwrite(w->h.ctx, fd, p, n, (off_t)off);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return -EIO; /* no progress: do not spin */
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static int zero_fill(struct wal *w, int fd, uint64_t from, uint64_t to)
{
    unsigned char *z;
    int rv = 0;
    if (from >= to)
        return 0;
    z = calloc(1, ZERO_CHUNK);
    if (!z)
        return -ENOMEM;
    while (from < to) {
        size_t n = to - from > ZERO_CHUNK ? ZERO_CHUNK : (size_t)(to - from);
        rv = write_all(w, fd, z, n, from);
        if (rv)
            break;
        from += n;
    }
    free(z);
    return rv;
}

static int dir_fsync(struct wal *w, const char *dir)
{
    int fd = w->h.open(w->h.ctx, dir, O_RDONLY | O_DIRECTORY, 0);
    int rv;
    if (fd < 0)
        return fd;
    rv = w->h.fsync(w->h.ctx, fd);
    w->h.close(w->h.ctx, fd);
    return rv;
}

/* ---- record encoding -------------------------------------------------- */

/* Frame one message at p (header with crc 0, payload, padding); returns
 * the bytes used. */
static size_t rec_put(unsigned char *p, uint32_t type,
                      const ProtobufCMessage *m)
{
    size_t plen = m ? protobuf_c_message_get_packed_size(m) : 0;
    size_t sz = wal_rec_size(plen);
    put32(p, (uint32_t)plen);
    put32(p + 4, type);
    put32(p + 8, 0);
    put32(p + 12, 0);
    if (m)
        protobuf_c_message_pack(m, p + WAL_REC_HEADER);
    memset(p + WAL_REC_HEADER + plen, 0, sz - WAL_REC_HEADER - plen);
    return sz;
}

static size_t rec_len(const ProtobufCMessage *m)
{
    return wal_rec_size(m ? protobuf_c_message_get_packed_size(m) : 0);
}

/* Fill the crc fields of the framed records in buf, continuing the chain
 * from crc; returns the chain value after the last record. */
static uint32_t rec_chain(unsigned char *buf, size_t len, uint32_t crc)
{
    size_t off = 0;
    while (off < len) {
        uint32_t plen = get32(buf + off);
        uint32_t type = get32(buf + off + 4);
        size_t sz = wal_rec_size(plen);
        if (type == WAL_REC_CRC) {
            put32(buf + off + 12, crc);
        } else {
            uint32_t c = wal_crc32c(crc, buf + off, 12);
            crc =
                wal_crc32c(c, buf + off + WAL_REC_HEADER, sz - WAL_REC_HEADER);
            put32(buf + off + 12, crc);
        }
        off += sz;
    }
    return crc;
}

static void msg_hs(Etcfs__Wal__HardState *m, const struct wal_hard_state *hs)
{
    etcfs__wal__hard_state__init(m);
    m->has_term = m->has_vote = m->has_commit = 1;
    m->term = hs->term;
    m->vote = hs->vote;
    m->commit = hs->commit;
}

static void msg_snap(Etcfs__Wal__SnapshotMarker *m,
                     const struct wal_snapshot *s)
{
    etcfs__wal__snapshot_marker__init(m);
    m->has_term = m->has_index = 1;
    m->term = s->term;
    m->index = s->index;
}

static void msg_entry(Etcfs__Wal__Entry *m, const struct wal_entry *e)
{
    etcfs__wal__entry__init(m);
    m->has_term = m->has_index = m->has_type = m->has_data = 1;
    m->term = e->term;
    m->index = e->index;
    m->type = e->type;
    m->data.len = e->len;
    m->data.data = (uint8_t *)e->data; /* packing only reads it */
}

/* The records every segment starts with; *out is malloc'ed. */
static int seg_header(const struct wal *w, unsigned char **out, size_t *len)
{
    Etcfs__Wal__Metadata md = ETCFS__WAL__METADATA__INIT;
    Etcfs__Wal__HardState hs;
    Etcfs__Wal__SnapshotMarker sm;
    size_t n = WAL_REC_HEADER, off = 0;
    unsigned char *p;

    md.has_node_id = md.has_cluster_id = 1;
    md.node_id = w->md.node_id;
    md.cluster_id = w->md.cluster_id;
    msg_hs(&hs, &w->hs);
    msg_snap(&sm, &w->snap);
    n += rec_len(&md.base);
    if (w->has_hs)
        n += rec_len(&hs.base);
    if (w->has_snap)
        n += rec_len(&sm.base);
    p = malloc(n);
    if (!p)
        return -ENOMEM;
    off += rec_put(p + off, WAL_REC_CRC, NULL);
    off += rec_put(p + off, WAL_REC_METADATA, &md.base);
    if (w->has_hs)
        off += rec_put(p + off, WAL_REC_HARD_STATE, &hs.base);
    if (w->has_snap)
        off += rec_put(p + off, WAL_REC_SNAPSHOT, &sm.base);
    *out = p;
    *len = off;
    return 0;
}

/* Encode a request's records into req->buf_ (loop thread). */
static int req_encode(struct wal_append_req *req,
                      const struct wal_hard_state *hs,
                      const struct wal_entry *ents, size_t n,
                      const struct wal_snapshot *snap)
{
    Etcfs__Wal__HardState mhs;
    Etcfs__Wal__SnapshotMarker msn;
    Etcfs__Wal__Entry me;
    size_t total = 0, off = 0;
    unsigned char *p;

    for (size_t i = 0; i < n; i++) {
        if (ents[i].len >= WAL_REC_MAX_PAYLOAD - 64 ||
            (ents[i].len && !ents[i].data) || ents[i].index == 0)
            return -EINVAL;
        msg_entry(&me, &ents[i]);
        total += rec_len(&me.base);
    }
    if (hs) {
        msg_hs(&mhs, hs);
        total += rec_len(&mhs.base);
    }
    if (snap) {
        msg_snap(&msn, snap);
        total += rec_len(&msn.base);
    }
    p = malloc(total ? total : 1);
    if (!p)
        return -ENOMEM;
    /* Entries before the hard state, as etcd's Save does: a commit in hs
     * never points past entries that precede it on disk. */
    for (size_t i = 0; i < n; i++) {
        msg_entry(&me, &ents[i]);
        off += rec_put(p + off, WAL_REC_ENTRY, &me.base);
    }
    if (hs)
        off += rec_put(p + off, WAL_REC_HARD_STATE, &mhs.base);
    if (snap)
        off += rec_put(p + off, WAL_REC_SNAPSHOT, &msn.base);
    req->buf_ = p;
    req->len_ = off;
    req->flags_ = 0;
    if (n) {
        req->flags_ |= REQ_HAS_ENTS;
        req->last_index_ = ents[n - 1].index;
    }
    if (hs) {
        req->flags_ |= REQ_HAS_HS;
        req->hs_ = *hs;
    }
    if (snap) {
        req->flags_ |= REQ_HAS_SNAP;
        req->snap_ = *snap;
    }
    return 0;
}

/* ---- reader (pure) ------------------------------------------------------ */

void wal_reader_init(struct wal_reader *r, const struct wal_snapshot *start,
                     uint64_t first_index)
{
    memset(r, 0, sizeof(*r));
    if (start)
        r->start = *start;
    r->last_index = first_index ? first_index - 1 : 0;
}

void wal_reader_free(struct wal_reader *r)
{
    wal_read_result_free(&r->res);
    r->cap = 0;
}

void wal_read_result_free(struct wal_read_result *r)
{
    for (size_t i = 0; i < r->n_entries; i++)
        free((void *)r->entries[i].data);
    free(r->entries);
    memset(r, 0, sizeof(*r));
}

static int reader_corrupt(struct wal_reader *r, const char *path, uint64_t off,
                          const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int reader_corrupt(struct wal_reader *r, const char *path, uint64_t off,
                          const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(r->err, sizeof(r->err), "%s: offset %" PRIu64 ": %s", path, off,
             what);
    return WAL_ECORRUPT;
}

static int reader_entry(struct wal_reader *r, Etcfs__Wal__Entry *m,
                        const char *path, uint64_t off)
{
    struct wal_entry *e;
    size_t pos;
    if (m->index == 0)
        return reader_corrupt(r, path, off, "entry with index 0");
    r->last_index = m->index;
    if (m->index <= r->start.index)
        return 0;
    pos = (size_t)(m->index - r->start.index - 1);
    if (m->index - r->start.index - 1 > r->res.n_entries)
        return reader_corrupt(r, path, off,
                              "index gap: entry %" PRIu64 " follows %" PRIu64,
                              m->index, r->start.index + r->res.n_entries);
    /* A rewrite at pos supersedes pos and everything after it. */
    for (size_t i = pos; i < r->res.n_entries; i++)
        free((void *)r->res.entries[i].data);
    r->res.n_entries = pos;
    if (pos == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 64;
        void *p = realloc(r->res.entries, ncap * sizeof(*r->res.entries));
        if (!p)
            return -ENOMEM;
        r->res.entries = p;
        r->cap = ncap;
    }
    e = &r->res.entries[pos];
    e->term = m->term;
    e->index = m->index;
    e->type = m->type;
    /* Steal the unpacked bytes instead of copying a possibly big entry. */
    e->data = m->data.data;
    e->len = m->data.len;
    m->data.data = NULL;
    m->data.len = 0;
    m->has_data = 0;
    r->res.n_entries = pos + 1;
    return 0;
}

static int reader_record(struct wal_reader *r, uint32_t type,
                         const unsigned char *p, size_t len, const char *path,
                         uint64_t off)
{
    int rv = 0;
    switch (type) {
    case WAL_REC_METADATA: {
        Etcfs__Wal__Metadata *m = etcfs__wal__metadata__unpack(NULL, len, p);
        if (!m)
            return reader_corrupt(r, path, off, "undecodable metadata");
        if (r->have_md && (r->res.metadata.node_id != m->node_id ||
                           r->res.metadata.cluster_id != m->cluster_id))
            rv = reader_corrupt(r, path, off, "metadata differs");
        r->res.metadata.node_id = m->node_id;
        r->res.metadata.cluster_id = m->cluster_id;
        r->have_md = 1;
        etcfs__wal__metadata__free_unpacked(m, NULL);
        return rv;
    }
    case WAL_REC_ENTRY: {
        Etcfs__Wal__Entry *m = etcfs__wal__entry__unpack(NULL, len, p);
        if (!m)
            return reader_corrupt(r, path, off, "undecodable entry");
        rv = reader_entry(r, m, path, off);
        etcfs__wal__entry__free_unpacked(m, NULL);
        return rv;
    }
    case WAL_REC_HARD_STATE: {
        Etcfs__Wal__HardState *m = etcfs__wal__hard_state__unpack(NULL, len, p);
        if (!m)
            return reader_corrupt(r, path, off, "undecodable hard state");
        r->res.hard_state.term = m->term;
        r->res.hard_state.vote = m->vote;
        r->res.hard_state.commit = m->commit;
        r->have_hs = 1;
        etcfs__wal__hard_state__free_unpacked(m, NULL);
        return 0;
    }
    case WAL_REC_SNAPSHOT: {
        Etcfs__Wal__SnapshotMarker *m =
            etcfs__wal__snapshot_marker__unpack(NULL, len, p);
        if (!m)
            return reader_corrupt(r, path, off, "undecodable snapshot marker");
        r->res.last_snapshot.term = m->term;
        r->res.last_snapshot.index = m->index;
        etcfs__wal__snapshot_marker__free_unpacked(m, NULL);
        return 0;
    }
    default:
        return reader_corrupt(r, path, off, "crc record inside a segment");
    }
}

/* Does the record at off verify, chaining from crc? Sets *next_crc and
 * *size on success, returns a reason on failure. */
static const char *rec_check(const unsigned char *buf, size_t len, size_t off,
                             uint32_t crc, uint32_t *next_crc, size_t *size)
{
    uint32_t plen, type, c;
    size_t sz;
    if (len - off < WAL_REC_HEADER)
        return "truncated record header";
    plen = get32(buf + off);
    type = get32(buf + off + 4);
    if (type < WAL_REC_METADATA || type > WAL_REC_CRC)
        return "bad record type";
    if (get32(buf + off + 8) != 0)
        return "bad record header";
    if (plen >= WAL_REC_MAX_PAYLOAD)
        return "bad record length";
    sz = wal_rec_size(plen);
    if (sz > len - off)
        return "record runs past end of file";
    if (type == WAL_REC_CRC)
        return plen ? "bad crc record" : "crc record inside a segment";
    c = wal_crc32c(crc, buf + off, 12);
    c = wal_crc32c(c, buf + off + WAL_REC_HEADER, sz - WAL_REC_HEADER);
    if (c != get32(buf + off + 12))
        return "crc mismatch";
    *next_crc = c;
    *size = sz;
    return NULL;
}

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* After a bad record at off (the chain before it being crc): does any later
 * record verify when chained from the bad record's stored crc or from the
 * crc recomputed over it? If so, the damage is not a torn tail. */
static int find_resync(const unsigned char *buf, size_t len, size_t off,
                       uint32_t crc)
{
    uint32_t seeds[2];
    int n = 0;
    if (len - off < WAL_REC_HEADER)
        return 0;
    seeds[n++] = get32(buf + off + 12);
    {
        uint32_t plen = get32(buf + off);
        if (plen < WAL_REC_MAX_PAYLOAD && wal_rec_size(plen) <= len - off) {
            uint32_t c = wal_crc32c(crc, buf + off, 12);
            seeds[n++] = wal_crc32c(c, buf + off + WAL_REC_HEADER,
                                    wal_rec_size(plen) - WAL_REC_HEADER);
        }
    }
    for (size_t p = off + WAL_REC_HEADER; p + WAL_REC_HEADER <= len; p += 8) {
        uint32_t type = get32(buf + p + 4);
        uint32_t plen = get32(buf + p);
        if (type < WAL_REC_METADATA || type >= WAL_REC_CRC ||
            get32(buf + p + 8) != 0 || plen >= WAL_REC_MAX_PAYLOAD ||
            wal_rec_size(plen) > len - p)
            continue;
        for (int i = 0; i < n; i++) {
            uint32_t next;
            size_t sz;
            if (!rec_check(buf, len, p, seeds[i], &next, &sz))
                return 1;
        }
    }
    return 0;
}

int wal_reader_feed(struct wal_reader *r, const unsigned char *buf, size_t len,
                    const char *path, int is_last, struct wal_scan *scan)
{
    size_t off = 0;
    uint32_t crc;
    const char *why = NULL;
    int rv;

    memset(scan, 0, sizeof(*scan));
    /* The segment's leading CRC record carries the chain value. */
    if (len < WAL_REC_HEADER || get32(buf) != 0 ||
        get32(buf + 4) != WAL_REC_CRC || get32(buf + 8) != 0)
        return reader_corrupt(r, path, 0,
                              "segment does not start with a "
                              "crc record");
    crc = get32(buf + 12);
    if (r->have_seg && crc != r->crc)
        return reader_corrupt(r, path, 0,
                              "crc chain broken: segment continues from "
                              "%08x, previous segment ended with %08x",
                              crc, r->crc);
    off = WAL_REC_HEADER;
    while (off < len) {
        uint32_t next;
        size_t sz;
        why = rec_check(buf, len, off, crc, &next, &sz);
        if (why)
            break;
        rv = reader_record(r, get32(buf + off + 4), buf + off + WAL_REC_HEADER,
                           get32(buf + off), path, off);
        if (rv)
            return rv;
        crc = next;
        off += sz;
    }
    r->crc = crc;
    r->have_seg = 1;
    scan->good_end = off;
    scan->bad_off = off;
    scan->why = why;
    scan->clean = all_zero(buf + off, len - off);
    if (!scan->clean && is_last)
        scan->resync = find_resync(buf, len, off, crc);
    if (!is_last) {
        if (off < len)
            return reader_corrupt(r, path, off, "%s%s", why,
                                  scan->clean ? " (zero fill in a "
                                                "segment that is not the "
                                                "last)"
                                              : "");
        return 0;
    }
    if (!scan->clean && scan->resync)
        return reader_corrupt(r, path, off, "%s, and valid records follow",
                              why);
    return 0;
}

/* ---- segment list ------------------------------------------------------- */

static int parse_hex16(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

static int seg_parse_name(const char *name, struct wal_seg *s)
{
    if (strlen(name) != SEG_NAME_LEN || name[16] != '-' ||
        strcmp(name + 33, ".wal") != 0)
        return -1;
    if (parse_hex16(name, &s->seq) || parse_hex16(name + 17, &s->first))
        return -1;
    return 0;
}

static int seg_cmp(const void *a, const void *b)
{
    const struct wal_seg *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int seg_push(struct wal *w, uint64_t seq, uint64_t first)
{
    if (w->n_segs == w->cap_segs) {
        size_t ncap = w->cap_segs ? w->cap_segs * 2 : 16;
        void *p = realloc(w->segs, ncap * sizeof(*w->segs));
        if (!p)
            return -ENOMEM;
        w->segs = p;
        w->cap_segs = ncap;
    }
    w->segs[w->n_segs].seq = seq;
    w->segs[w->n_segs].first = first;
    w->n_segs++;
    return 0;
}

static int seg_list(struct wal *w)
{
    DIR *d = opendir(w->dir);
    struct dirent *de;
    int rv = 0;
    if (!d)
        return -errno;
    w->n_segs = 0;
    while ((de = readdir(d)) != NULL) {
        struct wal_seg s;
        if (seg_parse_name(de->d_name, &s))
            continue;
        rv = seg_push(w, s.seq, s.first);
        if (rv)
            break;
    }
    closedir(d);
    if (rv)
        return rv;
    if (w->n_segs)
        qsort(w->segs, w->n_segs, sizeof(*w->segs), seg_cmp);
    return 0;
}

int wal_exists(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int found = 0;
    if (!d)
        return 0;
    while (!found && (de = readdir(d)) != NULL) {
        struct wal_seg s;
        found = seg_parse_name(de->d_name, &s) == 0;
    }
    closedir(d);
    return found;
}

/* ---- handle setup ------------------------------------------------------- */

static struct wal *wal_alloc(const char *dir, const struct wal_options *opts)
{
    struct wal *w = calloc(1, sizeof(*w));
    uint64_t sz;
    if (!w)
        return NULL;
    w->dir = strdup(dir);
    if (!w->dir) {
        free(w);
        return NULL;
    }
    hooks_fill(&w->h, opts ? opts->hooks : NULL);
    sz = opts && opts->segment_size ? opts->segment_size : WAL_SEGMENT_SIZE;
    sz = (sz + 7) & ~(uint64_t)7;
    if (sz < 4096)
        sz = 4096;
    w->seg_size = sz;
    w->loop = opts ? opts->loop : NULL;
    w->log = opts ? opts->log : NULL;
    w->log_data = opts ? opts->log_data : NULL;
    w->lock_fd = -1;
    w->fd = -1;
    w->evfd = -1;
    w->spin_ns = WRITER_SPIN_NS;
    w->prep_fd = -1;
    pthread_mutex_init(&w->io_mtx, NULL);
    pthread_mutex_init(&w->mtx, NULL);
    pthread_cond_init(&w->cond, NULL);
    pthread_cond_init(&w->prep_cond, NULL);
    return w;
}

static void wal_free(struct wal *w)
{
    if (w->fd >= 0)
        w->h.close(w->h.ctx, w->fd);
    if (w->lock_fd >= 0)
        w->h.close(w->h.ctx, w->lock_fd); /* releases the flock */
    pthread_mutex_destroy(&w->io_mtx);
    pthread_mutex_destroy(&w->mtx);
    pthread_cond_destroy(&w->cond);
    pthread_cond_destroy(&w->prep_cond);
    free(w->segs);
    free(w->wbuf);
    free(w->dir);
    free(w);
}

/* Lock the directory (flock on its fd, so a second handle in this or any
 * process is kept out) and list its segments. */
static int wal_lock_and_list(struct wal *w)
{
    char *tmp;
    int fd = w->h.open(w->h.ctx, w->dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return wal_fail(w, fd, "%s: cannot open: %s", w->dir, strerror(-fd));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        w->h.close(w->h.ctx, fd);
        if (e == EWOULDBLOCK)
            return wal_fail(w, WAL_ELOCKED, "%s: locked by another process",
                            w->dir);
        return wal_fail(w, -e, "%s: flock: %s", w->dir, strerror(e));
    }
    w->lock_fd = fd;
    /* A segment being preallocated when we last stopped is useless now. */
    tmp = path_join(w->dir, TMP_NAME);
    if (!tmp)
        return -ENOMEM;
    w->h.unlink(w->h.ctx, tmp);
    free(tmp);
    return seg_list(w);
}

int wal_open(struct wal **out, const char *dir, const struct wal_options *opts)
{
    struct wal *w = wal_alloc(dir, opts);
    int rv;
    *out = NULL;
    if (!w)
        return -ENOMEM;
    rv = wal_lock_and_list(w);
    if (rv)
        goto err_after_alloc;
    if (w->n_segs == 0) {
        rv = wal_fail(w, -ENOENT, "%s: no WAL segment", dir);
        goto err_after_alloc;
    }
    w->mode = MODE_READ;
    *out = w;
    return 0;

err_after_alloc:
    wal_free(w);
    return rv;
}

/* Read the whole file at path into a malloc'ed buffer. */
static int read_file(struct wal *w, const char *path, unsigned char **out,
                     size_t *len)
{
    struct stat st;
    unsigned char *buf;
    size_t got = 0;
    int rv = 0;
    int fd = w->h.open(w->h.ctx, path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    if (fstat(fd, &st) < 0) {
        rv = -errno;
        goto out_close;
    }
    buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!buf) {
        rv = -ENOMEM;
        goto out_close;
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = w->h.pread(w->h.ctx, fd, buf + got,
                               (size_t)st.st_size - got, (off_t)got);
        if (r < 0) {
            rv = (int)r;
            free(buf);
            goto out_close;
        }
        if (r == 0)
            break; /* shrank under us: read what is there */
        got += (size_t)r;
    }
    *out = buf;
    *len = got;
out_close:
    w->h.close(w->h.ctx, fd);
    return rv;
}

/* Cut a torn tail at good: keep the cut bytes (up to the last non-zero one)
 * in <path>.broken, truncate, fsync, warn. */
static int seg_repair(struct wal *w, const char *path, const unsigned char *buf,
                      size_t len, size_t good, const char *why)
{
    size_t keep = len;
    char *bpath = NULL;
    int fd, rv;
    while (keep > good && buf[keep - 1] == 0)
        keep--;
    if (keep > good) {
        struct stat st;
        size_t n = strlen(path);
        bpath = malloc(n + 8);
        if (!bpath)
            return -ENOMEM;
        memcpy(bpath, path, n);
        memcpy(bpath + n, ".broken", 8);
        fd = w->h.open(w->h.ctx, bpath, O_WRONLY | O_CREAT, 0644);
        if (fd < 0) {
            rv = fd;
            goto out;
        }
        rv = fstat(fd, &st) < 0 ? -errno : 0;
        if (!rv)
            rv =
                write_all(w, fd, buf + good, keep - good, (uint64_t)st.st_size);
        if (!rv)
            rv = w->h.fsync(w->h.ctx, fd);
        w->h.close(w->h.ctx, fd);
        if (rv)
            goto out;
    }
    fd = w->h.open(w->h.ctx, path, O_RDWR, 0);
    if (fd < 0) {
        rv = fd;
        goto out;
    }
    rv = w->h.ftruncate(w->h.ctx, fd, (off_t)good);
    if (!rv)
        rv = w->h.fsync(w->h.ctx, fd);
    w->h.close(w->h.ctx, fd);
    if (!rv && bpath)
        rv = dir_fsync(w, w->dir);
    if (!rv)
        wal_logf(w, WAL_LOG_WARN,
                 "%s: offset %zu: %s: torn tail repaired, %zu bytes cut%s%s",
                 path, good, why, len - good, bpath ? ", kept in " : "",
                 bpath ? bpath : "");
out:
    free(bpath);
    return rv;
}

int wal_read_all(struct wal *w, const struct wal_snapshot *snap,
                 struct wal_read_result *out)
{
    struct wal_snapshot start = {0, 0};
    struct wal_reader r;
    size_t k = 0;
    int rv = 0;

    memset(out, 0, sizeof(*out));
    w->err[0] = 0;
    if (w->mode != MODE_READ)
        return wal_fail(w, -EINVAL, "wal_read_all: not in read mode");
    if (snap)
        start = *snap;
    for (size_t i = 1; i < w->n_segs; i++) {
        if (w->segs[i].seq != w->segs[i - 1].seq + 1) {
            char a[SEG_NAME_LEN + 1], b[SEG_NAME_LEN + 1];
            seg_name(a, w->segs[i - 1].seq, w->segs[i - 1].first);
            seg_name(b, w->segs[i].seq, w->segs[i].first);
            return wal_fail(w, WAL_ECORRUPT,
                            "%s/%s: offset 0: missing segment between %s "
                            "and this one",
                            w->dir, b, a);
        }
    }
    /* Start at the newest segment that can hold entry start.index + 1. */
    for (size_t i = 0; i < w->n_segs; i++)
        if (w->segs[i].first <= start.index + 1)
            k = i;
    if (w->segs[k].first > start.index + 1) {
        char a[SEG_NAME_LEN + 1];
        seg_name(a, w->segs[k].seq, w->segs[k].first);
        return wal_fail(w, WAL_ECORRUPT,
                        "%s/%s: offset 0: entries after snapshot index %" PRIu64
                        " are missing (oldest segment starts at %" PRIu64 ")",
                        w->dir, a, start.index, w->segs[k].first);
    }
    wal_reader_init(&r, &start, w->segs[k].first);
    for (size_t i = k; i < w->n_segs; i++) {
        int last = i + 1 == w->n_segs;
        unsigned char *buf = NULL;
        size_t len = 0;
        struct wal_scan scan;
        char *path = seg_path(w, &w->segs[i]);
        if (!path) {
            rv = -ENOMEM;
            goto err_after_reader;
        }
        if (i > k && w->segs[i].first != r.last_index + 1) {
            rv = wal_fail(w, WAL_ECORRUPT,
                          "%s: offset 0: segment starts at index %" PRIu64
                          " but the previous one ended at index %" PRIu64,
                          path, w->segs[i].first, r.last_index);
            free(path);
            goto err_after_reader;
        }
        rv = read_file(w, path, &buf, &len);
        if (rv) {
            wal_fail(w, rv, "%s: cannot read: %s", path, strerror(-rv));
            free(path);
            goto err_after_reader;
        }
        rv = wal_reader_feed(&r, buf, len, path, last, &scan);
        if (rv == WAL_ECORRUPT)
            wal_fail(w, rv, "%s", r.err);
        if (!rv && last) {
            w->tail_file_len = len;
            w->off = scan.good_end;
            if (!scan.clean) {
                rv = seg_repair(w, path, buf, len, scan.good_end, scan.why);
                if (rv)
                    wal_fail(w, rv, "%s: repair failed: %s", path,
                             strerror(-rv));
                w->tail_file_len = scan.good_end;
            }
        }
        free(buf);
        free(path);
        if (rv)
            goto err_after_reader;
    }
    if (!r.have_md) {
        rv = wal_fail(w, WAL_ECORRUPT, "%s: offset 0: no metadata record",
                      w->dir);
        goto err_after_reader;
    }
    w->crc = r.crc;
    w->last_index = r.last_index;
    w->md = r.res.metadata;
    w->has_hs = r.have_hs;
    w->hs = r.res.hard_state;
    w->sub_has_hs = r.have_hs;
    w->sub_hs = r.res.hard_state;
    w->has_snap = r.res.last_snapshot.index || r.res.last_snapshot.term;
    w->snap = r.res.last_snapshot;
    *out = r.res;
    memset(&r.res, 0, sizeof(r.res));
    w->mode = MODE_READ_DONE;
    return 0;

err_after_reader:
    wal_reader_free(&r);
    return rv;
}

/* ---- writing -------------------------------------------------------------*/

/* Create TMP_NAME zero-filled to the segment size and durable. */
static int seg_prepare(struct wal *w, int *fdp)
{
    char *tmp = path_join(w->dir, TMP_NAME);
    int fd, rv;
    if (!tmp)
        return -ENOMEM;
    fd = w->h.open(w->h.ctx, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    free(tmp);
    if (fd < 0)
        return fd;
    rv = zero_fill(w, fd, 0, w->seg_size);
    if (!rv)
        rv = w->h.fsync(w->h.ctx, fd);
    if (rv) {
        w->h.close(w->h.ctx, fd);
        return rv;
    }
    *fdp = fd;
    return 0;
}

static void *prep_main(void *arg)
{
    struct wal *w = arg;
    pthread_mutex_lock(&w->mtx);
    for (;;) {
        int fd = -1, rv;
        while (w->prep_state != PREP_WANT && !w->stopping)
            pthread_cond_wait(&w->prep_cond, &w->mtx);
        if (w->stopping)
            break;
        pthread_mutex_unlock(&w->mtx);
        rv = seg_prepare(w, &fd);
        pthread_mutex_lock(&w->mtx);
        if (rv) {
            w->prep_state = PREP_FAILED;
            w->prep_err = rv;
        } else {
            w->prep_state = PREP_READY;
            w->prep_fd = fd;
        }
        pthread_cond_broadcast(&w->prep_cond);
    }
    pthread_mutex_unlock(&w->mtx);
    return NULL;
}

/* Take the prepared next segment (waiting for the preallocator), or make
 * one now when there are no threads. */
static int prep_take(struct wal *w, int *fdp)
{
    int rv = 0;
    if (!w->threads)
        return seg_prepare(w, fdp);
    pthread_mutex_lock(&w->mtx);
    /* On close the preallocator may stop without preparing: give up then
     * rather than wait for it (the batch is reported WAL_ECANCELED). */
    while (w->prep_state == PREP_WANT && !w->stopping)
        pthread_cond_wait(&w->prep_cond, &w->mtx);
    if (w->prep_state == PREP_READY) {
        *fdp = w->prep_fd;
        w->prep_fd = -1;
    } else if (w->prep_state == PREP_WANT) {
        rv = WAL_ECANCELED;
    } else {
        rv = w->prep_err ? w->prep_err : -EIO;
    }
    /* Not WANT yet: TMP_NAME must be renamed away before it is reused. */
    w->prep_state = PREP_IDLE;
    pthread_mutex_unlock(&w->mtx);
    return rv;
}

static void prep_kick(struct wal *w)
{
    if (!w->threads)
        return;
    pthread_mutex_lock(&w->mtx);
    w->prep_state = PREP_WANT;
    pthread_cond_broadcast(&w->prep_cond);
    pthread_mutex_unlock(&w->mtx);
}

/* Cut: finish the current segment and continue in a new one named
 * (seq + 1, last index + 1). Order matters for crash safety: the new file
 * gets its header and is made durable under its temporary name; the old
 * one is truncated to its last record and fsynced; only then does the
 * rename publish the new segment, and the directory fsync makes it stick.
 * A crash at any point leaves either the old segment last (valid, whole)
 * or the new one last with a complete header. io_mtx held. */
static int seg_cut(struct wal *w)
{
    struct wal_seg next;
    unsigned char *hdr = NULL;
    size_t hlen = 0;
    uint32_t crc;
    char *tmp = NULL, *path = NULL;
    int nfd = -1, rv;

    next.seq = w->segs[w->n_segs - 1].seq + 1;
    next.first = w->last_index + 1;
    rv = prep_take(w, &nfd);
    if (rv)
        return rv;
    rv = seg_header(w, &hdr, &hlen);
    if (rv)
        goto err_after_take;
    crc = rec_chain(hdr, hlen, w->crc);
    rv = write_all(w, nfd, hdr, hlen, 0);
    if (!rv)
        rv = w->h.fdatasync(w->h.ctx, nfd);
    if (rv)
        goto err_after_take;
    rv = w->h.ftruncate(w->h.ctx, w->fd, (off_t)w->off);
    if (!rv)
        rv = w->h.fsync(w->h.ctx, w->fd);
    if (rv)
        goto err_after_take;
    tmp = path_join(w->dir, TMP_NAME);
    path = seg_path(w, &next);
    if (!tmp || !path) {
        rv = -ENOMEM;
        goto err_after_take;
    }
    rv = w->h.rename(w->h.ctx, tmp, path);
    if (rv)
        goto err_after_take;
    rv = dir_fsync(w, w->dir);
    if (rv)
        goto err_after_take;
    rv = seg_push(w, next.seq, next.first);
    if (rv)
        goto err_after_take;
    w->h.close(w->h.ctx, w->fd);
    w->fd = nfd;
    w->off = hlen;
    w->crc = crc;
    free(hdr);
    free(tmp);
    free(path);
    prep_kick(w);
    return 0;

err_after_take:
    if (nfd >= 0)
        w->h.close(w->h.ctx, nfd);
    free(hdr);
    free(tmp);
    free(path);
    return rv;
}

static int sticky_get(struct wal *w)
{
    return __atomic_load_n(&w->sticky, __ATOMIC_ACQUIRE);
}

static void sticky_set(struct wal *w, int rv)
{
    int zero = 0;
    __atomic_compare_exchange_n(&w->sticky, &zero, rv, 0, __ATOMIC_ACQ_REL,
                                __ATOMIC_ACQUIRE);
}

/* Write a batch of requests (linked through next_) with at most one
 * fdatasync. io_mtx held. Any failure is sticky: a failed fsync may have
 * dropped dirty pages, so nothing after it can be trusted to be durable. */
static int write_batch(struct wal *w, struct wal_append_req *batch)
{
    size_t total = 0, off = 0;
    int sync = 0, rv;
    uint32_t crc;
    struct wal_append_req *r;

    rv = sticky_get(w);
    if (rv)
        return rv;
    if (w->off >= w->seg_size) {
        rv = seg_cut(w);
        if (rv) {
            if (rv != WAL_ECANCELED)
                wal_logf(w, WAL_LOG_ERROR, "%s: segment cut failed: %s", w->dir,
                         strerror(-rv));
            goto err;
        }
    }
    for (r = batch; r; r = r->next_) {
        total += r->len_;
        sync |= r->flags_ & REQ_SYNC;
    }
    if (total > w->wcap) {
        size_t ncap = w->wcap ? w->wcap : 4096;
        void *p;
        while (ncap < total)
            ncap *= 2;
        p = realloc(w->wbuf, ncap);
        if (!p)
            return -ENOMEM; /* nothing written: not sticky */
        w->wbuf = p;
        w->wcap = ncap;
    }
    for (r = batch; r; r = r->next_) {
        if (r->len_)
            memcpy(w->wbuf + off, r->buf_, r->len_);
        off += r->len_;
    }
    crc = rec_chain(w->wbuf, total, w->crc);
    if (total) {
        rv = write_all(w, w->fd, w->wbuf, total, w->off);
        if (rv) {
            wal_logf(w, WAL_LOG_ERROR, "%s: write failed: %s", w->dir,
                     strerror(-rv));
            goto err;
        }
    }
    if (sync) {
        rv = w->h.fdatasync(w->h.ctx, w->fd);
        if (rv) {
            wal_logf(w, WAL_LOG_ERROR, "%s: fdatasync failed: %s", w->dir,
                     strerror(-rv));
            goto err;
        }
    }
    w->off += total;
    w->crc = crc;
    for (r = batch; r; r = r->next_) {
        if (r->flags_ & REQ_HAS_ENTS)
            w->last_index = r->last_index_;
        if (r->flags_ & REQ_HAS_HS) {
            w->has_hs = 1;
            w->hs = r->hs_;
        }
        if (r->flags_ & REQ_HAS_SNAP) {
            w->has_snap = 1;
            w->snap = r->snap_;
        }
    }
    return 0;
err:
    sticky_set(w, rv);
    return rv;
}

static void queue_append(struct wal_append_req **head,
                         struct wal_append_req **tail,
                         struct wal_append_req *list)
{
    if (!list)
        return;
    if (*tail)
        (*tail)->next_ = list;
    else
        *head = list;
    while (list->next_)
        list = list->next_;
    *tail = list;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Makes the loop's notify handle run deliver_done. */
static void notify_loop(struct wal *w)
{
    uint64_t one = 1;
    /* Cannot fail but for EINTR: the loop drains the counter. */
    while (write(w->evfd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

/* Polls for a request until spin_ns after `from`: 1 if one came. */
static int spin_for_work(struct wal *w, uint64_t from)
{
    uint64_t end = from + w->spin_ns;
    while (!__atomic_load_n(&w->q_count, __ATOMIC_ACQUIRE) &&
           !__atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE)) {
        if (mono_ns() >= end)
            return 0;
        sched_yield();
    }
    return 1;
}

static void *writer_main(void *arg)
{
    struct wal *w = arg;
    int spin = w->spin_ns > 0;
    pthread_mutex_lock(&w->mtx);
    for (;;) {
        struct wal_append_req *batch, *r;
        int rv;
        if (!w->q_head && !w->stopping) {
            /* A lone appender resubmits as soon as its callback runs; poll
             * briefly for that instead of paying a sleep and a wakeup per
             * fsync (WRITER_SPIN_NS). Poll only while the last idle gap
             * was that short: a cluster member's next write waits for a
             * round trip to its peers, and polling would take the CPU
             * from the peers on a small machine (30% more CPU per write
             * on a 3-member loopback cluster). */
            uint64_t idle_from = mono_ns();
            pthread_mutex_unlock(&w->mtx);
            if (spin)
                spin = spin_for_work(w, idle_from);
            pthread_mutex_lock(&w->mtx);
            if (!w->q_head && !w->stopping) {
                while (!w->q_head && !w->stopping)
                    pthread_cond_wait(&w->cond, &w->mtx);
                spin = w->spin_ns > 0 && mono_ns() - idle_from < w->spin_ns;
            }
        }
        if (w->stopping)
            break;
        batch = w->q_head;
        w->q_head = w->q_tail = NULL;
        __atomic_store_n(&w->q_count, 0, __ATOMIC_RELEASE);
        w->writer_busy = 1;
        pthread_mutex_unlock(&w->mtx);

        pthread_mutex_lock(&w->io_mtx);
        rv = write_batch(w, batch);
        pthread_mutex_unlock(&w->io_mtx);

        for (r = batch; r; r = r->next_)
            r->status_ = rv;
        pthread_mutex_lock(&w->mtx);
        queue_append(&w->d_head, &w->d_tail, batch);
        w->writer_busy = 0;
        pthread_mutex_unlock(&w->mtx);
        notify_loop(w);
        pthread_mutex_lock(&w->mtx);
    }
    pthread_mutex_unlock(&w->mtx);
    return NULL;
}

/* Run the callbacks of finished requests (loop thread). */
static void deliver_done(struct wal *w)
{
    struct wal_append_req *r;
    w->inline_done = 0;
    pthread_mutex_lock(&w->mtx);
    r = w->d_head;
    w->d_head = w->d_tail = NULL;
    pthread_mutex_unlock(&w->mtx);
    while (r) {
        struct wal_append_req *next = r->next_;
        free(r->buf_);
        r->buf_ = NULL;
        r->next_ = NULL;
        r->cb_(r, r->status_); /* may free or reuse r */
        r = next;
    }
}

static void on_notify(uv_poll_t *h, int status, int events)
{
    struct wal *w = h->data;
    uint64_t cnt;
    (void)status;
    (void)events;
    /* Drain the counter first: a batch finished after this read signals
     * again, one finished before is in d_head already. */
    while (read(w->evfd, &cnt, sizeof(cnt)) < 0 && errno == EINTR)
        ;
    deliver_done(w);
}

static int threads_start(struct wal *w)
{
    int rv;
    if (!w->loop)
        return 0;
    w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->evfd < 0)
        return -errno;
    w->prep_state = PREP_WANT;
    rv = -pthread_create(&w->writer, NULL, writer_main, w);
    if (rv)
        goto err_evfd;
    rv = -pthread_create(&w->prep, NULL, prep_main, w);
    if (rv)
        goto err_after_writer;
    /* The writer only signals after a request was queued, which cannot
     * happen before this returns, so initialising the handle last is safe. */
    rv = uv_poll_init(w->loop, &w->notify, w->evfd);
    if (rv)
        goto err_after_prep;
    w->notify.data = w;
    w->async_init = 1;
    w->threads = 1;
    /* Fails only for an fd libuv already watches (UV_EEXIST), which a new
     * eventfd is not; wal_close undoes both the threads and the handle. */
    return uv_poll_start(&w->notify, UV_READABLE, on_notify);

err_after_prep:
    pthread_mutex_lock(&w->mtx);
    __atomic_store_n(&w->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&w->prep_cond);
    pthread_mutex_unlock(&w->mtx);
    pthread_join(w->prep, NULL);
err_after_writer:
    pthread_mutex_lock(&w->mtx);
    __atomic_store_n(&w->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mtx);
    pthread_join(w->writer, NULL);
    if (w->prep_fd >= 0) {
        w->h.close(w->h.ctx, w->prep_fd);
        w->prep_fd = -1;
    }
    w->stopping = 0;
    w->prep_state = PREP_IDLE;
err_evfd:
    close(w->evfd);
    w->evfd = -1;
    return rv;
}

static int open_tail_for_append(struct wal *w)
{
    char *path = seg_path(w, &w->segs[w->n_segs - 1]);
    int fd, rv;
    if (!path)
        return -ENOMEM;
    fd = w->h.open(w->h.ctx, path, O_RDWR, 0);
    if (fd < 0) {
        rv = wal_fail(w, fd, "%s: cannot open: %s", path, strerror(-fd));
        free(path);
        return rv;
    }
    /* Zero-fill back to the segment size so that appends overwrite
     * allocated blocks and fdatasync has no file size to flush. */
    rv = zero_fill(w, fd, w->tail_file_len, w->seg_size);
    if (!rv && w->tail_file_len < w->seg_size)
        rv = w->h.fsync(w->h.ctx, fd);
    if (rv) {
        wal_fail(w, rv, "%s: cannot preallocate: %s", path, strerror(-rv));
        w->h.close(w->h.ctx, fd);
        free(path);
        return rv;
    }
    free(path);
    w->fd = fd;
    return 0;
}

int wal_start_append(struct wal *w)
{
    int rv;
    if (w->mode != MODE_READ_DONE)
        return wal_fail(w, -EINVAL, "wal_start_append: wal_read_all first");
    rv = open_tail_for_append(w);
    if (rv)
        return rv;
    rv = threads_start(w);
    if (rv)
        return wal_fail(w, rv, "%s: cannot start threads", w->dir);
    w->mode = MODE_APPEND;
    return 0;
}

/* Remove a leftover "<dir>.tmp" from an interrupted wal_create. */
static void rm_tmp_dir(const char *tmpdir)
{
    DIR *d = opendir(tmpdir);
    struct dirent *de;
    if (!d)
        return;
    while ((de = readdir(d)) != NULL) {
        char *p;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        p = path_join(tmpdir, de->d_name);
        if (p)
            unlink(p);
        free(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

static char *parent_dir(const char *dir)
{
    char *p = strdup(dir);
    char *slash;
    if (!p)
        return NULL;
    slash = strrchr(p, '/');
    if (!slash)
        strcpy(p, ".");
    else if (slash == p)
        p[1] = 0;
    else
        *slash = 0;
    return p;
}

int wal_create(struct wal **out, const char *dir, const struct wal_metadata *md,
               const struct wal_options *opts)
{
    struct wal *w;
    char *tmpdir = NULL, *segp = NULL, *parent = NULL;
    char name[SEG_NAME_LEN + 1];
    unsigned char *hdr = NULL;
    size_t hlen, n = strlen(dir);
    int fd, rv;

    *out = NULL;
    if (wal_exists(dir))
        return -EEXIST;
    w = wal_alloc(dir, opts);
    if (!w)
        return -ENOMEM;
    w->md = *md;
    tmpdir = malloc(n + 5);
    parent = parent_dir(dir);
    if (!tmpdir || !parent) {
        rv = -ENOMEM;
        goto err_after_alloc;
    }
    memcpy(tmpdir, dir, n);
    memcpy(tmpdir + n, ".tmp", 5);
    rm_tmp_dir(tmpdir);
    rv = w->h.mkdir(w->h.ctx, tmpdir, 0755);
    if (rv)
        goto err_after_alloc;
    seg_name(name, 0, 0);
    segp = path_join(tmpdir, name);
    if (!segp) {
        rv = -ENOMEM;
        goto err_after_tmpdir;
    }
    rv = seg_header(w, &hdr, &hlen);
    if (rv)
        goto err_after_tmpdir;
    w->crc = rec_chain(hdr, hlen, 0);
    fd = w->h.open(w->h.ctx, segp, O_RDWR | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
        rv = fd;
        goto err_after_tmpdir;
    }
    rv = zero_fill(w, fd, 0, w->seg_size);
    if (!rv)
        rv = write_all(w, fd, hdr, hlen, 0);
    if (!rv)
        rv = w->h.fsync(w->h.ctx, fd);
    w->h.close(w->h.ctx, fd);
    if (rv)
        goto err_after_tmpdir;
    rv = dir_fsync(w, tmpdir);
    if (!rv)
        rv = w->h.rename(w->h.ctx, tmpdir, dir);
    if (rv)
        goto err_after_tmpdir;
    rv = dir_fsync(w, parent);
    if (rv)
        goto err_after_alloc;
    rv = wal_lock_and_list(w);
    if (rv)
        goto err_after_alloc;
    w->off = hlen;
    w->tail_file_len = w->seg_size;
    rv = open_tail_for_append(w);
    if (rv)
        goto err_after_alloc;
    rv = threads_start(w);
    if (rv)
        goto err_after_alloc;
    w->mode = MODE_APPEND;
    free(hdr);
    free(segp);
    free(tmpdir);
    free(parent);
    *out = w;
    return 0;

err_after_tmpdir:
    rm_tmp_dir(tmpdir);
err_after_alloc:
    free(hdr);
    free(segp);
    free(tmpdir);
    free(parent);
    wal_free(w);
    return rv;
}

/* ---- public append API -------------------------------------------------- */

/* MustSync, as etcd: entries, a marker, a new term or vote, or a barrier
 * must be durable before the callback; a commit-only change need not. */
static int req_prepare(struct wal *w, struct wal_append_req *req,
                       const struct wal_hard_state *hs,
                       const struct wal_entry *ents, size_t n,
                       const struct wal_snapshot *snap, wal_append_cb cb)
{
    int rv;
    if (n && !ents)
        return -EINVAL;
    if (w->mode != MODE_APPEND)
        return wal_fail(w, -EINVAL, "append: not in append mode");
    rv = sticky_get(w);
    if (rv)
        return rv;
    req->next_ = NULL;
    req->wal_ = w;
    req->cb_ = cb;
    req->status_ = 0;
    req->buf_ = NULL;
    req->len_ = 0;
    rv = req_encode(req, hs, ents, n, snap);
    if (rv)
        return rv;
    pthread_mutex_lock(&w->mtx);
    if (n || snap || !hs)
        req->flags_ |= REQ_SYNC;
    if (hs) {
        if (!w->sub_has_hs || hs->term != w->sub_hs.term ||
            hs->vote != w->sub_hs.vote)
            req->flags_ |= REQ_SYNC;
        w->sub_has_hs = 1;
        w->sub_hs = *hs;
    }
    pthread_mutex_unlock(&w->mtx);
    return 0;
}

static int submit(struct wal *w, struct wal_append_req *req,
                  const struct wal_hard_state *hs, const struct wal_entry *ents,
                  size_t n, const struct wal_snapshot *snap, wal_append_cb cb)
{
    int rv;
    if (!w->threads || !cb || !req)
        return -EINVAL;
    rv = req_prepare(w, req, hs, ents, n, snap, cb);
    if (rv)
        return rv;
    pthread_mutex_lock(&w->mtx);
    if (n <= 1 && !snap && !w->q_head && !w->writer_busy && !w->stopping &&
        !w->inline_done) {
        /* A lone write while the writer is idle: write and sync it here.
         * Handing it to the writer and back costs two thread wakeups,
         * about as much CPU as the fsync itself on a small VM; the loop
         * would only wait for the answer anyway. The callback still runs
         * later, from the notify handle. At most one per loop turn (until
         * the callbacks are delivered): further appends of the same turn
         * go to the writer and are committed together, and bigger
         * batches too, so the loop keeps reading during their fsync. */
        w->inline_done = 1;
        w->writer_busy = 1;
        pthread_mutex_unlock(&w->mtx);
        pthread_mutex_lock(&w->io_mtx);
        req->status_ = write_batch(w, req);
        pthread_mutex_unlock(&w->io_mtx);
        pthread_mutex_lock(&w->mtx);
        w->writer_busy = 0;
        queue_append(&w->d_head, &w->d_tail, req);
        pthread_mutex_unlock(&w->mtx);
        notify_loop(w);
        return 0;
    }
    queue_append(&w->q_head, &w->q_tail, req);
    __atomic_add_fetch(&w->q_count, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&w->mtx);
    /* Signalled after the unlock, so the woken writer does not block on
     * the mutex we hold; it re-checks the queue under the mutex. */
    pthread_cond_signal(&w->cond);
    return 0;
}

int wal_append(struct wal *w, struct wal_append_req *req,
               const struct wal_hard_state *hs, const struct wal_entry *ents,
               size_t n, wal_append_cb cb)
{
    return submit(w, req, hs, ents, n, NULL, cb);
}

int wal_save_snapshot(struct wal *w, struct wal_append_req *req,
                      const struct wal_snapshot *snap, wal_append_cb cb)
{
    if (!snap)
        return -EINVAL;
    return submit(w, req, NULL, NULL, 0, snap, cb);
}

static int submit_sync(struct wal *w, const struct wal_hard_state *hs,
                       const struct wal_entry *ents, size_t n,
                       const struct wal_snapshot *snap)
{
    struct wal_append_req req;
    int rv;
    memset(&req, 0, sizeof(req));
    rv = req_prepare(w, &req, hs, ents, n, snap, NULL);
    if (rv)
        return rv;
    pthread_mutex_lock(&w->io_mtx);
    rv = write_batch(w, &req);
    pthread_mutex_unlock(&w->io_mtx);
    free(req.buf_);
    return rv;
}

int wal_append_sync(struct wal *w, const struct wal_hard_state *hs,
                    const struct wal_entry *ents, size_t n)
{
    return submit_sync(w, hs, ents, n, NULL);
}

int wal_save_snapshot_sync(struct wal *w, const struct wal_snapshot *snap)
{
    if (!snap)
        return -EINVAL;
    return submit_sync(w, NULL, NULL, 0, snap);
}

int wal_purge(struct wal *w, uint64_t snap_index, unsigned max_wals)
{
    size_t k = 0, removed = 0;
    int rv = 0;
    if (w->mode != MODE_APPEND)
        return -EINVAL;
    if (max_wals == 0)
        return 0;
    pthread_mutex_lock(&w->io_mtx);
    /* Segments before k hold only entries <= snap_index: the newest
     * segment starting at or before snap_index + 1 is where a reader
     * restarting from this snapshot begins. */
    for (size_t i = 0; i < w->n_segs; i++)
        if (w->segs[i].first <= snap_index + 1)
            k = i;
    while (removed < k && w->n_segs - removed > max_wals) {
        char *p = seg_path(w, &w->segs[removed]);
        if (!p) {
            rv = -ENOMEM;
            break;
        }
        rv = w->h.unlink(w->h.ctx, p);
        if (rv) {
            wal_logf(w, WAL_LOG_ERROR, "%s: cannot remove: %s", p,
                     strerror(-rv));
            free(p);
            break;
        }
        wal_logf(w, WAL_LOG_INFO, "%s: purged", p);
        free(p);
        removed++;
    }
    if (removed) {
        memmove(w->segs, w->segs + removed,
                (w->n_segs - removed) * sizeof(*w->segs));
        w->n_segs -= removed;
        int frv = dir_fsync(w, w->dir);
        if (!rv)
            rv = frv;
    }
    pthread_mutex_unlock(&w->io_mtx);
    return rv ? rv : (int)removed;
}

/* ---- close -------------------------------------------------------------- */

static void on_async_closed(uv_handle_t *h)
{
    struct wal *w = h->data;
    close(w->evfd);
    w->evfd = -1;
    void (*cb)(void *) = w->close_cb;
    void *arg = w->close_arg;
    wal_free(w);
    if (cb)
        cb(arg);
}

void wal_close(struct wal *w, void (*close_cb)(void *arg), void *arg)
{
    struct wal_append_req *q, *r;
    int had_async = w->async_init;

    w->mode = MODE_CLOSING;
    w->close_cb = close_cb;
    w->close_arg = arg;
    if (w->threads) {
        pthread_mutex_lock(&w->mtx);
        __atomic_store_n(&w->stopping, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&w->cond);
        pthread_cond_broadcast(&w->prep_cond);
        pthread_mutex_unlock(&w->mtx);
        pthread_join(w->writer, NULL);
        pthread_join(w->prep, NULL);
        w->threads = 0;
    }
    /* Queued requests were never written. */
    pthread_mutex_lock(&w->mtx);
    q = w->q_head;
    w->q_head = w->q_tail = NULL;
    for (r = q; r; r = r->next_)
        r->status_ = WAL_ECANCELED;
    queue_append(&w->d_head, &w->d_tail, q);
    pthread_mutex_unlock(&w->mtx);
    if (w->d_head)
        deliver_done(w);
    if (w->prep_fd >= 0) {
        char *tmp = path_join(w->dir, TMP_NAME);
        w->h.close(w->h.ctx, w->prep_fd);
        w->prep_fd = -1;
        if (tmp)
            w->h.unlink(w->h.ctx, tmp);
        free(tmp);
    }
    if (had_async) {
        uv_close((uv_handle_t *)&w->notify, on_async_closed);
        return;
    }
    wal_free(w);
    if (close_cb)
        close_cb(arg);
}

const char *wal_last_error(const struct wal *w)
{
    return w->err;
}

uint64_t wal_last_index(const struct wal *w)
{
    return w->last_index;
}
