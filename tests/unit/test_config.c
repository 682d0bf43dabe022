/* Unit tests of raftd's command line (raftd/config.c): Go flag syntax,
 * ETCD_* environment fallbacks, etcd's defaults, validation errors with
 * their exit codes, and member/cluster ids equal to real etcd's. */
#include <errno.h>
#include <unistd.h>

#include "raftd.h"
#include "test.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int parse(struct raftd_config *cfg, int argc, char **argv, char **env,
                 char *err, int *code)
{
    return raftd_config_parse(cfg, argc, argv, env, err, 256, code);
}

TEST(sha1_vectors)
{
    unsigned char md[20];
    static const unsigned char abc[20] = {
        0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81, 0x6a, 0xba, 0x3e,
        0x25, 0x71, 0x78, 0x50, 0xc2, 0x6c, 0x9c, 0xd0, 0xd8, 0x9d};
    static const unsigned char two_blocks[20] = {
        0x84, 0x98, 0x3e, 0x44, 0x1c, 0x3b, 0xd2, 0x6e, 0xba, 0xae,
        0x4a, 0xa1, 0xf9, 0x51, 0x29, 0xe5, 0xe5, 0x46, 0x70, 0xf1};
    raftd_sha1("abc", 3, md);
    ASSERT_MEM_EQ(md, abc, 20);
    raftd_sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
               md);
    ASSERT_MEM_EQ(md, two_blocks, 20);
}

/* Ids observed from etcd 3.4.23 for the same command lines. */
TEST(ids_match_etcd)
{
    const char *def[] = {"http://localhost:2380"};
    const char *lo[] = {"http://127.0.0.1:47914"};
    uint64_t id = raftd_member_id(def, 1, "etcd-cluster");
    ASSERT_EQ(id, 0x8e9e05c52164694dULL);
    ASSERT_EQ(raftd_cluster_id(&id, 1), 0xcdf818194e3a8c32ULL);
    id = raftd_member_id(lo, 1, "etcd-cluster");
    ASSERT_EQ(id, 0x94018c83380f970cULL);
    ASSERT_EQ(raftd_cluster_id(&id, 1), 0xb837d098d32c703dULL);
}

/* etcd 3.4.23's v2 POST /v2/members gave member 607e356315f43465 to
 * http://127.0.0.1:54804 at Unix time 1795247489: NewMember("", urls, "",
 * &now) hashes the URLs, no token, then the decimal time. raftd's
 * api_members.c passes that time as the token argument. */
TEST(added_member_id_matches_etcd)
{
    const char *u1[] = {"http://127.0.0.1:54804"};
    const char *u2[] = {"http://127.0.0.1:53805"};
    ASSERT_EQ(raftd_member_id(u1, 1, "1795247489"), 0x607e356315f43465ULL);
    ASSERT_EQ(raftd_member_id(u2, 1, "1795247459"), 0x6906e18372cd3852ULL);
}

TEST(membership_flags)
{
    struct raftd_config cfg;
    char err[256];
    int code;
    char *join[] = {"raftd", "--name=m3",
                    "--initial-advertise-peer-urls=http://127.0.0.1:4",
                    "--initial-cluster=m0=http://127.0.0.1:1,m3=http://127.0.0.1:4",
                    "--initial-cluster-state", "existing"};
    char *force[] = {"raftd", "-force-new-cluster"};
    char *plain[] = {"raftd"};
    char *env[] = {"ETCD_FORCE_NEW_CLUSTER=true",
                   "ETCD_INITIAL_CLUSTER_STATE=existing", NULL};

    ASSERT_EQ(parse(&cfg, ARGC(join), join, NULL, err, &code), 0);
    ASSERT_STR_EQ(cfg.initial_cluster_state, "existing");
    ASSERT_EQ(cfg.n_members, 2);
    ASSERT_EQ(cfg.force_new_cluster, 0);
    raftd_config_free(&cfg);

    ASSERT_EQ(parse(&cfg, ARGC(force), force, NULL, err, &code), 0);
    ASSERT_EQ(cfg.force_new_cluster, 1);
    ASSERT_STR_EQ(cfg.initial_cluster_state, "new");
    raftd_config_free(&cfg);

    ASSERT_EQ(parse(&cfg, ARGC(plain), plain, env, err, &code), 0);
    ASSERT_EQ(cfg.force_new_cluster, 1);
    ASSERT_STR_EQ(cfg.initial_cluster_state, "existing");
    raftd_config_free(&cfg);
}

