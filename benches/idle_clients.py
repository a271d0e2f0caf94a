#!/usr/bin/env python3
"""Opens N TLS keep-alive connections, sends one request on each, reads the whole response,
then keeps them all open and idle until stdin closes.

Usage: idle_clients.py HOST PORT SNI PATH N
Prints "ready <n>" on stdout once all connections are idle (or "failed <n> <reason>").
"""
import socket
import ssl
import sys


def read_response(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return head.split(b"\r\n")[0]


def main():
    host, port, sni, path, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    request = f"GET {path} HTTP/1.1\r\nHost: {sni}\r\nUser-Agent: idle-clients\r\n\r\n".encode()
    conns = []
    for i in range(count):
        try:
            raw = socket.create_connection((host, port))
            tls = ctx.wrap_socket(raw, server_hostname=sni)
            tls.sendall(request)
            status = read_response(tls)
            if b" 200 " not in status:
                raise ConnectionError(status.decode(errors="replace"))
        except Exception as e:  # noqa: BLE001 - reported to the caller
            print(f"failed {i} {e}", flush=True)
            return
        conns.append(tls)
    print(f"ready {len(conns)}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
