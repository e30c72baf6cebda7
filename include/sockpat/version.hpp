// sockpat: the library version. CMake, Meson, the .pc file and the vcpkg port read it from here.
#ifndef SOCKPAT_VERSION_HPP
#define SOCKPAT_VERSION_HPP

#define SOCKPAT_VERSION_MAJOR 0
#define SOCKPAT_VERSION_MINOR 1
#define SOCKPAT_VERSION_PATCH 0
#define SOCKPAT_VERSION_STRING "0.1.0"

#endif  // SOCKPAT_VERSION_HPP
