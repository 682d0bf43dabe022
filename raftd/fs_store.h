/* fs_store.h - the read half of an fs.h backend over a store in this
 * process: get, list and watches answered from the store at once, on the
 * caller's thread. raftd's --mount backend (fs_backend.c) and the test
 * backend (tests/fs/memback.c) both serve their reads with it and differ
 * only in how they write. docs/fs.md. */
#ifndef ETCFS_RAFTD_FS_STORE_H
#define ETCFS_RAFTD_FS_STORE_H

#include <stdint.h>

#include "fs.h"
#include "store.h"

/* The wall clock in ns since the epoch: the time of reads (for ttl) and of
 * writes proposed from here. */
int64_t fs_store_now_ns(void);

/* The fs.h callback status of a store return value: 0, the etcd code of a
 * STORE_EV2 error (err is read), or the negative errno. */
int fs_store_status(int rv, const struct store_error *err);

/* Copy node n's metadata into m. */
void fs_store_meta(struct fs_meta *m, const struct store_node *n);

/* fs.h get and list on s (borrowed for the call). cb runs before the call
 * returns; the return value is 0, or -ENOMEM with cb not called. */
int fs_store_get(struct store *s, const char *path, fs_get_cb cb, void *arg);
int fs_store_list(struct store *s, const char *path, fs_list_cb cb,
                  void *arg);

/* fs.h watch on s: every event under path from index since on, the history
 * first (delivered before the call returns), then live events from inside
 * the store's writes. A cleared history is one cb with 401 and its JSON,
 * and no watch. Returns 0 and *out, or -ENOMEM. The watch lives until
 * fs_store_watch_cancel or store_free (then cb gets -ECANCELED). */
int fs_store_watch(struct store *s, const char *path, uint64_t since,
                   fs_watch_cb cb, void *arg, struct fs_backend_watch **out);
void fs_store_watch_cancel(struct store *s, struct fs_backend_watch *w);

#endif /* ETCFS_RAFTD_FS_STORE_H */
