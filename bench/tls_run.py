#!/usr/bin/env python3
"""The TLS benchmark: sockpat's async streams over TLS (bench/sockpat_tls_echo_server) against
Asio's SSL stream (bench/asio_tls_echo_server), each one thread, in the same run, driven by
bench/tls_loadgen (OpenSSL alone): stream throughput with 64 KiB messages on one connection (4 in
flight, every byte checked), and
full handshakes per second. Prints a Markdown table (medians of --reps runs) and the command.

usage: python3 bench/tls_run.py --build-dir DIR [--reps 3] [--seconds 3] [--label TEXT]
DIR is a build with -DSOCKPAT_BUILD_BENCH=ON (release preset); the certificate (EC P-256,
localhost) is made for the run with the openssl tool and deleted after.
"""
import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVERS = [("sockpat async (1 thread)", "bench/sockpat_tls_echo_server"),
           ("Asio ssl::stream (1 thread)", "bench/asio_tls_echo_server")]


def pin(cpu):
    return ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []


def start(argv):
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()  # "listening on HOST:PORT", bounded by the server's own start
    if not line.startswith("listening on "):
        p.kill()
        raise RuntimeError(f"{argv[0]} did not start: {line!r} {p.stderr.read()[-500:]}")
    return p, int(line.rsplit(":", 1)[1])


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def cpu_seconds(pid):
    """User + system CPU time the process has used so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def loadgen(build, cpu, port, args, timeout):
    argv = pin(cpu) + [str(build / "bench/tls_loadgen"), "--port", str(port)] + args
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    build = Path(args.build_dir).resolve()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    tmp = Path(tempfile.mkdtemp(prefix="sockpat-tls-bench-"))
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    figures = {name: {"stream": [], "handshakes": [], "cpu_per_mb": [], "cpu_per_handshake": []} for name, _ in SERVERS}
    try:
        for rep in range(args.reps):
            for name, binary in SERVERS:  # interleaved: both servers see the same machine
                p, port = start(pin(server_cpu) + [str(build / binary), "--cert", str(cert), "--key", str(key)])
                try:
                    c0, t0 = cpu_seconds(p.pid), time.monotonic()
                    s = loadgen(build, client_cpu, port, ["--mode", "stream", "--seconds", str(args.seconds)],
                                args.seconds + 60)
                    c1, t1 = cpu_seconds(p.pid), time.monotonic()
                    h = loadgen(build, client_cpu, port, ["--mode", "handshakes", "--seconds", str(args.seconds),
                                                          "--threads", "2"], args.seconds + 60)
                    c2, t2 = cpu_seconds(p.pid), time.monotonic()
                finally:
                    stop(p)
                figures[name]["stream"].append(s["mb_per_s"])
                figures[name]["handshakes"].append(h["per_s"])
                # The server's share of a CPU over each load (warm-up included: the load is the same
                # throughout), divided by the measured rate: its CPU per MB and per handshake.
                if None not in (c0, c1, c2) and s["mb_per_s"] > 0 and h["per_s"] > 0:
                    figures[name]["cpu_per_mb"].append((c1 - c0) / (t1 - t0) * 1e6 / s["mb_per_s"])
                    figures[name]["cpu_per_handshake"].append((c2 - c1) / (t2 - t1) * 1e3 / h["per_s"])
                print(f"rep {rep + 1} {name}: {s['mb_per_s']:.0f} MB/s, {h['per_s']:.0f} handshakes/s", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ref = SERVERS[1][0]
    print(f"Command: `{shlex.join(['python3', 'bench/tls_run.py'] + sys.argv[1:])}`; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average before: "
          f"{load_before}. {args.label}")
    print()
    print("| server | stream 64 KiB, 1 conn: MB/s | vs Asio | server CPU us/MB | full handshakes/s (2 client threads) "
          "| vs Asio | server CPU ms/handshake |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    med = lambda name, key: statistics.median(figures[name][key]) if figures[name][key] else None
    cpu = lambda x, ref_x, digits: f"{x:.{digits}f} ({x / ref_x:.2f}x)" if x is not None and ref_x else "–"
    for name, _ in SERVERS:
        st, hs = med(name, "stream"), med(name, "handshakes")
        rst, rhs = med(ref, "stream"), med(ref, "handshakes")
        runs = lambda xs: ", ".join(f"{x:.0f}" for x in xs)
        print(f"| {name} | {st:.0f} ({runs(figures[name]['stream'])}) | {st / rst:.2f}x | "
              f"{cpu(med(name, 'cpu_per_mb'), med(ref, 'cpu_per_mb'), 0)} | "
              f"{hs:.0f} ({runs(figures[name]['handshakes'])}) | {hs / rhs:.2f}x | "
              f"{cpu(med(name, 'cpu_per_handshake'), med(ref, 'cpu_per_handshake'), 3)} |")
    print()
    print("Server CPU: the server process's user + system time (/proc/PID/stat) over each load as a share "
          "of the wall time, divided by the measured rate. The client runs on one CPU, so handshakes/s is bounded by the "
          "client's half of each handshake: CPU per handshake is the server's own cost.")


if __name__ == "__main__":
    main()
