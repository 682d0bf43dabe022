/* Unit tests of the pure Raft core on a single voter: election, the
 * propose -> persist -> commit -> apply path, restart from persisted state,
 * compaction, read index, conf change encoding and API error paths. The
 * many-voter simulation lives in test_raft_sim.c. */
#include "raft.h"
#include "test.h"

#include <errno.h>
#include <stdbool.h>

/* What a node loop would have on disk, plus what it applied. */
struct disk {
    struct raft_hard_state hs;
    struct raft_snapshot_meta snap;
    struct raft_entry ents[64];
    char data[64][32];
    size_t n;
    raft_index applied;
    char last_applied[32];
};

static void disk_append(struct disk *d, const struct raft_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t pos = e[i].index - d->snap.index - 1;
        d->ents[pos] = e[i];
        memcpy(d->data[pos], e[i].data ? e[i].data : "", e[i].len);
        d->ents[pos].data = e[i].len ? d->data[pos] : NULL;
        d->n = pos + 1; /* truncates anything after */
    }
}

/* Runs the node-loop protocol once: persist, acknowledge, apply. Returns
 * the number of committed entries applied. */
static size_t loop_once(struct raft *r, struct disk *d, struct raft_ready *keep)
{
    struct raft_ready rd;
    size_t applied = 0;
    if (raft_ready(r, &rd) != 0)
        return 0;
    disk_append(d, rd.entries, rd.n_entries);
    if (rd.has_hard_state)
        d->hs = rd.hard_state;
    raft_persisted(r, rd.persist_index, rd.persist_term);
    for (size_t i = 0; i < rd.n_committed; i++) {
        d->applied = rd.committed[i].index;
        memcpy(d->last_applied, rd.committed[i].data ? rd.committed[i].data : "",
               rd.committed[i].len);
        d->last_applied[rd.committed[i].len] = 0;
        applied++;
    }
    if (rd.n_committed > 0)
        raft_applied(r, d->applied);
    if (keep != NULL)
        *keep = rd;
    else
        raft_ready_free(&rd);
    return applied;
}

static void loop_drain(struct raft *r, struct disk *d)
{
    for (int i = 0; i < 100 && raft_has_ready(r); i++)
        loop_once(r, d, NULL);
}

static struct raft_config single_cfg(void)
{
    static const raft_id voters[] = {1};
    struct raft_config cfg = {.id = 1, .election_tick = 10, .seed = 42,
                              .voters = voters, .n_voters = 1,
                              .pre_vote = true, .check_quorum = true};
    return cfg;
}

static int elect(struct raft *r, struct disk *d)
{
    for (int i = 0; i < 40 && raft_role(r) != RAFT_LEADER; i++) {
        raft_tick(r);
        loop_drain(r, d);
    }
    loop_drain(r, d);
    return raft_role(r) == RAFT_LEADER ? 0 : -1;
}

TEST(bootstrap_and_elect)
{
    struct raft_config cfg = single_cfg();
    struct disk d = {0};
    struct raft *r;
    struct raft_ready rd;
    struct raft_conf_change cc;
    raft_term t;

    ASSERT_OK(raft_new(&cfg, NULL, NULL, NULL, 0, &r));
    ASSERT(raft_has_ready(r));
    ASSERT_OK(raft_ready(r, &rd));
    /* The bootstrap conf change is handed out to persist, not to apply
     * before it is durable. */
    ASSERT_EQ(rd.n_entries, 1);
    ASSERT_EQ(rd.entries[0].index, 1);
    ASSERT_EQ(rd.entries[0].term, 1);
    ASSERT_EQ(rd.entries[0].type, RAFT_ENTRY_CONF_CHANGE);
    ASSERT_OK(raft_conf_change_decode(rd.entries[0].data, rd.entries[0].len,
                                      &cc));
    ASSERT_EQ(cc.op, RAFT_CONF_ADD_VOTER);
    ASSERT_EQ(cc.node, 1);
    ASSERT_EQ(rd.n_committed, 0);
    ASSERT(rd.has_hard_state);
    ASSERT_EQ(rd.hard_state.term, 1);
    ASSERT_EQ(rd.hard_state.commit, 1);
    ASSERT_EQ(rd.persist_index, 1);
    ASSERT_EQ(rd.persist_term, 1);
    disk_append(&d, rd.entries, rd.n_entries);
    d.hs = rd.hard_state;
    raft_persisted(r, rd.persist_index, rd.persist_term);
    raft_ready_free(&rd);
    /* Now durable, so it can be applied. */
    ASSERT_OK(raft_ready(r, &rd));
    ASSERT_EQ(rd.n_committed, 1);
    ASSERT_EQ(rd.committed[0].index, 1);
    raft_applied(r, 1);
    raft_ready_free(&rd);
    ASSERT_EQ(raft_applied_index(r), 1);

    ASSERT_EQ(raft_role(r), RAFT_FOLLOWER);
    ASSERT_EQ(raft_propose(r, RAFT_ENTRY_NORMAL, "x", 1, NULL, NULL),
              -RAFT_ENOTLEADER);
    ASSERT_EQ(raft_forward(r, RAFT_ENTRY_NORMAL, "x", 1), -RAFT_ENOLEADER);
    ASSERT_OK(elect(r, &d));
    ASSERT_EQ(raft_leader(r), 1);
    ASSERT_EQ(raft_current_term(r), 2);
    /* The new leader's empty entry of its term, committed once durable. */
    ASSERT_EQ(raft_last_index(r), 2);
    ASSERT_OK(raft_term_at(r, 2, &t));
    ASSERT_EQ(t, 2);
    ASSERT_EQ(raft_commit_index(r), 2);
    ASSERT_EQ(d.applied, 2);
    ASSERT_EQ(d.hs.term, 2);
    ASSERT_EQ(d.hs.vote, 1);
    ASSERT_EQ(d.hs.commit, 2);
    raft_free(r);
}

