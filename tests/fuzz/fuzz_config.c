/* libFuzzer target for raftd's command line (raftd/config.c): the input is
 * split at NUL bytes into argv words; words after a lone "--env" become
 * the environment. Any input must parse or fail cleanly, without leaks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "raftd.h"

#define MAX_WORDS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1), *argv[MAX_WORDS + 2], *envp[MAX_WORDS + 1];
    int argc = 1, envc = 0, in_env = 0, code;
    struct raftd_config cfg;
    char err[256];
    size_t start = 0;

    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    argv[0] = "raftd";
    for (size_t i = 0; i <= size; i++) {
        if (copy[i] != '\0')
            continue;
        char *w = copy + start;
        start = i + 1;
        if (strcmp(w, "--env") == 0) {
            in_env = 1;
            continue;
        }
        if (in_env && envc < MAX_WORDS)
            envp[envc++] = w;
        else if (!in_env && argc < MAX_WORDS)
            argv[argc++] = w;
    }
    argv[argc] = NULL;
    envp[envc] = NULL;
    raftd_config_parse(&cfg, argc, argv, envp, err, sizeof(err), &code);
    raftd_config_free(&cfg);
    free(copy);
    return 0;
}
