/* Unit tests for raftd/stats.c's Go number formats: float64 as
 * encoding/json writes it (shortest digits, 'e' form outside [1e-6,
 * 1e21)) and time.Duration.String(). Expected strings are Go's output. */
#include "node_int.h"
#include "test.h"

static const char *go_float(double v)
{
    static char buf[64];
    stats_go_float(v, buf, sizeof(buf));
    return buf;
}

TEST(go_float_matches_encoding_json)
{
    ASSERT_STR_EQ(go_float(0), "0");
    ASSERT_STR_EQ(go_float(100), "100");
    ASSERT_STR_EQ(go_float(123.5), "123.5");
    ASSERT_STR_EQ(go_float(-2.25), "-2.25");
    ASSERT_STR_EQ(go_float(0.00019), "0.00019");
    ASSERT_STR_EQ(go_float(0.0017493301886792457), "0.0017493301886792457");
    ASSERT_STR_EQ(go_float(0.1 + 0.2), "0.30000000000000004");
    ASSERT_STR_EQ(go_float(1.5e-6), "0.0000015");
    ASSERT_STR_EQ(go_float(12345678.9), "12345678.9");
    /* etcd's initial FollowerStats minimum, 1 << 63: shortest digits,
     * then zeros. */
    ASSERT_STR_EQ(go_float(9223372036854775808.0), "9223372036854776000");
    ASSERT_STR_EQ(go_float(1e-7), "1e-7");
    ASSERT_STR_EQ(go_float(2.5e-10), "2.5e-10");
    ASSERT_STR_EQ(go_float(1e21), "1e+21");
}

TEST(go_duration)
{
    char buf[64];
    stats_go_duration(0, buf, sizeof(buf));
    ASSERT_STR_EQ(buf, "0s");
    stats_go_duration(1500, buf, sizeof(buf));
    ASSERT_STR_EQ(buf, "1.5\xc2\xb5s");
    stats_go_duration(3723000000000LL, buf, sizeof(buf));
    ASSERT_STR_EQ(buf, "1h2m3s");
}

TEST_MAIN(TEST_ENTRY(go_float_matches_encoding_json), TEST_ENTRY(go_duration))
