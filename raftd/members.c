/* Runtime membership, as etcd 3.4 does it: the member table kept in the
 * store (/_etcfs/members/<id>/raftAttributes and .../attributes, removed
 * ids under /_etcfs/removed_members, as etcd keeps /0/members and
 * /0/removed_members), conf-change entries applied to it, the peer
 * transport following it, membership proposals waiting for their apply,
 * a removed member stopping itself, joining an existing cluster (the
 * member list asked of a member's peer port) and --force-new-cluster.
 *
 * Conf-change context (raft.h's opaque bytes): empty for the bootstrap
 * entries (peer URLs then come from --initial-cluster); otherwise le64
 * request id (0: no waiter), then for an add the member's raftAttributes
 * JSON {"peerURLs":[...]}. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "node_int.h"

#define MEMBERS_DIR "/_etcfs/members"
#define REMOVED_DIR "/_etcfs/removed_members"
/* A membership proposal not applied after this is proposed again (it may
 * have been dropped: a pending conf change, a lost leader). */
#define MEMBERS_RETRY_NS 1000000000LL
#define MEMBERS_JOIN_TIMEOUT_MS 2000

struct node_conf_op {
    struct node_conf_op *next;
    struct raftd_write_req *w;
    void *data;
    size_t len;
    int64_t tried_ns;
};

/* ---- JSON -------------------------------------------------------------- */

int members_urls_json(struct store_buf *b, const struct raftd_urls *u)
{
    int rv = 0;
    for (size_t i = 0; rv == 0 && u != NULL && i < u->n; i++) {
        if (i)
            rv = store_buf_append(b, ",", 1);
        if (rv == 0)
            rv = store_json_string(b, u->v[i], strlen(u->v[i]));
    }
    return rv;
}

int members_attrs_json(struct store_buf *b, const struct raftd_urls *u)
{
    int rv = store_buf_append(b, "{\"peerURLs\":[", 13);
    if (rv == 0)
        rv = members_urls_json(b, u);
    if (rv == 0)
        rv = store_buf_append(b, "]}", 2);
    return rv;
}

/* ---- the member table --------------------------------------------------- */

static void member_clear(struct raftd_member_cfg *m)
{
    free(m->name);
    for (size_t i = 0; i < m->peer_urls.n; i++)
        free(m->peer_urls.v[i]);
    free(m->peer_urls.v);
    memset(m, 0, sizeof(*m));
}

static void table_free(struct raftd_member_cfg *ms, size_t n)
{
    for (size_t i = 0; i < n; i++)
        member_clear(&ms[i]);
    free(ms);
}

