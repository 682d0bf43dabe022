/* Internals shared by raftd/http*.c and the fuzz target: growable buffers,
 * Go's net/url decoding rules, mime.ParseMediaType's checks, and a
 * socket-less request parser entry point. Not part of the public API. */
#ifndef ETCFS_HTTP_INT_H
#define ETCFS_HTTP_INT_H

#include <stddef.h>
#include <stdint.h>

#include "http.h"

/* A growable byte buffer; {NULL, 0, 0} is a valid empty buffer. */
struct http_buf {
    char *p;
    size_t len;
    size_t cap;
};

/* Makes room for extra more bytes. Returns 0 or -ENOMEM (buffer intact). */
int http_buf_reserve(struct http_buf *b, size_t extra);
/* Appends n bytes (d borrowed for the call). Returns 0 or -ENOMEM. */
int http_buf_append(struct http_buf *b, const void *d, size_t n);
void http_buf_free(struct http_buf *b);

/* One decoded parameter as offsets into an arena buffer. */
struct http_param_off {
    size_t key_off, key_len, val_off, val_len;
};
struct http_param_vec {
    struct http_param_off *v;
    size_t n, cap;
};
void http_param_vec_free(struct http_param_vec *vec);

/* Go's url.unescape modes. */
enum http_unescape_mode {
    HTTP_UNESCAPE_PATH,  /* encodePath: '+' stays '+' */
    HTTP_UNESCAPE_QUERY, /* encodeQueryComponent: '+' becomes ' ' */
};

/* Size of the buffers that receive Go error messages (err.Error()). */
#define HTTP_ERR_MSG_MAX 96

/* Decodes the arena bytes [src_off, src_off + n) as Go's url.unescape and
 * appends the result plus a NUL to arena; *out_off and *out_len locate it.
 * On a bad escape returns -EINVAL, appends nothing, and writes Go's
 * EscapeError text (`invalid URL escape "%zz"`) into err (may be NULL,
 * HTTP_ERR_MSG_MAX bytes). -ENOMEM possible. */
int http_unescape(struct http_buf *arena, size_t src_off, size_t n, int mode,
                  size_t *out_off, size_t *out_len, char *err);

/* Go's url.ParseQuery over arena bytes [src_off, src_off + n): decoded
 * keys and values are appended to arena, one entry per pair to vec (in
 * order). Returns 0, -EINVAL with Go's error text in err (the first
 * error, except that a semicolon error overrides as in Go; pairs that
 * decoded are kept), or -ENOMEM. */
int http_parse_query(struct http_buf *arena, struct http_param_vec *vec,
                     size_t src_off, size_t n, char *err);

/* mime.ParseMediaType as far as ParseForm needs it: the lower-cased media
 * type of v[0..n) into out (NUL-terminated, truncated to outsz - 1), and
 * NULL or Go's error text as the return value. When Go would return an
 * error together with no media type, out is "". */
const char *http_media_type(const char *v, size_t n, char *out, size_t outsz);

/* Go's strconv.Quote of s[0..n) into out (NUL-terminated, truncated).
 * Returns the length written. */
size_t http_go_quote(char *out, size_t outsz, const char *s, size_t n);

/* Go's http.CanonicalMIMEHeaderKey, in place. */
void http_canonical_key(char *s, size_t n);

/* Status text as Go's http.StatusText, or NULL for an unknown code. */
const char *http_status_text(int status);

/* Socket-less parsing for the fuzzer and tests: feeds data through the
 * same parser, request finalisation and response formatting as a live
 * connection, calling handler for each complete request; the handler must
 * finish requests synchronously (unfinished ones are cancelled at the
 * end). Writes the produced response bytes to *out (may be NULL; returned
 * to the caller, freed with http_buf_free). Returns the number of requests
 * handled, or -ENOMEM. config as for http_server_new. */
int http_parse_for_test(const struct http_server_config *config,
                        const void *data, size_t len, struct http_buf *out);

#endif /* ETCFS_HTTP_INT_H */
