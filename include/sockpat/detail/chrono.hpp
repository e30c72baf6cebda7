// sockpat: std::chrono's clocks, durations and literals without the rest of <chrono>.
#ifndef SOCKPAT_DETAIL_CHRONO_HPP
#define SOCKPAT_DETAIL_CHRONO_HPP

// In C++20 mode libstdc++'s <chrono> also brings the calendar, time zones and <sstream> (for
// operator<<), a third of what a connection.hpp user compiles; everything sockpat uses
// (steady_clock, duration, ceil, the literals) is in <bits/chrono.h>, which <thread> and <mutex>
// include in its place too. Other standard libraries get <chrono>.
#include <version>  // __GLIBCXX__
#if defined(__GLIBCXX__) && __has_include(<bits/chrono.h>)
#include <bits/chrono.h>  // std::chrono::steady_clock, duration, ceil, std::chrono_literals
#else
#include <chrono>  // std::chrono::steady_clock, duration, ceil, std::chrono_literals
#endif

#endif  // SOCKPAT_DETAIL_CHRONO_HPP
