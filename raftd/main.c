/* raftd: one etcd-v2-compatible cluster member. Parses etcd's command line,
 * runs the member on a libuv loop in the foreground and shuts it down
 * cleanly (WAL closed, in-flight writes finished) on SIGINT or SIGTERM.
 * With --mount DIR (when built with fs/) the tree is also mounted with
 * FUSE in-process, over raftd/fs_backend.c; -o options come from
 * $ETCFS_FS_OPTS. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <uv.h>

#include "raftd.h"
#ifdef RAFTD_WITH_FS
#include "fs.h"
#include "fs_backend.h"
#endif

struct main_ctx {
    struct raftd *node;
#ifdef RAFTD_WITH_FS
    struct raftd_fs *backend;
    struct fs *fs;
#endif
    struct raftd_log log;
    uv_signal_t sigint, sigterm;
    int stopping;
};

static void main_node_closed(void *arg)
{
    struct main_ctx *m = arg;
    m->node = NULL;
    raftd_logf(&m->log, RAFTD_LOG_INFO, "raftd", "stopped");
}

static void main_stop(struct main_ctx *m, const char *why)
{
    if (m->stopping)
        return;
    m->stopping = 1;
    raftd_logf(&m->log, RAFTD_LOG_INFO, "osutil", "%s, shutting down...",
               why);
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_close((uv_handle_t *)&m->sigterm, NULL);
#ifdef RAFTD_WITH_FS
    /* The filesystem first (it answers its requests), then the backend
     * (ends writes waiting for a leader), then the member. */
    if (m->fs != NULL)
        fs_close(m->fs);
    m->fs = NULL;
    if (m->backend != NULL)
        raftd_fs_close(m->backend);
    m->backend = NULL;
#endif
    if (m->node)
        raftd_close(m->node, main_node_closed, m);
}

#ifdef RAFTD_WITH_FS
static void main_fs_ended(void *arg)
{
    main_stop(arg, "the mount went away");
}

/* Mount cfg->mount over the member; opts_copy is freed by the caller. */
static int main_mount(struct main_ctx *m, uv_loop_t *loop,
                      const struct raftd_config *cfg, char **opts_copy)
{
    struct fs_options o;
    const char *env_opts = getenv("ETCFS_FS_OPTS");
    int rv;

    fs_options_init(&o);
    if (env_opts != NULL && env_opts[0] != '\0') {
        rv = fs_options_parse(&o, env_opts, opts_copy);
        if (rv != 0)
            return rv;
    }
    rv = raftd_fs_new(m->node, loop, o.leader_wait_ms, &m->backend);
    if (rv != 0)
        return rv;
    o.mountpoint = cfg->mount;
    o.exit_cb = main_fs_ended;
    o.exit_arg = m;
    rv = fs_new(loop, &raftd_fs_ops, m->backend, &o, &m->fs);
    if (rv == 0)
        raftd_logf(&m->log, RAFTD_LOG_INFO, "fs", "mounted the tree on %s",
                   cfg->mount);
    return rv;
}
#endif

/* The member stops on its own (removed from the cluster): a clean stop,
 * exit 0, as etcd 3.4 exits then (measured: a removed etcd member logs
 * "the member has been permanently removed from the cluster" and exits
 * 0, so a supervisor restarting on failure leaves it down). */
static void main_member_stop(void *arg, const char *why)
{
    main_stop(arg, why);
}

static void main_signal_cb(uv_signal_t *h, int signum)
{
    main_stop(h->data, signum == SIGINT ? "received interrupt signal"
                                        : "received terminated signal");
}

int main(int argc, char **argv, char **envp)
{
    struct raftd_config cfg;
    struct main_ctx m;
    uv_loop_t loop;
    char err[512], *opts_copy = NULL;
    int code = 1, rv;

    memset(&m, 0, sizeof(m));
    raftd_log_init(&m.log, stderr, RAFTD_LOG_INFO);
    rv = raftd_config_parse(&cfg, argc, argv, envp, err, sizeof(err), &code);
    if (rv != 0) {
        if (code == 2) {
            fprintf(stderr, "%s\n", err);
            raftd_config_usage(stderr);
        } else {
            raftd_logf(&m.log, RAFTD_LOG_ERROR, "etcdmain",
                       "error verifying flags, %s. See 'raftd --help'.", err);
        }
        raftd_config_free(&cfg);
        return code;
    }
    if (cfg.print_help) {
        raftd_config_usage(stdout);
        raftd_config_free(&cfg);
        return 0;
    }
    if (cfg.print_version) {
        printf("etcd Version: %s\nGit SHA: etcfs raftd\nGo Version: none "
               "(C11)\nGo OS/Arch: linux/amd64\n",
               RAFTD_VERSION);
        raftd_config_free(&cfg);
        return 0;
    }
    m.log.level = cfg.log_level;
    if (cfg.shadowed_env != NULL)
        raftd_logf(&m.log, RAFTD_LOG_WARN, "pkg/flags",
                   "environment variable \"%s\" is shadowed by the "
                   "corresponding command-line flag; the flag wins (etcd "
                   "3.4 refuses to start)",
                   cfg.shadowed_env);
    signal(SIGPIPE, SIG_IGN);
    {
        /* As Go 1.19+ does for etcd: raise the open-files soft limit to the
         * hard limit, so 10,000 watchers fit. */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    rv = uv_loop_init(&loop);
    if (rv != 0) {
        raftd_config_free(&cfg);
        return 1;
    }
    raftd_logf(&m.log, RAFTD_LOG_INFO, "etcdmain",
               "raftd (etcd v2 API %s) starting: name %s, data dir %s",
               RAFTD_VERSION, cfg.name, cfg.data_dir);
    code = 0;
    rv = raftd_new(&loop, &cfg, &m.log, &m.node);
    if (rv != 0) {
        raftd_logf(&m.log, RAFTD_LOG_FATAL, "etcdmain",
                   "cannot start member: %s", strerror(-rv));
        code = 1;
        goto out_loop;
    }
    uv_signal_init(&loop, &m.sigint);
    uv_signal_init(&loop, &m.sigterm);
    m.sigint.data = m.sigterm.data = &m;
    uv_signal_start(&m.sigint, main_signal_cb, SIGINT);
    uv_signal_start(&m.sigterm, main_signal_cb, SIGTERM);
    raftd_on_stop(m.node, main_member_stop, &m);
    rv = raftd_start(m.node);
    if (rv == 0 && cfg.mount != NULL && cfg.mount[0] != '\0') {
#ifdef RAFTD_WITH_FS
        rv = main_mount(&m, &loop, &cfg, &opts_copy);
        if (rv != 0)
            raftd_logf(&m.log, RAFTD_LOG_FATAL, "fs", "cannot mount %s: %s",
                       cfg.mount, strerror(-rv));
#else
        raftd_logf(&m.log, RAFTD_LOG_FATAL, "fs",
                   "--mount: raftd was built without fs/");
        rv = -ENOTSUP;
#endif
    }
    if (rv != 0) {
        raftd_logf(&m.log, RAFTD_LOG_FATAL, "etcdmain",
                   "cannot serve: %s", strerror(-rv));
        code = 1;
        main_stop(&m, "startup failed");
    }
    uv_run(&loop, UV_RUN_DEFAULT);
out_loop:
    if (uv_loop_close(&loop) != 0) {
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
    raftd_config_free(&cfg);
    free(opts_copy);
    return code;
}
