/* libFuzzer target for the snapshot file parser: the input is taken as a
 * whole .snap file, opened (verification pass), read to the end, read back
 * verbatim, and fed to a file-transfer writer whose commit verifies it
 * again. Any input must give an error or a clean read, never a crash. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snap.h"

/* One scratch directory per fuzzing process, made on the first input. */
static char fuzz_dir[64];

static void fuzz_dir_remove(void)
{
    rmdir(fuzz_dir);
}

static void fuzz_dir_init(void)
{
    if (fuzz_dir[0] != '\0')
        return;
    snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/fuzz_snap.XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (mkdtemp(fuzz_dir) == NULL)
        abort();
    atexit(fuzz_dir_remove);
}

static void fuzz_rm(const char *name)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/%s", fuzz_dir, name);
    unlink(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char name[] = "0000000000000001-0000000000000002.snap";
    struct snap_options opts;
    struct snap_reader *r;
    struct snap_writer *w;
    unsigned char buf[4096];
    char path[128];
    size_t n;
    int fd;

    fuzz_dir_init();
    snap_options_init(&opts);
    opts.dir = fuzz_dir;
    snprintf(path, sizeof(path), "%s/%s", fuzz_dir, name);
    fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    close(fd);

    if (snap_reader_open(&opts, &r) == 0) {
        size_t meta_len;
        const unsigned char *meta = snap_reader_meta(r, &meta_len);
        uint64_t total = 0;
        int rv;
        if (meta_len > 0 && meta[0] == 0xff)
            buf[0] = meta[meta_len - 1]; /* touch the meta bounds */
        while ((rv = snap_reader_read(r, buf, sizeof(buf), &n)) == 0 && n > 0)
            total += n;
        /* A clean end of image must deliver exactly what the header says. */
        if (rv == 0 && total != snap_reader_image_size(r))
            abort();
        while (snap_reader_read_file(r, buf, sizeof(buf), &n) == 0 && n > 0)
            ;
        snap_reader_free(r);
    }
    fuzz_rm(name);
    fuzz_rm("0000000000000001-0000000000000002.snap.broken");

    /* The receiving side: commit verifies the bytes before naming them. */
    if (snap_writer_new_file(&opts, 1, 2, &w) == 0) {
        if (snap_writer_write_file(w, data, size) == 0)
            snap_writer_commit(w);
        else
            snap_writer_abort(w);
    }
    fuzz_rm(name);
    return 0;
}