TEST(http_threads_flag)
{
    struct raftd_config cfg;
    char err[256];
    int code;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    char *plain[] = {"raftd"};
    char *three[] = {"raftd", "--http-threads", "3"};
    char *many[] = {"raftd", "--http-threads=65"};
    char *bad[] = {"raftd", "--http-threads=two"};
    char *env[] = {"ETCD_HTTP_THREADS=0", NULL};

    ASSERT_EQ(parse(&cfg, ARGC(plain), plain, NULL, err, &code), 0);
    ASSERT_EQ(cfg.http_threads, cpus > 1 ? (cpus > 64 ? 64 : cpus) : 0);
    raftd_config_free(&cfg);
    ASSERT_EQ(parse(&cfg, ARGC(three), three, NULL, err, &code), 0);
    ASSERT_EQ(cfg.http_threads, 3);
    raftd_config_free(&cfg);
    ASSERT_EQ(parse(&cfg, ARGC(plain), plain, env, err, &code), 0);
    ASSERT_EQ(cfg.http_threads, 0);
    raftd_config_free(&cfg);
    ASSERT_NE(parse(&cfg, ARGC(many), many, NULL, err, &code), 0);
    raftd_config_free(&cfg);
    ASSERT_EQ(code, 1);
    ASSERT(strstr(err, "--http-threads must be at most 64") != NULL);
    ASSERT_NE(parse(&cfg, ARGC(bad), bad, NULL, err, &code), 0);
    raftd_config_free(&cfg);
    ASSERT_EQ(code, 2);
}

TEST(idle_poll_flag)
{
    struct raftd_config cfg;
    char err[256];
    int code;
    char *plain[] = {"raftd"};
    char *off[] = {"raftd", "--idle-poll=false"};
    char *bad[] = {"raftd", "--idle-poll=sometimes"};
    char *env[] = {"ETCD_IDLE_POLL=false", NULL};

    ASSERT_EQ(parse(&cfg, ARGC(plain), plain, NULL, err, &code), 0);
    ASSERT_EQ(cfg.idle_poll, 1);
    raftd_config_free(&cfg);
    ASSERT_EQ(parse(&cfg, ARGC(off), off, NULL, err, &code), 0);
    ASSERT_EQ(cfg.idle_poll, 0);
    raftd_config_free(&cfg);
    ASSERT_EQ(parse(&cfg, ARGC(plain), plain, env, err, &code), 0);
    ASSERT_EQ(cfg.idle_poll, 0);
    raftd_config_free(&cfg);
    ASSERT_NE(parse(&cfg, ARGC(bad), bad, NULL, err, &code), 0);
    raftd_config_free(&cfg);
    ASSERT_EQ(code, 2);
}

TEST(defaults)
{
    struct raftd_config cfg;
    char err[256] = "";
    char *argv[] = {"raftd"};
    int code = -1;
    ASSERT_OK(parse(&cfg, 1, argv, NULL, err, &code));
    ASSERT_EQ(code, 0);
    ASSERT_STR_EQ(cfg.name, "default");
    ASSERT_STR_EQ(cfg.data_dir, "default.etcd");
    ASSERT_EQ(cfg.listen_client_urls.n, 1);
    ASSERT_STR_EQ(cfg.listen_client_urls.v[0], "http://localhost:2379");
    ASSERT_STR_EQ(cfg.advertise_client_urls.v[0], "http://localhost:2379");
    ASSERT_STR_EQ(cfg.listen_peer_urls.v[0], "http://localhost:2380");
    ASSERT_STR_EQ(cfg.initial_cluster, "default=http://localhost:2380");
    ASSERT_STR_EQ(cfg.initial_cluster_state, "new");
    ASSERT_STR_EQ(cfg.initial_cluster_token, "etcd-cluster");
    ASSERT_EQ(cfg.snapshot_count, 100000);
    ASSERT_EQ(cfg.heartbeat_ms, 100);
    ASSERT_EQ(cfg.election_ms, 1000);
    ASSERT_EQ(cfg.max_snapshots, 5);
    ASSERT_EQ(cfg.max_wals, 5);
    ASSERT_EQ(cfg.log_level, RAFTD_LOG_INFO);
    ASSERT_EQ(cfg.n_members, 1);
    ASSERT_EQ(cfg.member_id, 0x8e9e05c52164694dULL);
    ASSERT_EQ(cfg.cluster_id, 0xcdf818194e3a8c32ULL);
    raftd_config_free(&cfg);
}