static int cmp_member_id(const void *a, const void *b)
{
    uint64_t x = ((const struct raftd_member_cfg *)a)->id;
    uint64_t y = ((const struct raftd_member_cfg *)b)->id;
    return x < y ? -1 : x > y;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* {"peerURLs":[...]} (raftAttributes) or a member object: the URLs. */
static int urls_from_json(json_t *arr, struct raftd_urls *out)
{
    size_t i;
    json_t *v;
    if (!json_is_array(arr))
        return 0;
    out->v = calloc(json_array_size(arr) + 1, sizeof(char *));
    if (out->v == NULL)
        return -ENOMEM;
    json_array_foreach(arr, i, v) {
        if (!json_is_string(v))
            continue;
        out->v[out->n] = strdup(json_string_value(v));
        if (out->v[out->n] == NULL)
            return -ENOMEM;
        out->n++;
    }
    return 0;
}

/* The value of a store key as parsed JSON, or NULL. */
static json_t *store_json(struct raftd *n, const char *path)
{
    struct store_event *ev = NULL;
    struct store_error err;
    json_t *j = NULL;
    memset(&err, 0, sizeof(err));
    if (store_read(n->store, path, false, node_now_ns(), &ev, &err) == 0) {
        if (ev->node.value != NULL)
            j = json_loadb(ev->node.value, ev->node.value_len, 0, NULL);
        store_event_unref(ev);
    }
    store_error_clear(&err);
    return j;
}

/* The ids under dir (children named by hex id), sorted; *count. */
static int store_ids(struct raftd *n, const char *dir, uint64_t **ids,
                     size_t *count)
{
    struct store_event *ev = NULL;
    struct store_error err;
    *ids = NULL;
    *count = 0;
    memset(&err, 0, sizeof(err));
    if (store_read(n->store, dir, false, node_now_ns(), &ev, &err) != 0) {
        store_error_clear(&err);
        return -ENOENT;
    }
    *ids = calloc(ev->node.n_nodes + 1, sizeof(**ids));
    if (*ids == NULL) {
        store_event_unref(ev);
        return -ENOMEM;
    }
    for (size_t i = 0; i < ev->node.n_nodes; i++) {
        const char *k = strrchr(ev->node.nodes[i].key, '/');
        (*ids)[(*count)++] = strtoull(k ? k + 1 : "", NULL, 16);
    }
    store_event_unref(ev);
    return 0;
}

int members_reload(struct raftd *n)
{
    struct raftd_member_cfg *ms;
    uint64_t *ids = NULL, *removed = NULL;
    size_t count = 0, n_removed = 0;
    int rv;

    rv = store_ids(n, REMOVED_DIR, &removed, &n_removed);
    if (rv == -ENOMEM)
        return rv;
    free(n->removed);
    n->removed = removed;
    n->n_removed = n_removed;
    /* A joining member's store is empty until the log is replayed: keep
     * the table it was given by the cluster meanwhile. */
    if (store_ids(n, MEMBERS_DIR, &ids, &count) != 0)
        return 0;
    ms = calloc(count + 1, sizeof(*ms));
    if (ms == NULL) {
        free(ids);
        return -ENOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        char path[96];
        json_t *ra, *at;
        const char *name = NULL;
        /* A removed member's late publish recreates its attributes: it
         * stays removed (etcd skips such an update). */
        if (members_is_removed(n, ids[i])) {
            ids[i--] = ids[--count];
            continue;
        }
        ms[i].id = ids[i];
        snprintf(path, sizeof(path), MEMBERS_DIR "/%llx/raftAttributes",
                 (unsigned long long)ids[i]);
        ra = store_json(n, path);
        if (ra != NULL)
            rv = urls_from_json(json_object_get(ra, "peerURLs"),
                                &ms[i].peer_urls);
        json_decref(ra);
        snprintf(path, sizeof(path), MEMBERS_DIR "/%llx/attributes",
                 (unsigned long long)ids[i]);
        at = store_json(n, path);
        if (at != NULL && json_is_string(json_object_get(at, "name")))
            name = json_string_value(json_object_get(at, "name"));
        /* Not published yet: the bootstrap members' names are known
         * from --initial-cluster (etcd has them from the conf change). */
        for (size_t k = 0; name == NULL && k < n->cfg->n_members; k++)
            if (n->cfg->members[k].id == ids[i])
                name = n->cfg->members[k].name;
        ms[i].name = strdup(name ? name : "");
        json_decref(at);
        if (ms[i].name == NULL || rv != 0) {
            table_free(ms, count);
            free(ids);
            return -ENOMEM;
        }
    }
    free(ids);
    qsort(ms, count, sizeof(*ms), cmp_member_id);
    table_free(n->members, n->n_members);
    n->members = ms;
    n->n_members = count;
    return 0;
}

const struct raftd_member_cfg *members_find(const struct raftd *n,
                                            uint64_t id)
{
    for (size_t i = 0; i < n->n_members; i++)
        if (n->members[i].id == id)
            return &n->members[i];
    return NULL;
}

bool members_is_removed(const struct raftd *n, uint64_t id)
{
    for (size_t i = 0; i < n->n_removed; i++)
        if (n->removed[i] == id)
            return true;
    return false;
}

/* The member whose peer URLs include url (other than skip), or NULL. */
const struct raftd_member_cfg *members_find_url(const struct raftd *n,
                                                const char *url,
                                                uint64_t skip)
{
    for (size_t i = 0; i < n->n_members; i++) {
        const struct raftd_member_cfg *m = &n->members[i];
        for (size_t k = 0; m->id != skip && k < m->peer_urls.n; k++)
            if (strcmp(m->peer_urls.v[k], url) == 0)
                return m;
    }
    return NULL;
}

/* ---- the transport follows the table ------------------------------------ */

static void members_peer_removed(void *data, uint64_t from);
static int members_answer(void *data, struct store_buf *out);

int members_sync_transport(struct raftd *n)
{
    int rv;
    if (n->closing)
        return 0;
    if (n->peers == NULL) {
        struct peer_callbacks pc = {.data = n,
                                    .recv = node_recv,
                                    .snapshot = node_recv_snapshot,
                                    .removed = members_peer_removed,
                                    .members = members_answer};
        /* A cluster of one never binds its peer URL (as before); the
         * transport starts when a second member appears. */
        if (n->n_members < 2 && !n->joining)
            return 0;
        /* Our own entry gives the transport its source address: the
         * peer URL we advertise (the table may not list us yet). */
        struct raftd_member_cfg self = {
            .id = n->member_id,
            .peer_urls = n->cfg->initial_advertise_peer_urls};
        rv = peer_transport_new(n->loop, &n->log, n->cluster_id,
                                n->member_id, &self, 1, &pc, &n->peers);
        if (rv != 0)
            return rv;
        n->handles_open++;
        for (size_t i = 0; i < n->cfg->listen_peer_urls.n; i++) {
            const char *url = n->cfg->listen_peer_urls.v[i];
            rv = peer_transport_listen(n->peers, url);
            if (rv != 0) {
                raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                           "listen tcp %s: %s", url,
                           rv > -4096 ? uv_strerror(rv) : "error");
                return rv;
            }
        }
    }
    for (size_t i = 0; i < n->n_members; i++) {
        const struct raftd_member_cfg *m = &n->members[i];
        if (m->id != n->member_id && m->peer_urls.n > 0) {
            rv = peer_transport_add(n->peers, m->id, m->peer_urls.v[0]);
            if (rv != 0)
                return rv;
        }
    }
    for (size_t i = 0; i < n->n_removed; i++) {
        rv = peer_transport_remove(n->peers, n->removed[i]);
        if (rv != 0)
            return rv;
    }
    return 0;
}

