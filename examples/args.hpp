// A tiny command-line reader shared by the examples: --name value pairs and bare --flags.
#ifndef SOCKPAT_EXAMPLES_ARGS_HPP
#define SOCKPAT_EXAMPLES_ARGS_HPP

#include <cstdio>     // std::fprintf
#include <cstdlib>    // std::exit
#include <map>        // std::map
#include <set>        // std::set
#include <stdexcept>  // std::invalid_argument
#include <string>     // std::string, std::stoi
#include <vector>     // std::vector

namespace example {

class Args {
 public:
  /// `flags` are the options that take no value; every other --option takes one.
  Args(int argc, char** argv, std::set<std::string> flags, const char* usage) : usage_(usage) {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") fail();
      if (a.rfind("--", 0) != 0) fail(("unexpected argument " + a).c_str());
      const std::string name = a.substr(2);
      if (flags.count(name) != 0) {
        values_[name].emplace_back();
      } else if (i + 1 < argc) {
        values_[name].emplace_back(argv[++i]);
      } else {
        fail(("--" + name + " needs a value").c_str());
      }
    }
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
  [[nodiscard]] int get_int(const std::string& name, int fallback) const {
    if (!has(name)) return fallback;
    try {
      return std::stoi(get(name, ""));
    } catch (const std::exception&) {
      fail(("--" + name + " needs a number").c_str());
    }
  }

  [[noreturn]] void fail(const char* why = nullptr) const {
    if (why != nullptr) std::fprintf(stderr, "error: %s\n", why);
    std::fprintf(stderr, "usage: %s\n", usage_);
    std::exit(why != nullptr ? 2 : 0);
  }

 private:
  const char* usage_;
  std::map<std::string, std::vector<std::string>> values_;
};

}  // namespace example

#endif
