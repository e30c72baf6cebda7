// gather_scaling: how gather, gather_settled, when_any and wait grow with the number of tasks. Each
// task is trivial (one yield_now), so what is measured is the combinator itself: a linear one
// takes about twice as long per doubling of n, a quadratic one four times. Not a timed test:
// it prints, for each n, the milliseconds and the ratio to the previous n.
// Run: gather_scaling [max_n]   (default 100000; n = max_n/8, max_n/4, max_n/2, max_n)
#include <chrono>     // std::chrono::steady_clock
#include <cstddef>    // std::size_t
#include <cstdio>     // std::printf
#include <cstdlib>    // std::strtoul
#include <exception>  // std::exception
#include <vector>     // std::vector

#include "sockpat/event_loop.hpp"
#include "sockpat/task.hpp"
#include "sockpat/task_group.hpp"

namespace {

sockpat::Task<int> trivial(int i) {
  co_await sockpat::yield_now();
  co_return i;
}

std::vector<sockpat::Task<int>> tasks(std::size_t n) {
  std::vector<sockpat::Task<int>> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) out.push_back(trivial(static_cast<int>(i)));
  return out;
}

enum class Which { gather, gather_settled, when_any, wait };

sockpat::Task<std::size_t> run_one(Which which, std::size_t n) {
  switch (which) {
    case Which::gather:
      co_return (co_await sockpat::gather(tasks(n))).size();
    case Which::gather_settled:
      co_return (co_await sockpat::gather_settled(tasks(n))).size();
    case Which::when_any:
      co_return (co_await sockpat::when_any(tasks(n))).first + 1;
    case Which::wait: {
      std::vector<sockpat::TaskHandle<int>> handles;
      handles.reserve(n);
      for (auto& t : tasks(n)) handles.push_back(sockpat::create_task(std::move(t)));
      co_return (co_await sockpat::wait(std::move(handles), std::chrono::hours(1))).done.size();
    }
  }
  co_return 0;
}

double measure(Which which, std::size_t n) {
  sockpat::EventLoop loop;
  const auto start = std::chrono::steady_clock::now();
  const std::size_t got = loop.run_until_complete(run_one(which, n));
  const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
  if (got == 0) std::printf("  (no result)\n");
  return took.count();
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t max_n = 100000;
  if (argc > 1) max_n = std::strtoul(argv[1], nullptr, 10);
  if (max_n < 8) max_n = 8;
  const struct {
    Which which;
    const char* name;
  } rows[] = {{Which::gather, "gather"},
              {Which::gather_settled, "gather_settled"},
              {Which::when_any, "when_any"},
              {Which::wait, "wait"}};
  try {
    for (const auto& row : rows) {
      std::printf("%s\n", row.name);
      double previous = 0;
      for (std::size_t n = max_n / 8; n <= max_n; n *= 2) {
        const double ms = measure(row.which, n);
        if (previous > 0) {
          std::printf("  n=%7zu  %9.1f ms  x%.2f per doubling\n", n, ms, ms / previous);
        } else {
          std::printf("  n=%7zu  %9.1f ms\n", n, ms);
        }
        previous = ms;
      }
    }
  } catch (const std::exception& e) {
    std::printf("gather_scaling: %s\n", e.what());
    return 1;
  }
  return 0;
}
