# etcfs-dump-logs: prints a data dir's snapshot, WAL segments and entries
# (raftd/dump.c), and its ctest. Included from raftd/CMakeLists.txt.
# The Request decoder is generated here into its own subdirectory so this
# tool depends neither on etcfs_raftd nor on how node.cmake generates the
# same proto (two rules for one output in a directory would clash).
set(ETCFS_DUMP_PB_DIR ${CMAKE_CURRENT_BINARY_DIR}/dump_pb)
set(ETCFS_DUMP_PB ${ETCFS_DUMP_PB_DIR}/request.pb-c.c
                  ${ETCFS_DUMP_PB_DIR}/request.pb-c.h)
add_custom_command(
  OUTPUT ${ETCFS_DUMP_PB}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${ETCFS_DUMP_PB_DIR}
  COMMAND ${PROTOC_C} --proto_path=${CMAKE_CURRENT_SOURCE_DIR}
          --c_out=${ETCFS_DUMP_PB_DIR}
          ${CMAKE_CURRENT_SOURCE_DIR}/request.proto
  DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/request.proto
  COMMENT "protoc-c request.proto (etcfs-dump-logs)")
set_source_files_properties(${ETCFS_DUMP_PB} PROPERTIES COMPILE_OPTIONS "-w")
# One target owns the generated code; the program and the fuzz target link it.
add_library(etcfs_dump_pb STATIC ${ETCFS_DUMP_PB})
target_include_directories(etcfs_dump_pb PUBLIC ${ETCFS_DUMP_PB_DIR})
target_link_libraries(etcfs_dump_pb PUBLIC PkgConfig::PROTOBUFC)

add_executable(etcfs-dump-logs dump.c)
target_link_libraries(etcfs-dump-logs PRIVATE etcfs_dump_pb etcfs_snap
                      etcfs_wal)

# The entry decoder (dump.c without main) under libFuzzer.
if(ETCFS_FUZZ)
  add_library(etcfs_dump_fmt STATIC dump.c)
  target_compile_definitions(etcfs_dump_fmt PRIVATE ETCFS_DUMP_NO_MAIN)
  target_link_libraries(etcfs_dump_fmt PUBLIC etcfs_dump_pb etcfs_snap
                        etcfs_wal)
  etcfs_fuzz_target(fuzz_dump etcfs_dump_fmt)
endif()

# The test builds a data dir with the wal and snap APIs, runs the tool and
# checks its output, so it needs the program's path.
add_executable(test_dump ${PROJECT_SOURCE_DIR}/tests/unit/test_dump.c)
target_include_directories(test_dump PRIVATE ${PROJECT_SOURCE_DIR}/tests/unit)
target_link_libraries(test_dump PRIVATE etcfs_snap etcfs_wal)
add_dependencies(test_dump etcfs-dump-logs)
add_test(NAME test_dump COMMAND test_dump $<TARGET_FILE:etcfs-dump-logs>)
set_tests_properties(test_dump PROPERTIES TIMEOUT 60)
