#!/usr/bin/env python3
"""sockpat's benchmark, one command: python3 bench/run.py [--quick]

Builds what it needs (release preset, -DSOCKPAT_BUILD_BENCH=ON, in build/bench), then runs every
server of SERVERS through the scenarios of issue 8 with bench/loadgen (raw epoll, no sockpat code):
the server pinned to one core, the load generator to another, servers interleaved A B A B ..., the
median of --reps repetitions. Then the server's instructions per round trip under callgrind, and the
cost of including <sockpat.hpp>. Prints a Markdown report and writes it to bench/RESULTS.md
(--quick writes build/bench/RESULTS-quick.md instead and is what CI runs: a few seconds, no timing
assertion, but it fails if any server echoes a wrong byte or any connection fails).

Method and history: bench/NOTES.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import selectors
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------
# What is measured. Adding a server is one line here.

@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    mode: str = "pingpong"
    conns: int = 1
    size: int = 64
    depth: int = 1
    hold: float = 0.0  # idle mode


@dataclass(frozen=True)
class Server:
    name: str
    binary: str  # relative to the build directory
    args: Callable[[Scenario], list[str]] = lambda sc: []
    max_conns: int = 1_000_000  # beyond this the scenario does not apply (a sequential server: 1)
    why_not: str = ""
    reference: bool = False  # the row the others are compared with
    blocking_reference: bool = False  # the row the blocking servers are compared with (raw threads)
    blocking: bool = False  # a blocking server, compared with the blocking reference as well


def pool_threads(sc: Scenario) -> list[str]:
    # A blocking pool serves one connection per thread: as many threads as connections.
    return ["--threads", str(max(4, sc.conns))]


SERVERS = [
    Server("raw epoll (LT)", "bench/epoll_echo_server", reference=True),
    Server("raw epoll (ET)", "bench/epoll_echo_server", lambda sc: ["--edge"]),
    Server("Asio callback", "bench/asio_callback_echo_server"),
    Server("Asio coroutine", "bench/asio_coro_echo_server"),
    Server("sockpat async (1 thread)", "examples/async_echo_server", lambda sc: ["--threads", "1"]),
    Server("raw threads (1 per connection)", "bench/raw_threaded_echo_server", max_conns=1000,
           why_not="a thread per connection", blocking_reference=True),
    Server("sockpat elastic", "bench/sockpat_threaded_echo_server", max_conns=1000,
           why_not="a thread per connection being served", blocking=True),
    Server("sockpat thread pool", "bench/sockpat_threaded_echo_server", pool_threads, max_conns=1000,
           why_not="a blocking pool holds a thread per connection", blocking=True),
    # Framed requests (fixed --size frames) on a poller thread and one worker: the half-sync/half-async
    # server; compared with the async server in bench/NOTES.md (issue 14's target: 0.8x).
    Server("sockpat request server (1 worker)", "bench/sockpat_request_echo_server",
           lambda sc: ["--size", str(sc.size), "--threads", "1"]),
    # The same with the poller's default scheduling policy (RequestServerOptions::batch_poller off):
    # what SCHED_BATCH on the poller buys when poller and worker share the one CPU.
    Server("sockpat request server (1 worker, batch_poller off)", "bench/sockpat_request_echo_server",
           lambda sc: ["--size", str(sc.size), "--threads", "1", "--batch-poller", "0"]),
    Server("sockpat sequential", "bench/sockpat_sequential_echo_server", max_conns=1,
           why_not="serves one connection at a time"),
]

SCENARIOS = [
    Scenario("pp1", "ping-pong, 1 connection, 64 B", conns=1),
    Scenario("pp100", "ping-pong, 100 connections, 64 B", conns=100),
    Scenario("pp1000", "ping-pong, 1,000 connections, 64 B", conns=1000),
    Scenario("pp100x16", "ping-pong, 100 connections, 64 B, pipelined 16 deep", conns=100, depth=16),
    Scenario("stream64k", "stream, 1 connection, 64 KiB writes (256 KiB in flight)", mode="stream",
             conns=1, size=65536, depth=4),
]
IDLE = Scenario("idle10k", "10,000 idle connections", mode="idle", conns=10_000, hold=2.0)

QUICK_SCENARIOS = [
    Scenario("pp1", "ping-pong, 1 connection, 64 B", conns=1),
    Scenario("pp20", "ping-pong, 20 connections, 64 B", conns=20),
    Scenario("pp20x8", "ping-pong, 20 connections, 64 B, pipelined 8 deep", conns=20, depth=8),
    Scenario("stream64k", "stream, 1 connection, 64 KiB writes", mode="stream", conns=1, size=65536, depth=4),
]
QUICK_IDLE = Scenario("idle200", "200 idle connections", mode="idle", conns=200, hold=0.2)

# What the library sells, and the figure each must not pass (issue "Sharp edges...", 22.11 and
# 22.12): include cost as a ratio of <asio.hpp>'s CPU time, idle memory per connection in bytes.
INCLUDE_CEILINGS = {"<sockpat.hpp>": 0.80, "<sockpat/connection.hpp>": 0.45}
IDLE_BYTES_CEILING = 1024

# Instruction counts: a fixed exchange run twice with different lengths; the difference divided by
# the difference in round trips is the cost of one round trip, free of start-up and connection set-up.
CALLGRIND_SHORT = 2_000
CALLGRIND_LONG = 22_000
CALLGRIND_CONNS = 10

INCLUDE_TUS = {
    "<sockpat.hpp>": "#include <sockpat.hpp>\nint main() { return 0; }\n",
    "<sockpat/connection.hpp>": "#include <sockpat/connection.hpp>\nint main() { return 0; }\n",
    "<sys/socket.h> + <string>": "#include <sys/socket.h>\n#include <string>\nint main() { return 0; }\n",
    "<asio.hpp>": "#include <asio.hpp>\nint main() { return 0; }\n",
}


# ------------------------------------------------------------------------------------------------
# Processes

class HarnessError(Exception):
    pass


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Raises our soft RLIMIT_NOFILE to `wanted` (children inherit it), up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class RunningServer:
    """A server we started: its pid, its port (from its first line), and a bounded stop."""

    def __init__(self, argv: list[str], startup_timeout: float, log_dir: Path):
        self.argv = argv
        self.stderr = tempfile.NamedTemporaryFile(prefix="server-", suffix=".err", dir=log_dir, delete=False)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.stderr, bufsize=0)
        self.pid = self.proc.pid
        self.port = self._read_port(startup_timeout)
        # The server may print more; drain it so that it never blocks on a full pipe.
        self._drain = threading.Thread(target=self._discard_stdout, daemon=True)
        self._drain.start()

    def _read_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        data = b""
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while b"\n" not in data:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    raise HarnessError(f"{self.argv[-1]}: no 'listening on' line within {timeout:.0f} s")
                if not sel.select(left):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise HarnessError(f"{' '.join(self.argv)}: exited ({self.proc.returncode}) before listening: "
                                       f"{self.stderr_text()}")
                data += chunk
        finally:
            sel.close()
        first = data.split(b"\n", 1)[0].decode(errors="replace")
        m = re.fullmatch(r"listening on (\S+):(\d+)", first.strip())
        if not m:
            self.kill()
            raise HarnessError(f"{self.argv}: first line is {first!r}, not 'listening on HOST:PORT'")
        return int(m.group(2))

    def _discard_stdout(self) -> None:
        try:
            while os.read(self.proc.stdout.fileno(), 65536):
                pass
        except OSError:
            pass

    def stderr_text(self) -> str:
        self.stderr.flush()
        return Path(self.stderr.name).read_text(errors="replace")[-2000:].strip()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float) -> str | None:
        """SIGTERM, then wait; returns a complaint if the server had died or did not stop in time."""
        if self.proc.poll() is not None:
            return f"server had exited ({self.proc.returncode}) before the stop: {self.stderr_text()}"
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return f"server did not stop within {timeout:.0f} s of SIGTERM (killed)"
        if rc == 0:
            return None
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
        return f"server {how} on SIGTERM instead of stopping cleanly: {self.stderr_text()}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        self.stderr.close()
        os.unlink(self.stderr.name)


def pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def run_loadgen(build: Path, cpu: int | None, port: int, pid: int, extra: list[str], timeout: float) -> dict:
    argv = pin(cpu) + [str(build / "bench/loadgen"), "--port", str(port), "--watch-pid", str(pid)] + extra
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"loadgen did not finish within {timeout:.0f} s: {shlex.join(argv)}")
    result = None
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
    if result is None:
        raise HarnessError(f"loadgen printed no result (exit {p.returncode}): {p.stderr.strip()[-1000:]}")
    result["exit"] = p.returncode
    result["stderr"] = p.stderr.strip()[-1000:]
    result["argv"] = shlex.join(argv)
    return result


# ------------------------------------------------------------------------------------------------
# Measurements

@dataclass
class Context:
    build: Path
    server_cpu: int | None
    client_cpu: int | None
    duration: float
    warmup: float
    reps: int
    loadgen_threads: int
    log_dir: Path
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: list[dict] = field(default_factory=list)


def available(ctx: Context, servers: list[Server]) -> tuple[list[Server], dict[str, str]]:
    ok, missing = [], {}
    for s in servers:
        if (ctx.build / s.binary).is_file():
            ok.append(s)
        else:
            missing[s.name] = f"not built ({s.binary} missing)"
    return ok, missing


def loadgen_args(ctx: Context, sc: Scenario) -> list[str]:
    a = ["--mode", sc.mode, "--connections", str(sc.conns), "--size", str(sc.size), "--depth", str(sc.depth),
         "--threads", str(ctx.loadgen_threads)]
    if sc.mode == "idle":
        a += ["--hold", str(sc.hold)]
    else:
        a += ["--duration", str(ctx.duration), "--warmup", str(ctx.warmup)]
    return a


def measure_once(ctx: Context, server: Server, sc: Scenario) -> dict:
    argv = pin(ctx.server_cpu) + [str(ctx.build / server.binary), "--port", "0"] + server.args(sc)
    srv = RunningServer(argv, startup_timeout=30, log_dir=ctx.log_dir)
    try:
        budget = (sc.hold + 120) if sc.mode == "idle" else (ctx.duration + ctx.warmup + 60)
        r = run_loadgen(ctx.build, ctx.client_cpu, srv.port, srv.pid, loadgen_args(ctx, sc), budget)
        complaint = srv.stop(timeout=15)
        if complaint:
            r["server_complaint"] = complaint
    finally:
        srv.close()
    r.update(server=server.name, scenario=sc.key)
    ctx.raw.append(r)
    problem = []
    if r["errors"] or r["mismatches"] or r["exit"] != 0:
        problem.append(f"{r['errors']} errors, {r['mismatches']} mismatches, exit {r['exit']}"
                       + (f": {r['first_error']}" if r["first_error"] else ""))
    if r.get("server_complaint"):
        problem.append(r["server_complaint"])
    if problem:
        ctx.failures.append(f"{server.name}, {sc.title}: " + "; ".join(problem))
    return r


def run_matrix(ctx: Context, servers: list[Server], scenarios: list[Scenario]) -> dict[str, dict[str, list[dict]]]:
    """Returns results[scenario][server] = list of runs. Servers are interleaved within each repetition."""
    results: dict[str, dict[str, list[dict]]] = {}
    for sc in scenarios:
        applicable = [s for s in servers if sc.conns <= s.max_conns]
        results[sc.key] = {s.name: [] for s in applicable}
        for rep in range(ctx.reps):
            for s in applicable:
                t0 = time.monotonic()
                try:
                    r = measure_once(ctx, s, sc)
                except HarnessError as e:
                    ctx.failures.append(f"{s.name}, {sc.title}: {e}")
                    continue
                results[sc.key][s.name].append(r)
                if sc.mode == "idle":
                    what = f"{r['connected']} connected, {r['server_rss_per_conn_bytes']:.0f} B/conn"
                else:
                    what = f"{r['round_trips_per_s']:.0f} rt/s"
                log(f"  {sc.key} rep {rep + 1}/{ctx.reps} {s.name}: {what}, errors {r['errors']}, "
                    f"mismatches {r['mismatches']} ({time.monotonic() - t0:.1f} s)")
    return results


def self_check(ctx: Context) -> str:
    """The load generator must notice a server that changes bytes: uppercase_server upper-cases them."""
    binary = ctx.build / "examples/uppercase_server"
    if not binary.is_file():
        return "skipped (examples/uppercase_server not built)"
    srv = RunningServer([str(binary), "--port", "0"], startup_timeout=30, log_dir=ctx.log_dir)
    try:
        r = run_loadgen(ctx.build, None, srv.port, srv.pid, ["--count", "10", "--connections", "1"], 60)
        srv.stop(timeout=15)
    finally:
        srv.close()
    if r["mismatches"] >= 1 and r["exit"] != 0:
        return f"OK: against uppercase_server the load generator reports {r['mismatches']} mismatch and fails"
    ctx.failures.append(f"self-check: the load generator did not flag uppercase_server (result {r})")
    return "FAILED: the load generator did not notice changed bytes"


def parse_callgrind_total(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise HarnessError(f"no totals in {path}")


def callgrind_once(ctx: Context, server: Server, conns: int, count: int) -> int:
    out = Path(tempfile.mkdtemp(prefix="callgrind-", dir=ctx.log_dir)) / "callgrind.out"
    sc = Scenario("callgrind", "callgrind", conns=conns)
    argv = pin(ctx.server_cpu) + ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                  "--dump-line=no", str(ctx.build / server.binary), "--port", "0"] + server.args(sc)
    srv = RunningServer(argv, startup_timeout=120, log_dir=ctx.log_dir)
    try:
        r = run_loadgen(ctx.build, ctx.client_cpu, srv.port, srv.pid,
                        ["--count", str(count), "--connections", str(conns), "--time-limit", "300"], 400)
        complaint = srv.stop(timeout=120)
    finally:
        srv.close()
    if r["errors"] or r["mismatches"] or r["exit"] != 0 or complaint:
        raise HarnessError(f"callgrind run: {r['errors']} errors, {r['mismatches']} mismatches, "
                           f"{complaint or ''} {r['first_error']}")
    total = parse_callgrind_total(out)
    shutil.rmtree(out.parent, ignore_errors=True)
    return total


def run_callgrind(ctx: Context, servers: list[Server], short: int, long: int) -> list[dict]:
    rows = []
    for s in servers:
        conns_list = [CALLGRIND_CONNS] if s.max_conns >= CALLGRIND_CONNS else [1]
        if s.reference:
            conns_list = sorted(set(conns_list + [1]), reverse=True)  # a 1-connection reference too
        for conns in conns_list:
            try:
                t0 = time.monotonic()
                a = callgrind_once(ctx, s, conns, short)
                b = callgrind_once(ctx, s, conns, long)
                per = (b - a) / (long - short)
                rows.append(dict(server=s.name, conns=conns, short=a, long=b, per_rt=per))
                log(f"  callgrind {s.name}, {conns} conns: {per:.0f} instructions per round trip "
                    f"({time.monotonic() - t0:.1f} s)")
            except HarnessError as e:
                ctx.failures.append(f"callgrind {s.name}: {e}")
    return rows


def compile_once(cxx: str, opt: str, source: Path) -> tuple[float, float, int]:
    argv = [cxx, "-std=c++20", opt, "-I", str(ROOT / "include"), "-c", str(source), "-o", os.devnull]
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode(errors="replace")  # until the compiler exits: a full pipe must not block it
    p.stderr.close()
    # wait4 reports the child's usage including the compiler proper (cc1plus) it waited for.
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise HarnessError(f"{shlex.join(argv)} failed: {err[-1000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def run_include_cost(ctx: Context, cxx: str, reps: int, opts: list[str], have_asio: bool) -> list[dict]:
    src_dir = Path(tempfile.mkdtemp(prefix="include-cost-", dir=ctx.log_dir))
    tus = {name: text for name, text in INCLUDE_TUS.items() if have_asio or "asio" not in name}
    files = {}
    for i, (name, text) in enumerate(tus.items()):
        files[name] = src_dir / f"tu{i}.cpp"
        files[name].write_text(text)
    samples: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for _ in range(reps):
        for opt in opts:
            for name in tus:  # interleaved, like the servers
                try:
                    samples.setdefault((name, opt), []).append(compile_once(cxx, opt, files[name]))
                except HarnessError as e:
                    ctx.failures.append(f"include cost {name} {opt}: {e}")
    shutil.rmtree(src_dir, ignore_errors=True)
    rows = []
    for (name, opt), s in samples.items():
        rows.append(dict(tu=name, opt=opt, n=len(s), wall=statistics.median(x[0] for x in s),
                         cpu=statistics.median(x[1] for x in s), maxrss_kib=statistics.median(x[2] for x in s)))
    return rows


# ------------------------------------------------------------------------------------------------
# Report

def idle_verdict(server, per_conn: float | None) -> str:
    """sockpat's async servers against IDLE_BYTES_CEILING; the others are references."""
    if not (server.name.startswith("sockpat") and "async" in server.name) or per_conn is None:
        return ""
    return f"≤ {IDLE_BYTES_CEILING:,} B: " + ("met" if per_conn <= IDLE_BYTES_CEILING else "**over**")


