/* store.h - the etcd v2 key tree as a pure, deterministic state machine.
 * No I/O, no clock, no threads: every mutating call takes the time of the
 * applied entry (now_ns), so every member computes the same result at the
 * same index. Semantics are etcd 3.4's v2store; docs/store.md lists the few
 * places where we differ, and defines the snapshot format byte by byte. */
#ifndef ETCFS_STORE_H
#define ETCFS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct store_watcher;

/* ------------------------------------------------------------------ */
/* Errors                                                               */
/* ------------------------------------------------------------------ */

/* etcd v2 error codes (api/v2error/error.go), every one etcd defines. */
enum {
    STORE_ECODE_KEY_NOT_FOUND = 100,
    STORE_ECODE_TEST_FAILED = 101,
    STORE_ECODE_NOT_FILE = 102,
    STORE_ECODE_NO_MORE_PEER = 103,
    STORE_ECODE_NOT_DIR = 104,
    STORE_ECODE_NODE_EXIST = 105,
    STORE_ECODE_KEY_IS_PRESERVED = 106,
    STORE_ECODE_ROOT_RONLY = 107,
    STORE_ECODE_DIR_NOT_EMPTY = 108,
    STORE_ECODE_EXISTING_PEER_ADDR = 109,
    STORE_ECODE_UNAUTHORIZED = 110,

    STORE_ECODE_VALUE_REQUIRED = 200,
    STORE_ECODE_PREV_VALUE_REQUIRED = 201,
    STORE_ECODE_TTL_NAN = 202,
    STORE_ECODE_INDEX_NAN = 203,
    STORE_ECODE_VALUE_OR_TTL_REQUIRED = 204,
    STORE_ECODE_TIMEOUT_NAN = 205,
    STORE_ECODE_NAME_REQUIRED = 206,
    STORE_ECODE_INDEX_OR_VALUE_REQUIRED = 207,
    STORE_ECODE_INDEX_VALUE_MUTEX = 208,
    STORE_ECODE_INVALID_FIELD = 209,
    STORE_ECODE_INVALID_FORM = 210,
    STORE_ECODE_REFRESH_VALUE = 211,
    STORE_ECODE_REFRESH_TTL_REQUIRED = 212,

    STORE_ECODE_RAFT_INTERNAL = 300,
    STORE_ECODE_LEADER_ELECT = 301,

    STORE_ECODE_WATCHER_CLEARED = 400,
    STORE_ECODE_EVENT_INDEX_CLEARED = 401,
    STORE_ECODE_STANDBY_INTERNAL = 402,
    STORE_ECODE_INVALID_ACTIVE_SIZE = 403,
    STORE_ECODE_INVALID_REMOVE_DELAY = 404,

    STORE_ECODE_CLIENT_INTERNAL = 500,
};

/* Operations return 0 on success, -ENOMEM when out of memory, or
 * STORE_EV2 when etcd would answer with a v2 error; the details are then
 * in the caller's struct store_error. STORE_EV2 is outside errno's range. */
#define STORE_EV2 (-10000)

/* One v2 error, as etcd's v2error.Error {errorCode, message, cause,
 * index}. The message comes from the table (store_error_message). cause is
 * owned by the struct (heap, NUL-terminated, may be NULL = empty) and freed
 * by store_error_clear(). A zeroed struct is a valid "no error". */
struct store_error {
    int code;
    char *cause;
    size_t cause_len;
    uint64_t index;
};

/* The one error table. Message for code ("" for an unknown code), and the
 * HTTP status etcd answers with: 100 -> 404; 101, 105 -> 412; 102, 108 ->
 * 403; 110 -> 401; 300, 301 -> 500; every other code -> 400. */
const char *store_error_message(int code);
int store_error_http_status(int code);

/* Fill err (clearing what it held) with code, a copy of cause (may be
 * NULL) and index. For errors raised outside the store, e.g. the HTTP
 * layer's form parsing (etcd sends index 0 for those). Returns 0 or
 * -ENOMEM. */
int store_error_set(struct store_error *err, int code, const char *cause,
                    uint64_t index);
void store_error_clear(struct store_error *err);

/* ------------------------------------------------------------------ */
/* Events                                                               */
/* ------------------------------------------------------------------ */

enum store_action {
    STORE_ACTION_GET,
    STORE_ACTION_CREATE,
    STORE_ACTION_SET,
    STORE_ACTION_UPDATE,
    STORE_ACTION_DELETE,
    STORE_ACTION_COMPARE_AND_SWAP,
    STORE_ACTION_COMPARE_AND_DELETE,
    STORE_ACTION_EXPIRE,
    STORE_ACTION_RENAME, /* ours: see store_rename() */
};

