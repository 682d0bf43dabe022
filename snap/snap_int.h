/* Internals shared by the files of snap/: the on-disk header and frame
 * constants (layout documented in snap.c) and the CRC-32C we borrow from
 * wal/ (the one deliberate snap -> wal dependency, see docs/snap.md). */
#ifndef ETCFS_SNAP_INT_H
#define ETCFS_SNAP_INT_H

#include <stddef.h>
#include <stdint.h>

#include "snap.h"

/* wal_crc32c() only: the one thing snap takes from wal (docs/snap.md). */
#include "wal.h"

#define SNAP_MAGIC "ETCFSNP1"
#define SNAP_MAGIC_LEN 8
#define SNAP_VERSION 1u
#define SNAP_HEADER_SIZE 64u /* fixed part; the meta blob follows it */
#define SNAP_FRAME_SIZE 12u  /* frame header: image_len, stored_len, crc */
#define SNAP_STORED_RAW 0x80000000u /* stored_len flag: not compressed */
#define SNAP_CHUNK_SIZE_MIN 4096u   /* smallest chunk a writer accepts */

#endif /* ETCFS_SNAP_INT_H */