TEST(commit_waits_for_persistence)
{
    struct raft_config cfg = single_cfg();
    struct disk d = {0};
    struct raft *r;
    struct raft_ready rd, rd2;
    raft_index idx;
    raft_term term;

    ASSERT_OK(raft_new(&cfg, NULL, NULL, NULL, 0, &r));
    ASSERT_OK(elect(r, &d));
    ASSERT_OK(raft_propose(r, RAFT_ENTRY_NORMAL, "hello", 5, &idx, &term));
    ASSERT_EQ(idx, 3);
    ASSERT_EQ(term, 2);
    ASSERT_EQ(raft_commit_index(r), 2);
    ASSERT_OK(raft_ready(r, &rd));
    ASSERT_EQ(rd.n_entries, 1);
    ASSERT_EQ(rd.entries[0].index, 3);
    ASSERT_EQ(rd.entries[0].len, 5);
    ASSERT_MEM_EQ(rd.entries[0].data, "hello", 5);
    ASSERT_EQ(rd.n_committed, 0);
    /* Not durable yet: not committed, even with a quorum of one. */
    ASSERT_EQ(raft_commit_index(r), 2);
    /* A second proposal while the first is being written: pipelined. */
    ASSERT_OK(raft_propose(r, RAFT_ENTRY_NORMAL, "world", 5, &idx, NULL));
    ASSERT_EQ(idx, 4);
    ASSERT_OK(raft_ready(r, &rd2));
    ASSERT_EQ(rd2.n_entries, 1);
    ASSERT_EQ(rd2.entries[0].index, 4);
    {
        /* A batch with nothing to persist (here a read state) carries no
         * acknowledgement: acking it at once must not commit 3 and 4. */
        struct raft_ready rd3;
        ASSERT_OK(raft_read_index(r, 5));
        ASSERT_OK(raft_ready(r, &rd3));
        ASSERT_EQ(rd3.n_entries, 0);
        ASSERT_EQ(rd3.n_read_states, 1);
        ASSERT_EQ(rd3.persist_index, 0);
        raft_persisted(r, rd3.persist_index, rd3.persist_term);
        raft_ready_free(&rd3);
        ASSERT_EQ(raft_commit_index(r), 2);
    }
    disk_append(&d, rd.entries, rd.n_entries);
    raft_persisted(r, rd.persist_index, rd.persist_term);
    ASSERT_EQ(raft_commit_index(r), 3);
    raft_ready_free(&rd);
    disk_append(&d, rd2.entries, rd2.n_entries);
    raft_persisted(r, rd2.persist_index, rd2.persist_term);
    raft_ready_free(&rd2);
    ASSERT_EQ(raft_commit_index(r), 4);
    ASSERT_EQ(raft_persisted_index(r), 4);
    ASSERT_OK(raft_ready(r, &rd));
    ASSERT(rd.has_hard_state);
    ASSERT_EQ(rd.hard_state.commit, 4);
    ASSERT_EQ(rd.n_committed, 2);
    ASSERT_MEM_EQ(rd.committed[0].data, "hello", 5);
    ASSERT_MEM_EQ(rd.committed[1].data, "world", 5);
    /* Nothing is handed out twice. */
    raft_ready_free(&rd);
    ASSERT(!raft_has_ready(r));
    raft_applied(r, 4);
    ASSERT_EQ(raft_applied_index(r), 4);
    raft_free(r);
}

