# The pure Raft core: no I/O, no libuv, no clock (see raft.h).
add_library(etcfs_raft STATIC ${CMAKE_CURRENT_SOURCE_DIR}/raft.c)
target_include_directories(etcfs_raft PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})

etcfs_unit_test(test_raft etcfs_raft)
etcfs_unit_test(test_raft_sim etcfs_raft)
etcfs_unit_test(test_raft_nomem etcfs_raft)
etcfs_fuzz_target(fuzz_raft etcfs_raft)
etcfs_bench(bench_raft etcfs_raft)
