/* Randomized simulation of a Raft cluster on the pure core: every event
 * (tick, delivery, drop, duplicate, reorder, partition, persist, apply,
 * crash-restart, compaction, snapshot transfer, membership change) is
 * chosen by a seeded PRNG, one at a time, and the Raft safety properties
 * are checked as it runs. A failing seed prints itself; replay it with
 *   RAFT_SIM_SEED=<seed> ./test_raft_sim
 * and run more schedules with RAFT_SIM_SEEDS=<count> (default below),
 * starting at RAFT_SIM_FIRST, each RAFT_SIM_STEPS events long. */
#ifdef RAFT_SIM_NOMEM
/* Built as test_raft_nomem: the core is compiled into this program with
 * its allocations routed through a countdown that makes one fail, and
 * the schedules arm it at random. -ENOMEM must never cost safety. */
#include <stdlib.h>
#include <string.h>
static unsigned long nomem_countdown; /* 0: off; n: the nth call fails */
static unsigned long long nomem_failures;
static int nomem_hit(void)
{
    if (nomem_countdown == 0 || --nomem_countdown != 0)
        return 0;
    nomem_failures++;
    return 1;
}
static void *nomem_malloc(size_t n) { return nomem_hit() ? NULL : malloc(n); }
static void *nomem_calloc(size_t a, size_t b)
{
    return nomem_hit() ? NULL : calloc(a, b);
}
static void *nomem_realloc(void *p, size_t n)
{
    return nomem_hit() ? NULL : realloc(p, n);
}
#define malloc nomem_malloc
#define calloc nomem_calloc
#define realloc nomem_realloc
#include "raft.c"
#undef malloc
#undef calloc
#undef realloc
#define NOMEM_OK(rv) ((rv) == -ENOMEM)
#define PROGRAM "test_raft_nomem"
#define NOMEM_ARM(s) (nomem_countdown = 1 + rndn((s), 30))
#define NOMEM_OFF() (nomem_countdown = 0)
#else
#include "raft.h"
#define NOMEM_OK(rv) 0
#define PROGRAM "test_raft_sim"
#define NOMEM_ARM(s) ((void)(s))
#define NOMEM_OFF() ((void)0)
#endif
#include "test.h"

#include <errno.h>
#include <stdarg.h>

#define MAXN 5
#ifdef RAFT_SIM_NOMEM
#define DEFAULT_SEEDS 2000
#else
#define DEFAULT_SEEDS 4000
#endif
#define MAX_RSNAP 8

struct rsnap {
    raft_index index;
    uint64_t hash;
};

struct node {
    raft_id id;
    struct raft *r;
    struct raft_config cfg;
    /* Disk: what survives a crash. */
    struct raft_hard_state hs;
    struct raft_snapshot_meta snap;
    uint64_t snap_hash;
    struct raft_entry *log; /* entries after snap.index; data malloc'd */
    size_t nlog, caplog;
    /* Batches taken but not yet durable: lost on crash. */
    struct raft_ready *pend;
    size_t npend, cappend;
    /* State machine: a hash chain over applied entries. */
    raft_index applied;
    uint64_t state;
    /* Snapshot data received from leaders, by index. */
    struct rsnap in[MAX_RSNAP];
    unsigned nin;
    bool was_leader;
    raft_term leader_term;
    raft_index seen_commit;
};

struct netmsg {
    struct raft_message m;
    uint64_t snap_hash;
};

struct read_req {
    uint64_t ctx;
    raft_index min_index;
};

struct sim {
    uint64_t seed, rng;
    int n;          /* nodes in the simulation */
    int n_initial;  /* of which bootstrap the cluster */
    struct node nodes[MAXN];
    struct netmsg *net;
    size_t nnet, capnet;
    int group[MAXN]; /* partition group of each node */
    raft_id voters[MAXN]; /* initial cluster */
    unsigned drop_pct, dup_pct;
    bool conf_changes;
    /* Checks. */
    raft_id *leader_of_term;
    size_t cap_terms;
    uint64_t *hash_at;       /* state hash after applying index */
    raft_term *term_at;      /* term of committed entry at index */
    raft_term *commit_term;  /* smallest leader term seen committing it */
    size_t cap_idx;
    raft_index max_applied;
    struct read_req *reads;
    size_t nreads, capreads;
    uint64_t next_ctx, proposals, events;
    unsigned long long n_elections, n_snapshots_sent, n_reads_done;
    unsigned long long n_with_leader, n_proposed, n_crashes, n_conf_applied;
    char why[512];
    bool failed;
};

static bool trace_on;
#define TRACE(...)                                                             \
    do {                                                                       \
        if (trace_on)                                                          \
            fprintf(stderr, __VA_ARGS__);                                      \
    } while (0)

static bool sim_fail(struct sim *s, const char *fmt, ...)
{
    va_list ap;
    if (!s->failed) {
        va_start(ap, fmt);
        vsnprintf(s->why, sizeof(s->why), fmt, ap);
        va_end(ap);
        s->failed = true;
    }
    return false;
}

