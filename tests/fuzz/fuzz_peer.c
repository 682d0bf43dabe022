/* libFuzzer target for the peer transport's decoder (raftd/peer_codec.c):
 * the input is a byte stream as read from a peer connection, cut into
 * frames; each frame's payload is decoded as a hello, a snapshot header,
 * a joining member's MEMBERS answer (JSON) or a message. Any
 * input must be consumed or refused cleanly, without leaks. */
#include <stdint.h>
#include <stdlib.h>

#include "node_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        uint8_t kind;
        const uint8_t *payload;
        size_t plen;
        int n = peer_frame_next(data + off, size - off, &kind, &payload,
                                &plen);
        if (n <= 0)
            break;
        if (kind == PEER_KIND_HELLO) {
            struct peer_hello h;
            (void)peer_hello_decode(payload, plen, &h);
        } else if (kind == PEER_KIND_SNAPSHOT) {
            struct peer_snap_piece s;
            if (peer_snap_decode(payload, plen, &s) == 0 &&
                (s.offset > s.total || s.len > s.total - s.offset))
                abort(); /* a piece reaching past its file got through */
        } else if (kind == PEER_KIND_MEMBERS) {
            struct members_answer a;
            if (members_answer_parse(payload, plen, &a) == 0)
                members_answer_free(&a);
        } else {
            struct peer_decoded d;
            if (peer_msg_decode(payload, plen, &d) == 0) {
                /* Re-encoding a decoded message must work. */
                struct store_buf b;
                store_buf_init(&b);
                (void)peer_msg_encode(&d.msg, &b);
                store_buf_free(&b);
                peer_decoded_free(&d);
            }
        }
        off += (size_t)n;
    }
    return 0;
}