def med(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None and r[key] >= 0]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, digits: int = 0, thousands: bool = True) -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}" if thousands else f"{v:.{digits}f}"


def spread(runs: list[dict], key: str) -> str:
    vals = [r[key] for r in runs]
    if len(vals) < 2:
        return ""
    m = statistics.median(vals)
    return f" ±{(max(vals) - min(vals)) / 2 / m * 100:.0f}%" if m else ""


def machine_description(cxx: str) -> list[str]:
    def first_line(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.splitlines()[0].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not available"

    model = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    asio = "not installed"
    ver = Path("/usr/include/asio/version.hpp")
    if ver.is_file():
        m = re.search(r"#\s*define\s+ASIO_VERSION\s+(\d+)", ver.read_text())
        if m:
            v = int(m.group(1))
            asio = f"{v // 100000}.{v // 100 % 1000}.{v % 100}"
    return [
        f"- CPU: {model}, {os.cpu_count()} logical CPUs (usable here: {len(os.sched_getaffinity(0))})",
        f"- Kernel: {platform.system()} {platform.release()}",
        f"- Compiler: {first_line([cxx, '--version'])}; clang++: {first_line(['clang++', '--version'])}",
        f"- Asio: {asio}; valgrind: {first_line(['valgrind', '--version'])}; Python {platform.python_version()}",
    ]


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def report(ctx: Context, args, servers: list[Server], missing: dict[str, str], scenarios: list[Scenario],
           results, idle_sc: Scenario | None, idle_results, callgrind_rows, include_rows, include_cxx: str,
           self_check_text: str, started: datetime.datetime, elapsed: float, load: tuple[str, str]) -> str:
    out = []
    w = out.append
    w(f"# sockpat benchmark results{' (quick run: proves the harness works, numbers mean nothing)' if args.quick else ''}")
    w("")
    w(f"- Date: {started.strftime('%Y-%m-%d %H:%M UTC')}; took {elapsed / 60:.1f} min")
    w(f"- Command: `{args.command_line}`; sockpat revision {git_revision()}")
    w("\n".join(machine_description(include_cxx)))
    pinning = (f"server on CPU {ctx.server_cpu}, load generator on CPU {ctx.client_cpu} (taskset)"
               if ctx.server_cpu is not None else "no pinning (fewer than 2 usable CPUs)")
    w(f"- Pinning: {pinning}; load generator threads: {ctx.loadgen_threads}")
    w(f"- Load average (1/5/15 min) at start: {load[0]}; at end: {load[1]}")
    if args.label:
        w(f"- Conditions: **{args.label}**")
    w(f"- Each figure: the median of {ctx.reps} repetition(s), servers interleaved (A B C A B C ...); "
      f"{ctx.warmup:g} s warm-up then {ctx.duration:g} s measured per run. ± is half the min–max spread of "
      "round trips/s across repetitions.")
    for n in ctx.notes:
        w(f"- {n}")
    w("")
    w(f"Self-check: {self_check_text}")
    w("")
    if ctx.failures:
        w("## FAILURES")
        w("")
        for f in ctx.failures:
            w(f"- {f}")
        w("")

    ref = next((s.name for s in servers if s.reference), None)
    for sc in scenarios:
        w(f"## {sc.title}")
        w("")
        w("| server | round trips/s | vs raw epoll | MB/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/rt "
          "| server sleeps/rt | loadgen CPU % | errors / mismatches |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        ref_rate = med(results[sc.key].get(ref, []), "round_trips_per_s") if ref else None
        for s in servers:
            if s.name in missing:
                w(f"| {s.name} | {missing[s.name]} | | | | | | | | | |")
                continue
            if sc.conns > s.max_conns:
                w(f"| {s.name} | n/a: {s.why_not} | | | | | | | | | |")
                continue
            runs = results[sc.key].get(s.name, [])
            if not runs:
                w(f"| {s.name} | failed (see FAILURES) | | | | | | | | | |")
                continue
            rate = med(runs, "round_trips_per_s")
            ratio = f"{rate / ref_rate:.2f}×" if rate and ref_rate else "–"
            loadgen_pct = statistics.median(r["client_cpu_s"] / r["window_s"] * 100 for r in runs)
            errs = sum(r["errors"] for r in runs)
            mism = sum(r["mismatches"] for r in runs)
            w(f"| {s.name} | {fmt(rate)}{spread(runs, 'round_trips_per_s')} | {ratio} | {fmt(med(runs, 'mb_per_s'), 1)} "
              f"| {fmt(med(runs, 'p50_us'), 1)} | {fmt(med(runs, 'p99_us'), 1)} | {fmt(med(runs, 'p999_us'), 1)} "
              f"| {fmt(med(runs, 'server_cpu_us_per_rt'), 2)} | {fmt(med(runs, 'server_sleeps_per_rt'), 3)} "
              f"| {loadgen_pct:.0f} | {errs} / {mism}{' **FAIL**' if errs or mism else ''} |")
        w("")
        blocking_table(w, servers, results[sc.key])

    if idle_sc is not None:
        w(f"## {idle_sc.title}: server resident memory per connection")
        w("")
        w(f"Each connection does one {idle_sc.size} B round trip, the server's VmRSS is read "
          f"(/proc/PID/status), the connections are held {idle_sc.hold:g} s and each does a second round trip. "
          "RSS counts user-space memory only (the kernel's socket buffers are not in it).")
        w("")
        w(f"sockpat's async servers must stay at or below {IDLE_BYTES_CEILING:,} bytes per connection "
          "(the last column says whether they did).")
        w("")
        w("| server | connected | alive after hold | RSS before KiB | RSS after KiB | bytes per connection | errors / mismatches | ceiling |")
        w("|---|---:|---:|---:|---:|---:|---:|---|")
        for s in servers:
            if s.name in missing:
                w(f"| {s.name} | {missing[s.name]} | | | | | |")
                continue
            if idle_sc.conns > s.max_conns:
                w(f"| {s.name} | n/a: {s.why_not} | | | | | |")
                continue
            runs = idle_results.get(idle_sc.key, {}).get(s.name, [])
            if not runs:
                w(f"| {s.name} | failed (see FAILURES) | | | | | |")
                continue
            w(f"| {s.name} | {fmt(med(runs, 'connected'))} | {fmt(med(runs, 'alive_after_hold'))} "
              f"| {fmt(med(runs, 'server_rss_before_kib'))} | {fmt(med(runs, 'server_rss_after_kib'))} "
              f"| {fmt(med(runs, 'server_rss_per_conn_bytes'))} "
              f"| {sum(r['errors'] for r in runs)} / {sum(r['mismatches'] for r in runs)}"
              f"{' **FAIL**' if any(r['errors'] or r['mismatches'] or r['exit'] for r in runs) else ''} "
              f"| {idle_verdict(s, med(runs, 'server_rss_per_conn_bytes'))} |")
        w("")

    if callgrind_rows is not None:
        w("## Server instructions per round trip (callgrind)")
        w("")
        w(f"User-space instructions executed by the server (all its threads) under `valgrind --tool=callgrind`, "
          f"64 B ping-pong: (Ir of a {CALLGRIND_LONG:,}-round-trip run − Ir of a {CALLGRIND_SHORT:,}-round-trip run) "
          f"/ {CALLGRIND_LONG - CALLGRIND_SHORT:,}. Start-up, connection set-up and shutdown cancel out; "
          "the kernel's work is not counted.")
        w("")
        w("| server | connections | instructions per round trip | vs raw epoll | Ir short run | Ir long run |")
        w("|---|---:|---:|---:|---:|---:|")
        refs = {r["conns"]: r["per_rt"] for r in callgrind_rows if r["server"] == ref}
        for r in callgrind_rows:
            base = refs.get(r["conns"])
            ratio = f"{r['per_rt'] / base:.2f}×" if base else "–"
            w(f"| {r['server']} | {r['conns']} | {r['per_rt']:,.0f} | {ratio} | {r['short']:,} | {r['long']:,} |")
        for s in servers:
            if s.name in missing:
                w(f"| {s.name} | | {missing[s.name]} | | | |")
        w("")

    if include_rows is not None:
        w(f"## Include cost ({include_cxx}, `-std=c++20 -c`)")
        w("")
        w("A translation unit holding only the includes and an empty `main`; the median of "
          f"{max((r['n'] for r in include_rows), default=0)} compilations, interleaved. CPU = user + system time "
          "of the compiler (less noisy than wall time on a busy machine); memory = peak RSS of the compiler.")
        w("")
        w("| translation unit | flags | wall s | CPU s | peak memory MiB | CPU vs `<asio.hpp>` | ceiling |")
        w("|---|---|---:|---:|---:|---:|---|")
        asio_cpu = {r["opt"]: r["cpu"] for r in include_rows if "asio" in r["tu"]}
        for r in sorted(include_rows, key=lambda r: (r["opt"], list(INCLUDE_TUS).index(r["tu"]))):
            base = asio_cpu.get(r["opt"])
            ratio = f"{r['cpu'] / base:.2f}×" if base else "–"
            ceiling = INCLUDE_CEILINGS.get(r["tu"])
            verdict = ""
            if ceiling is not None:
                verdict = f"≤ {ceiling:.2f}×" + ("" if not base else (": met" if r["cpu"] / base <= ceiling else ": **over**"))
            w(f"| `{r['tu']}` | `{r['opt']}` | {r['wall']:.2f} | {r['cpu']:.2f} | {r['maxrss_kib'] / 1024:.0f} | {ratio} | {verdict} |")
        w("")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------

def blocking_table(w, servers: list[Server], runs_of: dict[str, list[dict]]) -> None:
    """The blocking servers against the raw thread-per-connection server, measured in the same run."""
    ref = next((s.name for s in servers if s.blocking_reference and runs_of.get(s.name)), None)
    rows = [s for s in servers if s.blocking and runs_of.get(s.name)]
    if ref is None or not rows:
        return
    ref_rate = med(runs_of[ref], "round_trips_per_s")
    ref_cpu = med(runs_of[ref], "server_cpu_us_per_rt")
    w(f"Blocking servers against {ref} (same run): round trips/s (higher is better) and server CPU per "
      "round trip (lower is better), as ratios.")
    w("")
    w("| server | round trips/s | vs raw threads | server CPU µs/rt | vs raw threads |")
    w("|---|---:|---:|---:|---:|")
    for s in [next(x for x in servers if x.name == ref)] + rows:
        rate = med(runs_of[s.name], "round_trips_per_s")
        cpu = med(runs_of[s.name], "server_cpu_us_per_rt")
        r_rate = f"{rate / ref_rate:.2f}×" if rate and ref_rate else "–"
        r_cpu = f"{cpu / ref_cpu:.2f}×" if cpu and ref_cpu else "–"
        w(f"| {s.name} | {fmt(rate)} | {r_rate} | {fmt(cpu, 2)} | {r_cpu} |")
    w("")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(build_dir: Path, jobs: int) -> None:
    configure = ["cmake", "--preset", "release", "-B", str(build_dir), "-DSOCKPAT_BUILD_BENCH=ON",
                 "-DSOCKPAT_BUILD_TESTS=OFF", "-DSOCKPAT_BUILD_EXAMPLES=ON"]
    log(f"== {shlex.join(configure)}")
    subprocess.run(configure, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    cmd = ["cmake", "--build", str(build_dir), "-j", str(jobs)]
    log(f"== {shlex.join(cmd)}")
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def cmake_cache(build_dir: Path, key: str) -> str | None:
    cache = build_dir / "CMakeCache.txt"
    if not cache.is_file():
        return None
    for line in cache.read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split("=", 1)[1]
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few seconds, small scenarios: proves the harness works")
    ap.add_argument("--build-dir", default=str(ROOT / "build/bench"))
    ap.add_argument("--no-build", action="store_true", help="use the binaries already in --build-dir")
    ap.add_argument("--jobs", type=int, default=2, help="build parallelism (default 2)")
    ap.add_argument("--reps", type=int, help="repetitions per figure (default 3; --quick: 1)")
    ap.add_argument("--duration", type=float, help="measured seconds per run (default 3; --quick: 0.3)")
    ap.add_argument("--warmup", type=float, help="warm-up seconds per run (default 1; --quick: 0.1)")
    ap.add_argument("--loadgen-threads", type=int, default=1)
    ap.add_argument("--servers", help="comma-separated substrings: run only the servers whose name matches")
    ap.add_argument("--only", help="comma-separated parts to run: matrix,idle,callgrind,include")
    ap.add_argument("--include-reps", type=int, help="compilations per include-cost figure (default 5; --quick: 1)")
    ap.add_argument("--cxx", help="compiler for the include cost (default: the build's, e.g. g++; try clang++)")
    ap.add_argument("--label", help="free text describing the conditions, e.g. 'machine busy with other builds'")
    ap.add_argument("--output", help="where the Markdown report goes (default bench/RESULTS.md; --quick: "
                                     "BUILD_DIR/RESULTS-quick.md)")
    args = ap.parse_args()
    args.command_line = shlex.join(["python3", "bench/run.py"] + sys.argv[1:])
    quick = args.quick
    reps = args.reps or (1 if quick else 3)
    duration = args.duration or (0.3 if quick else 3.0)
    warmup = args.warmup if args.warmup is not None else (0.1 if quick else 1.0)
    parts = set((args.only or "matrix,idle,callgrind,include").split(","))
    unknown = parts - {"matrix", "idle", "callgrind", "include"}
    if unknown:
        ap.error(f"--only: unknown part(s) {sorted(unknown)}")

    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    build_dir = Path(args.build_dir).resolve()
    if not args.no_build:
        build(build_dir, args.jobs)

    cpus = sorted(os.sched_getaffinity(0))
    have_taskset = shutil.which("taskset") is not None
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 and have_taskset else (None, None)
    log_dir = Path(tempfile.mkdtemp(prefix="sockpat-bench-"))
    ctx = Context(build_dir, server_cpu, client_cpu, duration, warmup, reps, args.loadgen_threads, log_dir)

    servers = SERVERS
    if args.servers:
        wanted = [w.strip().lower() for w in args.servers.split(",")]
        servers = [s for s in SERVERS if any(w in s.name.lower() for w in wanted)]
    runnable, missing = available(ctx, servers)
    for name, why in missing.items():
        log(f"== skipping {name}: {why}")

    scenarios = QUICK_SCENARIOS if quick else SCENARIOS
    idle_sc = QUICK_IDLE if quick else IDLE
    # Both processes need a descriptor per idle connection, plus a few.
    soft, hard = raise_nofile(idle_sc.conns + 256)
    if "idle" in parts and soft < idle_sc.conns + 64:
        fit = max(soft - 64, 1)
        ctx.notes.append(f"RLIMIT_NOFILE hard limit is {hard}: the idle scenario runs {fit:,} connections "
                         f"instead of {idle_sc.conns:,}")
        idle_sc = Scenario(idle_sc.key, f"{fit:,} idle connections (limited by RLIMIT_NOFILE)", mode="idle",
                           conns=fit, hold=idle_sc.hold)
    elif "idle" in parts:
        ctx.notes.append(f"RLIMIT_NOFILE raised to {soft} (hard limit {hard}) for the harness, the servers and "
                         "the load generator")

    self_text = self_check(ctx)
    log(f"== self-check: {self_text}")

    results = {}
    if "matrix" in parts:
        log(f"== matrix: {len(scenarios)} scenarios x {len(runnable)} servers x {reps} reps")
        results = run_matrix(ctx, runnable, scenarios)
    idle_results = {}
    if "idle" in parts:
        log(f"== idle: {idle_sc.conns} connections")
        idle_results = run_matrix(ctx, runnable, [idle_sc])

    callgrind_rows = None
    if "callgrind" in parts:
        if shutil.which("valgrind") is None:
            ctx.notes.append("valgrind is not installed: no instruction counts")
        else:
            short, long_ = (200, 1_200) if quick else (CALLGRIND_SHORT, CALLGRIND_LONG)
            cg_servers = [s for s in runnable if s.reference] if quick else runnable
            log(f"== callgrind: {len(cg_servers)} servers")
            callgrind_rows = run_callgrind(ctx, cg_servers, short, long_)

    include_rows = None
    cxx = args.cxx or cmake_cache(build_dir, "CMAKE_CXX_COMPILER") or shutil.which("c++") or "c++"
    if "include" in parts:
        have_asio = bool(cmake_cache(build_dir, "SOCKPAT_ASIO_INCLUDE_DIR")) and \
            not cmake_cache(build_dir, "SOCKPAT_ASIO_INCLUDE_DIR").endswith("NOTFOUND")
        inc_reps = args.include_reps or (1 if quick else 5)
        opts = ["-O0"] if quick else ["-O0", "-O2"]
        log(f"== include cost: {inc_reps} compilations each")
        include_rows = run_include_cost(ctx, cxx, inc_reps, opts, have_asio)
        if not have_asio:
            ctx.notes.append("asio.hpp not found: no Asio servers and no Asio include cost")

    elapsed = time.monotonic() - t_start
    load1 = Path("/proc/loadavg").read_text().split()[:3]
    text = report(ctx, args, servers, missing, scenarios if "matrix" in parts else [], results,
                  idle_sc if "idle" in parts else None, idle_results, callgrind_rows, include_rows, cxx,
                  self_text, started, elapsed, (" ".join(load0), " ".join(load1)))
    print(text)
    output = Path(args.output) if args.output else (build_dir / "RESULTS-quick.md" if quick else ROOT / "bench/RESULTS.md")
    output.write_text(text)
    (build_dir / "results.json").write_text(json.dumps(ctx.raw, indent=1))
    log(f"== wrote {output} ({elapsed:.0f} s)")
    shutil.rmtree(log_dir, ignore_errors=True)
    if ctx.failures:
        log("== FAILED:\n" + "\n".join(f"   {f}" for f in ctx.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
