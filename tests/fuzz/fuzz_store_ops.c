/* Fuzz the store's operations: a byte string is a program of writes,
 * reads, watches, expiries and renames over a small key space. Nothing may
 * crash or leak; after the program, a save/load round trip must reproduce
 * the same tree, index and TTL state. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mem_image.h"
#include "store.h"

static const char *const paths[] = {
    "/",     "/a",     "/a/b",   "/a/_h",  "/a/b/c", "/b",
    "/_x",   "/_x/y",  "/q",     "/a/b/d", "/c/../a", "//b//",
};
#define NPATHS (sizeof(paths) / sizeof(paths[0]))

struct wstate {
    struct store *s;
    int events;
};

static void on_event(struct store_watcher *w, struct store_event *ev,
                     void *data)
{
    struct wstate *st = data;
    if (ev == NULL)
        return;
    struct store_buf b;
    store_buf_init(&b);
    if (store_event_json(&b, ev) != 0 || b.len == 0)
        abort();
    store_buf_free(&b);
    /* Drop every third stream delivery, as a slow consumer would. */
    if (++st->events % 3 == 0)
        store_watcher_cancel(st->s, w);
}

static char *dump(struct store *s)
{
    struct store_event *ev;
    if (store_read(s, "/", true, 0, &ev, NULL) != 0)
        abort();
    struct store_buf b;
    store_buf_init(&b);
    if (store_event_json(&b, ev) != 0)
        abort();
    store_event_unref(ev);
    return b.data;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct store *s = store_new();
    if (s == NULL)
        return 0;
    struct wstate st = {s, 0};
    int64_t now = 1800000000000000000LL;
    for (size_t i = 0; i + 3 < size; i += 4) {
        uint8_t op = data[i], a = data[i + 1], b = data[i + 2],
                c = data[i + 3];
        const char *p = paths[a % NPATHS];
        const char *p2 = paths[b % NPATHS];
        const char val[2] = {(char)c, (char)(c ^ 0x80)};
        int64_t exp = (c & 3) ? now + (int64_t)(c % 5) * 1000000000LL : 0;
        struct store_event *ev = NULL;
        struct store_error err = {0};
        struct store_request r = {0};
        r.prev_exist = (b & 3) == 3 ? -1 : (b & 1);
        r.path = p;
        r.val = val;
        r.val_len = c % 3;
        r.dir = (c & 8) != 0;
        r.prev_value = val;
        r.prev_value_len = (b & 4) ? 1 : 0;
        r.prev_index = (b & 8) ? c : 0;
        r.expiration = exp;
        r.recursive = (c & 16) != 0;
        r.refresh = (b & 32) && (c & 32);
        r.time = now;
        r.new_path = p2;
        switch (op % 10) {
        case 0:
        case 1:
        case 2:
            r.method = STORE_METHOD_PUT;
            break;
        case 3:
            r.method = STORE_METHOD_POST;
            break;
        case 4:
            r.method = STORE_METHOD_DELETE;
            break;
        case 5:
            r.method = STORE_METHOD_QGET;
            break;
        case 6:
            r.method = STORE_METHOD_RENAME;
            break;
        case 7:
            now += (int64_t)c * 50000000LL;
            r.method = STORE_METHOD_SYNC;
            r.time = now;
            break;
        default: {
            struct store_watcher *w;
            uint64_t since = (b & 1) ? 0 : c;
            if (store_watch(s, p, c & 1, c & 2, since, on_event, &st, &w, &ev,
                            NULL, &err) == 0)
                store_event_unref(ev);
            store_error_clear(&err);
            continue;
        }
        }
        int rv = store_apply(s, &r, now, &ev, &err);
        if (rv == 0 && ev) {
            struct store_buf bb;
            store_buf_init(&bb);
            if (store_event_json(&bb, ev) != 0)
                abort();
            store_buf_free(&bb);
        } else if (rv == STORE_EV2) {
            struct store_buf bb;
            store_buf_init(&bb);
            if (store_error_json(&bb, &err) != 0)
                abort();
            store_buf_free(&bb);
        } else if (rv != 0) {
            abort();
        }
        store_event_unref(ev);
        store_error_clear(&err);
    }
    struct mem m = {0};
    if (store_save(s, mem_write, &m) != 0)
        abort();
    struct store *t = store_new();
    if (t == NULL || store_load(t, mem_read, &m) != 0)
        abort();
    char *d1 = dump(s), *d2 = dump(t);
    if (strcmp(d1, d2) != 0 || store_index(s) != store_index(t) ||
        store_next_expiration(s) != store_next_expiration(t))
        abort();
    free(d1);
    free(d2);
    /* Both expire the same keys at the same indexes. */
    if (store_expire(s, INT64_MAX) != store_expire(t, INT64_MAX) ||
        store_index(s) != store_index(t))
        abort();
    free(m.p);
    store_free(t);
    store_free(s);
    return 0;
}
