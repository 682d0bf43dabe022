/* The v2 endpoints other than /v2/keys, answer for answer like etcd 3.4:
 * /v2/members, /v2/machines, /v2/stats/{self,leader,store}, /version,
 * /health, /metrics, /v2/auth/enable; 404 for the rest. */
#include <string.h>

#include "api_int.h"

static void json_reply(struct http_request *req, int status,
                       const struct store_buf *b)
{
    http_response_add_header(req, "Content-Type", "application/json");
    http_respond(req, status, b->data, b->len);
}

/* The inside of the "clientURLs" JSON array another member published
 * (node_publish writes {"name":..,"clientURLs":[..]} to
 * /_etcfs/members/<id>/attributes through the log, as etcd publishes its
 * attributes), appended to out; nothing if not published yet. */
static void member_client_urls_json(struct raftd *n, uint64_t id,
                                    struct store_buf *out)
{
    char path[96];
    struct store_event *ev = NULL;
    struct store_error err;
    const char *v, *end, *p;
    bool in_str = false;

    snprintf(path, sizeof(path), "/_etcfs/members/%llx/attributes",
             (unsigned long long)id);
    memset(&err, 0, sizeof(err));
    if (store_read(n->store, path, false, node_now_ns(), &ev, &err) != 0) {
        store_error_clear(&err);
        return;
    }
    v = ev->node.value;
    if (v != NULL && (p = strstr(v, "\"clientURLs\":[")) != NULL) {
        p += 14;
        end = v + ev->node.value_len;
        for (const char *q = p; q < end; q++) {
            if (in_str && *q == '\\') {
                q++;
                continue;
            }
            if (*q == '"')
                in_str = !in_str;
            else if (!in_str && *q == ']') {
                store_buf_append(out, p, (size_t)(q - p));
                break;
            }
        }
    }
    store_event_unref(ev);
    store_error_clear(&err);
}

/* One member as httptypes.Member. */
static int member_json(struct raftd *n, struct store_buf *b,
                       const struct raftd_member_cfg *m, bool self)
{
    const struct raftd_config *cfg = n->cfg;
    char id[24];
    int rv;
    snprintf(id, sizeof(id), "%llx", (unsigned long long)m->id);
    rv = store_buf_append(b, "{\"id\":\"", 7);
    if (rv == 0)
        rv = store_buf_append(b, id, strlen(id));
    if (rv == 0)
        rv = store_buf_append(b, "\",\"name\":", 9);
    if (rv == 0)
        rv = self ? store_json_string(b, cfg->name, strlen(cfg->name))
                  : store_json_string(b, m->name, strlen(m->name));
    if (rv == 0)
        rv = store_buf_append(b, ",\"peerURLs\":[", 13);
    if (rv == 0)
        rv = members_urls_json(b, &m->peer_urls);
    if (rv == 0)
        rv = store_buf_append(b, "],\"clientURLs\":[", 16);
    if (!self && rv == 0)
        member_client_urls_json(n, m->id, b);
    if (self && rv == 0)
        rv = members_urls_json(b, &cfg->advertise_client_urls);
    if (rv == 0)
        rv = store_buf_append(b, "]}", 2);
    return rv;
}

/* The members of the configuration as the store has it (members.c); just
 * this member if the table is still empty (a joining member before it
 * hears from the cluster). */
static void members_list(struct raftd *n, const struct raftd_member_cfg **ms,
                         size_t *count, struct raftd_member_cfg *self_buf)
{
    const struct raftd_config *cfg = n->cfg;
    if (n->n_members > 0) {
        *ms = n->members;
        *count = n->n_members;
        return;
    }
    self_buf->name = cfg->name;
    self_buf->peer_urls = cfg->initial_advertise_peer_urls;
    self_buf->id = n->member_id;
    *ms = self_buf;
    *count = 1;
}

