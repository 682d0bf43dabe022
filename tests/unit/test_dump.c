/* End-to-end test of etcfs-dump-logs: builds a data dir with the wal and
 * snap APIs, runs the program (path in argv[1]) and checks its output, and
 * that it changes nothing on disk (no .broken rename, no WAL repair). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snap.h"
#include "test.h"
#include "wal.h"

static const char *dump_prog;
static char data_dir[64];
static char out_buf[1 << 16];
static char err_buf[1 << 14];

/* Protobuf wire encoding, enough for etcfs.Request test entries. */
static size_t pb_varint_raw(unsigned char *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v != 0);
    return n;
}

static size_t pb_bytes(unsigned char *p, unsigned field, const void *s,
                       size_t len)
{
    size_t n = pb_varint_raw(p, (uint64_t)field << 3 | 2);
    n += pb_varint_raw(p + n, len);
    memcpy(p + n, s, len);
    return n + len;
}

static size_t pb_str(unsigned char *p, unsigned field, const char *s)
{
    return pb_bytes(p, field, s, strlen(s));
}

static size_t pb_uint(unsigned char *p, unsigned field, uint64_t v)
{
    size_t n = pb_varint_raw(p, (uint64_t)field << 3);
    return n + pb_varint_raw(p + n, v);
}

static int read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    ssize_t n;
    if (fd < 0)
        return -errno;
    n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    return 0;
}

/* Run the tool on data_dir; its stdout and stderr land in the buffers. */
static int run_dump(void)
{
    char cmd[512], out[128], err[128];
    int rv;
    snprintf(out, sizeof(out), "%s/dump.out", data_dir);
    snprintf(err, sizeof(err), "%s/dump.err", data_dir);
    snprintf(cmd, sizeof(cmd), "'%s' '%s' >'%s' 2>'%s'", dump_prog, data_dir,
             out, err);
    rv = system(cmd);
    if (read_file(out, out_buf, sizeof(out_buf)) != 0 ||
        read_file(err, err_buf, sizeof(err_buf)) != 0)
        return -EIO;
    unlink(out);
    unlink(err);
    return rv;
}

