"""Compiles every C++ snippet of the documentation: each ```cpp block in README.md and in
docs/ (every .md file under it, guides included). A snippet that does not compile fails the
test, named by its Markdown file and line; the compiler's own messages point into the .md file
too (the generated code carries #line directives).

Usage: check_snippets.py [--without-tls] SOURCE_DIR OUT_DIR COMPILER [FLAG ...]
       (CMake and Meson pass the C++ compiler, -std=c++20, sockpat's include directory and the
       project's warning flags; this script adds -fsyntax-only and the -Wno-unused-* below.)
       check_snippets.py --emit MARKDOWN HEADER
       (writes the snippets of one Markdown file as a header, for a program that runs them:
       the build makes tests/docs/run_*.cpp this way; see "run" below.)

The convention (docs/contributing.md says the same for writers of the documentation):

- Each Markdown file becomes one translation unit: `#include <sockpat.hpp>`, the standard
  headers in PRELUDE below, `using namespace std::chrono_literals;`, and then each snippet in
  a namespace of its own (`snippet_at_line_N`), so snippets never see each other's names.
- Within a snippet, what can only live at namespace scope stays there, in the order written:
  function definitions (a top-level item ending in `}` that is not a statement such as `while`,
  `if` or `try`), `struct`/`class`/`enum`/`namespace`/`template` declarations, `using` and
  `#include` lines (`#include` lines move to the top of the file). Every other top-level
  statement goes, in order, into the body of one function. That function is a coroutine
  returning `sockpat::Task<void>` when the snippet says `co_await`/`co_return` anywhere, so a
  snippet may await as if it were inside a task.
- Names a snippet uses but does not declare (a connection made in the paragraph above, a
  handler shown in the previous block) are declared in an HTML comment on the line before the
  block, as the parameters of that function:

      <!-- snippet: with sockpat::TcpConnection& conn, std::string_view payload -->

- A file whose snippets say `#include <sockpat/tls.hpp>` (or `tls_streams.hpp`) needs OpenSSL's headers. Where the
  build found no OpenSSL it passes --without-tls, and such a file is left out and named in the
  summary (CI requires OpenSSL, so there every TLS snippet is compiled).
- Compiling is not running. A snippet that is a program, or the heart of one, is also run:
  `<!-- snippet: run NAME -->` (or `<!-- snippet: run NAME with PARAMETERS -->`) puts it in
  `namespace snippet_NAME` instead, and a test program under tests/docs/ (run_*.cpp, built
  by CMake and Meson from the header that --emit writes) calls it against a real peer and
  checks what happened. A `run` snippet that no tests/docs/run_*.cpp calls is an error here.
- `<!-- snippet: skip, REASON -->` on the line before a block leaves it out. Only for blocks
  that are deliberately not C++ (a mislabelled CMake block, a grammar); the reason is required.
- A line `...` (an elided part of a program) is compiled as a comment.
- Unused variables and parameters are not errors here (`-Wno-unused-variable`,
  `-Wno-unused-but-set-variable`, `-Wno-unused-parameter`): a snippet shows a value without
  going on to use it. Every other warning of the project's build is an error.
"""
import pathlib
import re
import subprocess
import sys

PRELUDE = '''// GCC gives -Wsubobject-linkage for a coroutine frame holding a lambda when the code is not in
// the main file, and the #line directives below make it look so; a user's .cpp would not see it.
// Set before the includes: a template instantiated from a header (with_task_group's frame)
// takes the diagnostic state of the header's lines.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wsubobject-linkage"
#endif
#include <sockpat.hpp>

#include <array>        // std::array
#include <chrono>       // std::chrono_literals
#include <cstdio>       // std::printf, std::fprintf
#include <exception>    // std::exception_ptr
#include <optional>     // std::optional
#include <span>         // std::span
#include <string>       // std::string
#include <string_view>  // std::string_view
#include <vector>       // std::vector

using namespace std::chrono_literals;

'''

EXTRA_FLAGS = ['-fsyntax-only', '-Wno-unused-variable', '-Wno-unused-but-set-variable',
               '-Wno-unused-parameter']

STATEMENT_KEYWORDS = ('while', 'for', 'if', 'else', 'do', 'switch', 'try', 'catch', '{', 'return',
                      'co_return', 'co_await', 'break', 'continue')
NAMESPACE_SCOPE_STARTS = ('struct ', 'class ', 'enum ', 'namespace ', 'template', 'using ',
                          'static_assert')

DIRECTIVE = re.compile(r'<!--\s*snippet:\s*(.*?)\s*-->')


RUN = re.compile(r'^run\s+([A-Za-z_][A-Za-z0-9_]*)(?:\s+(with\s.*))?$')


