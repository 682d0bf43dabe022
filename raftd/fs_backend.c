/* fs_backend.c - the fs.h backend of raftd --mount: local reads and
 * watches on the member's store (from its loop, so no locks), writes as
 * Raft proposals. "No leader" (-EAGAIN) is retried every 50 ms for a
 * bounded time, then the filesystem call fails with EIO, never hangs. */
#include "fs_backend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "fs_store.h"
#include "raftd.h"
#include "store.h"

#define RETRY_MS 50

enum { OP_WRITE, OP_POST, OP_WRITABLE };

/* One write in flight (the request is copied so it can be re-proposed),
 * or an open waiting for a leader (OP_WRITABLE, no request). */
struct fs_op {
    struct raftd_fs *b;
    struct fs_op *prev, *next;
    struct raftd_write_req wr;
    uv_timer_t timer;
    struct store_request r;
    char *path, *new_path;
    void *val, *prev_value;
    int64_t deadline_ns;
    int kind; /* OP_WRITE, OP_POST, OP_WRITABLE */
    fs_write_cb wcb;
    fs_post_cb pcb;
    void *arg;
    bool in_raft; /* raftd owns the completion */
};

struct raftd_fs {
    struct raftd *n;
    uv_loop_t *loop;
    unsigned wait_ms;
    struct fs_op *ops;
    unsigned live; /* ops not yet freed (their timers may be closing) */
    bool closing;
};

/* ---- reads and watches: the local member's view (fs_store.c) ---- */

static int b_get(void *data, const char *path, fs_get_cb cb, void *arg)
{
    struct raftd_fs *b = data;
    return fs_store_get(raftd_store(b->n), path, cb, arg);
}

static int b_list(void *data, const char *path, fs_list_cb cb, void *arg)
{
    struct raftd_fs *b = data;
    return fs_store_list(raftd_store(b->n), path, cb, arg);
}

static uint64_t b_index(void *data)
{
    struct raftd_fs *b = data;
    return store_index(raftd_store(b->n));
}

static int b_watch(void *data, const char *path, uint64_t since,
                   fs_watch_cb cb, void *arg, struct fs_backend_watch **out)
{
    struct raftd_fs *b = data;
    return fs_store_watch(raftd_store(b->n), path, since, cb, arg, out);
}

static void b_watch_cancel(void *data, struct fs_backend_watch *w)
{
    struct raftd_fs *b = data;
    fs_store_watch_cancel(raftd_store(b->n), w);
}

/* ---- writes through Raft ---- */

static void op_timer_closed(uv_handle_t *h)
{
    struct fs_op *op = h->data;
    struct raftd_fs *b = op->b;
    free(op->path);
    free(op->new_path);
    free(op->val);
    free(op->prev_value);
    free(op);
    if (--b->live == 0 && b->closing)
        free(b);
}

/* Complete op once: unlink, call back, free (after the timer closes). */
static void op_done(struct fs_op *op, int status, struct store_event *ev)
{
    struct raftd_fs *b = op->b;
    struct fs_meta m = {0};
    if (op->prev != NULL)
        op->prev->next = op->next;
    else
        b->ops = op->next;
    if (op->next != NULL)
        op->next->prev = op->prev;
    if (ev != NULL)
        fs_store_meta(&m, &ev->node);
    if (op->kind == OP_POST)
        op->pcb(op->arg, status, status == 0 && ev ? ev->node.key : NULL,
                status == 0 ? &m : NULL);
    else
        op->wcb(op->arg, status, status == 0 && ev ? &m : NULL);
    uv_close((uv_handle_t *)&op->timer, op_timer_closed);
}

static void op_propose(struct fs_op *op);

static void write_cb(struct raftd_write_req *wr, int status,
                     struct store_event *ev, const struct store_error *err)
{
    struct fs_op *op = wr->data;
    op->in_raft = false;
    if (status == 0 && ev == NULL)
        status = err != NULL && err->code != 0 ? err->code : -EIO;
    op_done(op, status, status == 0 ? ev : NULL);
}

static void retry_cb(uv_timer_t *t)
{
    op_propose(t->data);
}

