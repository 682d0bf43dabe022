/* Unit tests of raftd's v2 HTTP API (raftd/api.c, api_misc.c) against an
 * in-process member: a client thread speaks raw HTTP/1.1 over loopback
 * while the test's loop runs the member. Checks routing (301, 404, 405 with
 * Allow, OPTIONS), CORS, parse errors with X-Etcd-Index 0, a write's 201
 * and headers, quorum reads, a long-poll watch and the misc endpoints. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "raftd.h"
#include "test.h"

struct member {
    uv_loop_t loop;
    struct raftd_config cfg;
    struct raftd_log log;
    struct raftd *n;
    char dir[64];
    int port;
};

/* One exchange, run on a helper thread so the loop can serve it. */
struct exchange {
    int port;
    const char *request;
    char response[8192];
    size_t len;
    int done;
    uv_thread_t tid;
};

static void exchange_run(void *arg)
{
    struct exchange *x = arg;
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)x->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    x->len = 0;
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        write(fd, x->request, strlen(x->request)) ==
            (ssize_t)strlen(x->request)) {
        /* Requests say "Connection: close": read to EOF. */
        for (;;) {
            ssize_t r = read(fd, x->response + x->len,
                             sizeof(x->response) - 1 - x->len);
            if (r <= 0)
                break;
            x->len += (size_t)r;
        }
    }
    x->response[x->len] = '\0';
    if (fd >= 0)
        close(fd);
    __atomic_store_n(&x->done, 1, __ATOMIC_RELEASE);
}

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Send request and run the loop until the answer is complete. */
static const char *http(struct member *m, struct exchange *x,
                        const char *request)
{
    uv_timer_t t;
    x->port = m->port;
    x->request = request;
    x->done = 0;
    uv_timer_init(&m->loop, &t);
    uv_timer_start(&t, tick_cb, 5, 5);
    uv_thread_create(&x->tid, exchange_run, x);
    while (!__atomic_load_n(&x->done, __ATOMIC_ACQUIRE))
        uv_run(&m->loop, UV_RUN_ONCE);
    uv_thread_join(&x->tid);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&m->loop, UV_RUN_NOWAIT);
    return x->response;
}

static int member_start(struct member *m)
{
    char dd[128], err[256];
    int code, rv;
    char *argv[] = {"raftd", dd, "--listen-client-urls=http://127.0.0.1:0",
                    "--advertise-client-urls=http://127.0.0.1:2379",
                    "--log-level=error"};
    memset(m, 0, sizeof(*m));
    snprintf(m->dir, sizeof(m->dir), "/tmp/test_api.XXXXXX");
    if (mkdtemp(m->dir) == NULL)
        return -errno;
    snprintf(dd, sizeof(dd), "--data-dir=%s/d", m->dir);
    rv = raftd_config_parse(&m->cfg, 5, argv, NULL, err, sizeof(err), &code);
    if (rv != 0)
        return rv;
    uv_loop_init(&m->loop);
    raftd_log_init(&m->log, stderr, RAFTD_LOG_ERROR);
    rv = raftd_new(&m->loop, &m->cfg, &m->log, &m->n);
    if (rv == 0)
        rv = raftd_start(m->n);
    for (int i = 0; rv == 0 && i < 10000 && !raftd_is_ready(m->n); i++)
        uv_run(&m->loop, UV_RUN_ONCE);
    m->port = rv == 0 ? raftd_client_port(m->n) : 0;
    return rv;
}

static void closed_cb(void *arg)
{
    *(int *)arg = 1;
}

static void member_stop(struct member *m)
{
    char cmd[128];
    int closed = 0;
    raftd_close(m->n, closed_cb, &closed);
    while (!closed)
        uv_run(&m->loop, UV_RUN_ONCE);
    uv_run(&m->loop, UV_RUN_DEFAULT);
    uv_loop_close(&m->loop);
    raftd_config_free(&m->cfg);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", m->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", m->dir);
}

#define REQ(method, target, extra)                                            \
    method " " target " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" extra  \
           "\r\n"

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static const char *body_of(const char *resp)
{
    const char *b = strstr(resp, "\r\n\r\n");
    return b ? b + 4 : "";
}

