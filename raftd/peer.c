/* The peer transport: Raft messages between members over TCP on libuv.
 * Each member dials every other member once at its first peer URL and only
 * writes on that connection; inbound connections are only read. A
 * connection starts with a Hello (cluster id, sender, receiver); a
 * listener refuses and logs one from another cluster or for another
 * member, as etcd does. Messages are queued per peer as encoded frames
 * (bounded: a full queue drops and the caller reports the peer
 * unreachable) and written once per peer per loop turn
 * (peer_transport_flush). A lost connection is redialled with exponential
 * backoff. Peers come and go with the configuration (peer_transport_add,
 * peer_transport_remove); a removed member is told so when it dials
 * (a REMOVED frame) and its connections are closed. A joining member asks
 * a listener for the member list (MEMBERS_REQ -> MEMBERS) before it has a
 * hello to send. Frame layout: raftd/peer.proto and docs/raftd.md.
 *
 * Async contract: every callback runs on the loop thread; recv is called
 * from a read callback, never from inside peer_transport_send/flush. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

#include "node_int.h"

#define PEER_MAX_LISTENERS 8
#define PEER_READ_CHUNK (64u << 10)
/* etcd's rafthttp ConnWriteTimeout/ConnReadTimeout: a peer connection
 * whose data stays unacknowledged this long (a partition that drops
 * packets) is aborted, so queued messages are dropped instead of being
 * delivered after the partition heals, and the redial after it does not
 * wait out TCP's retransmission backoff. An idle inbound connection is
 * probed as often, so a dialer that gave up is noticed. */
#define PEER_CONN_TIMEOUT_MS 5000

enum peer_state {
    PEER_IDLE = 0,   /* no socket; retry timer may be running */
    PEER_CONNECTING, /* uv_tcp_connect in flight; queueing allowed */
    PEER_UP,         /* hello written first; messages flow */
    PEER_DOWN,       /* uv_close in flight */
};

struct peer_out {
    struct peer_transport *t;
    uint64_t id;
    char *url; /* owned: the first peer URL of the member */
    struct sockaddr_storage addr;
    bool has_addr;
    enum peer_state state;
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    uv_timer_t retry;
    struct store_buf queue;   /* frames not handed to libuv yet */
    size_t queued_msgs;
    struct store_buf writing; /* frames of the uv_write in flight */
    bool write_busy;
    uint64_t losses; /* connections lost so far (peer_transport_conn) */
    unsigned backoff_ms;
    bool logged_down;
    /* Removed from the configuration (or the transport is closing): no
     * redial; freed once its open handles are closed. */
    bool dead;
    unsigned open_handles;
    /* The first bytes the listener wrote back: a REMOVED frame. */
    unsigned char rbuf[PEER_FRAME_HEADER];
    size_t rlen;
};

struct peer_in {
    uv_tcp_t tcp;
    struct peer_transport *t;
    struct peer_in *next, *prev;
    unsigned char *buf;
    size_t len, cap;
    bool hello_ok;
    bool closing;        /* nothing more is read */
    bool handle_closing; /* uv_close called */
    uint64_t from;
    /* One answer frame (REMOVED or MEMBERS), closed once written. */
    uv_write_t wreq;
    struct store_buf answer;
};

struct peer_transport {
    uv_loop_t *loop;
    struct raftd_log log;
    uint64_t cluster_id;
    uint64_t self_id;
    /* Source address of outbound connections: the host of our own first
     * peer URL when it is a specific IP (port 0), so that a member is
     * reached from, and sends from, the one address the others know it
     * by (one address per member in the partition tests). */
    struct sockaddr_storage src;
    bool has_src;
    struct peer_callbacks cb;
    struct peer_out **peers; /* the live ones */
    size_t n_peers, cap_peers;
    uint64_t *removed;       /* member ids removed from the cluster */
    size_t n_removed;
    uv_tcp_t listeners[PEER_MAX_LISTENERS];
    size_t n_listeners;
    struct peer_in *inbound;
    bool closing;
    unsigned pending_closes;
    void (*close_cb)(void *);
    void *close_arg;
};