TEST(restart_from_disk)
{
    struct raft_config cfg = single_cfg();
    struct disk d = {0};
    struct raft *r;
    struct raft_ready rd;
    raft_index idx;

    ASSERT_OK(raft_new(&cfg, NULL, NULL, NULL, 0, &r));
    ASSERT_OK(elect(r, &d));
    for (int i = 0; i < 5; i++) {
        char v[8];
        snprintf(v, sizeof(v), "v%d", i);
        ASSERT_OK(raft_propose(r, RAFT_ENTRY_NORMAL, v, strlen(v), NULL, NULL));
        loop_drain(r, &d);
    }
    ASSERT_EQ(d.applied, 7);
    ASSERT_STR_EQ(d.last_applied, "v4");
    /* One more proposal whose batch is never persisted: lost on crash. */
    ASSERT_OK(raft_propose(r, RAFT_ENTRY_NORMAL, "lost", 4, NULL, NULL));
    ASSERT_OK(raft_ready(r, &rd));
    raft_ready_free(&rd);
    raft_free(r);

    /* Restart: voters in cfg are ignored now; the log says who votes. */
    cfg.voters = NULL;
    cfg.n_voters = 0;
    d.applied = 0;
    ASSERT_OK(raft_new(&cfg, &d.hs, &d.snap, d.ents, d.n, &r));
    ASSERT_EQ(raft_last_index(r), 7);
    ASSERT_EQ(raft_current_term(r), 2);
    ASSERT_EQ(raft_commit_index(r), 7);
    ASSERT_EQ(raft_applied_index(r), 0);
    loop_drain(r, &d);
    ASSERT_EQ(d.applied, 7); /* everything re-applied from index 1 */
    ASSERT_OK(elect(r, &d));
    ASSERT_EQ(raft_current_term(r), 3);
    ASSERT_OK(raft_propose(r, RAFT_ENTRY_NORMAL, "after", 5, &idx, NULL));
    ASSERT_EQ(idx, 9);
    loop_drain(r, &d);
    ASSERT_EQ(d.applied, 9);
    ASSERT_STR_EQ(d.last_applied, "after");
    raft_free(r);
}

TEST(compaction_and_restart_from_snapshot)
{
    struct raft_config cfg = single_cfg();
    struct disk d = {0};
    struct raft_snapshot_meta meta;
    struct raft_entry e;
    struct raft *r;

    cfg.snapshot_catchup_entries = 2;
    ASSERT_OK(raft_new(&cfg, NULL, NULL, NULL, 0, &r));
    ASSERT_OK(elect(r, &d));
    for (int i = 0; i < 8; i++) {
        ASSERT_OK(raft_propose(r, RAFT_ENTRY_NORMAL, "abc", 3, NULL, NULL));
        loop_drain(r, &d);
    }
    ASSERT_EQ(d.applied, 10);
    ASSERT_EQ(raft_snapshot_meta(r, 11, &meta), -RAFT_EUNAVAILABLE);
    ASSERT_EQ(raft_compact(r, 11), -RAFT_EUNAVAILABLE);
    ASSERT_OK(raft_snapshot_meta(r, 8, &meta));
    ASSERT_EQ(meta.index, 8);
    ASSERT_EQ(meta.term, 2);
    ASSERT_EQ(meta.conf.n_voters, 1);
    ASSERT_EQ(meta.conf.voters[0], 1);
    ASSERT_OK(raft_compact(r, 8));
    /* Two entries kept behind the snapshot for slow followers. */
    ASSERT_EQ(raft_first_index(r), 7);
    ASSERT_EQ(raft_entry_get(r, 6, &e), -RAFT_ECOMPACTED);
    ASSERT_OK(raft_entry_get(r, 7, &e));
    ASSERT_EQ(e.index, 7);
    ASSERT_EQ(raft_snapshot_meta(r, 5, &meta), -RAFT_ECOMPACTED);
    ASSERT_OK(raft_compact(r, 8)); /* repeated: no-op */
    ASSERT_OK(raft_compact(r, 10));
    ASSERT_EQ(raft_first_index(r), 9);
    raft_free(r);

    /* Restart from the snapshot at 10 and the entries after it. */
    {
        struct disk d2 = {0};
        struct raft_ready rd;
        d2.hs = d.hs;
        d2.snap.index = 10;
        d2.snap.term = 2;
        d2.snap.conf.n_voters = 1;
        d2.snap.conf.voters[0] = 1;
        cfg.voters = NULL;
        cfg.n_voters = 0;
        ASSERT_OK(raft_new(&cfg, &d2.hs, &d2.snap, NULL, 0, &r));
        ASSERT_EQ(raft_applied_index(r), 10);
        ASSERT_EQ(raft_first_index(r), 11);
        ASSERT_OK(elect(r, &d2));
        ASSERT_OK(raft_propose(r, RAFT_ENTRY_NORMAL, "z", 1, NULL, NULL));
        ASSERT_OK(raft_ready(r, &rd));
        ASSERT_EQ(rd.n_entries, 1);
        ASSERT_EQ(rd.entries[0].index, 12);
        raft_persisted(r, rd.persist_index, rd.persist_term);
        raft_ready_free(&rd);
        ASSERT_EQ(raft_commit_index(r), 12);
        raft_free(r);
    }
}

