/* The pure Raft core: a deterministic state machine in the style of
 * etcd-io/raft. Messages and clock ticks go in; a "ready" batch of things to
 * persist, send and apply comes out. No syscalls, no clock, no globals;
 * randomness comes from a seeded PRNG inside struct raft. */
#ifndef ETCFS_RAFT_H
#define ETCFS_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * THREADING. A struct raft is used from one thread. The contents of a
 * struct raft_ready (entry data included) are immutable and may be read
 * from other threads (e.g. a WAL writer) until raft_ready_free(), which
 * must be called on the raft thread.
 *
 * ERRORS. Functions return 0 or a negative errno. Out of memory is -ENOMEM
 * and leaves the node unchanged or in a consistent state (never half a
 * message). Raft-specific conditions use the RAFT_E* codes below (negated),
 * with messages from raft_strerror().
 *
 * THE NODE-LOOP PROTOCOL (see docs/raft.md for the long version).
 *
 *   start:   r = raft_new(&cfg, &hard_state, &snap_meta, entries, n)
 *            with what the WAL and the latest snapshot hold (all zero for a
 *            fresh member; cfg.voters lists the initial cluster then).
 *   inputs:  raft_tick() every tick (e.g. 100 ms), raft_step() for every
 *            message from a peer, raft_propose()/raft_read_index()/...
 *   loop:    while (raft_has_ready(r)) {
 *              raft_ready(r, &rd);
 *              1. send rd.messages now (they do not depend on this batch's
 *                 persistence: the leader's appends go out in parallel
 *                 with its own fsync, Raft thesis 10.2.1);
 *              2. persist, in this order and durably (one fsync):
 *                 rd.snapshot (if has_snapshot: install the snapshot data
 *                 received with the RAFT_MSG_SNAPSHOT message and record it),
 *                 rd.entries (append; see TRUNCATION), rd.hard_state (if
 *                 has_hard_state). Entries before the hard state, as etcd
 *                 does: a tail torn in between then leaves a commit index
 *                 covered by the log, and raft_new() repairs a term older
 *                 than the last entry's;
 *              3. raft_persisted(r, rd.persist_index, rd.persist_term);
 *              4. send rd.messages_after_persist (votes and append
 *                 responses: they promise durability);
 *              5. apply rd.committed in order (they are already durable
 *                 locally, so this may run before step 2 completes); for
 *                 a snapshot, load the store from it; then
 *                 raft_applied(r, index of last applied entry);
 *              6. hand rd.read_states to their waiters: serve each read
 *                 once the applied index >= read_state.index;
 *              raft_ready_free(&rd);
 *            }
 *   Several batches may be outstanding (persisting batch N while taking
 *   batch N+1), provided they are persisted, acknowledged with
 *   raft_persisted() and their after-persist messages sent in the order
 *   they were taken. In particular, a batch with nothing to persist must
 *   still hold its messages_after_persist until every earlier batch is
 *   durable (an append response may acknowledge entries that an earlier
 *   batch is still writing). Nothing is handed out twice.
 *
 * TRUNCATION. A follower may have to replace a suffix of its log: then
 * rd.entries[0].index is <= an index persisted earlier, and the entries of
 * this batch replace every persisted entry from that index on. An append-
 * only WAL may just append them, if its replay keeps, for each index, the
 * last record written (as etcd's WAL does). Committed entries are never
 * replaced.
 *
 * SNAPSHOTS. The node loop owns snapshot data; the core only sees
 * metadata. After saving a snapshot of the store at applied index i (with
 * meta from raft_snapshot_meta()), the node loop calls raft_compact(r, i);
 * the core then offers snapshot i to followers that need entries older
 * than its in-memory log. An outgoing RAFT_MSG_SNAPSHOT tells the node
 * loop to stream its snapshot at m.snapshot.index to m.to, then deliver
 * the message itself (after the data) and report success or failure with
 * raft_report_snapshot(). If that file is gone because a newer snapshot
 * was saved meanwhile, stream the newer one and REPLACE m.snapshot with
 * the newer file's meta: data and meta must always describe the same
 * index, or the receiver would apply entries twice. On the receiver, the
 * node loop keeps the streamed data and steps the message; if a later
 * ready has has_snapshot with that index, load the store from it and
 * record it durably (snapshot file + WAL marker) before acknowledging;
 * otherwise the data may be dropped.
 */

typedef uint64_t raft_id;   /* node id; 0 means none */
typedef uint64_t raft_term;
typedef uint64_t raft_index;

/* Raft-specific error codes (returned negated). The range is reserved for
 * the Raft core in the project's error table. */
enum {
    RAFT_ENOTLEADER = 3001,  /* this node is not the leader: forward or retry */
    RAFT_ENOLEADER = 3002,   /* no leader known right now */
    RAFT_ETRANSFER = 3003,   /* leadership transfer in progress */
    RAFT_ECONFPENDING = 3004,/* an uncommitted/unapplied conf change exists */
    RAFT_ECOMPACTED = 3005,  /* index is below the compacted log */
    RAFT_EUNAVAILABLE = 3006,/* index is beyond the log / not yet allowed */
    RAFT_EBADCONF = 3007,    /* malformed or impossible conf change */
    RAFT_ETOOMANY = 3008,    /* more voters than RAFT_MAX_VOTERS */
};

/* Text for a code from the RAFT_E* table or a plain errno (either sign). */
const char *raft_strerror(int rv);

#define RAFT_MAX_VOTERS 32

enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 0,      /* opaque data (empty for a leader's no-op) */
    RAFT_ENTRY_CONF_CHANGE = 1, /* data from raft_conf_change_encode() */
};