static void peer_dial(struct peer_out *p);

/* Bounds how long unacknowledged data (or a SYN) keeps a connection up;
 * for inbound connections, also probes the dialer while nothing comes. */
static void peer_conn_timeouts(uv_tcp_t *tcp, bool inbound)
{
    unsigned ms = PEER_CONN_TIMEOUT_MS;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)tcp, &fd) != 0)
        return;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
    if (inbound)
        (void)uv_tcp_keepalive(tcp, 1, PEER_CONN_TIMEOUT_MS / 1000);
}

/* ---- closing -------------------------------------------------------- */

static void transport_free(struct peer_transport *t)
{
    void (*cb)(void *) = t->close_cb;
    void *arg = t->close_arg;
    free(t->peers);
    free(t->removed);
    free(t);
    if (cb)
        cb(arg);
}

static void transport_closed_one(struct peer_transport *t)
{
    t->pending_closes--;
    if (t->closing && t->pending_closes == 0)
        transport_free(t);
}

static void generic_closed(uv_handle_t *h)
{
    transport_closed_one(h->data);
}

/* One of p's handles is closed; a dead peer is freed with its last. */
static void out_handle_done(struct peer_out *p)
{
    struct peer_transport *t = p->t;
    if (--p->open_handles == 0 && p->dead) {
        store_buf_free(&p->queue);
        store_buf_free(&p->writing);
        free(p->url);
        free(p);
    }
    transport_closed_one(t);
}

static void out_timer_closed(uv_handle_t *h)
{
    out_handle_done(h->data);
}

static void transport_close_handle(struct peer_transport *t, uv_handle_t *h,
                                   uv_close_cb cb)
{
    t->pending_closes++;
    uv_close(h, cb);
}

/* ---- outbound ------------------------------------------------------- */

static void out_schedule_retry(struct peer_out *p);

static void out_closed(uv_handle_t *h)
{
    struct peer_out *p = h->data;
    struct peer_transport *t = p->t;
    p->state = PEER_IDLE;
    p->write_busy = false;
    p->writing.len = 0;
    p->rlen = 0;
    if (!t->closing && !p->dead)
        out_schedule_retry(p);
    out_handle_done(p);
}

static void retry_cb(uv_timer_t *h)
{
    struct peer_out *p = h->data;
    if (!p->t->closing && !p->dead && p->state == PEER_IDLE)
        peer_dial(p);
}

/* Drop the connection (and what was queued for it); redial after the
 * backoff. */
static void out_drop(struct peer_out *p, const char *why)
{
    struct peer_transport *t = p->t;
    if (p->state == PEER_DOWN || p->state == PEER_IDLE)
        return;
    if (!p->logged_down) {
        raftd_logf(&t->log, RAFTD_LOG_WARN, "rafthttp",
                   "lost the TCP streaming connection with peer %llx (%s): "
                   "%s",
                   (unsigned long long)p->id, p->url, why);
        p->logged_down = true;
    }
    p->state = PEER_DOWN;
    p->losses++;
    p->queue.len = 0;
    p->queued_msgs = 0;
    uv_close((uv_handle_t *)&p->tcp, out_closed);
}

static void out_schedule_retry(struct peer_out *p)
{
    unsigned ms = p->backoff_ms ? p->backoff_ms : PEER_BACKOFF_MIN_MS;
    p->backoff_ms = ms * 2 > PEER_BACKOFF_MAX_MS ? PEER_BACKOFF_MAX_MS
                                                 : ms * 2;
    uv_timer_start(&p->retry, retry_cb, ms, 0);
}

static void out_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    static char sink[4096]; /* read-only use: bytes are discarded */
    (void)h;
    (void)size;
    buf->base = sink;
    buf->len = sizeof(sink);
}

