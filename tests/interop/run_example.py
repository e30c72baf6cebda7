"""Runs sockpat's examples as real processes over loopback and checks what they print.

Usage: run_example.py BIN_DIR SCENARIO [RUNNER...]. Every wait is bounded; servers are stopped
with SIGINT or SIGTERM and must exit 0, which proves the clean stop the examples promise.

Every process the script starts is ended on every way out: a failed check, an exception, a
timeout, SIGTERM or SIGINT (scenario cleanup_on_failure tests it). On Linux a started process
also gets SIGKILL when the script dies, which covers CTest ending a test that overran its
TIMEOUT: CTest 3.25 does that with SIGKILL, which no handler sees.

RUNNER is a command that runs the example binaries, such as Wine's loader for a Windows
cross-build (CMake passes CMAKE_CROSSCOMPILING_EMULATOR). Wine turns a SIGINT it receives into
the console's CTRL_C_EVENT, which sockpat::SignalStop handles; Windows has no SIGTERM for a
console program, so under a runner every stop is sent as SIGINT.
"""
import os
import resource
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import hostile  # tests/interop/hostile.py

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 20
RUNNER = []
STARTED = []  # every process start() made, for end_all()
REPORT_STARTED = []  # non-empty: start() prints each pid (for scenario cleanup_on_failure)

if sys.platform.startswith('linux'):
    import ctypes
    _libc = ctypes.CDLL(None, use_errno=True)  # loaded here: a child between fork and exec should not load it
    _PR_SET_PDEATHSIG = 1


def _die_with_parent(parent):
    """In the child before exec: SIGKILL when the script ends, even by SIGKILL.

    The kernel sends it when the thread that forked ends, so start() is called on the main thread only."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the script died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def start(argv, preexec_fn=None, **kwargs):
    """subprocess.Popen, and the process is remembered so that end_all() ends it."""
    setup = preexec_fn
    if sys.platform.startswith('linux'):
        parent = os.getpid()

        def setup():
            _die_with_parent(parent)
            if preexec_fn:
                preexec_fn()
    proc = subprocess.Popen(argv, preexec_fn=setup, **kwargs)
    STARTED.append(proc)
    if REPORT_STARTED:
        print('started %d' % proc.pid, flush=True)
    return proc


def end_all():
    """Kills (by its pid) every started process still running, and reaps it."""
    for proc in STARTED:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            print('run_example.py: pid %d did not end after SIGKILL' % proc.pid, file=sys.stderr)


def stop_on_signal(signum, _frame):
    # An exception, so that the way out is the same as for a failure: main's finally ends the processes.
    raise SystemExit('run_example.py: stopped by signal %d' % signum)


class Server:
    """A process whose first line of output is 'listening on HOST:PORT'."""

    def __init__(self, argv, preexec_fn=None):
        # stderr goes to a file: a chatty server must never block on a full pipe nobody reads.
        self.stderr = tempfile.TemporaryFile(mode='w+')
        # errors='replace': a server may print what a hostile client sent, garbage included.
        self.proc = start(argv, stdout=subprocess.PIPE, stderr=self.stderr, text=True, errors='replace',
                          preexec_fn=preexec_fn)
        line = self.proc.stdout.readline()
        if not line.startswith('listening on '):
            self.proc.kill()
            self.proc.wait(TIMEOUT)
            raise AssertionError('expected "listening on HOST:PORT", got %r (stderr: %r)'
                                 % (line, self.read_stderr()))
        self.endpoint = line.split()[-1]
        self.port = int(self.endpoint.rsplit(':', 1)[1])

    def stop(self, sig=signal.SIGINT):
        self.proc.send_signal(signal.SIGINT if RUNNER else sig)
        return self.finish()

    def finish(self):
        out, _ = self.proc.communicate(timeout=TIMEOUT)
        return self.proc.returncode, out, self.read_stderr()

    def read_stderr(self):
        self.stderr.seek(0)
        return self.stderr.read()


def run(argv, timeout=TIMEOUT):
    proc = start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def expect(cond, what, *details):
    if not cond:
        raise AssertionError(what + ''.join('\n  ' + str(d) for d in details))


def bin_path(bin_dir, name):
    path = os.path.join(bin_dir, name)
    if os.path.exists(path + '.exe'):
        path += '.exe'
    return RUNNER + [path]


def seed(*args):
    return [sys.executable, os.path.join(HERE, 'seeds.py')] + [str(a) for a in args]


def scenario_hello(b):
    server = Server(bin_path(b, 'hello_server') + ['--port', '0'])
    for message in ['Hello, server!', 'second client']:
        rc, out, err = run(bin_path(b, 'hello_client') + ['--port', str(server.port), '--message', message])
        expect(rc == 0 and out == 'Received from server: Hello, client!\n', 'hello_client output', rc, out, err)
    rc, out, err = server.stop(signal.SIGINT)
    expect(rc == 0, 'hello_server exits 0 on SIGINT', rc, err)
    expect(out == 'Received from client: Hello, server!\nReceived from client: second client\n',
           'hello_server output', out)


def scenario_hello_once(b):
    server = Server(bin_path(b, 'hello_server') + ['--port', '0', '--once', '--host', 'localhost'])
    rc, out, err = run(bin_path(b, 'hello_client') + ['--host', 'localhost', '--port', str(server.port)])
    expect(rc == 0 and 'Hello, client!' in out, 'hello_client output', rc, out, err)
    rc, out, err = server.finish()
    expect(rc == 0, '--once exits by itself after one client', rc, err)


def scenario_seed_client_vs_hello_server(b):
    server = Server(bin_path(b, 'hello_server') + ['--port', '0'])
    rc, out, err = run(seed('client', server.port))
    expect(rc == 0 and out == 'Received from server: Hello, client!\n', "the seed's client output", rc, out, err)
    rc, out, err = server.stop(signal.SIGTERM)
    expect(rc == 0, 'hello_server exits 0 on SIGTERM', rc, err)
    expect(out == 'Received from client: Hello, server!\n', 'hello_server output', out)


def scenario_hello_client_vs_seed_server(b):
    server = Server(seed('server'))
    rc, out, err = run(bin_path(b, 'hello_client') + ['--port', str(server.port)])
    expect(rc == 0 and out == 'Received from server: Hello, client!\n', 'hello_client output', rc, out, err)
    rc, out, err = server.finish()
    expect(rc == 0 and out == 'Received from client: Hello, server!\n', "the seed's server output", rc, out, err)


def scenario_hello_client_vs_seed_upper_server(b):
    server = Server(seed('upper_server'))
    rc, out, err = run(bin_path(b, 'hello_client') + ['--port', str(server.port), '--message', 'Hello from Peer 1'])
    expect(rc == 0 and out == 'Received from server: HELLO FROM PEER 1\n', 'hello_client output', rc, out, err)
    rc, _, err = server.finish()
    expect(rc == 0, "the seed's upper server exits", rc, err)


def scenario_uppercase(b):
    server = Server(bin_path(b, 'uppercase_server') + ['--port', '0'])
    for text in [b'Hello from Peer 1', b'x' * 100000 + b'end']:
        with socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT) as s:
            s.sendall(text)
            s.shutdown(socket.SHUT_WR)  # a half-close: the server must still answer everything
            got = b''
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        expect(got == text.upper(), 'uppercase_server answers every byte upper-cased', len(got), got[:40])
    rc, _, err = server.stop(signal.SIGTERM)
    expect(rc == 0, 'uppercase_server exits 0 on SIGTERM', rc, err)


def scenario_udp_echo(b):
    for host in ['127.0.0.1', '::1']:
        server = Server(bin_path(b, 'udp_echo') + ['--host', host, '--port', '0'])
        rc, out, err = run(bin_path(b, 'udp_echo') + ['--connect', server.endpoint, '--message', 'datagram'])
        expect(rc == 0 and out == 'Received from %s: datagram\n' % server.endpoint, 'udp_echo client output',
               rc, out, err)
        # A datagram from Python gets the same echo.
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(b'from python', (host, server.port))
            data, _ = s.recvfrom(100)
            expect(data == b'from python', 'udp_echo echoes a Python datagram', data)
        rc, _, err = server.stop(signal.SIGINT)
        expect(rc == 0, 'udp_echo exits 0 on SIGINT', rc, err)
    # Nobody on the port: the ICMP "port unreachable" makes it connection_refused at once, as
    # docs/guides/datagrams.md says (Windows reports nothing: there it is "no answer").
    if not RUNNER:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(('127.0.0.1', 0))
            closed = s.getsockname()[1]
        began = time.monotonic()
        rc, out, err = run(bin_path(b, 'udp_echo') + ['--connect', '127.0.0.1:%d' % closed])
        expect(rc == 1 and out == '' and err == 'udp_echo: receive from 127.0.0.1:%d: Connection refused\n' % closed,
               'udp_echo to a closed port says connection refused', rc, out, err)
        expect(time.monotonic() - began < 4, 'and says it before its retries are spent', time.monotonic() - began)


def scenario_async_hello(b):
    server = Server(bin_path(b, 'async_hello_server') + ['--port', '0'])
    # The seed's blocking client, then many asyncio clients at once, then the C++ async client.
    rc, out, err = run(seed('client', server.port))
    expect(rc == 0 and out == 'Received from server: Hello, client!\n', "the seed's client output", rc, out, err)
    rc, out, err = run(seed('asyncio_clients', server.port, 200, 'Hello, client!'))
    expect(rc == 0 and out == '200 of 200 asyncio clients got the right answer\n', 'asyncio clients', rc, out, err)
    rc, out, err = run(bin_path(b, 'async_client') + ['--port', str(server.port), '--clients', '100',
                        '--expect', 'Hello, client!'])
    expect(rc == 0 and out == '100 of 100 clients got the right answer\n', 'async_client output', rc, out, err)
    rc, _, err = server.stop(signal.SIGINT)
    expect(rc == 0, 'async_hello_server exits 0 on SIGINT', rc, err)


def scenario_async_echo(b):
    # Several loops share the port through SO_REUSEPORT, which Windows lacks (docs/platforms.md).
    for threads in (['1'] if RUNNER else ['1', '3']):
        server = Server(bin_path(b, 'async_echo_server') + ['--port', '0', '--threads', threads])
        rc, out, err = run(seed('asyncio_clients', server.port, 300))
        expect(rc == 0 and out == '300 of 300 asyncio clients got the right answer\n', 'asyncio clients', rc, out, err)
        rc, out, err = run(bin_path(b, 'async_client') + ['--port', str(server.port), '--clients', '300'])
        expect(rc == 0 and out == '300 of 300 clients got the right answer\n', 'async_client output', rc, out, err)
        with socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT) as s:
            big = bytes(range(256)) * 4096  # 1 MiB, more than any socket buffer
            s.sendall(big)
            s.shutdown(socket.SHUT_WR)
            got = b''
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                got += chunk
            expect(got == big, 'async_echo_server echoes 1 MiB', len(got))
        rc, _, err = server.stop(signal.SIGTERM)
        expect(rc == 0, 'async_echo_server --threads %s exits 0 on SIGTERM' % threads, rc, err)


def scenario_async_client_vs_asyncio_echo_server(b):
    server = Server(seed('asyncio_echo_server'))
    rc, out, err = run(bin_path(b, 'async_client') + ['--host', 'localhost', '--port', str(server.port),
                        '--clients', '100'])
    expect(rc == 0 and out == '100 of 100 clients got the right answer\n', 'async_client output', rc, out, err)
    rc, _, err = server.stop(signal.SIGTERM)
    expect(rc == 0, 'the asyncio echo server exits 0 on SIGTERM', rc, err)


def scenario_async_client_vs_asyncio_seed_server(b):
    server = Server(seed('asyncio_server'))
    rc, out, err = run(bin_path(b, 'async_client') + ['--port', str(server.port), '--clients', '50',
                        '--expect', 'Hello, client!'])
    expect(rc == 0 and out == '50 of 50 clients got the right answer\n', 'async_client output', rc, out, err)
    rc, _, err = server.stop(signal.SIGINT)
    expect(rc == 0, "the seed's asyncio server exits 0 on SIGINT", rc, err)


def free_port():
    """A loopback port that was free a moment ago (bound to 0, read back, released)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def peer_argv(b, me, other, name):
    return bin_path(b, 'peer') + ['--listen', '127.0.0.1:%d' % me, '--connect', '127.0.0.1:%d' % other,
                                  '--name', name, '--timeout', '15']


