"""Refreshes the "last run" column of docs/reliability.md from a CTest run.

Usage: reliability_results.py BUILD_DIR [BUILD_DIR...]

For each build tree, runs (with CTest) the tests that the table's "CTest tests" column names and
that this tree has and no earlier tree had, and writes each row's result: "passed", "FAILED: name, ..." or "skipped:
name, ...", the date and the build tree. A row whose tests no given tree has keeps its cell.
Run it after a change to any of those tests, e.g. `reliability_results.py build/default build/soak`
(build/soak: configured with -DSOCKPAT_BUILD_SOAK=ON, as .ci/run does). The sizes of the soak come
from the environment as usual (SOCKPAT_SOAK_MESSAGES, SOCKPAT_SOAK_CONNECTIONS).
"""
import datetime
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

DOC = pathlib.Path(__file__).resolve().parents[2] / 'docs' / 'reliability.md'
BEGIN, END = '<!-- results:begin -->', '<!-- results:end -->'


def ctest_names(build):
    out = subprocess.run(['ctest', '--test-dir', build, '-N'], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r'Test\s+#\d+: (\S+)', out))


def run(build, names):
    """{test name: 'passed' | 'failed' | 'skipped'} for `names` run in `build`."""
    with tempfile.TemporaryDirectory() as tmp:
        junit = os.path.join(tmp, 'junit.xml')
        pattern = '^(' + '|'.join(sorted(names)) + ')$'
        subprocess.run(['ctest', '--test-dir', build, '-R', pattern, '-j', '2', '--output-junit', junit],
                       capture_output=True, text=True, timeout=3600)
        results = {}
        for case in ET.parse(junit).getroot().iter('testcase'):
            if case.find('failure') is not None or case.get('status') == 'fail':
                results[case.get('name')] = 'failed'
            elif case.get('status') == 'run':
                results[case.get('name')] = 'passed'
            else:
                results[case.get('name')] = 'skipped'
        return results


def main():
    builds = sys.argv[1:]
    if not builds:
        sys.exit(__doc__)
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    table, tail = rest.split(END, 1)
    rows = table.split('\n')
    wanted = {n for line in rows if line.startswith('| ') for n in re.findall(r'`([A-Za-z0-9_]+)`', line.split(' | ')[2])}
    today = datetime.date.today().isoformat()
    cells = {}  # test name: (result, build)
    for build in builds:
        have = (wanted & ctest_names(build)) - set(cells)  # the first tree that has a test runs it
        if have:
            for name, result in run(build, have).items():
                cells[name] = (result, os.path.basename(os.path.normpath(build)))
    for i, line in enumerate(rows):
        if not line.startswith('| ') or line.startswith('| scenario') or line.startswith('|---'):
            continue
        columns = line.split(' | ')
        names = re.findall(r'`([A-Za-z0-9_]+)`', columns[2])
        if not names or not all(n in cells for n in names):
            continue
        failed = [n for n in names if cells[n][0] == 'failed']
        skipped = [n for n in names if cells[n][0] == 'skipped']
        result = ('FAILED: ' + ', '.join(failed)) if failed else ('skipped: ' + ', '.join(skipped)) if skipped else 'passed'
        where = ', '.join(sorted({cells[n][1] for n in names}))
        columns[-1] = '%s (%s, %s) |' % (result, today, where)
        rows[i] = ' | '.join(columns)
    DOC.write_text(head + BEGIN + '\n'.join(rows) + END + tail)
    print('updated %s from %s' % (DOC, ', '.join(builds)))


if __name__ == '__main__':
    main()