static void rm_rf(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static char seg_path[256];

static int find_segment(void)
{
    snprintf(seg_path, sizeof(seg_path),
             "%s/member/wal/0000000000000000-0000000000000000.wal", data_dir);
    return access(seg_path, R_OK) == 0 ? 0 : -ENOENT;
}

#define LONG_VAL 200

/* Seven entries: a conf change, a no-op, PUT, DELETE, SYNC, garbage and a
 * PUT whose path needs quoting and whose value is long. */
static int build_wal(void)
{
    struct wal_metadata md = {0x8e9e05c52164694dull, 0xcdf818194e3a8c32ull};
    struct wal_hard_state hs = {2, 0x8e9e05c52164694dull, 7};
    struct wal_options opts;
    struct wal_entry e[7];
    unsigned char conf[32], put[64], del[64], sync[32], bad[3] = {255, 255, 255};
    unsigned char longput[LONG_VAL + 64], val[LONG_VAL];
    char dir[128];
    struct wal *w;
    size_t n;
    int rv;

    memset(&opts, 0, sizeof(opts));
    opts.segment_size = 65536;
    snprintf(dir, sizeof(dir), "%s/member", data_dir);
    if (mkdir(dir, 0700) != 0)
        return -errno;
    snprintf(dir, sizeof(dir), "%s/member/wal", data_dir);
    rv = wal_create(&w, dir, &md, &opts);
    if (rv != 0)
        return rv;
    memset(conf, 0, sizeof(conf));
    conf[0] = 1; /* version */
    conf[1] = 1; /* add voter */
    for (int i = 0; i < 8; i++)
        conf[8 + i] = (unsigned char)(md.node_id >> (8 * i));
    memcpy(conf + 16, "default", 7);
    memset(e, 0, sizeof(e));
    for (int i = 0; i < 7; i++) {
        e[i].term = i == 0 ? 1 : 2;
        e[i].index = (uint64_t)i + 1;
    }
    e[0].type = 1;
    e[0].data = conf;
    e[0].len = 23;
    /* e[1]: a leader's empty no-op. */
    n = pb_uint(put, 1, 42);
    n += pb_str(put + n, 2, "PUT");
    n += pb_str(put + n, 3, "/foo");
    n += pb_str(put + n, 4, "bar");
    e[2].data = put;
    e[2].len = n;
    n = pb_str(del, 2, "DELETE");
    n += pb_str(del + n, 3, "/foo");
    n += pb_uint(del + n, 12, 1);
    e[3].data = del;
    e[3].len = n;
    n = pb_str(sync, 2, "SYNC");
    n += pb_uint(sync + n, 15, 1700000000123456789ull);
    e[4].data = sync;
    e[4].len = n;
    e[5].data = bad;
    e[5].len = sizeof(bad);
    memset(val, 'x', sizeof(val));
    n = pb_str(longput, 2, "PUT");
    n += pb_str(longput + n, 3, "/q\"\n");
    n += pb_bytes(longput + n, 4, val, sizeof(val));
    e[6].data = longput;
    e[6].len = n;
    rv = wal_append_sync(w, &hs, e, 7);
    wal_close(w, NULL, NULL);
    return rv;
}

static int build_snapshot(void)
{
    struct snap_options opts;
    struct snap_writer *w;
    unsigned char meta[28];
    char dir[128];
    int rv;
    snprintf(dir, sizeof(dir), "%s/member/snap", data_dir);
    snap_options_init(&opts);
    opts.dir = dir;
    rv = snap_dir_init(&opts);
    if (rv != 0)
        return rv;
    /* raftd's meta: le64 index 3, le64 term 2, le32 one voter, its id. */
    memset(meta, 0, sizeof(meta));
    meta[0] = 3;
    meta[8] = 2;
    meta[16] = 1;
    for (int i = 0; i < 8; i++)
        meta[20 + i] = (unsigned char)(0x8e9e05c52164694dull >> (8 * i));
    rv = snap_writer_new(&opts, 2, 3, meta, sizeof(meta), &w);
    if (rv != 0)
        return rv;
    rv = snap_writer_write(w, "store image", 11);
    if (rv != 0) {
        snap_writer_abort(w);
        return rv;
    }
    return snap_writer_commit(w);
}

static const char *entry_lines[] = {
    "   1\t         1\tconf\tmethod=ConfChangeAddNode id=8e9e05c52164694d\n",
    "   2\t         2\tnorm\tnoop\n",
    "   2\t         3\tnorm\tmethod=PUT path=\"/foo\" val=\"bar\"\n",
    "   2\t         4\tnorm\tmethod=DELETE path=\"/foo\" recursive=true\n",
    "   2\t         5\tnorm\tmethod=SYNC time=\"2023-11-14 22:13:20.123456789 "
    "+0000 UTC\"\n",
    "   2\t         6\tnorm\t???\n",
    "   2\t         7\tnorm\tmethod=PUT path=\"/q\\\"\\n\" val=\"xxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"...\"\"\n",
};

TEST(dump_without_snapshot)
{
    ASSERT_OK(build_wal());
    ASSERT_OK(run_dump());
    ASSERT(strncmp(out_buf, "Snapshot:\nempty\nStart dumping log entries "
                            "from snapshot.\nWAL segments:\n"
                            "0000000000000000-0000000000000000.wal\t",
                   strlen("Snapshot:\nempty\nStart dumping log entries from "
                          "snapshot.\nWAL segments:\n"
                          "0000000000000000-0000000000000000.wal\t")) == 0);
    ASSERT(strstr(out_buf, "WAL metadata:\nnodeID=8e9e05c52164694d "
                           "clusterID=cdf818194e3a8c32 term=2 commitIndex=7 "
                           "vote=8e9e05c52164694d\n") != NULL);
    ASSERT(strstr(out_buf, "WAL entries: 7\nlastIndex=7\n"
                           "term\t     index\ttype\tdata\n") != NULL);
    for (size_t i = 0; i < 7; i++)
        if (strstr(out_buf, entry_lines[i]) == NULL) {
            fprintf(stderr, "missing line %zu: %s\n--- output:\n%s", i,
                    entry_lines[i], out_buf);
            ASSERT(0);
        }
    ASSERT(strstr(out_buf, "\nEntry types (Normal,ConfigChange) count is : "
                           "7\n") != NULL);
}

TEST(dump_after_snapshot)
{
    ASSERT_OK(build_snapshot());
    ASSERT_OK(run_dump());
    ASSERT(strncmp(out_buf, "Snapshot:\nterm=2 index=3 size=", 30) == 0);
    ASSERT(strstr(out_buf, "size=127 image=11 file=0000000000000002-"
                           "0000000000000003.snap nodes=[8e9e05c52164694d] "
                           "meta=03000000000000000200000000000000010000004d"
                           "696421c5059e8e (28 bytes)\n") != NULL);
    ASSERT(strstr(out_buf, "WAL entries: 4\nlastIndex=7\n") != NULL);
    ASSERT(strstr(out_buf, entry_lines[2]) == NULL);
    for (size_t i = 3; i < 7; i++)
        ASSERT(strstr(out_buf, entry_lines[i]) != NULL);
}

/* A corrupt snapshot is skipped (and reported) but not renamed, and a torn
 * WAL tail is read past without being repaired on disk. */
TEST(dump_is_read_only)
{
    char path[300];
    unsigned char c, junk[24];
    static unsigned char before[65536 + 64], after[65536 + 64];
    ssize_t nb, na;
    off_t last = -1;
    int fd;

    snprintf(path, sizeof(path),
             "%s/member/snap/0000000000000002-0000000000000003.snap",
             data_dir);
    fd = open(path, O_RDWR);
    ASSERT(fd >= 0);
    ASSERT_EQ(pread(fd, &c, 1, 70), 1);
    c ^= 1;
    ASSERT_EQ(pwrite(fd, &c, 1, 70), 1);
    close(fd);

    /* Garbage after the last record of the segment: a torn tail. */
    ASSERT_OK(find_segment());
    fd = open(seg_path, O_RDWR);
    ASSERT(fd >= 0);
    nb = pread(fd, before, sizeof(before), 0);
    ASSERT_GT(nb, 0);
    for (ssize_t i = 0; i < nb; i++)
        if (before[i] != 0)
            last = i;
    ASSERT_GT(last, 0);
    memset(junk, 0xa5, sizeof(junk));
    ASSERT_EQ(pwrite(fd, junk, sizeof(junk), (last + 64) & ~(off_t)7),
              (ssize_t)sizeof(junk));
    nb = pread(fd, before, sizeof(before), 0);
    close(fd);

    ASSERT_OK(run_dump());
    ASSERT(strncmp(out_buf, "Snapshot:\nempty\n", 16) == 0);
    ASSERT(strstr(err_buf, "skipping snapshot term=2 index=3") != NULL);
    /* The WAL saw the torn tail and "repaired" it, into /dev/null. */
    ASSERT(strstr(err_buf, "torn tail") != NULL);
    ASSERT(strstr(out_buf, "WAL entries: 7\n") != NULL);
    ASSERT_EQ(access(path, F_OK), 0);
    snprintf(path, sizeof(path),
             "%s/member/snap/0000000000000002-0000000000000003.snap.broken",
             data_dir);
    ASSERT_EQ(access(path, F_OK), -1);
    fd = open(seg_path, O_RDONLY);
    ASSERT(fd >= 0);
    na = pread(fd, after, sizeof(after), 0);
    close(fd);
    ASSERT_EQ(na, nb);
    ASSERT_MEM_EQ(before, after, (size_t)nb);
    snprintf(path, sizeof(path), "%s.broken", seg_path);
    ASSERT_EQ(access(path, F_OK), -1);
}

TEST(dump_usage_and_missing_dir)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "'%s' >/dev/null 2>&1", dump_prog);
    ASSERT_NE(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "'%s' '%s/nonexistent' >/dev/null 2>&1",
             dump_prog, data_dir);
    ASSERT_NE(system(cmd), 0);
}

int main(int argc, char **argv)
{
    static const struct test_case tests[] = {
        TEST_ENTRY(dump_without_snapshot), TEST_ENTRY(dump_after_snapshot),
        TEST_ENTRY(dump_is_read_only), TEST_ENTRY(dump_usage_and_missing_dir)};
    int rv;
    if (argc < 2) {
        fprintf(stderr, "usage: test_dump PATH-TO-etcfs-dump-logs\n");
        return 2;
    }
    dump_prog = argv[1];
    snprintf(data_dir, sizeof(data_dir), "/tmp/test_dump.XXXXXX");
    if (mkdtemp(data_dir) == NULL)
        return 1;
    /* The tests build on each other's data dir, so they always run all. */
    rv = test_main_(1, argv, tests, sizeof(tests) / sizeof(tests[0]));
    rm_rf(data_dir);
    return rv;
}
