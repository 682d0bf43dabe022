/* store.c - the v2 tree and its operations, the TTL heap, the event
 * history and the watcher hub; a transcription of etcd 3.4's v2store
 * behaviour (store.go, node.go, watcher_hub.go, event_history.go) in C. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */
/* ------------------------------------------------------------------ */

static char *mem_dup(const void *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d == NULL)
        return NULL;
    if (n)
        memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

static uint32_t name_hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 16777619u;
    }
    return h;
}

/* Go's path.Clean(path.Join("/", p)): rooted, no "." or "..", no empty or
 * trailing segments. Returns a heap string or NULL on ENOMEM. */
static char *path_clean(const char *p)
{
    size_t n = strlen(p);
    char *out = malloc(n + 2);
    if (out == NULL)
        return NULL;
    size_t w = 0; /* out[0..w) is "" or "/seg/seg" */
    size_t i = 0;
    while (i < n) {
        while (i < n && p[i] == '/')
            i++;
        size_t st = i;
        while (i < n && p[i] != '/')
            i++;
        size_t len = i - st;
        if (len == 0 || (len == 1 && p[st] == '.'))
            continue;
        if (len == 2 && p[st] == '.' && p[st + 1] == '.') {
            while (w > 0 && out[w - 1] != '/')
                w--;
            if (w > 0)
                w--;
            continue;
        }
        out[w++] = '/';
        memcpy(out + w, p + st, len);
        w += len;
    }
    if (w == 0)
        out[w++] = '/';
    out[w] = '\0';
    return out;
}

static bool path_is_root(const char *clean)
{
    return clean[0] == '/' && clean[1] == '\0';
}

/* The key etcd shows for a cleaned path: the root's key is trimmed away. */
static const char *display_key(const char *clean)
{
    return path_is_root(clean) ? "" : clean;
}

static size_t path_depth(const char *clean)
{
    size_t d = 0;
    for (const char *p = clean; *p; p++)
        d += *p == '/';
    return clean[1] == '\0' ? 0 : d;
}

static bool is_hidden_name(const struct snode *n)
{
    return n->name_len > 0 && n->name[0] == '_';
}

/* ------------------------------------------------------------------ */
/* Errors                                                               */
/* ------------------------------------------------------------------ */

static int err_set(struct store_error *err, int code, const char *cause,
                   uint64_t index)
{
    if (err == NULL)
        return STORE_EV2;
    if (store_error_set(err, code, cause, index) != 0)
        return -ENOMEM;
    return STORE_EV2;
}

/* Cause "<parent key>/<name>" for a missing component. */
static int err_not_found(struct store_error *err, const struct snode *parent,
                         const char *name, size_t len, uint64_t index);

/* ------------------------------------------------------------------ */
/* Nodes                                                                */
/* ------------------------------------------------------------------ */

struct snode *store_node_alloc(const char *name, size_t name_len, bool dir)
{
    struct snode *n = calloc(1, sizeof(*n) + name_len + 1);
    if (n == NULL)
        return NULL;
    memcpy(n->name, name, name_len);
    n->name[name_len] = '\0';
    n->name_len = (uint32_t)name_len;
    n->is_dir = dir;
    n->heap_idx = -1;
    return n;
}

void store_node_free_tree(struct snode *n)
{
    if (n == NULL)
        return;
    if (n->is_dir) {
        for (uint32_t i = 0; i < n->u.d.cap; i++)
            store_node_free_tree(n->u.d.tab[i]);
        free(n->u.d.tab);
    } else {
        free(n->u.f.val);
    }
    free(n);
}

struct snode *store_dir_find(const struct snode *d, const char *name,
                             size_t len)
{
    if (d->u.d.cap == 0)
        return NULL;
    uint32_t mask = d->u.d.cap - 1;
    for (uint32_t i = name_hash(name, len) & mask;; i = (i + 1) & mask) {
        struct snode *c = d->u.d.tab[i];
        if (c == NULL)
            return NULL;
        if (c->name_len == len && memcmp(c->name, name, len) == 0)
            return c;
    }
}

static void dir_insert_raw(struct snode **tab, uint32_t cap, struct snode *c)
{
    uint32_t mask = cap - 1;
    uint32_t i = name_hash(c->name, c->name_len) & mask;
    while (tab[i] != NULL)
        i = (i + 1) & mask;
    tab[i] = c;
}

/* Add child (name not present). Returns 0 or -ENOMEM. */
int store_dir_add(struct snode *d, struct snode *child)
{
    if ((uint64_t)(d->u.d.n + 1) * 4 > (uint64_t)d->u.d.cap * 3) {
        uint32_t ncap = d->u.d.cap ? d->u.d.cap * 2 : 4;
        struct snode **nt = calloc(ncap, sizeof(*nt));
        if (nt == NULL)
            return -ENOMEM;
        for (uint32_t i = 0; i < d->u.d.cap; i++)
            if (d->u.d.tab[i])
                dir_insert_raw(nt, ncap, d->u.d.tab[i]);
        free(d->u.d.tab);
        d->u.d.tab = nt;
        d->u.d.cap = ncap;
    }
    dir_insert_raw(d->u.d.tab, d->u.d.cap, child);
    d->u.d.n++;
    child->parent = d;
    return 0;
}

/* Remove child from its parent's table (backward-shift deletion). */
static void dir_unlink(struct snode *child)
{
    struct snode *d = child->parent;
    if (d == NULL)
        return;
    uint32_t mask = d->u.d.cap - 1;
    uint32_t i = name_hash(child->name, child->name_len) & mask;
    while (d->u.d.tab[i] != child) {
        if (d->u.d.tab[i] == NULL)
            return;
        i = (i + 1) & mask;
    }
    d->u.d.tab[i] = NULL;
    d->u.d.n--;
    for (uint32_t j = (i + 1) & mask; d->u.d.tab[j] != NULL;
         j = (j + 1) & mask) {
        struct snode *c = d->u.d.tab[j];
        d->u.d.tab[j] = NULL;
        dir_insert_raw(d->u.d.tab, d->u.d.cap, c);
    }
    child->parent = NULL;
}

/* Put nw (same name as old) into old's slot of old's parent's table,
 * found by probing from the name's hash as a lookup does: O(1) expected,
 * not a scan of the table (which made set over an existing key cost
 * O(children)). The slot is reused, so the table's layout, and with it
 * the order of every hash-order walk, is as before the replacement.
 * Returns the number of slots probed (the unit test bounds it). */
uint32_t store_dir_replace(struct snode *old, struct snode *nw)
{
    struct snode *d = old->parent;
    uint32_t mask = d->u.d.cap - 1, probes = 1;
    uint32_t i = name_hash(old->name, old->name_len) & mask;
    while (d->u.d.tab[i] != old) {
        i = (i + 1) & mask; /* old is in the table: the probe ends */
        probes++;
    }
    d->u.d.tab[i] = nw;
    nw->parent = d;
    return probes;
}

/* Full key of a node; "" for the root. Heap string or NULL. */
static char *node_key(const struct snode *n)
{
    size_t len = 0;
    for (const struct snode *p = n; p->parent; p = p->parent)
        len += 1 + p->name_len;
    char *k = malloc(len + 1);
    if (k == NULL)
        return NULL;
    k[len] = '\0';
    size_t w = len;
    for (const struct snode *p = n; p->parent; p = p->parent) {
        w -= p->name_len;
        memcpy(k + w, p->name, p->name_len);
        k[--w] = '/';
    }
    return k;
}

