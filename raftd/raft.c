/* The pure Raft core (see raft.h for the contract): log, elections,
 * replication, commitment, read index, leader transfer and single-server
 * membership changes. Deterministic: no syscalls, no clock, no globals;
 * the only source of randomness is the xorshift PRNG seeded from cfg. */
#include "raft.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Context marking a vote request sent because of a leader transfer: such
 * requests are not ignored by members that still hear from the leader. */
#define RAFT_CTX_TRANSFER UINT64_C(0x7472616e73666572) /* "transfer" */

/*
 * Reference-counted, immutable entry data. The log, outgoing messages and
 * ready batches share one copy of each payload; the counter lives in a
 * header just before the bytes. Only the raft thread changes counters.
 */
struct rbuf {
    size_t refs;
    size_t len;
};

static void *rbuf_new(const void *src, size_t len)
{
    struct rbuf *b;
    if (len == 0)
        return NULL;
    b = malloc(sizeof(*b) + len);
    if (b == NULL)
        return NULL;
    b->refs = 1;
    b->len = len;
    memcpy(b + 1, src, len);
    return b + 1;
}

static void rbuf_ref(void *data)
{
    if (data != NULL)
        ((struct rbuf *)data - 1)->refs++;
}

static void rbuf_unref(void *data)
{
    struct rbuf *b;
    if (data == NULL)
        return;
    b = (struct rbuf *)data - 1;
    if (--b->refs == 0)
        free(b);
}

static void entries_unref(struct raft_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        rbuf_unref(e[i].data);
}

/* Replication state of one voter, seen from the leader; also the vote the
 * voter gave us during a campaign. */
enum pr_state { PR_PROBE, PR_REPLICATE, PR_SNAPSHOT };

struct progress {
    raft_id id;
    raft_index match;
    raft_index next;
    enum pr_state state;
    bool probe_sent;      /* PR_PROBE: one append outstanding, wait */
    bool recent_active;   /* heard from since the last quorum check */
    raft_index pending_snapshot;
    int vote;             /* -1 none, 0 rejected, 1 granted */
    /* Ring of last indexes of appends in flight (PR_REPLICATE). */
    raft_index *inflight;
    unsigned if_start, if_count;
};

/* A linearizable read waiting for a quorum of heartbeat acknowledgements. */
struct pending_read {
    raft_index index;
    uint64_t ctx;
    raft_id from;  /* who asked: self, or a follower to answer */
    uint64_t seq;  /* heartbeat round that confirms it */
    unsigned n_acks;
    raft_id acks[RAFT_MAX_VOTERS];
};

struct conf_hist {
    raft_index index;
    struct raft_conf_state conf;
};

struct msgq {
    struct raft_message *m;
    size_t n, cap;
};

struct raft {
    raft_id id;
    struct raft_config cfg;

    /* Persistent state (as handed out, not necessarily durable yet). */
    raft_term term;
    raft_id vote;
    raft_index commit;

    enum raft_role role;
    raft_id leader;

    /* The log kept in memory: entries offset+1 .. offset+n_ents. */
    struct raft_entry *ents;
    size_t n_ents, cap_ents;
    raft_index offset;
    raft_term offset_term;

    raft_index handed;    /* entries up to here handed out to persist */
    raft_index persisted; /* ... and acknowledged durable */
    raft_index applying;  /* committed entries handed out to apply */
    raft_index applied;   /* ... and acknowledged applied */
    struct raft_hard_state prev_hs; /* last hard state handed out */
    bool snap_pending;    /* a received snapshot to hand out */
    struct raft_snapshot_meta snap; /* latest snapshot (to send) */

    /* Configuration in force (changes take effect when handed out to
     * apply) and its history since base_index, for snapshot metadata. */
    struct raft_conf_state conf;
    raft_index conf_applied; /* conf changes up to here are in conf */
    struct raft_conf_state base_conf;
    raft_index base_index;
    struct conf_hist *hist;
    size_t n_hist, cap_hist;
    raft_index pending_conf_index;

    struct progress *prs;
    size_t n_prs;

    unsigned election_elapsed;
    unsigned heartbeat_elapsed;
    unsigned randomized_timeout;
    raft_id transferee;
    uint64_t rng;

    struct msgq now, after;
    struct raft_read_state *rs;
    size_t n_rs, cap_rs;

