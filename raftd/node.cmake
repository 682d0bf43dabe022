# etcfs_raftd: config, logging, the node loop, the v2 HTTP API and stats;
# plus the raftd program. Included from raftd/CMakeLists.txt.
set(ETCFS_RAFTD_SOURCES config.c log.c)
add_library(etcfs_raftd STATIC ${ETCFS_RAFTD_SOURCES})
target_include_directories(etcfs_raftd PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})

etcfs_unit_test(test_config etcfs_raftd)
