/* libFuzzer target for the Raft core's network input: the fuzz input is
 * decoded into a sequence of messages (any type, term, index, entries,
 * snapshot meta) stepped into a member of a 3-voter cluster, interleaved
 * with ticks, proposals, reads and ready batches that are persisted and
 * acknowledged at once. Whatever arrives, the core must return an error or
 * carry on: no crash, no leak, no undefined behaviour. */
#include "raft.h"

#include <stdlib.h>
#include <string.h>

struct input {
    const uint8_t *p;
    size_t n;
};

static uint64_t take(struct input *in, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; i++) {
        v = (v << 8) | (in->n ? *in->p : 0);
        if (in->n) {
            in->p++;
            in->n--;
        }
    }
    return v;
}

static void drain(struct raft *r)
{
    struct raft_ready rd;
    for (int i = 0; i < 16 && raft_has_ready(r); i++) {
        if (raft_ready(r, &rd) != 0)
            return;
        raft_persisted(r, rd.persist_index, rd.persist_term);
        if (rd.n_committed)
            raft_applied(r, rd.committed[rd.n_committed - 1].index);
        if (rd.has_snapshot)
            raft_applied(r, rd.snapshot.index);
        raft_ready_free(&rd);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const raft_id voters[] = {1, 2, 3};
    struct raft_config cfg = {.id = 1, .election_tick = 4, .seed = 1,
                              .voters = voters, .n_voters = 3,
                              .pre_vote = true, .check_quorum = true,
                              .max_inflight = 2};
    struct input in = {data, size};
    struct raft *r;
    uint8_t payload[64];

    memset(payload, 'x', sizeof(payload));
    cfg.pre_vote = take(&in, 1) & 1;
    if (raft_new(&cfg, NULL, NULL, NULL, 0, &r) != 0)
        return 0;
    drain(r);
    while (in.n > 0) {
        unsigned op = (unsigned)take(&in, 1);
        if (op < 16) {
            raft_tick(r);
        } else if (op < 24) {
            raft_propose(r, RAFT_ENTRY_NORMAL, payload, op % 8, NULL, NULL);
        } else if (op < 28) {
            raft_read_index(r, op);
        } else if (op < 30) {
            raft_compact(r, raft_applied_index(r));
        } else if (op < 32) {
            raft_transfer_leader(r, 1 + op % 3);
        } else {
            struct raft_entry ents[4];
            struct raft_message m;
            memset(&m, 0, sizeof(m));
            memset(ents, 0, sizeof(ents));
            m.type = (enum raft_msg_type)(op % 16);
            m.from = take(&in, 1) % 5;
            m.to = 1;
            m.term = take(&in, 1);
            m.log_term = take(&in, 1);
            m.index = take(&in, 1);
            m.commit = take(&in, 1);
            m.reject = take(&in, 1) & 1;
            m.reject_hint = take(&in, 1);
            m.context = take(&in, 1);
            m.n_entries = take(&in, 1) % 5;
            for (size_t i = 0; i < m.n_entries; i++) {
                ents[i].term = take(&in, 1);
                ents[i].index = m.index + 1 + i;
                ents[i].type = (enum raft_entry_type)(take(&in, 1) % 3);
                ents[i].len = take(&in, 1) % sizeof(payload);
                ents[i].data = ents[i].len ? payload : NULL;
            }
            m.entries = m.n_entries ? ents : NULL;
            m.snapshot.index = take(&in, 1);
            m.snapshot.term = take(&in, 1);
            m.snapshot.conf.n_voters = (unsigned)(take(&in, 1) % 5);
            for (unsigned i = 0; i < m.snapshot.conf.n_voters; i++)
                m.snapshot.conf.voters[i] = i + 1;
            raft_step(r, &m);
            if (m.type == RAFT_MSG_SNAPSHOT)
                raft_report_snapshot(r, m.from, m.reject);
        }
        drain(r);
    }
    raft_free(r);
    return 0;
}
