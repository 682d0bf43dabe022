/* memback.c - the fs.h backend over an in-process store, for tests and the
 * etcfs-memfs program: each operation is one store_apply (as raftd would
 * apply the committed entry) with the wall clock as the entry's time. */
#include "memback.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"

struct fs_backend_watch {
    struct memback *mb;
    struct store_watcher *sw;
    fs_watch_cb cb;
    void *arg;
    struct fs_backend_watch *prev, *next;
};

struct memback {
    struct store *store;
    bool down; /* control "down 1": every operation fails with -EIO */
    int fail_next; /* control "fail CODE": the next write fails so */
    uv_timer_t expire;
    struct fs_backend_watch *watches;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The callback status of a store return. */
static int status_of(int rv, const struct store_error *err)
{
    if (rv == STORE_EV2)
        return err->code;
    return rv;
}

static void meta_of(struct fs_meta *m, const struct store_node *n)
{
    m->dir = n->dir;
    m->created_index = n->created_index;
    m->modified_index = n->modified_index;
    m->expiration = n->expiration;
    m->ttl = n->ttl;
}

static int apply(struct memback *mb, const struct store_request *r,
                 struct store_event **ev, int64_t t)
{
    struct store_error err = {0};
    int rv = store_apply(mb->store, r, t, ev, &err);
    rv = status_of(rv, &err);
    store_error_clear(&err);
    return rv;
}

static int mb_get(void *data, const char *path, fs_get_cb cb, void *arg)
{
    struct memback *mb = data;
    if (mb->down) {
        cb(arg, -EIO, NULL, NULL, 0);
        return 0;
    }
    struct store_event *ev = NULL;
    struct store_error err = {0};
    struct fs_meta m = {0};
    int rv = store_read(mb->store, path, false, now_ns(), &ev, &err);
    rv = status_of(rv, &err);
    store_error_clear(&err);
    if (rv != 0) {
        cb(arg, rv, NULL, NULL, 0);
        return 0;
    }
    meta_of(&m, &ev->node);
    cb(arg, 0, &m, ev->node.value ? ev->node.value : "", ev->node.value_len);
    store_event_unref(ev);
    return 0;
}

static int mb_list(void *data, const char *path, fs_list_cb cb, void *arg)
{
    struct memback *mb = data;
    if (mb->down) {
        cb(arg, -EIO, NULL, NULL, 0);
        return 0;
    }
    struct store_event *ev = NULL;
    struct store_error err = {0};
    struct fs_meta m = {0};
    int rv = store_read(mb->store, path, false, now_ns(), &ev, &err);
    rv = status_of(rv, &err);
    store_error_clear(&err);
    if (rv == 0 && !ev->node.dir) {
        store_event_unref(ev);
        rv = 104;
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
        meta_of(&ents[i].meta, c);
    }
    meta_of(&m, &ev->node);
    cb(arg, 0, &m, ents, ev->node.n_nodes);
    free(ents);
    store_event_unref(ev);
    return 0;
}

static void reply_write(int rv, struct store_event *ev, fs_write_cb cb,
                        void *arg)
{
    struct fs_meta m = {0};
    if (rv != 0) {
        cb(arg, rv, NULL);
        return;
    }
    if (ev != NULL)
        meta_of(&m, &ev->node);
    cb(arg, 0, &m);
    if (ev != NULL)
        store_event_unref(ev);
}

static int mb_set(void *data, const struct fs_set_args *a, fs_write_cb cb,
                  void *arg)
{
    struct memback *mb = data;
    if (mb->fail_next != 0) {
        int code = mb->fail_next;
        mb->fail_next = 0;
        cb(arg, code, NULL);
        return 0;
    }
    if (mb->down) {
        cb(arg, -EIO, NULL);
        return 0;
    }
    struct store_event *ev = NULL;
    int64_t t = now_ns();
    struct store_request r = {
        .method = STORE_METHOD_PUT,
        .path = a->path,
        .val = a->dir ? NULL : a->value,
        .val_len = a->dir ? 0 : a->value_len,
        .dir = a->dir,
        .prev_value = a->prev_value,
        .prev_value_len = a->prev_value_len,
        .prev_index = a->prev_index,
        .prev_exist = a->prev_exist,
        .expiration = a->ttl > 0 ? t + a->ttl * 1000000000 : 0,
        .time = t,
    };
    int rv = apply(mb, &r, &ev, t);
    reply_write(rv, ev, cb, arg);
    return 0;
}

static int mb_del(void *data, const char *path, bool dir, bool recursive,
                  fs_write_cb cb, void *arg)
{
    struct memback *mb = data;
    if (mb->fail_next != 0) {
        int code = mb->fail_next;
        mb->fail_next = 0;
        cb(arg, code, NULL);
        return 0;
    }
    if (mb->down) {
        cb(arg, -EIO, NULL);
        return 0;
    }
    struct store_event *ev = NULL;
    int64_t t = now_ns();
    struct store_request r = {
        .method = STORE_METHOD_DELETE,
        .path = path,
        .dir = dir,
        .recursive = recursive,
        .prev_exist = -1,
        .time = t,
    };
    int rv = apply(mb, &r, &ev, t);
    reply_write(rv, ev, cb, arg);
    return 0;
}

static int mb_post(void *data, const char *dir_path, const void *value,
                   size_t value_len, fs_post_cb cb, void *arg)
{
    struct memback *mb = data;
    if (mb->fail_next != 0) {
        int code = mb->fail_next;
        mb->fail_next = 0;
        cb(arg, code, NULL, NULL);
        return 0;
    }
    if (mb->down) {
        cb(arg, -EIO, NULL, NULL);
        return 0;
    }
    struct store_event *ev = NULL;
    struct fs_meta m = {0};
    int64_t t = now_ns();
    struct store_request r = {
        .method = STORE_METHOD_POST,
        .path = dir_path,
        .val = value,
        .val_len = value_len,
        .prev_exist = -1,
        .time = t,
    };
    int rv = apply(mb, &r, &ev, t);
    if (rv != 0) {
        cb(arg, rv, NULL, NULL);
        return 0;
    }
    meta_of(&m, &ev->node);
    cb(arg, 0, ev->node.key, &m);
    store_event_unref(ev);
    return 0;
}

static int mb_rename(void *data, const char *old_path, const char *new_path,
                     fs_write_cb cb, void *arg)
{
    struct memback *mb = data;
    if (mb->fail_next != 0) {
        int code = mb->fail_next;
        mb->fail_next = 0;
        cb(arg, code, NULL);
        return 0;
    }
    if (mb->down) {
        cb(arg, -EIO, NULL);
        return 0;
    }
    struct store_event *ev = NULL;
    int64_t t = now_ns();
    struct store_request r = {
        .method = STORE_METHOD_RENAME,
        .path = old_path,
        .new_path = new_path,
        .prev_exist = -1,
        .time = t,
    };
    int rv = apply(mb, &r, &ev, t);
    reply_write(rv, ev, cb, arg);
    return 0;
}

/* Deliver one store event to a watch as fs.h's fs_event. */
static void deliver(struct fs_backend_watch *w, struct store_event *ev)
{
    struct store_buf b;
    struct fs_event fe = {0};
    store_buf_init(&b);
    if (store_event_json(&b, ev) != 0) {
        store_buf_free(&b);
        return; /* ENOMEM: the event is lost for this watch */
    }
    fe.json = b.data;
    fe.json_len = b.len;
    fe.action = store_action_name(ev->action);
    fe.key = ev->node.key;
    fe.prev_key = ev->prev_node ? ev->prev_node->key : NULL;
    fe.dir = ev->node.dir || (ev->prev_node && ev->prev_node->dir);
    fe.index = ev->node.modified_index;
    w->cb(w->arg, 0, &fe);
    store_buf_free(&b);
}

static void watch_unlink(struct fs_backend_watch *w)
{
    struct memback *mb = w->mb;
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        mb->watches = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
}

static void store_cb(struct store_watcher *sw, struct store_event *ev,
                     void *data)
{
    struct fs_backend_watch *w = data;
    if (ev == NULL) { /* store_free cancels */
        watch_unlink(w);
        w->cb(w->arg, -ECANCELED, NULL);
        free(w);
        return;
    }
    /* May cancel w (and free it) from inside: touch nothing after. */
    deliver(w, ev);
}

static int mb_watch(void *data, const char *path, uint64_t since,
                    fs_watch_cb cb, void *arg, struct fs_backend_watch **out)
{
    struct memback *mb = data;
    struct fs_backend_watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    w->mb = mb;
    w->cb = cb;
    w->arg = arg;
    *out = NULL;
    /* The store's watch ends at the first history match, so the history is
     * walked one event at a time, then a stream watcher takes over. */
    for (;;) {
        struct store_event *hist = NULL;
        struct store_error err = {0};
        int rv = store_watch(mb->store, path, true, true, since, store_cb, w,
                             &w->sw, &hist, NULL, &err);
        if (rv == STORE_EV2) {
            struct store_buf b;
            struct fs_event fe = {0};
            store_buf_init(&b);
            int code = err.code;
            if (store_error_json(&b, &err) == 0) {
                fe.json = b.data;
                fe.json_len = b.len;
            }
            store_error_clear(&err);
            free(w);
            cb(arg, code, &fe);
            store_buf_free(&b);
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
    w->next = mb->watches;
    if (mb->watches != NULL)
        mb->watches->prev = w;
    mb->watches = w;
    *out = w;
    return 0;
}

static void mb_watch_cancel(void *data, struct fs_backend_watch *w)
{
    struct memback *mb = data;
    watch_unlink(w);
    store_watcher_cancel(mb->store, w->sw);
    free(w);
}

/* One process, one store: every read is already linearizable. */
static int mb_barrier(void *data, fs_write_cb cb, void *arg)
{
    struct memback *mb = data;
    cb(arg, mb->down ? -EIO : 0, NULL);
    return 0;
}

static uint64_t mb_index(void *data)
{
    struct memback *mb = data;
    return store_index(mb->store);
}

const struct fs_backend_ops memback_ops = {
    .get = mb_get,
    .list = mb_list,
    .set = mb_set,
    .del = mb_del,
    .post = mb_post,
    .rename = mb_rename,
    .watch = mb_watch,
    .watch_cancel = mb_watch_cancel,
    .index = mb_index,
    .barrier = mb_barrier,
};

static void expire_cb(uv_timer_t *t)
{
    struct memback *mb = t->data;
    store_expire(mb->store, now_ns());
}

struct memback *memback_new(uv_loop_t *loop)
{
    struct memback *mb = calloc(1, sizeof(*mb));
    if (mb == NULL)
        return NULL;
    mb->store = store_new();
    if (mb->store == NULL) {
        free(mb);
        return NULL;
    }
    uv_timer_init(loop, &mb->expire);
    mb->expire.data = mb;
    /* raftd expires through SYNC entries; a test store just polls. */
    uv_timer_start(&mb->expire, expire_cb, 100, 100);
    return mb;
}

static void expire_closed(uv_handle_t *h)
{
    free(h->data);
}

void memback_close(struct memback *mb)
{
    store_free(mb->store); /* cancels every watch with -ECANCELED */
    mb->store = NULL;
    uv_close((uv_handle_t *)&mb->expire, expire_closed);
}

static void ignore_write(void *arg, int status, const struct fs_meta *m)
{
    *(int *)arg = status;
}

int memback_control(struct memback *mb, const char *line)
{
    char cmd[16], a[4096], b[4096];
    int status = 0;
    int n = sscanf(line, "%15s %4095s", cmd, a);
    if (n < 2)
        return -EINVAL;
    const char *rest = line + strlen(cmd) + 1 + strlen(a);
    if (*rest == ' ')
        rest++;
    if (strcmp(cmd, "down") == 0) {
        mb->down = atoi(a) != 0;
    } else if (strcmp(cmd, "fail") == 0) {
        mb->fail_next = atoi(a);
    } else if (strcmp(cmd, "set") == 0) {
        struct fs_set_args s = {.path = a, .value = rest,
                                .value_len = strlen(rest), .prev_exist = -1};
        mb_set(mb, &s, ignore_write, &status);
    } else if (strcmp(cmd, "mkdir") == 0) {
        struct fs_set_args s = {.path = a, .dir = true, .prev_exist = 0};
        mb_set(mb, &s, ignore_write, &status);
    } else if (strcmp(cmd, "ttl") == 0) {
        struct fs_set_args s = {.path = a, .value = "", .prev_exist = -1,
                                .ttl = atoll(rest)};
        mb_set(mb, &s, ignore_write, &status);
    } else if (strcmp(cmd, "rm") == 0) {
        mb_del(mb, a, false, false, ignore_write, &status);
    } else if (strcmp(cmd, "rmdir") == 0) {
        mb_del(mb, a, true, true, ignore_write, &status);
    } else if (strcmp(cmd, "mv") == 0) {
        if (sscanf(rest, "%4095s", b) != 1)
            return -EINVAL;
        mb_rename(mb, a, b, ignore_write, &status);
    } else if (strcmp(cmd, "seq") == 0) {
        long count = atol(rest);
        for (long i = 0; i < count && status == 0; i++) {
            char key[4200], val[32];
            snprintf(key, sizeof(key), "%s/%ld", a, i);
            snprintf(val, sizeof(val), "%ld", i);
            struct fs_set_args s = {.path = key, .value = val,
                                    .value_len = strlen(val),
                                    .prev_exist = -1};
            mb_set(mb, &s, ignore_write, &status);
        }
    } else {
        return -EINVAL;
    }
    return status;
}