TEST(read_index_single_voter)
{
    struct raft_config cfg = single_cfg();
    struct disk d = {0};
    struct raft *r;
    struct raft_ready rd;

    ASSERT_OK(raft_new(&cfg, NULL, NULL, NULL, 0, &r));
    ASSERT_EQ(raft_read_index(r, 7), -RAFT_ENOLEADER);
    /* Leader, but its empty entry is not committed yet: the read waits. */
    for (int i = 0; i < 40 && raft_role(r) != RAFT_LEADER; i++)
        raft_tick(r);
    ASSERT_EQ(raft_role(r), RAFT_LEADER);
    ASSERT_OK(raft_read_index(r, 7));
    ASSERT_OK(raft_ready(r, &rd));
    ASSERT_EQ(rd.n_read_states, 0);
    raft_persisted(r, rd.persist_index, rd.persist_term);
    raft_ready_free(&rd);
    ASSERT_OK(raft_ready(r, &rd));
    ASSERT_EQ(rd.n_read_states, 1);
    ASSERT_EQ(rd.read_states[0].ctx, 7);
    ASSERT_EQ(rd.read_states[0].index, 2);
    raft_ready_free(&rd);
    ASSERT_OK(raft_propose(r, RAFT_ENTRY_NORMAL, "a", 1, NULL, NULL));
    loop_drain(r, &d);
    ASSERT_OK(raft_read_index(r, 8));
    ASSERT_OK(raft_ready(r, &rd));
    ASSERT_EQ(rd.n_read_states, 1);
    ASSERT_EQ(rd.read_states[0].ctx, 8);
    ASSERT_EQ(rd.read_states[0].index, 3);
    raft_ready_free(&rd);
    raft_free(r);
}

TEST(conf_change_codec_and_checks)
{
    struct raft_config cfg = single_cfg();
    struct disk d = {0};
    struct raft_conf_change cc = {.op = RAFT_CONF_ADD_VOTER, .node = 0x0102,
                                  .context = "peer", .context_len = 4};
    struct raft_conf_change out;
    struct raft_conf_state conf;
    struct raft *r;
    void *buf;
    size_t len;
    unsigned char bad[16] = {1, 9};

    ASSERT_OK(raft_conf_change_encode(&cc, &buf, &len));
    ASSERT_EQ(len, 20);
    ASSERT_EQ(((unsigned char *)buf)[8], 0x02);
    ASSERT_EQ(((unsigned char *)buf)[9], 0x01);
    ASSERT_OK(raft_conf_change_decode(buf, len, &out));
    ASSERT_EQ(out.op, RAFT_CONF_ADD_VOTER);
    ASSERT_EQ(out.node, 0x0102);
    ASSERT_EQ(out.context_len, 4);
    ASSERT_MEM_EQ(out.context, "peer", 4);
    ASSERT_EQ(raft_conf_change_decode(buf, 15, &out), -EINVAL);
    ASSERT_EQ(raft_conf_change_decode(bad, sizeof(bad), &out), -EINVAL);

    ASSERT_OK(raft_new(&cfg, NULL, NULL, NULL, 0, &r));
    ASSERT_OK(elect(r, &d));
    ASSERT_EQ(raft_propose(r, RAFT_ENTRY_CONF_CHANGE, bad, sizeof(bad), NULL,
                           NULL),
              -RAFT_EBADCONF);
    ASSERT_OK(raft_propose(r, RAFT_ENTRY_CONF_CHANGE, buf, len, NULL, NULL));
    ASSERT_EQ(raft_propose(r, RAFT_ENTRY_CONF_CHANGE, buf, len, NULL, NULL),
              -RAFT_ECONFPENDING);
    loop_drain(r, &d);
    raft_conf(r, &conf);
    ASSERT_EQ(conf.n_voters, 2);
    ASSERT_EQ(conf.voters[0], 1);
    ASSERT_EQ(conf.voters[1], 0x0102);
    /* Two voters now: a proposal needs the new member's ack. */
    ASSERT_OK(raft_propose(r, RAFT_ENTRY_NORMAL, "q", 1, NULL, NULL));
    loop_drain(r, &d);
    ASSERT_EQ(raft_commit_index(r), 3);
    ASSERT_EQ(raft_last_index(r), 4);
    free(buf);
    raft_free(r);
}

