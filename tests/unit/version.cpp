#include "sockpat/version.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

#include <string>

TEST_SUITE("version") {
TEST_CASE("the version string agrees with the version numbers") {
  const std::string expected = std::to_string(SOCKPAT_VERSION_MAJOR) + '.' + std::to_string(SOCKPAT_VERSION_MINOR) +
                               '.' + std::to_string(SOCKPAT_VERSION_PATCH);
  CHECK(expected == SOCKPAT_VERSION_STRING);
}
}