/* A store write under /_etcfs/members or a conf change was applied. */
void members_changed(struct raftd *n)
{
    if (members_reload(n) != 0 || members_sync_transport(n) != 0)
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                   "updating the member table failed");
}

/* ---- stopping a removed member ------------------------------------------ */

void members_stop_removed(struct raftd *n, const char *how)
{
    if (n->removed_self || n->closing)
        return;
    n->removed_self = true;
    n->removed_ns = node_now_ns();
    raftd_logf(&n->log, RAFTD_LOG_ERROR, "etcdserver",
               "the member has been permanently removed from the cluster "
               "(%s)",
               how);
}

static void members_peer_removed(void *data, uint64_t from)
{
    struct raftd *n = data;
    char how[64];
    snprintf(how, sizeof(how), "peer %llx refused us",
             (unsigned long long)from);
    members_stop_removed(n, how);
}

/* ---- applying conf changes ---------------------------------------------- */

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static struct node_conf_op *op_take(struct raftd *n, uint64_t id)
{
    for (struct node_conf_op **p = &n->conf_ops; *p; p = &(*p)->next) {
        if ((*p)->w->id_ == id) {
            struct node_conf_op *op = *p;
            *p = op->next;
            return op;
        }
    }
    return NULL;
}

static void op_finish(struct node_conf_op *op, int status)
{
    struct raftd_write_req *w = op->w;
    free(op->data);
    free(op);
    w->cb_(w, status, NULL, NULL);
}

/* Internal writes cannot fail for a reason the cluster would not share
 * (every member applies the same ones): only the event is dropped. */
static void store_done(struct store_event **ev, struct store_error *err)
{
    if (*ev)
        store_event_unref(*ev);
    *ev = NULL;
    store_error_clear(err);
}

/* etcd's applyConfChange: an add stores the member's raftAttributes (one
 * store index); a removal deletes /members/<id> and creates
 * /removed_members/<id> (two store indexes). Every member applies the same
 * writes, so store indexes stay equal everywhere. */
