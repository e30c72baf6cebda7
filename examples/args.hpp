// A tiny command-line reader shared by the examples: --name value pairs and bare --flags.
// A mistake on the command line (an unknown option, a malformed or out-of-range number) prints
// the usage to stderr and exits 2; --help prints it to stdout and exits 0.
#ifndef SOCKPAT_EXAMPLES_ARGS_HPP
#define SOCKPAT_EXAMPLES_ARGS_HPP

#include <charconv>     // std::from_chars
#include <cstdio>       // std::fprintf
#include <cstdlib>      // std::exit
#include <map>          // std::map
#include <set>          // std::set
#include <string>       // std::string, std::to_string
#include <string_view>  // std::string_view
#include <vector>       // std::vector

#include "sockpat/endpoint.hpp"  // sockpat::Endpoint, sockpat::resolve

namespace example {

class Args {
 public:
  /// `flags` take no value, `options` take one; any other --option is a usage error.
  Args(int argc, char** argv, const std::set<std::string>& flags, const std::set<std::string>& options,
       const char* usage)
      : usage_(usage) {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") help();
      if (a.rfind("--", 0) != 0) fail(("unexpected argument " + a).c_str());
      const std::string name = a.substr(2);
      if (flags.count(name) != 0) {
        values_[name].emplace_back();
      } else if (options.count(name) == 0) {
        fail(("unknown option " + a).c_str());
      } else if (i + 1 < argc) {
        values_[name].emplace_back(argv[++i]);
      } else {
        fail((a + " needs a value").c_str());
      }
    }
    // Checked now, before the example starts anything.
    if (options.count("port") != 0) (void)get_port();
  }

  [[nodiscard]] bool has(const std::string& name) const { return values_.count(name) != 0; }
  [[nodiscard]] std::string get(const std::string& name, const std::string& fallback) const {
    const auto it = values_.find(name);
    return it == values_.end() ? fallback : it->second.back();
  }
  [[nodiscard]] std::vector<std::string> all(const std::string& name) const {
    const auto it = values_.find(name);
    return it == values_.end() ? std::vector<std::string>{} : it->second;
  }
  /// The whole value as a number from `min` to `max`, or a usage error.
  [[nodiscard]] int get_int(const std::string& name, int fallback, int min, int max) const {
    if (!has(name)) return fallback;
    const std::string text = get(name, "");
    int value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc{} || end != text.data() + text.size() || value < min || value > max) {
      const std::string why = "--" + name + ": expected a number " + std::to_string(min) + "-" + std::to_string(max);
      fail((why + ", got " + text).c_str());
    }
    return value;
  }
  /// --port, 0 to 65535 (0: the OS picks a free port).
  [[nodiscard]] int get_port() const { return get_int("port", 0, 0, 65535); }

  [[noreturn]] void fail(const char* why) const {
    std::fprintf(stderr, "error: %s\nusage: %s\n", why, usage_);
    std::exit(2);
  }

 private:
  [[noreturn]] void help() const {
    std::printf("usage: %s\n", usage_);
    std::exit(0);
  }

  const char* usage_;
  std::map<std::string, std::vector<std::string>> values_;
};

/// HOST:PORT, [IPV6]:PORT or unix:PATH as an endpoint, where HOST may also be a name: that goes
/// through sockpat::resolve, and the first address of `family` is taken. Throws as
/// Endpoint::parse and sockpat::resolve do.
[[nodiscard]] inline sockpat::Endpoint endpoint_arg(std::string_view text,
                                                    sockpat::Family family = sockpat::Family::unspecified) {
  const auto colon = text.rfind(':');
  const bool named = !text.starts_with('[') && !text.starts_with("unix:") && colon != std::string_view::npos &&
                     colon != 0 && text.substr(0, colon).find(':') == std::string_view::npos;
  const auto port = named ? text.substr(colon + 1) : std::string_view{};
  int p = 0;
  const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), p);
  // Anything but NAME:NUMBER goes to parse(), which accepts it or says what is wrong with it.
  if (!named || port.empty() || error != std::errc{} || end != port.data() + port.size()) {
    return sockpat::Endpoint::parse(text);
  }
  return sockpat::resolve(text.substr(0, colon), p, family).front();
}

}  // namespace example

#endif
