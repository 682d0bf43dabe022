/* store_snap.c - serialise and restore the whole store for snapshots.
 * Little-endian, streamed through caller callbacks:
 *   "ETCFSV2S" u32 version(1) u64 index u64 stats[15]
 *   node(root)         node: u8 dir, u32 name_len, name, u64 createdIndex,
 *                      u64 modifiedIndex, i64 expire, then a file's
 *                      u64 value_len + value or a dir's u32 n + n nodes
 *   u32 heap_len, heap_len x (u32 key_len, key)   TTL heap in array order
 *   u32 hist_len, u64 start, u64 last, hist_len x event (oldest first)
 *                      event: u8 action, u8 refresh, u64 etcdIndex,
 *                      extern node, u8 has_prev, [extern prevNode]
 *                      extern: u32 key_len, key, u8 flags (1 value, 2 dir),
 *                      [u64 value_len, value], i64 expiration, i64 ttl,
 *                      u64 modifiedIndex, u64 createdIndex
 *   "ETCFSEND"
 * docs/store.md repeats this layout. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* ------------------------------------------------------------------ */
/* Writer                                                               */
/* ------------------------------------------------------------------ */

struct wr {
    int (*write)(void *data, const void *buf, size_t len);
    void *data;
    unsigned char buf[65536];
    size_t len;
    int err;
};

static void w_flush(struct wr *w)
{
    if (w->err == 0 && w->len)
        w->err = w->write(w->data, w->buf, w->len);
    w->len = 0;
}

static void w_bytes(struct wr *w, const void *p, size_t n)
{
    const unsigned char *c = p;
    while (n && w->err == 0) {
        if (w->len == sizeof(w->buf))
            w_flush(w);
        size_t k = sizeof(w->buf) - w->len;
        if (k > n)
            k = n;
        memcpy(w->buf + w->len, c, k);
        w->len += k;
        c += k;
        n -= k;
    }
}

static void w_u64(struct wr *w, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    w_bytes(w, b, 8);
}

static void w_u32(struct wr *w, uint32_t v)
{
    unsigned char b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    w_bytes(w, b, 4);
}

static void w_u8(struct wr *w, unsigned v)
{
    unsigned char b = (unsigned char)v;
    w_bytes(w, &b, 1);
}

static void w_node(struct wr *w, const struct snode *n)
{
    w_u8(w, n->is_dir);
    w_u32(w, n->name_len);
    w_bytes(w, n->name, n->name_len);
    w_u64(w, n->created_index);
    w_u64(w, n->modified_index);
    w_u64(w, (uint64_t)n->expire);
    if (!n->is_dir) {
        w_u64(w, n->u.f.len);
        w_bytes(w, n->u.f.val, n->u.f.len);
        return;
    }
    w_u32(w, n->u.d.n);
    for (uint32_t i = 0; i < n->u.d.cap && w->err == 0; i++)
        if (n->u.d.tab[i])
            w_node(w, n->u.d.tab[i]);
}

static void w_extern(struct wr *w, const struct store_node *x)
{
    size_t kl = strlen(x->key);
    w_u32(w, (uint32_t)kl);
    w_bytes(w, x->key, kl);
    w_u8(w, (x->value ? 1u : 0u) | (x->dir ? 2u : 0u));
    if (x->value) {
        w_u64(w, x->value_len);
        w_bytes(w, x->value, x->value_len);
    }
    w_u64(w, (uint64_t)x->expiration);
    w_u64(w, (uint64_t)x->ttl);
    w_u64(w, x->modified_index);
    w_u64(w, x->created_index);
}

static char *key_of(const struct snode *n, size_t *len)
{
    size_t l = 0;
    for (const struct snode *p = n; p->parent; p = p->parent)
        l += 1 + p->name_len;
    char *k = malloc(l + 1);
    if (k == NULL)
        return NULL;
    k[l] = '\0';
    size_t at = l;
    for (const struct snode *p = n; p->parent; p = p->parent) {
        at -= p->name_len;
        memcpy(k + at, p->name, p->name_len);
        k[--at] = '/';
    }
    *len = l;
    return k;
}