/* ------------------------------------------------------------------ */
/* TTL heap: Go's container/heap algorithms, so ties order as etcd's.   */
/* ------------------------------------------------------------------ */

static bool heap_less(struct store *s, size_t i, size_t j)
{
    return s->heap[i]->expire < s->heap[j]->expire;
}

static void heap_swap(struct store *s, size_t i, size_t j)
{
    struct snode *t = s->heap[i];
    s->heap[i] = s->heap[j];
    s->heap[j] = t;
    s->heap[i]->heap_idx = (int32_t)i;
    s->heap[j]->heap_idx = (int32_t)j;
}

static void heap_up(struct store *s, size_t j)
{
    while (j > 0) {
        size_t i = (j - 1) / 2;
        if (!heap_less(s, j, i))
            break;
        heap_swap(s, i, j);
        j = i;
    }
}

static bool heap_down(struct store *s, size_t i0, size_t n)
{
    size_t i = i0;
    for (;;) {
        size_t j1 = 2 * i + 1;
        if (j1 >= n)
            break;
        size_t j = j1;
        if (j1 + 1 < n && heap_less(s, j1 + 1, j1))
            j = j1 + 1;
        if (!heap_less(s, j, i))
            break;
        heap_swap(s, i, j);
        i = j;
    }
    return i > i0;
}

/* Push never fails for lack of memory: the array is grown beforehand by
 * heap_reserve, so a half-applied entry cannot happen. */
static int heap_reserve(struct store *s)
{
    if (s->heap_len < s->heap_cap)
        return 0;
    size_t ncap = s->heap_cap ? s->heap_cap * 2 : 16;
    struct snode **nh = realloc(s->heap, ncap * sizeof(*nh));
    if (nh == NULL)
        return -ENOMEM;
    s->heap = nh;
    s->heap_cap = ncap;
    return 0;
}

void heap_push(struct store *s, struct snode *n)
{
    n->heap_idx = (int32_t)s->heap_len;
    s->heap[s->heap_len++] = n;
    heap_up(s, s->heap_len - 1);
}

static void heap_remove(struct store *s, struct snode *node)
{
    if (node->heap_idx < 0)
        return;
    size_t i = (size_t)node->heap_idx;
    size_t n = s->heap_len - 1;
    if (n != i) {
        heap_swap(s, i, n);
        if (!heap_down(s, i, n))
            heap_up(s, i);
    }
    s->heap_len--;
    node->heap_idx = -1;
}

/* etcd's node.UpdateTTL. The caller reserved heap room. */
static void update_ttl(struct store *s, struct snode *n, int64_t expire)
{
    if (n->expire != 0) {
        if (expire == 0) {
            n->expire = 0;
            heap_remove(s, n);
            return;
        }
        n->expire = expire;
        heap_remove(s, n); /* ttlKeyHeap.update: Remove then Push */
        heap_push(s, n);
        return;
    }
    if (expire == 0)
        return;
    n->expire = expire;
    heap_push(s, n);
}

/* ------------------------------------------------------------------ */
/* Events and node externs                                              */
/* ------------------------------------------------------------------ */

void store_node_clear(struct store_node *x)
{
    free(x->key);
    free(x->value);
    for (size_t i = 0; i < x->n_nodes; i++)
        store_node_clear(&x->nodes[i]);
    free(x->nodes);
    memset(x, 0, sizeof(*x));
}

struct store_event *store_event_ref(struct store_event *ev)
{
    ev->refs_++;
    return ev;
}

void store_event_unref(struct store_event *ev)
{
    if (ev == NULL || --ev->refs_ > 0)
        return;
    store_node_clear(&ev->node);
    if (ev->prev_node) {
        store_node_clear(ev->prev_node);
        free(ev->prev_node);
    }
    free(ev);
}

static struct store_event *event_new(enum store_action action,
                                     const char *key, uint64_t mi,
                                     uint64_t ci)
{
    struct store_event *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return NULL;
    ev->refs_ = 1;
    ev->action = action;
    ev->node.key = mem_dup(key, strlen(key));
    if (ev->node.key == NULL) {
        free(ev);
        return NULL;
    }
    ev->node.modified_index = mi;
    ev->node.created_index = ci;
    return ev;
}

/* etcd's expirationAndTTL: ttl = ceil((expire - now) / 1s), the
 * difference saturating as Go's time.Sub does (a loaded image or a caller's
 * clock may put the two far apart). */
static void exp_ttl(const struct snode *n, int64_t now, int64_t *expiration,
                    int64_t *ttl)
{
    if (n->expire == 0) {
        *expiration = 0;
        *ttl = 0;
        return;
    }
    int64_t d;
    if (__builtin_sub_overflow(n->expire, now, &d))
        d = n->expire < now ? INT64_MIN : INT64_MAX;
    int64_t t = d / 1000000000LL;
    if (d % 1000000000LL > 0)
        t++;
    *expiration = n->expire;
    *ttl = t;
}

static int set_value(struct store_node *x, const char *v, size_t len)
{
    x->value = mem_dup(v ? v : "", len);
    if (x->value == NULL)
        return -ENOMEM;
    x->value_len = len;
    return 0;
}

static int cmp_nodes(const void *a, const void *b)
{
    const struct snode *x = *(struct snode *const *)a;
    const struct snode *y = *(struct snode *const *)b;
    size_t m = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, m);
    if (c)
        return c;
    return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

/* Sorted non-hidden children of d in a fresh array (*out, *count). */
static int list_children(const struct snode *d, struct snode ***out,
                         size_t *count)
{
    *out = NULL;
    *count = 0;
    if (d->u.d.n == 0)
        return 0;
    struct snode **a = malloc(d->u.d.n * sizeof(*a));
    if (a == NULL)
        return -ENOMEM;
    size_t k = 0;
    for (uint32_t i = 0; i < d->u.d.cap; i++) {
        struct snode *c = d->u.d.tab[i];
        if (c && !is_hidden_name(c))
            a[k++] = c;
    }
    if (k == 0) {
        free(a); /* only hidden children */
        return 0;
    }
    qsort(a, k, sizeof(*a), cmp_nodes);
    *out = a;
    *count = k;
    return 0;
}

static int fill_children(struct store_node *x, const struct snode *n,
                         const char *key, bool recursive, int64_t now);

/* etcd's node.Repr(recursive): key given (owned copy made). */
static int repr(struct store_node *x, const struct snode *n, const char *key,
                bool recursive, int64_t now)
{
    memset(x, 0, sizeof(*x));
    x->key = mem_dup(key, strlen(key));
    if (x->key == NULL)
        return -ENOMEM;
    x->modified_index = n->modified_index;
    x->created_index = n->created_index;
    exp_ttl(n, now, &x->expiration, &x->ttl);
    if (n->is_dir) {
        x->dir = true;
        if (recursive)
            return fill_children(x, n, key, true, now);
        return 0;
    }
    return set_value(x, n->u.f.val, n->u.f.len);
}

static int fill_children(struct store_node *x, const struct snode *n,
                         const char *key, bool recursive, int64_t now)
{
    struct snode **kids;
    size_t k;
    int rv = list_children(n, &kids, &k);
    if (rv != 0 || k == 0)
        return rv;
    x->nodes = calloc(k, sizeof(*x->nodes));
    if (x->nodes == NULL) {
        free(kids);
        return -ENOMEM;
    }
    size_t klen = strlen(key);
    for (size_t i = 0; i < k; i++) {
        char *ck = malloc(klen + kids[i]->name_len + 2);
        if (ck == NULL) {
            rv = -ENOMEM;
            break;
        }
        memcpy(ck, key, klen);
        ck[klen] = '/';
        memcpy(ck + klen + 1, kids[i]->name, kids[i]->name_len + 1);
        x->n_nodes = i + 1;
        rv = repr(&x->nodes[i], kids[i], ck, recursive, now);
        free(ck);
        if (rv != 0)
            break;
    }
    free(kids);
    return rv;
}