static void op_propose(struct fs_op *op)
{
    struct raftd_fs *b = op->b;
    int64_t t = fs_store_now_ns();
    if (b->closing) {
        op_done(op, -ECANCELED, NULL);
        return;
    }
    int rv;
    if (op->kind == OP_WRITABLE) {
        if (raftd_leader(b->n) != 0) {
            op_done(op, 0, NULL);
            return;
        }
        rv = -EAGAIN;
    } else {
        op->wr.data = op;
        rv = raftd_write(b->n, &op->wr, &op->r, write_cb);
        if (rv == 0) {
            op->in_raft = true;
            return;
        }
    }
    if (rv == -EAGAIN && t < op->deadline_ns) {
        uv_timer_start(&op->timer, retry_cb, RETRY_MS, 0);
        return;
    }
    /* No leader within the bound, or the WAL failed: EIO, not a hang. */
    op_done(op, rv == -ENOMEM ? -ENOMEM : -EIO, NULL);
}

static char *dup_bytes(const void *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d != NULL) {
        if (n > 0)
            memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

static struct fs_op *op_new(struct raftd_fs *b, const char *path)
{
    struct fs_op *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->b = b;
    op->path = strdup(path);
    if (op->path == NULL) {
        free(op);
        return NULL;
    }
    op->r.path = op->path;
    op->r.prev_exist = -1;
    op->deadline_ns = fs_store_now_ns() + (int64_t)b->wait_ms * 1000000;
    return op;
}

/* Start op (taking it): 0, or -ENOMEM with op freed and no callback. */
static int op_start(struct raftd_fs *b, struct fs_op *op)
{
    b->live++;
    uv_timer_init(b->loop, &op->timer);
    op->timer.data = op;
    op->next = b->ops;
    if (b->ops != NULL)
        b->ops->prev = op;
    b->ops = op;
    op_propose(op);
    return 0;
}

static void op_free_unstarted(struct fs_op *op)
{
    free(op->path);
    free(op->new_path);
    free(op->val);
    free(op->prev_value);
    free(op);
}

static int b_set(void *data, const struct fs_set_args *a, fs_write_cb cb,
                 void *arg)
{
    struct raftd_fs *b = data;
    struct fs_op *op = op_new(b, a->path);
    if (op == NULL)
        return -ENOMEM;
    op->r.method = STORE_METHOD_PUT;
    op->r.dir = a->dir;
    if (!a->dir) {
        op->val = dup_bytes(a->value, a->value_len);
        op->r.val = op->val;
        op->r.val_len = a->value_len;
    }
    if (a->prev_value_len > 0) {
        op->prev_value = dup_bytes(a->prev_value, a->prev_value_len);
        op->r.prev_value = op->prev_value;
        op->r.prev_value_len = a->prev_value_len;
    }
    op->r.prev_index = a->prev_index;
    op->r.prev_exist = a->prev_exist;
    op->r.expiration = a->ttl > 0 ? fs_store_now_ns() + a->ttl * 1000000000 : 0;
    if ((!a->dir && op->val == NULL) ||
        (a->prev_value_len > 0 && op->prev_value == NULL)) {
        op_free_unstarted(op);
        return -ENOMEM;
    }
    op->wcb = cb;
    op->arg = arg;
    return op_start(b, op);
}

static int b_del(void *data, const char *path, bool dir, bool recursive,
                 fs_write_cb cb, void *arg)
{
    struct raftd_fs *b = data;
    struct fs_op *op = op_new(b, path);
    if (op == NULL)
        return -ENOMEM;
    op->r.method = STORE_METHOD_DELETE;
    op->r.dir = dir;
    op->r.recursive = recursive;
    op->wcb = cb;
    op->arg = arg;
    return op_start(b, op);
}

static int b_post(void *data, const char *dir_path, const void *value,
                  size_t value_len, fs_post_cb cb, void *arg)
{
    struct raftd_fs *b = data;
    struct fs_op *op = op_new(b, dir_path);
    if (op == NULL)
        return -ENOMEM;
    op->r.method = STORE_METHOD_POST;
    op->val = dup_bytes(value, value_len);
    if (op->val == NULL) {
        op_free_unstarted(op);
        return -ENOMEM;
    }
    op->r.val = op->val;
    op->r.val_len = value_len;
    op->kind = OP_POST;
    op->pcb = cb;
    op->arg = arg;
    return op_start(b, op);
}

static int b_rename(void *data, const char *old_path, const char *new_path,
                    fs_write_cb cb, void *arg)
{
    struct raftd_fs *b = data;
    struct fs_op *op = op_new(b, old_path);
    if (op == NULL)
        return -ENOMEM;
    op->new_path = strdup(new_path);
    if (op->new_path == NULL) {
        op_free_unstarted(op);
        return -ENOMEM;
    }
    op->r.method = STORE_METHOD_RENAME;
    op->r.new_path = op->new_path;
    op->wcb = cb;
    op->arg = arg;
    return op_start(b, op);
}

/* An open for writing: at once while a leader is known, else polled like
 * a write's -EAGAIN, and EIO after the same bounded wait. */
static int b_writable(void *data, fs_write_cb cb, void *arg)
{
    struct raftd_fs *b = data;
    if (raftd_leader(b->n) != 0) {
        cb(arg, 0, NULL);
        return 0;
    }
    struct fs_op *op = op_new(b, "");
    if (op == NULL)
        return -ENOMEM;
    op->kind = OP_WRITABLE;
    op->wcb = cb;
    op->arg = arg;
    return op_start(b, op);
}

static void b_served(void *data)
{
    struct raftd_fs *b = data;
    raftd_stay_hot(b->n);
}

/* -o quorum: Raft's ReadIndex before an open reads the local store. The
 * wait is bounded like a write's: EIO after the leader wait, even if
 * raftd answers later (the request then stays alive until it does). */
struct fs_barrier {
    struct raftd_read_req rr;
    uv_timer_t timer;
    fs_write_cb cb;
    void *arg;
    bool answered; /* cb called */
    bool read_done; /* raftd called back */
};

static void barrier_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void barrier_answer(struct fs_barrier *br, int status)
{
    if (br->answered)
        return;
    br->answered = true;
    br->cb(br->arg, status, NULL);
}

static void barrier_timeout(uv_timer_t *t)
{
    barrier_answer(t->data, -EIO);
}

static void barrier_cb(struct raftd_read_req *rr, int status)
{
    struct fs_barrier *br = rr->data;
    br->read_done = true;
    barrier_answer(br, status == -EAGAIN ? -EIO : status);
    uv_close((uv_handle_t *)&br->timer, barrier_timer_closed);
}

static int b_barrier(void *data, fs_write_cb cb, void *arg)
{
    struct raftd_fs *b = data;
    struct fs_barrier *br = calloc(1, sizeof(*br));
    if (br == NULL)
        return -ENOMEM;
    br->cb = cb;
    br->arg = arg;
    br->rr.data = br;
    /* The timer first: raftd may answer inside raftd_read_index. */
    uv_timer_init(b->loop, &br->timer);
    br->timer.data = br;
    int rv = raftd_read_index(b->n, &br->rr, barrier_cb);
    if (rv != 0) {
        br->answered = true; /* the contract: no callback after an error */
        uv_close((uv_handle_t *)&br->timer, barrier_timer_closed);
        return rv == -EAGAIN ? -EIO : rv; /* no leader: EIO, not a hang */
    }
    if (!br->read_done)
        uv_timer_start(&br->timer, barrier_timeout, b->wait_ms, 0);
    return 0;
}

const struct fs_backend_ops raftd_fs_ops = {
    .get = b_get,
    .list = b_list,
    .set = b_set,
    .del = b_del,
    .post = b_post,
    .rename = b_rename,
    .watch = b_watch,
    .watch_cancel = b_watch_cancel,
    .index = b_index,
    .barrier = b_barrier,
    .writable = b_writable,
    .served = b_served,
};

int raftd_fs_new(struct raftd *n, uv_loop_t *loop, unsigned leader_wait_ms,
                 struct raftd_fs **out)
{
    struct raftd_fs *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return -ENOMEM;
    b->n = n;
    b->loop = loop;
    b->wait_ms = leader_wait_ms ? leader_wait_ms : RAFTD_FS_LEADER_WAIT_MS;
    *out = b;
    return 0;
}

void raftd_fs_close(struct raftd_fs *b)
{
    b->closing = true;
    /* Writes waiting for a leader end now; those inside raftd end when
     * raftd_close cancels them (-ECANCELED), freeing b with the last. */
    for (struct fs_op *op = b->ops, *next; op != NULL; op = next) {
        next = op->next;
        if (!op->in_raft) {
            uv_timer_stop(&op->timer);
            op_done(op, -ECANCELED, NULL);
        }
    }
    if (b->live == 0)
        free(b); /* no op and no timer left */
}
