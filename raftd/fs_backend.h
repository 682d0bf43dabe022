/* fs_backend.h - raftd's in-process backend for fs/ (raftd --mount DIR):
 * reads and watches from the member's own store on its loop, writes
 * proposed through Raft with raftd_write. Owned by the fs engineer; a
 * candidate for folding into raftd.h. docs/fs.md. */
#ifndef ETCFS_RAFTD_FS_BACKEND_H
#define ETCFS_RAFTD_FS_BACKEND_H

#include "fs.h"

struct raftd;
struct raftd_fs;

/* How long a write waits for a leader (raftd_write's -EAGAIN) before the
 * filesystem call fails with EIO. */
#define RAFTD_FS_LEADER_WAIT_MS 5000

extern const struct fs_backend_ops raftd_fs_ops;

/* A backend over node n (borrowed until raftd_fs_close), used from loop,
 * n's loop, only. leader_wait_ms 0 = RAFTD_FS_LEADER_WAIT_MS. Returns 0
 * and *out (the ops' data), or -ENOMEM. */
int raftd_fs_new(struct raftd *n, uv_loop_t *loop, unsigned leader_wait_ms,
                 struct raftd_fs **out);

/* Fail the writes still waiting for a leader with -ECANCELED, then free
 * once every write handed to raftd has completed (raftd_close cancels
 * those). Call after fs_close and before raftd_close. */
void raftd_fs_close(struct raftd_fs *b);

#endif /* ETCFS_RAFTD_FS_BACKEND_H */