/* A prevNode: Repr(false) of n at its current key. */
static int prev_repr(struct store_event *ev, const struct snode *n,
                     int64_t now)
{
    char *k = node_key(n);
    if (k == NULL)
        return -ENOMEM;
    ev->prev_node = calloc(1, sizeof(*ev->prev_node));
    int rv = ev->prev_node ? repr(ev->prev_node, n, k, false, now) : -ENOMEM;
    free(k);
    return rv;
}

const char *store_action_name(enum store_action a)
{
    static const char *const names[] = {
        "get",    "create",         "set",
        "update", "delete",         "compareAndSwap",
        "compareAndDelete", "expire", "rename",
    };
    if ((unsigned)a < sizeof(names) / sizeof(names[0]))
        return names[a];
    return "";
}

/* ------------------------------------------------------------------ */
/* Event history                                                        */
/* ------------------------------------------------------------------ */

void history_add(struct store *s, struct store_event *ev)
{
    if (s->hist[s->h_back])
        store_event_unref(s->hist[s->h_back]);
    s->hist[s->h_back] = store_event_ref(ev);
    s->h_back = (s->h_back + 1) % STORE_HISTORY_CAP;
    if (s->h_size == STORE_HISTORY_CAP)
        s->h_front = (s->h_front + 1) % STORE_HISTORY_CAP;
    else
        s->h_size++;
    s->h_last = ev->node.modified_index;
    s->h_start = s->hist[s->h_front]->node.modified_index;
    if (s->hook)
        s->hook(ev, s->hook_data);
}

void history_clear(struct store *s)
{
    for (size_t i = 0; i < STORE_HISTORY_CAP; i++) {
        store_event_unref(s->hist[i]);
        s->hist[i] = NULL;
    }
    s->h_front = s->h_back = s->h_size = 0;
    s->h_start = s->h_last = 0;
}

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static bool key_matches(const char *evkey, const char *key, bool recursive,
                        const char *nkey)
{
    if (strcmp(evkey, key) == 0)
        return true;
    return recursive && has_prefix(evkey, nkey);
}

/* etcd's EventHistory.scan. key is a watch path as etcd sees it (our
 * display key: "" for the root is shown as "/1" by etcd, whose events'
 * keys all start with "/1/"; the prefix tests below keep that meaning). */
static int history_scan(struct store *s, const char *key, bool recursive,
                        uint64_t index, struct store_event **out,
                        struct store_error *err)
{
    *out = NULL;
    if (index < s->h_start) {
        char cause[96];
        snprintf(cause, sizeof(cause),
                 "the requested history has been cleared [%llu/%llu]",
                 (unsigned long long)s->h_start, (unsigned long long)index);
        return err_set(err, STORE_ECODE_EVENT_INDEX_CLEARED, cause, 0);
    }
    if (index > s->h_last || s->h_size == 0)
        return 0;
    /* nkey: path.Clean(key) with a trailing slash. */
    size_t kl = strlen(key);
    char *nkey = malloc(kl + 2);
    if (nkey == NULL)
        return -ENOMEM;
    memcpy(nkey, key, kl);
    if (kl == 0 || key[kl - 1] != '/')
        nkey[kl++] = '/';
    nkey[kl] = '\0';
    uint64_t offset = index - s->h_start;
    size_t i = (size_t)((s->h_front + offset) % STORE_HISTORY_CAP);
    for (;;) {
        struct store_event *e = s->hist[i];
        if (e && !e->refresh) {
            bool ok = key_matches(e->node.key, key, recursive, nkey);
            if ((e->action == STORE_ACTION_DELETE ||
                 e->action == STORE_ACTION_EXPIRE ||
                 e->action == STORE_ACTION_RENAME) &&
                e->prev_node && e->prev_node->dir)
                ok = ok || has_prefix(key, e->prev_node->key);
            if (e->action == STORE_ACTION_RENAME && e->prev_node)
                ok = ok ||
                     key_matches(e->prev_node->key, key, recursive, nkey);
            if (ok) {
                *out = store_event_ref(e);
                break;
            }
        }
        i = (i + 1) % STORE_HISTORY_CAP;
        if (i == s->h_back)
            break;
    }
    free(nkey);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Watcher hub                                                          */
/* ------------------------------------------------------------------ */

static struct wlist *hub_find(struct store *s, const char *path, size_t len,
                              size_t *bucket)
{
    if (s->wtab_cap == 0)
        return NULL;
    size_t b = name_hash(path, len) & (s->wtab_cap - 1);
    if (bucket)
        *bucket = b;
    for (struct wlist *l = s->wtab[b]; l; l = l->hnext)
        if (strlen(l->path) == len && memcmp(l->path, path, len) == 0)
            return l;
    return NULL;
}

static void hub_drop_list(struct store *s, struct wlist *l)
{
    size_t b = name_hash(l->path, strlen(l->path)) & (s->wtab_cap - 1);
    struct wlist **pp = &s->wtab[b];
    while (*pp != l)
        pp = &(*pp)->hnext;
    *pp = l->hnext;
    s->wlists--;
    free(l);
}

static void watcher_unlink(struct store *s, struct store_watcher *w)
{
    struct wlist *l = w->list;
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    l->len--;
    s->watchers--;
    if (l->len == 0)
        hub_drop_list(s, l);
    free(w);
}

void store_watcher_cancel(struct store *s, struct store_watcher *w)
{
    if (w == NULL)
        return;
    if (s->cur_watcher == w) {
        w->cancelled = true; /* the notifier unlinks it after the call */
        return;
    }
    watcher_unlink(s, w);
}

/* etcd's isHidden(watchPath, keyPath). */
static bool path_hidden(const char *watch, size_t wl, const char *key)
{
    size_t kl = strlen(key);
    if (wl > kl)
        return false;
    const char *after = key + wl;
    if (after[0] == '_' && (wl == 0 || key[wl - 1] == '/'))
        return true;
    return strstr(after, "/_") != NULL;
}

/* etcd's notifyWatchers(e, nodePath, deleted). hkey is the key the
 * hidden test uses (the event's node key, or for rename's old side the
 * old key). dedupe skips watchers that already got this event. */
static void notify_path(struct store *s, struct store_event *e,
                        const char *path, size_t len, const char *hkey,
                        bool deleted, bool dedupe)
{
    struct wlist *l = hub_find(s, path, len, NULL);
    if (l == NULL)
        return;
    bool original = strlen(hkey) == len && memcmp(hkey, path, len) == 0;
    if (len == 1 && path[0] == '/')
        original = hkey[0] == '\0';
    bool hidden = path_hidden(path, (len == 1 && path[0] == '/') ? 1 : len,
                              hkey);
    if (!original && hidden)
        return;
    uint64_t idx = e->node.modified_index;
    struct store_watcher *w = l->head;
    while (w) {
        struct store_watcher *next = w->next;
        bool last = next == NULL;
        if ((w->recursive || original || deleted) && idx >= w->since_index &&
            !(dedupe && w->last_index == idx)) {
            w->last_index = idx;
            s->cur_watcher = w;
            w->cb(w, e, w->data);
            s->cur_watcher = NULL;
            if (w->cancelled || !w->stream) {
                /* Unlinking the last watcher frees the list itself. */
                watcher_unlink(s, w);
                if (last)
                    return;
            }
        }
        w = next;
    }
}

/* etcd's watcherHub.notify: history, then "/", "/a", "/a/b"... */
static void walk_notify(struct store *s, struct store_event *e,
                        const char *key, bool dedupe)
{
    notify_path(s, e, "/", 1, key, false, dedupe);
    for (size_t i = 1; key[0] && i <= strlen(key); i++)
        if (key[i] == '/' || key[i] == '\0')
            notify_path(s, e, key, i, key, false, dedupe);
}

static void hub_notify(struct store *s, struct store_event *e)
{
    history_add(s, e);
    walk_notify(s, e, e->node.key, false);
}

int store_watch(struct store *s, const char *path, bool recursive,
                bool stream, uint64_t since_index, store_watch_cb cb,
                void *data, struct store_watcher **w,
                struct store_event **hist_ev, uint64_t *start_index,
                struct store_error *err)
{
    *w = NULL;
    *hist_ev = NULL;
    if (start_index)
        *start_index = s->index;
    char *key = path_clean(path);
    if (key == NULL)
        return -ENOMEM;
    if (since_index == 0)
        since_index = s->index + 1;
    struct store_event *he = NULL;
    int rv = history_scan(s, display_key(key), recursive, since_index, &he,
                          err);
    if (rv == STORE_EV2 && err)
        err->index = s->index;
    if (rv != 0 || he != NULL) {
        *hist_ev = he;
        free(key);
        return rv;
    }
    size_t kl = strlen(key);
    struct store_watcher *nw = calloc(1, sizeof(*nw));
    if (nw == NULL) {
        free(key);
        return -ENOMEM;
    }
    size_t b;
    struct wlist *l = hub_find(s, key, kl, &b);
    if (l == NULL) {
        if (s->wlists + 1 > s->wtab_cap) {
            size_t ncap = s->wtab_cap ? s->wtab_cap * 2 : 64;
            struct wlist **nt = calloc(ncap, sizeof(*nt));
            if (nt == NULL)
                goto err_nomem;
            for (size_t i = 0; i < s->wtab_cap; i++) {
                struct wlist *x = s->wtab[i], *nx;
                for (; x; x = nx) {
                    nx = x->hnext;
                    size_t nb = name_hash(x->path, strlen(x->path)) &
                                (ncap - 1);
                    x->hnext = nt[nb];
                    nt[nb] = x;
                }
            }
            free(s->wtab);
            s->wtab = nt;
            s->wtab_cap = ncap;
        }
        b = name_hash(key, kl) & (s->wtab_cap - 1);
        l = calloc(1, sizeof(*l) + kl + 1);
        if (l == NULL)
            goto err_nomem;
        memcpy(l->path, key, kl + 1);
        l->hnext = s->wtab[b];
        s->wtab[b] = l;
        s->wlists++;
    }
    nw->list = l;
    nw->recursive = recursive;
    nw->stream = stream;
    nw->since_index = since_index;
    nw->cb = cb;
    nw->data = data;
    nw->prev = l->tail;
    if (l->tail)
        l->tail->next = nw;
    else
        l->head = nw;
    l->tail = nw;
    l->len++;
    s->watchers++;
    *w = nw;
    free(key);
    return 0;

err_nomem:
    free(nw);
    free(key);
    return -ENOMEM;
}

void store_set_event_hook(struct store *s,
                          void (*cb)(struct store_event *ev, void *data),
                          void *data)
{
    s->hook = cb;
    s->hook_data = data;
}

/* ------------------------------------------------------------------ */
/* Lifecycle                                                            */
/* ------------------------------------------------------------------ */

struct store *store_new(void)
{
    struct store *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->root = store_node_alloc("", 0, true);
    if (s->root == NULL) {
        free(s);
        return NULL;
    }
    return s;
}

void store_free(struct store *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->wtab_cap; i++) {
        struct wlist *l = s->wtab[i], *nl;
        for (; l; l = nl) {
            nl = l->hnext;
            struct store_watcher *w = l->head, *nw;
            for (; w; w = nw) {
                nw = w->next;
                w->cb(w, NULL, w->data);
                free(w);
            }
            free(l);
        }
    }
    free(s->wtab);
    history_clear(s);
    store_node_free_tree(s->root);
    free(s->heap);
    free(s);
}

