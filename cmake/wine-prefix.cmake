# CTest fixture for the Windows build run under Wine (tests/CMakeLists.txt).
#
# Setup: creates the Wine prefix once, before any test starts. Without it, the first tests,
# started in parallel, race to create the same prefix; the losers fail ("wine: created the
# configuration directory ... please try running the same command again") or hang. Then waits
# for wineserver to finish writing the prefix, and starts the wineserver every test will use and
# Wine's services, with their standard streams on /dev/null and a persistence of 300 s. Without
# that, whichever test's process found none running started them, and they kept that process's
# stderr (the wineserver: stdout too) open: the harness (CTest, or run_example.py's
# subprocess.run) then waited for end-of-file until they exited, seconds to minutes later, as if
# the test hung after it had finished (docs/platforms.md, "Flaky under Wine").
#   cmake -DWINE64=/usr/lib/wine/wine64 -P wine-prefix.cmake            (setup)
#   cmake -DWINE64=/usr/lib/wine/wine64 -DSTOP=ON -P wine-prefix.cmake  (cleanup: ends it)
# WINEPREFIX comes from the environment. Run under `taskset` (as the tests are), the wineserver
# started here inherits the same CPU.
if(NOT WINE64)
  message(FATAL_ERROR "wine-prefix.cmake: pass -DWINE64=<path to wine64>")
endif()
get_filename_component(wine_dir "${WINE64}" DIRECTORY)
find_program(WINESERVER NAMES wineserver64 wineserver PATHS "${wine_dir}" NO_DEFAULT_PATH)
find_program(WINESERVER NAMES wineserver64 wineserver)
if(NOT WINESERVER)
  message(FATAL_ERROR "wine-prefix.cmake: no wineserver next to ${WINE64} or on PATH")
endif()

if(STOP)
  # -k ends the wineserver of this prefix and any Wine process a test left behind in it (the
  # prefix is this build tree's own). Nothing running is not an error.
  execute_process(COMMAND "${WINESERVER}" -k OUTPUT_QUIET ERROR_QUIET TIMEOUT 60)
  execute_process(COMMAND "${WINESERVER}" -w TIMEOUT 60)
  message(STATUS "Wine server stopped: $ENV{WINEPREFIX}")
  return()
endif()

# A wineserver left from an earlier run of this build tree's tests would make `-w` below wait
# out its persistence: end it first.
execute_process(COMMAND "${WINESERVER}" -k OUTPUT_QUIET ERROR_QUIET TIMEOUT 60)
execute_process(COMMAND "${WINE64}" wineboot --init RESULT_VARIABLE boot_result TIMEOUT 240)
if(NOT boot_result EQUAL 0)
  message(FATAL_ERROR "wineboot --init failed: ${boot_result}")
endif()
execute_process(COMMAND "${WINESERVER}" -w RESULT_VARIABLE wait_result TIMEOUT 120)
if(NOT wait_result EQUAL 0)
  message(FATAL_ERROR "wineserver -w (waiting for the prefix to be written) failed: ${wait_result}")
endif()
# wineserver puts itself in the background; the command returns once it is listening.
execute_process(COMMAND "${WINESERVER}" -p300 RESULT_VARIABLE server_result
                INPUT_FILE /dev/null OUTPUT_FILE /dev/null ERROR_FILE /dev/null TIMEOUT 60)
if(NOT server_result EQUAL 0)
  message(FATAL_ERROR "starting a persistent wineserver failed: ${server_result}")
endif()
# The first Wine program starts Wine's own services (services.exe, explorer.exe, winedevice.exe,
# plugplay.exe, rpcss.exe, svchost.exe), which live as long as the wineserver and inherit the
# standard error of the program that started them. Started here, from a program whose streams
# are /dev/null, they hold no test's output open.
execute_process(COMMAND "${WINE64}" cmd.exe /c exit 0 RESULT_VARIABLE services_result
                INPUT_FILE /dev/null OUTPUT_FILE /dev/null ERROR_FILE /dev/null TIMEOUT 120)
if(NOT services_result EQUAL 0)
  message(FATAL_ERROR "starting Wine's services (wine64 cmd.exe /c exit 0) failed: ${services_result}")
endif()
message(STATUS "Wine prefix ready, wineserver running: $ENV{WINEPREFIX}")