    struct pending_read *reads;
    size_t n_reads, cap_reads;
    uint64_t read_seq;
    /* Reads asked before the leader committed an entry of its term. */
    struct pending_read *early;
    size_t n_early, cap_early;
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    size_t ncap;
    void *p;
    if (need <= *cap)
        return 0;
    ncap = *cap ? *cap * 2 : 8;
    while (ncap < need)
        ncap *= 2;
    p = realloc(*arr, ncap * elem);
    if (p == NULL)
        return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

static uint64_t rng_next(struct raft *r)
{
    /* xorshift64* */
    uint64_t x = r->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->rng = x;
    return x * UINT64_C(0x2545F4914F6CDD1D);
}

static void reset_randomized_timeout(struct raft *r)
{
    unsigned et = r->cfg.election_tick;
    r->randomized_timeout = et + (unsigned)(rng_next(r) % et);
}

const char *raft_strerror(int rv)
{
    if (rv < 0)
        rv = -rv;
    switch (rv) {
    case 0: return "success";
    case RAFT_ENOTLEADER: return "raft: not the leader";
    case RAFT_ENOLEADER: return "raft: no leader";
    case RAFT_ETRANSFER: return "raft: leadership transfer in progress";
    case RAFT_ECONFPENDING: return "raft: a configuration change is pending";
    case RAFT_ECOMPACTED: return "raft: index compacted";
    case RAFT_EUNAVAILABLE: return "raft: index unavailable";
    case RAFT_EBADCONF: return "raft: invalid configuration change";
    case RAFT_ETOOMANY: return "raft: too many voters";
    case ENOMEM: return "out of memory";
    case EINVAL: return "invalid argument";
    case ENOENT: return "no such member";
    default: return "unknown error";
    }
}

const char *raft_role_name(enum raft_role role)
{
    switch (role) {
    case RAFT_FOLLOWER: return "StateFollower";
    case RAFT_PRE_CANDIDATE: return "StatePreCandidate";
    case RAFT_CANDIDATE: return "StateCandidate";
    case RAFT_LEADER: return "StateLeader";
    }
    return "StateUnknown";
}

/* ------------------------------------------------------------------ */
/* Configuration                                                       */

static bool conf_has(const struct raft_conf_state *c, raft_id id)
{
    for (unsigned i = 0; i < c->n_voters; i++)
        if (c->voters[i] == id)
            return true;
    return false;
}

static int conf_add(struct raft_conf_state *c, raft_id id)
{
    unsigned i;
    if (conf_has(c, id))
        return 0;
    if (c->n_voters >= RAFT_MAX_VOTERS)
        return -RAFT_ETOOMANY;
    for (i = c->n_voters; i > 0 && c->voters[i - 1] > id; i--)
        c->voters[i] = c->voters[i - 1];
    c->voters[i] = id;
    c->n_voters++;
    return 0;
}

static void conf_remove(struct raft_conf_state *c, raft_id id)
{
    for (unsigned i = 0; i < c->n_voters; i++) {
        if (c->voters[i] == id) {
            memmove(&c->voters[i], &c->voters[i + 1],
                    (c->n_voters - i - 1) * sizeof(c->voters[0]));
            c->n_voters--;
            return;
        }
    }
}

static int conf_validate(const struct raft_conf_state *c)
{
    if (c->n_voters > RAFT_MAX_VOTERS)
        return -RAFT_ETOOMANY;
    for (unsigned i = 0; i < c->n_voters; i++)
        if (c->voters[i] == 0 || (i > 0 && c->voters[i] <= c->voters[i - 1]))
            return -EINVAL;
    return 0;
}

int raft_conf_change_encode(const struct raft_conf_change *cc, void **buf,
                            size_t *len)
{
    unsigned char *p;
    if ((cc->op != RAFT_CONF_ADD_VOTER && cc->op != RAFT_CONF_REMOVE_VOTER) ||
        cc->node == 0 || (cc->context == NULL && cc->context_len > 0))
        return -EINVAL;
    p = calloc(1, 16 + cc->context_len);
    if (p == NULL)
        return -ENOMEM;
    p[0] = 1;
    p[1] = (unsigned char)cc->op;
    for (int i = 0; i < 8; i++)
        p[8 + i] = (unsigned char)(cc->node >> (8 * i));
    if (cc->context_len > 0)
        memcpy(p + 16, cc->context, cc->context_len);
    *buf = p;
    *len = 16 + cc->context_len;
    return 0;
}

int raft_conf_change_decode(const void *data, size_t len,
                            struct raft_conf_change *cc)
{
    const unsigned char *p = data;
    raft_id id = 0;
    if (len < 16 || p[0] != 1 ||
        (p[1] != RAFT_CONF_ADD_VOTER && p[1] != RAFT_CONF_REMOVE_VOTER))
        return -EINVAL;
    for (int i = 2; i < 8; i++)
        if (p[i] != 0)
            return -EINVAL;
    for (int i = 0; i < 8; i++)
        id |= (raft_id)p[8 + i] << (8 * i);
    if (id == 0)
        return -EINVAL;
    cc->op = (enum raft_conf_op)p[1];
    cc->node = id;
    cc->context = len > 16 ? p + 16 : NULL;
    cc->context_len = len - 16;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Log                                                                 */

static raft_index log_last(const struct raft *r)
{
    return r->offset + r->n_ents;
}

static struct raft_entry *log_get(const struct raft *r, raft_index i)
{
    return &r->ents[i - r->offset - 1];
}

/* Term of the entry at index i: 0 with *ok false if i is compacted or
 * beyond the log. */
static raft_term log_term(const struct raft *r, raft_index i, bool *ok)
{
    bool dummy;
    if (ok == NULL)
        ok = &dummy;
    *ok = true;
    if (i == r->offset)
        return r->offset_term;
    if (i < r->offset || i > log_last(r)) {
        *ok = false;
        return 0;
    }
    return log_get(r, i)->term;
}

static raft_term log_last_term(const struct raft *r)
{
    return log_term(r, log_last(r), NULL);
}

static bool log_match_term(const struct raft *r, raft_index i, raft_term t)
{
    bool ok;
    raft_term lt = log_term(r, i, &ok);
    return ok && lt == t;
}

/* Removes entries from index i on. */
static void log_truncate(struct raft *r, raft_index i)
{
    size_t keep = i - r->offset - 1;
    if (i > log_last(r))
        return;
    entries_unref(&r->ents[keep], r->n_ents - keep);
    r->n_ents = keep;
    if (r->handed >= i)
        r->handed = i - 1;
    if (r->persisted >= i)
        r->persisted = i - 1;
}

/* Appends copies of n entries after the last one (their indexes must
 * follow it). All or nothing. */
static int log_append_copy(struct raft *r, const struct raft_entry *e,
                           size_t n)
{
    size_t i;
    int rv = grow((void **)&r->ents, &r->cap_ents, r->n_ents + n,
                  sizeof(*r->ents));
    if (rv != 0)
        return rv;
    for (i = 0; i < n; i++) {
        struct raft_entry *d = &r->ents[r->n_ents + i];
        *d = e[i];
        d->data = rbuf_new(e[i].data, e[i].len);
        if (e[i].len > 0 && d->data == NULL)
            goto err_after_partial_copy;
        if (e[i].len == 0)
            d->len = 0;
    }
    r->n_ents += n;
    return 0;

err_after_partial_copy:
    entries_unref(&r->ents[r->n_ents], i);
    return -ENOMEM;
}

/* Copies the entries lo..hi (inclusive) as new references. */
static int log_slice(const struct raft *r, raft_index lo, raft_index hi,
                     struct raft_entry **out, size_t *n)
{
    size_t cnt = hi >= lo ? hi - lo + 1 : 0;
    *out = NULL;
    *n = 0;
    if (cnt == 0)
        return 0;
    *out = malloc(cnt * sizeof(**out));
    if (*out == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cnt; i++) {
        (*out)[i] = *log_get(r, lo + i);
        rbuf_ref((*out)[i].data);
    }
    *n = cnt;
    return 0;
}

/* Largest index <= index whose term is <= term (for fast backup). */
static raft_index log_find_conflict_by_term(const struct raft *r,
                                            raft_index index, raft_term term)
{
    if (index > log_last(r))
        index = log_last(r);
    while (index > r->offset) {
        if (log_get(r, index)->term <= term)
            break;
        index--;
    }
    return index;
}

/* ------------------------------------------------------------------ */
/* Progress                                                            */

static struct progress *pr_get(struct raft *r, raft_id id)
{
    for (size_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == id)
            return &r->prs[i];
    return NULL;
}

static void pr_reset_inflight(struct progress *pr)
{
    pr->if_start = 0;
    pr->if_count = 0;
}

static bool pr_inflight_full(const struct raft *r, const struct progress *pr)
{
    return pr->if_count >= r->cfg.max_inflight;
}

static void pr_inflight_add(struct raft *r, struct progress *pr,
                            raft_index last)
{
    unsigned cap = r->cfg.max_inflight;
    if (pr->if_count >= cap)
        return;
    pr->inflight[(pr->if_start + pr->if_count) % cap] = last;
    pr->if_count++;
}

static void pr_inflight_free_le(struct raft *r, struct progress *pr,
                                raft_index index)
{
    unsigned cap = r->cfg.max_inflight;
    while (pr->if_count > 0 && pr->inflight[pr->if_start] <= index) {
        pr->if_start = (pr->if_start + 1) % cap;
        pr->if_count--;
    }
}

static void pr_become_probe(struct raft *r, struct progress *pr)
{
    if (pr->state == PR_SNAPSHOT) {
        raft_index ps = pr->pending_snapshot;
        pr->next = (pr->match + 1 > ps + 1) ? pr->match + 1 : ps + 1;
    } else {
        pr->next = pr->match + 1;
    }
    pr->state = PR_PROBE;
    pr->probe_sent = false;
    pr->pending_snapshot = 0;
    pr_reset_inflight(pr);
    (void)r;
}

static void pr_become_replicate(struct progress *pr)
{
    pr->state = PR_REPLICATE;
    pr->next = pr->match + 1;
    pr->probe_sent = false;
    pr->pending_snapshot = 0;
    pr_reset_inflight(pr);
}

/* Rebuilds the progress array from r->conf, keeping what it can. */
static int prs_sync_conf(struct raft *r)
{
    struct progress *np;
    size_t n = r->conf.n_voters;
    np = calloc(n ? n : 1, sizeof(*np));
    if (np == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct progress *old = pr_get(r, r->conf.voters[i]);
        if (old != NULL) {
            np[i] = *old;
            old->inflight = NULL; /* moved */
            continue;
        }
        np[i].id = r->conf.voters[i];
        np[i].next = log_last(r) + 1;
        np[i].state = PR_PROBE;
        np[i].vote = -1;
        np[i].recent_active = true;
        np[i].inflight = malloc(r->cfg.max_inflight * sizeof(raft_index));
        if (np[i].inflight == NULL)
            goto err_after_alloc;
    }
    for (size_t i = 0; i < r->n_prs; i++)
        free(r->prs[i].inflight);
    free(r->prs);
    r->prs = np;
    r->n_prs = n;
    return 0;

err_after_alloc:
    /* Give moved ring buffers back to their old owners. */
    for (size_t i = 0; i < n; i++) {
        struct progress *old = pr_get(r, np[i].id);
        if (old != NULL && old->inflight == NULL)
            old->inflight = np[i].inflight;
        else
            free(np[i].inflight);
    }
    free(np);
    return -ENOMEM;
}

static size_t quorum(const struct raft *r)
{
    return r->conf.n_voters / 2 + 1;
}

/* ------------------------------------------------------------------ */
/* Messages                                                            */

static void msg_free(struct raft_message *m)
{
    entries_unref(m->entries, m->n_entries);
    free(m->entries);
    m->entries = NULL;
    m->n_entries = 0;
}

static void msgq_free(struct msgq *q)
{
    for (size_t i = 0; i < q->n; i++)
        msg_free(&q->m[i]);
    free(q->m);
    q->m = NULL;
    q->n = q->cap = 0;
}

/* Queues m (its entries array and references are taken, even on error:
 * a message lost to ENOMEM is a message lost by the network, which Raft
 * tolerates). */
static int send_msg(struct raft *r, struct raft_message *m)
{
    struct msgq *q;
    int rv;
    m->from = r->id;
    if (m->term == 0 && m->type != RAFT_MSG_PROP &&
        m->type != RAFT_MSG_READ_INDEX)
        m->term = r->term;
    /* Responses promise durable state (a vote, a log); everything a
     * non-leader says may rest on a term not yet durable. The leader's
     * own messages only depend on its term, which was durable before it
     * could collect the votes that made it leader. */
    if (r->role == RAFT_LEADER && m->type != RAFT_MSG_APPEND_RESP &&
        m->type != RAFT_MSG_VOTE_RESP && m->type != RAFT_MSG_PRE_VOTE_RESP &&
        m->type != RAFT_MSG_HEARTBEAT_RESP)
        q = &r->now;
    else
        q = &r->after;
    rv = grow((void **)&q->m, &q->cap, q->n + 1, sizeof(*q->m));
    if (rv != 0) {
        msg_free(m);
        return rv;
    }
    q->m[q->n++] = *m;
    return 0;
}

static int send_simple(struct raft *r, enum raft_msg_type type, raft_id to)
{
    struct raft_message m = {.type = type, .to = to};
    return send_msg(r, &m);
}

static int push_read_state(struct raft *r, raft_index index, uint64_t ctx)
{
    int rv = grow((void **)&r->rs, &r->cap_rs, r->n_rs + 1, sizeof(*r->rs));
    if (rv != 0)
        return rv;
    r->rs[r->n_rs].index = index;
    r->rs[r->n_rs].ctx = ctx;
    r->n_rs++;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Replication (leader)                                                */

static int send_snapshot(struct raft *r, struct progress *pr)
{
    struct raft_message m = {.type = RAFT_MSG_SNAPSHOT, .to = pr->id};
    int rv;
    if (r->snap.index == 0)
        return 0; /* cannot happen: the log starts at a snapshot */
    m.snapshot = r->snap;
    rv = send_msg(r, &m);
    if (rv != 0)
        return rv; /* not paused: nobody would report on it */
    pr->state = PR_SNAPSHOT;
    pr->pending_snapshot = r->snap.index;
    pr_reset_inflight(pr);
    return 0;
}

/* Sends an append to pr if flow control allows; *sent says whether one
 * went out. With send_empty, an append without entries is sent too (to
 * carry the commit index or probe). */
static int maybe_send_append(struct raft *r, struct progress *pr,
                             bool send_empty, bool *sent)
{
    struct raft_message m = {.type = RAFT_MSG_APPEND, .to = pr->id};
    raft_index prev = pr->next - 1, hi, last = log_last(r);
    size_t bytes = 0;
    bool ok;
    int rv;

    if (sent != NULL)
        *sent = false;
    if (pr->id == r->id)
        return 0;
    if (pr->state == PR_SNAPSHOT ||
        (pr->state == PR_PROBE && pr->probe_sent) ||
        (pr->state == PR_REPLICATE && pr_inflight_full(r, pr)))
        return 0;
    m.log_term = log_term(r, prev, &ok);
    if (!ok) {
        if (prev > last) { /* cannot happen; recover by probing */
            pr->next = last + 1;
            return 0;
        }
        if (sent != NULL)
            *sent = true;
        return send_snapshot(r, pr);
    }
    hi = pr->next - 1;
    while (hi < last) {
        size_t len = log_get(r, hi + 1)->len;
        if (hi >= pr->next && bytes + len > r->cfg.max_msg_bytes)
            break;
        bytes += len;
        hi++;
    }
    if (hi < pr->next && !send_empty)
        return 0;
    rv = log_slice(r, pr->next, hi, &m.entries, &m.n_entries);
    if (rv != 0)
        return rv;
    m.index = prev;
    m.commit = r->commit;
    if (m.n_entries > 0 && pr->state == PR_REPLICATE) {
        pr->next = hi + 1;
        pr_inflight_add(r, pr, hi);
    } else if (pr->state == PR_PROBE) {
        pr->probe_sent = true;
    }
    if (sent != NULL)
        *sent = true;
    return send_msg(r, &m);
}

static int bcast_append(struct raft *r)
{
    int rv = 0;
    for (size_t i = 0; i < r->n_prs; i++) {
        int e = maybe_send_append(r, &r->prs[i], true, NULL);
        if (e != 0)
            rv = e;
    }
    return rv;
}

static int bcast_heartbeat(struct raft *r)
{
    uint64_t ctx = r->n_reads > 0 ? r->read_seq : 0;
    int rv = 0;
    for (size_t i = 0; i < r->n_prs; i++) {
        struct progress *pr = &r->prs[i];
        struct raft_message m = {.type = RAFT_MSG_HEARTBEAT, .to = pr->id};
        int e;
        if (pr->id == r->id)
            continue;
        m.commit = pr->match < r->commit ? pr->match : r->commit;
        m.context = ctx;
        e = send_msg(r, &m);
        if (e != 0)
            rv = e;
    }
    return rv;
}

static raft_index self_match(const struct raft *r)
{
    return r->persisted;
}

static int resolve_read(struct raft *r, raft_id from, raft_index index,
                        uint64_t ctx)
{
    struct raft_message m = {.type = RAFT_MSG_READ_INDEX_RESP, .to = from};
    if (from == r->id)
        return push_read_state(r, index, ctx);
    m.index = index;
    m.context = ctx;
    return send_msg(r, &m);
}

static int handle_read_request(struct raft *r, raft_id from, uint64_t ctx);

/* Advances the leader's commit index to what a quorum holds durably, if
 * that entry is of the current term. Returns true if it moved. */
static bool maybe_commit(struct raft *r)
{
    raft_index m[RAFT_MAX_VOTERS], q;
    size_t n = 0;
    for (size_t i = 0; i < r->n_prs; i++)
        m[n++] = r->prs[i].id == r->id ? self_match(r) : r->prs[i].match;
    if (n == 0)
        return false;
    /* Sort descending (n is small). */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && m[j] > m[j - 1]; j--) {
            raft_index t = m[j];
            m[j] = m[j - 1];
            m[j - 1] = t;
        }
    q = m[quorum(r) - 1];
    if (q > r->commit && log_match_term(r, q, r->term)) {
        r->commit = q;
        return true;
    }
    return false;
}

/* Called when the leader's commit moved: reads queued before the first
 * commit of the term can now be processed. */
static int release_early_reads(struct raft *r)
{
    int rv = 0;
    size_t n = r->n_early;
    struct pending_read *early = r->early;
    if (n == 0 || !log_match_term(r, r->commit, r->term))
        return 0;
    r->early = NULL;
    r->n_early = r->cap_early = 0;
    for (size_t i = 0; i < n; i++) {
        int e = handle_read_request(r, early[i].from, early[i].ctx);
        if (e != 0)
            rv = e;
    }
    free(early);
    return rv;
}

static int leader_commit_advanced(struct raft *r)
{
    int rv = bcast_append(r);
    int e = release_early_reads(r);
    return rv ? rv : e;
}

/* ------------------------------------------------------------------ */
/* Role changes                                                        */

static void reset(struct raft *r, raft_term term)
{
    if (r->term != term) {
        r->term = term;
        r->vote = 0;
    }
    r->leader = 0;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    reset_randomized_timeout(r);
    r->transferee = 0;
    for (size_t i = 0; i < r->n_prs; i++) {
        struct progress *pr = &r->prs[i];
        pr->match = 0;
        pr->next = log_last(r) + 1;
        pr->state = PR_PROBE;
        pr->probe_sent = false;
        pr->recent_active = false;
        pr->pending_snapshot = 0;
        pr->vote = -1;
        pr_reset_inflight(pr);
    }
    r->n_reads = 0;
    r->n_early = 0;
}

static void become_follower(struct raft *r, raft_term term, raft_id leader)
{
    reset(r, term);
    r->role = RAFT_FOLLOWER;
    r->leader = leader;
}

static void become_pre_candidate(struct raft *r)
{
    /* Neither term nor vote change: a pre-vote disturbs nobody. */
    reset(r, r->term);
    r->role = RAFT_PRE_CANDIDATE;
}

static void become_candidate(struct raft *r)
{
    reset(r, r->term + 1);
    r->vote = r->id;
    r->role = RAFT_CANDIDATE;
}

static int append_new(struct raft *r, const struct raft_entry *e, size_t n);

static int become_leader(struct raft *r)
{
    struct raft_entry noop = {.type = RAFT_ENTRY_NORMAL};
    reset(r, r->term);
    r->role = RAFT_LEADER;
    r->leader = r->id;
    for (size_t i = 0; i < r->n_prs; i++)
        r->prs[i].recent_active = true;
    /* Conf changes not yet applied may be in the log: treat the whole log
     * as possibly holding one, as etcd does. */
    r->pending_conf_index = log_last(r);
    return append_new(r, &noop, 1);
}

/* Appends new entries of the current term on the leader. */
static int append_new(struct raft *r, const struct raft_entry *e, size_t n)
{
    raft_index last = log_last(r);
    struct raft_entry tmp[8];
    struct raft_entry *v = n <= 8 ? tmp : malloc(n * sizeof(*v));
    int rv;
    if (v == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        v[i] = e[i];
        v[i].term = r->term;
        v[i].index = last + 1 + i;
    }
    rv = log_append_copy(r, v, n);
    if (v != tmp)
        free(v);
    if (rv != 0)
        return rv;
    /* A single voter commits as soon as the entry is durable; with
     * peers, replication starts in parallel with the local write. A
     * message lost to ENOMEM is resent later, like one the network lost,
     * so the append itself has succeeded. */
    (void)bcast_append(r);
    return 0;
}

static int campaign(struct raft *r, bool pre, bool transfer)
{
    enum raft_msg_type t = pre ? RAFT_MSG_PRE_VOTE : RAFT_MSG_VOTE;
    raft_term term;
    int rv = 0;
    struct progress *self;

    if (pre)
        become_pre_candidate(r);
    else
        become_candidate(r);
    term = pre ? r->term + 1 : r->term;
    self = pr_get(r, r->id);
    if (self != NULL)
        self->vote = 1;
    if (quorum(r) <= 1) {
        if (pre)
            return campaign(r, false, transfer);
        return become_leader(r);
    }
    for (size_t i = 0; i < r->n_prs; i++) {
        struct raft_message m = {.type = t, .to = r->prs[i].id};
        int e;
        if (m.to == r->id)
            continue;
        m.term = term;
        m.index = log_last(r);
        m.log_term = log_last_term(r);
        m.context = transfer ? RAFT_CTX_TRANSFER : 0;
        e = send_msg(r, &m);
        if (e != 0)
            rv = e;
    }
    return rv;
}

static bool promotable(const struct raft *r)
{
    return conf_has(&r->conf, r->id);
}

/* ------------------------------------------------------------------ */
/* Construction                                                        */

static int apply_conf_change(struct raft *r, const struct raft_entry *e);

int raft_new(const struct raft_config *cfg,
             const struct raft_hard_state *hard_state,
             const struct raft_snapshot_meta *snapshot,
             const struct raft_entry *entries, size_t n_entries,
             struct raft **out)
{
    struct raft_hard_state hs = {0}, loaded;
    struct raft_snapshot_meta sm = {0};
    struct raft *r;
    bool fresh;
    int rv;