int store_save(struct store *s,
               int (*write)(void *data, const void *buf, size_t len),
               void *data)
{
    struct wr *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->write = write;
    w->data = data;
    w_bytes(w, "ETCFSV2S", 8);
    w_u32(w, 1);
    w_u64(w, s->index);
    for (int i = 0; i < ST_N; i++)
        w_u64(w, __atomic_load_n(&s->stats[i], __ATOMIC_RELAXED));
    w_node(w, s->root);
    w_u32(w, (uint32_t)s->heap_len);
    for (size_t i = 0; i < s->heap_len && w->err == 0; i++) {
        size_t kl;
        char *k = key_of(s->heap[i], &kl);
        if (k == NULL) {
            w->err = -ENOMEM;
            break;
        }
        w_u32(w, (uint32_t)kl);
        w_bytes(w, k, kl);
        free(k);
    }
    w_u32(w, (uint32_t)s->h_size);
    w_u64(w, s->h_start);
    w_u64(w, s->h_last);
    for (size_t i = 0; i < s->h_size && w->err == 0; i++) {
        const struct store_event *e =
            s->hist[(s->h_front + i) % STORE_HISTORY_CAP];
        w_u8(w, (unsigned)e->action);
        w_u8(w, e->refresh);
        w_u64(w, e->etcd_index);
        w_extern(w, &e->node);
        w_u8(w, e->prev_node != NULL);
        if (e->prev_node)
            w_extern(w, e->prev_node);
    }
    w_bytes(w, "ETCFSEND", 8);
    w_flush(w);
    int rv = w->err;
    free(w);
    return rv;
}

/* ------------------------------------------------------------------ */
/* Reader                                                               */
/* ------------------------------------------------------------------ */

struct rd {
    int (*read)(void *data, void *buf, size_t len);
    void *data;
    int err;
};

static void r_bytes(struct rd *r, void *p, size_t n)
{
    if (r->err == 0 && n) {
        int rv = r->read(r->data, p, n);
        if (rv != 0)
            r->err = rv < 0 ? rv : -EIO;
    }
    if (r->err != 0)
        memset(p, 0, n);
}

static uint64_t r_u64(struct rd *r)
{
    unsigned char b[8];
    r_bytes(r, b, 8);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | b[i];
    return v;
}

static uint32_t r_u32(struct rd *r)
{
    unsigned char b[4];
    r_bytes(r, b, 4);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
           (uint32_t)b[3] << 24;
}

static unsigned r_u8(struct rd *r)
{
    unsigned char b;
    r_bytes(r, &b, 1);
    return b;
}

/* A heap string of n bytes (NUL added), read in chunks so a corrupt huge
 * length fails at the end of the input instead of allocating it all. */
static char *r_blob(struct rd *r, uint64_t n)
{
    if (r->err)
        return NULL;
    if (n > ((uint64_t)1 << 40)) {
        r->err = -EINVAL;
        return NULL;
    }
    size_t have = 0, cap = n < 65536 ? (size_t)n : 65536;
    char *p = malloc(cap + 1);
    if (p == NULL) {
        r->err = -ENOMEM;
        return NULL;
    }
    while (have < n) {
        size_t k = (size_t)n - have;
        if (k > 65536)
            k = 65536;
        if (have + k > cap) {
            size_t ncap = cap * 2 < have + k ? have + k : cap * 2;
            if (ncap > n)
                ncap = (size_t)n;
            char *np = realloc(p, ncap + 1);
            if (np == NULL) {
                free(p);
                r->err = -ENOMEM;
                return NULL;
            }
            p = np;
            cap = ncap;
        }
        r_bytes(r, p + have, k);
        if (r->err) {
            free(p);
            return NULL;
        }
        have += k;
    }
    p[n] = '\0';
    return p;
}