uint64_t store_index(const struct store *s)
{
    return s->index;
}

bool store_has_ttl_keys(const struct store *s)
{
    return s->heap_len != 0;
}

int64_t store_next_expiration(const struct store *s)
{
    return s->heap_len ? s->heap[0]->expire : 0;
}

size_t store_watcher_count(const struct store *s)
{
    return s->watchers;
}

/* ------------------------------------------------------------------ */
/* Walking                                                              */
/* ------------------------------------------------------------------ */

static int err_not_found(struct store_error *err, const struct snode *parent,
                         const char *name, size_t len, uint64_t index)
{
    char *pk = node_key(parent);
    if (pk == NULL)
        return -ENOMEM;
    size_t pl = strlen(pk);
    char *c = malloc(pl + len + 2);
    if (c == NULL) {
        free(pk);
        return -ENOMEM;
    }
    memcpy(c, pk, pl);
    c[pl] = '/';
    memcpy(c + pl + 1, name, len);
    c[pl + len + 1] = '\0';
    int rv = err_set(err, STORE_ECODE_KEY_NOT_FOUND, c, index);
    free(c);
    free(pk);
    return rv;
}

static int err_node(struct store_error *err, int code, const struct snode *n,
                    uint64_t index)
{
    char *k = node_key(n);
    if (k == NULL)
        return -ENOMEM;
    int rv = err_set(err, code, k, index);
    free(k);
    return rv;
}

/* etcd's internalGet on a cleaned path. */
static int internal_get(struct store *s, const char *clean, struct snode **out,
                        struct store_error *err)
{
    struct snode *cur = s->root;
    const char *p = clean;
    while (*p == '/' && p[1] != '\0') {
        p++;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (!cur->is_dir)
            return err_node(err, STORE_ECODE_NOT_DIR, cur, s->index);
        struct snode *c = store_dir_find(cur, p, len);
        if (c == NULL)
            return err_not_found(err, cur, p, len, s->index);
        cur = c;
        p += len;
    }
    *out = cur;
    return 0;
}

/* etcd's walk(dirName, checkDir) for the parent directory of a cleaned
 * path: creates missing directories at index+1. *name gets the last
 * segment. */
static int walk_create(struct store *s, const char *clean, struct snode **dir,
                       const char **name, struct store_error *err)
{
    const char *last = strrchr(clean, '/');
    struct snode *cur = s->root;
    const char *p = clean;
    while (p < last) {
        p++;
        const char *e = strchr(p, '/');
        size_t len = (size_t)(e - p);
        struct snode *c = store_dir_find(cur, p, len);
        if (c == NULL) {
            c = store_node_alloc(p, len, true);
            if (c == NULL)
                return -ENOMEM;
            c->created_index = c->modified_index = s->index + 1;
            if (store_dir_add(cur, c) != 0) {
                free(c);
                return -ENOMEM;
            }
        } else if (!c->is_dir) {
            return err_node(err, STORE_ECODE_NOT_DIR, c, s->index);
        }
        cur = c;
        p = e;
    }
    *dir = cur;
    *name = last + 1;
    return 0;
}

static void remove_tree(struct store *s, struct snode *n, char *path,
                        size_t plen, struct store_event *e);

