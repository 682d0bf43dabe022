/* store_int.h - internals shared by the store's files: the node tree, the
 * TTL heap, the event history and the watcher hub. Not part of the API. */
#ifndef ETCFS_STORE_INT_H
#define ETCFS_STORE_INT_H

#include "store.h"

#define STORE_HISTORY_CAP 1000
/* time.Parse(RFC3339, "2000-01-01T00:00:00Z"): create/set treat an
 * expiration before it as permanent, as etcd's minExpireTime. */
#define STORE_MIN_EXPIRE_NS 946684800000000000LL
/* Deepest node (segments below the root). Writes deeper than this are
 * refused (209), so every image store_save writes store_load accepts, and
 * the recursive walks stay far from the stack's end. etcd has no limit. */
#define STORE_MAX_DEPTH 4096

/* One node. The name is stored inline; the full path is rebuilt from the
 * parents when an event needs it, so no node keeps its path. */
struct snode {
    struct snode *parent;
    uint64_t created_index;
    uint64_t modified_index;
    int64_t expire;   /* 0 = permanent */
    int32_t heap_idx; /* position in the TTL heap, -1 if none */
    /* Packed so the header is 56 bytes: memory per key matters. */
    uint32_t name_len : 31;
    uint32_t is_dir : 1;
    union {
        struct {
            char *val; /* NULL when len == 0 */
            size_t len;
        } f;
        struct {
            struct snode **tab; /* open-addressed hash of children */
            uint32_t n;
            uint32_t cap; /* 0 or a power of two */
        } d;
    } u;
    char name[]; /* NUL-terminated */
};

enum {
    ST_GET_OK,
    ST_GET_FAIL,
    ST_SET_OK,
    ST_SET_FAIL,
    ST_DEL_OK,
    ST_DEL_FAIL,
    ST_UPD_OK,
    ST_UPD_FAIL,
    ST_CRE_OK,
    ST_CRE_FAIL,
    ST_CAS_OK,
    ST_CAS_FAIL,
    ST_CAD_OK,
    ST_CAD_FAIL,
    ST_EXPIRE,
    ST_N
};

struct wlist;

struct store_watcher {
    struct wlist *list;
    struct store_watcher *prev, *next;
    bool recursive;
    bool stream;
    bool cancelled;
    uint64_t since_index;
    uint64_t last_index; /* dedupe for rename's two notification walks */
    store_watch_cb cb;
    void *data;
};

struct wlist {
    struct wlist *hnext; /* hash chain */
    struct store_watcher *head, *tail;
    size_t len;
    char path[];
};

struct store {
    struct snode *root;
    uint64_t index;
    uint64_t stats[ST_N];
    /* TTL heap: Go container/heap over expire, so ties break as etcd's. */
    struct snode **heap;
    size_t heap_len, heap_cap;
    /* Event history: etcd's EventHistory ring. */
    struct store_event *hist[STORE_HISTORY_CAP];
    size_t h_front, h_back, h_size;
    uint64_t h_start, h_last;
    /* Watcher hub. */
    struct wlist **wtab;
    size_t wtab_cap, wlists;
    size_t watchers;
    struct store_watcher *cur_watcher;
    /* etcd counts a few errors as successes in its statistics (it returns
     * them without setting the err its deferred counter reads). Set by
     * the operation, read and cleared by write_done(). */
    bool count_ok;
    void (*hook)(struct store_event *ev, void *data);
    void *hook_data;
};

/* Tree helpers (store.c). */
struct snode *store_node_alloc(const char *name, size_t name_len, bool dir);
void store_node_free_tree(struct snode *n);
int store_dir_add(struct snode *d, struct snode *child);
struct snode *store_dir_find(const struct snode *d, const char *name,
                             size_t len);
/* Put nw in old's slot of old's parent (nw has old's name; old stays
 * allocated, its parent pointer unchanged). Returns slots probed. */
uint32_t store_dir_replace(struct snode *old, struct snode *nw);
void heap_push(struct store *s, struct snode *n);

/* Events (store.c). */
void store_node_clear(struct store_node *x);
void history_add(struct store *s, struct store_event *ev);
void history_clear(struct store *s);

#endif /* ETCFS_STORE_INT_H */
