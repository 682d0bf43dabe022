/* Fuzz store_load: corrupt snapshot images must be rejected with an
 * error, never crash, leak or change the store. Inputs starting with an
 * odd byte are raw images; others mutate a valid image (so the fuzzer
 * reaches deep into the format without a seed corpus). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mem_image.h"
#include "store.h"

static void build(struct store *s)
{
    static const char *const keys[] = {"/a/b", "/a/c", "/_h", "/d/e/f",
                                       "/q/1"};
    for (int i = 0; i < 5; i++) {
        struct store_event *ev;
        if (store_set(s, keys[i], false, "v\0x", 3,
                      i % 2 ? 1900000000000000000LL + i : 0, false,
                      1800000000000000000LL, &ev, NULL) == 0)
            store_event_unref(ev);
    }
    struct store_event *ev;
    if (store_delete(s, "/a/b", false, false, 0, &ev, NULL) == 0)
        store_event_unref(ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct store *s = store_new();
    if (s == NULL)
        return 0;
    struct mem m = {0};
    if (size > 0 && (data[0] & 1)) {
        m.p = malloc(size);
        if (m.p)
            memcpy(m.p, data + 1, size - 1);
        m.len = size - 1;
    } else {
        build(s);
        if (store_save(s, mem_write, &m) != 0)
            goto out;
        /* Pairs of (offset, xor) bytes, and a final truncation. */
        for (size_t i = 1; i + 2 < size && m.len; i += 3) {
            size_t at = ((size_t)data[i] << 8 | data[i + 1]) % m.len;
            m.p[at] ^= data[i + 2];
        }
        if (size > 0 && size % 7 == 0 && m.len)
            m.len -= data[size - 1] % m.len;
    }
    uint64_t before = store_index(s);
    int rv = store_load(s, mem_read, &m);
    if (rv != 0 && store_index(s) != before)
        abort();
    if (rv == 0) {
        /* A loaded image saves and loads again to the same index. */
        struct mem m2 = {0};
        if (store_save(s, mem_write, &m2) == 0) {
            struct store *t = store_new();
            if (t && store_load(t, mem_read, &m2) != 0)
                abort();
            if (t && store_index(t) != store_index(s))
                abort();
            store_expire(t, INT64_MAX);
            store_free(t);
        }
        free(m2.p);
        store_expire(s, INT64_MAX);
    }
out:
    free(m.p);
    store_free(s);
    return 0;
}
