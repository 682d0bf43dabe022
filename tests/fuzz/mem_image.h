/* mem_image.h - a store image in memory for the store fuzz targets: the
 * write and read callbacks of store_save/store_load over a growable
 * buffer. Header-only, test code. */
#ifndef ETCFS_FUZZ_MEM_IMAGE_H
#define ETCFS_FUZZ_MEM_IMAGE_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct mem {
    uint8_t *p;
    size_t len, cap, off;
};

static int mem_write(void *d, const void *buf, size_t len)
{
    struct mem *m = d;
    if (m->len + len > m->cap) {
        size_t ncap = (m->len + len) * 2;
        uint8_t *np = realloc(m->p, ncap);
        if (np == NULL)
            return -ENOMEM;
        m->p = np;
        m->cap = ncap;
    }
    memcpy(m->p + m->len, buf, len);
    m->len += len;
    return 0;
}

static int mem_read(void *d, void *buf, size_t len)
{
    struct mem *m = d;
    if (m->off + len > m->len)
        return -ENODATA;
    memcpy(buf, m->p + m->off, len);
    m->off += len;
    return 0;
}

#endif /* ETCFS_FUZZ_MEM_IMAGE_H */
