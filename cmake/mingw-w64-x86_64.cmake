# Cross-compiles sockpat for 64-bit Windows with MinGW-w64 (Debian: g++-mingw-w64-x86-64-posix)
# and runs the results under Wine (Debian: wine64), so that `ctest` tests the Winsock build.
#   cmake --workflow --preset mingw-wine
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)

# The -posix variant: its libstdc++ has std::thread, std::mutex and std::stop_token.
set(CMAKE_CXX_COMPILER x86_64-w64-mingw32-g++-posix)
set(CMAKE_C_COMPILER x86_64-w64-mingw32-gcc-posix)
set(CMAKE_RC_COMPILER x86_64-w64-mingw32-windres)

set(CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Static runtime: the .exe files need no MinGW DLLs on Wine's PATH.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")

# Debian installs wine64's loader outside PATH. WINEDEBUG=-all keeps Wine's FIXME lines out of
# the test output; WINEPREFIX is best set by the caller (.ci/run uses a scratch one).
find_program(SOCKPAT_WINE64 NAMES wine64 PATHS /usr/lib/wine NO_CMAKE_FIND_ROOT_PATH)
# Wine on one CPU (taskset; the wineserver the first process starts inherits it). Under Wine 8.0
# on a 2-CPU Linux 6.18 machine, Wine processes hung at random points when free to use both CPUs,
# even one that opens no socket and starts no thread, after its last test passed; pinned, they
# did not (docs/platforms.md, "Wine on more than one CPU"). Empty: no pinning.
set(SOCKPAT_WINE_CPU "0" CACHE STRING "CPU that Wine runs the tests on (empty: any)")
find_program(SOCKPAT_TASKSET taskset NO_CMAKE_FIND_ROOT_PATH)
if(SOCKPAT_WINE64)
  if(SOCKPAT_WINE_CPU STREQUAL "" OR NOT SOCKPAT_TASKSET)
    set(CMAKE_CROSSCOMPILING_EMULATOR "${SOCKPAT_WINE64}")
  else()
    set(CMAKE_CROSSCOMPILING_EMULATOR "${SOCKPAT_TASKSET};-c;${SOCKPAT_WINE_CPU};${SOCKPAT_WINE64}")
  endif()
endif()
