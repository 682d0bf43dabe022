/* wal/wal_int.h: internals shared by the files of wal/ and by the WAL's
 * own tests and fuzz target (the pure segment parser and the portable CRC
 * path). Not part of the public contract; other modules must not include
 * it. */
#ifndef ETCFS_WAL_INT_H
#define ETCFS_WAL_INT_H

#include <stddef.h>
#include <stdint.h>

#include "wal.h"

/* Record types (header bytes 4..7). 0 is never valid, so zero-filled
 * preallocated space never parses as a record. */
enum {
    WAL_REC_METADATA = 1,
    WAL_REC_ENTRY = 2,
    WAL_REC_HARD_STATE = 3,
    WAL_REC_SNAPSHOT = 4,
    WAL_REC_CRC = 5,
};

#define WAL_REC_HEADER 16u
/* Largest payload a record may carry (protects readers from absurd
 * allocations; entries are far smaller in practice). */
#define WAL_REC_MAX_PAYLOAD (1u << 30)

/* Bytes a record with a payload of plen bytes occupies, padding included. */
static inline size_t wal_rec_size(size_t plen)
{
    return WAL_REC_HEADER + ((plen + 7) & ~(size_t)7);
}

/* Portable (table) CRC-32C path, for testing against the SSE4.2 one.
 * Same contract as wal_crc32c(). */
uint32_t wal_crc32c_sw(uint32_t crc, const void *buf, size_t len);
/* 1 if wal_crc32c() uses the SSE4.2 instruction on this CPU. */
int wal_crc32c_hw_available(void);

/* Reader: folds the records of consecutive segments into a read result.
 * Pure (no I/O), so the fuzz target can drive it. */
struct wal_reader {
    struct wal_snapshot start;  /* entries > start.index are kept */
    struct wal_read_result res; /* being built; entries owned */
    size_t cap;                 /* capacity of res.entries */
    int have_md;
    int have_seg;        /* a segment was fed: crc below is meaningful */
    uint32_t crc;        /* running CRC at the end of the last segment */
    uint64_t last_index; /* index of the last entry record read */
    int have_hs;
    char err[512]; /* "<path>: offset <n>: <what>" on WAL_ECORRUPT */
};

/* How one segment image scanned. */
struct wal_scan {
    uint64_t good_end; /* end of the last record that verified */
    int clean;         /* nothing but zeros (or nothing) after good_end */
    int resync;        /* a record after the bad one chains: corruption */
    uint64_t bad_off;  /* first offset that did not verify (if !clean) */
    const char *why;   /* what was wrong there */
};

void wal_reader_init(struct wal_reader *r, const struct wal_snapshot *start,
                     uint64_t first_index);
/* Feed one whole segment image buf[0..len) (borrowed for the call).
 * is_last: torn tails are tolerated (reported in *scan, not an error).
 * Returns 0, WAL_ECORRUPT (r->err set) or -ENOMEM. After a tolerated tear
 * the records before scan->good_end have been consumed. */
int wal_reader_feed(struct wal_reader *r, const unsigned char *buf, size_t len,
                    const char *path, int is_last, struct wal_scan *scan);
/* Free everything r still owns (use after moving res out, or on error). */
void wal_reader_free(struct wal_reader *r);

#endif /* ETCFS_WAL_INT_H */