void members_apply_conf(struct raftd *n, const struct raft_entry *e)
{
    const unsigned char *ctx;
    struct raft_conf_change cc;
    struct store_event *ev = NULL;
    struct store_error err;
    struct store_buf b;
    struct node_conf_op *op = NULL;
    uint64_t req_id = 0;
    char path[96];

    if (raft_conf_change_decode(e->data, e->len, &cc) != 0)
        return;
    ctx = cc.context;
    if (cc.context_len >= 8) {
        req_id = get_le64(ctx);
        ctx += 8;
    }
    memset(&err, 0, sizeof(err));
    store_buf_init(&b);
    if (cc.op == RAFT_CONF_ADD_VOTER) {
        if (cc.context_len > 8) {
            store_buf_append(&b, ctx, cc.context_len - 8);
        } else {
            /* A bootstrap entry: --initial-cluster has the URLs (or,
             * on a joining member, the list the cluster gave it). */
            const struct raftd_member_cfg *m = NULL;
            for (size_t i = 0; i < n->cfg->n_members; i++)
                if (n->cfg->members[i].id == cc.node)
                    m = &n->cfg->members[i];
            if (m == NULL)
                m = members_find(n, cc.node);
            members_attrs_json(&b, m ? &m->peer_urls : NULL);
        }
        snprintf(path, sizeof(path), MEMBERS_DIR "/%llx/raftAttributes",
                 (unsigned long long)cc.node);
        store_set(n->store, path, false, b.data, b.len, 0, false, 0, &ev,
                  &err);
        store_done(&ev, &err);
        raftd_logf(&n->log, RAFTD_LOG_INFO, "membership",
                   "added member %llx %.*s to cluster %s",
                   (unsigned long long)cc.node, (int)b.len,
                   b.data ? b.data : "", n->cluster_id_hex);
    } else {
        snprintf(path, sizeof(path), MEMBERS_DIR "/%llx",
                 (unsigned long long)cc.node);
        store_delete(n->store, path, true, true, 0, &ev, &err);
        store_done(&ev, &err);
        snprintf(path, sizeof(path), REMOVED_DIR "/%llx",
                 (unsigned long long)cc.node);
        store_create(n->store, path, false, "", 0, false, 0, false, 0, &ev,
                     &err);
        store_done(&ev, &err);
        raftd_logf(&n->log, RAFTD_LOG_INFO, "membership",
                   "removed member %llx from cluster %s",
                   (unsigned long long)cc.node, n->cluster_id_hex);
    }
    store_buf_free(&b);
    members_changed(n);
    if (cc.op == RAFT_CONF_REMOVE_VOTER && cc.node == n->member_id)
        members_stop_removed(n, "applied its own removal");
    if (req_id != 0 && (op = op_take(n, req_id)) != NULL)
        op_finish(op, 0);
}

/* ---- proposing conf changes --------------------------------------------- */

int members_propose(struct raftd *n, struct raftd_write_req *req,
                    bool add, uint64_t id, const char *attrs,
                    raftd_write_cb cb)
{
    struct raft_conf_change cc;
    struct node_conf_op *op;
    size_t alen = attrs ? strlen(attrs) : 0;
    unsigned char *ctx;
    int rv;

    if (n->closing)
        return -ECANCELED;
    if (n->wal_error)
        return -EIO;
    op = calloc(1, sizeof(*op));
    ctx = malloc(8 + alen);
    if (op == NULL || ctx == NULL) {
        free(op);
        free(ctx);
        return -ENOMEM;
    }
    req->id_ = ++n->next_req_id;
    req->cb_ = cb;
    req->start_ns_ = node_now_ns();
    put_le64(ctx, req->id_);
    if (alen)
        memcpy(ctx + 8, attrs, alen);
    cc.op = add ? RAFT_CONF_ADD_VOTER : RAFT_CONF_REMOVE_VOTER;
    cc.node = id;
    cc.context = ctx;
    cc.context_len = 8 + alen;
    rv = raft_conf_change_encode(&cc, &op->data, &op->len);
    free(ctx);
    if (rv == 0)
        rv = raft_forward(n->raft, RAFT_ENTRY_CONF_CHANGE, op->data, op->len);
    /* A pending conf change on the leader: try again later, as a dropped
     * proposal would be. */
    if (rv == -RAFT_ECONFPENDING)
        rv = 0;
    if (rv != 0) {
        free(op->data);
        free(op);
        if (rv == -RAFT_ENOTLEADER || rv == -RAFT_ENOLEADER ||
            rv == -RAFT_ETRANSFER)
            return -EAGAIN;
        return rv == -RAFT_EBADCONF ? -EINVAL
                                    : (rv < 0 && rv > -4096 ? rv : -EIO);
    }
    op->w = req;
    op->tried_ns = req->start_ns_;
    op->next = n->conf_ops;
    n->conf_ops = op;
    node_kick(n);
    return 0;
}

/* Every sync tick: propose again what has not been applied (the core
 * refuses a duplicate once the first one is in: an add of a voter, a
 * removal of a non-voter), fail what is older than etcd's request timeout,
 * and stop a member that learned it was removed (after 10 heartbeats, as
 * etcd's stopWithDelay, so its last messages can go out). */
void members_housekeeping(struct raftd *n)
{
    int64_t now = node_now_ns();
    int64_t cutoff = now - (5000 + 2 * (int64_t)n->cfg->election_ms) *
                               1000000;
    struct node_conf_op **p = &n->conf_ops;

    while (*p) {
        struct node_conf_op *op = *p;
        if (op->w->start_ns_ < cutoff) {
            *p = op->next;
            op_finish(op, -ETIMEDOUT);
            continue;
        }
        if (now - op->tried_ns >= MEMBERS_RETRY_NS) {
            op->tried_ns = now;
            raft_forward(n->raft, RAFT_ENTRY_CONF_CHANGE, op->data, op->len);
        }
        p = &op->next;
    }
    if (n->removed_self && n->stop_cb != NULL &&
        now - n->removed_ns >= 10 * (int64_t)n->cfg->heartbeat_ms * 1000000) {
        void (*cb)(void *, const char *) = n->stop_cb;
        n->stop_cb = NULL;
        cb(n->stop_arg,
           "the member has been permanently removed from the cluster");
    }
}

