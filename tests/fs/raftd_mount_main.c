/* raftd_mount_main.c - etcfs-raftd-mount: a raftd member with its tree
 * mounted in-process (what `raftd --mount DIR` does), for testing the raftd
 * backend of fs/ end to end before raftd's own main wires it. Takes raftd's
 * flags; --mount DIR is required; -o options come from $ETCFS_FS_OPTS. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "fs.h"
#include "fs_backend.h"
#include "raftd.h"

struct mount_ctx {
    struct raftd *node;
    struct raftd_fs *backend;
    struct fs *fs;
    struct raftd_log log;
    uv_signal_t sigint, sigterm;
    int stopping;
};

static void node_closed(void *arg)
{
    struct mount_ctx *m = arg;
    m->node = NULL;
}

static void mount_stop(struct mount_ctx *m)
{
    if (m->stopping)
        return;
    m->stopping = 1;
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    /* Order: the filesystem first (answers its requests), then the
     * backend (ends writes waiting for a leader), then the member
     * (cancels writes in Raft, whose callbacks free the rest). */
    if (m->fs != NULL)
        fs_close(m->fs);
    m->fs = NULL;
    if (m->backend != NULL)
        raftd_fs_close(m->backend);
    m->backend = NULL;
    if (m->node != NULL)
        raftd_close(m->node, node_closed, m);
}

static void on_signal(uv_signal_t *h, int signum)
{
    mount_stop(h->data);
}

static void on_session_end(void *arg)
{
    mount_stop(arg);
}

int main(int argc, char **argv, char **envp)
{
    struct raftd_config cfg;
    struct mount_ctx m;
    struct fs_options o;
    uv_loop_t loop;
    char err[512], *opts_copy = NULL;
    int code = 1, rv;

    memset(&m, 0, sizeof(m));
    raftd_log_init(&m.log, stderr, RAFTD_LOG_INFO);
    if (raftd_config_parse(&cfg, argc, argv, envp, err, sizeof(err), &code)
        != 0) {
        fprintf(stderr, "etcfs-raftd-mount: %s\n", err);
        raftd_config_free(&cfg);
        return 2;
    }
    if (cfg.mount == NULL || cfg.mount[0] == '\0') {
        fprintf(stderr, "etcfs-raftd-mount: --mount DIR is required\n");
        raftd_config_free(&cfg);
        return 2;
    }
    m.log.level = cfg.log_level;
    fs_options_init(&o);
    const char *env_opts = getenv("ETCFS_FS_OPTS");
    if (env_opts != NULL && env_opts[0] != '\0' &&
        fs_options_parse(&o, env_opts, &opts_copy) != 0) {
        fprintf(stderr, "etcfs-raftd-mount: bad ETCFS_FS_OPTS\n");
        raftd_config_free(&cfg);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (uv_loop_init(&loop) != 0)
        goto out_cfg;
    code = 1;
    rv = raftd_new(&loop, &cfg, &m.log, &m.node);
    if (rv != 0) {
        fprintf(stderr, "etcfs-raftd-mount: member: %s\n", strerror(-rv));
        goto out_loop;
    }
    uv_signal_init(&loop, &m.sigint);
    uv_signal_init(&loop, &m.sigterm);
    m.sigint.data = m.sigterm.data = &m;
    uv_signal_start(&m.sigint, on_signal, SIGINT);
    uv_signal_start(&m.sigterm, on_signal, SIGTERM);
    code = 0;
    rv = raftd_start(m.node);
    if (rv == 0)
        rv = raftd_fs_new(m.node, &loop, 0, &m.backend);
    if (rv == 0) {
        o.mountpoint = cfg.mount;
        o.exit_cb = on_session_end;
        o.exit_arg = &m;
        rv = fs_new(&loop, &raftd_fs_ops, m.backend, &o, &m.fs);
    }
    if (rv != 0) {
        fprintf(stderr, "etcfs-raftd-mount: start: %s\n", strerror(-rv));
        code = 1;
        mount_stop(&m);
    } else {
        fprintf(stdout, "mounted %s\n", cfg.mount);
        fflush(stdout);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
out_loop:
    if (uv_loop_close(&loop) != 0) {
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
out_cfg:
    raftd_config_free(&cfg);
    free(opts_copy);
    return code;
}
