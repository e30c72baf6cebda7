"""Checks that every command and build line in the README's "## Install" snippets is one that
CI runs: each must appear in tests/packaging/run.sh or in a consumer's build files.
The vcpkg line is the exception (vcpkg is not on the CI machine); it is reported, not checked.

Usage: check_readme.py SOURCE_DIR
"""
import pathlib
import re
import sys

src = pathlib.Path(sys.argv[1])
here = src / 'tests' / 'packaging'
readme = (src / 'README.md').read_text()
section = re.search(r'^## Install\n(.*?)(?=^## )', readme, re.S | re.M)
if not section:
    sys.exit('README.md: no "## Install" section')

ci_text = '\n'.join(p.read_text() for p in [here / 'run.sh', *here.glob('*/CMakeLists.txt'), *here.glob('*/meson.build')])
ci_lines = [' '.join(line.split()) for line in ci_text.splitlines()]

missing, unchecked = [], []
for block in re.findall(r'^```\w*\n(.*?)^```', section.group(1), re.S | re.M):
    for line in block.splitlines():
        line = re.sub(r'\s+#.*$', '', line).strip()  # a trailing comment explains; it is not run
        if not line:
            continue
        if line.startswith('vcpkg '):
            unchecked.append(line)
            continue
        wanted = ' '.join(line.split())
        if not any(wanted in ci for ci in ci_lines):
            missing.append(line)

for line in unchecked:
    print('README Install: not run by CI (no vcpkg here): ' + line)
if missing:
    sys.exit('README Install: these lines are not what CI runs:\n  ' + '\n  '.join(missing))
print('README Install: every snippet line is run by CI')