void members_close(struct raftd *n)
{
    while (n->conf_ops) {
        struct node_conf_op *op = n->conf_ops;
        n->conf_ops = op->next;
        op_finish(op, -ECANCELED);
    }
}

void members_free(struct raftd *n)
{
    table_free(n->members, n->n_members);
    n->members = NULL;
    n->n_members = 0;
    free(n->removed);
    n->removed = NULL;
}

void raftd_on_stop(struct raftd *n, void (*cb)(void *arg, const char *why),
                   void *arg)
{
    n->stop_cb = cb;
    n->stop_arg = arg;
}

/* ---- joining: the member list over the peer port ------------------------ */

/* The MEMBERS answer: {"clusterID":"<hex>","members":[{"id":"<hex>",
 * "name":"..","peerURLs":[..]}..],"removed":["<hex>"..]}. */
static int members_answer(void *data, struct store_buf *out)
{
    struct raftd *n = data;
    char hex[64];
    int rv;
    rv = store_buf_append(out, "{\"clusterID\":\"", 14);
    if (rv == 0)
        rv = store_buf_append(out, n->cluster_id_hex,
                              strlen(n->cluster_id_hex));
    if (rv == 0)
        rv = store_buf_append(out, "\",\"members\":[", 13);
    for (size_t i = 0; rv == 0 && i < n->n_members; i++) {
        const struct raftd_member_cfg *m = &n->members[i];
        snprintf(hex, sizeof(hex), "%s{\"id\":\"%llx\",\"name\":",
                 i ? "," : "", (unsigned long long)m->id);
        rv = store_buf_append(out, hex, strlen(hex));
        if (rv == 0)
            rv = store_json_string(out, m->name, strlen(m->name));
        if (rv == 0)
            rv = store_buf_append(out, ",\"peerURLs\":[", 13);
        if (rv == 0)
            rv = members_urls_json(out, &m->peer_urls);
        if (rv == 0)
            rv = store_buf_append(out, "]}", 2);
    }
    if (rv == 0)
        rv = store_buf_append(out, "],\"removed\":[", 13);
    for (size_t i = 0; rv == 0 && i < n->n_removed; i++) {
        snprintf(hex, sizeof(hex), "%s\"%llx\"", i ? "," : "",
                 (unsigned long long)n->removed[i]);
        rv = store_buf_append(out, hex, strlen(hex));
    }
    if (rv == 0)
        rv = store_buf_append(out, "]}", 2);
    return rv;
}

