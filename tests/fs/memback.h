/* memback.h - a test-only fs.h backend over an in-process store (store/),
 * with the wall clock as the store's time and a timer expiring TTLs. It
 * completes every operation synchronously, inside the call. */
#ifndef ETCFS_MEMBACK_H
#define ETCFS_MEMBACK_H

#include <uv.h>

#include "fs.h"

struct memback;

extern const struct fs_backend_ops memback_ops;

/* A fresh empty store served on loop. NULL on ENOMEM. */
struct memback *memback_new(uv_loop_t *loop);
/* Cancel the watches (callbacks get -ECANCELED), stop the expiry timer
 * (closed asynchronously: run the loop afterwards) and free the store. */
void memback_close(struct memback *mb);

/* Apply one control line, without the newline: the "remote" changes of
 * the tests, "set KEY VALUE", "mkdir KEY", "rm KEY", "rmdir KEY"
 * (recursive), "mv FROM TO", "ttl KEY SECONDS", "seq DIR N" (DIR/0 ..
 * DIR/N-1 = i), "down 1" / "down 0": every operation then fails with
 * -EIO, as with an unreachable cluster, and "fail CODE": the next write
 * (set, delete, post, rename) completes with that status (an etcd code).
 * Returns 0 or a negative errno / positive etcd code. */
int memback_control(struct memback *mb, const char *line);

#endif /* ETCFS_MEMBACK_H */
