/* Benchmark of the Raft core alone (no I/O): proposals per second through
 * propose -> ready -> persist ack -> commit -> apply, on a single voter
 * and on an in-memory 3-voter cluster, one proposal per batch and 64 per
 * batch. Shows the core's own cost, to compare with fsync latency. */
#include "raft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N 3

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct qmsg {
    struct raft_message m;
    struct raft_entry e[64];
};

struct bench {
    struct raft *r[N];
    int n;
    struct qmsg *q;
    size_t nq, capq;
    raft_index applied[N];
};

static void enqueue(struct bench *b, const struct raft_message *m)
{
    struct qmsg *d;
    if (b->nq == b->capq) {
        b->capq = b->capq ? 2 * b->capq : 64;
        b->q = realloc(b->q, b->capq * sizeof(*b->q));
        if (b->q == NULL)
            abort();
    }
    d = &b->q[b->nq++];
    d->m = *m;
    /* Entry data stay valid: the bench frees batches only after the
     * whole queue is delivered. Copy the array header only. */
    if (m->n_entries > 64)
        abort();
    memcpy(d->e, m->entries, m->n_entries * sizeof(*m->entries));
    d->m.entries = d->e;
}

static void pump(struct bench *b)
{
    for (int round = 0; round < 64; round++) {
        struct raft_ready rds[N];
        int nr = 0;
        for (int i = 0; i < b->n; i++) {
            struct raft_ready *rd = &rds[nr];
            if (!raft_has_ready(b->r[i]) || raft_ready(b->r[i], rd) != 0)
                continue;
            nr++;
            for (size_t k = 0; k < rd->n_messages; k++)
                enqueue(b, &rd->messages[k]);
            raft_persisted(b->r[i], rd->persist_index, rd->persist_term);
            for (size_t k = 0; k < rd->n_messages_after_persist; k++)
                enqueue(b, &rd->messages_after_persist[k]);
            if (rd->n_committed) {
                b->applied[i] = rd->committed[rd->n_committed - 1].index;
                raft_applied(b->r[i], b->applied[i]);
            }
        }
        if (nr == 0 && b->nq == 0)
            return;
        for (size_t k = 0; k < b->nq; k++)
            raft_step(b->r[b->q[k].m.to - 1], &b->q[k].m);
        b->nq = 0;
        for (int i = 0; i < nr; i++)
            raft_ready_free(&rds[i]);
    }
}

static void run(int n, int per_batch, int total)
{
    static const raft_id voters[N] = {1, 2, 3};
    struct bench b;
    char payload[100];
    double t0, dt;
    int i, done = 0;

    memset(&b, 0, sizeof(b));
    memset(payload, 'v', sizeof(payload));
    b.n = n;
    for (i = 0; i < n; i++) {
        struct raft_config cfg = {.id = (raft_id)i + 1, .election_tick = 10,
                                  .seed = 3, .voters = voters,
                                  .n_voters = (size_t)n};
        if (raft_new(&cfg, NULL, NULL, NULL, 0, &b.r[i]) != 0)
            abort();
    }
    for (int t = 0; t < 100 && raft_role(b.r[0]) != RAFT_LEADER; t++) {
        raft_tick(b.r[0]);
        pump(&b);
    }
    if (raft_role(b.r[0]) != RAFT_LEADER)
        abort();
    t0 = now_s();
    while (done < total) {
        raft_index idx = 0;
        for (i = 0; i < per_batch; i++)
            if (raft_propose(b.r[0], RAFT_ENTRY_NORMAL, payload,
                             sizeof(payload), &idx, NULL) != 0)
                abort();
        done += per_batch;
        pump(&b);
        if (b.applied[0] < idx)
            abort();
        if (n > 1 && raft_compact(b.r[0], b.applied[0] > 1000
                                              ? b.applied[0] - 1000
                                              : 0) != 0)
            abort();
        for (i = 1; i < n; i++)
            raft_compact(b.r[i],
                         b.applied[i] > 1000 ? b.applied[i] - 1000 : 0);
        if (n == 1)
            raft_compact(b.r[0], b.applied[0] > 1000 ? b.applied[0] - 1000
                                                     : 0);
    }
    dt = now_s() - t0;
    printf("raft core: %d voter(s), %2d proposals/batch: %9.0f proposals/s "
           "(%.2f us each)\n",
           n, per_batch, total / dt, dt * 1e6 / total);
    for (i = 0; i < n; i++)
        raft_free(b.r[i]);
    free(b.q);
}

int main(void)
{
    run(1, 1, 200000);
    run(1, 64, 1000000);
    run(3, 1, 100000);
    run(3, 64, 500000);
    return 0;
}