def check_peer(proc, name, other_greeting):
    out, err = proc.communicate(timeout=TIMEOUT)
    expect(proc.returncode == 0, 'peer %s exits 0' % name, proc.returncode, out, err)
    expect(out.endswith('Received from peer: %s\nReceived back: HELLO FROM %s\n' % (other_greeting, name.upper())),
           'peer %s output' % name, out, err)


def scenario_peer(b):
    # Either order, and both at once: the two peers always end with one link and finish the exchange.
    for order in ['a-first', 'b-first', 'together']:
        pa, pb = free_port(), free_port()
        first, second = (('A', pa, pb), ('B', pb, pa)) if order != 'b-first' else (('B', pb, pa), ('A', pa, pb))
        p1 = start(peer_argv(b, first[1], first[2], first[0]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   text=True)
        if order != 'together':
            line = p1.stdout.readline()  # the first peer is up (and dialing) before the second starts
            expect(line.startswith('listening on '), 'peer prints listening first', line)
        p2 = start(peer_argv(b, second[1], second[2], second[0]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                   text=True)
        check_peer(p1, first[0], 'Hello from ' + second[0])
        check_peer(p2, second[0], 'Hello from ' + first[0])


def scenario_peer_vs_seed_peer(b):
    # The seed's Python peer never listens, so it must start second: it dials this peer.
    mine, seeds = free_port(), free_port()
    p = start(peer_argv(b, mine, seeds, 'Cpp'), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    expect(line.startswith('listening on '), 'peer prints listening first', line)
    rc, out, err = run(seed('peer', seeds, mine))
    expect(rc == 0, "the seed's peer finishes", rc, out, err)
    check_peer(p, 'Cpp', 'Hello from Peer 1')
def recv_until_closed(sock):
    got = b''
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return got
        got += chunk


def echo_once(port, payload):
    with socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        return recv_until_closed(s)


def run_threads(count, work):
    """Runs work(i) for i in range(count) on as many threads; returns the results in order."""
    results = [None] * count
    errors = []

    def one(i):
        try:
            results[i] = work(i)
        except Exception as e:  # reported below, so a failure names its client
            errors.append('client %d: %r' % (i, e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    expect(not any(t.is_alive() for t in threads), 'every client thread finished')
    expect(not errors, 'no client failed', *errors[:5])
    return results


def scenario_threaded_echo(b):
    server = Server(bin_path(b, 'threaded_echo_server') + ['--port', '0', '--threads', '4'])
    # 100 Python clients at once, each with its own 20 kB, on a pool of 4 threads.
    payloads = [(b'client %d;' % i) * 2000 for i in range(100)]
    got = run_threads(100, lambda i: echo_once(server.port, payloads[i]))
    expect(got == payloads, 'each Python client gets its own bytes back',
           sum(1 for g, p in zip(got, payloads) if g != p))
    rc, _, err = server.stop(signal.SIGTERM)
    expect(rc == 0, 'threaded_echo_server exits 0 on SIGTERM', rc, err)


def scenario_threaded_echo_idle(b):
    server = Server(bin_path(b, 'threaded_echo_server') + ['--port', '0', '--threads', '2', '--idle-timeout', '1'])
    idle = socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT)
    slow = socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT)
    start = time.monotonic()
    # The slow client sends a byte every 0.2 s and reads it back: slow, but never idle for 1 s.
    for i in range(10):
        slow.sendall(b'%d' % i)
        expect(slow.recv(10) == b'%d' % i, 'a slow client is still served')
        time.sleep(0.2)
    # The idle client was dropped after about a second, without a byte sent.
    expect(recv_until_closed(idle) == b'', 'the idle client sees the server close')
    waited = time.monotonic() - start
    expect(waited < 10, 'the idle client was dropped in time', waited)
    idle.close()
    slow.close()
    expect(echo_once(server.port, b'after') == b'after', 'the server still serves new clients')
    rc, _, err = server.stop(signal.SIGINT)
    expect(rc == 0, 'threaded_echo_server exits 0 on SIGINT', rc, err)


def scenario_threaded_echo_idle_many(b):
    # The default (elastic) server: 300 silent clients each hold a thread, and a new client is
    # still served at once (a fixed pool of 2 threads would keep it waiting for the idle timeout).
    server = Server(bin_path(b, 'threaded_echo_server') + ['--port', '0'])
    silent = []
    try:
        for i in range(300):
            silent.append(socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT))
        # The last one speaks once: the server accepts in order, so all 300 hold a thread by now
        # (what is timed below is the new client, not the server catching up with the others).
        silent[-1].sendall(b'x')
        expect(silent[-1].recv(10) == b'x', 'the 300th client is served')
        start = time.monotonic()
        got = echo_once(server.port, b'not starved')
        took = time.monotonic() - start
        print('the new client got its echo after %.3f s, with 300 silent clients connected' % took)
        expect(got == b'not starved', 'a new client is served while 300 clients sit silent', got)
        expect(took < 1, 'the new client is served within 1 s', took)
        # The silent clients were being served too: each gets its echo.
        for s in silent[:: 50]:
            s.sendall(b'late')
            expect(s.recv(10) == b'late', 'a silent client is served when it speaks')
    finally:
        for s in silent:
            s.close()
    rc, _, err = server.stop(signal.SIGTERM)
    expect(rc == 0, 'threaded_echo_server exits 0 on SIGTERM', rc, err)


def cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def scenario_threaded_echo_flood(b):
    # A descriptor limit of 64 and a flood of 300 clients: the server runs out of descriptors,
    # must not spin or die, keeps serving the clients it has, and accepts again afterwards.
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    server = Server(bin_path(b, 'threaded_echo_server') + ['--port', '0', '--threads', '4',
                     '--max-connections', '1000'], preexec_fn=low_limit)
    first = socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT)
    first.sendall(b'first')
    expect(first.recv(100) == b'first', 'the first client is served')
    flood = []
    for i in range(300):
        s = socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT)
        s.sendall(b'flood')
        flood.append(s)
    # Out of descriptors, the server should sit in its back-off, not burn a CPU.
    before = cpu_seconds(server.proc.pid)
    time.sleep(1)
    used = cpu_seconds(server.proc.pid) - before
    expect(used < 0.5, 'the server does not spin while out of descriptors', used)
    first.sendall(b'during')
    expect(first.recv(100) == b'during', 'the server keeps serving the client it has')
    for s in flood:
        s.close()
    expect(echo_once(server.port, b'after the flood') == b'after the flood', 'the server accepts again')
    first.close()
    rc, _, err = server.stop(signal.SIGTERM)
    expect(rc == 0, 'threaded_echo_server exits 0 after the flood', rc, err[-2000:])
    expect('Too many open files' in err, 'the server reported running out of descriptors', err[-500:])