/* "get", "create", "set", "update", "delete", "compareAndSwap",
 * "compareAndDelete", "expire", "rename". */
const char *store_action_name(enum store_action action);

/* etcd's NodeExtern: a read-only copy of one node (and, for a recursive or
 * directory get, of its children), independent of later store changes. */
struct store_node {
    char *key;          /* full path, NUL-terminated; "" for the root */
    char *value;        /* value bytes (may hold NUL, NUL-terminated too);
                         * NULL where etcd omits it: directories, and the
                         * node of delete/compareAndDelete/expire events */
    size_t value_len;
    bool dir;
    int64_t expiration; /* absolute ns since the epoch; 0 = permanent */
    int64_t ttl;        /* seconds left at the reading time, rounded up */
    struct store_node *nodes; /* children (dir listings only), sorted */
    size_t n_nodes;
    uint64_t modified_index;
    uint64_t created_index;
};

/* One event, as etcd's v2store.Event. Reference-counted and immutable:
 * the same event object sits in the history and is handed to watchers.
 * etcd_index is the X-Etcd-Index of a direct reply (for watch replies the
 * header is the watcher's start index instead, as in etcd). */
struct store_event {
    enum store_action action;
    bool refresh;     /* a refresh=true write: in history, never notified */
    uint64_t etcd_index;
    struct store_node node;
    struct store_node *prev_node; /* NULL when etcd omits prevNode */
    unsigned refs_;   /* private */
};

/* Take another reference (returns ev) / drop one (frees at zero). */
struct store_event *store_event_ref(struct store_event *ev);
void store_event_unref(struct store_event *ev);

/* ------------------------------------------------------------------ */
/* JSON, byte for byte as etcd's v2 HTTP API writes it                  */
/* ------------------------------------------------------------------ */

/* A growable output buffer. init zeroes it; free releases data. The
 * encoders append; data is always NUL-terminated after a successful call
 * (len excludes the NUL). */
struct store_buf {
    char *data;
    size_t len;
    size_t cap;
};
void store_buf_init(struct store_buf *b);
void store_buf_free(struct store_buf *b);
int store_buf_append(struct store_buf *b, const void *p, size_t n);

/* Append ev as etcd encodes it (json.NewEncoder(w).Encode: HTML-safe
 * escaping, invalid UTF-8 -> \ufffd, RFC 3339 expiration in UTC with the
 * fraction trimmed, omitempty fields left out) followed by "\n". This is
 * the body of a key reply and one line of a watch stream or a FUSE .watch
 * file. Returns 0 or -ENOMEM. */
int store_event_json(struct store_buf *b, const struct store_event *ev);

/* As store_event_json, with etcd's noValueOnSuccess=true: for set,
 * compareAndSwap, create and update the body is just {"action":"..."}. */
int store_event_json_novalue(struct store_buf *b,
                             const struct store_event *ev);

/* etcd's Event.IsCreated: create, or set without a prevNode. The HTTP
 * layer answers 201 Created for these, 200 otherwise. */
bool store_event_is_created(const struct store_event *ev);

/* Append {"errorCode":..,"message":..,"cause":..,"index":..} and "\n", as
 * etcd's Error.WriteTo. The HTTP status is store_error_http_status(code);
 * the X-Etcd-Index header is err->index. Returns 0 or -ENOMEM. */
int store_error_json(struct store_buf *b, const struct store_error *err);

/* Append the /v2/stats/store body (no trailing newline, as etcd). */
int store_stats_json(struct store *s, struct store_buf *b);

/* Append a Go-encoding/json string literal (quotes included). Exposed for
 * the HTTP and FUSE layers' other JSON bodies. */
int store_json_string(struct store_buf *b, const void *p, size_t n);

/* ------------------------------------------------------------------ */
/* The store                                                            */
/* ------------------------------------------------------------------ */

/* A fresh store: an empty root directory "/", index 0. NULL on ENOMEM. */
struct store *store_new(void);

/* Free the store. Every still-registered watcher's callback is called once
 * with ev == NULL (the cancel status) before it is freed. */
void store_free(struct store *s);

/* The current index (etcd's CurrentIndex, X-Etcd-Index). */
uint64_t store_index(const struct store *s);
bool store_has_ttl_keys(const struct store *s);
/* Earliest expiration in the TTL heap, 0 if none. */
int64_t store_next_expiration(const struct store *s);
size_t store_watcher_count(const struct store *s);