TEST(bad_input)
{
    struct raft_config cfg = single_cfg();
    struct raft_hard_state hs = {.term = 1, .commit = 5};
    struct raft_entry e[2] = {{.term = 1, .index = 1}, {.term = 1, .index = 3}};
    struct raft_message m = {.type = 99, .from = 2, .to = 1, .term = 1};
    struct raft *r;

    ASSERT_EQ(raft_new(&cfg, &hs, NULL, NULL, 0, &r), -EINVAL);
    hs.commit = 0;
    ASSERT_EQ(raft_new(&cfg, &hs, NULL, e, 2, &r), -EINVAL);
    cfg.id = 0;
    ASSERT_EQ(raft_new(&cfg, NULL, NULL, NULL, 0, &r), -EINVAL);
    cfg = single_cfg();
    ASSERT_OK(raft_new(&cfg, NULL, NULL, NULL, 0, &r));
    ASSERT_EQ(raft_step(r, &m), -EINVAL);
    m.type = RAFT_MSG_APPEND;
    m.n_entries = 2;
    m.entries = e; /* not contiguous */
    ASSERT_EQ(raft_step(r, &m), -EINVAL);
    m.from = 0;
    m.n_entries = 0;
    ASSERT_EQ(raft_step(r, &m), -EINVAL);
    ASSERT_STR_EQ(raft_strerror(-RAFT_ENOTLEADER), "raft: not the leader");
    raft_free(r);
    {
        /* A torn batch: entries of term 3 durable, its hard state not. */
        struct raft_entry ents[2] = {{.term = 1, .index = 1},
                                     {.term = 3, .index = 2}};
        struct raft_hard_state old = {.term = 2, .vote = 2, .commit = 1};
        struct raft_ready rd;
        ASSERT_OK(raft_new(&cfg, &old, NULL, ents, 2, &r));
        ASSERT_EQ(raft_current_term(r), 3);
        ASSERT_OK(raft_ready(r, &rd));
        ASSERT(rd.has_hard_state);
        ASSERT_EQ(rd.hard_state.term, 3);
        ASSERT_EQ(rd.hard_state.vote, 0);
        raft_ready_free(&rd);
    }
    ASSERT_STR_EQ(raft_role_name(RAFT_LEADER), "StateLeader");
    raft_free(r);
}


/* ------------------------------------------------------------------ */
/* A small synchronous cluster: every batch is persisted at once and all
 * messages are delivered in order, except to or from isolated members. */

#define CN 3   /* bootstrap members */
#define CMAX 4 /* plus one that may join */

struct cnode {
    struct raft *r;
    struct disk d;
    bool isolated;
    raft_index snap_index; /* "snapshot file" the node loop holds */
    unsigned n_vote_resp_after, n_vote_resp_now, n_app_now;
    uint64_t read_ctx;
    raft_index read_index;
};

struct cluster {
    struct cnode n[CMAX];
    int nn; /* members running */
    struct raft_message q[4096];
    size_t nq;
    unsigned snapshots_sent;
};

static void msg_copy(struct raft_message *dst, const struct raft_message *m)
{
    *dst = *m;
    dst->entries = NULL;
    if (m->n_entries > 0) {
        dst->entries = calloc(m->n_entries, sizeof(*m->entries));
        for (size_t i = 0; i < m->n_entries; i++) {
            dst->entries[i] = m->entries[i];
            if (m->entries[i].len) {
                dst->entries[i].data = malloc(m->entries[i].len);
                memcpy(dst->entries[i].data, m->entries[i].data,
                       m->entries[i].len);
            }
        }
    }
}

static void msg_release(struct raft_message *m)
{
    for (size_t i = 0; i < m->n_entries; i++)
        free(m->entries[i].data);
    free(m->entries);
}

static void c_queue(struct cluster *c, struct cnode *from,
                    const struct raft_message *m)
{
    if (c->nq < sizeof(c->q) / sizeof(c->q[0]))
        msg_copy(&c->q[c->nq++], m);
    if (m->type == RAFT_MSG_SNAPSHOT) {
        c->snapshots_sent++;
        /* Stream the latest snapshot file: meta must match it. */
        c->q[c->nq - 1].snapshot.index = from->snap_index;
    }
}

static void c_process(struct cluster *c, struct cnode *nd)
{
    struct raft_ready rd;
    while (raft_has_ready(nd->r) && raft_ready(nd->r, &rd) == 0) {
        for (size_t i = 0; i < rd.n_messages; i++) {
            if (rd.messages[i].type == RAFT_MSG_VOTE_RESP)
                nd->n_vote_resp_now++;
            if (rd.messages[i].type == RAFT_MSG_APPEND)
                nd->n_app_now++;
            c_queue(c, nd, &rd.messages[i]);
        }
        disk_append(&nd->d, rd.entries, rd.n_entries);
        if (rd.has_hard_state)
            nd->d.hs = rd.hard_state;
        if (rd.has_snapshot) {
            nd->d.snap = rd.snapshot;
            nd->d.n = 0;
            nd->d.applied = rd.snapshot.index;
            raft_applied(nd->r, rd.snapshot.index);
        }
        raft_persisted(nd->r, rd.persist_index, rd.persist_term);
        for (size_t i = 0; i < rd.n_messages_after_persist; i++) {
            if (rd.messages_after_persist[i].type == RAFT_MSG_VOTE_RESP)
                nd->n_vote_resp_after++;
            c_queue(c, nd, &rd.messages_after_persist[i]);
        }
        for (size_t i = 0; i < rd.n_read_states; i++) {
            nd->read_ctx = rd.read_states[i].ctx;
            nd->read_index = rd.read_states[i].index;
        }
        for (size_t i = 0; i < rd.n_committed; i++) {
            const struct raft_entry *e = &rd.committed[i];
            nd->d.applied = e->index;
            memcpy(nd->d.last_applied, e->data ? e->data : "", e->len);
            nd->d.last_applied[e->len] = 0;
        }
        if (rd.n_committed)
            raft_applied(nd->r, nd->d.applied);
        raft_ready_free(&rd);
    }
}

