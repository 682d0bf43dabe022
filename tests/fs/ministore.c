/* ministore.c - a small stand-in for store/ (the subset of store.h that
 * memback.c uses), built into etcfs-memfs only while the tree has no
 * etcfs_store library, so the fs tests can run before store/ lands. Its JSON
 * follows etcd's field order but is not the byte-exact encoder of store/. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"

#define HISTORY 1000

struct mnode {
    char *key;
    bool dir;
    char *value;
    size_t len;
    uint64_t ci, mi;
    int64_t exp;
    struct mnode *parent;
    struct mnode **kids;
    size_t n_kids;
};

struct store_watcher {
    struct store_watcher *next;
    char *path;
    bool recursive, stream;
    store_watch_cb cb;
    void *data;
    bool removed;
};

struct store {
    struct mnode *root;
    uint64_t index;
    struct store_event *hist[HISTORY];
    size_t n_hist, hist_start;
    struct store_watcher *watchers;
    bool publishing;
};

const char *store_action_name(enum store_action a)
{
    static const char *n[] = {"get", "create", "set", "update", "delete",
                              "compareAndSwap", "compareAndDelete", "expire",
                              "rename"};
    return n[a];
}

void store_buf_init(struct store_buf *b) { memset(b, 0, sizeof(*b)); }
void store_buf_free(struct store_buf *b) { free(b->data); }
int store_buf_append(struct store_buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 64;
        while (c < b->len + n + 1)
            c *= 2;
        char *d = realloc(b->data, c);
        if (d == NULL)
            return -ENOMEM;
        b->data = d;
        b->cap = c;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}
static int bputs(struct store_buf *b, const char *s)
{
    return store_buf_append(b, s, strlen(s));
}

int store_json_string(struct store_buf *b, const void *p, size_t n)
{
    const unsigned char *s = p;
    int rv = bputs(b, "\"");
    for (size_t i = 0; i < n && rv == 0; i++) {
        char e[8];
        if (s[i] == '"' || s[i] == '\\') {
            e[0] = '\\';
            e[1] = (char)s[i];
            rv = store_buf_append(b, e, 2);
        } else if (s[i] < 0x20 || s[i] == '<' || s[i] == '>' || s[i] == '&') {
            snprintf(e, sizeof(e), "\\u%04x", s[i]);
            rv = bputs(b, e);
        } else {
            rv = store_buf_append(b, &s[i], 1);
        }
    }
    return rv ? rv : bputs(b, "\"");
}

static int node_json(struct store_buf *b, const struct store_node *n)
{
    char t[96];
    bputs(b, "{\"key\":");
    store_json_string(b, n->key, strlen(n->key));
    if (n->dir) {
        bputs(b, ",\"dir\":true");
    } else {
        bputs(b, ",\"value\":");
        store_json_string(b, n->value ? n->value : "", n->value_len);
    }
    if (n->expiration != 0) {
        time_t sec = (time_t)(n->expiration / 1000000000);
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(t, sizeof(t), ",\"expiration\":\"%Y-%m-%dT%H:%M:%SZ\"", &tm);
        bputs(b, t);
        snprintf(t, sizeof(t), ",\"ttl\":%lld", (long long)n->ttl);
        bputs(b, t);
    }
    snprintf(t, sizeof(t), ",\"modifiedIndex\":%llu,\"createdIndex\":%llu}",
             (unsigned long long)n->modified_index,
             (unsigned long long)n->created_index);
    return bputs(b, t);
}

int store_event_json(struct store_buf *b, const struct store_event *ev)
{
    bputs(b, "{\"action\":\"");
    bputs(b, store_action_name(ev->action));
    bputs(b, "\",\"node\":");
    node_json(b, &ev->node);
    if (ev->prev_node != NULL) {
        bputs(b, ",\"prevNode\":");
        node_json(b, ev->prev_node);
    }
    return bputs(b, "}\n");
}

static const char *msg(int code)
{
    switch (code) {
    case 100: return "Key not found";
    case 101: return "Compare failed";
    case 102: return "Not a file";
    case 104: return "Not a directory";
    case 105: return "Key already exists";
    case 107: return "Root is read only";
    case 108: return "Directory not empty";
    case 401: return "The event in requested index is outdated and cleared";
    default: return "error";
    }
}
const char *store_error_message(int code) { return msg(code); }

int store_error_json(struct store_buf *b, const struct store_error *err)
{
    char t[64];
    snprintf(t, sizeof(t), "{\"errorCode\":%d,\"message\":", err->code);
    bputs(b, t);
    store_json_string(b, msg(err->code), strlen(msg(err->code)));
    bputs(b, ",\"cause\":");
    store_json_string(b, err->cause ? err->cause : "", err->cause_len);
    snprintf(t, sizeof(t), ",\"index\":%llu}\n",
             (unsigned long long)err->index);
    return bputs(b, t);
}

int store_error_set(struct store_error *err, int code, const char *cause,
                    uint64_t index)
{
    store_error_clear(err);
    err->code = code;
    err->index = index;
    if (cause != NULL) {
        err->cause = strdup(cause);
        err->cause_len = strlen(cause);
    }
    return 0;
}
void store_error_clear(struct store_error *err)
{
    free(err->cause);
    memset(err, 0, sizeof(*err));
}

static int fail(struct store *s, struct store_error *err, int code,
                const char *cause)
{
    if (err != NULL)
        store_error_set(err, code, cause, s->index);
    return STORE_EV2;
}

/* ---- tree ---- */

