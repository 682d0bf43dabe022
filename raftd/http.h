/* HTTP/1.1 server on libuv + http-parser for raftd's etcd v2 API: listeners,
 * keep-alive and pipelining (one request in flight per connection, answers
 * strictly in order, as Go's net/http), Go-compatible query/form decoding,
 * whole or chunked-streamed responses formatted byte for byte as Go writes
 * them, and the URL parsing raftd's flags need. See docs/http.md. */
#ifndef ETCFS_HTTP_H
#define ETCFS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

/* ---- URLs (config flags) ---------------------------------------------- */

#define HTTP_URL_HOST_MAX 256

/* One parsed listen/advertise URL such as "http://127.0.0.1:2379" or
 * "http://[::1]:2379". host never has brackets; port is always present
 * (etcd refuses listen URLs without one). */
struct http_url {
    char scheme[8];                  /* "http" or "https", lower case */
    char host[HTTP_URL_HOST_MAX];    /* "127.0.0.1", "::1", "localhost" */
    uint16_t port;
};

/* Parses one URL. Accepts scheme http or https (the caller decides whether
 * it supports TLS), a host (name, IPv4, [IPv6], or empty for all
 * interfaces) and a port 0..65535 (0: any free port when listening); a
 * trailing "/" path is tolerated, any other path, query, user info or
 * missing port is -EINVAL. url: borrowed for the call. */
int http_url_parse(const char *url, struct http_url *out);

/* Parses a comma-separated URL list as etcd's flags take it
 * ("http://a:1,http://b:2"; empty items are -EINVAL). On success *out is
 * an array of *n URLs returned to the caller, freed with free(). On error
 * nothing is allocated. list: borrowed for the call. */
int http_url_parse_list(const char *list, struct http_url **out, size_t *n);

/* ---- Request ----------------------------------------------------------- */

/* One header as received. name and value are NUL-terminated; value has
 * surrounding whitespace removed. Names keep the client's spelling: look
 * them up with http_request_header(), which ignores case. */
struct http_header {
    const char *name;
    const char *value;
};

/* One decoded query or form parameter. Decoding is Go's url.QueryUnescape:
 * "%xx" -> byte, '+' -> ' '. Both strings are NUL-terminated, but a value
 * may hold a NUL byte ("%00"), hence the lengths. */
struct http_param {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
};

struct http_request;
struct http_server;

/* Called once if the connection goes away, or the server closes, while the
 * request is not yet finished. status: -ECONNRESET (client closed, reset or
 * a write failed), -ENOBUFS (the streamed output exceeded
 * max_output_bytes: the library dropped the connection), -ECANCELED
 * (http_server_close). Called from the loop, never from inside an http_*
 * call made by the handler. The request stays valid afterwards: the handler
 * must still finish it (http_respond or http_stream_end), and may do so
 * inside this callback. What it writes afterwards is still sent if the
 * socket is writable (a client that only half-closed, i.e. sent EOF, gets
 * the answer, as from Go) and silently dropped otherwise. */
typedef void (*http_close_cb)(struct http_request *req, int status);

/* A parsed request. Every field is read-only for the handler except data.
 * All strings are NUL-terminated and owned by the library; they stay valid
 * until the request is finished. */
struct http_request {
    void *data;             /* the handler's, untouched by the library */
    void *server_data;      /* http_server_config.data */
    struct http_server *server;

    const char *method;     /* "GET", "PUT", ... as sent (upper case) */
    int http_major;         /* 1 */
    int http_minor;         /* 0 or 1 */
    int keep_alive;         /* 1 if the connection stays open after it */
    unsigned seq;           /* requests the connection sent before this one */
    unsigned moves;         /* times the connection moved (http_request_move) */

    /* The request-target split as Go's url.ParseRequestURI does (no
     * fragment: a '#' stays in the path or query). raw_path is the bytes
     * before '?'; path is raw_path percent-decoded ('+' stays '+', "%2F"
     * becomes '/'), path_len counts a possible "%00". A request whose path
     * does not decode never reaches the handler: Go answers it with a bare
     * 400, and so does this library. For an absolute-form target
     * ("http://h/p") these hold the path part only. */
    const char *raw_path;
    const char *path;
    size_t path_len;
    const char *raw_query;  /* bytes after '?', "" if none */

    /* Headers in arrival order. */
    const struct http_header *headers;
    size_t header_count;

    /* Body, de-chunked if it was sent chunked; NUL-terminated; "" if none. */
    const char *body;
    size_t body_len;

    /* Query parameters (url.ParseQuery of raw_query), in order, every
     * repetition kept. */
    const struct http_param *query;
    size_t query_count;

    /* Go's r.Form after r.ParseForm(): for POST, PUT and PATCH with
     * Content-Type application/x-www-form-urlencoded, the body's parameters
     * first (post_form_count of them), then the query's. Lookups take the
     * first match, so a body value beats a query value, as in Go. */
    const struct http_param *form;
    size_t form_count;
    size_t post_form_count;

