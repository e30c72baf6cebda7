"""Checks that the layer table of docs/architecture.md names every header under include/: each
`include/sockpat/**/*.hpp` appears in the table as `name.hpp` or `detail/name.hpp`, and the
umbrella as `sockpat.hpp`; and that the table names no header that does not exist.

Usage: check_architecture.py SOURCE_DIR
"""
import pathlib
import re
import sys

src = pathlib.Path(sys.argv[1])
include = src / 'include' / 'sockpat'
text = (src / 'docs' / 'architecture.md').read_text()
table = re.search(r'^\| layer \|.*?\n((?:\|.*\n)+)', text, re.M)
if not table:
    sys.exit('docs/architecture.md: no layer table (a Markdown table whose header starts "| layer |")')

named = set()
for row in table.group(1).splitlines()[1:]:  # after the |---| line
    cells = row.split('|')
    if len(cells) > 2:  # the second column: the layer's headers
        named |= {h for h in re.findall(r'`([\w/]+\.hpp)`', cells[2]) if not h.startswith('include/')}
headers = {p.relative_to(include).as_posix() for p in include.rglob('*.hpp')} | {'sockpat.hpp'}

problems = [f'include/sockpat/{h} is not in the layer table of docs/architecture.md; add `{h}` to its layer'
            for h in sorted(headers - named)]
problems += [f'docs/architecture.md names `{h}` in its layer table, but include/sockpat/{h} does not exist'
             for h in sorted(named - headers)]
if problems:
    sys.exit('\n'.join(problems))
print(f'docs/architecture.md: the layer table names all {len(headers)} headers')
