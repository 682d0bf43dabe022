/* Unit tests of the pure Raft core on a single voter: election, the
 * propose -> persist -> commit -> apply path, restart from persisted state,
 * compaction, read index, conf change encoding and API error paths. The
 * many-voter simulation lives in test_raft_sim.c. */
#include "raft.h"
#include "test.h"

#include <errno.h>

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
    ASSERT_STR_EQ(raft_role_name(RAFT_LEADER), "StateLeader");
    raft_free(r);
}

TEST_MAIN(TEST_ENTRY(bootstrap_and_elect),
          TEST_ENTRY(commit_waits_for_persistence),
          TEST_ENTRY(restart_from_disk),
          TEST_ENTRY(compaction_and_restart_from_snapshot),
          TEST_ENTRY(read_index_single_voter),
          TEST_ENTRY(conf_change_codec_and_checks),
          TEST_ENTRY(bad_input))
