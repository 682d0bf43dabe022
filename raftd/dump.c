/* etcfs-dump-logs DATA_DIR: print a member's newest valid snapshot, its WAL
 * segments, the WAL metadata and hard state, then one line per entry after
 * the snapshot (term, index, type, decoded v2 request), in the format of
 * etcd's etcd-dump-logs. Read-only: it never renames, repairs or deletes. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "request.pb-c.h"
#include "snap.h"
#include "wal.h"

/* Conf change entry data as raftd/raft.h documents it: u8 version (1),
 * u8 op, 6 zero bytes, u64 node id (little endian), then context. Decoded
 * here from the documented layout so the tool does not need the Raft core
 * library. */
#define DUMP_CONF_HDR 16
#define DUMP_CONF_ADD 1
#define DUMP_CONF_REMOVE 2

/* ---- formatting --------------------------------------------------------- */

/* Go's %q for a byte string, for ASCII: printable bytes as they are, the
 * usual backslash escapes, anything else (bytes >= 0x80 included) as
 * \xNN. Go would print valid printable UTF-8 unescaped; we escape it. */
static void put_quoted(FILE *out, const unsigned char *s, size_t n)
{
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        switch (c) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\a': fputs("\\a", out); break;
        case '\b': fputs("\\b", out); break;
        case '\f': fputs("\\f", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        case '\v': fputs("\\v", out); break;
        default:
            if (c >= 0x20 && c < 0x7f)
                fputc(c, out);
            else
                fprintf(out, "\\x%02x", c);
        }
    }
    fputc('"', out);
}

/* etcd-dump-logs' excerpt(): the whole string quoted if short, else the
 * first pre and last suf bytes quoted around "...". */
static void put_excerpt(FILE *out, const unsigned char *s, size_t n,
                        size_t pre, size_t suf)
{
    if (pre + suf > n) {
        put_quoted(out, s, n);
        return;
    }
    put_quoted(out, s, pre);
    fputs("...", out);
    put_quoted(out, s + n - suf, suf);
}

/* Go's time.Time.String() of time.Unix(0, ns).UTC():
 * "2006-01-02 15:04:05.999999999 +0000 UTC", trailing zeros trimmed. */
