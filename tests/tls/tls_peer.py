#!/usr/bin/env python3
"""A Python `ssl` peer for the TLS tests: a server or a client that no sockpat code wrote.

usage:
  tls_peer.py server --cert F --key F [--ca F] [--alpn P,Q] [--max-tls12] [--mode echo|truncate] [--report-sni]
      listens on 127.0.0.1 port 0, prints "port N", serves one client, prints "ok ..." or "error ...";
      with --report-sni, first "sni NAME" once the handshake is done (NAME: the client's SNI, or -)
  tls_peer.py client --port N --ca F [--host H] [--cert F --key F] [--alpn P,Q] [--bytes N]
                     [--mode echo|plaintext|stall]
      prints "ok ..." or "error ..."

Every socket call has a timeout; the peer exits within --timeout seconds (default 20) whatever happens.
"""
import argparse
import hashlib
import socket
import ssl
import sys
import time


def say(*words):
    print(*words, flush=True)


def serve(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    if args.ca:
        ctx.load_verify_locations(args.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    if args.alpn:
        ctx.set_alpn_protocols(args.alpn.split(","))
    if args.max_tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    sni = []
    if args.report_sni:
        ctx.sni_callback = lambda _sock, name, _ctx: sni.append(name)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(args.timeout)
        say("port", listener.getsockname()[1])
        raw, _ = listener.accept()
        raw.settimeout(args.timeout)
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            say("error", e)
            return
        if args.report_sni:
            say("sni", (sni[0] if sni and sni[0] is not None else "-"))
        if args.mode == "truncate":
            conn.sendall(b"partial")
            conn.shutdown(socket.SHUT_RDWR)  # SSLSocket.shutdown ends TCP only: no close_notify
            conn.close()
            say("ok truncated")
            return
        total = 0
        digest = hashlib.sha256()
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break  # close_notify
                total += len(data)
                digest.update(data)
                conn.sendall(data)
            alpn = conn.selected_alpn_protocol() or "-"
            conn.unwrap()
            say("ok", total, digest.hexdigest(), alpn)
        except (ssl.SSLError, OSError) as e:
            say("error", e)
        finally:
            raw.close()


def client(args):
    host = args.host or "localhost"
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
    if args.mode == "plaintext":
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = raw.recv(4096)  # the server closes without answering in TLS or plaintext
        say("ok closed" if not data else "error got " + repr(data[:40]))
        return
    if args.mode == "stall":
        # The first bytes of a ClientHello record header, then silence: the server must drop us.
        raw.sendall(b"\x16\x03\x01\x02\x00")
        start = time.monotonic()
        try:
            data = raw.recv(4096)
        except ConnectionResetError:
            data = b""
        say("ok dropped after %.3f" % (time.monotonic() - start) if not data else "error got data")
        return
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(args.ca)
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    if args.alpn:
        ctx.set_alpn_protocols(args.alpn.split(","))
    try:
        conn = ctx.wrap_socket(raw, server_hostname=host)
        payload = bytes((i * 7 + 3) % 251 for i in range(min(args.bytes, 1 << 16)))
        sent = 0
        back = bytearray()
        while sent < args.bytes:
            chunk = payload[: min(len(payload), args.bytes - sent)]
            conn.sendall(chunk)
            sent += len(chunk)
            want = len(chunk)
            while want:
                data = conn.recv(want)
                if not data:
                    raise OSError("the server ended the stream early")
                back += data
                want -= len(data)
            if back != chunk:
                raise OSError("the echo differs")
            back.clear()
        agreed = (conn.version(), conn.selected_alpn_protocol() or "-")
        conn.unwrap()  # sends close_notify, waits for the server's
        say("ok", sent, *agreed)
    except (ssl.SSLError, OSError) as e:
        say("error", e)
    finally:
        raw.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--ca")
    p.add_argument("--alpn")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--bytes", type=int, default=1 << 20)
    p.add_argument("--mode", default="echo")
    p.add_argument("--max-tls12", action="store_true")
    p.add_argument("--report-sni", action="store_true")
    p.add_argument("--timeout", type=float, default=20)
    args = p.parse_args()
    try:
        serve(args) if args.role == "server" else client(args)
    except Exception as e:  # one line for the test to show
        say("error", type(e).__name__, e)
        sys.exit(1)


if __name__ == "__main__":
    main()