def scenario_line_kv(b):
    server = Server(bin_path(b, 'line_server') + ['--port', '0'])
    client = bin_path(b, 'line_client') + ['--port', str(server.port)]
    rc, out, err = run(client + ['--command', 'SET greeting hello, world', '--command', 'GET greeting',
                                 '--command', 'GET nothing', '--command', 'SET n 1'])
    expect(rc == 0 and out == 'OK\nVALUE hello, world\nNOT_FOUND\nOK\n', 'line_client output', rc, out, err)
    # Another client (another process) sees the same store.
    rc, out, err = run(client + ['--command', 'GET n', '--command', 'DEL n', '--command', 'DEL n',
                                 '--command', 'GET n', '--command', 'FLY away', '--command', 'QUIT'])
    expect(rc == 0 and out == 'VALUE 1\nDELETED\nNOT_FOUND\nNOT_FOUND\nERROR unknown command FLY\nBYE\n',
           'the store is shared', rc, out, err)
    rc, _, err = server.stop(signal.SIGINT)
    expect(rc == 0, 'line_server exits 0 on SIGINT', rc, err)


def scenario_line_python(b):
    server = Server(bin_path(b, 'line_server') + ['--port', '0', '--threads', '4'])

    def talk(i):
        with socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT) as s:
            f = s.makefile('rwb')
            for j in range(20):
                f.write(b'SET key-%d-%d value %d %d\r\n' % (i, j, i, j))  # CRLF, as telnet sends
            f.flush()
            replies = [f.readline() for _ in range(20)]
            f.write(b'GET key-%d-19\n' % i)
            f.flush()
            return replies, f.readline()

    results = run_threads(30, talk)
    for i, (replies, got) in enumerate(results):
        expect(replies == [b'OK\n'] * 20, 'every SET answered OK', i, replies[:3])
        expect(got == b'VALUE value %d 19\n' % i, 'GET returns what SET stored', i, got)
    with socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT) as s:
        f = s.makefile('rwb')
        f.write(b'GET key-7-3\n' + b'SET big ' + b'x' * 10000 + b'\n')
        f.flush()
        expect(f.readline() == b'VALUE value 7 3\n', 'another connection sees the shared store')
        expect(f.readline() == b'ERROR line too long\n', 'an overlong line is refused')
        expect(f.readline() == b'', 'and that client is closed')
    rc, _, err = server.stop(signal.SIGTERM)
    expect(rc == 0, 'line_server exits 0 on SIGTERM', rc, err)


