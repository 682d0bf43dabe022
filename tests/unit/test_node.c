/* Unit tests of the raftd node loop (raftd/node.c) on a real libuv loop and
 * a temp data dir: writes are applied and answered after their fsync with
 * etcd's index numbering, state survives a restart (WAL replay and
 * snapshot + replay), ReadIndex reads complete, TTL keys expire through
 * SYNC entries. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "raftd.h"
#include "snap.h"
#include "store.h"
#include "test.h"

struct fixture {
    uv_loop_t loop;
    struct raftd_config cfg;
    struct raftd_log log;
    struct raftd *n;
    char dir[64];
};

static int fixture_config(struct fixture *f, const char *snapcount)
{
    char dd[128], err[256];
    int code;
    snprintf(dd, sizeof(dd), "--data-dir=%s/d", f->dir);
    {
        char sc[64];
        char *argv[] = {"raftd", dd,
                        "--listen-client-urls=http://127.0.0.1:0",
                        "--advertise-client-urls=http://127.0.0.1:2379",
                        sc, "--log-level=error"};
        snprintf(sc, sizeof(sc), "--snapshot-count=%s", snapcount);
        return raftd_config_parse(&f->cfg, 6, argv, NULL, err, sizeof(err),
                                  &code);
    }
}

static int fixture_start(struct fixture *f, const char *snapcount)
{
    int rv = fixture_config(f, snapcount);
    if (rv != 0)
        return rv;
    uv_loop_init(&f->loop);
    raftd_log_init(&f->log, stderr, RAFTD_LOG_ERROR);
    rv = raftd_new(&f->loop, &f->cfg, &f->log, &f->n);
    if (rv != 0)
        return rv;
    rv = raftd_start(f->n);
    /* Wait until the replayed log is applied (bounded by the WAL's own
     * fsync latency: a few loop turns). */
    for (int i = 0; rv == 0 && i < 10000 && !raftd_is_ready(f->n); i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    return rv == 0 && !raftd_is_ready(f->n) ? -ETIMEDOUT : rv;
}

static void closed_cb(void *arg)
{
    *(int *)arg = 1;
}