/* The listener writes on our connection only to refuse us as a removed
 * member (one REMOVED frame, then it closes); otherwise reading only
 * notices EOF. */
static void out_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct peer_out *p = s->data;
    struct peer_transport *t = p->t;
    for (ssize_t i = 0; i < nread && p->rlen < sizeof(p->rbuf); i++)
        p->rbuf[p->rlen++] = (unsigned char)buf->base[i];
    if (p->rlen == sizeof(p->rbuf) && p->rbuf[0] == 0 && p->rbuf[1] == 0 &&
        p->rbuf[2] == 0 && p->rbuf[3] == 1 &&
        p->rbuf[4] == PEER_KIND_REMOVED) {
        p->rlen = 0;
        raftd_logf(&t->log, RAFTD_LOG_ERROR, "rafthttp",
                   "peer %llx refused us: the member has been permanently "
                   "removed from the cluster",
                   (unsigned long long)p->id);
        out_drop(p, "removed from the cluster");
        if (t->cb.removed)
            t->cb.removed(t->cb.data, p->id);
        return;
    }
    if (nread < 0)
        out_drop(p, nread == UV_EOF ? "closed by peer" : uv_strerror((int)nread));
}

static void out_write_one(struct peer_out *p);

static void out_write_cb(uv_write_t *w, int status)
{
    struct peer_out *p = w->data;
    p->write_busy = false;
    p->writing.len = 0;
    if (status < 0) {
        out_drop(p, uv_strerror(status));
        return;
    }
    if (p->state == PEER_UP && p->queue.len > 0)
        out_write_one(p);
}

static void out_write_one(struct peer_out *p)
{
    struct store_buf tmp;
    uv_buf_t b;
    int rv;
    size_t done = 0;
    if (p->write_busy || p->state != PEER_UP || p->queue.len == 0)
        return;
    /* Try the socket first: on loopback it nearly always takes the whole
     * queue, and a uv_write that completes at once still costs an
     * epoll_ctl and an extra loop turn for its callback. */
    b = uv_buf_init(p->queue.data, (unsigned)p->queue.len);
    rv = uv_try_write((uv_stream_t *)&p->tcp, &b, 1);
    if (rv < 0 && rv != UV_EAGAIN) {
        out_drop(p, uv_strerror(rv));
        return;
    }
    if (rv > 0)
        done = (size_t)rv;
    if (done == p->queue.len) {
        p->queue.len = 0;
        p->queued_msgs = 0;
        return;
    }
    /* Swap: queue becomes the in-flight buffer; the old in-flight buffer
     * (empty) takes new frames. */
    tmp = p->writing;
    p->writing = p->queue;
    p->queue = tmp;
    p->queue.len = 0;
    p->queued_msgs = 0;
    b = uv_buf_init(p->writing.data + done,
                    (unsigned)(p->writing.len - done));
    p->wreq.data = p;
    rv = uv_write(&p->wreq, (uv_stream_t *)&p->tcp, &b, 1, out_write_cb);
    if (rv != 0) {
        p->writing.len = 0;
        out_drop(p, uv_strerror(rv));
        return;
    }
    p->write_busy = true;
}