static void api_members(struct raftd *n, struct http_request *req,
                        const char *sub)
{
    struct store_buf *b = api_scratch();
    const struct raftd_member_cfg *ms;
    struct raftd_member_cfg self_buf;
    size_t count;
    int rv = 0;

    if (!api_allow(req, "GET,POST,DELETE,PUT"))
        return;
    http_response_add_header(req, "X-Etcd-Cluster-Id", n->cluster_id_hex);
    if (strcmp(req->method, "GET") != 0) {
        api_members_change(n, req, sub);
        return;
    }
    members_list(n, &ms, &count, &self_buf);
    b->len = 0;
    if (sub[0] == '\0') {
        rv = store_buf_append(b, "{\"members\":[", 12);
        for (size_t i = 0; rv == 0 && i < count; i++) {
            if (i)
                rv = store_buf_append(b, ",", 1);
            if (rv == 0)
                rv = member_json(n, b, &ms[i], ms[i].id == n->member_id);
        }
        if (rv == 0)
            rv = store_buf_append(b, "]}\n", 3);
    } else if (strcmp(sub, "leader") == 0) {
        uint64_t lid = raft_leader(n->raft);
        const struct raftd_member_cfg *lm = NULL;
        for (size_t i = 0; i < count; i++)
            if (ms[i].id == lid)
                lm = &ms[i];
        if (lid == 0 || lm == NULL) {
            api_message_error(n, req, 503, "During election");
            return;
        }
        rv = member_json(n, b, lm, lid == n->member_id);
        if (rv == 0)
            rv = store_buf_append(b, "\n", 1);
    } else {
        api_message_error(n, req, 404, "Not found");
        return;
    }
    if (rv != 0) {
        http_respond(req, 500, NULL, 0);
        return;
    }
    json_reply(req, 200, b);
}

/* etcd's v2 auth with auth never enabled: no users, the built-in root
 * role; changes are refused. kind is "User" or "Role"; rest is what
 * follows /v2/auth/users or /v2/auth/roles. */
static void api_auth_list(struct raftd *n, struct http_request *req,
                          const char *rest, const char *kind)
{
    static const char root_role[] =
        "{\"role\":\"root\",\"permissions\":{\"kv\":{\"read\":[\"/*\"],"
        "\"write\":[\"/*\"]}}}";
    struct store_buf *b = api_scratch();
    const char *name = rest[0] == '/' ? rest + 1 : rest;
    char msg[600];

    b->len = 0;
    if (strchr(name, '/') != NULL) {
        api_message_error(n, req, 400, "Invalid path");
        return;
    }
    if (name[0] == '\0') {
        if (!api_allow(req, "GET"))
            return;
        http_response_add_header(req, "X-Etcd-Cluster-Id", n->cluster_id_hex);
        if (kind[0] == 'U') {
            store_buf_append(b, "{\"users\":null}\n", 15);
        } else {
            store_buf_append(b, "{\"roles\":[", 10);
            store_buf_append(b, root_role, sizeof(root_role) - 1);
            store_buf_append(b, "]}\n", 3);
        }
        json_reply(req, 200, b);
        return;
    }
    if (!api_allow(req, "GET,PUT,DELETE"))
        return;
    http_response_add_header(req, "X-Etcd-Cluster-Id", n->cluster_id_hex);
    if (strcmp(req->method, "PUT") == 0) {
        /* etcd decodes the body first; a valid one would create or change
         * a user or role, which raftd does not support. */
        if (!api_json_valid(req->body, req->body_len))
            api_message_error(n, req, 400, "Invalid JSON in request body.");
        else
            api_message_error(n, req, 500, "auth is not supported by raftd");
        return;
    }
    if (strcmp(req->method, "DELETE") == 0) {
        if (kind[0] == 'R' && strcmp(name, "root") == 0) {
            api_message_error(n, req, 403,
                              "auth: Cannot modify role root: is root role.");
            return;
        }
        snprintf(msg, sizeof(msg),
                 kind[0] == 'U' ? "auth: User %.500s does not exist"
                                : "auth: Role %.500s doesn't exist.",
                 name);
        api_message_error(n, req, 404, msg);
        return;
    }
    if (kind[0] == 'R' && strcmp(name, "root") == 0) {
        store_buf_append(b, root_role, sizeof(root_role) - 1);
        store_buf_append(b, "\n", 1);
        json_reply(req, 200, b);
        return;
    }
    snprintf(msg, sizeof(msg), "auth: %s %.500s does not exist.", kind, name);
    api_message_error(n, req, 404, msg);
}

