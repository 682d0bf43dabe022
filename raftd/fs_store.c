/* fs_store.c - the read half of an fs.h backend over a store in this
 * process (fs_store.h): store reads and watches turned into fs.h's
 * metadata, listings and event lines. */
#include "fs_store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct fs_backend_watch {
    struct store_watcher *sw;
    fs_watch_cb cb;
    void *arg;
};

int64_t fs_store_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int fs_store_status(int rv, const struct store_error *err)
{
    return rv == STORE_EV2 ? err->code : rv;
}

void fs_store_meta(struct fs_meta *m, const struct store_node *n)
{
    m->dir = n->dir;
    m->created_index = n->created_index;
    m->modified_index = n->modified_index;
    m->expiration = n->expiration;
    m->ttl = n->ttl;
}

/* store_read of path as an fs.h status; *ev is set when it is 0. */
static int read_node(struct store *s, const char *path,
                     struct store_event **ev)
{
    struct store_error err = {0};
    int rv = store_read(s, path, false, fs_store_now_ns(), ev, &err);
    rv = fs_store_status(rv, &err);
    store_error_clear(&err);
    return rv;
}

int fs_store_get(struct store *s, const char *path, fs_get_cb cb, void *arg)
{
    struct store_event *ev = NULL;
    struct fs_meta m = {0};
    int rv = read_node(s, path, &ev);
    if (rv != 0) {
        cb(arg, rv, NULL, NULL, 0);
        return 0;
    }
    fs_store_meta(&m, &ev->node);
    cb(arg, 0, &m, ev->node.value ? ev->node.value : "", ev->node.value_len);
    store_event_unref(ev);
    return 0;
}

int fs_store_list(struct store *s, const char *path, fs_list_cb cb, void *arg)
{
    struct store_event *ev = NULL;
    struct fs_meta m = {0};
    int rv = read_node(s, path, &ev);
    if (rv == 0 && !ev->node.dir) {
        store_event_unref(ev);
        rv = STORE_ECODE_NOT_DIR;
    }
    if (rv != 0) {
        cb(arg, rv, NULL, NULL, 0);
        return 0;
    }
    struct fs_dirent *ents = calloc(ev->node.n_nodes + 1, sizeof(*ents));
    if (ents == NULL) {
        store_event_unref(ev);
        return -ENOMEM;
    }
    for (size_t i = 0; i < ev->node.n_nodes; i++) {
        const struct store_node *c = &ev->node.nodes[i];
        const char *slash = strrchr(c->key, '/');
        ents[i].name = slash ? slash + 1 : c->key;
        fs_store_meta(&ents[i].meta, c);
    }
    fs_store_meta(&m, &ev->node);
    cb(arg, 0, &m, ents, ev->node.n_nodes);
    free(ents);
    store_event_unref(ev);
    return 0;
}

/* Deliver one store event to a watch as fs.h's fs_event. */
static void deliver(struct fs_backend_watch *w, struct store_event *ev)
{
    struct store_buf buf;
    struct fs_event fe = {0};
    store_buf_init(&buf);
    if (store_event_json(&buf, ev) != 0) {
        store_buf_free(&buf);
        return; /* ENOMEM: the event is lost for this watch */
    }
    fe.json = buf.data;
    fe.json_len = buf.len;
    fe.action = store_action_name(ev->action);
    fe.key = ev->node.key;
    fe.prev_key = ev->prev_node ? ev->prev_node->key : NULL;
    fe.dir = ev->node.dir || (ev->prev_node && ev->prev_node->dir);
    fe.index = ev->node.modified_index;
    w->cb(w->arg, 0, &fe);
    store_buf_free(&buf);
}

static void store_cb(struct store_watcher *sw, struct store_event *ev,
                     void *data)
{
    struct fs_backend_watch *w = data;
    if (ev == NULL) { /* store_free cancels */
        w->cb(w->arg, -ECANCELED, NULL);
        free(w);
        return;
    }
    deliver(w, ev); /* may cancel and free w: touch nothing after */
}

int fs_store_watch(struct store *s, const char *path, uint64_t since,
                   fs_watch_cb cb, void *arg, struct fs_backend_watch **out)
{
    struct fs_backend_watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->cb = cb;
    w->arg = arg;
    *out = NULL;
    /* The store's watch stops at the first history match: walk the
     * history one event at a time, then let a stream watcher take over. */
    for (;;) {
        struct store_event *hist = NULL;
        struct store_error err = {0};
        int rv = store_watch(s, path, true, true, since, store_cb, w, &w->sw,
                             &hist, NULL, &err);
        if (rv == STORE_EV2) {
            struct store_buf buf;
            struct fs_event fe = {0};
            int code = err.code;
            store_buf_init(&buf);
            if (store_error_json(&buf, &err) == 0) {
                fe.json = buf.data;
                fe.json_len = buf.len;
            }
            store_error_clear(&err);
            free(w);
            cb(arg, code, &fe);
            store_buf_free(&buf);
            return 0;
        }
        store_error_clear(&err);
        if (rv != 0) {
            free(w);
            return rv;
        }
        if (hist == NULL)
            break;
        since = hist->node.modified_index + 1;
        deliver(w, hist);
        store_event_unref(hist);
    }
    *out = w;
    return 0;
}

void fs_store_watch_cancel(struct store *s, struct fs_backend_watch *w)
{
    store_watcher_cancel(s, w->sw);
    free(w);
}
