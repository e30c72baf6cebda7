// Two translation units that include the umbrella header, linked into one program:
// a non-inline definition in any header would fail to link.
#include "sockpat.hpp"

#include <doctest/doctest.h>

#include "support/printing.hpp"

std::string odr_b_endpoint_text();

TEST_CASE("two translation units including the umbrella header link and agree") {
  CHECK(sockpat::Endpoint("127.0.0.1", 1).to_string() == odr_b_endpoint_text());
  CHECK(&sockpat::error_category() == &sockpat::error_category());
}