static struct snode *r_node(struct rd *r, struct snode *parent, int depth)
{
    if (depth > STORE_MAX_DEPTH) {
        r->err = -EINVAL;
        return NULL;
    }
    unsigned dir = r_u8(r);
    uint32_t nl = r_u32(r);
    if (r->err)
        return NULL;
    if (dir > 1 || (parent == NULL) != (nl == 0) || nl > 65536) {
        r->err = -EINVAL;
        return NULL;
    }
    char *name = r_blob(r, nl);
    if (name == NULL)
        return NULL;
    if (memchr(name, '/', nl) || memchr(name, '\0', nl) ||
        (nl == 1 && name[0] == '.') ||
        (nl == 2 && name[0] == '.' && name[1] == '.')) {
        free(name);
        r->err = -EINVAL;
        return NULL;
    }
    struct snode *n = store_node_alloc(name, nl, dir);
    free(name);
    if (n == NULL) {
        r->err = -ENOMEM;
        return NULL;
    }
    n->created_index = r_u64(r);
    n->modified_index = r_u64(r);
    n->expire = (int64_t)r_u64(r);
    if (!dir) {
        uint64_t vl = r_u64(r);
        if (vl) {
            n->u.f.val = r_blob(r, vl);
            n->u.f.len = n->u.f.val ? (size_t)vl : 0;
        }
    } else {
        uint32_t k = r_u32(r);
        if (k > 0 && depth >= STORE_MAX_DEPTH)
            r->err = -EINVAL;
        for (uint32_t i = 0; i < k && r->err == 0; i++) {
            struct snode *c = r_node(r, n, depth + 1);
            if (c == NULL)
                break;
            if (store_dir_find(n, c->name, c->name_len) != NULL) {
                r->err = -EINVAL;
            } else if (store_dir_add(n, c) != 0) {
                r->err = -ENOMEM;
            } else {
                continue;
            }
            store_node_free_tree(c);
        }
    }
    if (r->err) {
        store_node_free_tree(n);
        return NULL;
    }
    return n;
}

static int r_extern(struct rd *r, struct store_node *x)
{
    uint32_t kl = r_u32(r);
    if (r->err == 0 && kl > (1u << 24))
        r->err = -EINVAL;
    x->key = r_blob(r, kl);
    if (x->key && memchr(x->key, '\0', kl))
        r->err = -EINVAL;
    unsigned fl = r_u8(r);
    if (r->err == 0 && fl > 3)
        r->err = -EINVAL;
    if (fl & 1) {
        uint64_t vl = r_u64(r);
        x->value = r_blob(r, vl);
        x->value_len = x->value ? (size_t)vl : 0;
    }
    x->dir = (fl & 2) != 0;
    x->expiration = (int64_t)r_u64(r);
    x->ttl = (int64_t)r_u64(r);
    x->modified_index = r_u64(r);
    x->created_index = r_u64(r);
    return r->err;
}

/* Find a node by its key ("/a/b") in a loaded tree. */
static struct snode *find_key(struct snode *root, const char *k, size_t kl)
{
    struct snode *cur = root;
    size_t i = 0;
    while (i < kl) {
        if (k[i] != '/' || !cur->is_dir)
            return NULL;
        size_t st = ++i;
        while (i < kl && k[i] != '/')
            i++;
        cur = store_dir_find(cur, k + st, i - st);
        if (cur == NULL)
            return NULL;
    }
    return cur;
}

static size_t count_ttl(const struct snode *n)
{
    size_t c = n->expire != 0;
    if (n->is_dir)
        for (uint32_t i = 0; i < n->u.d.cap; i++)
            if (n->u.d.tab[i])
                c += count_ttl(n->u.d.tab[i]);
    return c;
}