static void remove_child(struct store *s, struct snode *c, char *path,
                         size_t plen, struct store_event *e)
{
    size_t cl = plen;
    if (path) {
        path[cl++] = '/';
        memcpy(path + cl, c->name, c->name_len);
        cl += c->name_len;
    }
    remove_tree(s, c, path, cl, e);
}

/* Free a detached subtree, taking its TTL nodes out of the heap. The
 * callback is etcd's Remove callback: every removed path, children first. */
static void remove_tree(struct store *s, struct snode *n, char *path,
                        size_t plen, struct store_event *e)
{
    if (n->is_dir && n->u.d.n) {
        /* Children go in name order, not hash order: their heap removals
         * reshape the TTL heap, and every member (whatever its tables'
         * history, e.g. restored from a snapshot) must reshape it alike,
         * or equal expirations would later pop in different orders. */
        struct snode **kids = malloc(n->u.d.n * sizeof(*kids));
        size_t k = 0;
        for (uint32_t i = 0; i < n->u.d.cap; i++) {
            struct snode *c = n->u.d.tab[i];
            if (c == NULL)
                continue;
            if (kids)
                kids[k++] = c;
            else
                remove_child(s, c, path, plen, e); /* ENOMEM: any order */
            n->u.d.tab[i] = NULL;
        }
        if (kids) {
            qsort(kids, k, sizeof(*kids), cmp_nodes);
            for (size_t i = 0; i < k; i++)
                remove_child(s, kids[i], path, plen, e);
            free(kids);
        }
        n->u.d.n = 0;
    }
    if (path && e)
        notify_path(s, e, plen ? path : "/", plen ? plen : 1,
                    e->node.key, true, e->action == STORE_ACTION_RENAME);
    heap_remove(s, n);
    if (n->is_dir) {
        free(n->u.d.tab);
    } else {
        free(n->u.f.val);
    }
    free(n);
}

static size_t subtree_maxlen(const struct snode *n, size_t base)
{
    size_t m = base;
    if (n->is_dir)
        for (uint32_t i = 0; i < n->u.d.cap; i++)
            if (n->u.d.tab[i]) {
                size_t c = subtree_maxlen(n->u.d.tab[i],
                                          base + 1 + n->u.d.tab[i]->name_len);
                if (c > m)
                    m = c;
            }
    return m;
}

static size_t subtree_height(const struct snode *n)
{
    size_t h = 0;
    if (n->is_dir)
        for (uint32_t i = 0; i < n->u.d.cap; i++)
            if (n->u.d.tab[i]) {
                size_t c = 1 + subtree_height(n->u.d.tab[i]);
                if (c > h)
                    h = c;
            }
    return h;
}

/* Detach n from its parent and free its subtree, notifying deleted
 * watchers of every path under it (e == NULL: no notification). */