def scenario_line_client_first(b):
    # The client starts before its server and retries until the server listens.
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    client = start(bin_path(b, 'line_client') + ['--port', str(port), '--command', 'SET early bird',
                   '--command', 'GET early'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server = Server(bin_path(b, 'line_server') + ['--port', str(port)])
    out, err = client.communicate(timeout=TIMEOUT)
    expect(client.returncode == 0 and out == 'OK\nVALUE bird\n', 'line_client retried its connect',
           client.returncode, out, err)
    rc, _, err = server.stop(signal.SIGINT)
    expect(rc == 0, 'line_server exits 0', rc, err)


def hostile_scenario(b, name, proto, during_dribble, during_burst, extra=()):
    """Every hostile client of hostile.py against one example server, which must then stop cleanly."""
    server = Server(bin_path(b, name) + ['--port', '0'] + list(extra))
    try:
        hostile.attack(server.port, proto, lambda: server.proc.poll() is None, during_dribble, during_burst)
    except BaseException:
        server.proc.kill()
        server.finish()
        raise
    rc, _, err = server.stop(signal.SIGTERM)
    expect(rc == 0, '%s exits 0 on SIGTERM after the hostile clients' % name, rc, err[-2000:])


# hello_server and uppercase_server serve one client at a time: no one else is served while a
# client holds them, so only "after" is checked for those.
def scenario_hostile_hello(b):
    hostile_scenario(b, 'hello_server', hostile.Hello, during_dribble=False, during_burst=False)


def scenario_hostile_uppercase(b):
    hostile_scenario(b, 'uppercase_server', hostile.Uppercase, during_dribble=False, during_burst=False)


def scenario_hostile_threaded_echo(b):
    # A pool of 4: the dribbler holds one worker and the rest serve; the burst of 100 idle
    # connections fills max_connections (8), so others wait in the backlog until it leaves.
    hostile_scenario(b, 'threaded_echo_server', hostile.Echo, during_dribble=True, during_burst=False, extra=['--threads', '4'])


def scenario_hostile_line(b):
    hostile_scenario(b, 'line_server', hostile.Line, during_dribble=True, during_burst=False, extra=['--threads', '4'])


def scenario_hostile_async_echo(b):
    hostile_scenario(b, 'async_echo_server', hostile.Echo, during_dribble=True, during_burst=True)


def scenario_hostile_async_hello(b):
    hostile_scenario(b, 'async_hello_server', hostile.Hello, during_dribble=True, during_burst=True)


def scenario_hostile_http_keepalive(b):
    # The request server: the dribbler and the burst of idle connections wait in the poller, not
    # in the 2 workers, so a well-behaved client is served during both.
    hostile_scenario(b, 'http_keepalive_server', hostile.Http, during_dribble=True, during_burst=True,
                     extra=['--threads', '2'])


class Lines:
    """Collects a process's output lines on a thread, so that a wait for one is bounded."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip('\n'))
                self.cond.notify_all()

    def wait_for(self, predicate, timeout=TIMEOUT):
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self.lines), timeout)


def greet_all(procs, outs):
    """Each mesh_chat process (named n0, n1, ...) says one line; each must print every other's."""
    for i, p in enumerate(procs):
        p.stdin.write('hello from n%d\n' % i)
        p.stdin.flush()
    for i in range(len(procs)):
        wanted = ['n%d: hello from n%d' % (j, j) for j in range(len(procs)) if j != i]
        expect(outs[i].wait_for(lambda lines: all(w in lines for w in wanted)),
               'mesh_chat n%d prints every other line' % i, outs[i].lines)


def scenario_mesh_chat(b):
    # Four processes; nodes 1..3 know node 0 only and find each other. Each waits until the
    # three others are linked, then says one line; every process prints every other's line once.
    # Then node 3 is killed and restarted on its port: it is redialled and hears what follows.
    count = 4
    procs, outs, restart_endpoints = [], [], []
    first = None
    for i in range(count):
        argv = bin_path(b, 'mesh_chat') + ['--listen', '127.0.0.1:0', '--name', 'n%d' % i,
                                           '--wait-peers', str(count - 1), '--timeout', '15']
        if first is not None:
            argv += ['--join', first]
        p = start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        line = p.stdout.readline()
        expect(line.startswith('listening on 127.0.0.1:'), 'mesh_chat prints listening first', line)
        if first is None:
            first = line.split()[-1]
        restart_endpoints.append(line.split()[-1])
        outs.append(Lines(p.stdout))
    try:
        greet_all(procs, outs)
        # Node 3 is killed and restarted on its port knowing nobody: the others redial it, and
        # it gets the lines said after. Under Wine it is stopped with SIGINT instead: Wine 8.0's
        # wineserver leaks the sockets of a SIGKILLed process that had a poll pending (seen with
        # `ss -tlnp`: wineserver64 kept the listener, accepting, for as long as it ran), so the
        # port would never be free again. docs/platforms.md has the details.
        if RUNNER:
            procs[3].send_signal(signal.SIGINT)
        else:
            procs[3].kill()
        procs[3].wait(TIMEOUT)
        endpoint3 = restart_endpoints[3]
        argv = bin_path(b, 'mesh_chat') + ['--listen', endpoint3, '--name', 'n3', '--wait-peers', str(count - 1),
                                           '--timeout', '15']
        p = start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        if not line:
            p.wait(TIMEOUT)
            line = p.stderr.read()
        expect(line.strip() == 'listening on ' + endpoint3, 'the restarted node listens on its old port', line)
        procs[3] = p
        outs[3] = Lines(p.stdout)
        procs[3].stdin.write('back again\n')  # read once it is linked to the three others
        procs[3].stdin.flush()
        expect(outs[0].wait_for(lambda lines: 'n3: back again' in lines), 'n0 hears the restarted node',
               outs[0].lines)
        procs[0].stdin.write('welcome back\n')
        procs[0].stdin.flush()
        for i in range(count):
            wanted = [w for w in ['n3: back again', 'n0: welcome back'] if not w.startswith('n%d:' % i)]
            expect(outs[i].wait_for(lambda lines: all(w in lines for w in wanted)),
                   'n%d prints the lines said after the restart' % i, outs[i].lines)
        for p in procs:
            p.stdin.close()
        for i, p in enumerate(procs):
            err = p.stderr.read()
            p.wait(TIMEOUT)
            outs[i].thread.join(TIMEOUT)
            expect(p.returncode == 0, 'mesh_chat n%d exits 0 at the end of its input' % i, p.returncode, err)
            lines = outs[i].lines
            said = ['n%d: hello from n%d' % (j, j) for j in range(count)] + ['n3: back again', 'n0: welcome back']
            for line in said:
                mine = line.startswith('n%d:' % i)
                if i == 3 and line.startswith('n') and 'hello' in line:
                    continue  # the restarted node was not there for the first round
                expect(lines.count(line) == (0 if mine else 1), 'n%d prints %r %s' % (i, line,
                       'never' if mine else 'once'), lines, err)
            expect(err.count('joined ') >= count - 1, 'n%d reports the nodes that joined' % i, err)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(TIMEOUT)


def run_all(argvs):
    """Runs the programs at once (each bounded): [(returncode, stdout, stderr)] in order."""
    procs = [start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for argv in argvs]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=TIMEOUT)
        results.append((proc.returncode, out, err))
    return results


def scenario_http_keepalive(b):
    # The request server's HTTP example against Python's http.client: keep-alive over several
    # requests on one connection, 404, 405, Connection: close, HTTP/1.0, pipelining, a head too
    # large, and 100 keep-alive clients at once on 2 worker threads.
    import http.client
    server = Server(bin_path(b, 'http_keepalive_server') + ['--port', '0', '--threads', '2'])
    conn = http.client.HTTPConnection('127.0.0.1', server.port, timeout=TIMEOUT)
    first_sock = None
    for path, status, body in [('/', 200, b'Hello from sockpat\n'), ('/hello', 200, b'hello, world\n'),
                               ('/missing', 404, b'not found\n'), ('/', 200, b'Hello from sockpat\n')]:
        conn.request('GET', path)
        r = conn.getresponse()
        got = r.read()
        expect((r.status, got) == (status, body), 'GET %s gives %d' % (path, status), r.status, got)
        expect(r.getheader('Connection') == 'keep-alive', 'HTTP/1.1 keeps the connection', r.getheaders())
        first_sock = first_sock or conn.sock
        expect(conn.sock is first_sock, 'every request went over the same connection')
    conn.request('POST', '/', body=b'')
    r = conn.getresponse()
    r.read()
    expect(r.status == 405 and r.getheader('Allow') == 'GET', 'POST gives 405 with Allow: GET', r.status)
    conn.request('GET', '/hello', headers={'Connection': 'close'})
    r = conn.getresponse()
    expect(r.status == 200 and r.read() == b'hello, world\n', 'Connection: close still gets its reply')
    expect(r.getheader('Connection') == 'close', 'and the reply says close', r.getheaders())
    expect(conn.sock is None, 'http.client drops the connection the server closes')
    conn.close()

    def raw(request):
        with socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT) as s:
            s.sendall(request)
            return recv_until_closed(s)

    got = raw(b'GET / HTTP/1.0\r\n\r\n')
    expect(got.startswith(b'HTTP/1.1 200 OK\r\n') and b'Connection: close' in got, 'HTTP/1.0 is answered, then closed',
           got)
    # Two requests in one segment, the second closing: both answers, in order, then the close.
    got = raw(b'GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nConnection: close\r\n\r\n')
    expect(got.count(b'HTTP/1.1 ') == 2 and got.index(b'200 OK') < got.index(b'404 Not Found'),
           'pipelined requests are answered in order', got)
    got = raw(b'GET / HTTP/1.1\r\nX-Big: ' + b'x' * 20000 + b'\r\n\r\n')
    expect(got.startswith(b'HTTP/1.1 431 '), 'a head over 8 KiB gets 431', got[:100])
    got = raw(b'garbage\r\n\r\n')
    expect(got.startswith(b'HTTP/1.1 400 '), 'a bad request line gets 400', got[:100])

    def client(i):
        c = http.client.HTTPConnection('127.0.0.1', server.port, timeout=TIMEOUT)
        bodies = []
        for _ in range(5):
            c.request('GET', '/' if i % 2 else '/hello')
            bodies.append(c.getresponse().read())
        c.close()
        return bodies

    got = run_threads(100, client)
    expect(all(g == [b'Hello from sockpat\n' if i % 2 else b'hello, world\n'] * 5 for i, g in enumerate(got)),
           '100 keep-alive clients on 2 workers each get their 5 replies')
    rc, _, err = server.stop(signal.SIGTERM)
    expect(rc == 0, 'http_keepalive_server exits 0 on SIGTERM', rc, err)


SERVERS = ['hello_server', 'uppercase_server', 'udp_echo', 'threaded_echo_server', 'line_server',
           'async_hello_server', 'async_echo_server', 'chat_server',
           'http_keepalive_server']