    if (cfg == NULL || cfg->id == 0 || out == NULL ||
        (entries == NULL && n_entries > 0))
        return -EINVAL;
    if (hard_state != NULL)
        hs = *hard_state;
    loaded = hs;
    if (snapshot != NULL)
        sm = *snapshot;
    rv = conf_validate(&sm.conf);
    if (rv != 0)
        return rv;
    for (size_t i = 0; i < n_entries; i++)
        if (entries[i].index != sm.index + 1 + i ||
            entries[i].term < (i ? entries[i - 1].term : sm.term) ||
            (entries[i].len > 0 && entries[i].data == NULL))
            return -EINVAL;
    if (hs.commit < sm.index)
        hs.commit = sm.index;
    if (hs.commit > sm.index + n_entries)
        return -EINVAL;
    if (hs.term < (n_entries ? entries[n_entries - 1].term : sm.term)) {
        /* The tail of a batch was torn between its entries and its hard
         * state: the term bump that came with those entries is lost. Its
         * vote cannot have been sent (votes wait for the whole batch), so
         * the log's term with no vote is what the node had promised. */
        hs.term = n_entries ? entries[n_entries - 1].term : sm.term;
        hs.vote = 0;
    }
    fresh = hs.term == 0 && hs.vote == 0 && sm.index == 0 && n_entries == 0;

    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->id = cfg->id;
    r->cfg = *cfg;
    r->cfg.voters = NULL;
    r->cfg.n_voters = 0;
    if (r->cfg.election_tick == 0)
        r->cfg.election_tick = 10;
    if (r->cfg.heartbeat_tick == 0)
        r->cfg.heartbeat_tick = 1;
    if (r->cfg.max_inflight == 0)
        r->cfg.max_inflight = 256;
    if (r->cfg.max_msg_bytes == 0)
        r->cfg.max_msg_bytes = 1024 * 1024;
    r->rng = (cfg->seed ^ (cfg->id * UINT64_C(0x9E3779B97F4A7C15))) | 1;