/* Ask one peer URL for the member list (blocking, startup only). */
static int join_ask(const char *url, struct store_buf *out)
{
    struct sockaddr_storage ss;
    struct http_url u;
    struct pollfd pfd;
    unsigned char req[PEER_FRAME_HEADER] = {0, 0, 0, 1,
                                            PEER_KIND_MEMBERS_REQ};
    const char *host;
    int fd, rv, err = 0;
    socklen_t el = sizeof(err);

    if (http_url_parse(url, &u) != 0)
        return -EINVAL;
    host = strcmp(u.host, "localhost") == 0 ? "127.0.0.1" : u.host;
    memset(&ss, 0, sizeof(ss));
    if (uv_ip4_addr(host, u.port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, u.port, (struct sockaddr_in6 *)&ss) != 0)
        return -EINVAL;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    rv = connect(fd, (struct sockaddr *)&ss,
                 ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                         : sizeof(struct sockaddr_in6));
    if (rv != 0 && errno != EINPROGRESS) {
        rv = -errno;
        goto out;
    }
    pfd.fd = fd;
    pfd.events = POLLOUT;
    if (poll(&pfd, 1, MEMBERS_JOIN_TIMEOUT_MS) != 1 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
        rv = err ? -err : -ETIMEDOUT;
        goto out;
    }
    if (write(fd, req, sizeof(req)) != (ssize_t)sizeof(req)) {
        rv = -EIO;
        goto out;
    }
    /* The listener writes one frame and closes. */
    for (;;) {
        char buf[4096];
        ssize_t got;
        pfd.events = POLLIN;
        if (poll(&pfd, 1, MEMBERS_JOIN_TIMEOUT_MS) != 1) {
            rv = -ETIMEDOUT;
            goto out;
        }
        got = read(fd, buf, sizeof(buf));
        if (got < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (got <= 0)
            break;
        if (store_buf_append(out, buf, (size_t)got) != 0) {
            rv = -ENOMEM;
            goto out;
        }
    }
    rv = 0;
out:
    close(fd);
    return rv;
}

void members_answer_free(struct members_answer *a)
{
    table_free(a->members, a->n_members);
    free(a->removed);
    memset(a, 0, sizeof(*a));
}

int members_answer_parse(const uint8_t *payload, size_t len,
                         struct members_answer *a)
{
    size_t i;
    json_t *j, *ms, *m, *v;
    int rv = -EBADMSG;

    memset(a, 0, sizeof(*a));
    j = json_loadb((const char *)payload, len, 0, NULL);
    ms = json_object_get(j, "members");
    v = json_object_get(j, "clusterID");
    if (!json_is_string(v) || !json_is_array(ms))
        goto out;
    a->cluster_id = strtoull(json_string_value(v), NULL, 16);
    rv = -ENOMEM;
    a->members = calloc(json_array_size(ms) + 1, sizeof(*a->members));
    if (a->members == NULL)
        goto out;
    json_array_foreach(ms, i, m) {
        struct raftd_member_cfg *mc = &a->members[a->n_members++];
        v = json_object_get(m, "id");
        mc->id = json_is_string(v) ? strtoull(json_string_value(v), NULL, 16)
                                   : 0;
        v = json_object_get(m, "name");
        mc->name = strdup(json_is_string(v) ? json_string_value(v) : "");
        if (mc->name == NULL ||
            urls_from_json(json_object_get(m, "peerURLs"), &mc->peer_urls))
            goto out;
        /* Compared with --initial-cluster's sorted lists. (No list when
         * peerURLs is not an array: qsort must not see NULL.) */
        if (mc->peer_urls.n > 1)
            qsort(mc->peer_urls.v, mc->peer_urls.n, sizeof(char *), cmp_str);
    }
    ms = json_object_get(j, "removed");
    a->removed = calloc(json_array_size(ms) + 1, sizeof(uint64_t));
    if (a->removed == NULL)
        goto out;
    json_array_foreach(ms, i, v)
        if (json_is_string(v))
            a->removed[a->n_removed++] = strtoull(json_string_value(v), NULL,
                                                  16);
    rv = 0;
out:
    json_decref(j);
    if (rv != 0)
        members_answer_free(a);
    return rv;
}

/* A MEMBERS frame into the table, the removed ids and the cluster id.
 * -EBADMSG if it is not one. */
static int join_parse(struct raftd *n, const struct store_buf *b)
{
    struct members_answer a;
    const uint8_t *payload;
    uint8_t kind;
    size_t plen;
    int rv;

    if (peer_frame_next(b->data, b->len, &kind, &payload, &plen) <= 0 ||
        kind != PEER_KIND_MEMBERS)
        return -EBADMSG;
    rv = members_answer_parse(payload, plen, &a);
    if (rv != 0)
        return rv;
    table_free(n->members, n->n_members);
    free(n->removed);
    n->cluster_id = a.cluster_id;
    n->members = a.members;
    n->n_members = a.n_members;
    n->removed = a.removed;
    n->n_removed = a.n_removed;
    return 0;
}

static bool urls_same(const struct raftd_urls *a, const struct raftd_urls *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return false;
    return true;
}

static void urls_text(const struct raftd_urls *u, char *out, size_t len)
{
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; i < u->n && off + 1 < len; i++)
        off += (size_t)snprintf(out + off, len - off, "%s%s", i ? " " : "",
                                u->v[i]);
}

/* The cluster as etcd prints it (%+v of its RaftCluster), without the
 * client URLs, which the MEMBERS answer does not carry. */
static void cluster_text(const struct raftd *n, char *out, size_t len)
{
    char urls[512];
    size_t off;
    off = (size_t)snprintf(out, len, "{ClusterID:%llx Members:[",
                           (unsigned long long)n->cluster_id);
    for (size_t i = 0; i < n->n_members && off < len; i++) {
        const struct raftd_member_cfg *m = &n->members[i];
        urls_text(&m->peer_urls, urls, sizeof(urls));
        off += (size_t)snprintf(out + off, len - off,
                                "%s&{ID:%llx RaftAttributes:{PeerURLs:[%s] "
                                "IsLearner:false} Attributes:{Name:%s}}",
                                i ? " " : "", (unsigned long long)m->id,
                                urls, m->name);
    }
    for (size_t i = 0; i < n->n_removed && off < len; i++)
        off += (size_t)snprintf(out + off, len - off, "%s%llx",
                                i ? " " : "] RemovedMemberIDs:[",
                                (unsigned long long)n->removed[i]);
    if (off < len)
        snprintf(out + off, len - off, "%s]}",
                 n->n_removed ? "" : "] RemovedMemberIDs:[");
}