static void out_connect_cb(uv_connect_t *c, int status)
{
    struct peer_out *p = c->data;
    struct peer_transport *t = p->t;
    struct store_buf hb;
    struct peer_hello h;

    if (p->state != PEER_CONNECTING)
        return; /* closed meanwhile */
    if (status < 0) {
        if (!p->logged_down) {
            raftd_logf(&t->log, RAFTD_LOG_WARN, "rafthttp",
                       "failed to dial peer %llx on %s: %s",
                       (unsigned long long)p->id, p->url,
                       uv_strerror(status));
            p->logged_down = true;
        }
        out_drop(p, uv_strerror(status));
        return;
    }
    /* The hello goes before whatever was queued while connecting. */
    store_buf_init(&hb);
    h.version = PEER_VERSION;
    h.cluster_id = t->cluster_id;
    h.from = t->self_id;
    h.to = p->id;
    if (peer_hello_encode(&h, &hb) != 0 ||
        store_buf_append(&hb, p->queue.data ? p->queue.data : "",
                         p->queue.len) != 0) {
        store_buf_free(&hb);
        out_drop(p, "out of memory");
        return;
    }
    store_buf_free(&p->queue);
    p->queue = hb;
    p->state = PEER_UP;
    p->backoff_ms = 0;
    raftd_logf(&t->log, RAFTD_LOG_INFO, "rafthttp",
                   "established a TCP streaming connection with peer %llx",
                   (unsigned long long)p->id);
    p->logged_down = false;
    uv_read_start((uv_stream_t *)&p->tcp, out_alloc, out_read);
    out_write_one(p);
}

static void peer_dial(struct peer_out *p)
{
    struct peer_transport *t = p->t;
    int rv;
    if (!p->has_addr || t->closing || p->state != PEER_IDLE)
        return;
    rv = uv_tcp_init(t->loop, &p->tcp);
    if (rv != 0) {
        out_schedule_retry(p);
        return;
    }
    p->open_handles++;
    t->pending_closes++; /* balanced by out_closed */
    p->tcp.data = p;
    uv_tcp_nodelay(&p->tcp, 1);
    if (t->has_src && t->src.ss_family == p->addr.ss_family) {
        rv = uv_tcp_bind(&p->tcp, (const struct sockaddr *)&t->src, 0);
        if (rv != 0) {
            /* Not an address of this host: connect from any (as etcd). */
            t->has_src = false;
            raftd_logf(&t->log, RAFTD_LOG_WARN, "rafthttp",
                       "cannot send from our peer address (%s); "
                       "using any local address", uv_strerror(rv));
        }
    }
    p->creq.data = p;
    p->state = PEER_CONNECTING;
    rv = uv_tcp_connect(&p->creq, &p->tcp, (struct sockaddr *)&p->addr,
                        out_connect_cb);
    if (rv != 0)
        out_drop(p, uv_strerror(rv));
    else
        peer_conn_timeouts(&p->tcp, false);
}

static struct peer_out *peer_find(const struct peer_transport *t,
                                  uint64_t id)
{
    for (size_t i = 0; i < t->n_peers; i++)
        if (t->peers[i]->id == id)
            return t->peers[i];
    return NULL;
}

static bool peer_removed(const struct peer_transport *t, uint64_t id)
{
    for (size_t i = 0; i < t->n_removed; i++)
        if (t->removed[i] == id)
            return true;
    return false;
}

int peer_transport_send_snapshot(struct peer_transport *t, uint64_t to,
                                 const struct peer_snap_piece *s)
{
    struct peer_out *p;
    size_t old;
    int rv;
    if (t->closing)
        return -ECANCELED;
    p = peer_find(t, to);
    if (p == NULL)
        return -ENOENT;
    if (p->state != PEER_UP && p->state != PEER_CONNECTING)
        return -ENOTCONN;
    if (p->queue.len >= PEER_QUEUE_MAX_BYTES)
        return -ENOBUFS;
    old = p->queue.len;
    rv = peer_snap_encode(s, &p->queue);
    if (rv != 0) {
        p->queue.len = old;
        return rv;
    }
    p->queued_msgs++;
    return 0;
}

size_t peer_transport_pending(const struct peer_transport *t, uint64_t to)
{
    const struct peer_out *p = peer_find(t, to);
    if (p == NULL)
        return 0;
    return p->queue.len + (p->write_busy ? p->writing.len : 0);
}

uint64_t peer_transport_conn(const struct peer_transport *t, uint64_t to)
{
    const struct peer_out *p = peer_find(t, to);
    if (p == NULL || (p->state != PEER_UP && p->state != PEER_CONNECTING))
        return 0;
    return p->losses + 1;
}