def scenario_server_errors(b):
    # A port in use and a host that does not resolve are a user's mistakes: each server says so
    # in one line on stderr and exits 1, without printing it listens; so does an endpoint with a
    # port out of range. (--port out of range is a usage error: scenario example_args.)
    # Under a runner (Wine, a second or so per start on one CPU) only the errors that come from
    # the OS: the range checks are the same code everywhere.
    from_os = bool(RUNNER)
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(('127.0.0.1', 0))
        tcp.listen()
        udp.bind(('127.0.0.1', 0))
        cases = []
        for name in SERVERS:
            in_use = udp.getsockname()[1] if name == 'udp_echo' else tcp.getsockname()[1]
            for args in [['--port', str(in_use)], ['--host', 'no.such.host.invalid', '--port', '0']]:
                cases.append(bin_path(b, name) + args)
            if name == 'async_echo_server' and not RUNNER:  # SO_REUSEPORT: not on Windows
                cases.append(bin_path(b, name) + ['--port', str(in_use), '--threads', '3'])
        listen = ['127.0.0.1:%d' % tcp.getsockname()[1], '127.0.0.1:99999', '127.0.0.1:-1', 'no.such.host.invalid:4000']
        for endpoint in listen[:1] + listen[3:] if from_os else listen:
            cases.append(bin_path(b, 'mesh_chat') + ['--listen', endpoint, '--timeout', '5'])
            if not RUNNER:  # peer is a rendezvous, which Windows cannot do at all (docs/platforms.md)
                cases.append(bin_path(b, 'peer') + ['--listen', endpoint, '--connect', '127.0.0.1:9', '--timeout', '5'])
        for argv, (rc, out, err) in zip(cases, run_all(cases)):
            expect(rc == 1 and out == '' and len(err.splitlines()) == 1 and 'terminate' not in err,
                   'one line on stderr and exit 1', argv, rc, out, err)
    # A server that takes connections and never answers: async_client's bound says what timed out.
    with socket.socket() as silent:
        silent.bind(('127.0.0.1', 0))
        silent.listen()
        port = silent.getsockname()[1]
        rc, out, err = run(bin_path(b, 'async_client') + ['--port', str(port), '--clients', '2', '--timeout', '1'])
        expect(rc == 1 and out == '' and
               err == 'async_client: 2 clients of 127.0.0.1:%d not done after 1 s: Connection timed out\n' % port,
               'async_client names what timed out', rc, out, err)
    if not RUNNER:  # SO_REUSEPORT: not on Windows; peer is a rendezvous, which needs it
        port_held_by_a_copy(b)
        peer_interrupted(b)


def peer_interrupted(b):
    # Ctrl-C (or SIGTERM) while a peer waits for the other ends it as it ends a server: exit 0, quietly.
    for sig in [signal.SIGINT, signal.SIGTERM]:
        p = Server(bin_path(b, 'peer') + ['--listen', '127.0.0.1:0', '--connect', '127.0.0.1:%d' % free_port(),
                                          '--timeout', '15'])
        rc, out, err = p.stop(sig)
        expect(rc == 0 and out == '' and err == '', 'peer exits 0 and says nothing on signal %d' % sig, rc, out, err)


