/* Snapshot save/load throughput on a synthetic store image of N keys
 * (default 1,000,000): paths like /bench/k0000001, 100-byte values, two
 * 8-byte indices per node, written one node at a time through
 * snap_write_cb and read back field by field through snap_read_cb, the way
 * store_save/store_load drive them. Prints MB/s of image bytes (save
 * includes both fsyncs; load includes the verification pass) and the
 * compression ratio, for JSON-like values and for incompressible ones.
 * Usage: bench_snap [DIR [NKEYS]]   (DIR defaults to the current dir) */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "snap.h"

#define VALUE_LEN 100

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* One node as a store might serialize it: u32 path_len, path, u32
 * value_len, value, u64 created_index, u64 modified_index, u8 flags. */
static size_t node_encode(unsigned char *p, uint64_t i, int random_values,
                          uint64_t *rng)
{
    char path[32];
    unsigned char *start = p;
    uint32_t plen = (uint32_t)snprintf(path, sizeof(path), "/bench/k%07" PRIu64,
                                       i);
    uint32_t vlen = VALUE_LEN;
    uint64_t idx[2] = {i + 1, i + 1 + i % 7};

    memcpy(p, &plen, 4);
    memcpy(p + 4, path, plen);
    p += 4 + plen;
    memcpy(p, &vlen, 4);
    p += 4;
    if (random_values) {
        for (uint32_t k = 0; k < vlen; k += 8) {
            uint64_t r = rng_next(rng);
            memcpy(p + k, &r, vlen - k < 8 ? vlen - k : 8);
        }
    } else {
        /* JSON-ish: fixed keys, a counter, and 24 random base32 chars. */
        char v[VALUE_LEN + 1];
        int n = snprintf(v, sizeof(v),
                         "{\"id\":%" PRIu64 ",\"host\":\"node-%03u\","
                         "\"state\":\"running\",\"token\":\"",
                         i, (unsigned)(i % 97));
        while (n < VALUE_LEN - 2)
            v[n++] = "abcdefghijklmnopqrstuvwxyz234567"[rng_next(rng) & 31];
        v[n++] = '"';
        v[n++] = '}';
        memcpy(p, v, VALUE_LEN);
    }
    p += vlen;
    memcpy(p, idx, 16);
    p += 16;
    *p++ = 0;
    return (size_t)(p - start);
}

static int run(const char *dir, uint64_t nkeys, int random_values)
{
    struct snap_options opts;
    struct snap_writer *w;
    struct snap_reader *r;
    unsigned char node[256];
    uint64_t rng = 0x9e3779b97f4a7c15ull, image = 0, nodes = 0;
    double t0, t1, t2, t3, tc, tg;
    int rv;

    snap_options_init(&opts);
    opts.dir = dir;
    opts.max_snapshots = 1;
    /* The cost of making the nodes alone, to subtract mentally. */
    tg = now_sec();
    for (uint64_t i = 0; i < nkeys; i++)
        image += node_encode(node, i, random_values, &rng);
    tg = now_sec() - tg;
    rng = 0x9e3779b97f4a7c15ull;
    image = 0;
    t0 = now_sec();
    rv = snap_writer_new(&opts, 1, nkeys, "bench", 5, &w);
    if (rv != 0)
        return rv;
    for (uint64_t i = 0; i < nkeys; i++) {
        size_t n = node_encode(node, i, random_values, &rng);
        rv = snap_write_cb(w, node, n);
        if (rv != 0) {
            snap_writer_abort(w);
            return rv;
        }
        image += n;
    }
    tc = now_sec();
    rv = snap_writer_commit(w);
    if (rv != 0)
        return rv;
    t1 = now_sec();
    tc = t1 - tc;

    rv = snap_reader_open(&opts, &r);
    if (rv != 0)
        return rv;
    t2 = now_sec();
    for (;;) {
        uint32_t len;
        size_t got;
        /* Like store_load: a length, then that many bytes, per field. */
        rv = snap_reader_read(r, &len, 4, &got);
        if (rv != 0 || got == 0)
            break;
        if (got != 4 || len > sizeof(node) ||
            (rv = snap_read_cb(r, node, len)) != 0 ||
            (rv = snap_read_cb(r, &len, 4)) != 0 || len > sizeof(node) ||
            (rv = snap_read_cb(r, node, len + 17)) != 0) {
            rv = rv ? rv : -EBADMSG;
            break;
        }
        nodes++;
    }
    t3 = now_sec();
    if (rv == 0 && nodes != nkeys)
        rv = -EBADMSG;
    if (rv == 0) {
        double mb = (double)image / 1e6;
        uint64_t fsz = snap_reader_file_size(r);
        printf("%-14s keys %" PRIu64 "  image %.1f MB  file %.1f MB  "
               "ratio %.2f\n",
               random_values ? "random values" : "json values", nkeys, mb,
               (double)fsz / 1e6, (double)image / (double)fsz);
        printf("  save (incl. fsync)      %7.3f s  %7.1f MB/s  (of which "
               "making nodes %.3f s, commit+fsync %.3f s)\n",
               t1 - t0, mb / (t1 - t0), tg, tc);
        printf("  load: verify pass       %7.3f s  %7.1f MB/s of file\n",
               t2 - t1, (double)fsz / 1e6 / (t2 - t1));
        printf("  load: verify + read     %7.3f s  %7.1f MB/s\n", t3 - t1,
               mb / (t3 - t1));
    }
    snap_reader_free(r);
    return rv;
}

int main(int argc, char **argv)
{
    const char *parent = argc > 1 ? argv[1] : ".";
    uint64_t nkeys = argc > 2 ? strtoull(argv[2], NULL, 10) : 1000000;
    char dir[4096];
    int rv;

    snprintf(dir, sizeof(dir), "%s/bench_snap.XXXXXX", parent);
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    rv = run(dir, nkeys, 0);
    if (rv == 0)
        rv = run(dir, nkeys, 1);
    if (rv != 0)
        fprintf(stderr, "bench_snap: %s\n", strerror(-rv));
    /* max_snapshots 1 leaves one file; remove it and the dir. */
    {
        struct snap_options opts;
        struct snap_id *ids;
        size_t n;
        snap_options_init(&opts);
        opts.dir = dir;
        if (snap_list(&opts, &ids, &n) == 0) {
            for (size_t i = 0; i < n; i++) {
                char p[4200];
                snprintf(p, sizeof(p), "%s/%016" PRIx64 "-%016" PRIx64 ".snap",
                         dir, ids[i].term, ids[i].index);
                unlink(p);
            }
            free(ids);
        }
        rmdir(dir);
    }
    return rv != 0;
}
