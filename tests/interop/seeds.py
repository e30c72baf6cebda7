"""The seed programs of ../shared/seeds, kept as they are but for the port.

The seeds use fixed ports (1234, 5000); tests never do, so each server here binds
port 0 and prints "listening on HOST:PORT", and each client takes the port as an
argument. The socket calls and their order are the seeds' own, flaws included
(one recv(1024) taken as the whole message), because these are the programs a
new user will try sockpat against.

Usage: seeds.py client PORT | server | upper_server | peer LOCAL_PORT REMOTE_PORT
             | asyncio_server | asyncio_echo_server | asyncio_clients PORT N [EXPECT]
"""
import asyncio
import signal
import socket
import sys


def client(port):
    # Seed 000: client()
    client_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server_address = ('localhost', port)
    client_socket.connect(server_address)
    message = 'Hello, server!'
    client_socket.sendall(message.encode())
    data = client_socket.recv(1024)
    print('Received from server:', data.decode())
    client_socket.close()


def server():
    # Seed 000: server()
    server_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server_address = ('localhost', 0)
    server_socket.bind(server_address)
    server_socket.listen(1)
    print('listening on %s:%d' % server_socket.getsockname(), flush=True)
    client_socket, client_address = server_socket.accept()
    data = client_socket.recv(1024)
    print('Received from client:', data.decode(), flush=True)
    response = 'Hello, client!'
    client_socket.sendall(response.encode())
    client_socket.close()
    server_socket.close()


def upper_server():
    # Seed 003: the upper-casing server
    server_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server_socket.bind(('localhost', 0))
    server_socket.listen(1)
    print('listening on %s:%d' % server_socket.getsockname(), flush=True)
    client_socket, client_address = server_socket.accept()
    data = client_socket.recv(1024).decode()
    processed_data = data.upper()
    client_socket.send(processed_data.encode())
    client_socket.close()
    server_socket.close()


async def handle_client(reader, writer):
    # Seed 000: the asyncio server's handler, as it is
    data = await reader.read(1024)
    message = data.decode()

    response = 'Hello, client!'
    writer.write(response.encode())
    await writer.drain()

    writer.close()


async def echo_client(reader, writer):
    # An asyncio echo server's handler: every byte back until the client half-closes.
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    writer.close()


async def serve_until_signal(handler):
    # Seed 000's serve(), with port 0 and the stop on SIGINT/SIGTERM that tests need.
    server = await asyncio.start_server(handler, 'localhost', 0)
    print('listening on %s:%d' % server.sockets[0].getsockname()[:2], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


async def asyncio_clients(port, count, expect):
    # Many asyncio clients at once, each checking its answer; the exit status says if all did.
    # With EXPECT (a hello server) each sends one short message, as the seed's client does;
    # without it (an echo server) messages up to 12 kB, then a half-close.
    async def one(i):
        padding = 'x' * (i % 5 * 3000) if expect is None else ''
        message = ('asyncio client %d ' % i + padding).encode()
        reader, writer = await asyncio.open_connection('127.0.0.1', port)
        writer.write(message)
        await writer.drain()
        if expect is None:
            writer.write_eof()
        answer = await reader.read()
        writer.close()
        return answer == (expect.encode() if expect is not None else message)
    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), 30)
    print('%d of %d asyncio clients got the right answer' % (sum(results), count))
    return all(results)


def peer(local_port, remote_port):
    # Seed 003: the peer (it binds its own port, then connects; it never listens)
    peer_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    peer_socket.bind(('localhost', local_port))
    peer_socket.connect(('localhost', remote_port))
    peer_socket.send('Hello from Peer 1'.encode())
    data = peer_socket.recv(1024).decode()
    processed_data = data.upper()
    peer_socket.send(processed_data.encode())
    peer_socket.close()


if __name__ == '__main__':
    what = sys.argv[1]
    if what == 'client':
        client(int(sys.argv[2]))
    elif what == 'server':
        server()
    elif what == 'upper_server':
        upper_server()
    elif what == 'asyncio_server':
        asyncio.run(serve_until_signal(handle_client))
    elif what == 'asyncio_echo_server':
        asyncio.run(serve_until_signal(echo_client))
    elif what == 'asyncio_clients':
        expect = sys.argv[4] if len(sys.argv) > 4 else None
        sys.exit(0 if asyncio.run(asyncio_clients(int(sys.argv[2]), int(sys.argv[3]), expect)) else 1)
    elif what == 'peer':
        peer(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit('unknown seed program ' + what)