/* One log entry. In everything the core returns, data points to immutable
 * memory owned by the core (or by the ready batch it came in), len bytes,
 * NULL when len is 0. In everything passed in, data is borrowed for the
 * call; the core copies what it keeps. */
struct raft_entry {
    raft_term term;
    raft_index index;
    enum raft_entry_type type;
    size_t len;
    void *data;
};

/* Must be durable before messages that depend on it are sent. */
struct raft_hard_state {
    raft_term term;
    raft_id vote;
    raft_index commit;
};

/* The configuration: who votes. Sorted ascending, no duplicates. */
struct raft_conf_state {
    unsigned n_voters;
    raft_id voters[RAFT_MAX_VOTERS];
};

/* What a snapshot covers: the store after applying index (of term), and
 * the configuration in force at that index. index == 0 means none. */
struct raft_snapshot_meta {
    raft_index index;
    raft_term term;
    struct raft_conf_state conf;
};

enum raft_msg_type {
    RAFT_MSG_APPEND = 1,      /* AppendEntries: log_term/index = prev entry */
    RAFT_MSG_APPEND_RESP,     /* index = last matching index, or reject +
                                 reject_hint/log_term for fast backup */
    RAFT_MSG_VOTE,            /* RequestVote: log_term/index = last entry */
    RAFT_MSG_VOTE_RESP,       /* reject = vote not granted */
    RAFT_MSG_PRE_VOTE,        /* term = the term the sender would campaign in */
    RAFT_MSG_PRE_VOTE_RESP,
    RAFT_MSG_HEARTBEAT,       /* commit, context = read-index round */
    RAFT_MSG_HEARTBEAT_RESP,  /* context echoed */
    RAFT_MSG_SNAPSHOT,        /* InstallSnapshot: snapshot meta (data apart) */
    RAFT_MSG_PROP,            /* proposals forwarded to the leader */
    RAFT_MSG_READ_INDEX,      /* a follower's read request; context = ctx */
    RAFT_MSG_READ_INDEX_RESP, /* index = read index, context = ctx */
    RAFT_MSG_TIMEOUT_NOW,     /* leader transfer: campaign right away */
};
#define RAFT_MSG_TYPE_MAX RAFT_MSG_TIMEOUT_NOW

/* A message between members. Plain data: the node loop encodes it for the
 * wire. Fields not used by a type are zero. */
struct raft_message {
    enum raft_msg_type type;
    raft_id from;
    raft_id to;
    raft_term term;
    raft_term log_term;
    raft_index index;
    raft_index commit;
    struct raft_entry *entries;
    size_t n_entries;
    bool reject;
    raft_index reject_hint;
    struct raft_snapshot_meta snapshot; /* RAFT_MSG_SNAPSHOT only */
    uint64_t context;
};

/* A linearizable read may be served once applied index >= index. */
struct raft_read_state {
    raft_index index;
    uint64_t ctx; /* as given to raft_read_index() */
};

enum raft_role {
    RAFT_FOLLOWER = 0,
    RAFT_PRE_CANDIDATE,
    RAFT_CANDIDATE,
    RAFT_LEADER,
};

/* One batch of work for the node loop; see the protocol above. Owned by
 * the caller after raft_ready() and released with raft_ready_free(). */
struct raft_ready {
    bool has_hard_state;
    struct raft_hard_state hard_state;
    bool has_snapshot;
    struct raft_snapshot_meta snapshot; /* to install and record */
    struct raft_entry *entries;         /* to append durably */
    size_t n_entries;
    struct raft_message *messages;      /* send at once */
    size_t n_messages;
    struct raft_message *messages_after_persist;
    size_t n_messages_after_persist;
    struct raft_entry *committed;       /* to apply, in order */
    size_t n_committed;
    struct raft_read_state *read_states;
    size_t n_read_states;
    /* Arguments for raft_persisted() once the batch is durable: the last
     * entry of rd.entries (or the snapshot); 0/0 when the batch has no
     * entries and no snapshot, and raft_persisted(r, 0, 0) is a no-op. */
    raft_index persist_index;
    raft_term persist_term;
    /* Soft state at the time of the batch, for logs and stats. */
    enum raft_role role;
    raft_id leader;
    raft_term term;
};

