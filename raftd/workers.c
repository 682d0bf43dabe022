/* HTTP worker threads (--http-threads). Each runs its own libuv loop and
 * HTTP server. The loop thread accepts client connections and serves
 * their first request; a connection that then sends a plain read of
 * /v2/keys moves, with that request, to an HTTP thread (round robin),
 * which answers plain reads itself from the store under the read side of
 * n->store_lock. Anything else it gets (a write, a watch, a quorum read,
 * another endpoint) moves the connection back to the loop thread for
 * good. A read-mostly client thus costs the loop thread nothing, while a
 * client that opens a connection per request, or writes, never moves.
 * See docs/raftd.md, "HTTP threads". */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "node_int.h"

struct raftd_worker {
    struct raftd *n;
    uv_loop_t loop;
    uv_async_t stop;
    uv_thread_t tid;
    struct http_server *http;
};

static void worker_main(void *arg)
{
    struct raftd_worker *w = arg;
    pthread_setname_np(pthread_self(), "raftd-http");
    uv_run(&w->loop, UV_RUN_DEFAULT);
    api_thread_exit();
}

static void on_stop(uv_async_t *h)
{
    struct raftd_worker *w = h->data;
    http_server_close(w->http, NULL);
    uv_close((uv_handle_t *)&w->stop, NULL);
}

/* A worker whose thread never started: its loop has the server's and the
 * stop handle, which must be closed and run out before the loop closes. */
static void worker_free(struct raftd_worker *w, bool joined)
{
    if (!joined) {
        on_stop(&w->stop);
        uv_run(&w->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&w->loop);
    free(w);
}

static int worker_new(struct raftd *n, struct raftd_worker **out)
{
    struct http_server_config hc = {0};
    struct raftd_worker *w = calloc(1, sizeof(*w));
    int rv;
    if (w == NULL)
        return -ENOMEM;
    w->n = n;
    rv = uv_loop_init(&w->loop);
    if (rv != 0) {
        free(w);
        return rv;
    }
    hc.handler = api_handle_worker;
    hc.data = n;
    rv = http_server_new(&w->loop, &hc, &w->http);
    if (rv != 0) {
        uv_loop_close(&w->loop);
        free(w);
        return rv;
    }
    uv_async_init(&w->loop, &w->stop, on_stop);
    w->stop.data = w;
    rv = uv_thread_create(&w->tid, worker_main, w);
    if (rv != 0) {
        worker_free(w, false);
        return rv;
    }
    *out = w;
    return 0;
}

int workers_start(struct raftd *n)
{
    unsigned count = n->cfg->http_threads;
    pthread_rwlockattr_t attr;
    int rv;

    if (count == 0)
        return 0;
    /* Writers first: a steady stream of reads must not hold off applying
     * the log. */
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    rv = -pthread_rwlock_init(&n->store_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (rv != 0)
        return rv;
    n->store_locking = true;
    n->workers = calloc(count, sizeof(*n->workers));
    if (n->workers == NULL)
        return -ENOMEM;
    for (unsigned i = 0; i < count; i++) {
        rv = worker_new(n, &n->workers[i]);
        if (rv != 0) {
            workers_stop(n);
            return rv;
        }
        n->n_workers++;
    }
    return 0;
}

struct http_server *workers_next(struct raftd *n)
{
    return n->workers[n->next_worker++ % n->n_workers]->http;
}

void workers_stop(struct raftd *n)
{
    for (size_t i = 0; i < n->n_workers; i++) {
        struct raftd_worker *w = n->workers[i];
        uv_async_send(&w->stop);
        uv_thread_join(&w->tid);
        worker_free(w, true);
    }
    free(n->workers);
    n->workers = NULL;
    n->n_workers = 0;
}

size_t workers_connection_count(const struct raftd *n)
{
    size_t count = n->http ? http_server_connection_count(n->http) : 0;
    for (size_t i = 0; i < n->n_workers; i++)
        count += http_server_connection_count(n->workers[i]->http);
    return count;
}