/* etcd's GetClusterFromRemotePeers + ValidateClusterAndAssignIDs: ask the
 * other members of --initial-cluster for the cluster, then match every
 * member it has with one of --initial-cluster by peer URLs; ours gives us
 * the id the cluster assigned when it was added (POST /v2/members). */
int members_join(struct raftd *n)
{
    const struct raftd_config *cfg = n->cfg;
    struct store_buf b;
    int rv = -ENOENT;
    char want[512], have[512], cl[2048];

    store_buf_init(&b);
    for (size_t i = 0; rv != 0 && i < cfg->n_members; i++) {
        const struct raftd_member_cfg *m = &cfg->members[i];
        if (strcmp(m->name, cfg->name) == 0)
            continue;
        for (size_t k = 0; rv != 0 && k < m->peer_urls.n; k++) {
            b.len = 0;
            rv = join_ask(m->peer_urls.v[k], &b);
            if (rv == 0)
                rv = join_parse(n, &b);
            if (rv != 0)
                raftd_logf(&n->log, RAFTD_LOG_WARN, "etcdserver",
                           "could not get cluster response from %s: %s",
                           m->peer_urls.v[k], strerror(-rv));
        }
    }
    store_buf_free(&b);
    if (rv != 0) {
        raftd_logf(&n->log, RAFTD_LOG_FATAL, "etcdmain",
                   "cannot fetch cluster info from peer urls: could not "
                   "retrieve cluster information from the given URLs");
        return -ENOENT;
    }
    cluster_text(n, cl, sizeof(cl));
    if (n->n_members != cfg->n_members) {
        raftd_logf(&n->log, RAFTD_LOG_FATAL, "etcdmain",
                   "error validating peerURLs %s: member count is unequal",
                   cl);
        return -EINVAL;
    }
    for (size_t i = 0; i < n->n_members; i++) {
        const struct raftd_member_cfg *em = &n->members[i];
        const struct raftd_member_cfg *lm = NULL;
        for (size_t k = 0; lm == NULL && k < cfg->n_members; k++)
            if (urls_same(&em->peer_urls, &cfg->members[k].peer_urls))
                lm = &cfg->members[k];
        if (lm == NULL) {
            /* etcd's text; its resolver compared the last local member */
            urls_text(&em->peer_urls, have, sizeof(have));
            urls_text(&cfg->members[cfg->n_members - 1].peer_urls, want,
                      sizeof(want));
            raftd_logf(&n->log, RAFTD_LOG_FATAL, "etcdmain",
                       "error validating peerURLs %s: PeerURLs: no match "
                       "found for existing member (%llx, [%s]), last "
                       "resolver error (resolved urls: \"%s\" != \"%s\")",
                       cl, (unsigned long long)em->id, have, have, want);
            return -EINVAL;
        }
        if (strcmp(lm->name, cfg->name) == 0)
            n->member_id = em->id;
    }
    if (n->member_id == 0 || members_is_removed(n, n->member_id)) {
        raftd_logf(&n->log, RAFTD_LOG_FATAL, "etcdmain",
                   "this member's peer URLs are not a member of cluster "
                   "%llx",
                   (unsigned long long)n->cluster_id);
        return -EINVAL;
    }
    n->joining = true;
    raftd_logf(&n->log, RAFTD_LOG_INFO, "etcdserver",
               "joining cluster %llx as member %llx (%zu members)",
               (unsigned long long)n->cluster_id,
               (unsigned long long)n->member_id, n->n_members);
    return 0;
}

/* ---- --force-new-cluster ------------------------------------------------ */

