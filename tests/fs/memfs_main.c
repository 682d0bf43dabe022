/* memfs_main.c - etcfs-memfs: mount an in-process store (no raftd) for the
 * fs tests. Usage: etcfs-memfs [-o OPTS] [--control FIFO] MOUNTPOINT.
 * Lines written to FIFO are memback_control commands ("remote" changes).
 * SIGINT/SIGTERM or an external unmount end it cleanly. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "memback.h"

struct memfs {
    uv_loop_t *loop;
    struct memback *mb;
    struct fs *fs;
    uv_signal_t sigint, sigterm;
    uv_pipe_t control;
    bool have_control;
    bool stopping;
    char line[65536];
    size_t line_len;
};

static void memfs_stop(struct memfs *m)
{
    if (m->stopping)
        return;
    m->stopping = true;
    fs_close(m->fs);
    memback_close(m->mb);
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    if (m->have_control)
        uv_close((uv_handle_t *)&m->control, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    memfs_stop(h->data);
}

static void on_exit_session(void *arg)
{
    memfs_stop(arg);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct memfs *m = h->data;
    buf->base = m->line + m->line_len;
    buf->len = sizeof(m->line) - m->line_len - 1;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct memfs *m = s->data;
    if (n <= 0)
        return; /* the FIFO is held open read-write: no EOF */
    m->line_len += (size_t)n;
    char *nl;
    while ((nl = memchr(m->line, '\n', m->line_len)) != NULL) {
        *nl = '\0';
        int rv = memback_control(m->mb, m->line);
        if (rv != 0)
            fprintf(stderr, "etcfs-memfs: control \"%s\": %d\n", m->line, rv);
        size_t used = (size_t)(nl + 1 - m->line);
        memmove(m->line, nl + 1, m->line_len - used);
        m->line_len -= used;
    }
    if (m->line_len == sizeof(m->line) - 1)
        m->line_len = 0; /* an overlong line is dropped */
}

int main(int argc, char **argv)
{
    struct memfs m;
    struct fs_options o;
    const char *control = NULL, *mnt = NULL;
    char *opts_copy = NULL;
    int rv;

    memset(&m, 0, sizeof(m));
    fs_options_init(&o);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            free(opts_copy);
            opts_copy = NULL;
            if (fs_options_parse(&o, argv[++i], &opts_copy) != 0) {
                fprintf(stderr, "etcfs-memfs: bad -o %s\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--control") == 0 && i + 1 < argc) {
            control = argv[++i];
        } else if (strcmp(argv[i], "-f") == 0) {
            /* always in the foreground */
        } else if (mnt == NULL && argv[i][0] != '-') {
            mnt = argv[i];
        } else {
            fprintf(stderr, "usage: etcfs-memfs [-o OPTS] [--control FIFO] "
                            "MOUNTPOINT\n");
            return 2;
        }
    }
    if (mnt == NULL) {
        fprintf(stderr, "etcfs-memfs: no mountpoint\n");
        return 2;
    }
    m.loop = uv_default_loop();
    m.mb = memback_new(m.loop);
    if (m.mb == NULL)
        return 1;
    if (control != NULL) {
        int fd = open(control, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0 || uv_pipe_init(m.loop, &m.control, 0) != 0 ||
            uv_pipe_open(&m.control, fd) != 0) {
            fprintf(stderr, "etcfs-memfs: control %s: %s\n", control,
                    strerror(errno));
            return 1;
        }
        m.have_control = true;
        m.control.data = &m;
        uv_read_start((uv_stream_t *)&m.control, alloc_cb, read_cb);
    }
    o.mountpoint = mnt;
    o.exit_cb = on_exit_session;
    o.exit_arg = &m;
    rv = fs_new(m.loop, &memback_ops, m.mb, &o, &m.fs);
    if (rv != 0) {
        fprintf(stderr, "etcfs-memfs: mount %s: %s\n", mnt, strerror(-rv));
        return 1;
    }
    uv_signal_init(m.loop, &m.sigint);
    uv_signal_init(m.loop, &m.sigterm);
    m.sigint.data = m.sigterm.data = &m;
    uv_signal_start(&m.sigint, on_signal, SIGINT);
    uv_signal_start(&m.sigterm, on_signal, SIGTERM);
    fprintf(stdout, "mounted %s\n", mnt);
    fflush(stdout);
    uv_run(m.loop, UV_RUN_DEFAULT);
    uv_loop_close(m.loop);
    free(opts_copy);
    return 0;
}