class Snippet:
    def __init__(self, path, line, code, directive):
        self.path, self.line, self.code, self.directive = path, line, code, directive
        self.name = None  # a `run NAME` snippet's name
        run = RUN.match(directive)
        if run:
            self.name = run.group(1)
            self.directive = run.group(2) or ''

    def namespace(self):
        return f'snippet_{self.name}' if self.name else f'snippet_at_line_{self.line}'


def snippets_of(path, relative):
    """Every ```cpp block of a Markdown file, with the directive comment before it."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        if re.match(r'^\s*```(cpp|c\+\+)\s*$', lines[i]):
            start = i + 1
            j = start
            while j < len(lines) and not re.match(r'^\s*```\s*$', lines[j]):
                j += 1
            directive = ''
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            if k >= 0 and DIRECTIVE.search(lines[k]):
                directive = DIRECTIVE.search(lines[k]).group(1)
            found.append(Snippet(relative, start + 1, lines[start:j], directive))
            i = j + 1
        else:
            i += 1
    return found


def code_only(line):
    """The line without string and character literals and // comments, for counting braces."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])*'", "''", line)
    return line.split('//', 1)[0]


def split_items(lines):
    """Top-level items: (first line index, lines, goes at namespace scope)."""
    items, current, depth, parens = [], [], 0, 0
    for index, line in enumerate(lines):
        if line.strip() == '...':
            line = '// ...'
        current.append((index, line))
        code = code_only(line)
        depth += code.count('{') - code.count('}')
        parens += code.count('(') - code.count(')')
        stripped = code.strip()
        if depth == 0 and parens == 0 and (stripped.endswith(';') or stripped.endswith('}')
                                           or stripped.startswith('#')):
            items.append(current)
            current = []
    if current:
        items.append(current)

    result = []
    for item in items:
        text = '\n'.join(code_only(l).strip() for _, l in item).strip()
        head = text.split(None, 1)[0] if text else ''
        if head in ('catch', 'else') and result:  # `try {} catch {}`, `if {} else {}`
            result[-1][1].extend(item)
            continue
        if not text:  # comments only: they go with what follows
            result.append([item[0][0], item, None])
            continue
        namespace_scope = (text.startswith('#') or text.startswith(NAMESPACE_SCOPE_STARTS)
                           or (text.endswith('}') and not text.startswith(STATEMENT_KEYWORDS)
                               and '=' not in text.split('(', 1)[0]))
        result.append([item[0][0], item, namespace_scope])
    # A comment-only item takes the place of the item after it.
    for n in range(len(result) - 1, -1, -1):
        if result[n][2] is None:
            if n + 1 < len(result) and result[n + 1][2] is not None:
                result[n + 1][1][:0] = result[n][1]
                result[n + 1][0] = result[n][0]
                del result[n]
            else:
                result[n][2] = False
    return result


def translation_unit(snippets):
    """The generated C++ of one Markdown file's snippets."""
    includes, body = [], []
    for s in snippets:
        params = ''
        if s.directive.startswith('with '):
            params = s.directive[len('with '):]
        namespace_part, function_part = [], []
        for _, item, namespace_scope in split_items(s.code):
            for index, line in item:
                if code_only(line).strip().startswith('#include'):
                    includes.append((s, index, line))
                    continue
                (namespace_part if namespace_scope else function_part).append((index, line))
        body.append(f'namespace {s.namespace()} {{')
        for index, line in namespace_part:
            body.append(f'#line {s.line + index} "{s.path}"')
            body.append(line)
        if function_part or params:
            text = '\n'.join(code_only(l) for _, l in function_part)
            coroutine = re.search(r'\bco_(await|return|yield)\b', text)
            body.append(f'#line {s.line} "{s.path}"')
            body.append(f'{"sockpat::Task<void>" if coroutine else "void"} snippet({params}) {{')
            for index, line in function_part:
                body.append(f'#line {s.line + index} "{s.path}"')
                body.append(line)
            if coroutine:
                body.append('co_return;')
            body.append('}')
        body.append('}')
    head = [PRELUDE]
    for s, index, line in includes:
        head.append(f'#line {s.line + index} "{s.path}"')
        head.append(line)
    return '\n'.join(head + body) + '\n'