/* Conventions for every operation below:
 * - path: borrowed, NUL-terminated; cleaned as Go's path.Clean(path.Join(
 *   "/", path)), so "a//b/" is "/a/b". "/" is the read-only root.
 * - value/prev_value: borrowed bytes. prev_value_len == 0 means "no
 *   prevValue" and prev_index == 0 means "no prevIndex", as in etcd.
 * - expire_ns: absolute expiration (ns since the epoch), 0 = permanent.
 *   The proposer computes it as now + ttl; the store never reads a clock.
 * - now_ns: the time of the entry being applied (or of the read), used
 *   only to compute the ttl field of replies.
 * - *ev (out): on success a new reference the caller must unref; on
 *   failure NULL. err (out, may be NULL): filled on STORE_EV2.
 * - Watchers matching the event are called synchronously before return.
 * - Store statistics are counted as etcd counts them. */

/* Get (etcd Store.Get). Children are always returned sorted by key (etcd
 * returns map order unless sorted=true; sorted is accepted and ignored).
 * Hidden children ("_" names) are left out of listings. Counts gets. */
int store_get(struct store *s, const char *path, bool recursive, bool sorted,
              int64_t now_ns, struct store_event **ev,
              struct store_error *err);
/* As store_get but not counted in the statistics (FUSE lookups). */
int store_read(struct store *s, const char *path, bool recursive,
               int64_t now_ns, struct store_event **ev,
               struct store_error *err);

/* Set (etcd Store.Set): create or replace a file (a new createdIndex), or
 * create a directory. refresh keeps the value and only moves the TTL; its
 * event goes to the history but to no watcher. */
int store_set(struct store *s, const char *path, bool dir, const void *value,
              size_t value_len, int64_t expire_ns, bool refresh,
              int64_t now_ns, struct store_event **ev,
              struct store_error *err);

/* Create (etcd Store.Create): fails with 105 if the key exists. unique
 * appends "/%020d" of the new index to path (POST in-order keys). */
int store_create(struct store *s, const char *path, bool dir,
                 const void *value, size_t value_len, bool unique,
                 int64_t expire_ns, bool refresh, int64_t now_ns,
                 struct store_event **ev, struct store_error *err);

/* Update (etcd Store.Update): the key must exist; expire_ns 0 removes the
 * TTL. A directory can only get a new TTL (value must be empty). */
int store_update(struct store *s, const char *path, const void *value,
                 size_t value_len, int64_t expire_ns, bool refresh,
                 int64_t now_ns, struct store_event **ev,
                 struct store_error *err);

int store_compare_and_swap(struct store *s, const char *path,
                           const void *prev_value, size_t prev_value_len,
                           uint64_t prev_index, const void *value,
                           size_t value_len, int64_t expire_ns, bool refresh,
                           int64_t now_ns, struct store_event **ev,
                           struct store_error *err);

/* Delete (etcd Store.Delete): recursive implies dir. */
int store_delete(struct store *s, const char *path, bool dir, bool recursive,
                 int64_t now_ns, struct store_event **ev,
                 struct store_error *err);

int store_compare_and_delete(struct store *s, const char *path,
                             const void *prev_value, size_t prev_value_len,
                             uint64_t prev_index, int64_t now_ns,
                             struct store_event **ev,
                             struct store_error *err);

/* Our extension for FUSE mv: move the node at old_path (file or directory
 * with its subtree) to new_path in one index. One event, action "rename",
 * node = the moved node at new_path (modifiedIndex = the new index,
 * createdIndex kept), prevNode = the node as it was at old_path. Watchers
 * on new_path's ancestors are notified as for a create, watchers on
 * old_path, its ancestors and its subtree as for a delete; each watcher
 * gets the event at most once. An existing file at new_path is replaced
 * when the source is a file (POSIX rename); any other existing target is
 * 105 (also old == new). Errors: 107 for "/", 100 missing source, 104 a
 * file on the target's parent path, 209 moving a directory into itself or
 * nesting deeper than 4096 levels. docs/store.md. */
int store_rename(struct store *s, const char *old_path, const char *new_path,
                 int64_t now_ns, struct store_event **ev,
                 struct store_error *err);

/* DeleteExpiredKeys: expire every node whose expiration <= cutoff_ns, in
 * heap order, one index and one "expire" event each (prevNode = the
 * expired node; a directory takes its subtree, and watchers of every
 * descendant are notified). Returns the number of nodes expired. */
int store_expire(struct store *s, int64_t cutoff_ns);

/* ------------------------------------------------------------------ */
/* The Raft apply path                                                  */
/* ------------------------------------------------------------------ */

enum store_method {
    STORE_METHOD_PUT,
    STORE_METHOD_POST,
    STORE_METHOD_DELETE,
    STORE_METHOD_QGET,   /* quorum=true GET, applied through the log */
    STORE_METHOD_GET,    /* a local read (not normally in the log) */
    STORE_METHOD_SYNC,   /* expire keys with cutoff = time */
    STORE_METHOD_RENAME, /* path -> new_path */
};

/* A decoded raftd Request (raftd/request.proto). All pointers borrowed for
 * the duration of store_apply. */
