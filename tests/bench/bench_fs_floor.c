/* bench_fs_floor.c - the least a FUSE filesystem can do for `cat`: one
 * 100-byte file "cat" in the root, answered from memory by libfuse's own
 * single-threaded loop (open with keep_cache and noflush, as fs/ does).
 * bench_fs.sh times the same open/read/close loop on it to show the cost
 * of the FUSE round trips themselves. Usage: bench_fs_floor MOUNTPOINT */
#define FUSE_USE_VERSION 34
#include <errno.h>
#include <string.h>

#include <fuse_lowlevel.h>

#define FLOOR_LEN 100

static int floor_stat(fuse_ino_t ino, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    if (ino == FUSE_ROOT_ID) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
    } else if (ino == 2) {
        st->st_mode = S_IFREG | 0644;
        st->st_nlink = 1;
        st->st_size = FLOOR_LEN;
    } else {
        return -ENOENT;
    }
    return 0;
}

static void floor_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    if (parent != FUSE_ROOT_ID || strcmp(name, "cat") != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    e.ino = 2;
    e.attr_timeout = 1;
    e.entry_timeout = 1;
    floor_stat(2, &e.attr);
    fuse_reply_entry(req, &e);
}

static void floor_getattr(fuse_req_t req, fuse_ino_t ino,
                          struct fuse_file_info *fi)
{
    struct stat st;
    (void)fi;
    if (floor_stat(ino, &st) != 0)
        fuse_reply_err(req, ENOENT);
    else
        fuse_reply_attr(req, &st, 1);
}

static void floor_open(fuse_req_t req, fuse_ino_t ino,
                       struct fuse_file_info *fi)
{
    (void)ino;
    fi->keep_cache = 1;
    fi->noflush = 1;
    fuse_reply_open(req, fi);
}

static void floor_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    static const char value[FLOOR_LEN] = {0};
    (void)ino;
    (void)fi;
    if (off >= FLOOR_LEN) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if (size > (size_t)(FLOOR_LEN - off))
        size = (size_t)(FLOOR_LEN - off);
    fuse_reply_buf(req, value + off, size);
}

static const struct fuse_lowlevel_ops floor_ops = {
    .lookup = floor_lookup,
    .getattr = floor_getattr,
    .open = floor_open,
    .read = floor_read,
};

int main(int argc, char **argv)
{
    char *args[] = {argv[0], NULL};
    struct fuse_args a = FUSE_ARGS_INIT(1, args);
    if (argc != 2)
        return 2;
    struct fuse_session *se = fuse_session_new(&a, &floor_ops,
                                               sizeof(floor_ops), NULL);
    if (se == NULL)
        return 1;
    int rv = 1;
    if (fuse_set_signal_handlers(se) == 0) {
        if (fuse_session_mount(se, argv[1]) == 0) {
            rv = fuse_session_loop(se) < 0;
            fuse_session_unmount(se);
        }
        fuse_remove_signal_handlers(se);
    }
    fuse_session_destroy(se);
    return rv;
}
