/* WAL append throughput: N appenders on a libuv loop, each waiting for its
 * own acknowledgement (fdatasync) before appending its next entry, so one
 * appender measures fsync latency and 64 measure group commit. Prints one
 * line of key=value results. Run through tests/bench/bench_wal.sh. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "wal.h"

struct bench {
    uv_loop_t loop;
    struct wal *w;
    struct wal_append_req *reqs;
    unsigned char *payload;
    size_t entry_size;
    uint64_t next_index;
    uint64_t acked;
    uint64_t fsyncs;
    double deadline;
    int stop;
    int failed;
    int nosync;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Count fdatasyncs to report the average batch size. */
static int count_fdatasync(void *ctx, int fd)
{
    struct bench *b = ctx;
    __atomic_add_fetch(&b->fsyncs, 1, __ATOMIC_RELAXED);
    if (b->nosync)
        return 0;
    return fdatasync(fd) < 0 ? -errno : 0;
}

static void on_ack(struct wal_append_req *req, int status);

static int submit(struct bench *b, struct wal_append_req *req)
{
    struct wal_entry e = {1, b->next_index++, 0, b->payload, b->entry_size};
    req->data = b;
    return wal_append(b->w, req, NULL, &e, 1, on_ack);
}

static void on_ack(struct wal_append_req *req, int status)
{
    struct bench *b = req->data;
    if (status) {
        fprintf(stderr, "append failed: %s\n", strerror(-status));
        b->failed = 1;
        return;
    }
    b->acked++;
    if (b->stop || now_s() >= b->deadline) {
        b->stop = 1;
        return;
    }
    if (submit(b, req)) {
        b->failed = 1;
        b->stop = 1;
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_wal -d DIR [-n appenders] [-t seconds] "
            "[-s entry-bytes] [-S segment-bytes] [-y]\n"
            "  -y: one synchronous appender (wal_append_sync), no threads\n"
            "  -N: skip fdatasync (measures the WAL's own overhead)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct bench b;
    struct wal_options o;
    struct wal_hooks h;
    struct wal_metadata md = {1, 1};
    const char *dir = NULL;
    int appenders = 1, c, sync_mode = 0;
    double secs = 5, t0, t1;
    uint64_t fs0;

    memset(&b, 0, sizeof(b));
    memset(&o, 0, sizeof(o));
    memset(&h, 0, sizeof(h));
    b.entry_size = 128;
    while ((c = getopt(argc, argv, "d:n:t:s:S:yN")) != -1) {
        switch (c) {
        case 'd':
            dir = optarg;
            break;
        case 'n':
            appenders = atoi(optarg);
            break;
        case 't':
            secs = atof(optarg);
            break;
        case 's':
            b.entry_size = (size_t)atol(optarg);
            break;
        case 'S':
            o.segment_size = (uint64_t)atoll(optarg);
            break;
        case 'y':
            sync_mode = 1;
            break;
        case 'N':
            b.nosync = 1;
            break;
        default:
            usage();
        }
    }
    if (!dir || appenders < 1)
        usage();
    b.payload = malloc(b.entry_size ? b.entry_size : 1);
    b.reqs = calloc((size_t)appenders, sizeof(*b.reqs));
    if (!b.payload || !b.reqs)
        return 1;
    memset(b.payload, 'x', b.entry_size);
    uv_loop_init(&b.loop);
    h.ctx = &b;
    h.fdatasync = count_fdatasync;
    o.hooks = &h;
    o.loop = &b.loop;
    if ((c = wal_create(&b.w, dir, &md, &o)) != 0) {
        fprintf(stderr, "wal_create %s: %s\n", dir, strerror(-c));
        return 1;
    }
    b.next_index = 1;
    /* Warm up: one round trip so the writer thread is running. */
    if (wal_append_sync(b.w, NULL, NULL, 0))
        return 1;
    fs0 = b.fsyncs;
    t0 = now_s();
    b.deadline = t0 + secs;
    if (sync_mode) {
        /* Baseline without thread hops: wal_append_sync on this thread. */
        while (now_s() < b.deadline) {
            struct wal_entry e = {1, b.next_index++, 0, b.payload,
                                  b.entry_size};
            if (wal_append_sync(b.w, NULL, &e, 1))
                return 1;
            b.acked++;
        }
    }
    for (int i = 0; i < appenders && !sync_mode; i++)
        if (submit(&b, &b.reqs[i]))
            return 1;
    while (!b.failed && b.acked < b.next_index - 1 &&
           uv_run(&b.loop, UV_RUN_ONCE))
        ;
    t1 = now_s();
    printf("%sappenders=%d entry_bytes=%zu seconds=%.2f entries=%" PRIu64
           " entries_per_s=%.0f fdatasyncs=%" PRIu64
           " fdatasyncs_per_s=%.0f avg_batch=%.1f\n",
           sync_mode ? "sync " : "", appenders, b.entry_size, t1 - t0, b.acked,
           (double)b.acked / (t1 - t0), b.fsyncs - fs0,
           (double)(b.fsyncs - fs0) / (t1 - t0),
           b.fsyncs > fs0 ? (double)b.acked / (double)(b.fsyncs - fs0) : 0);
    wal_close(b.w, NULL, NULL);
    uv_run(&b.loop, UV_RUN_DEFAULT);
    uv_loop_close(&b.loop);
    {
        /* Restart cost: open, read everything, switch to append mode. */
        struct wal_options ro;
        struct wal_read_result res;
        struct wal *w;
        memset(&ro, 0, sizeof(ro));
        ro.segment_size = o.segment_size;
        t0 = now_s();
        if (wal_open(&w, dir, &ro) || wal_read_all(w, NULL, &res) ||
            wal_start_append(w)) {
            fprintf(stderr, "reopen failed\n");
            return 1;
        }
        t1 = now_s();
        printf("reopen_entries=%zu reopen_ms=%.0f\n", res.n_entries,
               (t1 - t0) * 1000);
        wal_read_result_free(&res);
        wal_close(w, NULL, NULL);
    }
    free(b.reqs);
    free(b.payload);
    return b.failed;
}