static void c_run(struct cluster *c)
{
    for (int round = 0; round < 100; round++) {
        for (int i = 0; i < c->nn; i++)
            c_process(c, &c->n[i]);
        if (c->nq == 0)
            return;
        size_t nq = c->nq;
        struct raft_message *q = malloc(nq * sizeof(*q));
        memcpy(q, c->q, nq * sizeof(*q));
        c->nq = 0;
        for (size_t i = 0; i < nq; i++) {
            struct cnode *to = &c->n[q[i].to - 1];
            struct cnode *from = &c->n[q[i].from - 1];
            if (!to->isolated && !from->isolated) {
                raft_step(to->r, &q[i]);
                if (q[i].type == RAFT_MSG_SNAPSHOT)
                    raft_report_snapshot(from->r, q[i].to, true);
            }
            msg_release(&q[i]);
        }
        free(q);
    }
}

static int c_init(struct cluster *c, bool pre_vote, bool check_quorum)
{
    static const raft_id voters[CN] = {1, 2, 3};
    memset(c, 0, sizeof(*c));
    c->nn = CMAX;
    for (int i = 0; i < CMAX; i++) {
        /* Member 4 starts empty: it joins only if a conf change adds it. */
        struct raft_config cfg = {.id = (raft_id)i + 1, .election_tick = 10,
                                  .seed = 7, .voters = voters,
                                  .n_voters = i < CN ? CN : 0,
                                  .pre_vote = pre_vote,
                                  .check_quorum = check_quorum};
        if (raft_new(&cfg, NULL, NULL, NULL, 0, &c->n[i].r) != 0)
            return -1;
    }
    c_run(c);
    return 0;
}

static void c_free(struct cluster *c)
{
    for (size_t i = 0; i < c->nq; i++)
        msg_release(&c->q[i]);
    for (int i = 0; i < c->nn; i++)
        raft_free(c->n[i].r);
}

/* Ticks only node `who` until it leads (others hear from it). */
static int c_elect(struct cluster *c, int who)
{
    for (int t = 0; t < 50 && raft_role(c->n[who].r) != RAFT_LEADER; t++) {
        raft_tick(c->n[who].r);
        c_run(c);
    }
    return raft_role(c->n[who].r) == RAFT_LEADER ? 0 : -1;
}

TEST(cluster_election_replication_and_persist_order)
{
    struct cluster c;
    raft_index idx;
    ASSERT_OK(c_init(&c, true, true));
    ASSERT_OK(c_elect(&c, 0));
    ASSERT_EQ(raft_leader(c.n[1].r), 1);
    ASSERT_EQ(raft_leader(c.n[2].r), 1);
    /* Votes wait for persistence; the leader's appends do not. */
    ASSERT_EQ(c.n[1].n_vote_resp_now + c.n[2].n_vote_resp_now, 0);
    ASSERT_GE(c.n[1].n_vote_resp_after + c.n[2].n_vote_resp_after, 1);
    ASSERT_GE(c.n[0].n_app_now, 2);
    ASSERT_OK(raft_propose(c.n[0].r, RAFT_ENTRY_NORMAL, "x", 1, &idx, NULL));
    c_run(&c);
    for (int i = 0; i < CN; i++) {
        ASSERT_EQ(raft_commit_index(c.n[i].r), idx);
        ASSERT_EQ(c.n[i].d.applied, idx);
    }
    /* A follower forwards; it learns the result by applying. */
    ASSERT_EQ(raft_propose(c.n[1].r, RAFT_ENTRY_NORMAL, "y", 1, NULL, NULL),
              -RAFT_ENOTLEADER);
    ASSERT_OK(raft_forward(c.n[1].r, RAFT_ENTRY_NORMAL, "y", 1));
    c_run(&c);
    ASSERT_EQ(c.n[1].d.applied, idx + 1);
    ASSERT_STR_EQ(c.n[1].d.last_applied, "y");
    c_free(&c);
}