static void put_go_time(FILE *out, int64_t ns)
{
    int64_t sec = ns / 1000000000, frac = ns % 1000000000;
    char buf[64], fr[16] = "";
    struct tm tm;
    time_t t;
    if (frac < 0) {
        frac += 1000000000;
        sec -= 1;
    }
    t = (time_t)sec;
    gmtime_r(&t, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
    if (frac != 0) {
        int len = snprintf(fr, sizeof(fr), ".%09" PRId64, frac);
        while (len > 1 && fr[len - 1] == '0')
            fr[--len] = '\0';
    }
    fprintf(out, "\"%s%s +0000 UTC\"", buf, fr);
}

static void put_str(FILE *out, const char *s)
{
    put_excerpt(out, (const unsigned char *)(s ? s : ""), s ? strlen(s) : 0,
                64, 64);
}

/* One normal entry: the v2 request as etcd prints it (method, path, val),
 * then the fields etcd leaves out but we find worth seeing when set. */
static int put_request(FILE *out, const struct wal_entry *e)
{
    Etcfs__Request *r = etcfs__request__unpack(NULL, e->len, e->data);
    const char *m;
    if (r == NULL)
        return -EBADMSG;
    m = r->method ? r->method : "";
    fprintf(out, "%4" PRIu64 "\t%10" PRIu64 "\tnorm", e->term, e->index);
    if (m[0] == '\0') {
        fputs("\tnoop", out);
    } else if (strcmp(m, "SYNC") == 0) {
        fputs("\tmethod=SYNC time=", out);
        put_go_time(out, r->time);
    } else if (strcmp(m, "QGET") == 0 || strcmp(m, "DELETE") == 0) {
        fprintf(out, "\tmethod=%s path=", m);
        put_str(out, r->path);
    } else {
        fprintf(out, "\tmethod=%s path=", m);
        put_str(out, r->path);
        fputs(" val=", out);
        put_excerpt(out, r->has_val ? r->val.data : (const uint8_t *)"",
                    r->has_val ? r->val.len : 0, 128, 0);
    }
    if (r->new_path != NULL) {
        fputs(" new_path=", out);
        put_str(out, r->new_path);
    }
    if (r->has_dir && r->dir)
        fputs(" dir=true", out);
    if (r->has_prev_value) {
        fputs(" prev_value=", out);
        put_excerpt(out, r->prev_value.data, r->prev_value.len, 128, 0);
    }
    if (r->has_prev_index && r->prev_index != 0)
        fprintf(out, " prev_index=%" PRIu64, r->prev_index);
    if (r->has_prev_exist)
        fprintf(out, " prev_exist=%s", r->prev_exist ? "true" : "false");
    if (r->has_expiration && r->expiration != 0) {
        fputs(" expiration=", out);
        put_go_time(out, r->expiration);
    }
    if (r->has_recursive && r->recursive)
        fputs(" recursive=true", out);
    if (r->has_refresh && r->refresh)
        fputs(" refresh=true", out);
    etcfs__request__free_unpacked(r, NULL);
    return 0;
}

/* Print one entry line. Not static: tests/fuzz/fuzz_dump.c feeds it
 * arbitrary entry bytes (dump.c built with ETCFS_DUMP_NO_MAIN). */
void dump_put_entry(FILE *out, const struct wal_entry *e);
void dump_put_entry(FILE *out, const struct wal_entry *e)
{
    const unsigned char *d = e->data;
    if (e->type == 0) {
        if (put_request(out, e) != 0)
            fprintf(out, "%4" PRIu64 "\t%10" PRIu64 "\tnorm\t???", e->term,
                    e->index);
    } else if (e->type == 1) {
        fprintf(out, "%4" PRIu64 "\t%10" PRIu64 "\tconf", e->term, e->index);
        if (e->len < DUMP_CONF_HDR || d[0] != 1 ||
            (d[1] != DUMP_CONF_ADD && d[1] != DUMP_CONF_REMOVE)) {
            fputs("\t???", out);
        } else {
            uint64_t id = 0;
            for (int i = 7; i >= 0; i--)
                id = id << 8 | d[8 + i];
            fprintf(out, "\tmethod=%s id=%" PRIx64,
                    d[1] == DUMP_CONF_ADD ? "ConfChangeAddNode"
                                          : "ConfChangeRemoveNode",
                    id);
        }
    } else {
        fprintf(out, "%4" PRIu64 "\t%10" PRIu64 "\ttype%" PRIu32 "\t???",
                e->term, e->index, e->type);
    }
    fputc('\n', out);
}

#ifndef ETCFS_DUMP_NO_MAIN
/* ---- logging and read-only WAL hooks ---- */

static void dump_log(void *data, int is_error, const char *msg)
{
    (void)data;
    fprintf(stderr, "%s%s\n", is_error ? "error: " : "", msg);
}

static void dump_snap_log(void *data, enum snap_log_level level,
                          const char *msg)
{
    dump_log(data, level == SNAP_LOG_ERROR, msg);
}

static void dump_wal_log(void *data, enum wal_log_level level,
                         const char *msg)
{
    dump_log(data, level == WAL_LOG_ERROR, msg);
}

/* ---- read-only WAL hooks ----------------------------------------------
 * wal_read_all() repairs a torn tail (truncates, writes .broken). A dump
 * must not change the data dir, so every open for writing is sent to
 * /dev/null and truncate, sync, rename, unlink and mkdir pretend to
 * succeed: the tool shows what a member would recover, and the disk keeps
 * what it had. */
static int ro_open(void *ctx, const char *path, int flags, mode_t mode)
{
    int fd;
    (void)ctx;
    if (flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND))
        fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    else
        fd = open(path, flags | O_CLOEXEC, mode);
    return fd < 0 ? -errno : fd;
}

static int ro_ok_fd(void *ctx, int fd)
{
    (void)ctx;
    (void)fd;
    return 0;
}

