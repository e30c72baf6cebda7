"""A client that vanishes without FIN or RST: its packets just stop. The server must drop that
connection by its idle timeout and go on serving fresh clients, for the threaded server
(Server<Tcp>, ServerOptions::idle_timeout) and the async one (start_server, reads under wait_for).

Usage: vanish.py VANISH_SERVER_BINARY [RUNNER...]

Two network namespaces made for this run (names carry the pid) joined by a veth pair:
vanish_server listens in one, a Python client connects from the other, is echoed once, then its
veth end is set down while the client process still holds its socket, so nothing more crosses:
no FIN, no RST. Fresh clients are served meanwhile (from the server's namespace) and after the
drop (from the client's namespace, its link up again). The namespaces are always removed.
Without the privilege to make namespaces (not root, no `ip`), exits 77: CTest's SKIP_RETURN_CODE
(1, a failure, when SOCKPAT_REQUIRE_NETNS=1, as .ci/run sets).
"""
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

SKIP = 77
IDLE_MS = 2000
TIMEOUT = 20
PID = os.getpid()
NS_SERVER = 'sockpat-vs-%d' % PID
NS_CLIENT = 'sockpat-vc-%d' % PID
VETH_SERVER = 'spvs%d' % PID  # interface names have at most 15 characters
VETH_CLIENT = 'spvc%d' % PID
ADDR_SERVER = '10.211.0.1'
ADDR_CLIENT = '10.211.0.2'
started = []  # processes this script started: killed by pid on the way out

CLIENT = r'''
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b'before vanishing')
got = b''
while len(got) < 16:
    chunk = s.recv(64)
    if not chunk:
        break
    got += chunk
print('echoed' if got == b'before vanishing' else 'wrong echo %r' % got, flush=True)
sys.stdin.read()  # holds the socket open until the driver ends this process
'''

ECHO_ONCE = r'''
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as s:
    s.sendall(sys.argv[3].encode())
    s.shutdown(socket.SHUT_WR)
    got = b''
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
print(got.decode())
'''


def sh(*argv, check=True):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=TIMEOUT, check=check)


def cleanup():
    for p in started:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
    for ns in (NS_SERVER, NS_CLIENT):
        subprocess.run(['ip', 'netns', 'del', ns], capture_output=True, timeout=TIMEOUT)


def on_signal(signum, _frame):
    cleanup()
    sys.exit(128 + signum)


def expect(cond, what, *details):
    if not cond:
        raise AssertionError(what + ''.join('\n  ' + str(d) for d in details))


def setup():
    sh('ip', 'netns', 'add', NS_SERVER)
    sh('ip', 'netns', 'add', NS_CLIENT)
    sh('ip', 'link', 'add', VETH_SERVER, 'netns', NS_SERVER, 'type', 'veth', 'peer', 'name', VETH_CLIENT,
       'netns', NS_CLIENT)
    for ns, dev, addr in ((NS_SERVER, VETH_SERVER, ADDR_SERVER), (NS_CLIENT, VETH_CLIENT, ADDR_CLIENT)):
        sh('ip', '-n', ns, 'addr', 'add', addr + '/30', 'dev', dev)
        sh('ip', '-n', ns, 'link', 'set', 'lo', 'up')
        sh('ip', '-n', ns, 'link', 'set', dev, 'up')


def in_ns(ns, argv, **kw):
    p = subprocess.Popen(['ip', 'netns', 'exec', ns] + argv, text=True, **kw)
    started.append(p)
    return p


def echo_from(ns, port, text):
    p = in_ns(ns, [sys.executable, '-c', ECHO_ONCE, ADDR_SERVER, str(port), text], stdout=subprocess.PIPE,
              stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=TIMEOUT)
    expect(p.returncode == 0 and out == text + '\n', 'a fresh client from %s is echoed' % ns, p.returncode, out, err)


class Lines:
    """The lines a process prints, read on a thread of their own so that every wait is bounded."""

    def __init__(self, proc):
        self.queue = queue.Queue()
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)

    def next(self, deadline):
        """The next line, or None at end of output or once `deadline` (time.monotonic) passes."""
        try:
            return self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None


def run_mode(server_bin, runner, mode):
    server = in_ns(NS_SERVER, runner + [server_bin, '--mode', mode, '--host', ADDR_SERVER, '--port', '0',
                                        '--idle-ms', str(IDLE_MS)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    server_lines = Lines(server)
    line = server_lines.next(time.monotonic() + TIMEOUT)
    expect(line is not None and line.startswith('listening on '), mode + ': the server prints listening first', line)
    port = int(line.split()[-1].rsplit(':', 1)[1])

    client = in_ns(NS_CLIENT, [sys.executable, '-c', CLIENT, ADDR_SERVER, str(port)], stdin=subprocess.PIPE,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = Lines(client).next(time.monotonic() + TIMEOUT)
    expect(line == 'echoed\n', mode + ': the client is echoed before it vanishes', line)
    # The client's end goes dark: its process and socket live on, but no packet crosses any more.
    sh('ip', '-n', NS_CLIENT, 'link', 'set', VETH_CLIENT, 'down')
    vanished = time.monotonic()

    echo_from(NS_SERVER, port, 'served while a client hangs')  # the server is not stuck on the dark one
    # Lines for other clients (the one served meanwhile ends cleanly) may come first.
    line = ''
    while line is not None and not line.startswith('closed %s:' % ADDR_CLIENT):
        line = server_lines.next(vanished + IDLE_MS / 1000 + 10)
    waited = time.monotonic() - vanished
    expect(line is not None, mode + ': the server drops the vanished client within idle timeout + 10 s', waited)
    expect(line.startswith('closed %s:' % ADDR_CLIENT) and line.rstrip().endswith(': timed_out'),
           mode + ': the vanished client is dropped by the idle timeout', line)
    idle_ms = int(line.split(' after ')[1].split(' ms')[0])
    expect(IDLE_MS * 0.9 <= idle_ms <= IDLE_MS + 5000, mode + ': dropped after about the idle timeout', idle_ms)
    sh('ip', '-n', NS_CLIENT, 'link', 'set', VETH_CLIENT, 'up')
    echo_from(NS_CLIENT, port, 'a fresh client after the drop')

    client.kill()
    client.wait(TIMEOUT)
    server.send_signal(signal.SIGTERM)
    server.wait(TIMEOUT)
    err = server.stderr.read()
    expect(server.returncode == 0, mode + ': the server exits 0 on SIGTERM', server.returncode, err)
    print('%s: vanished client dropped after %d ms (idle timeout %d ms); fresh clients served' % (mode, idle_ms, IDLE_MS))


def main():
    server_bin = sys.argv[1]
    runner = [a for a in sys.argv[2:] if a]
    # .ci/run sets SOCKPAT_REQUIRE_NETNS=1: there it runs as root, and a skip would hide a failure.
    required = os.environ.get('SOCKPAT_REQUIRE_NETNS') == '1'
    skip, word = (1, 'FAILED (SOCKPAT_REQUIRE_NETNS=1)') if required else (SKIP, 'SKIPPED')
    if os.name != 'posix' or shutil.which('ip') is None:
        print(word + ': needs Linux network namespaces and iproute2')
        return skip
    if os.geteuid() != 0:
        print(word + ': creating network namespaces needs root (CAP_NET_ADMIN); .ci/run runs as root')
        return skip
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        try:
            setup()
        except subprocess.CalledProcessError as e:
            print(word + ': cannot create network namespaces here: %s' % (e.stderr or e).strip())
            return skip
        for mode in ('threaded', 'async'):
            run_mode(server_bin, runner, mode)
    finally:
        cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main())
