/* memback.c - the fs.h backend over an in-process store, for tests and the
 * etcfs-memfs program: each operation is one store_apply (as raftd would
 * apply the committed entry) with the wall clock as the entry's time. */
#include "memback.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs_store.h"
#include "store.h"

struct memback {
    struct store *store;
    bool down; /* control "down 1": every operation fails with -EIO */
    int fail_next; /* control "fail CODE": the next write fails so */
    uv_timer_t expire;
};

static int apply(struct memback *mb, const struct store_request *r,
                 struct store_event **ev, int64_t t)
{
    struct store_error err = {0};
    int rv = store_apply(mb->store, r, t, ev, &err);
    rv = fs_store_status(rv, &err);
    store_error_clear(&err);
    return rv;
}

/* Reads and watches come from the store as they are (fs_store.c); a
 * backend marked down fails them with -EIO. */
static int mb_get(void *data, const char *path, fs_get_cb cb, void *arg)
{
    struct memback *mb = data;
    if (mb->down) {
        cb(arg, -EIO, NULL, NULL, 0);
        return 0;
    }
    return fs_store_get(mb->store, path, cb, arg);
}

static int mb_list(void *data, const char *path, fs_list_cb cb, void *arg)
{
    struct memback *mb = data;
    if (mb->down) {
        cb(arg, -EIO, NULL, NULL, 0);
        return 0;
    }
    return fs_store_list(mb->store, path, cb, arg);
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
        fs_store_meta(&m, &ev->node);
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
    int64_t t = fs_store_now_ns();
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
    int64_t t = fs_store_now_ns();
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
    int64_t t = fs_store_now_ns();
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
    fs_store_meta(&m, &ev->node);
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
    int64_t t = fs_store_now_ns();
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

static int mb_watch(void *data, const char *path, uint64_t since,
                    fs_watch_cb cb, void *arg, struct fs_backend_watch **out)
{
    struct memback *mb = data;
    return fs_store_watch(mb->store, path, since, cb, arg, out);
}

static void mb_watch_cancel(void *data, struct fs_backend_watch *w)
{
    struct memback *mb = data;
    fs_store_watch_cancel(mb->store, w);
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
    store_expire(mb->store, fs_store_now_ns());
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
