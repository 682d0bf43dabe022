/* The peer transport's wire codec (no I/O): frames of u32 big-endian
 * length, u8 kind, protobuf payload (raftd/peer.proto has the byte
 * layout). Decoding takes untrusted bytes: every malformed input is an
 * error return (-EBADMSG), never an abort. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "node_int.h"
#include "peer.pb-c.h"

/* Appends the frame header for a payload of plen bytes. */
static int frame_head(struct store_buf *out, uint8_t kind, size_t plen)
{
    unsigned char h[PEER_FRAME_HEADER];
    uint32_t len = (uint32_t)(plen + 1);
    if (plen + 1 > PEER_FRAME_MAX)
        return -EMSGSIZE;
    h[0] = (unsigned char)(len >> 24);
    h[1] = (unsigned char)(len >> 16);
    h[2] = (unsigned char)(len >> 8);
    h[3] = (unsigned char)len;
    h[4] = kind;
    return store_buf_append(out, h, sizeof(h));
}

int peer_frame_encode(uint8_t kind, const void *payload, size_t len,
                      struct store_buf *out)
{
    size_t old = out->len;
    int rv = frame_head(out, kind, len);
    if (rv == 0 && len > 0)
        rv = store_buf_append(out, payload, len);
    if (rv != 0)
        out->len = old;
    return rv;
}

/* Makes room for n more bytes at the end of out, counts them as used and
 * returns where they start (the caller fills them); NULL on ENOMEM. */
static unsigned char *buf_reserve(struct store_buf *out, size_t n)
{
    size_t old = out->len;
    if (out->len + n + 1 > out->cap) {
        size_t ncap = out->cap ? out->cap : 256;
        char *nd;
        while (ncap < out->len + n + 1)
            ncap *= 2;
        nd = realloc(out->data, ncap);
        if (nd == NULL)
            return NULL;
        out->data = nd;
        out->cap = ncap;
    }
    out->len += n;
    out->data[out->len] = '\0';
    return (unsigned char *)out->data + old;
}

int peer_hello_encode(const struct peer_hello *h, struct store_buf *out)
{
    Etcfs__PeerHello pb = ETCFS__PEER_HELLO__INIT;
    size_t old = out->len, len;
    unsigned char *p;
    int rv;

    pb.has_version = 1;
    pb.version = PEER_VERSION;
    pb.has_cluster_id = 1;
    pb.cluster_id = h->cluster_id;
    pb.has_from = 1;
    pb.from = h->from;
    pb.has_to = 1;
    pb.to = h->to;
    len = etcfs__peer_hello__get_packed_size(&pb);
    rv = frame_head(out, PEER_KIND_HELLO, len);
    if (rv != 0)
        return rv;
    p = buf_reserve(out, len);
    if (p == NULL) {
        out->len = old;
        return -ENOMEM;
    }
    etcfs__peer_hello__pack(&pb, p);
    return 0;
}

int peer_msg_encode(const struct raft_message *m, struct store_buf *out)
{
    Etcfs__PeerMessage pb = ETCFS__PEER_MESSAGE__INIT;
    Etcfs__PeerEntry *ents = NULL, **eptrs = NULL;
    uint64_t voters[RAFT_MAX_VOTERS];
    size_t old = out->len, len;
    unsigned char *p;
    int rv = 0;

    pb.has_type = 1;
    pb.type = (uint32_t)m->type;
    pb.has_from = 1;
    pb.from = m->from;
    pb.has_to = 1;
    pb.to = m->to;
    pb.has_term = m->term != 0, pb.term = m->term;
    pb.has_log_term = m->log_term != 0, pb.log_term = m->log_term;
    pb.has_index = m->index != 0, pb.index = m->index;
    pb.has_commit = m->commit != 0, pb.commit = m->commit;
    pb.has_reject = m->reject, pb.reject = m->reject;
    pb.has_reject_hint = m->reject_hint != 0,
    pb.reject_hint = m->reject_hint;
    pb.has_context = m->context != 0, pb.context = m->context;
    if (m->type == RAFT_MSG_SNAPSHOT) {
        unsigned nv = m->snapshot.conf.n_voters;
        if (nv > RAFT_MAX_VOTERS)
            return -EINVAL;
        pb.has_snap_index = 1, pb.snap_index = m->snapshot.index;
        pb.has_snap_term = 1, pb.snap_term = m->snapshot.term;
        memcpy(voters, m->snapshot.conf.voters, nv * sizeof(uint64_t));
        pb.snap_voters = voters;
        pb.n_snap_voters = nv;
    }
    if (m->n_entries > 0) {
        ents = calloc(m->n_entries, sizeof(*ents));
        eptrs = calloc(m->n_entries, sizeof(*eptrs));
        if (ents == NULL || eptrs == NULL) {
            rv = -ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < m->n_entries; i++) {
            const struct raft_entry *e = &m->entries[i];
            etcfs__peer_entry__init(&ents[i]);
            ents[i].has_term = 1, ents[i].term = e->term;
            ents[i].has_index = 1, ents[i].index = e->index;
            ents[i].has_type = 1, ents[i].type = (uint32_t)e->type;
            if (e->len > 0) {
                ents[i].has_data = 1;
                ents[i].data.data = e->data;
                ents[i].data.len = e->len;
            }
            eptrs[i] = &ents[i];
        }
        pb.entries = eptrs;
        pb.n_entries = m->n_entries;
    }
    len = etcfs__peer_message__get_packed_size(&pb);
    rv = frame_head(out, PEER_KIND_MESSAGE, len);
    if (rv != 0)
        goto out;
    p = buf_reserve(out, len);
    if (p == NULL) {
        out->len = old;
        rv = -ENOMEM;
        goto out;
    }
    etcfs__peer_message__pack(&pb, p);
out:
    free(ents);
    free(eptrs);
    return rv;
}

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (56 - 8 * i));
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

