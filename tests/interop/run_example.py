"""Runs sockpat's examples as real processes over loopback and checks what they print.

Usage: run_example.py BIN_DIR SCENARIO [RUNNER...]. Every wait is bounded; servers are stopped
with SIGINT or SIGTERM and must exit 0, which proves the clean stop the examples promise.

RUNNER is a command that runs the example binaries, such as Wine's loader for a Windows
cross-build (CMake passes CMAKE_CROSSCOMPILING_EMULATOR). Wine turns a SIGINT it receives into
the console's CTRL_C_EVENT, which sockpat::SignalStop handles; Windows has no SIGTERM for a
console program, so under a runner every stop is sent as SIGINT.
"""
import os
import signal
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 20
RUNNER = []


class Server:
    """A process whose first line of output is 'listening on HOST:PORT'."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith('listening on '):
            self.proc.kill()
            raise AssertionError('expected "listening on HOST:PORT", got %r (stderr: %r)'
                                 % (line, self.proc.stderr.read()))
        self.endpoint = line.split()[-1]
        self.port = int(self.endpoint.rsplit(':', 1)[1])

    def stop(self, sig=signal.SIGINT):
        self.proc.send_signal(signal.SIGINT if RUNNER else sig)
        return self.finish()

    def finish(self):
        out, err = self.proc.communicate(timeout=TIMEOUT)
        return self.proc.returncode, out, err


def run(argv):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    return done.returncode, done.stdout, done.stderr


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
        p1 = subprocess.Popen(peer_argv(b, first[1], first[2], first[0]), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        if order != 'together':
            line = p1.stdout.readline()  # the first peer is up (and dialing) before the second starts
            expect(line.startswith('listening on '), 'peer prints listening first', line)
        p2 = subprocess.Popen(peer_argv(b, second[1], second[2], second[0]), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        check_peer(p1, first[0], 'Hello from ' + second[0])
        check_peer(p2, second[0], 'Hello from ' + first[0])


def scenario_peer_vs_seed_peer(b):
    # The seed's Python peer never listens, so it must start second: it dials this peer.
    mine, seeds = free_port(), free_port()
    p = subprocess.Popen(peer_argv(b, mine, seeds, 'Cpp'), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    line = p.stdout.readline()
    expect(line.startswith('listening on '), 'peer prints listening first', line)
    rc, out, err = run(seed('peer', seeds, mine))
    expect(rc == 0, "the seed's peer finishes", rc, out, err)
    check_peer(p, 'Cpp', 'Hello from Peer 1')


def main():
    bin_dir, name = sys.argv[1], sys.argv[2]
    RUNNER.extend(a for a in sys.argv[3:] if a)
    globals()['scenario_' + name](bin_dir)
    print('scenario %s: passed' % name)


if __name__ == '__main__':
    main()