    /* 0, or -EINVAL when Go's r.ParseForm() would have returned an error;
     * form_error_msg is then err.Error() byte for byte, e.g.
     * `invalid URL escape "%zz"` or `invalid semicolon separator in query`
     * or `mime: no media type` or `http: POST too large` (a form body over
     * 10 MiB: body then holds its first 10 MiB, the connection closes
     * after the answer). etcd answers it with error 210 "Invalid POST
     * form" and the message as "cause". Parameters that did decode are
     * still present (as in Go). */
    int form_error;
    const char *form_error_msg;  /* NULL when form_error == 0 */

    /* Peer address as Go's r.RemoteAddr: "127.0.0.1:5555", "[::1]:5555". */
    const char *remote_addr;
    struct sockaddr_storage remote;
};

/* The first value of header name (case-insensitive), or NULL. */
const char *http_request_header(const struct http_request *req,
                                const char *name);

/* Go's r.Form lookups. http_request_form_get returns the first parameter
 * named key in form (body first, then query), or NULL if there is none:
 * "?a" and "?a=" give a present, empty value (Go: r.Form["a"] == [""]).
 * http_request_form_value is the same returning the value string, NULL if
 * absent (Go's FormValue would give ""; NULL lets callers tell). */
const struct http_param *http_request_form_get(const struct http_request *req,
                                               const char *key);
const char *http_request_form_value(const struct http_request *req,
                                    const char *key);
/* The same over the query string only (Go's r.URL.Query().Get). */
const char *http_request_query_value(const struct http_request *req,
                                     const char *key);

/* Registers cb (see http_close_cb). May be called any time before the
 * request is finished; NULL unregisters. */
void http_request_set_close_cb(struct http_request *req, http_close_cb cb);

/* ---- Response ------------------------------------------------------------
 *
 * Every request given to the handler must be finished exactly once, by
 * http_respond() or by http_stream_begin() ... http_stream_end(), from the
 * loop thread, either inside the handler (synchronously) or later. The
 * connection reads no further request until then (Go serves one request at
 * a time per connection), so pipelined answers keep their order. After the
 * finishing call returns, req is invalid, whatever the return value.
 *
 * Header formatting is Go's (net/http server.go): status line with the
 * request's protocol ("HTTP/1.0 200 OK" for a 1.0 request); the handler's
 * headers sorted by name (stable, so repeated names keep their order);
 * then Date, Content-Length, Content-Type (only if the handler set none and
 * the body is not empty: "text/plain; charset=utf-8"), Connection
 * ("close" for a 1.1 request when the connection closes after the reply,
 * "keep-alive" for a 1.0 request that asked for it and gets it),
 * Transfer-Encoding ("chunked" for a stream to a 1.1 client). 204, 304 and
 * 1xx carry no body and no Content-Length; a HEAD response carries
 * Content-Length only when the handler gave a non-empty body, and no body.
 * The handler must not set Date, Content-Length, Transfer-Encoding or
 * Connection itself. */

/* Adds a response header. name is canonicalised as Go's Header.Set does
 * ("x-etcd-index" -> "X-Etcd-Index"). Both strings are copied (borrowed for
 * the call). Returns 0 or -ENOMEM, -EINVAL (CR/LF in name or value, or a
 * response already begun). */
int http_response_add_header(struct http_request *req, const char *name,
                             const char *value);

/* Finishes req with a whole response: status (100..999), the headers added
 * so far, and body (borrowed for the call, copied; may be NULL if len is
 * 0). Returns 0, or a negative errno if the response could not be queued
 * (connection gone: -ECONNRESET; -ENOMEM); req is finished either way. */
int http_respond(struct http_request *req, int status, const void *body,
                 size_t len);

/* Starts a streamed response: writes the status line and headers now (Go's
 * WriteHeader + Flush, as etcd does for every watch, stream or not) with
 * Transfer-Encoding: chunked for a 1.1 client; for a 1.0 client the body is
 * delimited by closing the connection. Returns 0 or a negative errno
 * (-ECONNRESET, -ENOMEM; -EINVAL if already begun); on error the request is
 * still unfinished and must be ended with http_stream_end. */
int http_stream_begin(struct http_request *req, int status);

/* Sends buf as one chunk (Go: "%x\r\n" data "\r\n"; len 0 is a no-op) and
 * tries to write it to the socket at once. buf is borrowed for the call.
 * etcd sends each watch event as exactly one chunk (its JSON plus "\n"),
 * so call this once per event with the whole line.
 * Returns 0, -ECONNRESET if the client is gone, or -ENOBUFS if the bytes
 * not yet taken by the client would exceed max_output_bytes: the library
 * then drops the connection (the close callback follows with -ENOBUFS).
 * After an error the handler should stop writing and call
 * http_stream_end. */
