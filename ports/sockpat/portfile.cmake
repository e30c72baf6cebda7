# Overlay port: builds from this repository's own source, the checkout the port sits in.
# vcpkg install sockpat --overlay-ports=ports
# The upstream form (from a release tarball) is in ports/README.md.
# vcpkg's ABI hash covers this folder, not the checkout: after editing the headers, reinstall
# with the binary cache off or raise "port-version" (ports/README.md, "After changing the headers").

# Header-only: nothing to build, so no debug build.
set(VCPKG_BUILD_TYPE release)

get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

# sockpat[tls]: vcpkg installs openssl first, and SOCKPAT_TLS=ON makes the configure find it
# (OpenSSL 3), so a port built with the feature is known to have what sockpat::tls links.
# Without it, SOCKPAT_TLS=OFF: OpenSSL is not looked for. The files installed are the same
# either way (headers are headers); find_package(sockpat COMPONENTS tls) needs OpenSSL 3.
if("tls" IN_LIST FEATURES)
    set(tls_option -DSOCKPAT_TLS=ON)
else()
    set(tls_option -DSOCKPAT_TLS=OFF)
endif()

vcpkg_cmake_configure(
    SOURCE_PATH "${SOURCE_PATH}"
    OPTIONS
        -DSOCKPAT_BUILD_TESTS=OFF
        -DSOCKPAT_BUILD_EXAMPLES=OFF
        -DSOCKPAT_INSTALL=ON
        ${tls_option}
)

vcpkg_cmake_install()

vcpkg_cmake_config_fixup(CONFIG_PATH share/cmake/sockpat)
vcpkg_fixup_pkgconfig()

# The license goes to share/sockpat/copyright, vcpkg's place for it.
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/debug" "${CURRENT_PACKAGES_DIR}/lib" "${CURRENT_PACKAGES_DIR}/share/doc")

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
