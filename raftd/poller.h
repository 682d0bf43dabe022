/* Idle poller: threads that keep this process's CPUs from idling while a
 * request is in flight (see poller.c and docs/raftd.md). */
#ifndef ETCFS_RAFTD_POLLER_H
#define ETCFS_RAFTD_POLLER_H

#include <stdint.h>

struct poller;

/* Start one SCHED_IDLE thread per CPU this process may run on, each pinned
 * to its CPU. 0 or -errno; *out is NULL when there is nothing to start. */
int poller_start(struct poller **out);

/* Keep the CPUs busy until ns nanoseconds from now (or later, if an
 * earlier call asked for longer). Cheap while the threads already spin:
 * one clock read and one atomic store. Safe from any thread; p may be
 * NULL. */
void poller_extend(struct poller *p, int64_t ns);

/* For tests: how many threads there are, and how many are asleep. */
int poller_threads(const struct poller *p);
int poller_sleeping(struct poller *p);

/* Stop and join the threads. p may be NULL. */
void poller_stop(struct poller *p);

#endif
