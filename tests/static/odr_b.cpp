#include "sockpat.hpp"

#include <string>

std::string odr_b_endpoint_text() {
  // The category object must be one object across translation units.
  const std::error_code ec = sockpat::errc::end_of_stream;
  return ec.category() == sockpat::error_category() ? sockpat::Endpoint("127.0.0.1", 1).to_string() : "";
}
