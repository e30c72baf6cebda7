"""Checks that the Meson build runs the same tests and examples as the CMake build: every
sockpat_add_test, sockpat_add_fuzz_target, example program and example scenario in the
CMakeLists.txt files has its line in the meson.build lists, with the same source files.

Usage: check_build_lists.py SOURCE_DIR
"""
import pathlib
import re
import sys

src = pathlib.Path(sys.argv[1])
cmake_tests = (src / 'tests' / 'CMakeLists.txt').read_text()
meson_tests = (src / 'tests' / 'meson.build').read_text()
cmake_examples = (src / 'examples' / 'CMakeLists.txt').read_text()
meson_examples = (src / 'examples' / 'meson.build').read_text()


def cmake_calls(text, function):
    """{first argument: [other arguments]} for each call of `function`."""
    calls = (m.split() for m in re.findall(r'^\s*' + function + r'\(([^)]*)\)', text, re.M))
    return {args[0]: args[1:] for args in calls if '$' not in args[0]}  # not the calls inside function bodies


def meson_list(text, variable):
    body = re.search(r'^' + variable + r' = \[(.*?)^\]', text, re.S | re.M)
    return re.findall(r"'([^']+)'", body.group(1)) if body else []


problems = []


def compare(what, cmake, meson, add_line):
    for name in sorted(set(cmake) - set(meson)):
        problems.append(f'{what} {name!r} is built by CMake but not by Meson; add {add_line(name)}')
    for name in sorted(set(meson) - set(cmake)):
        problems.append(f'{what} {name!r} is built by Meson but not by CMake')


meson_test_files = {}
for dictionary in ('sockpat_tests', 'sockpat_windows_tests'):  # the second: tests/CMakeLists.txt's if(WIN32)
    tests_body = re.search(r'^' + dictionary + r' = \{(.*?)^\}', meson_tests, re.S | re.M)
    meson_test_files.update({name: re.findall(r"'([^']+)'", files)
                             for name, files in re.findall(r"^\s*'([^']+)': files\(([^)]*)\)", tests_body.group(1) if tests_body else '', re.M)})
cmake_test_files = cmake_calls(cmake_tests, 'sockpat_add_test')
compare('test', cmake_test_files, meson_test_files,
        lambda n: "`'%s': files(%s),` to sockpat_tests in tests/meson.build" % (n, ', '.join(f"'{f}'" for f in cmake_test_files[n])))
for name in sorted(set(cmake_test_files) & set(meson_test_files)):
    if sorted(cmake_test_files[name]) != sorted(meson_test_files[name]):
        problems.append(f'test {name!r}: CMake builds {cmake_test_files[name]}, Meson {meson_test_files[name]}')

tls_body = re.search(r'^sockpat_tls_tests = \{(.*?)^\}', meson_tests, re.S | re.M)
meson_tls = {name: re.findall(r"'([^']+)'", files)
             for name, files in re.findall(r"^\s*'([^']+)': files\(([^)]*)\)", tls_body.group(1) if tls_body else '', re.M)}
cmake_tls = cmake_calls(cmake_tests, 'sockpat_add_tls_test')
compare('TLS test', cmake_tls, meson_tls,
        lambda n: "`'%s': files(%s),` to sockpat_tls_tests in tests/meson.build" % (n, ', '.join(f"'{f}'" for f in cmake_tls[n])))
for name in sorted(set(cmake_tls) & set(meson_tls)):
    if sorted(cmake_tls[name]) != sorted(meson_tls[name]):
        problems.append(f'TLS test {name!r}: CMake builds {cmake_tls[name]}, Meson {meson_tls[name]}')

async_body = re.search(r'^sockpat_async_tests = \{(.*?)^\}', meson_tests, re.S | re.M)
meson_async = {name: re.findall(r"'([^']+)'", files)
               for name, files in re.findall(r"^\s*'([^']+)': files\(([^)]*)\)", async_body.group(1) if async_body else '', re.M)}
cmake_async = cmake_calls(cmake_tests, 'sockpat_add_async_test')
compare('event-loop test', cmake_async, meson_async,
        lambda n: "`'%s': files(%s),` to sockpat_async_tests in tests/meson.build" % (n, ', '.join(f"'{f}'" for f in cmake_async[n])))

compare('fuzz target', cmake_calls(cmake_tests, 'sockpat_add_fuzz_target'),
        meson_list(meson_tests, 'sockpat_fuzz_targets') + meson_list(meson_tests, 'sockpat_tls_fuzz_targets'),
        lambda n: f"`'{n}',` to sockpat_fuzz_targets in tests/meson.build")

scenarios = re.search(r'foreach\(scenario\s([^)]*)\)', cmake_tests)
compare('example scenario', scenarios.group(1).split() if scenarios else [], meson_list(meson_tests, 'sockpat_example_scenarios'),
        lambda n: f"`'{n}',` to sockpat_example_scenarios in tests/meson.build")

# Tests registered by name (scripts and checks: packaging, docs, soak, fault_vanish). The Wine
# fixtures exist only under CMake's cross-compiling emulator; Meson does not run tests for Windows.
# tls_certs is CTest's fixture that makes the TLS certificates; Meson makes them in a custom_target.
cmake_named = set(re.findall(r'add_test\(NAME ([A-Za-z0-9_]+)\s', cmake_tests)) - {'wine_prefix', 'wine_server_stop', 'tls_certs'}
meson_named = set(re.findall(r"^\s*test\('([A-Za-z0-9_]+)',", meson_tests, re.M))
compare('named test', cmake_named, meson_named, lambda n: f"a `test('{n}', ...)` to tests/meson.build")

tls_scenarios = re.search(r'foreach\(tls_scenario\s([^)]*)\)', cmake_tests)
compare('TLS example scenario', tls_scenarios.group(1).split() if tls_scenarios else [],
        meson_list(meson_tests, 'sockpat_tls_example_scenarios'),
        lambda n: f"`'{n}',` to sockpat_tls_example_scenarios in tests/meson.build")
tls_examples = re.search(r'set\(SOCKPAT_TLS_EXAMPLES\s([^)]*)\)', cmake_examples)
compare('TLS example', tls_examples.group(1).split() if tls_examples else [], meson_list(meson_examples, 'sockpat_tls_examples'),
        lambda n: f"`'{n}',` to sockpat_tls_examples in examples/meson.build")

examples = re.search(r'set\(SOCKPAT_EXAMPLES\s([^)]*)\)', cmake_examples)
compare('example', examples.group(1).split() if examples else [], meson_list(meson_examples, 'sockpat_examples'),
        lambda n: f"`'{n}',` to sockpat_examples in examples/meson.build")

compare('documentation run', cmake_calls(cmake_tests, 'sockpat_add_docs_run'), meson_list(meson_tests, 'sockpat_docs_runs'),
        lambda n: f"`'{n}',` to sockpat_docs_runs in tests/meson.build")

if problems:
    sys.exit('The Meson build does not match the CMake build:\n  ' + '\n  '.join(problems))
print(f'Meson and CMake build the same {len(cmake_test_files)} tests, fuzz targets, examples and scenarios')
