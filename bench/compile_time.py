#!/usr/bin/env python3
"""Compile time against Asio (issue 22.12): prints the CPU time of each translation unit and its
ratio to Asio's, next to the ceiling it must not pass.

  <sockpat/connection.hpp> alone, -O0     vs <asio.hpp> alone, -O0     ceiling 0.45x
  <sockpat.hpp> (the umbrella), -O0       vs <asio.hpp> alone, -O0     ceiling 0.80x
  bench/compile/proxy_sockpat.cpp, -O2    vs bench/compile/proxy_asio.cpp, -O2   ceiling 0.70x

Each figure is the median of --reps compilations (`CXX -std=c++20 OPT -I include -c TU -o
/dev/null`), all translation units interleaved (A B C D E, A B C D E, ...) so that a busy
machine slows each alike. CPU = user + system time of the compiler and its cc1plus (wait4's
usage), steadier than wall time when other jobs share the cores. No timing assertion: the
exit status is non-zero only when a compilation fails or Asio is missing.

Usage: python3 bench/compile_time.py [--reps 5] [--cxx g++]
"""
import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (name, source or None for a one-include TU, include line, flag, the Asio figure it is compared with, ceiling)
FIGURES = [
    ("<asio.hpp>", None, "#include <asio.hpp>", "-O0", None, None),
    ("<sockpat/connection.hpp>", None, "#include <sockpat/connection.hpp>", "-O0", "<asio.hpp>", 0.45),
    ("<sockpat.hpp>", None, "#include <sockpat.hpp>", "-O0", "<asio.hpp>", 0.80),
    ("proxy_asio.cpp", ROOT / "bench/compile/proxy_asio.cpp", None, "-O2", None, None),
    ("proxy_sockpat.cpp", ROOT / "bench/compile/proxy_sockpat.cpp", None, "-O2", "proxy_asio.cpp", 0.70),
]


def compile_once(cxx: str, opt: str, source: Path) -> float:
    argv = [cxx, "-std=c++20", opt, "-I", str(ROOT / "include"), "-c", str(source), "-o", os.devnull]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode(errors="replace")  # until the compiler exits: a full pipe must not block it
    p.stderr.close()
    _, status, usage = os.wait4(p.pid, 0)  # the usage covers cc1plus, which the driver waited for
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"compile_time.py: {shlex.join(argv)} failed:\n{err[-2000:]}")
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="compilations per figure (default 5)")
    ap.add_argument("--cxx", default=os.environ.get("CXX", "g++"), help="compiler (default: $CXX or g++)")
    args = ap.parse_args()
    if not Path("/usr/include/asio.hpp").exists() and subprocess.run(
            [args.cxx, "-std=c++20", "-x", "c++", "-fsyntax-only", "-"], input=b"#include <asio.hpp>\n",
            stderr=subprocess.DEVNULL).returncode != 0:
        sys.exit("compile_time.py: <asio.hpp> not found (Debian: libasio-dev); the ratios need it")

    with tempfile.TemporaryDirectory(prefix="compile-time-") as tmp:
        sources = {}
        for name, source, line, *_ in FIGURES:
            if source is None:
                source = Path(tmp) / f"tu{len(sources)}.cpp"
                source.write_text(f"{line}\nint main() {{ return 0; }}\n")
            sources[name] = source
        cpu = {name: [] for name, *_ in FIGURES}
        for rep in range(args.reps):
            for name, _, _, opt, _, _ in FIGURES:  # interleaved
                cpu[name].append(compile_once(args.cxx, opt, sources[name]))
            print(f"rep {rep + 1}/{args.reps} done", file=sys.stderr, flush=True)

    version = subprocess.run([args.cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"{version}; -std=c++20 -c; median CPU s (user+sys) of {args.reps}, interleaved; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'translation unit':28} {'flags':5} {'CPU s':>6} {'min':>6} {'max':>6}  {'vs':16} {'ratio':>6}  ceiling")
    median = {name: statistics.median(v) for name, v in cpu.items()}
    for name, _, _, opt, base, ceiling in FIGURES:
        row = f"{name:28} {opt:5} {median[name]:6.2f} {min(cpu[name]):6.2f} {max(cpu[name]):6.2f}"
        if base:
            ratio = median[name] / median[base]
            verdict = "met" if ratio <= ceiling else "OVER"
            row += f"  {base:16} {ratio:5.2f}x  <= {ceiling:.2f}x: {verdict}"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
