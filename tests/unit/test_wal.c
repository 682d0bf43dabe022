#include "test.h"
#include "wal.h"
TEST(placeholder) { ASSERT(1); }
TEST_MAIN(TEST_ENTRY(placeholder))