void api_misc(struct raftd *n, struct http_request *req, const char *path)
{
    struct store_buf *b = api_scratch();
    b->len = 0;

    if (strcmp(path, "/v2/members") == 0) {
        api_members(n, req, "");
    } else if (strncmp(path, "/v2/members/", 12) == 0) {
        api_members(n, req, path + 12);
    } else if (strcmp(path, "/v2/machines") == 0) {
        /* Every member's client URLs, in member order; another member's
         * as it published them (the JSON strings, quotes dropped: URLs
         * are validated and need no unescaping). */
        const struct raftd_member_cfg *ms;
        struct raftd_member_cfg self_buf;
        struct store_buf tmp;
        size_t count;
        bool first = true;
        if (!api_allow(req, "GET,HEAD"))
            return;
        members_list(n, &ms, &count, &self_buf);
        store_buf_init(&tmp);
        for (size_t k = 0; k < count; k++) {
            if (ms[k].id == n->member_id) {
                const struct raftd_urls *u = &n->cfg->advertise_client_urls;
                for (size_t i = 0; i < u->n; i++) {
                    if (!first)
                        store_buf_append(b, ", ", 2);
                    first = false;
                    store_buf_append(b, u->v[i], strlen(u->v[i]));
                }
                continue;
            }
            tmp.len = 0;
            member_client_urls_json(n, ms[k].id, &tmp);
            for (size_t i = 0; i < tmp.len; i++) {
                size_t j;
                if (tmp.data[i] != '"')
                    continue;
                for (j = i + 1; j < tmp.len && tmp.data[j] != '"'; j++)
                    ;
                if (!first)
                    store_buf_append(b, ", ", 2);
                first = false;
                store_buf_append(b, tmp.data + i + 1, j - i - 1);
                i = j;
            }
        }
        store_buf_free(&tmp);
        http_respond(req, 200, b->data, b->len);
    } else if (strcmp(path, "/v2/stats/store") == 0) {
        if (!api_allow(req, "GET"))
            return;
        store_stats_json(n->store, b);
        json_reply(req, 200, b);
    } else if (strcmp(path, "/v2/stats/self") == 0) {
        if (!api_allow(req, "GET"))
            return;
        stats_self_json(n, b);
        json_reply(req, 200, b);
    } else if (strcmp(path, "/v2/stats/leader") == 0) {
        if (!api_allow(req, "GET"))
            return;
        if (raft_role(n->raft) != RAFT_LEADER) {
            api_message_error(n, req, 403, "not current leader");
            return;
        }
        stats_leader_json(n, b);
        json_reply(req, 200, b);
    } else if (strcmp(path, "/version") == 0) {
        static const char v[] = "{\"etcdserver\":\"" RAFTD_VERSION
                                "\",\"etcdcluster\":\"" RAFTD_CLUSTER_VERSION
                                "\"}";
        if (!api_allow(req, "GET"))
            return;
        http_response_add_header(req, "Content-Type", "application/json");
        http_respond(req, 200, v, sizeof(v) - 1);
    } else if (strcmp(path, "/health") == 0) {
        static const char ok[] = "{\"health\":\"true\"}";
        static const char bad[] = "{\"health\":\"false\"}";
        bool healthy = raft_leader(n->raft) != 0 && !n->wal_error;
        if (!api_allow(req, "GET"))
            return;
        if (healthy)
            http_respond(req, 200, ok, sizeof(ok) - 1);
        else
            http_respond(req, 503, bad, sizeof(bad) - 1);
    } else if (strcmp(path, "/metrics") == 0) {
        if (metrics_render(n, b) != 0) {
            http_respond(req, 500, NULL, 0);
            return;
        }
        http_response_add_header(req, "Content-Type",
                                 "text/plain; version=0.0.4; charset=utf-8");
        http_respond(req, 200, b->data, b->len);
    } else if (strncmp(path, "/v2/auth/users", 14) == 0 &&
               (path[14] == '\0' || path[14] == '/')) {
        api_auth_list(n, req, path + 14, "User");
    } else if (strncmp(path, "/v2/auth/roles", 14) == 0 &&
               (path[14] == '\0' || path[14] == '/')) {
        api_auth_list(n, req, path + 14, "Role");
    } else if (strcmp(path, "/v2/auth/enable") == 0) {
        static const char off[] = "{\"enabled\":false}\n";
        if (!api_allow(req, "GET,PUT,DELETE"))
            return;
        http_response_add_header(req, "X-Etcd-Cluster-Id", n->cluster_id_hex);
        if (strcmp(req->method, "DELETE") == 0) {
            api_message_error(n, req, 409, "auth: already disabled");
            return;
        }
        if (strcmp(req->method, "PUT") == 0) {
            api_message_error(n, req, 409,
                              "auth: No root user available, please create "
                              "one");
            return;
        }
        http_response_add_header(req, "Content-Type", "application/json");
        http_respond(req, 200, off, sizeof(off) - 1);
    } else {
        api_not_found(req);
    }
}