int peer_snap_encode(const struct peer_snap_piece *s, struct store_buf *out)
{
    size_t old = out->len;
    unsigned char *p;
    int rv = frame_head(out, PEER_KIND_SNAPSHOT, 32 + s->len);
    if (rv != 0)
        return rv;
    p = buf_reserve(out, 32 + s->len);
    if (p == NULL) {
        out->len = old;
        return -ENOMEM;
    }
    put_be64(p, s->term);
    put_be64(p + 8, s->index);
    put_be64(p + 16, s->offset);
    put_be64(p + 24, s->total);
    if (s->len)
        memcpy(p + 32, s->data, s->len);
    return 0;
}

int peer_snap_decode(const uint8_t *p, size_t len, struct peer_snap_piece *s)
{
    if (len < 32)
        return -EBADMSG;
    s->term = get_be64(p);
    s->index = get_be64(p + 8);
    s->offset = get_be64(p + 16);
    s->total = get_be64(p + 24);
    s->data = p + 32;
    s->len = len - 32;
    if (s->index == 0 || s->offset > s->total ||
        s->len > s->total - s->offset)
        return -EBADMSG;
    return 0;
}

int peer_frame_next(const void *buf, size_t len, uint8_t *kind,
                    const uint8_t **payload, size_t *plen)
{
    const unsigned char *p = buf;
    uint32_t flen;
    if (len < 4)
        return 0;
    flen = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | (uint32_t)p[3];
    if (flen < 1 || flen > PEER_FRAME_MAX)
        return -EBADMSG;
    if (len - 4 < flen)
        return 0;
    *kind = p[4];
    if (*kind < PEER_KIND_HELLO || *kind > PEER_KIND_MEMBERS)
        return -EBADMSG;
    *payload = p + 5;
    *plen = flen - 1;
    return (int)(flen + 4);
}

int peer_hello_decode(const uint8_t *p, size_t len, struct peer_hello *h)
{
    Etcfs__PeerHello *pb = etcfs__peer_hello__unpack(NULL, len, p);
    int rv = 0;
    if (pb == NULL)
        return -EBADMSG;
    if (!pb->has_version || pb->version != PEER_VERSION || !pb->has_from ||
        !pb->has_to || !pb->has_cluster_id || pb->from == 0 || pb->to == 0)
        rv = -EBADMSG;
    h->version = pb->version;
    h->cluster_id = pb->cluster_id;
    h->from = pb->from;
    h->to = pb->to;
    etcfs__peer_hello__free_unpacked(pb, NULL);
    return rv;
}

int peer_msg_decode(const uint8_t *p, size_t len, struct peer_decoded *d)
{
    Etcfs__PeerMessage *pb;
    struct raft_message *m = &d->msg;

    memset(d, 0, sizeof(*d));
    pb = etcfs__peer_message__unpack(NULL, len, p);
    if (pb == NULL)
        return -EBADMSG;
    d->pb_ = pb;
    if (!pb->has_type || pb->type < RAFT_MSG_APPEND ||
        pb->type > RAFT_MSG_TYPE_MAX || pb->n_snap_voters > RAFT_MAX_VOTERS)
        goto bad;
    m->type = (enum raft_msg_type)pb->type;
    m->from = pb->from;
    m->to = pb->to;
    m->term = pb->term;
    m->log_term = pb->log_term;
    m->index = pb->index;
    m->commit = pb->commit;
    m->reject = pb->has_reject && pb->reject;
    m->reject_hint = pb->reject_hint;
    m->context = pb->context;
    m->snapshot.index = pb->snap_index;
    m->snapshot.term = pb->snap_term;
    m->snapshot.conf.n_voters = (unsigned)pb->n_snap_voters;
    for (size_t i = 0; i < pb->n_snap_voters; i++)
        m->snapshot.conf.voters[i] = pb->snap_voters[i];
    if (pb->n_entries > 0) {
        d->ents_ = calloc(pb->n_entries, sizeof(*d->ents_));
        if (d->ents_ == NULL) {
            peer_decoded_free(d);
            return -ENOMEM;
        }
        for (size_t i = 0; i < pb->n_entries; i++) {
            const Etcfs__PeerEntry *e = pb->entries[i];
            if (e->type > RAFT_ENTRY_CONF_CHANGE)
                goto bad;
            d->ents_[i].term = e->term;
            d->ents_[i].index = e->index;
            d->ents_[i].type = (enum raft_entry_type)e->type;
            d->ents_[i].len = e->has_data ? e->data.len : 0;
            d->ents_[i].data = d->ents_[i].len ? e->data.data : NULL;
        }
        m->entries = d->ents_;
        m->n_entries = pb->n_entries;
    }
    return 0;
bad:
    peer_decoded_free(d);
    return -EBADMSG;
}

void peer_decoded_free(struct peer_decoded *d)
{
    if (d->pb_)
        etcfs__peer_message__free_unpacked(d->pb_, NULL);
    free(d->ents_);
    memset(d, 0, sizeof(*d));
}