static void fixture_stop(struct fixture *f)
{
    int closed = 0;
    raftd_close(f->n, closed_cb, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_loop_close(&f->loop);
    raftd_config_free(&f->cfg);
}

static void rm_rf(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", dir);
}

struct wresult {
    int done;
    int status;
    uint64_t index;
    int action;
    int ecode;
};

static void write_cb(struct raftd_write_req *req, int status,
                     struct store_event *ev, const struct store_error *err)
{
    struct wresult *r = req->data;
    r->done = 1;
    r->status = status;
    if (ev) {
        r->index = ev->node.modified_index;
        r->action = (int)ev->action;
    }
    if (err)
        r->ecode = err->code;
}

static int do_put(struct fixture *f, const char *path, const char *val,
                  int64_t expiration, struct wresult *res)
{
    struct raftd_write_req req;
    struct store_request r;
    int rv;
    memset(&r, 0, sizeof(r));
    memset(res, 0, sizeof(*res));
    r.method = STORE_METHOD_PUT;
    r.path = path;
    r.val = val;
    r.val_len = strlen(val);
    r.prev_exist = -1;
    r.expiration = expiration;
    req.data = res;
    rv = raftd_write(f->n, &req, &r, write_cb);
    if (rv != 0)
        return rv;
    while (!res->done)
        uv_run(&f->loop, UV_RUN_ONCE);
    return res->status;
}

static int get_value(struct fixture *f, const char *path, char *out,
                     size_t outlen)
{
    struct store_event *ev = NULL;
    struct store_error err;
    int rv;
    memset(&err, 0, sizeof(err));
    rv = store_get(raftd_store(f->n), path, false, false, 0, &ev, &err);
    if (rv == STORE_EV2) {
        rv = -err.code;
        store_error_clear(&err);
        return rv;
    }
    if (rv != 0)
        return rv;
    snprintf(out, outlen, "%.*s", (int)ev->node.value_len,
             ev->node.value ? ev->node.value : "");
    store_event_unref(ev);
    return 0;
}

static void poll_timer_cb(uv_timer_t *t)
{
    (void)t;
}

static int make_dir(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_node.XXXXXX");
    return mkdtemp(f->dir) ? 0 : -errno;
}

TEST(write_then_read_with_etcd_indexes)
{
    struct fixture f;
    struct wresult res;
    char v[64];
    ASSERT_OK(make_dir(&f));
    ASSERT_OK(fixture_start(&f, "100000"));
    ASSERT(raftd_client_port(f.n) > 0);
    ASSERT_OK(do_put(&f, "/a", "1", 0, &res));
    /* etcd's fresh cluster holds 3 internal store entries first. */
    ASSERT_EQ(res.index, 4);
    ASSERT_EQ(res.action, STORE_ACTION_SET);
    ASSERT_OK(get_value(&f, "/a", v, sizeof(v)));
    ASSERT_STR_EQ(v, "1");
    memset(&res, 0, sizeof(res));
    {
        struct raftd_write_req req;
        struct store_request r;
        memset(&r, 0, sizeof(r));
        r.method = STORE_METHOD_PUT;
        r.path = "/a";
        r.val = "2";
        r.val_len = 1;
        r.prev_exist = 0; /* create: must fail, key exists */
        req.data = &res;
        ASSERT_OK(raftd_write(f.n, &req, &r, write_cb));
        while (!res.done)
            uv_run(&f.loop, UV_RUN_ONCE);
        ASSERT_EQ(res.status, 0);
        ASSERT_EQ(res.ecode, 105);
    }
    fixture_stop(&f);
    rm_rf(f.dir);
}

TEST(restart_replays_wal)
{
    struct fixture f;
    struct wresult res;
    char v[64];
    ASSERT_OK(make_dir(&f));
    ASSERT_OK(fixture_start(&f, "100000"));
    ASSERT_OK(do_put(&f, "/k1", "v1", 0, &res));
    ASSERT_OK(do_put(&f, "/k2", "v2", 0, &res));
    fixture_stop(&f);
    ASSERT_OK(fixture_start(&f, "100000"));
    ASSERT_OK(get_value(&f, "/k1", v, sizeof(v)));
    ASSERT_STR_EQ(v, "v1");
    ASSERT_OK(get_value(&f, "/k2", v, sizeof(v)));
    ASSERT_STR_EQ(v, "v2");
    /* The restart published attributes again (as etcd does): one more
     * store index before the next user write. */
    ASSERT_OK(do_put(&f, "/k3", "v3", 0, &res));
    ASSERT_EQ(res.index, 7);
    fixture_stop(&f);
    rm_rf(f.dir);
}

TEST(snapshot_then_restart)
{
    struct fixture f;
    struct wresult res;
    char v[64], key[32], snapdir[128];
    int snaps = 0;
    ASSERT_OK(make_dir(&f));
    ASSERT_OK(fixture_start(&f, "10"));
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "/s/%d", i);
        ASSERT_OK(do_put(&f, key, key, 0, &res));
    }
    /* The periodic snapshot (every 10 entries) lands on disk: poll the
     * snapshot directory while the loop runs, with a deadline. */
    {
        struct snap_options so;
        struct snap_id *ids = NULL;
        size_t nids = 0;
        uv_timer_t t;
        snprintf(snapdir, sizeof(snapdir), "%s/d/member/snap", f.dir);
        snap_options_init(&so);
        so.dir = snapdir;
        uv_timer_init(&f.loop, &t);
        uv_timer_start(&t, poll_timer_cb, 5, 5);
        for (int i = 0; i < 2000 && nids == 0; i++) {
            uv_run(&f.loop, UV_RUN_ONCE);
            free(ids);
            ids = NULL;
            if (snap_list(&so, &ids, &nids) != 0)
                nids = 0;
        }
        free(ids);
        uv_close((uv_handle_t *)&t, NULL);
        snaps = nids > 0;
    }
    fixture_stop(&f);
    ASSERT(snaps);
    ASSERT_OK(fixture_start(&f, "10"));
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "/s/%d", i);
        ASSERT_OK(get_value(&f, key, v, sizeof(v)));
        ASSERT_STR_EQ(v, key);
    }
    fixture_stop(&f);
    rm_rf(f.dir);
}