struct raft_config {
    raft_id id;              /* this member, non-zero */
    unsigned election_tick;  /* election timeout in ticks; default 10 */
    unsigned heartbeat_tick; /* heartbeat interval in ticks; default 1 */
    uint64_t seed;           /* PRNG seed for election timeouts */
    bool pre_vote;           /* campaign only after a successful pre-vote */
    bool check_quorum;       /* leader steps down without quorum contact */
    unsigned max_inflight;   /* append messages in flight per follower;
                                default 256 */
    size_t max_msg_bytes;    /* entry bytes per append message; default
                                1 MiB (at least one entry is always sent) */
    raft_index snapshot_catchup_entries; /* kept after raft_compact();
                                            0 keeps none */
    /* Initial cluster, used only for a fresh member (no hard state, no
     * snapshot, no entries): as etcd does, the core then writes one
     * RAFT_CONF_ADD_VOTER entry per voter (ascending id, empty context) at
     * term 1, indexes 1..n, committed; they come out in the first ready to
     * persist. Every bootstrapping member must get the same list. A member
     * joining an existing cluster passes none and learns the configuration
     * from the leader. Borrowed for the raft_new() call. */
    const raft_id *voters;
    size_t n_voters;
};

struct raft;

/* Creates a node from its persisted state. hard_state and snapshot may be
 * NULL (fresh member). entries are the WAL entries after snapshot->index,
 * contiguous, borrowed for the call (copied). The loaded entries count as
 * persisted; the applied index starts at snapshot->index (the node loop
 * restores the store from that snapshot), so committed entries after it
 * are handed out again to apply. Returns 0 and sets *out (free with
 * raft_free()), -EINVAL for inconsistent input (gaps, commit beyond the
 * log, id 0), -RAFT_ETOOMANY, -ENOMEM. */
int raft_new(const struct raft_config *cfg,
             const struct raft_hard_state *hard_state,
             const struct raft_snapshot_meta *snapshot,
             const struct raft_entry *entries, size_t n_entries,
             struct raft **out);
void raft_free(struct raft *r);

/* Advances the logical clock by one tick: elections, heartbeats, check
 * quorum. Returns 0 or -ENOMEM. */
int raft_tick(struct raft *r);

/* Feeds a message from a peer (m borrowed for the call). Stale, foreign
 * and malformed messages are ignored (returning 0) or refused with
 * -EINVAL (malformed: unknown type, entries not contiguous); either way
 * the node stays safe. -ENOMEM on allocation failure. */
int raft_step(struct raft *r, const struct raft_message *m);

/* Appends a new entry on the leader (data borrowed, copied). Sets *index
 * and *term (either may be NULL) to the entry's position: the proposal is
 * committed iff an entry with that index AND term is later handed out in
 * rd.committed. Returns -RAFT_ENOTLEADER (see raft_leader() to forward, or
 * use raft_forward()), -RAFT_ETRANSFER during a leader transfer,
 * -RAFT_ECONFPENDING / -RAFT_EBADCONF for conf changes, -ENOMEM. */
int raft_propose(struct raft *r, enum raft_entry_type type, const void *data,
                 size_t len, raft_index *index, raft_term *term);

/* On a follower: sends the proposal to the known leader as a RAFT_MSG_PROP
 * (fire and forget: the index is unknown to the sender; match on an id
 * inside the data when it is applied, as etcd does with request ids). On
 * the leader, same as raft_propose(). -RAFT_ENOLEADER if no leader is
 * known, -ENOMEM. */
int raft_forward(struct raft *r, enum raft_entry_type type, const void *data,
                 size_t len);

/* Requests a linearizable read point. A read state {index, ctx} comes out
 * in a later ready once this node's leadership at that index has been
 * confirmed by a quorum (immediately with a single voter, or after the
 * next heartbeat round). A follower asks its leader. If leadership is
 * lost meanwhile, the request is dropped: the caller retries on timeout.
 * Returns -RAFT_ENOLEADER when no leader is known, -ENOMEM. */
int raft_read_index(struct raft *r, uint64_t ctx);

/* Acknowledges that everything handed out in ready batches up to the log
 * position (index, term) is durable, hard state and snapshot included.
 * Stale acknowledgements (the entry at index has since been replaced) are
 * ignored safely. On the leader this counts toward commitment. */