static int ro_ok_truncate(void *ctx, int fd, off_t len)
{
    (void)ctx;
    (void)fd;
    (void)len;
    return 0;
}

static int ro_ok_rename(void *ctx, const char *from, const char *to)
{
    (void)ctx;
    (void)from;
    (void)to;
    return 0;
}

static int ro_ok_path(void *ctx, const char *path)
{
    (void)ctx;
    (void)path;
    return 0;
}

static int ro_ok_mkdir(void *ctx, const char *path, mode_t mode)
{
    (void)ctx;
    (void)path;
    (void)mode;
    return 0;
}

/* ---- sections ----------------------------------------------------------- */

static uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* raftd (node.c) stores its conf state as the snapshot meta: le64 index,
 * le64 term, le32 n_voters, le64 voter ids. When the blob has exactly that
 * shape and agrees with the file's term and index, print the voters as
 * etcd's " nodes=[id id]"; otherwise nothing (the hex follows anyway). */
static void put_meta_nodes(FILE *out, const unsigned char *m, size_t len,
                           const struct wal_snapshot *snap)
{
    uint64_t nv;
    if (len < 20 || get_le(m, 8) != snap->index ||
        get_le(m + 8, 8) != snap->term)
        return;
    nv = get_le(m + 16, 4);
    if (nv > 1024 || len != 20 + 8 * nv)
        return;
    fputs(" nodes=[", out);
    for (uint64_t i = 0; i < nv; i++)
        fprintf(out, "%s%" PRIx64, i ? " " : "", get_le(m + 20 + 8 * i, 8));
    fputc(']', out);
}

/* The newest snapshot that verifies; broken ones are reported and skipped
 * (not renamed: this tool changes nothing). *snap is zero if none. */
static int dump_snapshot(FILE *out, const char *snapdir,
                         struct wal_snapshot *snap)
{
    struct snap_options opts;
    struct snap_id *ids;
    size_t n;
    int rv;

    memset(snap, 0, sizeof(*snap));
    snap_options_init(&opts);
    opts.dir = snapdir;
    opts.log = dump_snap_log;
    rv = snap_list(&opts, &ids, &n);
    if (rv != 0) {
        fprintf(stderr, "error: listing %s: %s\n", snapdir, strerror(-rv));
        return rv;
    }
    fputs("Snapshot:\n", out);
    for (size_t i = n; i-- > 0;) {
        struct snap_reader *r;
        const unsigned char *meta;
        size_t meta_len;
        rv = snap_reader_open_at(&opts, ids[i].term, ids[i].index, &r);
        if (rv == -EBADMSG || rv == -ENOENT) {
            fprintf(stderr, "skipping snapshot term=%" PRIu64 " index=%" PRIu64
                    ": %s\n", ids[i].term, ids[i].index, strerror(-rv));
            continue;
        }
        if (rv != 0) {
            free(ids);
            return rv;
        }
        snap->term = snap_reader_term(r);
        snap->index = snap_reader_index(r);
        meta = snap_reader_meta(r, &meta_len);
        fprintf(out,
                "term=%" PRIu64 " index=%" PRIu64 " size=%" PRIu64
                " image=%" PRIu64 " file=%s",
                snap->term, snap->index, snap_reader_file_size(r),
                snap_reader_image_size(r), strrchr(snap_reader_path(r), '/') + 1);
        put_meta_nodes(out, meta, meta_len, snap);
        fputs(" meta=", out);
        for (size_t k = 0; k < meta_len && k < 64; k++)
            fprintf(out, "%02x", meta[k]);
        fprintf(out, "%s (%zu bytes)\n", meta_len > 64 ? "..." : "",
                meta_len);
        snap_reader_free(r);
        free(ids);
        return 0;
    }
    free(ids);
    fputs("empty\n", out);
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int dump_segments(FILE *out, const char *waldir)
{
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    DIR *d = opendir(waldir);
    int rv = 0;

    fputs("WAL segments:\n", out);
    if (d == NULL) {
        fprintf(out, "none (%s)\n", strerror(errno));
        return 0;
    }
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".wal") != 0)
            continue;
        if (n == cap) {
            char **nn = realloc(names, (cap = cap ? cap * 2 : 16) *
                                           sizeof(*names));
            if (nn == NULL) {
                rv = -ENOMEM;
                goto out;
            }
            names = nn;
        }
        if ((names[n] = strdup(de->d_name)) == NULL) {
            rv = -ENOMEM;
            goto out;
        }
        n++;
    }
    if (n > 0)
        qsort(names, n, sizeof(*names), name_cmp);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (fstatat(dirfd(d), names[i], &st, 0) == 0)
            fprintf(out, "%s\t%lld bytes\n", names[i], (long long)st.st_size);
        else
            fprintf(out, "%s\t(%s)\n", names[i], strerror(errno));
    }
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return rv;
}