static void read_cb(struct raftd_read_req *req, int status)
{
    *(int *)req->data = status == 0 ? 1 : -1;
}

TEST(read_index_completes)
{
    struct fixture f;
    struct raftd_read_req rr;
    int done = 0;
    uv_timer_t guard;
    ASSERT_OK(make_dir(&f));
    ASSERT_OK(fixture_start(&f, "100000"));
    rr.data = &done;
    ASSERT_OK(raftd_read_index(f.n, &rr, read_cb));
    uv_timer_init(&f.loop, &guard);
    uv_timer_start(&guard, poll_timer_cb, 5000, 0);
    while (done == 0 && uv_is_active((uv_handle_t *)&guard))
        uv_run(&f.loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&guard, NULL);
    ASSERT_EQ(done, 1);
    fixture_stop(&f);
    rm_rf(f.dir);
}

TEST(ttl_expires_through_sync)
{
    struct fixture f;
    struct wresult res;
    struct timespec ts;
    char v[64];
    uv_timer_t tick;
    int gone = 0;
    ASSERT_OK(make_dir(&f));
    ASSERT_OK(fixture_start(&f, "100000"));
    clock_gettime(CLOCK_REALTIME, &ts);
    ASSERT_OK(do_put(&f, "/ttl", "x", (int64_t)ts.tv_sec * 1000000000 +
                                          ts.tv_nsec + 300000000LL,
                     &res));
    ASSERT_OK(get_value(&f, "/ttl", v, sizeof(v)));
    uv_timer_init(&f.loop, &tick);
    uv_timer_start(&tick, poll_timer_cb, 50, 50);
    for (int i = 0; i < 100 && !gone; i++) {
        uv_run(&f.loop, UV_RUN_ONCE);
        gone = get_value(&f, "/ttl", v, sizeof(v)) == -100;
    }
    uv_close((uv_handle_t *)&tick, NULL);
    ASSERT(gone);
    fixture_stop(&f);
    rm_rf(f.dir);
}

/* Close with a write still in flight: its callback runs exactly once (done
 * or cancelled), close completes, and close took a snapshot (>= 1000 new
 * entries) that the next start loads. */
TEST(close_in_flight_and_shutdown_snapshot)
{
    struct fixture f;
    struct wresult res, late;
    struct raftd_write_req req;
    struct store_request r;
    char v[64], key[32], cmd[256];
    ASSERT_OK(make_dir(&f));
    ASSERT_OK(fixture_start(&f, "100000"));
    for (int i = 0; i < 1100; i++) {
        snprintf(key, sizeof(key), "/c/%d", i);
        ASSERT_OK(do_put(&f, key, "v", 0, &res));
    }
    memset(&r, 0, sizeof(r));
    memset(&late, 0, sizeof(late));
    r.method = STORE_METHOD_PUT;
    r.path = "/late";
    r.val = "x";
    r.val_len = 1;
    r.prev_exist = -1;
    req.data = &late;
    ASSERT_OK(raftd_write(f.n, &req, &r, write_cb));
    fixture_stop(&f);
    ASSERT_EQ(late.done, 1);
    snprintf(cmd, sizeof(cmd), "ls %s/d/member/snap/*.snap >/dev/null 2>&1",
             f.dir);
    ASSERT_EQ(system(cmd), 0);
    ASSERT_OK(fixture_start(&f, "100000"));
    ASSERT_OK(get_value(&f, "/c/1099", v, sizeof(v)));
    ASSERT_STR_EQ(v, "v");
    fixture_stop(&f);
    rm_rf(f.dir);
}

TEST_MAIN(TEST_ENTRY(write_then_read_with_etcd_indexes),
          TEST_ENTRY(restart_replays_wal), TEST_ENTRY(snapshot_then_restart),
          TEST_ENTRY(read_index_completes), TEST_ENTRY(ttl_expires_through_sync),
          TEST_ENTRY(close_in_flight_and_shutdown_snapshot))
