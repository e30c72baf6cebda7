// sockpat: platform and language checks. The one place that reads platform macros.
#ifndef SOCKPAT_DETAIL_CONFIG_HPP
#define SOCKPAT_DETAIL_CONFIG_HPP

#if defined(_MSVC_LANG)
#define SOCKPAT_CPLUSPLUS _MSVC_LANG
#else
#define SOCKPAT_CPLUSPLUS __cplusplus
#endif

#if SOCKPAT_CPLUSPLUS < 202002L
#error "sockpat needs C++20: compile with -std=c++20 (GCC, Clang) or /std:c++20 (MSVC)"
#endif

#if defined(_WIN32)
#define SOCKPAT_WINDOWS 1
// WSAPoll and WSA_FLAG_NO_HANDLE_INHERIT need Vista / 7 SP1; a user's lower _WIN32_WINNT would hide them.
#if defined(_WIN32_WINNT) && _WIN32_WINNT < 0x0600
#error "sockpat needs _WIN32_WINNT >= 0x0600 (WSAPoll); define it higher or leave it undefined"
#endif
#else
#define SOCKPAT_POSIX 1
#endif

#if defined(__linux__)
#define SOCKPAT_LINUX 1
#endif

// No thread_local object in sockpat has a destructor: under MinGW-w64 (GCC's emulated TLS)
// one was seen running on storage already released when its thread ended (the frame cache,
// under Wine). Per-thread objects go through detail/per_thread.hpp instead.

#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__) || \
    defined(__DragonFly__)
#define SOCKPAT_BSD 1
#endif

#endif  // SOCKPAT_DETAIL_CONFIG_HPP
