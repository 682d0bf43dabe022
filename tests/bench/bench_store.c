/* Store write throughput in one large directory: creates N distinct keys
 * under /bench with store_set, then overwrites each of them once with
 * store_set (the black-box benchmark's PUT-create then PUT-overwrite), then
 * updates each (PUT ?prevExist=true) and deletes each, and prints
 * operations per second for every phase. No I/O: this is the state
 * machine alone, the ceiling for raftd's apply loop.
 * Usage: bench_store [NKEYS]   (default 200,000) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"

#define NOW_NS 1795238566526208642LL

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

enum op { OP_SET, OP_UPDATE, OP_DELETE };

/* One pass of n operations over /bench/k<i>. Returns ops/s, or -1. */
static double pass(struct store *s, long n, enum op op, const char *val)
{
    char p[64];
    double t0 = now_sec();
    for (long i = 0; i < n; i++) {
        struct store_event *ev = NULL;
        snprintf(p, sizeof(p), "/bench/k%07ld", i);
        int rv;
        if (op == OP_SET)
            rv = store_set(s, p, false, val, strlen(val), 0, false, NOW_NS,
                           &ev, NULL);
        else if (op == OP_UPDATE)
            rv = store_update(s, p, val, strlen(val), 0, false, NOW_NS, &ev,
                              NULL);
        else
            rv = store_delete(s, p, false, false, NOW_NS, &ev, NULL);
        if (rv != 0) {
            fprintf(stderr, "op %d on %s failed: %d\n", (int)op, p, rv);
            return -1;
        }
        store_event_unref(ev);
    }
    return (double)n / (now_sec() - t0);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    if (n <= 0) {
        fprintf(stderr, "usage: bench_store [NKEYS]\n");
        return 2;
    }
    struct store *s = store_new();
    if (s == NULL)
        return 1;
    double c = pass(s, n, OP_SET, "value-one");
    double o = c < 0 ? -1 : pass(s, n, OP_SET, "value-two");
    double u = o < 0 ? -1 : pass(s, n, OP_UPDATE, "value-three");
    double d = u < 0 ? -1 : pass(s, n, OP_DELETE, NULL);
    store_free(s);
    if (d < 0)
        return 1;
    printf("bench_store: %ld keys in one dir: create %.0f/s, overwrite "
           "(set) %.0f/s, update %.0f/s, delete %.0f/s\n", n, c, o, u, d);
    return 0;
}