TEST(routing_cors_and_errors)
{
    struct member m;
    struct exchange x;
    const char *r;
    ASSERT_OK(member_start(&m));

    r = http(&m, &x, REQ("GET", "/nothere", ""));
    ASSERT(starts(r, "HTTP/1.1 404 Not Found\r\n"));
    ASSERT(strstr(r, "Access-Control-Allow-Origin: *\r\n") != NULL);
    ASSERT(strstr(r, "X-Content-Type-Options: nosniff\r\n") != NULL);
    ASSERT_STR_EQ(body_of(r), "404 page not found\n");

    r = http(&m, &x, REQ("PATCH", "/v2/keys/a", ""));
    ASSERT(starts(r, "HTTP/1.1 405 Method Not Allowed\r\n"));
    ASSERT(strstr(r, "Allow: HEAD,GET,PUT,POST,DELETE\r\n") != NULL);
    ASSERT_STR_EQ(body_of(r), "Method Not Allowed\n");

    r = http(&m, &x, REQ("GET", "/v2/keys//a?x=1", ""));
    ASSERT(starts(r, "HTTP/1.1 301 Moved Permanently\r\n"));
    ASSERT(strstr(r, "Location: /v2/keys/a?x=1\r\n") != NULL);

    r = http(&m, &x, REQ("OPTIONS", "/v2/keys/a", ""));
    ASSERT(starts(r, "HTTP/1.1 200 OK\r\n"));
    ASSERT(strstr(r, "Access-Control-Allow-Methods: POST, GET, OPTIONS, "
                     "PUT, DELETE\r\n") != NULL);
    ASSERT(strstr(r, "Content-Length: 0\r\n") != NULL);

    r = http(&m, &x, REQ("GET", "/v2/keys/a?recursive=maybe", ""));
    ASSERT(starts(r, "HTTP/1.1 400 Bad Request\r\n"));
    ASSERT(strstr(r, "X-Etcd-Index: 0\r\n") != NULL);
    ASSERT_STR_EQ(body_of(r),
                  "{\"errorCode\":209,\"message\":\"Invalid field\",\"cause\":"
                  "\"invalid value for \\\"recursive\\\"\",\"index\":0}\n");

    r = http(&m, &x, REQ("PUT", "/v2/keys/a?wait=true", ""));
    ASSERT(strstr(body_of(r), "\"wait\\\" can only be used with GET") !=
           NULL);

    r = http(&m, &x, REQ("PUT", "/v2/keys/a?ttl=abc", ""));
    ASSERT(strstr(body_of(r), "\"errorCode\":202") != NULL);

    r = http(&m, &x, REQ("PUT", "/v2/keys/a?prevValue=", ""));
    ASSERT(strstr(body_of(r), "\"errorCode\":201") != NULL);

    r = http(&m, &x, REQ("PUT", "/v2/keys/a?refresh=true&value=x&ttl=5", ""));
    ASSERT(strstr(body_of(r), "\"errorCode\":211") != NULL);
    member_stop(&m);
}

TEST(write_read_quorum_and_watch)
{
    struct member m;
    struct exchange x, w;
    const char *r;
    char cid[40];
    ASSERT_OK(member_start(&m));
    snprintf(cid, sizeof(cid), "X-Etcd-Cluster-Id: %llx\r\n",
             (unsigned long long)raftd_cluster_id_get(m.n));

    r = http(&m, &x,
             "PUT /v2/keys/k HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
             "Content-Type: application/x-www-form-urlencoded\r\n"
             "Content-Length: 7\r\n\r\nvalue=1");
    ASSERT(starts(r, "HTTP/1.1 201 Created\r\n"));
    /* etcd's numbering: three internal entries before the first key. */
    ASSERT(strstr(r, "X-Etcd-Index: 4\r\n") != NULL);
    ASSERT(strstr(r, "X-Raft-Index: 5\r\n") != NULL);
    r = http(&m, &x,
             "PUT /v2/keys/k HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
             "Content-Type: application/x-www-form-urlencoded\r\n"
             "Content-Length: 7\r\n\r\nvalue=2");
    ASSERT(starts(r, "HTTP/1.1 200 OK\r\n"));
    ASSERT(strstr(r, cid) != NULL);
    ASSERT(strstr(r, "X-Raft-Term: ") != NULL);
    ASSERT(strstr(body_of(r), "\"action\":\"set\"") != NULL);
    ASSERT(strstr(body_of(r), "\"prevNode\"") != NULL);

    r = http(&m, &x,
             "PUT /v2/keys/n?noValueOnSuccess=true HTTP/1.1\r\nHost: t\r\n"
             "Connection: close\r\n"
             "Content-Type: application/x-www-form-urlencoded\r\n"
             "Content-Length: 7\r\n\r\nvalue=1");
    ASSERT(starts(r, "HTTP/1.1 201 Created\r\n"));
    ASSERT_STR_EQ(body_of(r), "{\"action\":\"set\"}\n");

    r = http(&m, &x, REQ("GET", "/v2/keys/k?quorum=true", ""));
    ASSERT(starts(r, "HTTP/1.1 200 OK\r\n"));
    ASSERT(strstr(body_of(r), "\"value\":\"2\"") != NULL);

    /* A long poll answered from the history (waitIndex) is chunked. */
    r = http(&m, &w, REQ("GET", "/v2/keys/k?wait=true&waitIndex=1", ""));
    ASSERT(starts(r, "HTTP/1.1 200 OK\r\n"));
    ASSERT(strstr(r, "Transfer-Encoding: chunked\r\n") != NULL);
    ASSERT(strstr(r, "\"action\":\"set\"") != NULL);

    r = http(&m, &x, REQ("GET", "/v2/members", ""));
    ASSERT(strstr(body_of(r), "\"clientURLs\":[\"http://127.0.0.1:2379\"]") !=
           NULL);
    r = http(&m, &x, REQ("GET", "/v2/stats/leader", ""));
    ASSERT(strstr(body_of(r), "\"followers\":{}") != NULL);
    r = http(&m, &x, REQ("GET", "/version", ""));
    ASSERT_STR_EQ(body_of(r),
                  "{\"etcdserver\":\"3.4.23\",\"etcdcluster\":\"3.4.0\"}");
    r = http(&m, &x, REQ("GET", "/health", ""));
    ASSERT_STR_EQ(body_of(r), "{\"health\":\"true\"}");
    r = http(&m, &x, REQ("GET", "/metrics", ""));
    ASSERT(strstr(body_of(r), "etcd_disk_wal_fsync_duration_seconds_count")
           != NULL);
    member_stop(&m);
}

TEST_MAIN(TEST_ENTRY(routing_cors_and_errors),
          TEST_ENTRY(write_read_quorum_and_watch))
