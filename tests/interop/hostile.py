"""Hostile clients, written in Python, against sockpat's example servers.

run_example.py's hostile_* scenarios start a server and call attack(): garbage bytes, a reset in
the middle of a message (SO_LINGER 0), a half-close that still expects its answer, a client that
dribbles one byte at a time (slowloris, for a bounded second), and a burst of connections; after
each, a well-behaved client must get its right answer, and the server process must be alive.
For a server that serves clients concurrently, the well-behaved client is also served while the
dribbler (and, for the async servers, the burst) is still connected. Every wait is bounded (socket timeouts, counts).
"""
import random
import socket
import struct
import threading
import time

TIMEOUT = 20
GARBAGE = random.Random(7).randbytes(64 * 1024)  # the same bytes on every run
BURST = 100


def recv_all(s):
    got = b''
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return got
        got += chunk


def connect(port):
    return socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT)


def reset(s):
    """Closes with SO_LINGER {on, 0}: the peer gets RST, not FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    s.close()


# What a well-behaved client sends (whole request) and must get back, per server.
class Hello:
    request, answer, half_close_ok = b'Hello, server!', b'Hello, client!', True

    @staticmethod
    def talk(port):
        with connect(port) as s:
            s.sendall(Hello.request)
            return recv_all(s)  # the server answers once and closes


class Uppercase:
    request, answer, half_close_ok = b'well behaved, after all', b'WELL BEHAVED, AFTER ALL', True

    @staticmethod
    def talk(port):
        with connect(port) as s:
            s.sendall(Uppercase.request)
            s.shutdown(socket.SHUT_WR)
            return recv_all(s)


class Echo:
    request = answer = b'echo me, byte for byte \x00\xff' * 100
    half_close_ok = True

    @staticmethod
    def talk(port):
        with connect(port) as s:
            s.sendall(Echo.request)
            s.shutdown(socket.SHUT_WR)
            return recv_all(s)


class Line:
    request, answer, half_close_ok = b'SET hostile survived\nGET hostile\n', b'OK\nVALUE survived\n', True

    @staticmethod
    def talk(port):
        with connect(port) as s:
            s.sendall(Line.request)
            s.shutdown(socket.SHUT_WR)  # line_server answers every line, then sees the end and closes
            return recv_all(s)


class Http:
    request = b'GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
    answer = (b'HTTP/1.1 200 OK\r\nServer: sockpat\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n'
              b'Connection: close\r\n\r\nhello, world\n')
    half_close_ok = True

    @staticmethod
    def talk(port):
        with connect(port) as s:
            s.sendall(Http.request)
            return recv_all(s)  # Connection: close: the server answers, then closes


def well_behaved(port, proto, when):
    got = proto.talk(port)
    if got != proto.answer:
        raise AssertionError('%s: a well-behaved client got %r, expected %r' % (when, got[:80], proto.answer[:80]))


def attack(port, proto, alive, during_dribble, during_burst):
    """Runs every hostile client against the server on `port`; `alive()` says whether its process
    runs. during_dribble / during_burst: the server must also serve while those are connected."""
    def after(what):
        if not alive():
            raise AssertionError('the server died after ' + what)
        well_behaved(port, proto, 'after ' + what)

    well_behaved(port, proto, 'before any hostile client')

    # Garbage: 64 kB of random bytes, then gone without reading whatever the server answered.
    with connect(port) as s:
        try:
            s.sendall(GARBAGE)
        except OSError:
            pass  # the server may close on garbage before it is all sent: that is its right
    after('garbage bytes')

    # A reset in the middle of a message: half of a request, then RST.
    s = connect(port)
    s.sendall(proto.request[:len(proto.request) // 2])
    time.sleep(0.05)  # not a synchronisation: gives the server a chance to be mid-read when RST lands
    reset(s)
    after('a reset mid-message')

    # A half-close: the whole request, SHUT_WR, and the answer must still come.
    with connect(port) as s:
        s.sendall(proto.request)
        s.shutdown(socket.SHUT_WR)
        got = recv_all(s)
        if got != proto.answer:
            raise AssertionError('a half-closed client got %r, expected %r' % (got[:80], proto.answer[:80]))
    after('a half-close')

    # Slowloris, bounded: one byte every 50 ms for about a second, then a plain close.
    dribbler = connect(port)
    stop = threading.Event()
    errors = []

    def dribble():
        try:
            for i in range(20):
                if stop.is_set():
                    break
                dribbler.sendall(proto.request[i % len(proto.request):][:1])
                time.sleep(0.05)
        except OSError:
            pass  # a server may close on a dribbler (hello_server answers its first byte and closes)
        except Exception as e:  # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=dribble)
    t.start()
    try:
        if during_dribble:
            well_behaved(port, proto, 'while a client dribbles')
    finally:
        t.join(TIMEOUT)
        stop.set()
        dribbler.close()
    if t.is_alive() or errors:
        raise AssertionError('the dribbling client failed: %r' % errors)
    after('a dribbling client')

    # A burst of connections, held open, then gone: half with FIN, half with RST.
    burst = []
    try:
        for _ in range(BURST):
            burst.append(connect(port))
        if during_burst:
            well_behaved(port, proto, 'during a burst of %d idle connections' % BURST)
    finally:
        for i, s in enumerate(burst):
            if i % 2:
                reset(s)
            else:
                s.close()
    if len(burst) != BURST:
        raise AssertionError('only %d of %d burst connections were made' % (len(burst), BURST))
    after('a burst of %d connections' % BURST)
