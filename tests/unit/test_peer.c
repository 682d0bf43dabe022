/* Unit tests for the peer transport's codec (raftd/peer_codec.c): frames
 * round-trip a message with entries and a hello; partial frames wait for
 * more bytes; bad lengths, kinds, hellos and message types are errors; and
 * a listener refuses a hello from another cluster (raftd/peer.c over a
 * real loopback connection); outbound connections come from our own peer
 * address. */
#include <stdio.h>
#include <string.h>

#include "node_int.h"
#include "test.h"

TEST(message_round_trip)
{
    struct raft_entry ents[2] = {
        {.term = 3, .index = 7, .type = RAFT_ENTRY_NORMAL, .len = 5,
         .data = "hello"},
        {.term = 3, .index = 8, .type = RAFT_ENTRY_CONF_CHANGE, .len = 0,
         .data = NULL},
    };
    struct raft_message m = {.type = RAFT_MSG_APPEND, .from = 0x1111,
                             .to = 0x2222, .term = 3, .log_term = 2,
                             .index = 6, .commit = 5, .entries = ents,
                             .n_entries = 2, .reject = true,
                             .reject_hint = 4, .context = 99};
    struct store_buf b;
    struct peer_decoded d;
    const uint8_t *payload;
    size_t plen;
    uint8_t kind;

    store_buf_init(&b);
    ASSERT_OK(peer_msg_encode(&m, &b));
    ASSERT_EQ(peer_frame_next(b.data, b.len, &kind, &payload, &plen),
              (int)b.len);
    ASSERT_EQ(kind, PEER_KIND_MESSAGE);
    ASSERT_EQ(plen + 5, b.len);
    /* Big-endian length of kind + payload. */
    ASSERT_EQ((unsigned char)b.data[3], (unsigned)((plen + 1) & 0xff));
    /* Every strict prefix is "need more". */
    for (size_t i = 0; i < b.len; i++)
        ASSERT_EQ(peer_frame_next(b.data, i, &kind, &payload, &plen), 0);
    ASSERT_EQ(peer_frame_next(b.data, b.len, &kind, &payload, &plen),
              (int)b.len);
    ASSERT_OK(peer_msg_decode(payload, plen, &d));
    ASSERT_EQ(d.msg.type, RAFT_MSG_APPEND);
    ASSERT_EQ(d.msg.from, 0x1111);
    ASSERT_EQ(d.msg.to, 0x2222);
    ASSERT_EQ(d.msg.term, 3);
    ASSERT_EQ(d.msg.log_term, 2);
    ASSERT_EQ(d.msg.index, 6);
    ASSERT_EQ(d.msg.commit, 5);
    ASSERT(d.msg.reject);
    ASSERT_EQ(d.msg.reject_hint, 4);
    ASSERT_EQ(d.msg.context, 99);
    ASSERT_EQ(d.msg.n_entries, 2);
    ASSERT_EQ(d.msg.entries[0].index, 7);
    ASSERT_EQ(d.msg.entries[0].len, 5);
    ASSERT(memcmp(d.msg.entries[0].data, "hello", 5) == 0);
    ASSERT_EQ(d.msg.entries[1].type, RAFT_ENTRY_CONF_CHANGE);
    ASSERT_EQ(d.msg.entries[1].len, 0);
    peer_decoded_free(&d);
    store_buf_free(&b);
}

TEST(snapshot_meta_and_hello)
{
    struct raft_message m = {.type = RAFT_MSG_SNAPSHOT, .from = 1, .to = 2,
                             .term = 9};
    struct peer_hello h = {.cluster_id = 0xabc, .from = 1, .to = 2}, h2;
    struct store_buf b;
    struct peer_decoded d;
    const uint8_t *payload;
    size_t plen;
    uint8_t kind;
    int n;

    m.snapshot.index = 100;
    m.snapshot.term = 8;
    m.snapshot.conf.n_voters = 3;
    m.snapshot.conf.voters[0] = 1;
    m.snapshot.conf.voters[1] = 2;
    m.snapshot.conf.voters[2] = 3;
    store_buf_init(&b);
    ASSERT_OK(peer_hello_encode(&h, &b));
    ASSERT_OK(peer_msg_encode(&m, &b));
    n = peer_frame_next(b.data, b.len, &kind, &payload, &plen);
    ASSERT_GT(n, 0);
    ASSERT_EQ(kind, PEER_KIND_HELLO);
    ASSERT_OK(peer_hello_decode(payload, plen, &h2));
    ASSERT_EQ(h2.cluster_id, 0xabc);
    ASSERT_EQ(h2.from, 1);
    ASSERT_EQ(h2.to, 2);
    ASSERT_EQ(h2.version, PEER_VERSION);
    ASSERT_EQ(peer_frame_next(b.data + n, b.len - (size_t)n, &kind, &payload,
                              &plen),
              (int)(b.len - (size_t)n));
    ASSERT_OK(peer_msg_decode(payload, plen, &d));
    ASSERT_EQ(d.msg.snapshot.index, 100);
    ASSERT_EQ(d.msg.snapshot.term, 8);
    ASSERT_EQ(d.msg.snapshot.conf.n_voters, 3);
    ASSERT_EQ(d.msg.snapshot.conf.voters[2], 3);
    peer_decoded_free(&d);
    /* A hello is not a message payload of a valid type and vice versa. */
    ASSERT_EQ(peer_hello_decode(payload, plen, &h2), -EBADMSG);
    store_buf_free(&b);
}