TEST(go_flag_syntax)
{
    struct raftd_config cfg;
    char err[256] = "";
    char *argv[] = {"raftd", "-name", "n1", "--data-dir=/tmp/x",
                    "--snapshot-count", "0x10", "-enable-v2",
                    "--max-wals=0", "-log-level=debug", "--",
                    };
    int code = -1;
    ASSERT_OK(parse(&cfg, ARGC(argv), argv, NULL, err, &code));
    ASSERT_STR_EQ(cfg.name, "n1");
    ASSERT_STR_EQ(cfg.data_dir, "/tmp/x");
    ASSERT_EQ(cfg.snapshot_count, 16);
    ASSERT_EQ(cfg.max_wals, 0);
    ASSERT_EQ(cfg.log_level, RAFTD_LOG_DEBUG);
    /* A renamed member with the default cluster line keeps etcd's id. */
    ASSERT_STR_EQ(cfg.initial_cluster, "n1=http://localhost:2380");
    ASSERT_EQ(cfg.member_id, 0x8e9e05c52164694dULL);
    raftd_config_free(&cfg);
}

TEST(env_and_precedence)
{
    struct raftd_config cfg;
    char err[256] = "";
    char *argv[] = {"raftd", "--name=fromflag"};
    char *env[] = {"ETCD_NAME=fromenv", "ETCD_SNAPSHOT_COUNT=42",
                   ("ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:1,"
                    "http://127.0.0.1:2"),
                   "ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:1",
                   "PATH=/bin", NULL};
    int code = -1;
    ASSERT_OK(parse(&cfg, ARGC(argv), argv, env, err, &code));
    ASSERT_STR_EQ(cfg.name, "fromflag");
    ASSERT_STR_EQ(cfg.shadowed_env, "ETCD_NAME");
    ASSERT_STR_EQ(cfg.data_dir, "fromflag.etcd");
    ASSERT_EQ(cfg.snapshot_count, 42);
    ASSERT_EQ(cfg.listen_client_urls.n, 2);
    ASSERT_STR_EQ(cfg.listen_client_urls.v[1], "http://127.0.0.1:2");
    raftd_config_free(&cfg);
}

TEST(cluster_ids_from_flags)
{
    struct raftd_config cfg;
    char err[256] = "";
    char *argv[] = {"raftd",
                    "--listen-client-urls", "http://127.0.0.1:47913",
                    "--advertise-client-urls", "http://127.0.0.1:47913",
                    "--listen-peer-urls", "http://127.0.0.1:47914",
                    "--initial-advertise-peer-urls", "http://127.0.0.1:47914",
                    "--initial-cluster", "default=http://127.0.0.1:47914"};
    int code = -1;
    ASSERT_OK(parse(&cfg, ARGC(argv), argv, NULL, err, &code));
    ASSERT_EQ(cfg.member_id, 0x94018c83380f970cULL);
    ASSERT_EQ(cfg.cluster_id, 0xb837d098d32c703dULL);
    raftd_config_free(&cfg);
}

