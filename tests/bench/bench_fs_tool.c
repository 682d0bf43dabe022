/* bench_fs_tool.c - the timed loops of tests/bench/bench_fs.sh: open/read/
 * close of one file, the `cat` program run on one file, open(O_TRUNC)/
 * write/close of one file, and sequential keep-alive HTTP PUTs, N times
 * each; prints operations per second.
 * Built by the script with cc -O2; not part of the CMake build. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define VALUE_LEN 100

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* open, read to EOF, close; the file must hold exactly VALUE_LEN bytes. */
static int one_cat(const char *path)
{
    char buf[4096];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof buf);
    int rv = n == VALUE_LEN ? 0 : -EIO;
    if (n < 0)
        rv = -errno;
    close(fd);
    return rv;
}

/* What a shell's `cat path` costs: fork and exec /bin/cat with its
 * output on a pipe, read the pipe to EOF (it must carry exactly VALUE_LEN
 * bytes), reap the child. */
static int one_cat_program(const char *path)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    char *argv[] = {"cat", (char *)path, NULL};
    extern char **environ;
    pid_t pid;
    int rv = -posix_spawn(&pid, "/bin/cat", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rv < 0) {
        close(fds[0]);
        return rv;
    }
    char buf[4096];
    size_t got = 0;
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0)
        got += (size_t)n;
    close(fds[0]);
    int status;
    if (waitpid(pid, &status, 0) < 0)
        return -errno;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got != VALUE_LEN)
        return -EIO;
    return 0;
}

/* What `echo v > path` does: open with O_TRUNC, one write, close. */
static int one_write(const char *path, const char *value)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -errno;
    int rv = 0;
    if (write(fd, value, VALUE_LEN) != VALUE_LEN)
        rv = -EIO;
    if (close(fd) < 0 && rv == 0)
        rv = -errno;
    return rv;
}

/* One PUT on the keep-alive connection fd; waits for the whole answer
 * (Content-Length body). */
static int one_put(int fd, const char *req, size_t req_len)
{
    char buf[8192];
    size_t off = 0;
    if (write(fd, req, req_len) != (ssize_t)req_len)
        return -EIO;
    for (;;) {
        ssize_t n = read(fd, buf + off, sizeof buf - 1 - off);
        if (n <= 0)
            return -EIO;
        off += (size_t)n;
        buf[off] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end == NULL)
            continue;
        char *cl = strcasestr(buf, "\r\nContent-Length:");
        if (cl == NULL || cl > end)
            return -EPROTO;
        size_t body = strtoul(cl + 17, NULL, 10);
        if (strncmp(buf + 9, "20", 2) != 0)
            return -EPROTO;
        if (off >= (size_t)(end + 4 - buf) + body)
            return 0;
    }
}

int main(int argc, char **argv)
{
    char value[VALUE_LEN + 1];
    memset(value, 'v', VALUE_LEN - 1);
    value[VALUE_LEN - 1] = '\n';
    value[VALUE_LEN] = '\0';
    if (argc < 4) {
        fprintf(stderr,
                "usage: %s cat|catprog|write PATH N | put PORT KEYPATH N\n",
                argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    long n = strtol(argv[argc - 1], NULL, 10);
    int rv = 0;
    double t0;
    if (strcmp(mode, "cat") == 0 || strcmp(mode, "catprog") == 0 ||
        strcmp(mode, "write") == 0) {
        int (*op)(const char *) = NULL; /* NULL: one_write */
        if (strcmp(mode, "cat") == 0)
            op = one_cat;
        else if (strcmp(mode, "catprog") == 0)
            op = one_cat_program;
        for (int i = 0; i < 10 && rv == 0; i++) /* warm up */
            rv = op != NULL ? op(argv[2]) : one_write(argv[2], value);
        t0 = now_s();
        for (long i = 0; i < n && rv == 0; i++)
            rv = op != NULL ? op(argv[2]) : one_write(argv[2], value);
    } else if (strcmp(mode, "put") == 0 && argc == 5) {
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)atoi(argv[2]))};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            perror("connect");
            return 1;
        }
        char form[VALUE_LEN + 1];
        memset(form, 'v', VALUE_LEN);
        form[VALUE_LEN] = '\0'; /* 100 bytes, no '\n' to URL-encode */
        char req[1024];
        int len = snprintf(req, sizeof req,
                           "PUT /v2/keys%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           "Content-Type: application/x-www-form-urlencoded\r\n"
                           "Content-Length: %d\r\n\r\nvalue=%s",
                           argv[3], 6 + VALUE_LEN, form);
        for (int i = 0; i < 10 && rv == 0; i++)
            rv = one_put(fd, req, (size_t)len);
        t0 = now_s();
        for (long i = 0; i < n && rv == 0; i++)
            rv = one_put(fd, req, (size_t)len);
        close(fd);
    } else {
        fprintf(stderr, "bad mode %s\n", mode);
        return 2;
    }
    double dt = now_s() - t0;
    if (rv != 0) {
        fprintf(stderr, "%s: %s\n", mode, strerror(-rv));
        return 1;
    }
    printf("%.0f\n", (double)n / dt);
    return 0;
}
