/* libFuzzer target for the WAL's parser of on-disk bytes. Input: a mode
 * byte (bits 0-2 snapshot index, bit 7 two segments), then one segment
 * image, or a 4-byte little-endian split offset and two consecutive
 * images, fed to the reader wal_read_all() uses. Must never crash, leak or
 * read out of bounds. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "wal_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct wal_reader r;
    struct wal_scan scan;
    struct wal_snapshot snap = {0, 0};
    uint8_t mode;
    int rv;

    if (size < 1)
        return 0;
    mode = data[0];
    data++;
    size--;
    snap.index = mode & 7;
    wal_reader_init(&r, &snap, 0);
    if (mode & 0x80) {
        /* Two segments: the next 4 bytes (little-endian) say where the
         * first one ends. */
        size_t split;
        if (size < 4)
            return 0;
        split = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 |
                (size_t)data[3] << 24;
        data += 4;
        size -= 4;
        if (split > size)
            split = size;
        rv = wal_reader_feed(&r, data, split, "fuzz-0", 0, &scan);
        if (rv == 0)
            wal_reader_feed(&r, data + split, size - split, "fuzz-1", 1, &scan);
    } else {
        rv = wal_reader_feed(&r, data, size, "fuzz", 1, &scan);
        if (rv == 0 && scan.good_end > size)
            __builtin_trap();
    }
    /* The result must be internally consistent. */
    for (size_t i = 0; i < r.res.n_entries; i++)
        if (r.res.entries[i].index != snap.index + 1 + i ||
            (r.res.entries[i].len && !r.res.entries[i].data))
            __builtin_trap();
    wal_reader_free(&r);
    return 0;
}