static void mnode_free(struct mnode *n)
{
    for (size_t i = 0; i < n->n_kids; i++)
        mnode_free(n->kids[i]);
    free(n->kids);
    free(n->key);
    free(n->value);
    free(n);
}

static struct mnode *mnode_new(const char *key, bool dir)
{
    struct mnode *n = calloc(1, sizeof(*n));
    n->key = strdup(key);
    n->dir = dir;
    return n;
}

static void clean(const char *in, char *out, size_t n)
{
    size_t o = 0;
    out[o++] = '/';
    for (const char *p = in; *p && o + 2 < n;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (!(l == 1 && p[0] == '.')) {
            if (out[o - 1] != '/')
                out[o++] = '/';
            memcpy(out + o, p, l);
            o += l;
        }
        p += l;
    }
    out[o] = '\0';
}

static struct mnode *child(struct mnode *d, const char *name, size_t *pos)
{
    size_t lo = 0, hi = d->n_kids;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *kn = strrchr(d->kids[mid]->key, '/') + 1;
        int c = strcmp(kn, name);
        if (c == 0) {
            if (pos)
                *pos = mid;
            return d->kids[mid];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (pos)
        *pos = lo;
    return NULL;
}

static void add_child(struct mnode *d, struct mnode *c)
{
    size_t pos;
    child(d, strrchr(c->key, '/') + 1, &pos);
    d->kids = realloc(d->kids, (d->n_kids + 1) * sizeof(*d->kids));
    memmove(d->kids + pos + 1, d->kids + pos,
            (d->n_kids - pos) * sizeof(*d->kids));
    d->kids[pos] = c;
    d->n_kids++;
    c->parent = d;
}

static void remove_child(struct mnode *c)
{
    struct mnode *d = c->parent;
    size_t pos;
    child(d, strrchr(c->key, '/') + 1, &pos);
    memmove(d->kids + pos, d->kids + pos + 1,
            (d->n_kids - pos - 1) * sizeof(*d->kids));
    d->n_kids--;
    c->parent = NULL;
}

/* Walk to path; *code 100 when missing, 104 when a file is on the way. */
static struct mnode *walk(struct store *s, const char *path, int *code,
                          struct mnode **parent_out)
{
    struct mnode *n = s->root;
    char buf[4096];
    strncpy(buf, path, sizeof(buf) - 1);
    buf[sizeof(buf) - 1] = '\0';
    *code = 0;
    if (parent_out)
        *parent_out = NULL;
    for (char *save, *t = strtok_r(buf, "/", &save); t;
         t = strtok_r(NULL, "/", &save)) {
        if (!n->dir) {
            *code = 104;
            return NULL;
        }
        if (parent_out)
            *parent_out = n;
        struct mnode *c = child(n, t, NULL);
        if (c == NULL) {
            *code = 100;
            return NULL;
        }
        n = c;
    }
    return n;
}

static int64_t ttl_of(int64_t exp, int64_t now)
{
    if (exp == 0)
        return 0;
    int64_t d = exp - now;
    return d <= 0 ? 0 : (d + 999999999) / 1000000000;
}

static void extern_of(struct store_node *o, const struct mnode *n,
                      int64_t now, bool kids)
{
    memset(o, 0, sizeof(*o));
    o->key = strdup(n->key);
    o->dir = n->dir;
    if (!n->dir) {
        o->value = malloc(n->len + 1);
        memcpy(o->value, n->value ? n->value : "", n->len);
        o->value[n->len] = '\0';
        o->value_len = n->len;
    }
    o->expiration = n->exp;
    o->ttl = ttl_of(n->exp, now);
    o->modified_index = n->mi;
    o->created_index = n->ci;
    if (kids && n->dir) {
        o->nodes = calloc(n->n_kids + 1, sizeof(*o->nodes));
        for (size_t i = 0; i < n->n_kids; i++) {
            if (strrchr(n->kids[i]->key, '/')[1] == '_')
                continue;
            extern_of(&o->nodes[o->n_nodes++], n->kids[i], now, false);
        }
    }
}

static void extern_free(struct store_node *o)
{
    for (size_t i = 0; i < o->n_nodes; i++)
        extern_free(&o->nodes[i]);
    free(o->nodes);
    free(o->key);
    free(o->value);
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
    extern_free(&ev->node);
    if (ev->prev_node) {
        extern_free(ev->prev_node);
        free(ev->prev_node);
    }
    free(ev);
}

static struct store_event *event_new(enum store_action a, uint64_t idx)
{
    struct store_event *ev = calloc(1, sizeof(*ev));
    ev->action = a;
    ev->etcd_index = idx;
    ev->refs_ = 1;
    return ev;
}

static bool watch_match(const struct store_watcher *w, const char *key)
{
    size_t l = strlen(w->path);
    if (strcmp(w->path, "/") == 0)
        return w->recursive || strchr(key + 1, '/') == NULL;
    if (strncmp(key, w->path, l) != 0)
        return false;
    if (key[l] == '\0')
        return true;
    return key[l] == '/' && w->recursive;
}

static bool hidden(const char *key, const char *wpath)
{
    /* etcd hides events on "_" keys from watchers above them. */
    const char *last = strrchr(key, '/');
    return last && last[1] == '_' && strcmp(key, wpath) != 0;
}

static bool ev_match(const struct store_watcher *w,
                     const struct store_event *ev)
{
    if (!hidden(ev->node.key, w->path) && watch_match(w, ev->node.key))
        return true;
    if (ev->prev_node && (ev->action == STORE_ACTION_RENAME ||
                          ev->action == STORE_ACTION_DELETE ||
                          ev->action == STORE_ACTION_EXPIRE)) {
        if (watch_match(w, ev->prev_node->key))
            return true;
        /* a watcher inside a deleted directory */
        size_t l = strlen(ev->prev_node->key);
        if (strncmp(w->path, ev->prev_node->key, l) == 0 &&
            w->path[l] == '/')
            return true;
    }
    return false;
}

static void publish(struct store *s, struct store_event *ev)
{
    if (s->n_hist == HISTORY) {
        store_event_unref(s->hist[s->hist_start]);
        s->hist[s->hist_start] = store_event_ref(ev);
        s->hist_start = (s->hist_start + 1) % HISTORY;
    } else {
        s->hist[(s->hist_start + s->n_hist++) % HISTORY] = store_event_ref(ev);
    }
    s->publishing = true;
    for (struct store_watcher *w = s->watchers; w != NULL; w = w->next) {
        if (!w->removed && !ev->refresh && ev_match(w, ev)) {
            w->cb(w, ev, w->data);
            if (!w->stream)
                w->removed = true;
        }
    }
    s->publishing = false;
    for (struct store_watcher **pp = &s->watchers, *w; (w = *pp) != NULL;) {
        if (w->removed) {
            *pp = w->next;
            free(w->path);
            free(w);
            continue;
        }
        pp = &w->next;
    }
}

struct store *store_new(void)
{
    struct store *s = calloc(1, sizeof(*s));
    s->root = mnode_new("/", true);
    return s;
}

void store_free(struct store *s)
{
    while (s->watchers) {
        struct store_watcher *w = s->watchers;
        s->watchers = w->next;
        w->cb(w, NULL, w->data);
        free(w->path);
        free(w);
    }
    for (size_t i = 0; i < s->n_hist; i++)
        store_event_unref(s->hist[(s->hist_start + i) % HISTORY]);
    mnode_free(s->root);
    free(s);
}

uint64_t store_index(const struct store *s) { return s->index; }

int store_read(struct store *s, const char *path, bool recursive,
               int64_t now_ns, struct store_event **ev,
               struct store_error *err)
{
    char p[4096];
    int code;
    clean(path, p, sizeof(p));
    *ev = NULL;
    struct mnode *n = walk(s, p, &code, NULL);
    if (n == NULL)
        return fail(s, err, code == 104 ? 100 : code, p);
    *ev = event_new(STORE_ACTION_GET, s->index);
    extern_of(&(*ev)->node, n, now_ns, true);
    return 0;
}

static struct store_node *prev_of(struct mnode *n, int64_t now)
{
    struct store_node *p = calloc(1, sizeof(*p));
    extern_of(p, n, now, false);
    return p;
}

/* Create the missing parents of p (a cleaned path) as directories. */
static struct mnode *mkparents(struct store *s, const char *p, int *code)
{
    char buf[4096];
    struct mnode *d = s->root;
    strcpy(buf, p);
    char *last = strrchr(buf, '/');
    *last = '\0';
    char acc[4096] = "";
    for (char *save, *t = strtok_r(buf, "/", &save); t;
         t = strtok_r(NULL, "/", &save)) {
        strcat(acc, "/");
        strcat(acc, t);
        struct mnode *c = child(d, t, NULL);
        if (c == NULL) {
            c = mnode_new(acc, true);
            c->ci = c->mi = s->index + 1;
            add_child(d, c);
        } else if (!c->dir) {
            *code = 104;
            return NULL;
        }
        d = c;
    }
    return d;
}

static int do_put(struct store *s, const struct store_request *r,
                  int64_t now, struct store_event **ev,
                  struct store_error *err, bool unique)
{
    char p[4096];
    int code;
    clean(r->path, p, sizeof(p));
    if (unique) {
        size_t l = strlen(p);
        snprintf(p + l, sizeof(p) - l, "%s%020llu", l > 1 ? "/" : "",
                 (unsigned long long)(s->index + 1));
    }
    if (strcmp(p, "/") == 0)
        return fail(s, err, 107, "/");
    struct mnode *n = walk(s, p, &code, NULL);
    if (code == 104)
        return fail(s, err, 104, p);
    bool cas = r->prev_value_len > 0 || r->prev_index > 0;
    if (n != NULL && r->prev_exist == 0)
        return fail(s, err, 105, p);
    if (n == NULL && (r->prev_exist == 1 || cas))
        return fail(s, err, 100, p);
    if (n != NULL && cas) {
        if (n->dir)
            return fail(s, err, 102, p);
        if ((r->prev_value_len > 0 &&
             (n->len != r->prev_value_len ||
              memcmp(n->value, r->prev_value, n->len) != 0)) ||
            (r->prev_index > 0 && n->mi != r->prev_index))
            return fail(s, err, 101, "compare failed");
    }
    if (n != NULL && n->dir && !(r->dir && r->prev_exist == 1))
        return fail(s, err, 102, p);
    if (n != NULL && !n->dir && r->dir)
        return fail(s, err, 102, p);
    enum store_action a = STORE_ACTION_SET;
    if (r->prev_exist == 0)
        a = STORE_ACTION_CREATE;
    else if (cas)
        a = STORE_ACTION_COMPARE_AND_SWAP;
    else if (r->prev_exist == 1)
        a = STORE_ACTION_UPDATE;
    struct store_node *prev = n ? prev_of(n, now) : NULL;
    uint64_t idx = s->index + 1;
    if (n == NULL) {
        struct mnode *d = mkparents(s, p, &code);
        if (d == NULL) {
            free(prev);
            return fail(s, err, code, p);
        }
        n = mnode_new(p, r->dir);
        n->ci = idx;
        add_child(d, n);
    } else if (a == STORE_ACTION_SET) {
        n->ci = idx;
    }
    if (!n->dir) {
        free(n->value);
        n->value = malloc(r->val_len + 1);
        memcpy(n->value, r->val ? r->val : "", r->val_len);
        n->len = r->val_len;
    }
    n->mi = idx;
    n->exp = r->expiration;
    s->index = idx;
    *ev = event_new(a, idx);
    extern_of(&(*ev)->node, n, now, false);
    (*ev)->prev_node = prev;
    publish(s, *ev);
    return 0;
}

static int do_delete(struct store *s, const char *path, bool dir,
                     bool recursive, int64_t now, struct store_event **ev,
                     struct store_error *err, enum store_action a)
{
    char p[4096];
    int code;
    clean(path, p, sizeof(p));
    if (strcmp(p, "/") == 0)
        return fail(s, err, 107, "/");
    struct mnode *n = walk(s, p, &code, NULL);
    if (n == NULL)
        return fail(s, err, code, p);
    if (n->dir && !dir && !recursive)
        return fail(s, err, 102, p);
    if (n->dir && n->n_kids > 0 && !recursive)
        return fail(s, err, 108, p);
    uint64_t idx = ++s->index;
    *ev = event_new(a, idx);
    extern_of(&(*ev)->node, n, now, false);
    free((*ev)->node.value);
    (*ev)->node.value = NULL;
    (*ev)->node.value_len = 0;
    (*ev)->node.modified_index = idx;
    (*ev)->node.expiration = 0;
    (*ev)->node.ttl = 0;
    (*ev)->prev_node = prev_of(n, now);
    remove_child(n);
    mnode_free(n);
    publish(s, *ev);
    return 0;
}

static void rekey(struct mnode *n, const char *newkey)
{
    size_t ol = strlen(n->key);
    for (size_t i = 0; i < n->n_kids; i++) {
        char buf[4096];
        snprintf(buf, sizeof(buf), "%s%s", newkey, n->kids[i]->key + ol);
        rekey(n->kids[i], buf);
    }
    free(n->key);
    n->key = strdup(newkey);
}

static int do_rename(struct store *s, const char *from, const char *to,
                     int64_t now, struct store_event **ev,
                     struct store_error *err)
{
    char a[4096], b[4096];
    int code;
    clean(from, a, sizeof(a));
    clean(to, b, sizeof(b));
    if (strcmp(a, "/") == 0 || strcmp(b, "/") == 0)
        return fail(s, err, 107, "/");
    struct mnode *n = walk(s, a, &code, NULL);
    if (n == NULL)
        return fail(s, err, code, a);
    size_t la = strlen(a);
    if (strncmp(b, a, la) == 0 && b[la] == '/')
        return fail(s, err, 209, b);
    struct mnode *t = walk(s, b, &code, NULL);
    if (code == 104)
        return fail(s, err, 104, b);
    if (t != NULL && (t->dir || n->dir))
        return fail(s, err, 105, b);
    struct mnode *d = mkparents(s, b, &code);
    if (d == NULL)
        return fail(s, err, code, b);
    uint64_t idx = ++s->index;
    *ev = event_new(STORE_ACTION_RENAME, idx);
    (*ev)->prev_node = prev_of(n, now);
    if (t != NULL) {
        remove_child(t);
        mnode_free(t);
    }
    remove_child(n);
    rekey(n, b);
    n->mi = idx;
    add_child(d, n);
    extern_of(&(*ev)->node, n, now, false);
    publish(s, *ev);
    return 0;
}

int store_apply(struct store *s, const struct store_request *r,
                int64_t now_ns, struct store_event **ev,
                struct store_error *err)
{
    *ev = NULL;
    switch (r->method) {
    case STORE_METHOD_PUT:
        return do_put(s, r, now_ns, ev, err, false);
    case STORE_METHOD_POST: {
        struct store_request c = *r;
        c.prev_exist = 0;
        return do_put(s, &c, now_ns, ev, err, true);
    }
    case STORE_METHOD_DELETE:
        return do_delete(s, r->path, r->dir, r->recursive, now_ns, ev, err,
                         STORE_ACTION_DELETE);
    case STORE_METHOD_RENAME:
        return do_rename(s, r->path, r->new_path, now_ns, ev, err);
    case STORE_METHOD_SYNC:
        store_expire(s, r->time);
        return 0;
    default:
        return store_read(s, r->path, r->recursive, now_ns, ev, err);
    }
}

static struct mnode *find_expired(struct mnode *n, int64_t cutoff)
{
    for (size_t i = 0; i < n->n_kids; i++) {
        struct mnode *c = n->kids[i];
        if (c->exp != 0 && c->exp <= cutoff)
            return c;
        struct mnode *e = find_expired(c, cutoff);
        if (e)
            return e;
    }
    return NULL;
}

int store_expire(struct store *s, int64_t cutoff_ns)
{
    int count = 0;
    struct mnode *n;
    while ((n = find_expired(s->root, cutoff_ns)) != NULL) {
        struct store_event *ev = NULL;
        char key[4096];
        snprintf(key, sizeof(key), "%s", n->key);
        if (do_delete(s, key, true, true, cutoff_ns, &ev, NULL,
                      STORE_ACTION_EXPIRE) == 0)
            store_event_unref(ev);
        count++;
    }
    return count;
}

int store_watch(struct store *s, const char *path, bool recursive,
                bool stream, uint64_t since_index, store_watch_cb cb,
                void *data, struct store_watcher **w,
                struct store_event **hist_ev, uint64_t *start_index,
                struct store_error *err)
{
    char p[4096];
    clean(path, p, sizeof(p));
    *w = NULL;
    *hist_ev = NULL;
    if (start_index)
        *start_index = s->index;
    struct store_watcher tmp = {.path = p, .recursive = recursive};
    if (since_index != 0 && since_index <= s->index) {
        uint64_t first = s->n_hist ? s->hist[s->hist_start]->node.modified_index
                                   : s->index + 1;
        if (since_index < first) {
            char cause[128];
            snprintf(cause, sizeof(cause), "the requested history has been "
                     "cleared [%llu/%llu]", (unsigned long long)first,
                     (unsigned long long)since_index);
            return fail(s, err, 401, cause);
        }
        for (size_t i = 0; i < s->n_hist; i++) {
            struct store_event *ev = s->hist[(s->hist_start + i) % HISTORY];
            if (ev->node.modified_index >= since_index && !ev->refresh &&
                ev_match(&tmp, ev)) {
                *hist_ev = store_event_ref(ev);
                return 0;
            }
        }
    }
    struct store_watcher *nw = calloc(1, sizeof(*nw));
    nw->path = strdup(p);
    nw->recursive = recursive;
    nw->stream = stream;
    nw->cb = cb;
    nw->data = data;
    nw->next = s->watchers;
    s->watchers = nw;
    *w = nw;
    return 0;
}

void store_watcher_cancel(struct store *s, struct store_watcher *w)
{
    for (struct store_watcher **pp = &s->watchers; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            if (s->publishing) {
                w->removed = true; /* publish() unlinks it */
                return;
            }
            *pp = w->next;
            free(w->path);
            free(w);
            return;
        }
}
