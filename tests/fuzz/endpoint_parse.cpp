// Fuzz target: Endpoint::parse on arbitrary text. Whatever the input, parse either throws
// std::invalid_argument or returns an endpoint whose to_string() parses back to itself.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string_view>

#include "sockpat/endpoint.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  sockpat::Endpoint e;
  try {
    e = sockpat::Endpoint::parse(text);
  } catch (const std::invalid_argument&) {
    return 0;  // rejected clearly: the expected outcome for most inputs
  }
  const auto printed = e.to_string();
  const auto again = sockpat::Endpoint::parse(printed);  // must not throw
  if (!(again == e) || again.to_string() != printed) std::abort();
  if (std::hash<sockpat::Endpoint>{}(again) != std::hash<sockpat::Endpoint>{}(e)) std::abort();
  return 0;
}
