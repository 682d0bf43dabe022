/* Shared helpers of the v2 HTTP API files (api.c, api_misc.c): Go-style
 * error bodies, etcd's CORS headers and method checks. Internal. */
#ifndef ETCFS_RAFTD_API_INT_H
#define ETCFS_RAFTD_API_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "node_int.h"

void api_cors(struct http_request *req);
void api_header_u64(struct http_request *req, const char *name, uint64_t v);
void api_http_error(struct http_request *req, int status, const char *msg);
void api_not_found(struct http_request *req);
bool api_allow(struct http_request *req, const char *allow_list);
void api_message_error(struct raftd *n, struct http_request *req, int status,
                       const char *msg);
/* Every endpoint but /v2/keys. path is clean (no redirect needed). */
void api_misc(struct raftd *n, struct http_request *req, const char *path);
void api_metrics_count(struct raftd *n, const char *method);
/* 1 if body is one valid JSON value by Go's rules (api_members.c). */
int api_json_valid(const char *body, size_t len);
/* The body of a POST/PUT on /v2/members, {"peerURLs": [...]}, decoded as
 * etcd's json.Unmarshal + types.NewURLs: 0 and *urls (sorted; the caller
 * frees each string and the array), or -1 with Go's error text in msg. */
int api_members_decode(const char *body, size_t len, char *msg,
                       size_t msglen, struct raftd_urls *urls);
/* POST/PUT/DELETE on /v2/members[/sub] (api_members.c). */
void api_members_change(struct raftd *n, struct http_request *req,
                        const char *sub);

#endif /* ETCFS_RAFTD_API_INT_H */