def port_held_by_a_copy(b):
    # A second copy of a server on the port the first holds is refused, whatever its thread count,
    # though the first shares its port among its own loops (SO_REUSEPORT); the first still serves.
    for threads in ['2', '1']:
        first = Server(bin_path(b, 'async_echo_server') + ['--port', '0', '--threads', '2'])
        rc, out, err = run(bin_path(b, 'async_echo_server') + ['--port', str(first.port), '--threads', threads])
        expect(rc == 1 and out == '' and err == 'async_echo_server: bind %s: Address already in use\n' % first.endpoint,
               'a second async_echo_server --threads %s on a port in use: one line and exit 1' % threads, rc, out, err)
        expect(echo_once(first.port, b'still mine') == b'still mine', 'the first server still serves its port')
        rc, _, err = first.stop(signal.SIGTERM)
        expect(rc == 0, 'async_echo_server exits 0 on SIGTERM', rc, err)
    other = free_port()
    first = start(bin_path(b, 'peer') + ['--listen', '127.0.0.1:0', '--connect', '127.0.0.1:%d' % other,
                                         '--timeout', '15'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    endpoint = read_listening(first)
    rc, out, err = run(bin_path(b, 'peer') + ['--listen', endpoint, '--connect', '127.0.0.1:%d' % other,
                                              '--timeout', '15'])
    expect(rc == 1 and out == '' and err == 'peer: bind %s: Address already in use\n' % endpoint,
           'a second peer on the port of the first: one line and exit 1', rc, out, err)
    first.kill()
    first.communicate(timeout=TIMEOUT)


ALL_EXAMPLES = SERVERS + ['hello_client', 'line_client', 'async_client', 'peer', 'mesh_chat']


def scenario_example_args(b):
    # Every example: --help is the usage on stdout and exit 0; a command-line mistake is an error
    # line and the usage on stderr, and exit 2, before anything runs. Under a runner (Wine: a
    # second or so per start) two examples: args.hpp is the same code on every platform.
    examples = ['hello_server', 'async_client'] if RUNNER else ALL_EXAMPLES
    cases = []
    for name in examples:
        cases.append((name, ['--help'], 0))
        for wrong in [['--bogus', '1'], ['--bogus'], ['stray'], ['-p', '0']]:
            cases.append((name, wrong, 2))
    port_takers = [n for n in examples if n not in ('peer', 'mesh_chat')]
    for name in port_takers:
        for port in ['12abc', '', '-1', '65536']:
            cases.append((name, ['--port', port], 2))
        cases.append((name, ['--port'], 2))
    for name, option, values in [('async_client', 'clients', ['-1', '0', '1x']),
                                 ('async_echo_server', 'threads', ['0', '65', 'three']),
                                 ('threaded_echo_server', 'threads', ['-1']),
                                 ('threaded_echo_server', 'max-connections', ['-1']),
                                 ('threaded_echo_server', 'idle-timeout', ['0', '1.5']),
                                 ('http_keepalive_server', 'threads', ['0', '-1']),
                                 ('line_server', 'threads', ['-1']),
                                 ('mesh_chat', 'wait-peers', ['-1']),
                                 ('mesh_chat', 'timeout', ['0', '99999999999']),
                                 ('peer', 'timeout', ['-5']),
                                 ('chat_server', 'drop-after', ['-1', '1x'])]:
        if name not in examples:
            continue
        for value in values:
            cases.append((name, ['--port', '1', '--' + option, value] if name == 'async_client' else
                          ['--' + option, value], 2))
    results = run_all([bin_path(b, name) + args for name, args, _ in cases])
    for (name, args, want), (rc, out, err) in zip(cases, results):
        if want == 0:
            expect(rc == 0 and out.startswith('usage: ' + name) and err == '', '%s --help' % name, rc, out, err)
        else:
            expect(rc == 2 and out == '' and err.startswith('error: ') and ('usage: ' + name) in err,
                   '%s %s is a usage error' % (name, ' '.join(args)), rc, out, err)
    rc, out, err = run(bin_path(b, 'hello_client') + ['--bogus'])
    expect('unknown option --bogus' in err, 'an unknown flag is named as such', err)
    # An optional option is shown in brackets: mesh_chat listens on 127.0.0.1:0 without --listen.
    rc, out, err = run(bin_path(b, 'mesh_chat') + ['--help'])
    expect(rc == 0 and out.startswith('usage: mesh_chat [--listen HOST:PORT] '), 'mesh_chat --listen is optional', out)
    # A bad number names the option, its range and what was given.
    for name, args, why in [('async_client', ['--port', '70000'], '--port: expected a number 0-65535, got 70000'),
                            ('hello_server', ['--port', 'abc'], '--port: expected a number 0-65535, got abc'),
                            ('async_echo_server', ['--threads', '0'], '--threads: expected a number 1-64, got 0')]:
        rc, out, err = run(bin_path(b, name) + args)
        expect(rc == 2 and err.startswith('error: %s\nusage: %s' % (why, name)), '%s %s' % (name, ' '.join(args)),
               rc, out, err)
    if not RUNNER:  # peer: not on Windows
        rc, out, err = run(bin_path(b, 'peer') + ['--listen', '127.0.0.1:0', '--connect', '[::1]:9'])
        expect(rc == 2 and err.startswith('error: --connect [::1]:9 and --listen 127.0.0.1:0 must be of one family')
               and 'usage: peer' in err, 'peer with --connect of another family than --listen', rc, out, err)


def read_listening(proc):
    line = proc.stdout.readline()
    expect(line.startswith('listening on '), 'prints listening first', line, proc.poll())
    return line.split()[-1]


def scenario_peer_bound_port(b):
    # --listen with port 0: the peer prints the port it got, once it listens there.
    other = free_port()
    a = start(bin_path(b, 'peer') + ['--listen', '127.0.0.1:0', '--connect', '127.0.0.1:%d' % other,
                                     '--name', 'A', '--timeout', '15'],
              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    endpoint = read_listening(a)
    port = int(endpoint.rsplit(':', 1)[1])
    expect(endpoint.startswith('127.0.0.1:') and port != 0, 'the printed port is the bound one', endpoint)
    with socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT):
        pass  # accepted: it listens (the peer closes a caller that is not its peer)
    bpeer = start(peer_argv(b, other, port, 'B'), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    check_peer(a, 'A', 'Hello from B')
    check_peer(bpeer, 'B', 'Hello from A')


def scenario_peer_localhost(b):
    # The other peer named by host name: resolved (in the family of --listen) to 127.0.0.1.
    pa, pb = free_port(), free_port()
    argv = bin_path(b, 'peer') + ['--timeout', '15']
    a = start(argv + ['--listen', '127.0.0.1:%d' % pa, '--connect', 'localhost:%d' % pb, '--name', 'A'],
              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    read_listening(a)
    bpeer = start(argv + ['--listen', '127.0.0.1:%d' % pb, '--connect', 'localhost:%d' % pa, '--name', 'B'],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    check_peer(a, 'A', 'Hello from B')
    check_peer(bpeer, 'B', 'Hello from A')


def scenario_mesh_chat_frozen(b):
    # Three processes; n2 is frozen with SIGSTOP (its sockets stay open, nothing is reset: a host
    # that hangs, a cable pulled). n0 and n1 declare it dead within the default liveness timeout
    # (5 s) and go on talking; once n2 is thawed (SIGCONT) the links come back and its line
    # reaches both. POSIX only: Windows has no SIGSTOP.
    count = 3
    procs, outs, errs, endpoints = [], [], [], []
    for i in range(count):
        argv = bin_path(b, 'mesh_chat') + ['--listen', '127.0.0.1:0', '--name', 'n%d' % i,
                                           '--wait-peers', str(count - 1), '--timeout', '15']
        if endpoints:
            argv += ['--join', endpoints[0]]
        p = start(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        endpoints.append(read_listening(p))
        outs.append(Lines(p.stdout))
        errs.append(Lines(p.stderr))
    frozen = procs[2]
    try:
        greet_all(procs, outs)
        # n2's id, from the "joined ID ENDPOINT" line n0 printed for it.
        joined_n2 = [l for l in errs[0].lines if l.startswith('joined ') and l.endswith(' ' + endpoints[2])]
        expect(len(joined_n2) == 1, 'n0 reports n2 joined, at its endpoint', errs[0].lines)
        n2 = joined_n2[0].split()[1]
        frozen_at = time.monotonic()
        frozen.send_signal(signal.SIGSTOP)
        for i in (0, 1):
            expect(errs[i].wait_for(lambda lines: 'left %s (timed out)' % n2 in lines),
                   'n%d declares the frozen n2 dead, timed out' % i, errs[i].lines)
        dead_after = time.monotonic() - frozen_at
        print('mesh_chat_frozen: n2 declared dead %.2f s after SIGSTOP (liveness_timeout 5 s)' % dead_after)
        expect(4.0 <= dead_after <= 12.0, 'n2 is declared dead after about the liveness timeout', dead_after)
        procs[0].stdin.write('while n2 sleeps\n')
        procs[0].stdin.flush()
        expect(outs[1].wait_for(lambda lines: 'n0: while n2 sleeps' in lines), 'n1 still hears n0', outs[1].lines)
        frozen.send_signal(signal.SIGCONT)
        for i in (0, 1):
            expect(errs[i].wait_for(lambda lines: sum(1 for l in lines if l.startswith('joined %s ' % n2)) == 2),
                   'n%d links the thawed n2 again' % i, errs[i].lines)
        frozen.stdin.write('thawed\n')
        frozen.stdin.flush()
        for i in (0, 1):
            expect(outs[i].wait_for(lambda lines: 'n2: thawed' in lines), 'n%d hears the thawed n2' % i,
                   outs[i].lines)
        for p in procs:
            p.stdin.close()
        for i, p in enumerate(procs):
            p.wait(TIMEOUT)
            outs[i].thread.join(TIMEOUT)
            expect(p.returncode == 0, 'mesh_chat n%d exits 0 at the end of its input' % i, p.returncode, errs[i].lines)
            for line in ('n2: thawed', 'n0: while n2 sleeps'):
                if not line.startswith('n%d:' % i) and not (i == 2 and 'sleeps' in line):
                    expect(outs[i].lines.count(line) == 1, 'n%d prints %r once' % (i, line), outs[i].lines)
    finally:
        for p in procs:
            if p.poll() is None:
                if p is frozen:
                    p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait(TIMEOUT)


def scenario_mesh_chat_localhost(b):
    # A node joins the mesh through a host name: resolved, in the family of --listen.
    argv = bin_path(b, 'mesh_chat') + ['--wait-peers', '1', '--timeout', '15']
    first = start(argv + ['--listen', '127.0.0.1:0', '--name', 'n0'], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE, text=True)
    port = int(read_listening(first).rsplit(':', 1)[1])
    second = start(argv + ['--listen', '127.0.0.1:0', '--name', 'n1', '--join', 'localhost:%d' % port],
                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    read_listening(second)
    outs = [Lines(first.stdout), Lines(second.stdout)]
    second.stdin.write('hello via localhost\n')
    second.stdin.flush()
    expect(outs[0].wait_for(lambda lines: 'n1: hello via localhost' in lines), 'n0 hears n1', outs[0].lines)
    first.stdin.write('hello back\n')
    first.stdin.flush()
    expect(outs[1].wait_for(lambda lines: 'n0: hello back' in lines), 'n1 hears n0', outs[1].lines)
    for p in (first, second):
        p.stdin.close()
    for p in (first, second):
        err = p.stderr.read()
        p.wait(TIMEOUT)
        expect(p.returncode == 0, 'mesh_chat exits 0 at the end of its input', p.returncode, err)


def chat_line(sender, k, size=1024):
    """Line k of chat client `sender`: numbered, `size` bytes with its newline, a filler of its own."""
    head = b'%d %08d ' % (sender, k)
    return head + bytes([97 + (sender * 7 + k) % 26]) * (size - len(head) - 1) + b'\n'


class Chatter:
    """A chat client on its own thread: sends `count` numbered lines, never more than `window`
    ahead of what it has read from each other sender (so it sends at a pace it reads at), and
    checks that every other sender's lines arrive whole and in order."""

    def __init__(self, port, me, senders, count, window=32, pause_after=None):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT)
        self.name = '%s:%d' % self.sock.getsockname()[:2]
        self.me, self.count, self.window = me, count, window
        self.got = {j: 0 for j in senders if j != me}
        self.pause_after = pause_after  # (lines, seconds): stop reading once, that long
        self.error = None

    def run(self, deadline):
        try:
            self._run(deadline)
        except Exception as e:  # reported by the scenario, naming the client
            self.error = '%s (client %d): %r' % (self.name, self.me, e)

    def _run(self, deadline):
        sock = self.sock
        sock.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        out, buf, sent = bytearray(), b'', 0
        while True:
            allowed = min(self.got.values(), default=self.count) + self.window
            while sent < min(self.count, allowed) and len(out) < 65536:
                out += chat_line(self.me, sent)
                sent += 1
            if sent == self.count and not out and all(n == self.count for n in self.got.values()):
                return
            left = deadline - time.monotonic()
            expect(left > 0, 'the chat ends in time', self.got, sent)
            if self.pause_after and sum(self.got.values()) >= self.pause_after[0]:
                time.sleep(self.pause_after[1])  # a reader slow for a moment: not reading is the point
                self.pause_after = None
            sel.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0))
            for _, events in sel.select(min(left, 1.0)):
                if events & selectors.EVENT_WRITE:
                    try:
                        del out[:sock.send(out)]
                    except BlockingIOError:
                        pass
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(1 << 20)
                    except BlockingIOError:
                        continue
                    expect(data, 'the server does not close a chatting client', self.got)
                    buf = self._lines(buf + data)

    def _lines(self, buf):
        start = 0
        while True:
            end = buf.find(b'\n', start) + 1
            if end == 0:
                return buf[start:]
            line = buf[start:end]
            sender = int(line[:line.index(b' ')])
            expect(sender in self.got, 'a line from another chatting client', line[:40])
            k = self.got[sender]
            expect(line == chat_line(sender, k), 'lines arrive whole and in order', sender, k, line[:40])
            self.got[sender] = k + 1
            start = end


def chat_together(server, chatters, seconds):
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=c.run, args=(deadline,)) for c in chatters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + TIMEOUT)
    expect(not any(t.is_alive() for t in threads), 'every chat client finished')
    expect(not any(c.error for c in chatters), 'every chat client got every line', *[c.error for c in chatters],
           server_log(server)[-2000:])


def server_log(server):
    """What the server has written to stderr so far. By pread: the file's offset is shared with
    the server, and a seek here would make it write over its log."""
    fd = server.stderr.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors='replace')


def wait_in_log(server, text, since=0, timeout=TIMEOUT):
    """Waits, bounded, for `text` in the server's stderr after offset `since` (a file: read again
    until it is there); returns the offset just past it."""
    deadline = time.monotonic() + timeout
    while True:
        at = server_log(server).find(text, since)
        if at >= 0:
            return at + len(text)
        expect(time.monotonic() < deadline and server.proc.poll() is None, 'the server logs %r' % text,
               server_log(server)[-2000:])
        time.sleep(0.01)


def vm_hwm_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        return int(next(l for l in f if l.startswith('VmHWM:')).split()[1])


def scenario_chat_server(b):
    # Three clients chat 50 MiB of numbered 1 KiB lines while a fourth never reads: the fourth is
    # dropped (its backlog passes the limits), the others get every line of each other, whole
    # and in order, and the server stays small. Then a client that stops reading for a moment
    # is not dropped and loses nothing.
    began = time.monotonic()
    server = Server(bin_path(b, 'chat_server') + ['--port', '0', '--drop-after', '500'])
    dead = socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT)
    dead_name = '%s:%d' % dead.getsockname()[:2]
    # Under Wine the same clients move about half as fast (16,800 of 17,470 lines each in 35 s):
    # half the volume there, still fifty times what gets the fourth client dropped.
    per_client = ((25 if RUNNER else 50) << 20) // 1024 // 3
    chatters = [Chatter(server.port, i, range(3), per_client) for i in range(3)]
    wait_in_log(server, '(4 here)')  # every line from now on goes to all four
    chat_together(server, chatters, 35)
    chatted = time.monotonic() - began
    expect(dead_name + ' dropped' in server_log(server), 'the client that never reads was dropped',
           server_log(server)[-2000:])
    dead.settimeout(TIMEOUT)
    try:
        while dead.recv(1 << 20):
            pass  # what the kernel held for it, then the end of the stream
    except ConnectionResetError:
        pass
    dead.close()
    for c in chatters:
        c.sock.close()
    mark = wait_in_log(server, '(0 here)')

    # A reader slow for a moment: it stops reading for 0.1 s while the others send, and then
    # gets every line; nobody is dropped.
    slow = [Chatter(server.port, i, range(3), 2048, window=100, pause_after=(100, 0.1) if i == 2 else None)
            for i in range(3)]
    wait_in_log(server, '(3 here)', mark)
    chat_together(server, slow, 10)
    expect('dropped' not in server_log(server)[mark:], 'a client slow for a moment is not dropped',
           server_log(server)[mark:])
    for c in slow:
        c.sock.close()
    mark = wait_in_log(server, '(0 here)', mark)

    # A client that stops reading while lines trickle in at 0.5 MB/s: once the kernel's buffers
    # for it are full (about 3 MB on Linux's loopback), its backlog passes the soft limit, and it
    # is dropped --drop-after (0.5 s) later, 1.5 s before the trickle would reach the hard limit.
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.settimeout(TIMEOUT)
    stuck.connect(('127.0.0.1', server.port))
    stuck_name = '%s:%d' % stuck.getsockname()[:2]
    talker = socket.create_connection(('127.0.0.1', server.port), timeout=TIMEOUT)
    wait_in_log(server, '(2 here)', mark)
    trickled = time.monotonic()
    for k in range(1000):  # 10 lines every 20 ms, 20 s at most
        if stuck_name + ' dropped' in server_log(server)[mark:]:
            break
        talker.sendall(b''.join(chat_line(0, 10 * k + i) for i in range(10)))
        time.sleep(0.02)  # the pace of the trickle, not a wait for anything
    trickled = time.monotonic() - trickled
    log = server_log(server)[mark:]
    expect(stuck_name + ' dropped' in log and 'soft limit' in log, 'a stuck reader is dropped by the soft limit', log)
    stuck.close()
    talker.close()
    wait_in_log(server, '(0 here)', mark)
    hwm = None
    # Not under a runner (the pid is the runner's), nor in a sanitized build (ASan's shadow
    # memory and quarantine alone pass 64 MiB).
    with open(bin_path(b, 'chat_server')[-1], 'rb') as f:
        sanitized = any(m in f.read() for m in (b'__asan_init', b'__tsan_init', b'__msan_init'))
    if sys.platform.startswith('linux') and not RUNNER and not sanitized:
        hwm = vm_hwm_kib(server.proc.pid)
        expect(hwm < 64 * 1024, "the server's peak RSS stays under 64 MiB", hwm)
    rc, _, err = server.stop(signal.SIGINT)
    expect(rc == 0, 'chat_server exits 0 on SIGINT', rc, err[-2000:])
    print('chat_server: 50 MiB chatted in %.1f s; the stuck reader dropped after %.1f s of trickle; '
          '%.1f s in all; peak RSS %s KiB' % (chatted, trickled, time.monotonic() - began, hwm))


