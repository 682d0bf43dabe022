/* A minimal unit-test harness in the spirit of libuv's runner: each test is
 * a function, TEST_MAIN runs the list in order (or the one named on the
 * command line) and prints "N passed, N failed". Header-only on purpose. */
#ifndef ETCFS_TEST_H
#define ETCFS_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct test_case {
    const char *name;
    void (*fn)(void);
};

/* Set by the ASSERT macros; a test stops at its first failed assertion. */
static int test_failed_;

#define TEST_FAIL_(...)                                                        \
    do {                                                                       \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                        \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        test_failed_ = 1;                                                      \
    } while (0)

/* These macros return from the test function on failure; that is the one
 * place in the project where a macro hides a return, and it is why they
 * may only be used directly in test bodies. */
#define ASSERT(cond)                                                           \
    do {                                                                       \
        if (!(cond)) {                                                         \
            TEST_FAIL_("assertion failed: %s", #cond);                         \
            return;                                                            \
        }                                                                      \
    } while (0)

#define ASSERT_INT_(a, op, b)                                                  \
    do {                                                                       \
        long long a_ = (long long)(a), b_ = (long long)(b);                    \
        if (!(a_ op b_)) {                                                     \
            TEST_FAIL_("%s %s %s (%lld vs %lld)", #a, #op, #b, a_, b_);        \
            return;                                                            \
        }                                                                      \
    } while (0)

#define ASSERT_EQ(a, b) ASSERT_INT_(a, ==, b)
#define ASSERT_NE(a, b) ASSERT_INT_(a, !=, b)
#define ASSERT_LT(a, b) ASSERT_INT_(a, <, b)
#define ASSERT_LE(a, b) ASSERT_INT_(a, <=, b)
#define ASSERT_GT(a, b) ASSERT_INT_(a, >, b)
#define ASSERT_GE(a, b) ASSERT_INT_(a, >=, b)
#define ASSERT_OK(rv) ASSERT_INT_(rv, ==, 0)

#define ASSERT_STR_EQ(a, b)                                                    \
    do {                                                                       \
        const char *a_ = (a), *b_ = (b);                                       \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                 \
            TEST_FAIL_("%s == %s (\"%s\" vs \"%s\")", #a, #b,                  \
                       a_ ? a_ : "(null)", b_ ? b_ : "(null)");                \
            return;                                                            \
        }                                                                      \
    } while (0)

#define ASSERT_MEM_EQ(a, b, n)                                                 \
    do {                                                                       \
        if (memcmp((a), (b), (n)) != 0) {                                      \
            TEST_FAIL_("memory differs: %s vs %s", #a, #b);                    \
            return;                                                            \
        }                                                                      \
    } while (0)

#define TEST(name) static void test_##name(void)
#define TEST_ENTRY(name) {#name, test_##name}

static inline int test_main_(int argc, char **argv,
                             const struct test_case *tests, size_t n)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], tests[i].name) != 0)
            continue;
        test_failed_ = 0;
        tests[i].fn();
        if (test_failed_) {
            fprintf(stderr, "FAIL %s\n", tests[i].name);
            failed++;
        } else {
            fprintf(stderr, "ok   %s\n", tests[i].name);
            passed++;
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : (passed ? 0 : 1);
}

#define TEST_MAIN(...)                                                         \
    int main(int argc, char **argv)                                            \
    {                                                                          \
        static const struct test_case tests_[] = {__VA_ARGS__};                \
        return test_main_(argc, argv, tests_,                                  \
                          sizeof(tests_) / sizeof(tests_[0]));                 \
    }

#endif /* ETCFS_TEST_H */
