#!/usr/bin/env bash
# Builds and runs one real consumer per install route (README, "Install"), each the program
# in app.cpp: find_package after `cmake --install` to a staging prefix, add_subdirectory,
# FetchContent (fetched, then found installed), a Meson subproject (a directory, then a wrap),
# pkg-config, and a copy of include/ with a bare c++ line. Also checks what the CMake and
# Meson installs put under the prefix. Exits non-zero on the first failure.
# Usage: tests/packaging/run.sh [WORK_DIR]   (default: a temporary directory, removed after)
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
here=$src/tests/packaging
if (($#)); then
  work=$(mkdir -p "$1" && cd "$1" && pwd)
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
export CMAKE_BUILD_PARALLEL_LEVEL=2
version=$(sed -n 's/^#define SOCKPAT_VERSION_STRING "\(.*\)"$/\1/p' "$src/include/sockpat/version.hpp")
tarball=$work/sockpat-$version.tar.gz

step() { printf '== packaging: %s\n' "$*"; }
fail() { printf 'packaging: FAILED: %s\n' "$*" >&2; exit 1; }
quiet() {  # runs a command, showing its output only when it fails
  local log
  log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; fail "$*"; fi
  rm -f "$log"
}
# A consumer project in $work/NAME: the route's build files and app.cpp.
consumer() {
  rm -rf "${work:?}/$1"
  mkdir -p "$work/$1"
  cp "$here/$2"/* "$here/app.cpp" "$work/$1/"
}
run_app() {
  local out
  out=$("$1") || fail "$1 exited with $?"
  [[ $out == "sockpat $version consumer: ping -> pong over 127.0.0.1:"* ]] || fail "$1 printed: $out"
  echo "   $out"
}
# Every file under $1 (relative), sorted.
files_under() { (cd "$1" && find . -type f -o -type l) | sed 's,^\./,,' | LC_ALL=C sort; }

step "the README's Install snippets are the lines below"
python3 "$here/check_readme.py" "$src" | sed 's/^/   /'

step "source tarball of the checkout (what a release tarball holds)"
# Tracked and new files, nothing .gitignore'd: build directories stay out. Outside a git
# checkout (an unpacked release), everything but build/ and builddir/.
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$src" && git ls-files -z --cached --others --exclude-standard) |
    tar -C "$src" --null -T - --ignore-failed-read --transform "s,^,sockpat-$version/," -czf "$tarball"
else
  tar -C "$src" --exclude=./build --exclude=./builddir --transform "s,^\.,sockpat-$version," -czf "$tarball" .
fi
unpack_to() {  # unpack_to DIR: the tarball's sockpat-VERSION/ becomes DIR
  rm -rf "$1" && mkdir -p "$1" && tar -xzf "$tarball" -C "$1" --strip-components=1
}

# The README's command lines run verbatim from $work, where sockpat/ is the checkout.
cd "$work"
rm -rf sockpat sockpat-build sockpat-prefix
ln -s "$src" sockpat

step "cmake --install to a staging prefix"
prefix=$PWD/sockpat-prefix
quiet cmake -S sockpat -B sockpat-build -DSOCKPAT_BUILD_TESTS=OFF -DSOCKPAT_BUILD_EXAMPLES=OFF
quiet cmake --install sockpat-build --prefix "$prefix"

step "the prefix holds headers, the CMake package, sockpat.pc, sockpat-tls.pc and the license, nothing else"
expected_headers=$( (cd "$src" && find include -name '*.hpp') | LC_ALL=C sort)
expected=$(printf '%s\n' "$expected_headers" share/cmake/sockpat/sockpatConfig.cmake \
             share/cmake/sockpat/sockpatConfigVersion.cmake share/cmake/sockpat/sockpatTargets.cmake \
             share/cmake/sockpat/sockpatTlsTargets.cmake \
             share/doc/sockpat/LICENSE share/pkgconfig/sockpat.pc share/pkgconfig/sockpat-tls.pc | LC_ALL=C sort)
if ! diff <(echo "$expected") <(files_under "$prefix"); then
  fail "cmake --install: unexpected file set under the prefix (< expected, > installed)"
fi
if grep -rq "$work" "$prefix/share"; then
  fail "installed package files name the build machine's paths: $(grep -rl "$work" "$prefix/share")"
fi

step "find_package consumer"
consumer find_package find_package
quiet cmake -S "$work/find_package" -B "$work/find_package/build" -DCMAKE_PREFIX_PATH="$prefix"
grep -q "^sockpat_DIR:PATH=$prefix/share/cmake/sockpat$" "$work/find_package/build/CMakeCache.txt" ||
  fail "find_package did not take sockpat from the staging prefix"
quiet cmake --build "$work/find_package/build"
run_app "$work/find_package/build/app"

step "find_package consumer: a coroutine program built with clang++ and -fsanitize=undefined"
# The exported target carries -fno-sanitize=function for clang < 15 (CMakeLists.txt says why):
# without it this does not compile with clang 14. Skipped only where there is no clang++.
if command -v clang++ >/dev/null; then
  consumer find_package_ubsan find_package
  cat >"$work/find_package_ubsan/app.cpp" <<'CPP'
#include <sockpat.hpp>

#include <chrono>
#include <cstdio>

sockpat::Task<int> answer() {
  co_await sockpat::sleep(std::chrono::milliseconds(1));
  co_return 42;
}

int main() {
  const int a = sockpat::run(answer());
  std::printf("coroutine under UBSan: %d\n", a);
  return a == 42 ? 0 : 1;
}
CPP
  quiet cmake -S "$work/find_package_ubsan" -B "$work/find_package_ubsan/build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_CXX_COMPILER=clang++ "-DCMAKE_CXX_FLAGS=-fsanitize=undefined -fno-sanitize-recover=all" \
    "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=undefined"
  quiet cmake --build "$work/find_package_ubsan/build"
  out=$("$work/find_package_ubsan/build/app") || fail "the UBSan consumer exited with $?"
  [[ $out == "coroutine under UBSan: 42" ]] || fail "the UBSan consumer printed: $out"
  echo "   $out"
else
  echo "   no clang++ here: not built"
fi

step "add_subdirectory consumer"
consumer add_subdirectory add_subdirectory
unpack_to "$work/add_subdirectory/third_party/sockpat"
quiet cmake -S "$work/add_subdirectory" -B "$work/add_subdirectory/build"
quiet cmake --build "$work/add_subdirectory/build"
run_app "$work/add_subdirectory/build/app"
# As a subproject sockpat builds no tests or examples and installs nothing.
if cmake --build "$work/add_subdirectory/build" --target help | grep -Eq 'test_|hello_server'; then
  fail "sockpat built its tests or examples as a subproject"
fi
quiet cmake --install "$work/add_subdirectory/build" --prefix "$work/add_subdirectory/prefix"
[[ $(files_under "$work/add_subdirectory/prefix") == bin/app ]] ||
  fail "the consumer's install holds more than its app: $(files_under "$work/add_subdirectory/prefix")"

step "FetchContent consumer, fetched from the tarball"
consumer fetchcontent fetchcontent
quiet cmake -S "$work/fetchcontent" -B "$work/fetchcontent/build" -DSOCKPAT_URL="file://$tarball"
[[ -f $work/fetchcontent/build/_deps/sockpat-src/include/sockpat.hpp ]] || fail "FetchContent did not fetch sockpat"
quiet cmake --build "$work/fetchcontent/build"
run_app "$work/fetchcontent/build/app"

step "FetchContent consumer, an installed sockpat wins (FIND_PACKAGE_ARGS)"
quiet cmake -S "$work/fetchcontent" -B "$work/fetchcontent/build-installed" -DSOCKPAT_URL="file://$tarball" \
  -DCMAKE_PREFIX_PATH="$prefix"
[[ ! -e $work/fetchcontent/build-installed/_deps/sockpat-src ]] || fail "FetchContent fetched despite an installed sockpat"
grep -q "^sockpat_DIR:PATH=$prefix/share/cmake/sockpat$" "$work/fetchcontent/build-installed/CMakeCache.txt" ||
  fail "FetchContent did not use the installed sockpat"
quiet cmake --build "$work/fetchcontent/build-installed"
run_app "$work/fetchcontent/build-installed/app"

step "Meson consumer, sockpat in subprojects/sockpat"
consumer meson meson
unpack_to "$work/meson/subprojects/sockpat"
quiet meson setup "$work/meson/build" "$work/meson" --force-fallback-for=sockpat
quiet meson compile -C "$work/meson/build" -j 2
run_app "$work/meson/build/app"
# As a subproject sockpat installs nothing: no headers, no sockpat.pc.
quiet meson install -C "$work/meson/build" --destdir "$work/meson/destdir"
[[ -z $(files_under "$work/meson/destdir" 2>/dev/null) ]] ||
  fail "sockpat installed files as a Meson subproject: $(files_under "$work/meson/destdir")"

step "Meson consumer, sockpat from a wrap file"
consumer meson-wrap meson
mkdir -p "$work/meson-wrap/subprojects/packagecache"
cp "$tarball" "$work/meson-wrap/subprojects/packagecache/"
# The release URL would go in source_url; the tarball in packagecache/ is used instead of a download.
cat >"$work/meson-wrap/subprojects/sockpat.wrap" <<EOF
[wrap-file]
directory = sockpat-$version
source_url = file://$tarball
source_filename = sockpat-$version.tar.gz
source_hash = $(sha256sum "$tarball" | cut -d' ' -f1)

[provide]
dependency_names = sockpat
EOF
quiet meson setup "$work/meson-wrap/build" "$work/meson-wrap" --force-fallback-for=sockpat
quiet meson compile -C "$work/meson-wrap/build" -j 2
run_app "$work/meson-wrap/build/app"

step "pkg-config consumer"
export PKG_CONFIG_PATH="$prefix/share/pkgconfig"
[[ $(pkg-config --modversion sockpat) == "$version" ]] || fail "pkg-config --modversion sockpat: $(pkg-config --modversion sockpat)"
[[ -z $(pkg-config --libs sockpat) ]] || fail "pkg-config --libs sockpat is not empty: $(pkg-config --libs sockpat)"
mkdir -p "$work/pkg-config" && cp "$here/app.cpp" "$work/pkg-config/"
(cd "$work/pkg-config" && c++ -std=c++20 $(pkg-config --cflags sockpat) app.cpp -o app) || fail "pkg-config compile"
run_app "$work/pkg-config/app"

step "TLS consumers: find_package(sockpat COMPONENTS tls) and pkg-config sockpat-tls"
rm -rf "$work/find_package_tls" && mkdir -p "$work/find_package_tls" && cp "$here/find_package_tls"/* "$work/find_package_tls/"
quiet cmake -S "$work/find_package_tls" -B "$work/find_package_tls/build" -DCMAKE_PREFIX_PATH="$prefix"
quiet cmake --build "$work/find_package_tls/build"
out=$("$work/find_package_tls/build/tls_app") || fail "tls_app (find_package) exited with $?"
[[ $out == "sockpat $version tls consumer: a ClientHello" ]] || fail "tls_app printed: $out"
echo "   $out"
(cd "$work/find_package_tls" &&
  c++ -std=c++20 $(pkg-config --cflags sockpat-tls) tls_app.cpp $(pkg-config --libs sockpat-tls) -o tls_app_pc) ||
  fail "pkg-config sockpat-tls compile"
out=$("$work/find_package_tls/tls_app_pc") || fail "tls_app (pkg-config) exited with $?"
[[ $out == "sockpat $version tls consumer: a ClientHello" ]] || fail "tls_app (pkg-config) printed: $out"
echo "   $out"
unset PKG_CONFIG_PATH

step "copy-the-include-folder consumer"
# The README's three lines as written, from an empty folder (third_party/ is theirs to make).
rm -rf "$work/copy" && mkdir -p "$work/copy" && cp "$here/app.cpp" "$work/copy/"
ln -s "$src" "$work/copy/sockpat"
(cd "$work/copy" && mkdir -p third_party/sockpat && cp -r sockpat/include third_party/sockpat/ &&
  c++ -std=c++20 -Ithird_party/sockpat/include app.cpp -o app) || fail "bare c++ compile"
[[ -f $work/copy/third_party/sockpat/include/sockpat.hpp ]] || fail "the copied headers are not in third_party/sockpat/include"
run_app "$work/copy/app"

step "meson install as the main project: headers, sockpat.pc and the license, as CMake's"
quiet meson setup "$work/meson-main" "$src" --prefix=/usr -Dtests=disabled -Dexamples=disabled
quiet meson install -C "$work/meson-main" --destdir "$work/meson-stage"
expected=$(printf '%s\n' "$expected_headers" share/doc/sockpat/LICENSE share/pkgconfig/sockpat.pc \
             share/pkgconfig/sockpat-tls.pc | LC_ALL=C sort)
if ! diff <(echo "$expected") <(files_under "$work/meson-stage/usr"); then
  fail "meson install: unexpected file set (< expected, > installed)"
fi
diff "$prefix/share/pkgconfig/sockpat.pc" "$work/meson-stage/usr/share/pkgconfig/sockpat.pc" ||
  fail "CMake and Meson install different sockpat.pc files"
diff "$prefix/share/pkgconfig/sockpat-tls.pc" "$work/meson-stage/usr/share/pkgconfig/sockpat-tls.pc" ||
  fail "CMake and Meson install different sockpat-tls.pc files"

step "all routes passed"