def fail_on_purpose(b, mode):
    """The subject of scenario cleanup_on_failure: starts servers, prints their pids, then fails
    as `mode` says once the test has written a line to its standard input."""
    REPORT_STARTED.append(True)
    if not RUNNER:
        Server(bin_path(b, 'hello_server') + ['--port', '0'])
    Server(seed('server'))
    print('ready', flush=True)
    sys.stdin.readline()
    if mode == 'assert':
        expect(False, 'a failure on purpose')
    # The seed's server serves one client and there is none: it never finishes by itself.
    run(seed('server'), timeout=0.5 if mode == 'timeout' else TIMEOUT)


def scenario_fail_on_purpose_assert(b):
    fail_on_purpose(b, 'assert')


def scenario_fail_on_purpose_timeout(b):
    fail_on_purpose(b, 'timeout')


def scenario_fail_on_purpose_signal(b):
    fail_on_purpose(b, 'signal')


def scenario_cleanup_on_failure(b):
    # This script, failing on purpose in each way, ends every process it started (by pid) before
    # it exits; killed with SIGKILL, it takes them along. Each pid is watched through a pidfd,
    # opened while the process surely runs, so a reused pid cannot pass for ours.
    for mode, how in [('assert', None), ('timeout', None), ('signal', signal.SIGTERM), ('signal', signal.SIGINT),
                      ('signal', signal.SIGKILL)]:
        errors = tempfile.TemporaryFile(mode='w+')
        inner = start([sys.executable, os.path.abspath(__file__), b, 'fail_on_purpose_' + mode] + RUNNER,
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True)
        out = Lines(inner.stdout)
        watched = {}
        try:
            expect(out.wait_for(lambda lines: 'ready' in lines), 'the failing script starts its servers', out.lines)

            def watch_new():
                for line in list(out.lines):
                    pid = int(line.split()[1]) if line.startswith('started ') else None
                    if pid and pid not in watched:
                        try:
                            watched[pid] = os.pidfd_open(pid)
                        except ProcessLookupError:  # already ended, as it should (mode 'timeout' is quick)
                            watched[pid] = None
            watch_new()
            inner.stdin.write('go\n')
            inner.stdin.flush()
            if how is not None:
                # The third process is the run() the script is blocked in.
                expect(out.wait_for(lambda lines: sum(l.startswith('started ') for l in lines) == len(watched) + 1),
                       'the failing script starts the program it waits for', out.lines)
                watch_new()
                inner.send_signal(how)
            inner.wait(TIMEOUT)
            out.thread.join(TIMEOUT)
            errors.seek(0)
            err = errors.read()
            watch_new()
            expect(inner.returncode != 0, 'the script fails (%s %s)' % (mode, how), inner.returncode, err)
            if mode == 'assert':
                expect('a failure on purpose' in err, 'the script fails with the failed check', err)
            if mode == 'timeout':
                expect('TimeoutExpired' in err, 'the script fails with the timeout', err)
            started = (1 if RUNNER else 2) + (mode != 'assert')  # the servers, and the run() it waited for
            expect(len(watched) == started, 'the script reported the processes it started', out.lines)
            deadline = time.monotonic() + 10
            for pid, fd in watched.items():
                if fd is not None:
                    ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
                    expect(ready, 'pid %d, started by the script, has ended (%s %s)' % (pid, mode, how), err)
        finally:
            for fd in watched.values():
                if fd is not None:
                    try:
                        signal.pidfd_send_signal(fd, signal.SIGKILL)  # a leftover of a failed check
                    except ProcessLookupError:
                        pass
                    os.close(fd)
            errors.close()