def checked_snippets(path, relative, problems):
    """The snippets of one Markdown file to compile; skips counted, bad directives reported."""
    snippets, skipped = [], 0
    for s in snippets_of(path, relative):
        if s.directive.startswith('skip'):
            if not re.match(r'skip\s*,\s*\S', s.directive):
                problems.append(f'{relative}:{s.line}: "snippet: skip" needs a reason: '
                                '<!-- snippet: skip, because ... -->')
            skipped += 1
            continue
        if s.directive and not s.directive.startswith('with '):
            problems.append(f'{relative}:{s.line}: unknown directive "snippet: {s.directive}" '
                            '(known: "with PARAMETERS", "run NAME [with PARAMETERS]", "skip, REASON")')
            continue
        snippets.append(s)
    return snippets, skipped


def emit(markdown, header):
    """--emit: one Markdown file's snippets as a header for a tests/docs/run_*.cpp program."""
    path = pathlib.Path(markdown)
    problems = []
    snippets, _ = checked_snippets(path, path.name, problems)
    if problems:
        sys.exit('Documentation snippets:\n  ' + '\n  '.join(problems))
    unit = translation_unit(snippets).replace(f'"{path.name}"', f'"{path.as_posix()}"')
    out = pathlib.Path(header)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = '// Generated by tests/docs/check_snippets.py --emit from ' + path.name + ': do not edit.\n'
    # As under docs_snippets, a snippet may show a value without using it. Pragmas rather than
    # flags: clang lets a later -Wall undo an earlier -Wno-unused-variable on the command line.
    text += '#pragma once\n#if defined(__GNUC__)\n#pragma GCC diagnostic push\n'
    for flag in EXTRA_FLAGS:
        if flag.startswith('-Wno-'):
            text += f'#pragma GCC diagnostic ignored "-W{flag[len("-Wno-"):]}"\n'
    text += '#endif\n' + unit + '#if defined(__GNUC__)\n#pragma GCC diagnostic pop\n#endif\n'
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


def main():
    if sys.argv[1:2] == ['--emit']:
        if len(sys.argv) != 4:
            sys.exit(__doc__)
        return emit(sys.argv[2], sys.argv[3])
    without_tls = '--without-tls' in sys.argv[1:2]
    if without_tls:
        del sys.argv[1]
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    compiler = sys.argv[3:]
    out.mkdir(parents=True, exist_ok=True)
    markdown = [src / 'README.md'] + sorted((src / 'docs').rglob('*.md'))

    runners = '\n'.join(p.read_text() for p in sorted((src / 'tests' / 'docs').glob('run_*.cpp')))
    problems, compiled, skipped, ran, tls_left_out = [], 0, 0, 0, []
    for path in markdown:
        relative = path.relative_to(src).as_posix()
        snippets, skipped_here = checked_snippets(path, relative, problems)
        skipped += skipped_here
        names = [s.name for s in snippets if s.name]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f'{relative}: two snippets are named "run {name}"')
        for s in snippets:
            if s.name and not re.search(r'\bsnippet_' + s.name + r'::', runners):
                problems.append(f'{relative}:{s.line}: "snippet: run {s.name}" is called by no '
                                'tests/docs/run_*.cpp program (a snippet marked to run must run)')
            ran += bool(s.name)
        if not snippets:
            continue
        if without_tls and any('#include <sockpat/tls' in s.code for s in snippets):  # tls.hpp, tls_streams.hpp
            tls_left_out.append(relative)
            continue
        unit = out / (relative.replace('/', '_').replace('.md', '') + '.cpp')
        unit.write_text(translation_unit(snippets))
        # The generated file's own directory is not on the include path: <sockpat.hpp> comes from
        # the include directory the caller passes.
        run = subprocess.run(compiler + EXTRA_FLAGS + [str(unit)], capture_output=True, text=True)
        compiled += len(snippets)
        if run.returncode != 0:
            messages = run.stdout + run.stderr
            sys.stderr.write(messages)
            # The lines of the errors (not of the notes that follow them), else any line named.
            bad = sorted({int(m) for m in re.findall(re.escape(relative) + r':(\d+):(?:\d+:)? (?:fatal )?error', messages)}
                         or {int(m) for m in re.findall(re.escape(relative) + r':(\d+)', messages)})
            starts = [s.line for s in snippets]
            blocks = sorted({max(l for l in starts if l <= line) for line in bad if line >= starts[0]})
            for line in blocks or starts:
                problems.append(f'{relative}:{line}: this snippet does not compile (messages above; '
                                f'generated code in {unit})')
    if problems:
        sys.exit('Documentation snippets:\n  ' + '\n  '.join(problems))
    print(f'{compiled} C++ snippets in README.md and docs/ compile ({skipped} skipped by their '
          f'snippet: skip comment); {ran} of them are also run by tests/docs/run_*.cpp')
    if tls_left_out:
        print('not compiled, for want of OpenSSL (--without-tls): ' + ', '.join(tls_left_out))


if __name__ == '__main__':
    main()
