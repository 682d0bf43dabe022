#include "store.h"
#include "test.h"
TEST(new_free)
{
    struct store *s = store_new();
    ASSERT(s != NULL);
    store_free(s);
}
TEST_MAIN(TEST_ENTRY(new_free))