/* Encode in as a frame and decode it back into out: what the decoder
 * returns (-1 if the frame itself did not parse). */
static int piece_round_trip(const struct peer_snap_piece *in,
                            struct peer_snap_piece *out, struct store_buf *b)
{
    const uint8_t *payload;
    size_t plen;
    uint8_t kind;
    b->len = 0;
    if (peer_snap_encode(in, b) != 0 ||
        peer_frame_next(b->data, b->len, &kind, &payload, &plen) !=
            (int)b->len ||
        kind != PEER_KIND_SNAPSHOT)
        return -1;
    return peer_snap_decode(payload, plen, out);
}

TEST(snapshot_piece_frame)
{
    struct store_buf b;
    struct peer_snap_piece in = {.term = 7, .index = 4242, .offset = 100,
                                 .total = 108,
                                 .data = (const uint8_t *)"SNAPDATA",
                                 .len = 8},
                           out;

    store_buf_init(&b);
    ASSERT_OK(piece_round_trip(&in, &out, &b));
    ASSERT_EQ(b.len, 5 + 32 + 8);
    ASSERT_EQ(out.term, 7);
    ASSERT_EQ(out.index, 4242);
    ASSERT_EQ(out.offset, 100);
    ASSERT_EQ(out.total, 108);
    ASSERT_EQ(out.len, 8);
    ASSERT(memcmp(out.data, "SNAPDATA", 8) == 0);
    /* too short for the header */
    ASSERT_EQ(peer_snap_decode((const uint8_t *)b.data + 5, 31, &out),
              -EBADMSG);
    /* a piece reaching past the file's end */
    in.total = 107;
    ASSERT_EQ(piece_round_trip(&in, &out, &b), -EBADMSG);
    /* an offset past the end */
    in.offset = 200;
    in.len = 0;
    ASSERT_EQ(piece_round_trip(&in, &out, &b), -EBADMSG);
    /* index 0 */
    in.offset = 0;
    in.index = 0;
    ASSERT_EQ(piece_round_trip(&in, &out, &b), -EBADMSG);
    store_buf_free(&b);
}

TEST(bad_input)
{
    const uint8_t *payload;
    size_t plen;
    uint8_t kind;
    struct peer_decoded d;
    struct peer_hello h;
    /* zero length, huge length, unknown kind */
    static const unsigned char zero[] = {0, 0, 0, 0, 1};
    static const unsigned char huge[] = {0xff, 0xff, 0xff, 0xff, 1};
    static const unsigned char kind9[] = {0, 0, 0, 1, 9};
    /* type 0 and type 99 (field 1 varint) */
    static const uint8_t type0[] = {0x08, 0x00};
    static const uint8_t type99[] = {0x08, 99};
    static const uint8_t garbage[] = {0xff, 0xff, 0xff};
    /* a message with an entry of type 7: entries field 8, {type 7} */
    static const uint8_t badent[] = {0x08, 0x01, 0x42, 0x02, 0x18, 0x07};

    ASSERT_EQ(peer_frame_next(zero, 5, &kind, &payload, &plen), -EBADMSG);
    ASSERT_EQ(peer_frame_next(huge, 5, &kind, &payload, &plen), -EBADMSG);
    ASSERT_EQ(peer_frame_next(kind9, 5, &kind, &payload, &plen), -EBADMSG);
    ASSERT_EQ(peer_msg_decode(type0, sizeof(type0), &d), -EBADMSG);
    ASSERT_EQ(peer_msg_decode(type99, sizeof(type99), &d), -EBADMSG);
    ASSERT_EQ(peer_msg_decode(garbage, sizeof(garbage), &d), -EBADMSG);
    ASSERT_EQ(peer_msg_decode(badent, sizeof(badent), &d), -EBADMSG);
    ASSERT_EQ(peer_hello_decode(garbage, sizeof(garbage), &h), -EBADMSG);
    /* an empty hello misses every field */
    ASSERT_EQ(peer_hello_decode(garbage, 0, &h), -EBADMSG);
}