TEST(cluster_follower_read_index)
{
    struct cluster c;
    struct raft_ready rd;
    raft_index commit;
    ASSERT_OK(c_init(&c, false, false));
    ASSERT_OK(c_elect(&c, 0));
    ASSERT_OK(raft_propose(c.n[0].r, RAFT_ENTRY_NORMAL, "x", 1, NULL, NULL));
    c_run(&c);
    commit = raft_commit_index(c.n[0].r);
    /* Leader read: confirmed by a heartbeat round, not before. */
    ASSERT_OK(raft_read_index(c.n[0].r, 11));
    ASSERT_OK(raft_ready(c.n[0].r, &rd));
    ASSERT_EQ(rd.n_read_states, 0);
    ASSERT_GE(rd.n_messages, 2); /* the heartbeats */
    for (size_t i = 0; i < rd.n_messages; i++)
        c_queue(&c, &c.n[0], &rd.messages[i]);
    raft_ready_free(&rd);
    c.n[2].isolated = true; /* one follower is enough for a quorum */
    c_run(&c);
    ASSERT_EQ(c.n[0].read_ctx, 11);
    ASSERT_EQ(c.n[0].read_index, commit);
    /* Follower read: asks the leader, which confirms and answers. */
    ASSERT_OK(raft_read_index(c.n[1].r, 12));
    c_run(&c);
    ASSERT_EQ(c.n[1].read_ctx, 12);
    ASSERT_EQ(c.n[1].read_index, commit);
    /* Without a quorum the leader cannot confirm: no read state. */
    c.n[1].isolated = true;
    ASSERT_OK(raft_read_index(c.n[0].r, 13));
    c_run(&c);
    ASSERT_EQ(c.n[0].read_ctx, 11);
    c_free(&c);
}

TEST(cluster_leader_transfer)
{
    struct cluster c;
    ASSERT_OK(c_init(&c, true, true));
    ASSERT_OK(c_elect(&c, 0));
    ASSERT_EQ(raft_transfer_leader(c.n[1].r, 3), -RAFT_ENOTLEADER);
    ASSERT_EQ(raft_transfer_leader(c.n[0].r, 1), -EINVAL);
    ASSERT_OK(raft_transfer_leader(c.n[0].r, 3));
    ASSERT_EQ(raft_propose(c.n[0].r, RAFT_ENTRY_NORMAL, "x", 1, NULL, NULL),
              -RAFT_ETRANSFER);
    c_run(&c);
    ASSERT_EQ(raft_role(c.n[2].r), RAFT_LEADER);
    ASSERT_EQ(raft_role(c.n[0].r), RAFT_FOLLOWER);
    ASSERT_EQ(raft_leader(c.n[0].r), 3);
    ASSERT_OK(raft_propose(c.n[2].r, RAFT_ENTRY_NORMAL, "x", 1, NULL, NULL));
    c_run(&c);
    ASSERT_EQ(c.n[0].d.applied, raft_last_index(c.n[2].r));
    c_free(&c);
}

TEST(cluster_check_quorum_steps_down)
{
    struct cluster c;
    ASSERT_OK(c_init(&c, true, true));
    ASSERT_OK(c_elect(&c, 0));
    c.n[0].isolated = true;
    for (int t = 0; t < 25; t++) {
        raft_tick(c.n[0].r);
        c_run(&c);
    }
    ASSERT_EQ(raft_role(c.n[0].r), RAFT_FOLLOWER);
    /* With pre-vote, the isolated member does not inflate its term. */
    {
        raft_term t0 = raft_current_term(c.n[0].r);
        for (int t = 0; t < 100; t++) {
            raft_tick(c.n[0].r);
            c_run(&c);
        }
        ASSERT_EQ(raft_current_term(c.n[0].r), t0);
    }
    /* The others elect a new leader once both stopped hearing from the
     * old one (before that, the lease makes them ignore votes). */
    raft_id lead = 0;
    for (int t = 0; t < 60 && lead == 0; t++) {
        raft_tick(c.n[1].r);
        raft_tick(c.n[2].r);
        c_run(&c);
        for (int i = 1; i < CN; i++)
            if (raft_role(c.n[i].r) == RAFT_LEADER)
                lead = (raft_id)i + 1;
    }
    ASSERT_NE(lead, 0);
    ASSERT_GT(raft_current_term(c.n[lead - 1].r), raft_current_term(c.n[0].r));
    c.n[0].isolated = false;
    for (int t = 0; t < 3; t++) {
        raft_tick(c.n[lead - 1].r);
        c_run(&c);
    }
    ASSERT_EQ(raft_leader(c.n[0].r), lead);
    c_free(&c);
}

