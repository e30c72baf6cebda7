# Compiles a consumer with -std=c++17 and checks that it fails, and that the first error the
# user sees is sockpat's own, naming the flag to use (detail/config.hpp).
# cmake "-DCXX=compiler;args" -DINCLUDE_DIR=... -DSOURCE=... -P check_cxx20_error.cmake
cmake_minimum_required(VERSION 3.21)
foreach(var CXX INCLUDE_DIR SOURCE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_cxx20_error.cmake: -D${var}=... is required")
  endif()
endforeach()

execute_process(COMMAND ${CXX} -std=c++17 -fsyntax-only "-I${INCLUDE_DIR}" "${SOURCE}"
                RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(result EQUAL 0)
  message(FATAL_ERROR "compiling with -std=c++17 succeeded; expected sockpat's #error")
endif()
string(REGEX MATCH "[^\n]*error[^\n]*" first_error "${out}")
if(NOT first_error MATCHES "sockpat needs C\\+\\+20" OR NOT first_error MATCHES "-std=c\\+\\+20")
  message(FATAL_ERROR "the first error does not name -std=c++20:\n  ${first_error}\nfull output:\n${out}")
endif()
message(STATUS "-std=c++17 fails first with: ${first_error}")