static int remove_node(struct store *s, struct snode *n,
                       struct store_event *e)
{
    char *path = NULL;
    size_t plen = 0;
    if (e) {
        char *k = node_key(n);
        if (k == NULL)
            return -ENOMEM;
        plen = strlen(k);
        path = malloc(subtree_maxlen(n, plen) + 2);
        if (path == NULL) {
            free(k);
            return -ENOMEM;
        }
        memcpy(path, k, plen + 1);
        free(k);
    }
    dir_unlink(n);
    remove_tree(s, n, path, plen, e);
    free(path);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Operations                                                           */
/* ------------------------------------------------------------------ */

static void stat_inc(struct store *s, int which)
{
    /* Atomic: raftd's HTTP threads count their reads concurrently
     * (store_get under a shared lock). */
    __atomic_fetch_add(&s->stats[which], 1, __ATOMIC_RELAXED);
}

/* The tail every write shares: count the operation in etcd's statistics
 * and publish its event. etcd counts a few v2 errors as successes (its
 * deferred counter sees no named error): the operation says so with
 * count_ok, which is false again afterwards. A refresh goes to the
 * history but wakes no watcher, as in etcd. */
static int write_done(struct store *s, int rv, struct store_event *ev,
                      bool refresh, int stat_ok, int stat_fail)
{
    stat_inc(s, rv == 0 || (rv == STORE_EV2 && s->count_ok) ? stat_ok
                                                            : stat_fail);
    s->count_ok = false;
    if (rv != 0)
        return rv;
    if (refresh) {
        ev->refresh = true;
        history_add(s, ev);
    } else {
        hub_notify(s, ev);
    }
    return 0;
}

static int do_get(struct store *s, const char *path, bool recursive,
                  int64_t now, struct store_event **ev,
                  struct store_error *err)
{
    *ev = NULL;
    char *clean = path_clean(path);
    if (clean == NULL)
        return -ENOMEM;
    struct snode *n;
    int rv = internal_get(s, clean, &n, err);
    if (rv != 0)
        goto out;
    struct store_event *e = event_new(STORE_ACTION_GET, display_key(clean),
                                      n->modified_index, n->created_index);
    if (e == NULL) {
        rv = -ENOMEM;
        goto out;
    }
    e->etcd_index = s->index;
    if (n->is_dir) {
        e->node.dir = true;
        rv = fill_children(&e->node, n, e->node.key, recursive, now);
    } else {
        rv = set_value(&e->node, n->u.f.val, n->u.f.len);
    }
    exp_ttl(n, now, &e->node.expiration, &e->node.ttl);
    if (rv != 0)
        store_event_unref(e);
    else
        *ev = e;
out:
    free(clean);
    return rv;
}

int store_get(struct store *s, const char *path, bool recursive, bool sorted,
              int64_t now_ns, struct store_event **ev,
              struct store_error *err)
{
    int rv = do_get(s, path, recursive, now_ns, ev, err);
    stat_inc(s, rv == 0 ? ST_GET_OK : ST_GET_FAIL);
    return rv;
}

int store_read(struct store *s, const char *path, bool recursive,
               int64_t now_ns, struct store_event **ev,
               struct store_error *err)
{
    return do_get(s, path, recursive, now_ns, ev, err);
}

static int set_file_value(struct snode *n, const void *v, size_t len)
{
    char *nv = NULL;
    if (len) {
        nv = malloc(len);
        if (nv == NULL)
            return -ENOMEM;
        memcpy(nv, v, len);
    }
    free(n->u.f.val);
    n->u.f.val = nv;
    n->u.f.len = len;
    return 0;
}

/* etcd's internalCreate on path (uncleaned; unique appends the index).
 * *prev_out: the replaced node's repr goes into the event. */
static int internal_create(struct store *s, const char *path, bool dir,
                           const void *value, size_t vlen, bool unique,
                           bool replace, int64_t expire,
                           enum store_action action, int64_t now,
                           struct store_event **ev, struct store_error *err)
{
    uint64_t cur = s->index, next = s->index + 1;
    char *clean;
    *ev = NULL;
    if (unique) {
        size_t pl = strlen(path);
        char *p = malloc(pl + 24);
        if (p == NULL)
            return -ENOMEM;
        snprintf(p, pl + 24, "%s/%020llu", path, (unsigned long long)next);
        clean = path_clean(p);
        free(p);
    } else {
        clean = path_clean(path);
    }
    if (clean == NULL)
        return -ENOMEM;
    int rv;
    if (path_is_root(clean)) {
        rv = err_set(err, STORE_ECODE_ROOT_RONLY, "/", cur);
        goto out;
    }
    if (path_depth(clean) > STORE_MAX_DEPTH) {
        rv = err_set(err, STORE_ECODE_INVALID_FIELD, "key nested too deep",
                     cur);
        goto out;
    }
    if (expire < STORE_MIN_EXPIRE_NS)
        expire = 0;
    if (heap_reserve(s) != 0) {
        rv = -ENOMEM;
        goto out;
    }
    struct snode *d;
    const char *name;
    rv = walk_create(s, clean, &d, &name, err);
    if (rv != 0) {
        if (rv == STORE_EV2) {
            stat_inc(s, ST_SET_FAIL); /* etcd counts this one twice */
            if (err)
                err->index = cur;
        }
        goto out;
    }
    size_t nlen = strlen(name);
    struct store_event *e = event_new(action, clean, next, next);
    if (e == NULL) {
        rv = -ENOMEM;
        goto out;
    }
    struct snode *old = store_dir_find(d, name, nlen);
    if (old != NULL && (!replace || old->is_dir)) {
        rv = err_set(err, replace ? STORE_ECODE_NOT_FILE : STORE_ECODE_NODE_EXIST,
                     clean, cur);
        store_event_unref(e);
        goto out;
    }
    struct snode *n = store_node_alloc(name, nlen, dir);
    if (n == NULL || (old && prev_repr(e, old, now) != 0) ||
        (!dir && set_value(&e->node, value, vlen) != 0) ||
        (!dir && set_file_value(n, value, vlen) != 0) ||
        (!old && store_dir_add(d, n) != 0)) {
        free(n ? n->u.f.val : NULL);
        free(n);
        store_event_unref(e);
        rv = -ENOMEM;
        goto out;
    }
    if (old) {
        store_dir_replace(old, n);
        old->parent = NULL;
        remove_tree(s, old, NULL, 0, NULL);
    }
    n->created_index = n->modified_index = next;
    e->node.dir = dir;
    if (expire != 0) {
        n->expire = expire;
        heap_push(s, n);
        exp_ttl(n, now, &e->node.expiration, &e->node.ttl);
    }
    s->index = next;
    e->etcd_index = next;
    *ev = e;
out:
    free(clean);
    return rv;
}

int store_create(struct store *s, const char *path, bool dir,
                 const void *value, size_t value_len, bool unique,
                 int64_t expire_ns, bool refresh, int64_t now_ns,
                 struct store_event **ev, struct store_error *err)
{
    int rv = internal_create(s, path, dir, value, value_len, unique, false,
                             expire_ns, STORE_ACTION_CREATE, now_ns, ev, err);
    return write_done(s, rv, *ev, false, ST_CRE_OK, ST_CRE_FAIL);
}

int store_set(struct store *s, const char *path, bool dir, const void *value,
              size_t value_len, int64_t expire_ns, bool refresh,
              int64_t now_ns, struct store_event **ev,
              struct store_error *err)
{
    *ev = NULL;
    char *clean = path_clean(path);
    if (clean == NULL)
        return -ENOMEM;
    struct snode *n = NULL;
    struct store_error gerr = {0};
    int rv = internal_get(s, clean, &n, &gerr);
    char *oldval = NULL;
    if (rv == STORE_EV2 && gerr.code != STORE_ECODE_KEY_NOT_FOUND)
        goto fail_get;
    if (refresh) {
        if (rv != 0)
            goto fail_get;
        if (!n->is_dir) {
            oldval = mem_dup(n->u.f.val ? n->u.f.val : "", n->u.f.len);
            if (oldval == NULL) {
                rv = -ENOMEM;
                goto out;
            }
            value = oldval;
            value_len = n->u.f.len;
        } else {
            value_len = 0;
        }
    }
    store_error_clear(&gerr);
    rv = internal_create(s, clean, dir, value, value_len, false, true,
                         expire_ns, STORE_ACTION_SET, now_ns, ev, err);
    goto out;
fail_get:
    if (err) {
        store_error_clear(err);
        *err = gerr;
    } else {
        store_error_clear(&gerr);
    }
out:
    free(oldval);
    free(clean);
    return write_done(s, rv, *ev, refresh, ST_SET_OK, ST_SET_FAIL);
}

static int compare_fail(struct store *s, const struct snode *n,
                        const void *pv, size_t pvl, uint64_t pi,
                        struct store_error *err)
{
    bool index_ok = pi == 0 || n->modified_index == pi;
    bool value_ok = pvl == 0 || (n->u.f.len == pvl &&
                                 memcmp(n->u.f.val, pv, pvl) == 0);
    if (index_ok && value_ok)
        return 0;
    size_t cap = 2 * pvl + n->u.f.len + 96;
    char *c = malloc(cap);
    if (c == NULL)
        return -ENOMEM;
    size_t w = 0;
    if (!value_ok) {
        c[w++] = '[';
        memcpy(c + w, pv, pvl);
        w += pvl;
        memcpy(c + w, " != ", 4);
        w += 4;
        if (n->u.f.len)
            memcpy(c + w, n->u.f.val, n->u.f.len);
        w += n->u.f.len;
        c[w++] = ']';
    }
    if (!index_ok)
        w += (size_t)snprintf(c + w, cap - w, "%s[%llu != %llu]",
                              value_ok ? "" : " ", (unsigned long long)pi,
                              (unsigned long long)n->modified_index);
    int rv = STORE_EV2;
    if (err) {
        store_error_clear(err);
        err->code = STORE_ECODE_TEST_FAILED;
        err->cause = c;
        err->cause_len = w;
        c[w] = '\0';
        err->index = s->index;
    } else {
        free(c);
    }
    return rv;
}

static int do_cas(struct store *s, const char *clean, const void *pv,
                  size_t pvl, uint64_t pi, const void *value, size_t vlen,
                  int64_t expire, bool refresh, int64_t now,
                  struct store_event **ev, struct store_error *err)
{
    if (path_is_root(clean)) {
        s->count_ok = true;
        return err_set(err, STORE_ECODE_ROOT_RONLY, "/", s->index);
    }
    struct snode *n;
    int rv = internal_get(s, clean, &n, err);
    if (rv != 0)
        return rv;
    if (n->is_dir)
        return err_set(err, STORE_ECODE_NOT_FILE, clean, s->index);
    rv = compare_fail(s, n, pv, pvl, pi, err);
    if (rv != 0)
        return rv;
    if (refresh) {
        value = n->u.f.val;
        vlen = n->u.f.len;
    }
    if (heap_reserve(s) != 0)
        return -ENOMEM;
    struct store_event *e = event_new(STORE_ACTION_COMPARE_AND_SWAP, clean,
                                      s->index + 1, n->created_index);
    if (e == NULL || prev_repr(e, n, now) != 0 ||
        set_value(&e->node, value, vlen) != 0) {
        store_event_unref(e);
        return -ENOMEM;
    }
    if (!refresh && set_file_value(n, value, vlen) != 0) {
        store_event_unref(e);
        return -ENOMEM;
    }
    s->index++;
    e->etcd_index = s->index;
    n->modified_index = s->index;
    update_ttl(s, n, expire);
    exp_ttl(n, now, &e->node.expiration, &e->node.ttl);
    *ev = e;
    return 0;
}

int store_compare_and_swap(struct store *s, const char *path,
                           const void *prev_value, size_t prev_value_len,
                           uint64_t prev_index, const void *value,
                           size_t value_len, int64_t expire_ns, bool refresh,
                           int64_t now_ns, struct store_event **ev,
                           struct store_error *err)
{
    *ev = NULL;
    char *clean = path_clean(path);
    if (clean == NULL)
        return -ENOMEM;
    int rv = do_cas(s, clean, prev_value, prev_value_len, prev_index, value,
                    value_len, expire_ns, refresh, now_ns, ev, err);
    free(clean);
    return write_done(s, rv, *ev, refresh, ST_CAS_OK, ST_CAS_FAIL);
}

static int do_update(struct store *s, const char *clean, const void *value,
                     size_t vlen, int64_t expire, bool refresh, int64_t now,
                     struct store_event **ev, struct store_error *err)
{
    if (path_is_root(clean)) {
        s->count_ok = true;
        return err_set(err, STORE_ECODE_ROOT_RONLY, "/", s->index);
    }
    struct snode *n;
    int rv = internal_get(s, clean, &n, err);
    if (rv != 0)
        return rv;
    if (n->is_dir && vlen != 0 && !refresh) {
        s->count_ok = true;
        return err_set(err, STORE_ECODE_NOT_FILE, clean, s->index);
    }
    if (refresh && !n->is_dir) {
        value = n->u.f.val;
        vlen = n->u.f.len;
    }
    if (heap_reserve(s) != 0)
        return -ENOMEM;
    uint64_t next = s->index + 1;
    struct store_event *e = event_new(STORE_ACTION_UPDATE, clean, next,
                                      n->created_index);
    if (e == NULL || prev_repr(e, n, now) != 0 ||
        (!n->is_dir && set_value(&e->node, value, vlen) != 0) ||
        (!n->is_dir && !refresh && set_file_value(n, value, vlen) != 0)) {
        store_event_unref(e);
        return -ENOMEM;
    }
    e->etcd_index = next;
    if (n->is_dir) {
        /* etcd's node.Write fails on a directory and the error is
         * ignored: the stored modifiedIndex stays as it was. */
        e->node.dir = true;
    } else {
        n->modified_index = next;
    }
    update_ttl(s, n, expire);
    exp_ttl(n, now, &e->node.expiration, &e->node.ttl);
    s->index = next;
    *ev = e;
    return 0;
}

int store_update(struct store *s, const char *path, const void *value,
                 size_t value_len, int64_t expire_ns, bool refresh,
                 int64_t now_ns, struct store_event **ev,
                 struct store_error *err)
{
    *ev = NULL;
    char *clean = path_clean(path);
    if (clean == NULL)
        return -ENOMEM;
    int rv = do_update(s, clean, value, value_len, expire_ns, refresh, now_ns,
                       ev, err);
    free(clean);
    return write_done(s, rv, *ev, refresh, ST_UPD_OK, ST_UPD_FAIL);
}

static int do_delete(struct store *s, const char *clean, bool dir,
                     bool recursive, int64_t now, struct store_event **ev,
                     struct store_error *err)
{
    if (path_is_root(clean)) {
        s->count_ok = true;
        return err_set(err, STORE_ECODE_ROOT_RONLY, "/", s->index);
    }
    if (recursive)
        dir = true;
    struct snode *n;
    int rv = internal_get(s, clean, &n, err);
    if (rv != 0)
        return rv;
    if (n->is_dir && !dir)
        return err_node(err, STORE_ECODE_NOT_FILE, n, s->index);
    if (n->is_dir && n->u.d.n != 0 && !recursive)
        return err_node(err, STORE_ECODE_DIR_NOT_EMPTY, n, s->index);
    uint64_t next = s->index + 1;
    struct store_event *e = event_new(STORE_ACTION_DELETE, clean, next,
                                      n->created_index);
    if (e == NULL || prev_repr(e, n, now) != 0) {
        store_event_unref(e);
        return -ENOMEM;
    }
    e->etcd_index = next;
    e->node.dir = n->is_dir;
    rv = remove_node(s, n, e);
    if (rv != 0) {
        store_event_unref(e);
        return rv;
    }
    s->index = next;
    *ev = e;
    return 0;
}

int store_delete(struct store *s, const char *path, bool dir, bool recursive,
                 int64_t now_ns, struct store_event **ev,
                 struct store_error *err)
{
    *ev = NULL;
    char *clean = path_clean(path);
    if (clean == NULL)
        return -ENOMEM;
    int rv = do_delete(s, clean, dir, recursive, now_ns, ev, err);
    free(clean);
    return write_done(s, rv, *ev, false, ST_DEL_OK, ST_DEL_FAIL);
}

static int do_cad(struct store *s, const char *clean, const void *pv,
                  size_t pvl, uint64_t pi, int64_t now,
                  struct store_event **ev, struct store_error *err)
{
    struct snode *n;
    int rv = internal_get(s, clean, &n, err);
    if (rv != 0)
        return rv;
    /* etcd returns these two errors without assigning its named err,
     * so its deferred statistics count them as successes. */
    s->count_ok = true;
    if (n->is_dir)
        return err_set(err, STORE_ECODE_NOT_FILE, display_key(clean),
                       s->index);
    rv = compare_fail(s, n, pv, pvl, pi, err);
    if (rv != 0)
        return rv;
    s->count_ok = false;
    struct store_event *e = event_new(STORE_ACTION_COMPARE_AND_DELETE, clean,
                                      s->index + 1, n->created_index);
    if (e == NULL || prev_repr(e, n, now) != 0) {
        store_event_unref(e);
        return -ENOMEM;
    }
    s->index++;
    e->etcd_index = s->index;
    rv = remove_node(s, n, e);
    if (rv != 0) {
        s->index--;
        store_event_unref(e);
        return rv;
    }
    *ev = e;
    return 0;
}

int store_compare_and_delete(struct store *s, const char *path,
                             const void *prev_value, size_t prev_value_len,
                             uint64_t prev_index, int64_t now_ns,
                             struct store_event **ev,
                             struct store_error *err)
{
    *ev = NULL;
    char *clean = path_clean(path);
    if (clean == NULL)
        return -ENOMEM;
    int rv = do_cad(s, clean, prev_value, prev_value_len, prev_index, now_ns,
                    ev, err);
    free(clean);
    return write_done(s, rv, *ev, false, ST_CAD_OK, ST_CAD_FAIL);
}

int store_expire(struct store *s, int64_t cutoff)
{
    int count = 0;
    while (s->heap_len > 0 && s->heap[0]->expire <= cutoff) {
        struct snode *n = s->heap[0];
        char *k = node_key(n);
        if (k == NULL)
            break;
        struct store_event *e = event_new(STORE_ACTION_EXPIRE, k,
                                          s->index + 1, n->created_index);
        free(k);
        if (e == NULL || prev_repr(e, n, cutoff) != 0) {
            store_event_unref(e);
            break;
        }
        /* etcd's Repr for the prevNode uses its clock, ~the cutoff. */
        e->node.dir = n->is_dir;
        heap_remove(s, n);
        if (remove_node(s, n, e) != 0) {
            heap_push(s, n);
            store_event_unref(e);
            break;
        }
        s->index++;
        e->etcd_index = s->index;
        stat_inc(s, ST_EXPIRE);
        hub_notify(s, e);
        store_event_unref(e);
        count++;
    }
    return count;
}

/* The deleted-side notifications of a rename: every moved path under its
 * old name, children first, as etcd's Remove callback. */
static void rename_notify(struct store *s, struct snode *n, char *path,
                          size_t plen, struct store_event *e)
{
    if (n->is_dir)
        for (uint32_t i = 0; i < n->u.d.cap; i++) {
            struct snode *c = n->u.d.tab[i];
            if (c == NULL)
                continue;
            path[plen] = '/';
            memcpy(path + plen + 1, c->name, c->name_len);
            rename_notify(s, c, path, plen + 1 + c->name_len, e);
        }
    path[plen] = '\0';
    notify_path(s, e, path, plen, e->prev_node->key, true, true);
}

/* Rename: see store.h. */
static int do_rename(struct store *s, const char *oldc, const char *newc,
                     int64_t now, struct store_event **ev,
                     struct store_error *err)
{
    if (path_is_root(oldc) || path_is_root(newc))
        return err_set(err, STORE_ECODE_ROOT_RONLY, "/", s->index);
    struct snode *n;
    int rv = internal_get(s, oldc, &n, err);
    if (rv != 0)
        return rv;
    size_t ol = strlen(oldc);
    if (strcmp(oldc, newc) == 0)
        return err_set(err, STORE_ECODE_NODE_EXIST, newc, s->index);
    if (strncmp(newc, oldc, ol) == 0 && newc[ol] == '/')
        return err_set(err, STORE_ECODE_INVALID_FIELD,
                       "cannot move a directory into itself", s->index);
    if (path_depth(newc) + subtree_height(n) > STORE_MAX_DEPTH)
        return err_set(err, STORE_ECODE_INVALID_FIELD, "key nested too deep",
                       s->index);
    /* Check the target's parent path before creating anything. */
    {
        struct snode *cur = s->root;
        const char *last = strrchr(newc, '/');
        const char *p = newc;
        while (p < last && cur) {
            p++;
            const char *e = strchr(p, '/');
            struct snode *c = store_dir_find(cur, p, (size_t)(e - p));
            if (c && !c->is_dir)
                return err_node(err, STORE_ECODE_NOT_DIR, c, s->index);
            cur = c;
            p = e;
        }
        if (cur) {
            struct snode *t = store_dir_find(cur, last + 1, strlen(last + 1));
            if (t && (t->is_dir || n->is_dir))
                return err_set(err, STORE_ECODE_NODE_EXIST, newc, s->index);
        }
    }
    uint64_t next = s->index + 1;
    struct store_event *e = event_new(STORE_ACTION_RENAME, newc, next,
                                      n->created_index);
    if (e == NULL || prev_repr(e, n, now) != 0) {
        store_event_unref(e);
        return -ENOMEM;
    }
    const char *name = strrchr(newc, '/') + 1;
    size_t nl = strlen(name);
    struct snode *m = store_node_alloc(name, nl, n->is_dir);
    char *path = malloc(subtree_maxlen(n, ol) + 2);
    struct snode *d;
    const char *dummy;
    if (m == NULL || path == NULL ||
        (rv = walk_create(s, newc, &d, &dummy, err)) != 0) {
        free(m);
        free(path);
        store_event_unref(e);
        return rv ? rv : -ENOMEM;
    }
    struct snode *t = store_dir_find(d, name, nl);
    if (t == NULL && store_dir_add(d, m) != 0) {
        free(m);
        free(path);
        store_event_unref(e);
        return -ENOMEM;
    }
    s->index = next;
    e->etcd_index = next;
    /* Move the payload into m. */
    m->created_index = n->created_index;
    m->modified_index = next;
    m->expire = n->expire;
    m->u = n->u;
    if (m->is_dir)
        for (uint32_t i = 0; i < m->u.d.cap; i++)
            if (m->u.d.tab[i])
                m->u.d.tab[i]->parent = m;
    if (n->heap_idx >= 0) {
        m->heap_idx = n->heap_idx;
        s->heap[m->heap_idx] = m;
    }
    dir_unlink(n);
    if (t) {
        store_dir_replace(t, m);
        t->parent = NULL;
        remove_tree(s, t, NULL, 0, NULL);
    }
    memset(&n->u, 0, sizeof(n->u));
    n->is_dir = false;
    free(n);
    store_node_clear(&e->node);
    if (repr(&e->node, m, newc, false, now) != 0) {
        /* The move is done; only the event copy lacks memory. Keep the
         * key so watchers still see a well-formed event. */
        store_node_clear(&e->node);
        e->node.key = strdup(newc);
    }
    e->node.modified_index = next;
    e->node.created_index = m->created_index;
    /* Old side: the moved paths as deleted (as for a delete), then the
     * old key's ancestors; new side: the new key's ancestors. One
     * delivery per watcher. */
    history_add(s, e);
    memcpy(path, oldc, ol + 1);
    rename_notify(s, m, path, ol, e);
    {
        notify_path(s, e, "/", 1, oldc, false, true);
        for (size_t i = 1; i <= ol; i++)
            if (oldc[i] == '/' || oldc[i] == '\0')
                notify_path(s, e, oldc, i, oldc, false, true);
    }
    walk_notify(s, e, newc, true);
    free(path);
    *ev = e;
    return 0;
}

int store_rename(struct store *s, const char *old_path, const char *new_path,
                 int64_t now_ns, struct store_event **ev,
                 struct store_error *err)
{
    *ev = NULL;
    char *oc = path_clean(old_path);
    char *nc = path_clean(new_path);
    int rv = -ENOMEM;
    if (oc && nc)
        rv = do_rename(s, oc, nc, now_ns, ev, err);
    free(oc);
    free(nc);
    return rv;
}

/* ------------------------------------------------------------------ */
/* Apply                                                                */
/* ------------------------------------------------------------------ */

int store_method_parse(const char *name)
{
    static const char *const names[] = {"PUT", "POST", "DELETE", "QGET",
                                        "GET", "SYNC", "RENAME"};
    for (int i = 0; i < 7; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -EINVAL;
}

int store_apply(struct store *s, const struct store_request *r,
                int64_t now, struct store_event **ev,
                struct store_error *err)
{
    *ev = NULL;
    const char *path = r->path ? r->path : "/";
    bool cmp = r->prev_index > 0 || r->prev_value_len > 0;
    switch (r->method) {
    case STORE_METHOD_PUT:
        if (r->prev_exist == 1) {
            if (!cmp)
                return store_update(s, path, r->val, r->val_len,
                                    r->expiration, r->refresh, now, ev, err);
            return store_compare_and_swap(
                s, path, r->prev_value, r->prev_value_len, r->prev_index,
                r->val, r->val_len, r->expiration, r->refresh, now, ev, err);
        }
        if (r->prev_exist == 0)
            return store_create(s, path, r->dir, r->val, r->val_len, false,
                                r->expiration, r->refresh, now, ev, err);
        if (cmp)
            return store_compare_and_swap(
                s, path, r->prev_value, r->prev_value_len, r->prev_index,
                r->val, r->val_len, r->expiration, r->refresh, now, ev, err);
        return store_set(s, path, r->dir, r->val, r->val_len, r->expiration,
                         r->refresh, now, ev, err);
    case STORE_METHOD_POST:
        return store_create(s, path, r->dir, r->val, r->val_len, true,
                            r->expiration, r->refresh, now, ev, err);
    case STORE_METHOD_DELETE:
        if (cmp)
            return store_compare_and_delete(s, path, r->prev_value,
                                            r->prev_value_len, r->prev_index,
                                            now, ev, err);
        return store_delete(s, path, r->dir, r->recursive, now, ev, err);
    case STORE_METHOD_QGET:
    case STORE_METHOD_GET:
        return store_get(s, path, r->recursive, r->sorted, now, ev, err);
    case STORE_METHOD_SYNC:
        store_expire(s, r->time);
        return 0;
    case STORE_METHOD_RENAME:
        return store_rename(s, path, r->new_path ? r->new_path : "", now, ev,
                            err);
    }
    return err_set(err, STORE_ECODE_INVALID_FIELD, "unknown method", 0);
}