TEST(cluster_snapshot_catch_up)
{
    struct cluster c;
    struct raft_snapshot_meta meta;
    ASSERT_OK(c_init(&c, false, false));
    ASSERT_OK(c_elect(&c, 0));
    c.n[2].isolated = true;
    for (int i = 0; i < 20; i++) {
        ASSERT_OK(raft_propose(c.n[0].r, RAFT_ENTRY_NORMAL, "v", 1, NULL,
                               NULL));
        c_run(&c);
    }
    ASSERT_EQ(c.n[0].d.applied, 24);
    ASSERT_OK(raft_snapshot_meta(c.n[0].r, 20, &meta));
    ASSERT_EQ(meta.conf.n_voters, 3);
    ASSERT_OK(raft_compact(c.n[0].r, 20));
    c.n[0].snap_index = 20;
    c.n[2].isolated = false;
    for (int t = 0; t < 3; t++) {
        raft_tick(c.n[0].r);
        c_run(&c);
    }
    ASSERT_EQ(c.snapshots_sent, 1);
    ASSERT_EQ(c.n[2].d.snap.index, 20);
    ASSERT_EQ(c.n[2].d.applied, 24);
    ASSERT_EQ(raft_first_index(c.n[2].r), 21);
    c_free(&c);
}

TEST(cluster_membership_join_and_leader_removal)
{
    struct cluster c;
    struct raft_conf_change cc = {.op = RAFT_CONF_ADD_VOTER, .node = 4,
                                  .context = "m4", .context_len = 2};
    struct raft_conf_state conf;
    void *buf;
    size_t len;
    raft_index idx;

    ASSERT_OK(c_init(&c, true, true));
    ASSERT_OK(c_elect(&c, 0));
    /* Member 4 is not a voter yet: it never campaigns. */
    for (int t = 0; t < 50; t++)
        raft_tick(c.n[3].r);
    ASSERT_EQ(raft_role(c.n[3].r), RAFT_FOLLOWER);
    ASSERT_EQ(raft_current_term(c.n[3].r), 0);

    ASSERT_OK(raft_conf_change_encode(&cc, &buf, &len));
    ASSERT_OK(raft_propose(c.n[0].r, RAFT_ENTRY_CONF_CHANGE, buf, len, &idx,
                           NULL));
    free(buf);
    c_run(&c);
    /* The new member learned the log, including its own addition. */
    raft_conf(c.n[3].r, &conf);
    ASSERT_EQ(conf.n_voters, 4);
    ASSERT_EQ(c.n[3].d.applied, idx);
    ASSERT_OK(raft_propose(c.n[0].r, RAFT_ENTRY_NORMAL, "after", 5, &idx,
                           NULL));
    c_run(&c);
    ASSERT_EQ(c.n[3].d.applied, idx);

    /* Remove the leader: it steps down once the change applies, and the
     * other three elect a new leader among themselves. */
    cc.op = RAFT_CONF_REMOVE_VOTER;
    cc.node = 1;
    ASSERT_OK(raft_conf_change_encode(&cc, &buf, &len));
    ASSERT_OK(raft_propose(c.n[0].r, RAFT_ENTRY_CONF_CHANGE, buf, len, &idx,
                           NULL));
    free(buf);
    c_run(&c);
    ASSERT_EQ(raft_role(c.n[0].r), RAFT_FOLLOWER);
    for (int i = 1; i < 4; i++) {
        raft_conf(c.n[i].r, &conf);
        ASSERT_EQ(conf.n_voters, 3);
        ASSERT_EQ(conf.voters[0], 2);
        ASSERT_EQ(c.n[i].d.applied, idx);
    }
    {
        raft_id lead = 0;
        for (int t = 0; t < 100 && lead == 0; t++) {
            for (int i = 1; i < 4; i++)
                raft_tick(c.n[i].r);
            c_run(&c);
            for (int i = 1; i < 4; i++)
                if (raft_role(c.n[i].r) == RAFT_LEADER)
                    lead = (raft_id)i + 1;
        }
        ASSERT_NE(lead, 0);
        ASSERT_NE(raft_role(c.n[0].r), RAFT_LEADER);
        ASSERT_OK(raft_propose(c.n[lead - 1].r, RAFT_ENTRY_NORMAL, "x", 1,
                               &idx, NULL));
        c_run(&c);
        for (int i = 1; i < 4; i++)
            ASSERT_EQ(c.n[i].d.applied, idx);
    }
    c_free(&c);
}

TEST_MAIN(TEST_ENTRY(bootstrap_and_elect),
          TEST_ENTRY(commit_waits_for_persistence),
          TEST_ENTRY(restart_from_disk),
          TEST_ENTRY(compaction_and_restart_from_snapshot),
          TEST_ENTRY(read_index_single_voter),
          TEST_ENTRY(conf_change_codec_and_checks),
          TEST_ENTRY(bad_input),
          TEST_ENTRY(cluster_election_replication_and_persist_order),
          TEST_ENTRY(cluster_follower_read_index),
          TEST_ENTRY(cluster_leader_transfer),
          TEST_ENTRY(cluster_check_quorum_steps_down),
          TEST_ENTRY(cluster_snapshot_catch_up),
          TEST_ENTRY(cluster_membership_join_and_leader_removal))
