# etcfs_http: the HTTP/1.1 server (libuv + http-parser) with Go's URL/form
# rules, used by raftd's v2 API; also the URL parsing for raftd's flags.
add_library(etcfs_http STATIC
  ${CMAKE_CURRENT_LIST_DIR}/http_server.c
  ${CMAKE_CURRENT_LIST_DIR}/http_url.c)
target_include_directories(etcfs_http PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(etcfs_http PUBLIC PkgConfig::UV ${HTTP_PARSER_LIB}
                      Threads::Threads)

etcfs_unit_test(test_http etcfs_http Threads::Threads)
etcfs_fuzz_target(fuzz_http etcfs_http)
etcfs_bench(bench_http etcfs_http)
