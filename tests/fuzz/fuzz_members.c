/* libFuzzer target for the /v2/members POST/PUT body decoder
 * (raftd/api_members.c): Go's encoding/json validity check, the
 * {"peerURLs": [...]} decode with Go's type errors, and types.NewURLs.
 * Any input must decode or be refused with a message, without reading
 * past the body (libFuzzer's buffer is exactly the input) or leaking. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct raftd_urls urls = {0};
    char msg[256];
    const char *body = (const char *)data;

    int valid = api_json_valid(body, size);
    msg[0] = '\0';
    int rv = api_members_decode(body, size, msg, sizeof(msg), &urls);
    if (rv == 0 && (!valid || urls.n == 0))
        abort(); /* decoded what is not JSON, or no URL */
    if (rv != 0 && msg[0] == '\0')
        abort(); /* refused without saying why */
    for (size_t i = 0; i < urls.n; i++)
        free(urls.v[i]);
    free(urls.v);
    return 0;
}