int peer_transport_send(struct peer_transport *t, const struct raft_message *m)
{
    struct peer_out *p;
    size_t old;
    int rv;
    if (t->closing)
        return -ECANCELED;
    p = peer_find(t, m->to);
    if (p == NULL)
        return -ENOENT;
    if (p->state != PEER_UP && p->state != PEER_CONNECTING)
        return -ENOTCONN;
    if (p->queue.len >= PEER_QUEUE_MAX_BYTES ||
        p->queued_msgs >= PEER_QUEUE_MAX_MSGS)
        return -ENOBUFS;
    old = p->queue.len;
    rv = peer_msg_encode(m, &p->queue);
    if (rv != 0) {
        p->queue.len = old;
        return rv;
    }
    p->queued_msgs++;
    return 0;
}

void peer_transport_flush(struct peer_transport *t)
{
    if (t == NULL || t->closing)
        return;
    for (size_t i = 0; i < t->n_peers; i++)
        out_write_one(t->peers[i]);
}

bool peer_transport_connected(const struct peer_transport *t, uint64_t id)
{
    const struct peer_out *p = t ? peer_find(t, id) : NULL;
    return p != NULL && p->state == PEER_UP;
}

/* ---- inbound -------------------------------------------------------- */

static void in_closed(uv_handle_t *h)
{
    struct peer_in *in = h->data;
    struct peer_transport *t = in->t;
    if (in->prev)
        in->prev->next = in->next;
    else
        t->inbound = in->next;
    if (in->next)
        in->next->prev = in->prev;
    free(in->buf);
    store_buf_free(&in->answer);
    free(in);
    transport_closed_one(t);
}

static void in_close(struct peer_in *in)
{
    if (in->handle_closing)
        return;
    in->closing = true;
    in->handle_closing = true;
    uv_read_stop((uv_stream_t *)&in->tcp);
    transport_close_handle(in->t, (uv_handle_t *)&in->tcp, in_closed);
}

static void in_answer_cb(uv_write_t *w, int status)
{
    (void)status;
    in_close(w->data);
}

/* Write in->answer, then close the connection (nothing more is read). */
static void in_answer(struct peer_in *in)
{
    uv_buf_t b = uv_buf_init(in->answer.data, (unsigned)in->answer.len);
    in->closing = true;
    uv_read_stop((uv_stream_t *)&in->tcp);
    in->wreq.data = in;
    if (uv_write(&in->wreq, (uv_stream_t *)&in->tcp, &b, 1, in_answer_cb) != 0)
        in_close(in);
}

static void in_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    struct peer_in *in = h->data;
    (void)size;
    if (in->cap - in->len < PEER_READ_CHUNK) {
        size_t ncap = in->cap ? in->cap * 2 : PEER_READ_CHUNK * 2;
        unsigned char *nb;
        while (ncap - in->len < PEER_READ_CHUNK)
            ncap *= 2;
        nb = realloc(in->buf, ncap);
        if (nb == NULL) {
            buf->base = NULL;
            buf->len = 0;
            return;
        }
        in->buf = nb;
        in->cap = ncap;
    }
    buf->base = (char *)in->buf + in->len;
    buf->len = in->cap - in->len;
}