struct store_request {
    enum store_method method;
    const char *path;
    const void *val;
    size_t val_len;
    bool dir;
    const void *prev_value;
    size_t prev_value_len;
    uint64_t prev_index;
    int prev_exist;     /* -1 not given, 0 false, 1 true */
    int64_t expiration; /* absolute ns, 0 none */
    bool recursive;
    bool sorted;
    bool refresh;
    int64_t time;       /* leader clock at proposal, ns (SYNC cutoff) */
    const char *new_path;
};

/* Method from its wire name "PUT" "POST" "DELETE" "QGET" "GET" "SYNC"
 * "RENAME"; -EINVAL for anything else. */
int store_method_parse(const char *name);

/* Apply one committed request exactly as etcd's applierV2store does:
 * PUT: prevExist=true -> update (or compareAndSwap when prevValue or
 *      prevIndex is given); prevExist=false -> create; else prevValue or
 *      prevIndex -> compareAndSwap; else set.
 * POST: create with unique=true. DELETE: compareAndDelete when prevValue
 * or prevIndex is given, else delete. QGET/GET: get. SYNC: store_expire(
 * time), *ev = NULL, returns 0. RENAME: store_rename.
 * now_ns is the entry's time (callers pass request.time). */
int store_apply(struct store *s, const struct store_request *r,
                int64_t now_ns, struct store_event **ev,
                struct store_error *err);

/* ------------------------------------------------------------------ */
/* Watchers                                                             */
/* ------------------------------------------------------------------ */

/* Called synchronously, inside the store call that produced ev.
 * ev is borrowed for the duration of the call (store_event_ref to keep
 * it). ev == NULL means the watcher is being cancelled by store_free; it
 * is the last call. A non-stream watcher is removed and freed by the store
 * right after its one callback returns. The callback must not block and
 * must not call into the store, except store_watcher_cancel(s, w) on its
 * own w (how a consumer drops a stream watcher whose queue is full: the
 * store itself never blocks and never queues). */
typedef void (*store_watch_cb)(struct store_watcher *w,
                               struct store_event *ev, void *data);

/* Watch (etcd Store.Watch). since_index 0 means "from the next index".
 * Outcomes:
 * - returns STORE_EV2 with code 401, cause "the requested history has been
 *   cleared [start/since]", index = current index: since_index is older
 *   than the 1000-event history.
 * - returns 0 with *hist_ev set (a reference for the caller) and *w NULL:
 *   a matching event is in the history; as in etcd the watch ends there
 *   and cb is never called, even for stream=true (etcd then keeps the
 *   stream open and sends nothing more; the HTTP layer may do the same).
 * - returns 0 with *hist_ev NULL and *w registered: cb fires on each
 *   later matching event (once for non-stream). Cancel with
 *   store_watcher_cancel.
 * *start_index (may be NULL) gets the current index: the X-Etcd-Index of a
 * watch reply. cb must not be NULL; path is borrowed for the call; data is
 * handed back to cb as given. */
int store_watch(struct store *s, const char *path, bool recursive,
                bool stream, uint64_t since_index, store_watch_cb cb,
                void *data, struct store_watcher **w,
                struct store_event **hist_ev, uint64_t *start_index,
                struct store_error *err);

/* Remove and free w without calling its callback. Safe from inside w's
 * own callback. w must still be registered (not a fired non-stream
 * watcher). */
void store_watcher_cancel(struct store *s, struct store_watcher *w);

/* A hook called once for every event that enters the history (refresh
 * events included), synchronously inside the store call: how raftd
 * invalidates FUSE caches. Its order relative to the watcher callbacks of
 * the same event is unspecified. ev is borrowed for the call; the hook
 * must not call into the store. cb NULL removes the hook. */
void store_set_event_hook(struct store *s,
                          void (*cb)(struct store_event *ev, void *data),
                          void *data);

/* ------------------------------------------------------------------ */
/* Snapshots                                                            */
/* ------------------------------------------------------------------ */

/* Stream the whole state (index, tree with TTLs, TTL heap order, event
 * history, statistics; not the watchers) through write, in pieces; write
 * returns 0 or a negative errno, which store_save returns. Format:
 * docs/store.md. */
int store_save(struct store *s,
               int (*write)(void *data, const void *buf, size_t len),
               void *data);

/* Replace the state with a saved image read through read, which fills
 * exactly len bytes and returns 0, or returns a negative errno (-EIO or
 * -ENODATA for a short image). On any error (-EINVAL for a corrupt image)
 * the store is left unchanged. Registered watchers are kept (as etcd). */
int store_load(struct store *s,
               int (*read)(void *data, void *buf, size_t len), void *data);

#endif /* ETCFS_STORE_H */