/* ---- a live listener refuses another cluster's hello ---------------- */

struct live {
    int received;
    uv_tcp_t client;
    uv_connect_t creq;
    uv_write_t wreq;
    struct store_buf out;
    bool eof;
    char sink[256];
};

static void live_recv(void *data, const struct raft_message *m)
{
    struct live *l = data;
    (void)m;
    l->received++;
}

static void live_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    struct live *l = h->data;
    (void)s;
    b->base = l->sink;
    b->len = sizeof(l->sink);
}

static void live_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct live *l = s->data;
    (void)b;
    if (n < 0) {
        l->eof = true;
        uv_read_stop(s);
    }
}

static void live_written(uv_write_t *w, int status)
{
    (void)w;
    (void)status;
}

static void live_connected(uv_connect_t *c, int status)
{
    struct live *l = c->data;
    uv_buf_t b = uv_buf_init(l->out.data, (unsigned)l->out.len);
    if (status < 0) {
        l->eof = true;
        return;
    }
    uv_write(&l->wreq, (uv_stream_t *)&l->client, &b, 1, live_written);
    uv_read_start((uv_stream_t *)&l->client, live_alloc, live_read);
}

static void transport_gone(void *arg)
{
    *(int *)arg = 1;
}

static int run_hello(uint64_t cluster_id, int *received)
{
    uv_loop_t loop;
    struct raftd_log log;
    struct raftd_member_cfg members[2];
    char *urls[1] = {"http://127.0.0.1:1"};
    struct peer_callbacks cb;
    struct peer_transport *t;
    struct live l;
    struct sockaddr_in sa;
    struct peer_hello h = {.cluster_id = cluster_id, .from = 5, .to = 7};
    struct raft_message m = {.type = RAFT_MSG_HEARTBEAT, .from = 5, .to = 7,
                             .term = 1};
    int gone = 0, port;
    uint64_t deadline;

    memset(&l, 0, sizeof(l));
    memset(members, 0, sizeof(members));
    uv_loop_init(&loop);
    raftd_log_init(&log, NULL, RAFTD_LOG_ERROR);
    members[0].id = 5;
    members[0].peer_urls.n = 1;
    members[0].peer_urls.v = urls; /* port 1: the dial just fails */
    members[1].id = 7;
    memset(&cb, 0, sizeof(cb));
    cb.data = &l;
    cb.recv = live_recv;
    if (peer_transport_new(&loop, &log, 0xc1, 7, members, 2, &cb, &t) != 0)
        return -1;
    if (peer_transport_listen(t, "http://127.0.0.1:0") != 0)
        return -1;
    store_buf_init(&l.out);
    peer_hello_encode(&h, &l.out);
    peer_msg_encode(&m, &l.out);
    port = peer_transport_port(t);
    uv_ip4_addr("127.0.0.1", port, &sa);
    uv_tcp_init(&loop, &l.client);
    l.client.data = &l;
    l.creq.data = &l;
    uv_tcp_connect(&l.creq, &l.client, (struct sockaddr *)&sa,
                   live_connected);
    deadline = uv_now(&loop) + 5000;
    while (!l.eof && l.received == 0 && uv_now(&loop) < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    /* A refused connection is closed by the listener (EOF). */
    if (cluster_id != 0xc1)
        while (!l.eof && uv_now(&loop) < deadline)
            uv_run(&loop, UV_RUN_ONCE);
    *received = l.received;
    {
        int eof = l.eof;
        uv_close((uv_handle_t *)&l.client, NULL);
        peer_transport_close(t, transport_gone, &gone);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        store_buf_free(&l.out);
        return gone ? eof : -1;
    }
}

TEST(listener_checks_cluster_id)
{
    int received = -1;
    ASSERT_EQ(run_hello(0xc1, &received), 0);
    ASSERT_EQ(received, 1);
    ASSERT_EQ(run_hello(0xbad, &received), 1);
    ASSERT_EQ(received, 0);
}

/* Outbound connections are made from the host of our own peer URL: a
 * member on 127.0.0.2 dials its peer from 127.0.0.2, not 127.0.0.1 (the
 * partition tests tell members apart by address). */
struct src_probe {
    uv_tcp_t server, conn;
    char from[64];
    bool accepted;
};

static void src_probe_conn(uv_stream_t *s, int status)
{
    struct src_probe *sp = s->data;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (status < 0 || sp->accepted)
        return;
    uv_tcp_init(s->loop, &sp->conn);
    if (uv_accept(s, (uv_stream_t *)&sp->conn) == 0 &&
        uv_tcp_getpeername(&sp->conn, (struct sockaddr *)&ss, &len) == 0)
        uv_ip4_name((struct sockaddr_in *)&ss, sp->from, sizeof(sp->from));
    sp->accepted = true;
}

static int dial_from(const char *self_url, char *from, size_t cap)
{
    uv_loop_t loop;
    struct raftd_log log;
    struct raftd_member_cfg members[2];
    char peer_url[64];
    char *self_urls[1], *peer_urls[1] = {peer_url};
    struct peer_callbacks cb;
    struct peer_transport *t;
    struct src_probe sp;
    struct sockaddr_in sa;
    int len = sizeof(sa), gone = 0;
    uint64_t deadline;

    memset(&sp, 0, sizeof(sp));
    memset(members, 0, sizeof(members));
    memset(&cb, 0, sizeof(cb));
    self_urls[0] = (char *)self_url;
    uv_loop_init(&loop);
    raftd_log_init(&log, NULL, RAFTD_LOG_ERROR);
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(&loop, &sp.server);
    sp.server.data = &sp;
    if (uv_tcp_bind(&sp.server, (struct sockaddr *)&sa, 0) != 0 ||
        uv_listen((uv_stream_t *)&sp.server, 8, src_probe_conn) != 0 ||
        uv_tcp_getsockname(&sp.server, (struct sockaddr *)&sa, &len) != 0)
        return -1;
    snprintf(peer_url, sizeof(peer_url), "http://127.0.0.1:%d",
             ntohs(sa.sin_port));
    members[0].id = 5;
    members[0].peer_urls.n = 1;
    members[0].peer_urls.v = peer_urls;
    members[1].id = 7;
    members[1].peer_urls.n = 1;
    members[1].peer_urls.v = self_urls;
    if (peer_transport_new(&loop, &log, 0xc1, 7, members, 2, &cb, &t) != 0)
        return -1;
    deadline = uv_now(&loop) + 5000;
    while (!sp.accepted && uv_now(&loop) < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    snprintf(from, cap, "%s", sp.from);
    peer_transport_close(t, transport_gone, &gone);
    if (sp.accepted)
        uv_close((uv_handle_t *)&sp.conn, NULL);
    uv_close((uv_handle_t *)&sp.server, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return gone && sp.accepted ? 0 : -1;
}

TEST(dials_from_own_peer_address)
{
    char from[64];
    ASSERT_EQ(dial_from("http://127.0.0.2:2380", from, sizeof(from)), 0);
    ASSERT_STR_EQ(from, "127.0.0.2");
    ASSERT_EQ(dial_from("http://127.0.0.3:2380", from, sizeof(from)), 0);
    ASSERT_STR_EQ(from, "127.0.0.3");
    /* a wildcard host leaves the choice to the kernel */
    ASSERT_EQ(dial_from("http://0.0.0.0:2380", from, sizeof(from)), 0);
    ASSERT_STR_EQ(from, "127.0.0.1");
    /* not an address of this host: dial from any, still connects */
    ASSERT_EQ(dial_from("http://192.0.2.1:2380", from, sizeof(from)), 0);
    ASSERT_STR_EQ(from, "127.0.0.1");
}

/* ---- peers follow the configuration ------------------------------------
 * Two transports in one loop: A removes B; B's stream is closed, its redial
 * is answered REMOVED and B hears it. A joining member's MEMBERS_REQ gets
 * the members callback's JSON as a MEMBERS frame. */
struct pair {
    uint64_t removed_by;
    int answers;
};

static void pair_removed(void *data, uint64_t from)
{
    ((struct pair *)data)->removed_by = from;
}

static int pair_members(void *data, struct store_buf *out)
{
    ((struct pair *)data)->answers++;
    return store_buf_append(out, "{\"clusterID\":\"c1\"}", 18);
}

static void run_until(uv_loop_t *loop, bool (*done)(void *), void *arg)
{
    uint64_t deadline = uv_now(loop) + 5000;
    while (!done(arg) && uv_now(loop) < deadline)
        uv_run(loop, UV_RUN_ONCE);
}

struct pair_state {
    struct peer_transport *b;
    struct pair *pb;
    struct live *l;
};

static bool b_connected(void *arg)
{
    struct pair_state *ps = arg;
    return peer_transport_connected(ps->b, 5);
}

static bool b_told(void *arg)
{
    return ((struct pair_state *)arg)->pb->removed_by != 0;
}

static bool live_done(void *arg)
{
    return ((struct pair_state *)arg)->l->eof;
}

static void answer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct live *l = s->data;
    if (n > 0)
        store_buf_append(&l->out, b->base, (size_t)n);
    if (n < 0) {
        l->eof = true;
        uv_read_stop(s);
    }
}

static void answer_connected(uv_connect_t *c, int status)
{
    struct live *l = c->data;
    static char req[] = {0, 0, 0, 1, PEER_KIND_MEMBERS_REQ};
    uv_buf_t b = uv_buf_init(req, sizeof(req));
    if (status < 0) {
        l->eof = true;
        return;
    }
    uv_write(&l->wreq, (uv_stream_t *)&l->client, &b, 1, live_written);
    uv_read_start((uv_stream_t *)&l->client, live_alloc, answer_read);
}

TEST(removed_member_is_told_and_join_is_answered)
{
    uv_loop_t loop;
    struct raftd_log log;
    struct peer_callbacks cb;
    struct peer_transport *a, *b;
    struct pair pa = {0, 0}, pb = {0, 0};
    struct pair_state ps = {NULL, &pb, NULL};
    struct live l;
    struct sockaddr_in sa;
    char url_a[64], url_b[64];
    const uint8_t *payload;
    size_t plen;
    uint8_t kind;
    int gone_a = 0, gone_b = 0;

    uv_loop_init(&loop);
    raftd_log_init(&log, NULL, RAFTD_LOG_ERROR);
    memset(&cb, 0, sizeof(cb));
    cb.removed = pair_removed;
    cb.members = pair_members;
    cb.data = &pa;
    ASSERT_EQ(peer_transport_new(&loop, &log, 0xc1, 5, NULL, 0, &cb, &a), 0);
    cb.data = &pb;
    ASSERT_EQ(peer_transport_new(&loop, &log, 0xc1, 7, NULL, 0, &cb, &b), 0);
    ASSERT_EQ(peer_transport_listen(a, "http://127.0.0.1:0"), 0);
    ASSERT_EQ(peer_transport_listen(b, "http://127.0.0.1:0"), 0);
    snprintf(url_a, sizeof(url_a), "http://127.0.0.1:%d",
             peer_transport_port(a));
    snprintf(url_b, sizeof(url_b), "http://127.0.0.1:%d",
             peer_transport_port(b));
    ASSERT_EQ(peer_transport_add(a, 7, url_b), 0);
    ASSERT_EQ(peer_transport_add(b, 5, url_a), 0);
    ps.b = b;
    run_until(&loop, b_connected, &ps);
    ASSERT(peer_transport_connected(b, 5));
    ASSERT(peer_transport_connected(a, 7));

    ASSERT_EQ(peer_transport_remove(a, 7), 0);
    ASSERT(!peer_transport_connected(a, 7));
    run_until(&loop, b_told, &ps);
    ASSERT_EQ(pb.removed_by, 5);
    ASSERT_EQ(pa.removed_by, 0);
    /* a removed id is never added back */
    ASSERT_EQ(peer_transport_add(a, 7, url_b), 0);
    ASSERT(!peer_transport_connected(a, 7));

    memset(&l, 0, sizeof(l));
    store_buf_init(&l.out);
    ps.l = &l;
    uv_ip4_addr("127.0.0.1", peer_transport_port(a), &sa);
    uv_tcp_init(&loop, &l.client);
    l.client.data = &l;
    l.creq.data = &l;
    uv_tcp_connect(&l.creq, &l.client, (struct sockaddr *)&sa,
                   answer_connected);
    run_until(&loop, live_done, &ps);
    ASSERT(l.eof);
    ASSERT_EQ(pa.answers, 1);
    ASSERT(peer_frame_next(l.out.data, l.out.len, &kind, &payload, &plen) > 0);
    ASSERT_EQ(kind, PEER_KIND_MEMBERS);
    ASSERT_EQ(plen, 18);
    ASSERT(memcmp(payload, "{\"clusterID\":\"c1\"}", 18) == 0);

    uv_close((uv_handle_t *)&l.client, NULL);
    peer_transport_close(a, transport_gone, &gone_a);
    peer_transport_close(b, transport_gone, &gone_b);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    ASSERT(gone_a && gone_b);
    store_buf_free(&l.out);
}

TEST_MAIN(TEST_ENTRY(message_round_trip), TEST_ENTRY(snapshot_meta_and_hello),
          TEST_ENTRY(snapshot_piece_frame), TEST_ENTRY(bad_input), TEST_ENTRY(listener_checks_cluster_id),
          TEST_ENTRY(dials_from_own_peer_address),
          TEST_ENTRY(removed_member_is_told_and_join_is_answered))
