"""The seed programs of ../shared/seeds, kept as they are but for the port.

The seeds use fixed ports (1234, 5000); tests never do, so each server here binds
port 0 and prints "listening on HOST:PORT", and each client takes the port as an
argument. The socket calls and their order are the seeds' own, flaws included
(one recv(1024) taken as the whole message), because these are the programs a
new user will try sockpat against.

Usage: seeds.py client PORT | server | upper_server | peer LOCAL_PORT REMOTE_PORT
"""
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
    elif what == 'peer':
        peer(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit('unknown seed program ' + what)