void raft_persisted(struct raft *r, raft_index index, raft_term term);

/* Reports that committed entries up to index have been applied to the
 * state machine (or a snapshot at index installed). */
void raft_applied(struct raft *r, raft_index index);

/* Fills *meta (term, conf state) for an applied index, to store with a
 * snapshot taken at that index. -RAFT_ECOMPACTED if index is older than
 * the log kept in memory, -RAFT_EUNAVAILABLE if not yet applied. */
int raft_snapshot_meta(const struct raft *r, raft_index index,
                       struct raft_snapshot_meta *meta);

/* Tells the core that the node loop has saved a snapshot of the store at
 * index durably (index <= applied index). The core then offers that
 * snapshot (meta from raft_snapshot_meta()) to followers needing entries
 * the log no longer holds, and drops in-memory entries up to
 * index - cfg.snapshot_catchup_entries (kept for slow followers, as etcd
 * keeps SnapshotCatchUpEntries). Older or equal indexes are a no-op.
 * Returns -RAFT_EUNAVAILABLE if index > applied, -ENOMEM. */
int raft_compact(struct raft *r, raft_index index);

/* Leader: result of streaming a snapshot to a follower. On failure the
 * follower is probed again later. Ignored on non-leaders. */
void raft_report_snapshot(struct raft *r, raft_id to, bool ok);

/* The transport could not reach a peer: the leader stops pipelining to it
 * and probes. Ignored on non-leaders. */
void raft_report_unreachable(struct raft *r, raft_id to);

/* Leader: hands leadership to a voter (TimeoutNow once it is up to date).
 * Proposals are refused with -RAFT_ETRANSFER until it completes or an
 * election timeout passes. Returns -RAFT_ENOTLEADER, -EINVAL (not a
 * voter / self), -ENOMEM. */
int raft_transfer_leader(struct raft *r, raft_id to);

/* True if raft_ready() would return a non-empty batch. */
bool raft_has_ready(const struct raft *r);

/* Takes the next batch (see the protocol). Returns 0 (rd filled, possibly
 * empty) or -ENOMEM (nothing handed out; retry later). */
int raft_ready(struct raft *r, struct raft_ready *rd);

/* Releases a batch taken with raft_ready(); safe on a zeroed struct. */
void raft_ready_free(struct raft_ready *rd);

/* Conf change entries. op is RAFT_CONF_ADD_VOTER or RAFT_CONF_REMOVE_VOTER;
 * context is opaque to the core (e.g. member name and peer URLs) and comes
 * back at apply time. Changes take effect, on every node, when the entry
 * is handed out in rd.committed; one may be pending at a time.
 * Data layout, little endian: u8 version (1), u8 op, 6 zero bytes,
 * u64 node id, then the context bytes. */
enum raft_conf_op {
    RAFT_CONF_ADD_VOTER = 1,
    RAFT_CONF_REMOVE_VOTER = 2,
};
struct raft_conf_change {
    enum raft_conf_op op;
    raft_id node;
    const void *context; /* points into the encoded data */
    size_t context_len;
};
/* Encodes into a new buffer (*buf, *len; free() it). -EINVAL, -ENOMEM. */
int raft_conf_change_encode(const struct raft_conf_change *cc, void **buf,
                            size_t *len);
/* Decodes (cc->context borrows from data). -EINVAL if malformed. */
int raft_conf_change_decode(const void *data, size_t len,
                            struct raft_conf_change *cc);

/* Accessors (cheap; for the X-Raft-Index/X-Raft-Term headers and stats). */
raft_id raft_self(const struct raft *r);
raft_term raft_current_term(const struct raft *r);
raft_id raft_leader(const struct raft *r);
enum raft_role raft_role(const struct raft *r);
const char *raft_role_name(enum raft_role role); /* "StateLeader", ... */
raft_index raft_commit_index(const struct raft *r);
raft_index raft_applied_index(const struct raft *r);
raft_index raft_last_index(const struct raft *r);
raft_index raft_first_index(const struct raft *r); /* first in memory */
raft_index raft_persisted_index(const struct raft *r);
void raft_conf(const struct raft *r, struct raft_conf_state *conf);
/* The in-memory entry at index (data borrowed until the next call that
 * changes the node). -RAFT_ECOMPACTED, -RAFT_EUNAVAILABLE. */
int raft_entry_get(const struct raft *r, raft_index index,
                   struct raft_entry *e);
/* Term of the entry at index (also the compaction point). */
int raft_term_at(const struct raft *r, raft_index index, raft_term *term);
/* Leader: replication progress of a voter. -RAFT_ENOTLEADER, -ENOENT. */
int raft_progress(const struct raft *r, raft_id id, raft_index *match,
                  raft_index *next);

#endif /* ETCFS_RAFT_H */