static int dump_wal(FILE *out, const char *waldir,
                    const struct wal_snapshot *snap)
{
    static const struct wal_hooks ro = {
        .open = ro_open,
        .fsync = ro_ok_fd,
        .fdatasync = ro_ok_fd,
        .ftruncate = ro_ok_truncate,
        .rename = ro_ok_rename,
        .unlink = ro_ok_path,
        .mkdir = ro_ok_mkdir,
    };
    struct wal_options opts;
    struct wal_read_result res;
    struct wal *w;
    int rv;

    memset(&opts, 0, sizeof(opts));
    opts.hooks = &ro;
    opts.log = dump_wal_log;
    rv = wal_open(&w, waldir, &opts);
    if (rv != 0) {
        fprintf(stderr, "error: opening WAL %s: %s\n", waldir, strerror(-rv));
        return rv;
    }
    rv = wal_read_all(w, snap, &res);
    if (rv != 0) {
        fprintf(stderr, "error: reading WAL: %s\n", wal_last_error(w));
        wal_close(w, NULL, NULL);
        return rv;
    }
    wal_close(w, NULL, NULL);
    fprintf(out,
            "WAL metadata:\nnodeID=%" PRIx64 " clusterID=%" PRIx64
            " term=%" PRIu64 " commitIndex=%" PRIu64 " vote=%" PRIx64 "\n",
            res.metadata.node_id, res.metadata.cluster_id,
            res.hard_state.term, res.hard_state.commit, res.hard_state.vote);
    fprintf(out, "WAL entries: %zu\n", res.n_entries);
    if (res.n_entries > 0)
        fprintf(out, "lastIndex=%" PRIu64 "\n",
                res.entries[res.n_entries - 1].index);
    fprintf(out, "%4s\t%10s\ttype\tdata\n", "term", "index");
    for (size_t i = 0; i < res.n_entries; i++)
        dump_put_entry(out, &res.entries[i]);
    fprintf(out, "\nEntry types (Normal,ConfigChange) count is : %zu\n",
            res.n_entries);
    wal_read_result_free(&res);
    return 0;
}

static void usage(FILE *f)
{
    fputs("usage: etcfs-dump-logs DATA_DIR\n"
          "  Prints the newest valid snapshot of DATA_DIR/member/snap, the\n"
          "  segments of DATA_DIR/member/wal, the WAL metadata, and every\n"
          "  entry after the snapshot. Changes nothing on disk.\n",
          f);
}

int main(int argc, char **argv)
{
    char snapdir[4096], waldir[4096];
    struct wal_snapshot snap;

    if (argc == 2 && (strcmp(argv[1], "-h") == 0 ||
                      strcmp(argv[1], "--help") == 0 ||
                      strcmp(argv[1], "-help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    snprintf(snapdir, sizeof(snapdir), "%s/member/snap", argv[1]);
    snprintf(waldir, sizeof(waldir), "%s/member/wal", argv[1]);
    if (dump_snapshot(stdout, snapdir, &snap) != 0)
        return 1;
    fputs("Start dumping log entries from snapshot.\n", stdout);
    if (dump_segments(stdout, waldir) != 0)
        return 1;
    if (dump_wal(stdout, waldir, &snap) != 0)
        return 1;
    return 0;
}
#endif /* ETCFS_DUMP_NO_MAIN */