int store_load(struct store *s,
               int (*read)(void *data, void *buf, size_t len), void *data)
{
    struct rd r = {read, data, 0};
    struct store *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    char magic[8];
    r_bytes(&r, magic, 8);
    uint32_t version = r_u32(&r);
    if (r.err == 0 && (memcmp(magic, "ETCFSV2S", 8) != 0 || version != 1))
        r.err = -EINVAL;
    t->index = r_u64(&r);
    for (int i = 0; i < ST_N; i++)
        t->stats[i] = r_u64(&r);
    if (r.err == 0)
        t->root = r_node(&r, NULL, 0);
    if (r.err == 0 && !t->root->is_dir)
        r.err = -EINVAL;
    uint32_t hl = r_u32(&r);
    if (r.err == 0 && t->root && hl != count_ttl(t->root))
        r.err = -EINVAL;
    if (r.err == 0 && hl) {
        t->heap = calloc(hl, sizeof(*t->heap));
        t->heap_cap = hl;
        if (t->heap == NULL)
            r.err = -ENOMEM;
    }
    for (uint32_t i = 0; i < hl && r.err == 0; i++) {
        uint32_t kl = r_u32(&r);
        char *k = r_blob(&r, kl);
        if (k == NULL)
            break;
        struct snode *n = find_key(t->root, k, kl);
        free(k);
        if (n == NULL || n->expire == 0 || n->heap_idx >= 0 ||
            (i > 0 && n->expire < t->heap[(i - 1) / 2]->expire)) {
            r.err = -EINVAL;
            break;
        }
        n->heap_idx = (int32_t)i;
        t->heap[i] = n;
        t->heap_len = i + 1;
    }
    uint32_t nh = r_u32(&r);
    t->h_start = r_u64(&r);
    t->h_last = r_u64(&r);
    if (r.err == 0 && nh > STORE_HISTORY_CAP)
        r.err = -EINVAL;
    for (uint32_t i = 0; i < nh && r.err == 0; i++) {
        struct store_event *e = calloc(1, sizeof(*e));
        if (e == NULL) {
            r.err = -ENOMEM;
            break;
        }
        e->refs_ = 1;
        t->hist[i] = e;
        unsigned action = r_u8(&r);
        unsigned refresh = r_u8(&r);
        if (r.err == 0 && (action > STORE_ACTION_RENAME || refresh > 1))
            r.err = -EINVAL;
        e->action = (enum store_action)action;
        e->refresh = refresh;
        e->etcd_index = r_u64(&r);
        r_extern(&r, &e->node);
        unsigned hp = r_u8(&r);
        if (r.err == 0 && hp > 1)
            r.err = -EINVAL;
        if (hp && r.err == 0) {
            e->prev_node = calloc(1, sizeof(*e->prev_node));
            if (e->prev_node == NULL)
                r.err = -ENOMEM;
            else
                r_extern(&r, e->prev_node);
        }
        if (r.err == 0 && e->node.key == NULL)
            r.err = -EINVAL;
    }
    t->h_size = nh;
    t->h_front = 0;
    t->h_back = nh % STORE_HISTORY_CAP;
    if (r.err == 0 && nh &&
        (t->h_start != t->hist[0]->node.modified_index ||
         t->h_last != t->hist[nh - 1]->node.modified_index))
        r.err = -EINVAL;
    if (r.err == 0 && nh == 0 && (t->h_start || t->h_last))
        r.err = -EINVAL;
    r_bytes(&r, magic, 8);
    if (r.err == 0 && memcmp(magic, "ETCFSEND", 8) != 0)
        r.err = -EINVAL;
    if (r.err != 0) {
        int rv = r.err;
        history_clear(t);
        store_node_free_tree(t->root);
        free(t->heap);
        free(t);
        return rv;
    }
    /* Swap the new state in; watchers and the hook stay. */
    history_clear(s);
    store_node_free_tree(s->root);
    free(s->heap);
    s->root = t->root;
    s->index = t->index;
    memcpy(s->stats, t->stats, sizeof(s->stats));
    s->heap = t->heap;
    s->heap_len = t->heap_len;
    s->heap_cap = t->heap_cap;
    memcpy(s->hist, t->hist, sizeof(s->hist));
    s->h_front = t->h_front;
    s->h_back = t->h_back;
    s->h_size = t->h_size;
    s->h_start = t->h_start;
    s->h_last = t->h_last;
    free(t);
    return 0;
}