static int conf_entry(struct raftd *n, struct raft_entry *e, bool add,
                      uint64_t id)
{
    struct raft_conf_change cc = {.op = add ? RAFT_CONF_ADD_VOTER
                                            : RAFT_CONF_REMOVE_VOTER,
                                  .node = id};
    struct store_buf ctx;
    int rv;
    store_buf_init(&ctx);
    if (add) {
        rv = store_buf_append(&ctx, "\0\0\0\0\0\0\0\0", 8);
        if (rv == 0)
            rv = members_attrs_json(&ctx,
                                    &n->cfg->initial_advertise_peer_urls);
        if (rv != 0) {
            store_buf_free(&ctx);
            return rv;
        }
        cc.context = ctx.data;
        cc.context_len = ctx.len;
    }
    e->type = RAFT_ENTRY_CONF_CHANGE;
    rv = raft_conf_change_encode(&cc, &e->data, &e->len);
    store_buf_free(&ctx);
    return rv;
}

int members_force_new_cluster(struct raftd *n,
                              const struct raft_snapshot_meta *sm,
                              struct raft_hard_state *hs,
                              struct raft_entry **ents, size_t *n_ents,
                              size_t *first_owned)
{
    struct raft_conf_state conf = sm->conf;
    struct raft_entry *ne;
    struct wal_entry *we;
    struct wal_hard_state whs;
    /* etcd drops the entries after the WAL's commit index. Ours may lag
     * the real one (a commit-only hard state is written with the next
     * batch), so every entry is kept: a new leader would commit them
     * too, and no acknowledged write is lost. */
    size_t keep = *n_ents, extra = 0;
    bool self = false;
    int rv = 0;

    if (keep > 0 && (*ents)[keep - 1].term > hs->term) {
        hs->term = (*ents)[keep - 1].term;
        hs->vote = 0;
    }
    /* The configuration at the end of the log. */
    for (size_t i = 0; i < keep; i++) {
        struct raft_conf_change cc;
        const struct raft_entry *e = &(*ents)[i];
        if (e->type != RAFT_ENTRY_CONF_CHANGE ||
            raft_conf_change_decode(e->data, e->len, &cc) != 0)
            continue;
        if (cc.op == RAFT_CONF_ADD_VOTER) {
            bool have = false;
            for (unsigned k = 0; k < conf.n_voters; k++)
                have |= conf.voters[k] == cc.node;
            if (!have && conf.n_voters < RAFT_MAX_VOTERS)
                conf.voters[conf.n_voters++] = cc.node;
        } else {
            for (unsigned k = 0; k < conf.n_voters; k++)
                if (conf.voters[k] == cc.node)
                    conf.voters[k--] = conf.voters[--conf.n_voters];
        }
    }
    ne = realloc(*ents, (keep + conf.n_voters + 1) * sizeof(*ne));
    if (ne == NULL)
        return -ENOMEM;
    *ents = ne;
    *n_ents = keep;
    *first_owned = keep;
    for (unsigned k = 0; k < conf.n_voters; k++) {
        if (conf.voters[k] == n->member_id) {
            self = true;
            continue;
        }
        rv = conf_entry(n, &ne[keep + extra], false, conf.voters[k]);
        if (rv != 0)
            break;
        extra++;
    }
    if (rv == 0 && !self) {
        rv = conf_entry(n, &ne[keep + extra], true, n->member_id);
        if (rv == 0)
            extra++;
    }
    for (size_t i = 0; i < extra; i++) {
        ne[keep + i].term = hs->term;
        ne[keep + i].index = sm->index + keep + i + 1;
    }
    *n_ents = keep + extra;
    if (rv != 0)
        return rv;
    hs->commit = sm->index + keep + extra;
    we = calloc(extra + 1, sizeof(*we));
    if (we == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < extra; i++) {
        we[i].term = ne[keep + i].term;
        we[i].index = ne[keep + i].index;
        we[i].type = (uint32_t)ne[keep + i].type;
        we[i].data = ne[keep + i].data;
        we[i].len = ne[keep + i].len;
    }
    whs.term = hs->term;
    whs.vote = hs->vote;
    whs.commit = hs->commit;
    /* Entries after the commit index are replaced by these (the WAL's
     * replay keeps the last record written for an index). */
    rv = wal_append_sync(n->wal, &whs, we, extra);
    free(we);
    if (rv != 0) {
        raftd_logf(&n->log, RAFTD_LOG_ERROR, "raftd",
                   "--force-new-cluster: writing the WAL: %s", strerror(-rv));
        return rv;
    }
    raftd_logf(&n->log, RAFTD_LOG_WARN, "etcdserver",
               "forcing restart of member %llx in cluster %llx at commit "
               "index %llu: removed %zu other member(s) from the "
               "configuration",
               (unsigned long long)n->member_id,
               (unsigned long long)n->cluster_id,
               (unsigned long long)hs->commit, self ? extra : extra - 1);
    return 0;
}