TEST(errors_and_exit_codes)
{
    struct raftd_config cfg;
    char err[256];
    int code;
    char *unknown[] = {"raftd", "--bogus"};
    char *badval[] = {"raftd", "--snapshot-count=abc"};
    char *noarg[] = {"raftd", "--name"};
    char *extra[] = {"raftd", "extra"};
    char *badurl[] = {"raftd", "--listen-client-urls=http://a:1/x"};
    char *noadv[] = {"raftd", "--listen-client-urls=http://127.0.0.1:1"};
    char *badstate[] = {"raftd", "--initial-cluster-state=bad"};
    char *notin[] = {"raftd", "--name=x",
                     "--initial-cluster=y=http://127.0.0.1:3"};
    char *envbad[] = {"raftd"};
    char *env[] = {"ETCD_SNAPSHOT_COUNT=abc", NULL};

    ASSERT_EQ(parse(&cfg, 2, unknown, NULL, err, &code), -EINVAL);
    ASSERT_EQ(code, 2);
    ASSERT_STR_EQ(err, "flag provided but not defined: -bogus");
    raftd_config_free(&cfg);

    ASSERT_EQ(parse(&cfg, 2, badval, NULL, err, &code), -EINVAL);
    ASSERT_EQ(code, 2);
    ASSERT_STR_EQ(err,
                  "invalid value \"abc\" for flag -snapshot-count: parse error");
    raftd_config_free(&cfg);

    ASSERT_EQ(parse(&cfg, 2, noarg, NULL, err, &code), -EINVAL);
    ASSERT_EQ(code, 2);
    raftd_config_free(&cfg);

    ASSERT_EQ(parse(&cfg, 2, extra, NULL, err, &code), -EINVAL);
    ASSERT_EQ(code, 1);
    ASSERT_STR_EQ(err, "'extra' is not a valid flag");
    raftd_config_free(&cfg);

    ASSERT_EQ(parse(&cfg, 2, badurl, NULL, err, &code), -EINVAL);
    ASSERT_EQ(code, 2);
    ASSERT_STR_EQ(err, "invalid value \"http://a:1/x\" for flag "
                       "-listen-client-urls: URL must not contain a path: "
                       "http://a:1/x");
    raftd_config_free(&cfg);

    ASSERT_EQ(parse(&cfg, 2, noadv, NULL, err, &code), -EINVAL);
    ASSERT_EQ(code, 1);
    raftd_config_free(&cfg);

    ASSERT_EQ(parse(&cfg, 2, badstate, NULL, err, &code), -EINVAL);
    ASSERT_EQ(code, 2);
    raftd_config_free(&cfg);

    ASSERT_EQ(parse(&cfg, 3, notin, NULL, err, &code), -EINVAL);
    ASSERT_EQ(code, 1);
    raftd_config_free(&cfg);

    ASSERT_EQ(parse(&cfg, 1, envbad, env, err, &code), -EINVAL);
    ASSERT_EQ(code, 1);
    ASSERT_STR_EQ(err,
                  "invalid value \"abc\" for ETCD_SNAPSHOT_COUNT: parse error");
    raftd_config_free(&cfg);
}

TEST(help_and_version)
{
    struct raftd_config cfg;
    char err[256];
    int code;
    char *help[] = {"raftd", "-h"};
    char *ver[] = {"raftd", "--version"};
    ASSERT_OK(parse(&cfg, 2, help, NULL, err, &code));
    ASSERT_EQ(cfg.print_help, 1);
    ASSERT_EQ(code, 0);
    raftd_config_free(&cfg);
    ASSERT_OK(parse(&cfg, 2, ver, NULL, err, &code));
    ASSERT_EQ(cfg.print_version, 1);
    raftd_config_free(&cfg);
}

TEST(log_levels)
{
    enum raftd_log_level l;
    ASSERT_OK(raftd_log_level_parse("warn", &l));
    ASSERT_EQ(l, RAFTD_LOG_WARN);
    ASSERT_EQ(raftd_log_level_parse("loud", &l), -EINVAL);
}

TEST_MAIN(TEST_ENTRY(sha1_vectors), TEST_ENTRY(ids_match_etcd),
          TEST_ENTRY(added_member_id_matches_etcd),
          TEST_ENTRY(membership_flags), TEST_ENTRY(idle_poll_flag),
          TEST_ENTRY(http_threads_flag),
          TEST_ENTRY(defaults), TEST_ENTRY(go_flag_syntax),
          TEST_ENTRY(env_and_precedence), TEST_ENTRY(cluster_ids_from_flags),
          TEST_ENTRY(errors_and_exit_codes), TEST_ENTRY(help_and_version),
          TEST_ENTRY(log_levels))
