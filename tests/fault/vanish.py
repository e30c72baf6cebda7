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
import queue
import signal
import subprocess
import sys
import threading
import time

import netns  # this folder: the namespaces, the skip rule
from netns import TIMEOUT, expect, started

IDLE_MS = 2000
PAIR = netns.VethPair.for_this_run('v', '10.211.0')
NS_SERVER, NS_CLIENT = PAIR.names
ADDR_SERVER, ADDR_CLIENT = PAIR.addresses

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
    PAIR.set_link(1, up=False)
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
    PAIR.set_link(1, up=True)
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
    def both_modes():
        for mode in ('threaded', 'async'):
            run_mode(server_bin, runner, mode)

    return netns.run_scenario(PAIR, both_modes)


if __name__ == '__main__':
    sys.exit(main())
