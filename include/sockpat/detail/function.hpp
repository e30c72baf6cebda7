// sockpat: std::function without the rest of <functional>.
#ifndef SOCKPAT_DETAIL_FUNCTION_HPP
#define SOCKPAT_DETAIL_FUNCTION_HPP

// libstdc++'s <functional> in C++20 mode also brings <unordered_map>, the searchers and
// <bits/stl_algo.h>; std::function alone is <bits/std_function.h>. Other standard libraries
// get <functional>.
#include <version>  // __GLIBCXX__
#if defined(__GLIBCXX__) && __has_include(<bits/std_function.h>)
#include <bits/std_function.h>  // std::function
#else
#include <functional>  // std::function
#endif

#endif  // SOCKPAT_DETAIL_FUNCTION_HPP
