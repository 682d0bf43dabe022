/* libFuzzer target for etcfs-dump-logs' decoding of WAL entry data (a v2
 * Request protobuf or a conf change): the first input byte picks the entry
 * type, the rest is the data. Output goes to /dev/null; any input must
 * print a line, never crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "wal.h"

/* Defined in raftd/dump.c (built into etcfs_dump_fmt without its main). */
void dump_put_entry(FILE *out, const struct wal_entry *e);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *devnull;
    struct wal_entry e = {0};
    if (devnull == NULL && (devnull = fopen("/dev/null", "w")) == NULL)
        abort();
    if (size == 0)
        return 0;
    e.term = 1;
    e.index = 2;
    e.type = data[0] % 3; /* normal, conf change, unknown */
    e.data = size > 1 ? data + 1 : NULL;
    e.len = size - 1;
    dump_put_entry(devnull, &e);
    return 0;
}
