/* A trivial etcd-like handler on the HTTP server, for load generators:
 *   bench_http [port] [seconds]   then e.g. wrk -t2 -c64 -d5s http://127.0.0.1:port/
 * Paths starting with /park are parked like long-poll watches (answered
 * only when the client leaves or the server stops), to measure the cost
 * of many parked connections. Serves until the time is up (default 10 s),
 * then closes cleanly and prints the number of requests served. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

struct bench {
    uv_timer_t stop;
    struct http_server *srv;
    unsigned long served;
};

static void on_park_close(struct http_request *req, int status)
{
    (void)status;
    http_stream_end(req);
}

static void handler(struct http_request *req)
{
    struct bench *b = req->server_data;
    if (strncmp(req->path, "/park", 5) == 0) {
        http_request_set_close_cb(req, on_park_close);
        http_response_add_header(req, "Content-Type", "application/json");
        http_stream_begin(req, 200);
        return;
    }
    static const char body[] =
        "{\"action\":\"get\",\"node\":{\"key\":\"/foo\",\"value\":\"bar\","
        "\"modifiedIndex\":4,\"createdIndex\":4}}\n";
    b->served++;
    http_response_add_header(req, "Content-Type", "application/json");
    http_response_add_header(req, "X-Etcd-Cluster-Id", "cdf818194e3a8c32");
    http_response_add_header(req, "X-Etcd-Index", "4");
    http_response_add_header(req, "X-Raft-Index", "5");
    http_response_add_header(req, "X-Raft-Term", "2");
    http_respond(req, 200, body, sizeof(body) - 1);
}

static void on_stop(uv_timer_t *t)
{
    struct bench *b = t->data;
    http_server_close(b->srv, NULL);
    uv_close((uv_handle_t *)t, NULL);
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int seconds = argc > 2 ? atoi(argv[2]) : 10;
    struct bench b = {0};
    struct http_server_config cfg = {.handler = handler, .data = &b};
    char url[64];
    uv_loop_t *loop = uv_default_loop();
    signal(SIGPIPE, SIG_IGN);
    int rv = http_server_new(loop, &cfg, &b.srv);
    if (rv == 0) {
        snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
        rv = http_server_listen(b.srv, url, &port);
    }
    if (rv != 0) {
        fprintf(stderr, "bench_http: %s\n", uv_strerror(rv));
        return 1;
    }
    printf("listening on http://127.0.0.1:%d for %d s\n", port, seconds);
    fflush(stdout);
    uv_timer_init(loop, &b.stop);
    b.stop.data = &b;
    uv_timer_start(&b.stop, on_stop, (uint64_t)seconds * 1000, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    printf("served %lu requests\n", b.served);
    return uv_loop_close(loop) == 0 ? 0 : 1;
}