    r->term = hs.term;
    r->vote = hs.vote;
    r->commit = hs.commit;
    r->offset = sm.index;
    r->offset_term = sm.term;
    r->snap = sm;
    r->conf = sm.conf;
    r->base_conf = sm.conf;
    r->base_index = sm.index;
    r->conf_applied = sm.index;
    r->applying = r->applied = sm.index;
    rv = log_append_copy(r, entries, n_entries);
    if (rv != 0)
        goto err_after_alloc;
    r->handed = r->persisted = log_last(r);
    /* Whatever was adjusted above is handed out to persist again. */
    r->prev_hs = loaded;

    if (fresh && cfg->n_voters > 0) {
        /* Bootstrap as etcd does: the initial members are conf change
         * entries at term 1, committed, to be persisted first thing. */
        struct raft_conf_state c = {0};
        for (size_t i = 0; i < cfg->n_voters; i++) {
            rv = cfg->voters[i] == 0 ? -EINVAL : conf_add(&c, cfg->voters[i]);
            if (rv != 0)
                goto err_after_alloc;
        }
        for (unsigned i = 0; i < c.n_voters; i++) {
            struct raft_conf_change cc = {.op = RAFT_CONF_ADD_VOTER,
                                          .node = c.voters[i]};
            struct raft_entry e = {.term = 1, .index = i + 1,
                                   .type = RAFT_ENTRY_CONF_CHANGE};
            rv = raft_conf_change_encode(&cc, &e.data, &e.len);
            if (rv != 0)
                goto err_after_alloc;
            rv = log_append_copy(r, &e, 1);
            free(e.data);
            if (rv != 0)
                goto err_after_alloc;
        }
        r->term = 1;
        r->commit = c.n_voters;
    }
    /* Committed conf changes in the log are in force right away, so the
     * node votes and campaigns with the right configuration before the
     * node loop has re-applied them. */
    for (raft_index i = r->offset + 1; i <= r->commit; i++) {
        rv = apply_conf_change(r, log_get(r, i));
        if (rv != 0)
            goto err_after_alloc;
    }
    rv = prs_sync_conf(r);
    if (rv != 0)
        goto err_after_alloc;
    r->role = RAFT_FOLLOWER;
    reset_randomized_timeout(r);
    *out = r;
    return 0;

err_after_alloc:
    raft_free(r);
    return rv;
}

void raft_free(struct raft *r)
{
    if (r == NULL)
        return;
    entries_unref(r->ents, r->n_ents);
    free(r->ents);
    for (size_t i = 0; i < r->n_prs; i++)
        free(r->prs[i].inflight);
    free(r->prs);
    free(r->hist);
    msgq_free(&r->now);
    msgq_free(&r->after);
    free(r->rs);
    free(r->reads);
    free(r->early);
    free(r);
}

/* ------------------------------------------------------------------ */
/* Conf changes                                                        */

/* Applies a committed conf change entry to the configuration (once). */
static int apply_conf_change(struct raft *r, const struct raft_entry *e)
{
    struct raft_conf_change cc;
    struct raft_conf_state c, old;
    int rv;

    if (e->index <= r->conf_applied)
        return 0;
    if (e->type != RAFT_ENTRY_CONF_CHANGE)
        goto done;
    /* A malformed change cannot be refused any more (it is committed):
     * every node ignores it the same way. */
    if (raft_conf_change_decode(e->data, e->len, &cc) != 0)
        goto done;
    c = r->conf;
    if (cc.op == RAFT_CONF_ADD_VOTER) {
        if (conf_add(&c, cc.node) != 0)
            goto done;
    } else {
        conf_remove(&c, cc.node);
    }
    rv = grow((void **)&r->hist, &r->cap_hist, r->n_hist + 1,
              sizeof(*r->hist));
    if (rv != 0)
        return rv;
    old = r->conf;
    r->conf = c;
    /* raft_new builds the progress array after replaying the log. */
    if (r->prs != NULL) {
        rv = prs_sync_conf(r);
        if (rv != 0) {
            r->conf = old;
            return rv;
        }
    }
    r->hist[r->n_hist].index = e->index;
    r->hist[r->n_hist].conf = c;
    r->n_hist++;
    r->conf_applied = e->index;
    if (r->role == RAFT_LEADER) {
        /* Message loss (ENOMEM) below is tolerated like network loss. */
        if (!conf_has(&r->conf, r->id)) {
            /* Removed: tell the others the commit index, then step
             * down; the remaining members elect a new leader. */
            (void)bcast_append(r);
            become_follower(r, r->term, 0);
            return 0;
        }
        if (r->transferee != 0 && !conf_has(&r->conf, r->transferee))
            r->transferee = 0;
        if (maybe_commit(r))
            (void)leader_commit_advanced(r);
        else
            (void)bcast_append(r);
    }
    return 0;

done:
    r->conf_applied = e->index;
    return 0;
}

static int check_conf_proposal(struct raft *r, const void *data, size_t len)
{
    struct raft_conf_change cc;
    struct raft_conf_state c = r->conf;
    if (raft_conf_change_decode(data, len, &cc) != 0)
        return -RAFT_EBADCONF;
    if (r->pending_conf_index > r->applying)
        return -RAFT_ECONFPENDING;
    if (cc.op == RAFT_CONF_ADD_VOTER) {
        if (conf_has(&c, cc.node))
            return -RAFT_EBADCONF;
        if (c.n_voters >= RAFT_MAX_VOTERS)
            return -RAFT_ETOOMANY;
    } else {
        if (!conf_has(&c, cc.node) || c.n_voters == 1)
            return -RAFT_EBADCONF;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Proposals and reads                                                 */

int raft_propose(struct raft *r, enum raft_entry_type type, const void *data,
                 size_t len, raft_index *index, raft_term *term)
{
    struct raft_entry e = {.type = type, .len = len, .data = (void *)data};
    int rv;
    if (type != RAFT_ENTRY_NORMAL && type != RAFT_ENTRY_CONF_CHANGE)
        return -EINVAL;
    if (data == NULL && len > 0)
        return -EINVAL;
    if (r->role != RAFT_LEADER)
        return -RAFT_ENOTLEADER;
    if (r->transferee != 0)
        return -RAFT_ETRANSFER;
    if (type == RAFT_ENTRY_CONF_CHANGE) {
        rv = check_conf_proposal(r, data, len);
        if (rv != 0)
            return rv;
    }
    rv = append_new(r, &e, 1);
    if (rv != 0)
        return rv;
    if (type == RAFT_ENTRY_CONF_CHANGE)
        r->pending_conf_index = log_last(r);
    if (index != NULL)
        *index = log_last(r);
    if (term != NULL)
        *term = r->term;
    return 0;
}

int raft_forward(struct raft *r, enum raft_entry_type type, const void *data,
                 size_t len)
{
    struct raft_message m = {.type = RAFT_MSG_PROP};
    struct raft_entry *e;
    if (r->role == RAFT_LEADER)
        return raft_propose(r, type, data, len, NULL, NULL);
    if (data == NULL && len > 0)
        return -EINVAL;
    if (r->leader == 0)
        return -RAFT_ENOLEADER;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    e->type = type;
    e->len = len;
    e->data = rbuf_new(data, len);
    if (len > 0 && e->data == NULL) {
        free(e);
        return -ENOMEM;
    }
    m.to = r->leader;
    m.entries = e;
    m.n_entries = 1;
    return send_msg(r, &m);
}

static int handle_read_request(struct raft *r, raft_id from, uint64_t ctx)
{
    struct pending_read *p;
    int rv;
    if (!log_match_term(r, r->commit, r->term)) {
        /* The commit index of an older term may be stale: wait for the
         * first entry of this term to commit (Raft thesis 6.4). */
        rv = grow((void **)&r->early, &r->cap_early, r->n_early + 1,
                  sizeof(*r->early));
        if (rv != 0)
            return rv;
        r->early[r->n_early].from = from;
        r->early[r->n_early].ctx = ctx;
        r->n_early++;
        return 0;
    }
    if (quorum(r) <= 1)
        return resolve_read(r, from, r->commit, ctx);
    rv = grow((void **)&r->reads, &r->cap_reads, r->n_reads + 1,
              sizeof(*r->reads));
    if (rv != 0)
        return rv;
    p = &r->reads[r->n_reads++];
    memset(p, 0, sizeof(*p));
    p->index = r->commit;
    p->ctx = ctx;
    p->from = from;
    p->seq = ++r->read_seq;
    p->acks[p->n_acks++] = r->id;
    /* Registered: a heartbeat lost to ENOMEM is resent next tick. */
    (void)bcast_heartbeat(r);
    return 0;
}

/* A heartbeat response for round seq came from id: it acknowledges all
 * reads registered up to that round. */
static int handle_read_ack(struct raft *r, raft_id id, uint64_t seq)
{
    size_t done = 0;
    int rv = 0;
    for (size_t i = 0; i < r->n_reads; i++) {
        struct pending_read *p = &r->reads[i];
        bool have = false;
        if (p->seq > seq)
            break;
        for (unsigned j = 0; j < p->n_acks; j++)
            have = have || p->acks[j] == id;
        if (!have && p->n_acks < RAFT_MAX_VOTERS && conf_has(&r->conf, id))
            p->acks[p->n_acks++] = id;
        if (p->n_acks >= quorum(r))
            done = i + 1;
    }
    /* A confirmed round also confirms every earlier one. */
    for (size_t i = 0; i < done; i++) {
        int e = resolve_read(r, r->reads[i].from, r->reads[i].index,
                             r->reads[i].ctx);
        if (e != 0)
            rv = e;
    }
    if (done > 0) {
        memmove(r->reads, r->reads + done,
                (r->n_reads - done) * sizeof(*r->reads));
        r->n_reads -= done;
    }
    return rv;
}

int raft_read_index(struct raft *r, uint64_t ctx)
{
    struct raft_message m = {.type = RAFT_MSG_READ_INDEX};
    if (r->role == RAFT_LEADER)
        return handle_read_request(r, r->id, ctx);
    if (r->leader == 0)
        return -RAFT_ENOLEADER;
    m.to = r->leader;
    m.context = ctx;
    return send_msg(r, &m);
}

/* ------------------------------------------------------------------ */
/* Ticks                                                               */

int raft_tick(struct raft *r)
{
    if (r->role == RAFT_LEADER) {
        r->heartbeat_elapsed++;
        r->election_elapsed++;
        if (r->election_elapsed >= r->cfg.election_tick) {
            r->election_elapsed = 0;
            if (r->cfg.check_quorum) {
                size_t act = 0;
                for (size_t i = 0; i < r->n_prs; i++) {
                    struct progress *pr = &r->prs[i];
                    if (pr->id == r->id || pr->recent_active)
                        act++;
                    if (pr->id != r->id)
                        pr->recent_active = false;
                }
                if (act < quorum(r)) {
                    become_follower(r, r->term, 0);
                    return 0;
                }
            }
            r->transferee = 0; /* a transfer that did not finish in time */
        }
        if (r->heartbeat_elapsed >= r->cfg.heartbeat_tick) {
            r->heartbeat_elapsed = 0;
            return bcast_heartbeat(r);
        }
        return 0;
    }
    r->election_elapsed++;
    if (promotable(r) && r->election_elapsed >= r->randomized_timeout) {
        r->election_elapsed = 0;
        return campaign(r, r->cfg.pre_vote, false);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Follower side of replication                                        */

static void commit_to(struct raft *r, raft_index index)
{
    if (index > log_last(r))
        index = log_last(r);
    if (index > r->commit)
        r->commit = index;
}

static int handle_append(struct raft *r, const struct raft_message *m)
{
    struct raft_message resp = {.type = RAFT_MSG_APPEND_RESP, .to = m->from};
    raft_index last_new;
    size_t first_new = m->n_entries;
    int rv;

    if (m->index < r->commit) {
        resp.index = r->commit;
        return send_msg(r, &resp);
    }
    if (!log_match_term(r, m->index, m->log_term)) {
        raft_index hint = m->index < log_last(r) ? m->index : log_last(r);
        hint = log_find_conflict_by_term(r, hint, m->log_term);
        resp.index = m->index;
        resp.reject = true;
        resp.reject_hint = hint;
        resp.log_term = log_term(r, hint, NULL);
        return send_msg(r, &resp);
    }
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct raft_entry *e = &m->entries[i];
        if (!log_match_term(r, e->index, e->term)) {
            first_new = i;
            break;
        }
    }
    if (first_new < m->n_entries) {
        raft_index at = m->entries[first_new].index;
        if (at <= r->commit)
            return -EINVAL; /* would rewrite committed history */
        log_truncate(r, at);
        rv = log_append_copy(r, &m->entries[first_new],
                             m->n_entries - first_new);
        if (rv != 0)
            return rv;
    }
    last_new = m->index + m->n_entries;
    commit_to(r, m->commit < last_new ? m->commit : last_new);
    resp.index = last_new;
    return send_msg(r, &resp);
}

static int handle_heartbeat(struct raft *r, const struct raft_message *m)
{
    struct raft_message resp = {.type = RAFT_MSG_HEARTBEAT_RESP,
                                .to = m->from, .context = m->context};
    /* The leader sends min(match, commit): safe to take as is. */
    commit_to(r, m->commit);
    return send_msg(r, &resp);
}

static int handle_snapshot(struct raft *r, const struct raft_message *m)
{
    struct raft_message resp = {.type = RAFT_MSG_APPEND_RESP, .to = m->from};
    const struct raft_snapshot_meta *s = &m->snapshot;

    if (s->index <= r->commit) {
        resp.index = r->commit;
        return send_msg(r, &resp);
    }
    if (log_match_term(r, s->index, s->term)) {
        /* We already have it: just move the commit index. */
        commit_to(r, s->index);
        resp.index = s->index;
        return send_msg(r, &resp);
    }
    if (conf_validate(&s->conf) != 0 || s->term == 0)
        return -EINVAL;
    /* The only step that can fail goes first. */
    {
        struct raft_conf_state old = r->conf;
        int rv;
        r->conf = s->conf;
        rv = prs_sync_conf(r);
        if (rv != 0) {
            r->conf = old;
            return rv;
        }
    }
    /* Restore: the log restarts at the snapshot. */
    entries_unref(r->ents, r->n_ents);
    r->n_ents = 0;
    r->offset = s->index;
    r->offset_term = s->term;
    r->snap = *s;
    r->snap_pending = true;
    r->handed = s->index;
    if (r->persisted >= s->index)
        r->persisted = s->index - 1;
    r->commit = s->index;
    r->applying = s->index;
    if (r->applied > s->index)
        r->applied = s->index;
    r->base_conf = s->conf;
    r->base_index = s->index;
    r->conf_applied = s->index;
    r->n_hist = 0;
    resp.index = s->index;
    return send_msg(r, &resp);
}

/* ------------------------------------------------------------------ */
/* Leader side of responses                                            */

static int handle_append_resp(struct raft *r, struct progress *pr,
                              const struct raft_message *m)
{
    bool sent;
    int rv;

    pr->recent_active = true;
    if (m->reject) {
        raft_index hint = m->reject_hint, next;
        if (m->log_term > 0)
            hint = log_find_conflict_by_term(r, hint, m->log_term);
        if (pr->state == PR_REPLICATE) {
            if (m->index <= pr->match)
                return 0; /* stale */
            pr_become_probe(r, pr);
        } else {
            if (pr->next - 1 != m->index)
                return 0; /* stale */
            next = m->index < hint + 1 ? m->index : hint + 1;
            if (next < pr->match + 1)
                next = pr->match + 1;
            pr->next = next;
            pr->probe_sent = false;
        }
        return maybe_send_append(r, pr, true, NULL);
    }
    if (m->index > log_last(r))
        return -EINVAL; /* acknowledges entries we never had */
    {
        bool updated = false;
        if (m->index > pr->match) {
            pr->match = m->index;
            updated = true;
        }
        if (pr->next < m->index + 1)
            pr->next = m->index + 1;
        if (pr->state == PR_PROBE)
            pr->probe_sent = false;
        if (pr->state == PR_PROBE && updated) {
            pr_become_replicate(pr);
        } else if (pr->state == PR_SNAPSHOT &&
                   pr->match >= pr->pending_snapshot) {
            pr_become_probe(r, pr);
            pr_become_replicate(pr);
        } else if (pr->state == PR_REPLICATE) {
            pr_inflight_free_le(r, pr, m->index);
        }
        if (updated && maybe_commit(r)) {
            rv = leader_commit_advanced(r);
            if (rv != 0)
                return rv;
        }
    }
    do {
        rv = maybe_send_append(r, pr, false, &sent);
    } while (rv == 0 && sent && pr->state == PR_REPLICATE);
    if (rv != 0)
        return rv;
    if (r->transferee == pr->id && pr->match == log_last(r))
        return send_simple(r, RAFT_MSG_TIMEOUT_NOW, pr->id);
    return 0;
}

static int handle_heartbeat_resp(struct raft *r, struct progress *pr,
                                 const struct raft_message *m)
{
    int rv;
    pr->recent_active = true;
    pr->probe_sent = false;
    if (pr->state == PR_REPLICATE && pr_inflight_full(r, pr))
        pr_inflight_free_le(r, pr, pr->inflight[pr->if_start]);
    if (pr->match < log_last(r)) {
        rv = maybe_send_append(r, pr, true, NULL);
        if (rv != 0)
            return rv;
    }
    if (m->context != 0)
        return handle_read_ack(r, pr->id, m->context);
    return 0;
}

static int leader_propose_msg(struct raft *r, const struct raft_message *m)
{
    int rv = 0;
    if (r->transferee != 0)
        return 0; /* dropped: the forwarder retries */
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct raft_entry *e = &m->entries[i];
        int err = raft_propose(r, e->type, e->data, e->len, NULL, NULL);
        /* Refused conf changes are dropped, as a lost message would be. */
        if (err == -ENOMEM)
            rv = err;
    }
    return rv;
}

/* ------------------------------------------------------------------ */
/* Step                                                                */

static int handle_vote(struct raft *r, const struct raft_message *m)
{
    bool pre = m->type == RAFT_MSG_PRE_VOTE;
    struct raft_message resp = {
        .type = pre ? RAFT_MSG_PRE_VOTE_RESP : RAFT_MSG_VOTE_RESP,
        .to = m->from};
    bool can_vote = r->vote == m->from || (r->vote == 0 && r->leader == 0) ||
                    (pre && m->term > r->term);
    raft_term lt = log_last_term(r);
    bool up_to_date = m->log_term > lt ||
                      (m->log_term == lt && m->index >= log_last(r));
    if (can_vote && up_to_date) {
        /* A pre-vote grant answers in the term asked about. */
        resp.term = m->term;
        if (!pre) {
            r->election_elapsed = 0;
            r->vote = m->from;
        }
    } else {
        resp.term = r->term;
        resp.reject = true;
    }
    return send_msg(r, &resp);
}

static int tally(struct raft *r, const struct raft_message *m)
{
    size_t granted = 0, rejected = 0;
    struct progress *pr = pr_get(r, m->from);
    if (pr != NULL && pr->vote < 0)
        pr->vote = m->reject ? 0 : 1;
    for (size_t i = 0; i < r->n_prs; i++) {
        if (r->prs[i].vote == 1)
            granted++;
        else if (r->prs[i].vote == 0)
            rejected++;
    }
    if (granted >= quorum(r)) {
        if (r->role == RAFT_PRE_CANDIDATE)
            return campaign(r, false, false);
        return become_leader(r);
    }
    if (rejected >= quorum(r))
        become_follower(r, r->term, 0);
    return 0;
}

static int validate_msg(const struct raft_message *m)
{
    if (m->type < RAFT_MSG_APPEND || m->type > RAFT_MSG_TYPE_MAX ||
        m->from == 0 || (m->entries == NULL && m->n_entries > 0))
        return -EINVAL;
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct raft_entry *e = &m->entries[i];
        if (e->len > 0 && e->data == NULL)
            return -EINVAL;
        if (e->type != RAFT_ENTRY_NORMAL && e->type != RAFT_ENTRY_CONF_CHANGE)
            return -EINVAL;
        if (m->type == RAFT_MSG_APPEND &&
            (e->index != m->index + 1 + i ||
             e->term < (i ? m->entries[i - 1].term : m->log_term) ||
             e->term > m->term))
            return -EINVAL;
    }
    if (m->type == RAFT_MSG_APPEND && m->index + m->n_entries < m->index)
        return -EINVAL;
    return 0;
}

int raft_step(struct raft *r, const struct raft_message *m)
{
    struct progress *pr;
    int rv = validate_msg(m);
    if (rv != 0)
        return rv;
    if (m->to != 0 && m->to != r->id)
        return 0;

    if (m->term == 0) {
        /* Local-ish messages carry no term. */
        if (m->type == RAFT_MSG_PROP) {
            if (r->role == RAFT_LEADER)
                return leader_propose_msg(r, m);
            return 0; /* not ours to forward again: the sender retries */
        }
        if (m->type == RAFT_MSG_READ_INDEX) {
            if (r->role == RAFT_LEADER)
                return handle_read_request(r, m->from, m->context);
            return 0;
        }
        return -EINVAL;
    }
    if (m->term > r->term) {
        if (m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PRE_VOTE) {
            bool force = m->context == RAFT_CTX_TRANSFER;
            bool in_lease = r->cfg.check_quorum && r->leader != 0 &&
                            r->election_elapsed < r->cfg.election_tick;
            if (!force && in_lease)
                return 0; /* a leader is alive: ignore the disruption */
        }
        if (m->type == RAFT_MSG_PRE_VOTE ||
            (m->type == RAFT_MSG_PRE_VOTE_RESP && !m->reject)) {
            /* Pre-votes use a future term without changing ours. */
        } else if (m->type == RAFT_MSG_APPEND ||
                   m->type == RAFT_MSG_HEARTBEAT ||
                   m->type == RAFT_MSG_SNAPSHOT) {
            become_follower(r, m->term, m->from);
        } else {
            become_follower(r, m->term, 0);
        }
    } else if (m->term < r->term) {
        if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
            (m->type == RAFT_MSG_HEARTBEAT || m->type == RAFT_MSG_APPEND)) {
            /* A deposed leader learns our term and steps down. */
            return send_simple(r, RAFT_MSG_APPEND_RESP, m->from);
        }
        if (m->type == RAFT_MSG_PRE_VOTE || m->type == RAFT_MSG_VOTE) {
            /* Rejecting with our term (the Raft paper; etcd ignores stale
             * votes) lets a candidate stuck in a lower term catch up: a
             * voter with a stale configuration may never send it anything
             * else, and the two could keep campaigning past each other. */
            struct raft_message resp = {
                .type = m->type == RAFT_MSG_VOTE ? RAFT_MSG_VOTE_RESP
                                                 : RAFT_MSG_PRE_VOTE_RESP,
                .to = m->from, .reject = true};
            return send_msg(r, &resp);
        }
        return 0;
    }

    if (m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PRE_VOTE)
        return handle_vote(r, m);

    switch (r->role) {
    case RAFT_LEADER:
        pr = pr_get(r, m->from);
        switch (m->type) {
        case RAFT_MSG_APPEND_RESP:
            return pr ? handle_append_resp(r, pr, m) : 0;
        case RAFT_MSG_HEARTBEAT_RESP:
            return pr ? handle_heartbeat_resp(r, pr, m) : 0;
        case RAFT_MSG_PROP:
            return leader_propose_msg(r, m);
        case RAFT_MSG_READ_INDEX:
            return handle_read_request(r, m->from, m->context);
        default:
            /* Another leader in our term cannot exist; ignore. */
            return 0;
        }
    case RAFT_PRE_CANDIDATE:
    case RAFT_CANDIDATE:
        switch (m->type) {
        case RAFT_MSG_APPEND:
        case RAFT_MSG_HEARTBEAT:
        case RAFT_MSG_SNAPSHOT:
            become_follower(r, m->term, m->from);
            break; /* handled as a follower below */
        case RAFT_MSG_PRE_VOTE_RESP:
            if (r->role == RAFT_PRE_CANDIDATE)
                return tally(r, m);
            return 0;
        case RAFT_MSG_VOTE_RESP:
            if (r->role == RAFT_CANDIDATE)
                return tally(r, m);
            return 0;
        default:
            return 0;
        }
        /* fall through */
    case RAFT_FOLLOWER:
        switch (m->type) {
        case RAFT_MSG_APPEND:
            r->election_elapsed = 0;
            r->leader = m->from;
            return handle_append(r, m);
        case RAFT_MSG_HEARTBEAT:
            r->election_elapsed = 0;
            r->leader = m->from;
            return handle_heartbeat(r, m);
        case RAFT_MSG_SNAPSHOT:
            r->election_elapsed = 0;
            r->leader = m->from;
            return handle_snapshot(r, m);
        case RAFT_MSG_READ_INDEX_RESP:
            return push_read_state(r, m->index, m->context);
        case RAFT_MSG_TIMEOUT_NOW:
            if (promotable(r))
                return campaign(r, false, true);
            return 0;
        default:
            return 0;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Node-loop acknowledgements and requests                             */

void raft_persisted(struct raft *r, raft_index index, raft_term term)
{
    if (index > r->handed)
        index = r->handed;
    if (index <= r->persisted)
        return;
    if (!log_match_term(r, index, term))
        return; /* stale: that entry was replaced since */
    r->persisted = index;
    if (r->role == RAFT_LEADER && maybe_commit(r))
        (void)leader_commit_advanced(r); /* lost messages are resent */
}

void raft_applied(struct raft *r, raft_index index)
{
    if (index > r->applying)
        index = r->applying;
    if (index > r->applied)
        r->applied = index;
}

int raft_snapshot_meta(const struct raft *r, raft_index index,
                       struct raft_snapshot_meta *meta)
{
    bool ok;
    raft_term t;
    if (index > r->applying)
        return -RAFT_EUNAVAILABLE;
    if (index < r->base_index || index < r->offset)
        return -RAFT_ECOMPACTED;
    t = log_term(r, index, &ok);
    if (!ok)
        return -RAFT_ECOMPACTED;
    memset(meta, 0, sizeof(*meta));
    meta->index = index;
    meta->term = t;
    meta->conf = r->base_conf;
    for (size_t i = 0; i < r->n_hist && r->hist[i].index <= index; i++)
        meta->conf = r->hist[i].conf;
    return 0;
}

int raft_compact(struct raft *r, raft_index index)
{
    struct raft_snapshot_meta meta;
    raft_index upto;
    size_t drop, h;
    int rv;
    if (index > r->applied || index > r->persisted)
        return -RAFT_EUNAVAILABLE;
    if (index <= r->snap.index)
        return 0;
    rv = raft_snapshot_meta(r, index, &meta);
    if (rv != 0)
        return rv;
    r->snap = meta;
    upto = index > r->cfg.snapshot_catchup_entries
               ? index - r->cfg.snapshot_catchup_entries
               : 0;
    if (upto <= r->offset)
        return 0;
    /* Fold the history up to the new start of the log into the base. */
    {
        struct raft_snapshot_meta bm;
        rv = raft_snapshot_meta(r, upto, &bm);
        if (rv != 0)
            return rv;
        h = 0;
        while (h < r->n_hist && r->hist[h].index <= upto)
            h++;
        if (h > 0) {
            memmove(r->hist, r->hist + h, (r->n_hist - h) * sizeof(*r->hist));
            r->n_hist -= h;
        }
        r->base_conf = bm.conf;
        r->base_index = upto;
        r->offset_term = bm.term;
    }
    drop = upto - r->offset;
    entries_unref(r->ents, drop);
    memmove(r->ents, r->ents + drop, (r->n_ents - drop) * sizeof(*r->ents));
    r->n_ents -= drop;
    r->offset = upto;
    return 0;
}

void raft_report_snapshot(struct raft *r, raft_id to, bool ok)
{
    struct progress *pr;
    if (r->role != RAFT_LEADER)
        return;
    pr = pr_get(r, to);
    if (pr == NULL || pr->state != PR_SNAPSHOT)
        return;
    if (!ok)
        pr->pending_snapshot = 0;
    pr_become_probe(r, pr);
    /* Wait for the append response (or the next heartbeat) first. */
    pr->probe_sent = true;
}

void raft_report_unreachable(struct raft *r, raft_id to)
{
    struct progress *pr;
    if (r->role != RAFT_LEADER)
        return;
    pr = pr_get(r, to);
    if (pr != NULL && pr->state == PR_REPLICATE)
        pr_become_probe(r, pr);
}

int raft_transfer_leader(struct raft *r, raft_id to)
{
    struct progress *pr;
    if (r->role != RAFT_LEADER)
        return -RAFT_ENOTLEADER;
    pr = pr_get(r, to);
    if (to == r->id || pr == NULL)
        return -EINVAL;
    if (r->transferee == to)
        return 0;
    r->transferee = to;
    r->election_elapsed = 0; /* the transfer times out after one timeout */
    if (pr->match == log_last(r))
        return send_simple(r, RAFT_MSG_TIMEOUT_NOW, to);
    return maybe_send_append(r, pr, true, NULL);
}

/* ------------------------------------------------------------------ */
/* Ready                                                               */

static raft_index apply_limit(const struct raft *r)
{
    return r->commit < r->persisted ? r->commit : r->persisted;
}

bool raft_has_ready(const struct raft *r)
{
    return r->term != r->prev_hs.term || r->vote != r->prev_hs.vote ||
           r->commit != r->prev_hs.commit || r->snap_pending ||
           r->handed < log_last(r) || r->now.n > 0 || r->after.n > 0 ||
           r->applying < apply_limit(r) || r->n_rs > 0;
}

int raft_ready(struct raft *r, struct raft_ready *rd)
{
    raft_index lim = apply_limit(r);
    int rv;

    memset(rd, 0, sizeof(*rd));
    /* Committed entries first: handing them out applies conf changes,
     * which may queue messages that belong in this batch. */
    if (r->applying < lim) {
        rv = log_slice(r, r->applying + 1, lim, &rd->committed,
                       &rd->n_committed);
        if (rv != 0)
            return rv;
        for (size_t i = 0; i < rd->n_committed; i++) {
            rv = apply_conf_change(r, &rd->committed[i]);
            r->applying = rd->committed[i].index;
            if (rv != 0)
                goto err_after_committed;
        }
    }
    if (r->handed < log_last(r)) {
        rv = log_slice(r, r->handed + 1, log_last(r), &rd->entries,
                       &rd->n_entries);
        if (rv != 0)
            goto err_after_committed;
    }
    if (r->term != r->prev_hs.term || r->vote != r->prev_hs.vote ||
        r->commit != r->prev_hs.commit) {
        rd->has_hard_state = true;
        rd->hard_state.term = r->term;
        rd->hard_state.vote = r->vote;
        rd->hard_state.commit = r->commit;
        r->prev_hs = rd->hard_state;
    }
    if (r->snap_pending) {
        rd->has_snapshot = true;
        rd->snapshot = r->snap;
        r->snap_pending = false;
    }
    r->handed = log_last(r);
    /* Only a batch that carries entries (or a snapshot) acknowledges
     * anything: a node loop that acknowledges an empty batch at once, while
     * an earlier batch is still being written, must not mark that earlier
     * batch durable. */
    if (rd->n_entries > 0) {
        rd->persist_index = rd->entries[rd->n_entries - 1].index;
        rd->persist_term = rd->entries[rd->n_entries - 1].term;
    } else if (rd->has_snapshot) {
        rd->persist_index = rd->snapshot.index;
        rd->persist_term = rd->snapshot.term;
    }
    rd->messages = r->now.m;
    rd->n_messages = r->now.n;
    memset(&r->now, 0, sizeof(r->now));
    rd->messages_after_persist = r->after.m;
    rd->n_messages_after_persist = r->after.n;
    memset(&r->after, 0, sizeof(r->after));
    rd->read_states = r->rs;
    rd->n_read_states = r->n_rs;
    r->rs = NULL;
    r->n_rs = r->cap_rs = 0;
    rd->role = r->role;
    rd->leader = r->leader;
    rd->term = r->term;
    return 0;

err_after_committed:
    /* Nothing is handed out: the same entries come again on retry (conf
     * changes already in force are not applied twice). */
    if (rd->n_committed > 0)
        r->applying = rd->committed[0].index - 1;
    raft_ready_free(rd);
    return rv;
}

void raft_ready_free(struct raft_ready *rd)
{
    if (rd == NULL)
        return;
    entries_unref(rd->entries, rd->n_entries);
    free(rd->entries);
    entries_unref(rd->committed, rd->n_committed);
    free(rd->committed);
    for (size_t i = 0; i < rd->n_messages; i++)
        msg_free(&rd->messages[i]);
    free(rd->messages);
    for (size_t i = 0; i < rd->n_messages_after_persist; i++)
        msg_free(&rd->messages_after_persist[i]);
    free(rd->messages_after_persist);
    free(rd->read_states);
    memset(rd, 0, sizeof(*rd));
}

/* ------------------------------------------------------------------ */
/* Accessors                                                           */

raft_id raft_self(const struct raft *r) { return r->id; }
raft_term raft_current_term(const struct raft *r) { return r->term; }
raft_id raft_leader(const struct raft *r) { return r->leader; }
enum raft_role raft_role(const struct raft *r) { return r->role; }
raft_index raft_commit_index(const struct raft *r) { return r->commit; }
raft_index raft_applied_index(const struct raft *r) { return r->applied; }
raft_index raft_last_index(const struct raft *r) { return log_last(r); }
raft_index raft_first_index(const struct raft *r) { return r->offset + 1; }
raft_index raft_persisted_index(const struct raft *r) { return r->persisted; }

int raft_entry_get(const struct raft *r, raft_index index,
                   struct raft_entry *e)
{
    if (index <= r->offset)
        return -RAFT_ECOMPACTED;
    if (index > log_last(r))
        return -RAFT_EUNAVAILABLE;
    *e = *log_get(r, index);
    return 0;
}

int raft_term_at(const struct raft *r, raft_index index, raft_term *term)
{
    bool ok;
    raft_term t = log_term(r, index, &ok);
    if (!ok)
        return index < r->offset ? -RAFT_ECOMPACTED : -RAFT_EUNAVAILABLE;
    *term = t;
    return 0;
}

void raft_conf(const struct raft *r, struct raft_conf_state *conf)
{
    *conf = r->conf;
}

int raft_progress(const struct raft *r, raft_id id, raft_index *match,
                  raft_index *next)
{
    const struct progress *pr = NULL;
    if (r->role != RAFT_LEADER)
        return -RAFT_ENOTLEADER;
    for (size_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == id)
            pr = &r->prs[i];
    if (pr == NULL)
        return -ENOENT;
    if (match != NULL)
        *match = pr->id == r->id ? r->persisted : pr->match;
    if (next != NULL)
        *next = pr->next;
    return 0;
}