# --- TLS (tls_echo_server, tls_client): certificates from tests/tls/make_certs.py (SOCKPAT_TLS_CERTS) ---

def tls_cert(name):
    return os.path.join(os.environ['SOCKPAT_TLS_CERTS'], name)


def tls_peer(*args):
    return [sys.executable, os.path.join(HERE, '..', 'tls', 'tls_peer.py')] + [str(a) for a in args]


def tls_server(b, *extra):
    return Server(bin_path(b, 'tls_echo_server') + ['--port', '0', '--cert', tls_cert('server.pem'),
                                                      '--key', tls_cert('server.key')] + list(extra))


def scenario_tls_echo(b):
    # tls_client and Python's ssl against tls_echo_server; a plaintext client is refused with a
    # line on the server's stderr, and the next client is served; SIGINT stops it, exit 0.
    server = tls_server(b)
    rc, out, err = run(bin_path(b, 'tls_client') + ['--port', str(server.port), '--ca', tls_cert('ca.pem'),
                                                    '--message', 'hello over TLS'])
    expect(rc == 0 and out == 'TLSv1.3 with localhost\nReceived from server: hello over TLS\n', 'tls_client output',
           rc, out, err)
    rc, out, err = run(tls_peer('client', '--port', server.port, '--ca', tls_cert('ca.pem'), '--bytes', 1 << 22))
    expect(rc == 0 and out == 'ok 4194304 TLSv1.3 -\n', 'a Python ssl client echoes 4 MiB through tls_echo_server',
           rc, out, err)
    rc, out, err = run(tls_peer('client', '--mode', 'plaintext', '--port', server.port))
    expect(rc == 0 and out == 'ok closed\n', 'a plaintext client is closed', rc, out, err)
    rc, out, err = run(bin_path(b, 'tls_client') + ['--port', str(server.port), '--host', '127.0.0.1',
                                                    '--ca', tls_cert('ca.pem'), '--message', 'again'])
    expect(rc == 0 and out.endswith('Received from server: again\n'), 'the next client is served', rc, out, err)
    rc, _, err = server.stop(signal.SIGINT)
    expect(rc == 0, 'tls_echo_server exits 0 on SIGINT', rc, err)
    expect('not TLS' in err and len(err.splitlines()) == 1, 'the plaintext client is one line on stderr', err)


def scenario_tls_client_vs_python_server(b):
    # tls_client against Python's ssl server: verified by name and CA, TLS 1.3 and 1.2, clean end both ways.
    for extra in ([], ['--max-tls12']):
        server = start(tls_peer('server', '--cert', tls_cert('server.pem'), '--key', tls_cert('server.key'), *extra),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = server.stdout.readline()
        expect(line.startswith('port '), 'the Python server prints its port', line)
        rc, out, err = run(bin_path(b, 'tls_client') + ['--port', line.split()[1], '--ca', tls_cert('ca.pem'),
                                                        '--message', 'from sockpat'])
        version = 'TLSv1.2' if extra else 'TLSv1.3'
        expect(rc == 0 and out == '%s with localhost\nReceived from server: from sockpat\n' % version,
               'tls_client output', rc, out, err)
        out, err = server.communicate(timeout=TIMEOUT)
        expect(out.startswith('ok 12 '), 'the Python server saw 12 bytes and a clean end', out, err)


def scenario_tls_refusals(b):
    # What a user sees when the server is not who it should be: one line on stderr, exit 1,
    # the reason in words. And the server's side of a refused client certificate.
    server = tls_server(b)
    cases = [
        (['--ca', tls_cert('rogue_ca.pem')], 'unable to get local issuer certificate'),
        (['--ca', tls_cert('ca.pem'), '--host', 'other.example'], None),  # does not resolve, or mismatch
        ([], 'unable to get local issuer certificate'),  # the system store does not know the test CA
    ]
    for args, reason in cases:
        rc, out, err = run(bin_path(b, 'tls_client') + ['--port', str(server.port)] + args)
        expect(rc == 1 and out == '' and len(err.splitlines()) == 1, 'one line on stderr and exit 1', args, rc, out, err)
        if reason:
            expect(reason in err, 'the reason is given', reason, err)
    rc, out, err = run(bin_path(b, 'tls_client') + ['--port', str(server.port), '--host', '127.0.0.1', '--insecure'])
    expect(rc == 0, '--insecure connects without checks', rc, out, err)
    rc, _, err = server.stop(signal.SIGTERM)
    expect(rc == 0, 'tls_echo_server exits 0 on SIGTERM', rc, err)
    for name in ('expired', 'other'):
        server = Server(bin_path(b, 'tls_echo_server') + ['--port', '0', '--cert', tls_cert(name + '.pem'),
                                                          '--key', tls_cert(name + '.key')])
        rc, out, err = run(bin_path(b, 'tls_client') + ['--port', str(server.port), '--ca', tls_cert('ca.pem')])
        want = 'certificate has expired' if name == 'expired' else 'hostname mismatch'
        expect(rc == 1 and want in err, 'the client says why: ' + want, rc, out, err)
        rc, _, err = server.stop(signal.SIGINT)
        expect(rc == 0, 'tls_echo_server exits 0 on SIGINT', rc, err)
    # A server that requires client certificates: without one the client is refused, with one served.
    server = tls_server(b, '--ca', tls_cert('ca.pem'))
    rc, out, err = run(bin_path(b, 'tls_client') + ['--port', str(server.port), '--ca', tls_cert('ca.pem')])
    expect(rc == 1 and 'certificate required' in err, 'no client certificate: refused', rc, out, err)
    rc, out, err = run(bin_path(b, 'tls_client') + ['--port', str(server.port), '--ca', tls_cert('ca.pem'),
                                                    '--cert', tls_cert('client.pem'), '--key', tls_cert('client.key'),
                                                    '--message', 'mine'])
    expect(rc == 0 and out.endswith('Received from server: mine\n'), 'with a client certificate: served', rc, out, err)
    rc, _, err = server.stop(signal.SIGINT)
    expect(rc == 0 and 'peer did not return a certificate' in err, 'the server names the refusal', rc, err)
    # Command-line mistakes: usage errors (exit 2), a missing file (exit 1, one line).
    rc, out, err = run(bin_path(b, 'tls_echo_server') + ['--port', '0'])
    expect(rc == 2 and 'usage' in err, 'tls_echo_server without --cert is a usage error', rc, err)
    rc, out, err = run(bin_path(b, 'tls_echo_server') + ['--port', '0', '--cert', '/nonexistent.pem', '--key', 'x'])
    expect(rc == 1 and out == '' and len(err.splitlines()) == 1 and '/nonexistent.pem' in err,
           'a missing certificate file is one line and exit 1', rc, out, err)


def main():
    bin_dir, name = sys.argv[1], sys.argv[2]
    RUNNER.extend(a for a in sys.argv[3:] if a)
    for name_of_signal in ('SIGTERM', 'SIGINT', 'SIGHUP'):  # Windows has no SIGHUP
        if hasattr(signal, name_of_signal):
            signal.signal(getattr(signal, name_of_signal), stop_on_signal)
    try:
        globals()['scenario_' + name](bin_dir)
    finally:
        end_all()
    print('scenario %s: passed' % name)


if __name__ == '__main__':
    main()