static uint64_t rnd(struct sim *s)
{
    uint64_t z = (s->rng += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static unsigned rndn(struct sim *s, unsigned n)
{
    return (unsigned)(rnd(s) % n);
}

static uint64_t mix(uint64_t h, const void *data, size_t len, raft_index i,
                    raft_term t)
{
    const unsigned char *p = data;
    h ^= i * UINT64_C(0x100000001b3) + t;
    for (size_t k = 0; k < len; k++)
        h = (h ^ p[k]) * UINT64_C(0x100000001b3);
    return h * UINT64_C(0x9E3779B97F4A7C15) + 1;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        abort(); /* test harness only */
    return p;
}

static void ensure(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return;
    size_t nc = *cap ? *cap : 16;
    while (nc < need)
        nc *= 2;
    void *p = realloc(*arr, nc * elem);
    if (p == NULL)
        abort();
    memset((char *)p + *cap * elem, 0, (nc - *cap) * elem);
    *arr = p;
    *cap = nc;
}

static void ensure_idx(struct sim *s, raft_index i)
{
    size_t cap = s->cap_idx;
    ensure((void **)&s->hash_at, &cap, i + 1, sizeof(*s->hash_at));
    cap = s->cap_idx;
    ensure((void **)&s->term_at, &cap, i + 1, sizeof(*s->term_at));
    cap = s->cap_idx;
    ensure((void **)&s->commit_term, &cap, i + 1, sizeof(*s->commit_term));
    s->cap_idx = cap;
}

static struct raft_entry entry_dup(const struct raft_entry *e)
{
    struct raft_entry d = *e;
    d.data = NULL;
    if (e->len > 0) {
        d.data = xmalloc(e->len);
        memcpy(d.data, e->data, e->len);
    }
    return d;
}

/* ------------------------------------------------------------------ */
/* Network                                                             */

static void net_send(struct sim *s, struct node *from,
                     const struct raft_message *m)
{
    struct netmsg *nm;
    if (m->to == 0 || m->to > (raft_id)s->n) {
        sim_fail(s, "message to unknown node %llu", (unsigned long long)m->to);
        return;
    }
    ensure((void **)&s->net, &s->capnet, s->nnet + 1, sizeof(*s->net));
    nm = &s->net[s->nnet++];
    nm->m = *m;
    nm->snap_hash = 0;
    if (m->n_entries > 0) {
        nm->m.entries = xmalloc(m->n_entries * sizeof(*m->entries));
        for (size_t i = 0; i < m->n_entries; i++)
            nm->m.entries[i] = entry_dup(&m->entries[i]);
    } else {
        nm->m.entries = NULL;
    }
    if (m->type == RAFT_MSG_SNAPSHOT) {
        /* The node loop streams its latest snapshot file, which may be
         * newer than the one the core asked for (compacted since). */
        if (from->snap.index > m->snapshot.index)
            nm->m.snapshot = from->snap;
        if (from->snap.index < m->snapshot.index)
            sim_fail(s, "node %llu sends snapshot %llu but has %llu on disk",
                     (unsigned long long)from->id,
                     (unsigned long long)m->snapshot.index,
                     (unsigned long long)from->snap.index);
        nm->snap_hash = from->snap_hash;
        s->n_snapshots_sent++;
    }
}

static void netmsg_free(struct netmsg *nm)
{
    for (size_t i = 0; i < nm->m.n_entries; i++)
        free(nm->m.entries[i].data);
    free(nm->m.entries);
}

static void net_remove(struct sim *s, size_t i)
{
    netmsg_free(&s->net[i]);
    s->net[i] = s->net[--s->nnet];
}

static struct node *node_of(struct sim *s, raft_id id)
{
    return &s->nodes[id - 1];
}

/* ------------------------------------------------------------------ */
/* Node loop                                                           */

static void apply_entry(struct sim *s, struct node *nd,
                        const struct raft_entry *e)
{
    if (e->index != nd->applied + 1) {
        sim_fail(s, "node %llu applies %llu after %llu",
                 (unsigned long long)nd->id, (unsigned long long)e->index,
                 (unsigned long long)nd->applied);
        return;
    }
    if (e->type == RAFT_ENTRY_CONF_CHANGE && e->index > (raft_index)s->n_initial)
        s->n_conf_applied++;
    nd->state = mix(nd->state, e->data, e->len, e->index, e->term);
    nd->applied = e->index;
    ensure_idx(s, e->index);
    if (s->hash_at[e->index] == 0) {
        s->hash_at[e->index] = nd->state;
        s->term_at[e->index] = e->term;
    } else if (s->hash_at[e->index] != nd->state) {
        sim_fail(s, "state machine safety: node %llu differs at index %llu",
                 (unsigned long long)nd->id, (unsigned long long)e->index);
        return;
    }
    if (e->index > s->max_applied)
        s->max_applied = e->index;
}

static void check_read(struct sim *s, const struct raft_read_state *rs)
{
    for (size_t i = 0; i < s->nreads; i++) {
        if (s->reads[i].ctx != rs->ctx)
            continue;
        if (rs->index < s->reads[i].min_index)
            sim_fail(s, "stale read: ctx %llu index %llu < %llu committed "
                        "before the read began",
                     (unsigned long long)rs->ctx,
                     (unsigned long long)rs->index,
                     (unsigned long long)s->reads[i].min_index);
        s->n_reads_done++;
        return;
    }
    sim_fail(s, "read state for unknown ctx %llu", (unsigned long long)rs->ctx);
}

static void node_take_ready(struct sim *s, struct node *nd)
{
    struct raft_ready rd;
    int rv;
    if (!raft_has_ready(nd->r))
        return;
    rv = raft_ready(nd->r, &rd);
    if (NOMEM_OK(rv))
        return;
    if (rv != 0) {
        sim_fail(s, "raft_ready: %d", rv);
        return;
    }
    for (size_t i = 0; i < rd.n_messages; i++)
        net_send(s, nd, &rd.messages[i]);
    for (size_t i = 0; i < rd.n_committed; i++)
        apply_entry(s, nd, &rd.committed[i]);
    if (rd.n_committed > 0)
        raft_applied(nd->r, nd->applied);
    for (size_t i = 0; i < rd.n_read_states; i++)
        check_read(s, &rd.read_states[i]);
    ensure((void **)&nd->pend, &nd->cappend, nd->npend + 1, sizeof(*nd->pend));
    nd->pend[nd->npend++] = rd;
}

static void disk_truncate(struct node *nd, size_t keep)
{
    for (size_t i = keep; i < nd->nlog; i++)
        free(nd->log[i].data);
    if (keep < nd->nlog)
        nd->nlog = keep;
}

static void node_persist(struct sim *s, struct node *nd)
{
    struct raft_ready rd;
    if (nd->npend == 0)
        return;
    rd = nd->pend[0];
    TRACE("persist node %llu: hs %d (t%llu v%llu c%llu) n%zu from %llu snap %d "
          "ack %llu/%llu\n",
          (unsigned long long)nd->id, rd.has_hard_state,
          (unsigned long long)rd.hard_state.term,
          (unsigned long long)rd.hard_state.vote,
          (unsigned long long)rd.hard_state.commit, rd.n_entries,
          (unsigned long long)(rd.n_entries ? rd.entries[0].index : 0),
          rd.has_snapshot, (unsigned long long)rd.persist_index,
          (unsigned long long)rd.persist_term);
    memmove(nd->pend, nd->pend + 1, (nd->npend - 1) * sizeof(*nd->pend));
    nd->npend--;
    if (rd.has_snapshot) {
        unsigned k;
        for (k = 0; k < nd->nin; k++)
            if (nd->in[k].index == rd.snapshot.index)
                break;
        if (k == nd->nin) {
            sim_fail(s, "node %llu installs snapshot %llu it never received",
                     (unsigned long long)nd->id,
                     (unsigned long long)rd.snapshot.index);
        } else {
            disk_truncate(nd, 0);
            nd->snap = rd.snapshot;
            nd->snap_hash = nd->in[k].hash;
            /* Loading the store from the snapshot. */
            if (nd->applied >= rd.snapshot.index)
                sim_fail(s, "snapshot %llu behind applied %llu",
                         (unsigned long long)rd.snapshot.index,
                         (unsigned long long)nd->applied);
            nd->applied = rd.snapshot.index;
            nd->state = nd->in[k].hash;
            ensure_idx(s, nd->applied);
            if (s->hash_at[nd->applied] == 0)
                s->hash_at[nd->applied] = nd->state;
            else if (s->hash_at[nd->applied] != nd->state)
                sim_fail(s, "snapshot state differs at %llu",
                         (unsigned long long)nd->applied);
            raft_applied(nd->r, nd->applied);
        }
    }
    if (rd.n_entries > 0) {
        raft_index f = rd.entries[0].index;
        if (f <= nd->snap.index || f - nd->snap.index - 1 > nd->nlog) {
            sim_fail(s, "node %llu: entries from %llu do not follow disk "
                        "(snap %llu, %zu entries)",
                     (unsigned long long)nd->id, (unsigned long long)f,
                     (unsigned long long)nd->snap.index, nd->nlog);
        } else {
            disk_truncate(nd, f - nd->snap.index - 1);
            ensure((void **)&nd->log, &nd->caplog, nd->nlog + rd.n_entries,
                   sizeof(*nd->log));
            for (size_t i = 0; i < rd.n_entries; i++)
                nd->log[nd->nlog++] = entry_dup(&rd.entries[i]);
        }
    }
    if (rd.has_hard_state)
        nd->hs = rd.hard_state;
    raft_persisted(nd->r, rd.persist_index, rd.persist_term);
    for (size_t i = 0; i < rd.n_messages_after_persist; i++)
        net_send(s, nd, &rd.messages_after_persist[i]);
    raft_ready_free(&rd);
}

static int node_start(struct sim *s, struct node *nd)
{
    int rv;
    nd->applied = nd->snap.index;
    nd->state = nd->snap_hash;
    nd->nin = 0;
    nd->was_leader = false;
    nd->seen_commit = 0;
    rv = raft_new(&nd->cfg, &nd->hs, &nd->snap, nd->log, nd->nlog, &nd->r);
    if (NOMEM_OK(rv)) {
        /* The node loop would retry; so do we, without failures. */
        NOMEM_OFF();
        rv = raft_new(&nd->cfg, &nd->hs, &nd->snap, nd->log, nd->nlog,
                      &nd->r);
    }
    if (rv != 0)
        sim_fail(s, "raft_new node %llu: %d", (unsigned long long)nd->id, rv);
    return rv;
}

static void node_crash(struct sim *s, struct node *nd)
{
    TRACE("crash node %llu\n", (unsigned long long)nd->id);
    /* Sometimes the write in progress is torn: a prefix of its entries
     * reached the disk, its hard state did not. */
    if (nd->npend > 0 && !nd->pend[0].has_snapshot &&
        nd->pend[0].n_entries > 0 && rndn(s, 2) == 0) {
        struct raft_ready *rd = &nd->pend[0];
        raft_index f = rd->entries[0].index;
        size_t k = rndn(s, (unsigned)rd->n_entries + 1);
        if (f > nd->snap.index && f - nd->snap.index - 1 <= nd->nlog) {
            disk_truncate(nd, f - nd->snap.index - 1);
            ensure((void **)&nd->log, &nd->caplog, nd->nlog + k,
                   sizeof(*nd->log));
            for (size_t i = 0; i < k; i++)
                nd->log[nd->nlog++] = entry_dup(&rd->entries[i]);
        }
    }
    for (size_t i = 0; i < nd->npend; i++)
        raft_ready_free(&nd->pend[i]);
    nd->npend = 0;
    raft_free(nd->r);
    nd->r = NULL;
    node_start(s, nd);
}

static void node_compact(struct sim *s, struct node *nd)
{
    struct raft_snapshot_meta meta;
    raft_index i = nd->applied;
    size_t drop;
    if (i <= nd->snap.index || i > raft_persisted_index(nd->r))
        return;
    if (raft_snapshot_meta(nd->r, i, &meta) != 0)
        return;
    if (raft_compact(nd->r, i) != 0)
        return;
    drop = i - nd->snap.index;
    if (drop > nd->nlog) {
        sim_fail(s, "compacting beyond the disk log");
        return;
    }
    for (size_t k = 0; k < drop; k++)
        free(nd->log[k].data);
    memmove(nd->log, nd->log + drop, (nd->nlog - drop) * sizeof(*nd->log));
    nd->nlog -= drop;
    nd->snap = meta;
    nd->snap_hash = nd->state;
}

static void node_free(struct node *nd)
{
    for (size_t i = 0; i < nd->npend; i++)
        raft_ready_free(&nd->pend[i]);
    free(nd->pend);
    raft_free(nd->r);
    disk_truncate(nd, 0);
    free(nd->log);
}

/* ------------------------------------------------------------------ */
/* Events                                                              */

static void deliver(struct sim *s, size_t i, bool dup)
{
    struct netmsg nm = s->net[i];
    struct node *to = node_of(s, nm.m.to);
    struct node *from = node_of(s, nm.m.from);
    bool cut = s->group[to->id - 1] != s->group[from->id - 1];
    int rv;

    if (dup) {
        /* Deliver a copy and leave the original in flight. */
        struct raft_message *orig = &s->net[i].m;
        nm.m.entries = NULL;
        if (orig->n_entries > 0) {
            nm.m.entries = xmalloc(orig->n_entries * sizeof(*orig->entries));
            for (size_t k = 0; k < orig->n_entries; k++)
                nm.m.entries[k] = entry_dup(&orig->entries[k]);
        }
    } else {
        s->net[i] = s->net[--s->nnet];
    }
    if (cut) {
        if (nm.m.type == RAFT_MSG_SNAPSHOT)
            raft_report_snapshot(from->r, to->id, false);
        netmsg_free(&nm);
        return;
    }
    if (nm.m.type == RAFT_MSG_SNAPSHOT) {
        to->in[to->nin % MAX_RSNAP].index = nm.m.snapshot.index;
        to->in[to->nin % MAX_RSNAP].hash = nm.snap_hash;
        if (to->nin < MAX_RSNAP)
            to->nin++;
    }
    TRACE("deliver %d %llu->%llu t%llu lt%llu i%llu c%llu n%zu rej%d hint%llu ctx%llu\n",
          nm.m.type, (unsigned long long)nm.m.from,
          (unsigned long long)nm.m.to, (unsigned long long)nm.m.term,
          (unsigned long long)nm.m.log_term, (unsigned long long)nm.m.index,
          (unsigned long long)nm.m.commit, nm.m.n_entries, nm.m.reject,
          (unsigned long long)nm.m.reject_hint,
          (unsigned long long)nm.m.context);
    rv = raft_step(to->r, &nm.m);
    if (rv != 0 && !NOMEM_OK(rv))
        sim_fail(s, "node %llu: raft_step type %d from %llu: %d",
                 (unsigned long long)to->id, nm.m.type,
                 (unsigned long long)nm.m.from, rv);
    if (nm.m.type == RAFT_MSG_SNAPSHOT)
        raft_report_snapshot(from->r, to->id, true);
    netmsg_free(&nm);
}

static void drop_msg(struct sim *s, size_t i)
{
    struct netmsg *nm = &s->net[i];
    if (nm->m.type == RAFT_MSG_SNAPSHOT)
        raft_report_snapshot(node_of(s, nm->m.from)->r, nm->m.to, false);
    else if (rndn(s, 4) == 0)
        raft_report_unreachable(node_of(s, nm->m.from)->r, nm->m.to);
    net_remove(s, i);
}

static void propose(struct sim *s, struct node *nd)
{
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "p%llu",
                       (unsigned long long)++s->proposals);
    int rv;
    if (raft_role(nd->r) == RAFT_LEADER) {
        rv = raft_propose(nd->r, RAFT_ENTRY_NORMAL, buf, (size_t)len, NULL,
                          NULL);
        if (rv == 0)
            s->n_proposed++;
    } else
        rv = raft_forward(nd->r, RAFT_ENTRY_NORMAL, buf, (size_t)len);
    if (rv != 0 && rv != -RAFT_ENOLEADER && rv != -RAFT_ETRANSFER &&
        rv != -RAFT_ENOTLEADER && !NOMEM_OK(rv))
        sim_fail(s, "propose: %d", rv);
}

static void conf_change(struct sim *s, struct node *nd)
{
    struct raft_conf_state conf;
    struct raft_conf_change cc = {0};
    void *buf;
    size_t len;
    int rv;
    raft_id target = 1 + rndn(s, (unsigned)s->n);
    if (raft_role(nd->r) != RAFT_LEADER)
        return;
    raft_conf(nd->r, &conf);
    bool member = false;
    for (unsigned i = 0; i < conf.n_voters; i++)
        member = member || conf.voters[i] == target;
    if (member && conf.n_voters <= 2)
        return; /* keep enough voters for the cluster to make progress */
    cc.op = member ? RAFT_CONF_REMOVE_VOTER : RAFT_CONF_ADD_VOTER;
    cc.node = target;
    rv = raft_conf_change_encode(&cc, &buf, &len);
    if (NOMEM_OK(rv))
        return;
    if (rv != 0) {
        sim_fail(s, "encode");
        return;
    }
    rv = raft_propose(nd->r, RAFT_ENTRY_CONF_CHANGE, buf, len, NULL, NULL);
    free(buf);
    if (rv != 0 && rv != -RAFT_ECONFPENDING && rv != -RAFT_ETRANSFER &&
        !NOMEM_OK(rv))
        sim_fail(s, "conf change: %d", rv);
}

static void read_index(struct sim *s, struct node *nd)
{
    uint64_t ctx = ++s->next_ctx;
    int rv = raft_read_index(nd->r, ctx);
    if (rv == -RAFT_ENOLEADER || NOMEM_OK(rv))
        return;
    if (rv != 0) {
        sim_fail(s, "read_index: %d", rv);
        return;
    }
    ensure((void **)&s->reads, &s->capreads, s->nreads + 1, sizeof(*s->reads));
    s->reads[s->nreads].ctx = ctx;
    /* Everything applied anywhere was committed before the read began. */
    s->reads[s->nreads].min_index = s->max_applied;
    s->nreads++;
}

static void partition(struct sim *s)
{
    if (rndn(s, 2) == 0) {
        for (int i = 0; i < s->n; i++)
            s->group[i] = 0;
        return;
    }
    for (int i = 0; i < s->n; i++)
        s->group[i] = (int)rndn(s, 2);
}

/* ------------------------------------------------------------------ */
/* Invariants                                                          */

static void check_leader_completeness(struct sim *s, struct node *nd,
                                      raft_term term)
{
    raft_index first = raft_first_index(nd->r);
    for (raft_index i = 1; i < s->cap_idx && i <= s->max_applied; i++) {
        raft_term t;
        if (s->commit_term[i] == 0 || s->commit_term[i] >= term || i < first)
            continue;
        if (raft_term_at(nd->r, i, &t) != 0 || t != s->term_at[i]) {
            sim_fail(s, "leader completeness: leader %llu of term %llu lacks "
                        "entry %llu committed in term %llu",
                     (unsigned long long)nd->id, (unsigned long long)term,
                     (unsigned long long)i,
                     (unsigned long long)s->commit_term[i]);
            return;
        }
    }
}

static void check_nodes(struct sim *s)
{
    for (int k = 0; k < s->n; k++) {
        struct node *nd = &s->nodes[k];
        raft_term term = raft_current_term(nd->r);
        raft_index commit = raft_commit_index(nd->r);
        if (raft_role(nd->r) != RAFT_LEADER) {
            nd->was_leader = false;
            continue;
        }
        s->n_with_leader++;
        {
            size_t cap = s->cap_terms;
            ensure((void **)&s->leader_of_term, &cap, term + 1,
                   sizeof(*s->leader_of_term));
            s->cap_terms = cap;
        }
        if (s->leader_of_term[term] == 0) {
            TRACE("leader node %llu term %llu last %llu\n",
                  (unsigned long long)nd->id, (unsigned long long)term,
                  (unsigned long long)raft_last_index(nd->r));
            s->leader_of_term[term] = nd->id;
            s->n_elections++;
        } else if (s->leader_of_term[term] != nd->id) {
            sim_fail(s, "election safety: %llu and %llu lead term %llu",
                     (unsigned long long)s->leader_of_term[term],
                     (unsigned long long)nd->id, (unsigned long long)term);
            return;
        }
        if (!nd->was_leader || nd->leader_term != term) {
            nd->was_leader = true;
            nd->leader_term = term;
            nd->seen_commit = 0;
            check_leader_completeness(s, nd, term);
        }
        /* Record who committed what, for leader completeness. */
        if (commit > nd->seen_commit) {
            ensure_idx(s, commit);
            for (raft_index i = nd->seen_commit + 1; i <= commit; i++) {
                raft_term t;
                if (raft_term_at(nd->r, i, &t) != 0)
                    continue;
                if (s->term_at[i] != 0 && s->term_at[i] != t) {
                    sim_fail(s, "leader %llu committed index %llu of term "
                                "%llu, applied elsewhere with term %llu",
                             (unsigned long long)nd->id,
                             (unsigned long long)i, (unsigned long long)t,
                             (unsigned long long)s->term_at[i]);
                    return;
                }
                s->term_at[i] = t;
                TRACE("commit %llu (term %llu) by leader %llu term %llu\n",
                      (unsigned long long)i, (unsigned long long)t,
                      (unsigned long long)nd->id, (unsigned long long)term);
                if (s->commit_term[i] == 0 || s->commit_term[i] > term)
                    s->commit_term[i] = term;
            }
            nd->seen_commit = commit;
        }
    }
}

/* Log matching: if two logs hold an entry with the same index and term,
 * they are identical up to there. */
static void check_log_matching(struct sim *s)
{
    for (int a = 0; a < s->n; a++) {
        for (int b = a + 1; b < s->n; b++) {
            struct raft *ra = s->nodes[a].r, *rb = s->nodes[b].r;
            raft_index lo = raft_first_index(ra), hi = raft_last_index(ra);
            bool matched = false;
            if (raft_first_index(rb) > lo)
                lo = raft_first_index(rb);
            if (raft_last_index(rb) < hi)
                hi = raft_last_index(rb);
            for (raft_index i = hi; i >= lo && i > 0; i--) {
                struct raft_entry ea, eb;
                if (raft_entry_get(ra, i, &ea) != 0 ||
                    raft_entry_get(rb, i, &eb) != 0) {
                    sim_fail(s, "log matching: index %llu in range but not "
                             "in the log of node %d or %d",
                             (unsigned long long)i, a + 1, b + 1);
                    return;
                }
                if (!matched && ea.term == eb.term)
                    matched = true;
                if (matched &&
                    (ea.term != eb.term || ea.len != eb.len ||
                     ea.type != eb.type ||
                     (ea.len && memcmp(ea.data, eb.data, ea.len) != 0))) {
                    sim_fail(s, "log matching: nodes %d and %d differ at %llu",
                             a + 1, b + 1, (unsigned long long)i);
                    return;
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* Schedules                                                           */

static void sim_init(struct sim *s, uint64_t seed)
{
    raft_id *voters = s->voters;
    memset(s, 0, sizeof(*s));
    s->seed = seed;
    s->rng = seed * UINT64_C(0x2545F4914F6CDD1D) + 7;
    s->conf_changes = rndn(s, 3) == 0;
    s->n = rndn(s, 2) ? 3 : 5;
    s->n_initial = s->n;
    if (s->conf_changes) {
        s->n = 5;
        s->n_initial = 3;
    }
    s->drop_pct = rndn(s, 4) * 5;
    s->dup_pct = rndn(s, 3) * 3;
    for (int i = 0; i < s->n_initial; i++)
        voters[i] = (raft_id)i + 1;
    bool pre_vote = rndn(s, 2), check_quorum = rndn(s, 2);
    unsigned inflight = 1 + rndn(s, 4);
    size_t msg_bytes = rndn(s, 2) ? 8 : 1 << 20;
    raft_index catchup = rndn(s, 4);
    for (int i = 0; i < s->n; i++) {
        struct node *nd = &s->nodes[i];
        nd->id = (raft_id)i + 1;
        nd->cfg.id = nd->id;
        nd->cfg.election_tick = 10;
        nd->cfg.heartbeat_tick = 1 + rndn(s, 3);
        nd->cfg.seed = rnd(s);
        nd->cfg.pre_vote = pre_vote;
        nd->cfg.check_quorum = check_quorum;
        nd->cfg.max_inflight = inflight;
        nd->cfg.max_msg_bytes = msg_bytes;
        nd->cfg.snapshot_catchup_entries = catchup;
        /* Joining members start empty and learn the configuration; the
         * initial ones bootstrap again if they crash before persisting
         * anything (an empty data dir), as etcd does. */
        if (i < s->n_initial) {
            nd->cfg.voters = voters;
            nd->cfg.n_voters = (size_t)s->n_initial;
        }
        node_start(s, nd);
    }
}

static void sim_free(struct sim *s)
{
    for (int i = 0; i < s->n; i++)
        node_free(&s->nodes[i]);
    while (s->nnet > 0)
        net_remove(s, s->nnet - 1);
    free(s->net);
    free(s->leader_of_term);
    free(s->hash_at);
    free(s->term_at);
    free(s->commit_term);
    free(s->reads);
}

static void step_random(struct sim *s)
{
    unsigned x = rndn(s, 1000);
    struct node *nd = &s->nodes[rndn(s, (unsigned)s->n)];
    /* Re-roll events that would do nothing, so every step counts. */
    for (int k = 0; k < 8; k++) {
        if ((x < 350 && s->nnet == 0) ||
            (x >= 600 && x < 720 && !raft_has_ready(nd->r)) ||
            (x >= 720 && x < 840 && nd->npend == 0)) {
            x = rndn(s, 1000);
            nd = &s->nodes[rndn(s, (unsigned)s->n)];
        }
    }
    s->events++;
    if (x < 350) {
        if (s->nnet == 0)
            return;
        size_t i = rndn(s, (unsigned)s->nnet);
        if (rndn(s, 100) < s->drop_pct)
            drop_msg(s, i);
        else
            deliver(s, i, rndn(s, 100) < s->dup_pct);
    } else if (x < 600) {
        enum raft_role before = raft_role(nd->r);
        raft_tick(nd->r);
        if (raft_role(nd->r) != before)
            TRACE("tick node %llu: %s term %llu\n", (unsigned long long)nd->id,
                  raft_role_name(raft_role(nd->r)),
                  (unsigned long long)raft_current_term(nd->r));
    } else if (x < 720) {
        node_take_ready(s, nd);
    } else if (x < 840) {
        node_persist(s, nd);
    } else if (x < 900) {
        /* Mostly to a leader, as clients find it; else forwarded. */
        for (int k = 0; k < s->n && rndn(s, 5) != 0; k++)
            if (raft_role(s->nodes[k].r) == RAFT_LEADER)
                nd = &s->nodes[k];
        propose(s, nd);
    } else if (x < 920) {
        read_index(s, nd);
    } else if (x < 940) {
        node_compact(s, nd);
    } else if (x < 955) {
        if (s->conf_changes)
            for (int k = 0; k < s->n; k++)
                if (raft_role(s->nodes[k].r) == RAFT_LEADER)
                    conf_change(s, &s->nodes[k]);
    } else if (x < 960) {
        node_crash(s, nd);
    } else if (x < 975) {
        partition(s);
    } else if (x < 985) {
        if (raft_role(nd->r) == RAFT_LEADER)
            (void)raft_transfer_leader(nd->r, 1 + rndn(s, (unsigned)s->n));
    } else if (x < 1000) {
        NOMEM_ARM(s);
    }
}

static void dump(struct sim *s)
{
    for (int i = 0; i < s->n; i++) {
        struct node *nd = &s->nodes[i];
        struct raft_conf_state c;
        raft_conf(nd->r, &c);
        fprintf(stderr,
                "  node %d: %s term %llu leader %llu commit %llu applied "
                "%llu last %llu persisted %llu first %llu voters",
                i + 1, raft_role_name(raft_role(nd->r)),
                (unsigned long long)raft_current_term(nd->r),
                (unsigned long long)raft_leader(nd->r),
                (unsigned long long)raft_commit_index(nd->r),
                (unsigned long long)nd->applied,
                (unsigned long long)raft_last_index(nd->r),
                (unsigned long long)raft_persisted_index(nd->r),
                (unsigned long long)raft_first_index(nd->r));
        for (unsigned v = 0; v < c.n_voters; v++) {
            raft_index m = 0, nx = 0;
            raft_progress(nd->r, c.voters[v], &m, &nx);
            fprintf(stderr, " %llu(%llu/%llu)",
                    (unsigned long long)c.voters[v], (unsigned long long)m,
                    (unsigned long long)nx);
        }
        fputc('\n', stderr);
    }
}

/* Heals the network and runs without faults: a leader must emerge and a
 * new proposal must reach every member of the final configuration. */
static void converge(struct sim *s)
{
    raft_index target = 0;
    raft_term target_term = 0;
    NOMEM_OFF();
    raft_id target_lead = 0;
    for (int i = 0; i < s->n; i++)
        s->group[i] = 0;
    for (int round = 0; round < 3000 && !s->failed; round++) {
        struct node *lead = NULL;
        struct raft_conf_state conf;
        bool done = true;
        while (s->nnet > 0 && !s->failed)
            deliver(s, rndn(s, (unsigned)s->nnet), false);
        for (int i = 0; i < s->n; i++) {
            node_take_ready(s, &s->nodes[i]);
            while (s->nodes[i].npend > 0)
                node_persist(s, &s->nodes[i]);
            /* A removed or cut-off member may still think it leads an
             * older term: the live leader has the highest term. */
            if (raft_role(s->nodes[i].r) == RAFT_LEADER &&
                (lead == NULL || raft_current_term(s->nodes[i].r) >
                                     raft_current_term(lead->r)))
                lead = &s->nodes[i];
        }
        check_nodes(s);
        if (round % 3 == 0)
            for (int i = 0; i < s->n; i++)
                raft_tick(s->nodes[i].r);
        if (lead == NULL)
            continue;
        if (target_lead != lead->id ||
            target_term != raft_current_term(lead->r)) {
            /* A new leader: the last proposal may be lost, propose anew. */
            raft_index idx;
            if (raft_propose(lead->r, RAFT_ENTRY_NORMAL, "final", 5, &idx,
                             NULL) == 0) {
                target = idx;
                target_lead = lead->id;
                target_term = raft_current_term(lead->r);
            }
            continue;
        }
        raft_conf(lead->r, &conf);
        for (unsigned v = 0; v < conf.n_voters; v++)
            if (node_of(s, conf.voters[v])->applied < target)
                done = false;
        if (done)
            return;
    }
    if (!s->failed) {
        sim_fail(s, "no progress after healing (target %llu)",
                 (unsigned long long)target);
        dump(s);
    }
}

struct totals {
    unsigned long long elections, applied, conf, snapshots, reads;
};

static bool run_schedule(uint64_t seed, unsigned steps, bool verbose,
                         struct totals *tot)
{
    struct sim *s = calloc(1, sizeof(*s));
    bool ok;
    if (s == NULL)
        abort();
    sim_init(s, seed);
    for (unsigned i = 0; i < steps && !s->failed; i++) {
        step_random(s);
        check_nodes(s);
        if (i % 64 == 0)
            check_log_matching(s);
    }
    if (!s->failed)
        check_log_matching(s);
    if (!s->failed)
        converge(s);
    if (!s->failed)
        check_log_matching(s);
    ok = !s->failed;
    if (!ok)
        fprintf(stderr, "raft sim: seed %llu failed after %llu events: %s\n"
                        "  replay: RAFT_SIM_SEED=%llu %s\n",
                (unsigned long long)seed, (unsigned long long)s->events,
                s->why, (unsigned long long)seed, PROGRAM);
    if (verbose)
        fprintf(stderr,
                "seed %llu: n=%d conf=%d elections=%llu applied=%llu "
                "snapshots=%llu reads=%llu leader-steps=%llu proposed=%llu "
                "events=%llu conf-applied=%llu\n",
                (unsigned long long)seed, s->n, s->conf_changes,
                s->n_elections, (unsigned long long)s->max_applied,
                s->n_snapshots_sent, s->n_reads_done, s->n_with_leader,
                s->n_proposed, (unsigned long long)s->events,
                s->n_conf_applied);
    tot->elections += s->n_elections;
    tot->applied += s->max_applied;
    tot->conf += s->n_conf_applied;
    tot->snapshots += s->n_snapshots_sent;
    tot->reads += s->n_reads_done;
    sim_free(s);
    free(s);
    return ok;
}

TEST(random_schedules)
{
    const char *one = getenv("RAFT_SIM_SEED");
    const char *cnt = getenv("RAFT_SIM_SEEDS");
    const char *st = getenv("RAFT_SIM_STEPS");
    unsigned steps = st ? (unsigned)strtoul(st, NULL, 10) : 3000;
    unsigned long n = cnt ? strtoul(cnt, NULL, 10) : DEFAULT_SEEDS;
    const char *fs = getenv("RAFT_SIM_FIRST");
    unsigned long first = fs ? strtoul(fs, NULL, 10) : 1;
    unsigned failures = 0;
    struct totals tot = {0};
    trace_on = getenv("RAFT_SIM_TRACE") != NULL;
    if (one != NULL) {
        ASSERT(run_schedule(strtoull(one, NULL, 10), steps, true, &tot));
        return;
    }
    for (unsigned long seed = first; seed < first + n; seed++)
        if (!run_schedule(seed, steps, false, &tot) && ++failures >= 5)
            break;
    fprintf(stderr,
            "raft sim: %lu schedules x %u events: %llu elections, %llu "
            "entries committed, %llu conf changes applied (per member), "
            "%llu snapshots sent, %llu reads served\n",
            n, steps, tot.elections, tot.applied, tot.conf, tot.snapshots,
            tot.reads);
#ifdef RAFT_SIM_NOMEM
    fprintf(stderr, "raft sim: %llu injected allocation failures\n",
            nomem_failures);
    ASSERT_GT(nomem_failures, 0);
#endif
    ASSERT_EQ(failures, 0);
}

TEST_MAIN(TEST_ENTRY(random_schedules))
