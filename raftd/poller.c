/*
 * Idle poller.
 *
 * On a VM whose guest does not halt-poll (cpuidle-haltpoll with
 * guest_halt_poll_ns=0, as here), a vCPU with nothing to run halts, and
 * the next interrupt or wake-up aimed at it costs an exit to the host and
 * a host wake-up: tens of microseconds each. A sequential write pays that
 * several times: the fsync's completion interrupt, the wake of the thread
 * that waits for it, the client's wake for the answer, ours for its next
 * request. Keeping every CPU running through that window cut sequential
 * PUT from 164 to about 130 us (docs/benchmarks.md).
 *
 * So while the node has a request in flight, one thread per CPU spins.
 * They run at SCHED_IDLE: any runnable thread of any process takes the CPU
 * from them at once, so they only fill time that would be idle anyway.
 * When the window ends they sleep on a futex until poller_extend opens the
 * next one; waking them is one syscall, made only when they sleep.
 */
#include "poller.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define POLLER_MAX_THREADS 64

struct poller {
    _Atomic int64_t until_ns; /* spin while the clock is before this */
    _Atomic uint32_t wake;    /* futex word: bumped to wake the sleepers */
    _Atomic int sleeping;     /* threads in (or about to enter) futex wait */
    _Atomic bool stop;
    int n;
    pthread_t threads[POLLER_MAX_THREADS];
};

static int64_t poller_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void poller_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void futex_wait(_Atomic uint32_t *w, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL,
            0);
}

static void futex_wake_all(_Atomic uint32_t *w)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, POLLER_MAX_THREADS,
            NULL, NULL, 0);
}

static void *poller_main(void *arg)
{
    struct poller *p = arg;
    pthread_setname_np(pthread_self(), "raftd-poll");
    while (!atomic_load_explicit(&p->stop, memory_order_relaxed)) {
        uint32_t w;
        if (poller_now() < atomic_load_explicit(&p->until_ns,
                                                memory_order_relaxed)) {
            poller_relax(); /* one per clock read: no pause-loop exit */
            continue;
        }
        /* Announce the sleep, then look again: an extend that stored its
         * deadline before seeing sleeping > 0 is caught by the second
         * look; one after it bumps wake, and futex_wait returns at once. */
        w = atomic_load(&p->wake);
        atomic_fetch_add(&p->sleeping, 1);
        if (poller_now() >= atomic_load(&p->until_ns) &&
            !atomic_load(&p->stop))
            futex_wait(&p->wake, w);
        atomic_fetch_sub(&p->sleeping, 1);
    }
    return NULL;
}

int poller_start(struct poller **out)
{
    cpu_set_t set;
    struct poller *p;
    *out = NULL;
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return -errno;
    if (CPU_COUNT(&set) < 2)
        return 0; /* one CPU: the loop itself is what runs there */
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    for (int cpu = 0; cpu < CPU_SETSIZE && p->n < POLLER_MAX_THREADS;
         cpu++) {
        pthread_attr_t attr;
        struct sched_param sp = {0};
        cpu_set_t one;
        int rv;
        if (!CPU_ISSET(cpu, &set))
            continue;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        rv = pthread_attr_setaffinity_np(&attr, sizeof(one), &one);
        if (rv == 0)
            rv = pthread_create(&p->threads[p->n], &attr, poller_main, p);
        pthread_attr_destroy(&attr);
        if (rv != 0) {
            poller_stop(p);
            return -rv;
        }
        p->n++;
        /* SCHED_IDLE, or no poller at all: a spinner at normal priority
         * would take CPU from real work. (glibc's thread attributes only
         * take SCHED_OTHER, FIFO and RR, so it is set on the running
         * thread, which sleeps until the first window; no window can open
         * before poller_start returns.) */
        rv = pthread_setschedparam(p->threads[p->n - 1], SCHED_IDLE, &sp);
        if (rv != 0) {
            poller_stop(p);
            return -rv;
        }
    }
    *out = p;
    return 0;
}

void poller_extend(struct poller *p, int64_t ns)
{
    int64_t until, cur;
    if (p == NULL)
        return;
    until = poller_now() + ns;
    cur = atomic_load_explicit(&p->until_ns, memory_order_relaxed);
    do {
        if (until <= cur)
            return;
    } while (!atomic_compare_exchange_weak(&p->until_ns, &cur, until));
    if (atomic_load(&p->sleeping) > 0) {
        atomic_fetch_add(&p->wake, 1);
        futex_wake_all(&p->wake);
    }
}

int poller_threads(const struct poller *p)
{
    return p ? p->n : 0;
}

int poller_sleeping(struct poller *p)
{
    return p ? atomic_load(&p->sleeping) : 0;
}

void poller_stop(struct poller *p)
{
    if (p == NULL)
        return;
    atomic_store(&p->stop, true);
    atomic_fetch_add(&p->wake, 1);
    futex_wake_all(&p->wake);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    free(p);
}