/* One frame from an inbound connection; -1 to close it. */
static int in_frame(struct peer_in *in, uint8_t kind, const uint8_t *p,
                    size_t len)
{
    struct peer_transport *t = in->t;
    if (!in->hello_ok) {
        struct peer_hello h;
        bool known;
        if (kind == PEER_KIND_MEMBERS_REQ && t->cb.members != NULL) {
            /* A joining member asks for the cluster: answer, close. */
            struct store_buf body;
            int rv;
            store_buf_init(&body);
            rv = t->cb.members(t->cb.data, &body);
            if (rv == 0)
                rv = peer_frame_encode(PEER_KIND_MEMBERS, body.data, body.len,
                                       &in->answer);
            store_buf_free(&body);
            if (rv != 0)
                return -1;
            in_answer(in);
            return 0;
        }
        if (kind != PEER_KIND_HELLO || peer_hello_decode(p, len, &h) != 0) {
            raftd_logf(&t->log, RAFTD_LOG_WARN, "rafthttp",
                       "rejected a peer connection: no valid hello");
            return -1;
        }
        known = peer_find(t, h.from) != NULL;
        if (h.cluster_id != t->cluster_id) {
            raftd_logf(&t->log, RAFTD_LOG_ERROR, "rafthttp",
                       "request cluster ID mismatch (got %llx want %llx) "
                       "from member %llx: connection refused",
                       (unsigned long long)h.cluster_id,
                       (unsigned long long)t->cluster_id,
                       (unsigned long long)h.from);
            return -1;
        }
        if (peer_removed(t, h.from)) {
            /* As etcd's rafthttp answers 410 Gone: the member learns it
             * was removed and stops itself. */
            raftd_logf(&t->log, RAFTD_LOG_WARN, "rafthttp",
                       "rejected the stream from peer %llx since it was "
                       "removed",
                       (unsigned long long)h.from);
            if (peer_frame_encode(PEER_KIND_REMOVED, NULL, 0, &in->answer) != 0)
                return -1;
            in_answer(in);
            return 0;
        }
        if (h.to != t->self_id || !known) {
            raftd_logf(&t->log, RAFTD_LOG_ERROR, "rafthttp",
                       "rejected a connection from member %llx for member "
                       "%llx (this is %llx)",
                       (unsigned long long)h.from, (unsigned long long)h.to,
                       (unsigned long long)t->self_id);
            return -1;
        }
        in->hello_ok = true;
        in->from = h.from;
        return 0;
    }
    if (kind == PEER_KIND_SNAPSHOT) {
        struct peer_snap_piece s;
        if (peer_snap_decode(p, len, &s) != 0)
            return -1;
        if (t->cb.snapshot)
            t->cb.snapshot(t->cb.data, in->from, &s);
        return 0;
    }
    if (kind != PEER_KIND_MESSAGE)
        return -1;
    {
        struct peer_decoded d;
        if (peer_msg_decode(p, len, &d) != 0) {
            raftd_logf(&t->log, RAFTD_LOG_WARN, "rafthttp",
                       "undecodable message from peer %llx",
                       (unsigned long long)in->from);
            return -1;
        }
        if (d.msg.from == in->from && d.msg.to == t->self_id && t->cb.recv)
            t->cb.recv(t->cb.data, &d.msg);
        peer_decoded_free(&d);
    }
    return 0;
}

static void in_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct peer_in *in = s->data;
    size_t off = 0;
    (void)buf;
    if (nread < 0) {
        in_close(in);
        return;
    }
    if (nread == 0 || in->closing)
        return;
    in->len += (size_t)nread;
    while (!in->closing && !in->t->closing) {
        uint8_t kind;
        const uint8_t *payload;
        size_t plen;
        int n = peer_frame_next(in->buf + off, in->len - off, &kind, &payload,
                                &plen);
        if (n == 0)
            break;
        if (n < 0 || in_frame(in, kind, payload, plen) != 0) {
            in_close(in);
            return;
        }
        off += (size_t)n;
    }
    if (off > 0) {
        memmove(in->buf, in->buf + off, in->len - off);
        in->len -= off;
    }
}

static void listen_cb(uv_stream_t *server, int status)
{
    struct peer_transport *t = server->data;
    struct peer_in *in;
    if (status < 0 || t->closing)
        return;
    in = calloc(1, sizeof(*in));
    if (in == NULL)
        return;
    in->t = t;
    store_buf_init(&in->answer);
    if (uv_tcp_init(t->loop, &in->tcp) != 0) {
        free(in);
        return;
    }
    in->tcp.data = in;
    in->next = t->inbound;
    if (t->inbound)
        t->inbound->prev = in;
    t->inbound = in;
    if (uv_accept(server, (uv_stream_t *)&in->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&in->tcp, in_alloc, in_read) != 0) {
        in_close(in);
        return;
    }
    peer_conn_timeouts(&in->tcp, true);
}

