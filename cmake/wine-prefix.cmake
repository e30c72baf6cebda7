# CTest fixture for the Windows build run under Wine (tests/CMakeLists.txt): creates the Wine
# prefix once, before any test starts. Without it, the first tests, started in parallel, race to
# create the same prefix; the losers fail ("wine: created the configuration directory ...
# please try running the same command again") or hang. Then waits for wineserver to finish
# writing the prefix, so the tests start from a complete one.
#   cmake -DWINE64=/usr/lib/wine/wine64 -P wine-prefix.cmake   (WINEPREFIX from the environment)
if(NOT WINE64)
  message(FATAL_ERROR "wine-prefix.cmake: pass -DWINE64=<path to wine64>")
endif()
get_filename_component(wine_dir "${WINE64}" DIRECTORY)
find_program(WINESERVER NAMES wineserver64 wineserver PATHS "${wine_dir}" NO_DEFAULT_PATH)
find_program(WINESERVER NAMES wineserver64 wineserver)
execute_process(COMMAND "${WINE64}" wineboot --init RESULT_VARIABLE boot_result TIMEOUT 240)
if(NOT boot_result EQUAL 0)
  message(FATAL_ERROR "wineboot --init failed: ${boot_result}")
endif()
if(WINESERVER)
  execute_process(COMMAND "${WINESERVER}" -w RESULT_VARIABLE wait_result TIMEOUT 120)
endif()
message(STATUS "Wine prefix ready: $ENV{WINEPREFIX}")
