/* libFuzzer target for raftd/http: arbitrary bytes through the request
 * parser, Go URL/form decoding and response formatting (socket-less entry
 * point from http_int.h), plus the config URL parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "http_int.h"

static void on_close(struct http_request *req, int status)
{
    (void)status;
    http_respond(req, 500, NULL, 0);
}

static void handler(struct http_request *req)
{
    /* Touch everything a handler may read. */
    size_t sum = req->path_len + req->body_len + strlen(req->raw_path) +
                 strlen(req->raw_query) + strlen(req->remote_addr);
    for (size_t i = 0; i < req->header_count; i++)
        sum += strlen(req->headers[i].name) + strlen(req->headers[i].value);
    for (size_t i = 0; i < req->form_count; i++)
        sum += req->form[i].key_len + req->form[i].value_len;
    if (req->form_error_msg != NULL)
        sum += strlen(req->form_error_msg);
    (void)http_request_header(req, "content-type");
    (void)http_request_form_value(req, "value");
    (void)http_request_query_value(req, "wait");
    if (req->header_count > 0)
        http_response_add_header(req, req->headers[0].name,
                                 req->headers[0].value);
    switch (req->path_len % 4) {
    case 0:
        http_respond(req, 200, req->body, req->body_len);
        break;
    case 1:
        http_stream_begin(req, 200 + (int)(sum % 400));
        http_stream_write(req, req->body, req->body_len);
        http_stream_write(req, req->path, req->path_len);
        http_stream_end(req);
        break;
    case 2:
        /* Left unfinished: cancelled through the close callback. */
        http_request_set_close_cb(req, on_close);
        break;
    default:
        http_respond(req, 100 + (int)(sum % 900), req->path, req->path_len);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http_server_config cfg = {.handler = handler,
                                     .max_body_bytes = 4096,
                                     .max_header_bytes = 4096,
                                     .max_output_bytes = 8192};
    struct http_buf out = {0};
    http_parse_for_test(&cfg, data, size, &out);
    http_buf_free(&out);

    char url[512];
    size_t n = size < sizeof(url) - 1 ? size : sizeof(url) - 1;
    memcpy(url, data, n);
    url[n] = 0;
    struct http_url u;
    http_url_parse(url, &u);
    struct http_url *list;
    size_t count;
    if (http_url_parse_list(url, &list, &count) == 0)
        free(list);
    return 0;
}