/* ---- setup ---------------------------------------------------------- */

static int url_addr(const char *url, struct sockaddr_storage *ss)
{
    struct http_url u;
    const char *host;
    int rv = http_url_parse(url, &u);
    if (rv != 0)
        return rv;
    host = u.host;
    if (host[0] == '\0')
        host = "0.0.0.0";
    else if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    memset(ss, 0, sizeof(*ss));
    if (uv_ip4_addr(host, u.port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, u.port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return -EINVAL;
}

/* Sets t->src from our own first peer URL if its host is a specific IP. */
static void transport_set_src(struct peer_transport *t,
                              const struct raftd_member_cfg *self)
{
    static const unsigned char any6[16];
    struct sockaddr_storage *ss = &t->src;
    if (self->peer_urls.n == 0 || url_addr(self->peer_urls.v[0], ss) != 0)
        return;
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        t->has_src = sin->sin_addr.s_addr != htonl(INADDR_ANY);
        sin->sin_port = 0;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        t->has_src = memcmp(&sin6->sin6_addr, any6, sizeof(any6)) != 0;
        sin6->sin6_port = 0;
    }
}

int peer_transport_new(uv_loop_t *loop, const struct raftd_log *log,
                       uint64_t cluster_id, uint64_t self_id,
                       const struct raftd_member_cfg *members,
                       size_t n_members, const struct peer_callbacks *cb,
                       struct peer_transport **out)
{
    struct peer_transport *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    t->loop = loop;
    t->log = *log;
    t->cluster_id = cluster_id;
    t->self_id = self_id;
    t->cb = *cb;
    for (size_t i = 0; i < n_members; i++)
        if (members[i].id == self_id)
            transport_set_src(t, &members[i]);
    for (size_t i = 0; i < n_members; i++) {
        const struct raftd_member_cfg *m = &members[i];
        if (m->id != self_id && m->peer_urls.n > 0)
            peer_transport_add(t, m->id, m->peer_urls.v[0]);
    }
    *out = t;
    return 0;
}

/* Resolve p->url into p->addr; logged once if it cannot be dialled. */
static void out_set_addr(struct peer_out *p)
{
    p->has_addr = url_addr(p->url, &p->addr) == 0;
    if (!p->has_addr)
        raftd_logf(&p->t->log, RAFTD_LOG_ERROR, "rafthttp",
                   "peer %llx: cannot dial %s (an IP address or localhost "
                   "is needed)",
                   (unsigned long long)p->id, p->url);
}

int peer_transport_add(struct peer_transport *t, uint64_t id,
                       const char *url)
{
    struct peer_out *p;
    char *u;
    if (t->closing || id == t->self_id || peer_removed(t, id))
        return 0;
    p = peer_find(t, id);
    if (p != NULL) {
        if (strcmp(p->url, url) == 0)
            return 0;
        /* Re-pointed (PUT /v2/members/<id>): redial at the new URL. */
        u = strdup(url);
        if (u == NULL)
            return -ENOMEM;
        raftd_logf(&t->log, RAFTD_LOG_INFO, "rafthttp",
                   "updated peer %llx to %s", (unsigned long long)id, url);
        free(p->url);
        p->url = u;
        out_set_addr(p);
        out_drop(p, "peer URL changed");
        if (p->state == PEER_IDLE && !uv_is_active((uv_handle_t *)&p->retry))
            peer_dial(p);
        return 0;
    }
    if (t->n_peers == t->cap_peers) {
        size_t cap = t->cap_peers ? 2 * t->cap_peers : 8;
        struct peer_out **np = realloc(t->peers, cap * sizeof(*np));
        if (np == NULL)
            return -ENOMEM;
        t->peers = np;
        t->cap_peers = cap;
    }
    p = calloc(1, sizeof(*p));
    u = strdup(url);
    if (p == NULL || u == NULL) {
        free(p);
        free(u);
        return -ENOMEM;
    }
    p->t = t;
    p->id = id;
    p->url = u;
    store_buf_init(&p->queue);
    store_buf_init(&p->writing);
    out_set_addr(p);
    uv_timer_init(t->loop, &p->retry);
    p->retry.data = p;
    p->open_handles = 1;
    t->pending_closes++; /* balanced by out_timer_closed */
    t->peers[t->n_peers++] = p;
    raftd_logf(&t->log, RAFTD_LOG_INFO, "rafthttp", "added peer %llx (%s)",
               (unsigned long long)id, url);
    peer_dial(p);
    return 0;
}

/* Stop talking to p for good; it is freed once its handles are closed. */
static void out_kill(struct peer_out *p)
{
    p->dead = true;
    uv_timer_stop(&p->retry);
    uv_close((uv_handle_t *)&p->retry, out_timer_closed);
    if (p->state == PEER_CONNECTING || p->state == PEER_UP) {
        p->state = PEER_DOWN;
        uv_close((uv_handle_t *)&p->tcp, out_closed);
    }
}

int peer_transport_remove(struct peer_transport *t, uint64_t id)
{
    if (t->closing || peer_removed(t, id))
        return 0;
    {
        uint64_t *nr = realloc(t->removed, (t->n_removed + 1) * sizeof(*nr));
        if (nr == NULL)
            return -ENOMEM;
        t->removed = nr;
        t->removed[t->n_removed++] = id;
    }
    for (size_t i = 0; i < t->n_peers; i++) {
        if (t->peers[i]->id != id)
            continue;
        out_kill(t->peers[i]);
        t->peers[i] = t->peers[--t->n_peers];
        raftd_logf(&t->log, RAFTD_LOG_INFO, "rafthttp",
                   "removed peer %llx", (unsigned long long)id);
        break;
    }
    /* Its inbound streams end now; a redial is answered REMOVED. */
    for (struct peer_in *in = t->inbound; in; in = in->next)
        if (in->hello_ok && in->from == id)
            in_close(in);
    return 0;
}

int peer_transport_listen(struct peer_transport *t, const char *url)
{
    struct sockaddr_storage ss;
    uv_tcp_t *l;
    int rv;
    if (t->n_listeners >= PEER_MAX_LISTENERS)
        return -EMFILE;
    rv = url_addr(url, &ss);
    if (rv != 0)
        return rv;
    l = &t->listeners[t->n_listeners];
    rv = uv_tcp_init(t->loop, l);
    if (rv != 0)
        return rv;
    l->data = t;
    t->n_listeners++;
    rv = uv_tcp_bind(l, (struct sockaddr *)&ss, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)l, 128, listen_cb);
    if (rv == 0)
        raftd_logf(&t->log, RAFTD_LOG_INFO, "embed",
                   "listening for peers on %s", url);
    return rv;
}

int peer_transport_port(const struct peer_transport *t)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (t->n_listeners == 0 ||
        uv_tcp_getsockname(&t->listeners[0], (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

void peer_transport_close(struct peer_transport *t, void (*cb)(void *),
                          void *arg)
{
    if (t->closing)
        return;
    t->closing = true;
    t->close_cb = cb;
    t->close_arg = arg;
    t->pending_closes++; /* held until the end of this function */
    for (size_t i = 0; i < t->n_listeners; i++)
        transport_close_handle(t, (uv_handle_t *)&t->listeners[i],
                               generic_closed);
    for (size_t i = 0; i < t->n_peers; i++)
        out_kill(t->peers[i]);
    t->n_peers = 0;
    for (struct peer_in *in = t->inbound; in; in = in->next)
        in_close(in);
    transport_closed_one(t);
}