int http_stream_write(struct http_request *req, const void *buf, size_t len);

/* Finishes a streamed response (writes the "0\r\n\r\n" terminator, or
 * closes a close-delimited 1.0 response). Also the way to finish a request
 * whose http_stream_begin failed. req is finished either way. */
int http_stream_end(struct http_request *req);

/* ---- Server --------------------------------------------------------------
 *
 * Limits and their answers (Go's wording, "Connection: close", and the
 * connection is closed after it; other connections are unaffected):
 *   malformed request               400 Bad Request
 *   HTTP/1.1 without Host           400 Bad Request: missing required Host header
 *   more than one Host header       400 Bad Request
 *   request line + headers too big  431 Request Header Fields Too Large
 *   body larger than max_body_bytes 413 Request Entity Too Large (sent before
 *                                   reading the body when Content-Length
 *                                   says so, also for Expect: 100-continue)
 *   unknown Transfer-Encoding       501 Not Implemented
 * "Expect: 100-continue" is answered "HTTP/1.1 100 Continue" before the
 * body is read. */

/* Above Go's 10 MB ParseForm cap, so that a 10..16 MiB form reaches the
 * handler with form_error "http: POST too large" as in etcd (error 210). */
#define HTTP_DEFAULT_MAX_BODY_BYTES (16u << 20)
#define HTTP_DEFAULT_MAX_HEADER_BYTES (64u << 10)
#define HTTP_DEFAULT_MAX_OUTPUT_BYTES (4u << 20)

/* Called for each complete request; see the response contract above. */
typedef void (*http_handler_cb)(struct http_request *req);

struct http_server_config {
    http_handler_cb handler;   /* required */
    void *data;                /* copied to every request's server_data */
    size_t max_body_bytes;     /* 0: HTTP_DEFAULT_MAX_BODY_BYTES */
    size_t max_header_bytes;   /* 0: default; capped by http-parser's 80 KiB */
    size_t max_output_bytes;   /* 0: default; per connection, see above */
    /* Close keep-alive connections that have no request in flight and sent
     * nothing for this long. 0: never (Go's and so etcd's default). */
    uint64_t idle_timeout_ms;
};

/* The process must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) before
 * serving: libuv writes with write(2), and a client that went away would
 * otherwise kill the process. The library does not touch process-wide
 * signal state itself.
 *
 * Allocates a server on loop (borrowed until the server's close callback).
 * config is copied. Returns 0 and *out, or -EINVAL / -ENOMEM. Listen with
 * http_server_listen; free with http_server_close. */
int http_server_new(uv_loop_t *loop, const struct http_server_config *config,
                    struct http_server **out);

/* Starts listening on url ("http://127.0.0.1:2379", "http://[::1]:0",
 * "http://localhost:2379", "http://0.0.0.0:2379"). A host name is resolved
 * synchronously and the first address used, IPv4 preferred as Go does.
 * Port 0 picks a free port; *port_out (may be NULL) receives the bound
 * port. May be called several times (one uv_tcp_t per URL). Returns 0 or a
 * negative errno (-EINVAL bad URL, -EPROTONOSUPPORT https, -EADDRINUSE,
 * resolver failure as -ENOENT). */
int http_server_listen(struct http_server *srv, const char *url,
                       int *port_out);

/* Number of open client connections (for stats and tests). */
size_t http_server_connection_count(const struct http_server *srv);

/* ---- Several loops -------------------------------------------------------
 *
 * A server and its connections live on one loop, driven by one thread.
 * Servers on different loops (threads) can pass connections to each other:
 * a handler can move a request it does not want to serve, with its
 * connection, to another server, safely across threads. A move holds a
 * reference on its destination: a server closed while moves toward it are
 * under way is freed after the last of them, which finds it closed. */

/* Hands req, unfinished, and its connection to dst: dst's handler gets
 * req on dst's loop once the answers to earlier requests of the
 * connection are written, as if it had arrived there; the connection
 * stays with dst. Call it from srv's loop, from the handler or later,
 * before beginning a response (headers added so far are dropped). dst
 * must not have finished closing (its close callback not yet run). req
 * belongs to dst from the call on. If the connection fails or dst is
 * closing or closed by the time the connection gets there, the
 * connection is closed and the request dropped. */
void http_request_move(struct http_request *req, struct http_server *dst);

typedef void (*http_server_close_cb)(struct http_server *srv);

/* Closes the listeners and every connection; unfinished requests get their
 * close callback with -ECANCELED and must still be finished by the handler
 * (their responses are discarded). cb (may be NULL) is called once, from
 * the loop, when every handle is closed and every request finished; srv is
 * freed right after cb returns. Must be called at most once. */
void http_server_close(struct http_server *srv, http_server_close_cb cb);

#endif /* ETCFS_HTTP_H */
