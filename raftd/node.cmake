# etcfs_raftd: config, logging, the node loop, the v2 HTTP API, stats and
# metrics; plus the raftd program. Included from raftd/CMakeLists.txt.
add_library(etcfs_raftd STATIC config.c log.c node.c api.c api_misc.c
                               api_members.c stats.c metrics.c
                               peer.c peer_codec.c members.c poller.c
                               workers.c)
target_include_directories(etcfs_raftd PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(etcfs_raftd PUBLIC etcfs_raft etcfs_http etcfs_store
                      etcfs_wal etcfs_snap PkgConfig::PROTOBUFC PkgConfig::UV
                      PkgConfig::JANSSON m)
etcfs_protobuf(etcfs_raftd request.proto)
etcfs_protobuf(etcfs_raftd peer.proto)

add_executable(raftd main.c)
target_link_libraries(raftd PRIVATE etcfs_raftd)
# --mount: fs/ defines etcfs_raftd_fs (raftd/fs_backend.c + etcfs_fs) after
# this file is read, so link it through generator expressions that are
# resolved once every directory is configured.
target_link_libraries(raftd PRIVATE $<TARGET_NAME_IF_EXISTS:etcfs_raftd_fs>)
target_compile_definitions(raftd PRIVATE
  $<$<TARGET_EXISTS:etcfs_raftd_fs>:RAFTD_WITH_FS>)

etcfs_unit_test(test_config etcfs_raftd)
etcfs_unit_test(test_node etcfs_raftd)
etcfs_fuzz_target(fuzz_config etcfs_raftd)
etcfs_unit_test(test_api etcfs_raftd)
etcfs_unit_test(test_peer etcfs_raftd)
etcfs_unit_test(test_stats etcfs_raftd)
etcfs_unit_test(test_poller etcfs_raftd)
etcfs_fuzz_target(fuzz_peer etcfs_raftd)
etcfs_fuzz_target(fuzz_members etcfs_raftd)
