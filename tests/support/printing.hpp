// How doctest prints the values our assertions compare, so a failure shows what it got.
#ifndef SOCKPAT_TESTS_SUPPORT_PRINTING_HPP
#define SOCKPAT_TESTS_SUPPORT_PRINTING_HPP

#include <doctest/doctest.h>

#include <string>
#include <system_error>

namespace doctest {
template <>
struct StringMaker<std::error_code> {
  static String convert(const std::error_code& ec) {
    const std::string s = std::string(ec.category().name()) + ':' + std::to_string(ec.value()) + " (" + ec.message() + ')';
    return String(s.c_str());
  }
};
}  // namespace doctest

#endif
