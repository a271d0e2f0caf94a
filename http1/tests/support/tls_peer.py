#!/usr/bin/env python3
"""An independent TLS 1.3 peer for Gatehouse's record-layer interop tests.

Gatehouse lets rustls do the handshake and then runs TLS 1.3 application traffic on its own
record layer. These tests need the other end to be a different implementation, so this script
is OpenSSL driven through Python's ``ssl`` module (standard library only). Only TLS 1.3 is
offered (``minimum_version = TLSv1_3``); everything listens on / connects to 127.0.0.1.

Usage:
  tls_peer.py server --cert PEM --key PEM [--client-ca PEM]
  tls_peer.py http   --cert PEM --key PEM --body-bytes N --end close_notify|cut
  tls_peer.py client --port P --ca PEM [--name localhost] [--cert PEM --key PEM] --lines LINE [LINE ...]
Every mode also takes (after the mode name) --timeout SECS (default 30: accept, handshake,
reads, writes) and --close-wait SECS (default 5: how long to wait for the peer's answer after
sending close_notify).

Stdout protocol, one line per event, flushed at once:
  PORT <n>                  server/http: listening, connect now
  CIPHER <name>             handshake done (ssl.SSLSocket.cipher()[0])
  REQUEST <request line>    http: request head read
  REPLY <line>              client: one reply line, without its "\\n"
  PEER_CLOSE <how>          how the peer ended its side: close_notify | cut (TCP EOF without
                            close_notify) | reset | timeout | error <text>
  ERROR <Type>: <text>      any TLS/socket failure; exit status 1

server mode, for each received line L (the trailing "\\n", and a "\\r" before it, stripped):
  bye        send close_notify (unwrap()), wait up to --close-wait for the peer's, print
             PEER_CLOSE, close, exit 0
  cut        close TCP with no close_notify, exit 0
  big N      reply "x" * N + "\\n"
  otherwise  reply "echo: " + L + "\\n"
  If the client ends first: close_notify -> PEER_CLOSE close_notify, answer with ours, exit 0;
  TCP EOF without it -> PEER_CLOSE cut, close, exit 0.

http mode: read one request head (to CRLFCRLF), answer 200 with "Connection: close" and a
close-delimited body of N bytes of b"a" (no Content-Length, not chunked), then end with
close_notify (followed by PEER_CLOSE) or cut. Exit 0.

client mode: send each line plus "\\n", read one reply line per line, then close_notify, print
PEER_CLOSE and exit 0 (whatever the server answered to close_notify).
"""

import argparse
import socket
import ssl
import sys


def emit(*parts):
    print(*parts, flush=True)


def fail(exc):
    emit(f"ERROR {type(exc).__name__}: {exc}")
    return 1


def text(data):
    return data.decode("utf-8", "backslashreplace")


def server_context(cert, key, client_ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def accept_tls(ctx, timeout):
    """Bind 127.0.0.1:0, print PORT, accept one connection and do the server handshake."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(timeout)
    emit("PORT", listener.getsockname()[1])
    try:
        conn, _ = listener.accept()
    finally:
        listener.close()
    conn.settimeout(timeout)
    # suppress_ragged_eofs=False: a TCP EOF without close_notify raises SSLEOFError instead of
    # looking like a clean end, so the two can be told apart.
    tls = ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False)
    emit("CIPHER", tls.cipher()[0])
    return tls


class LineReader:
    def __init__(self, tls):
        self.tls = tls
        self.buf = b""

    def readline(self):
        """Next line without its "\\n"; None once the peer sent close_notify (a partial last line
        is dropped). A TCP EOF without close_notify raises ssl.SSLEOFError."""
        while b"\n" not in self.buf:
            data = self.tls.recv(65536)
            if not data:
                return None
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line


def close_notify(tls, wait):
    """Send our close_notify with unwrap(), give the peer `wait` seconds to answer with its
    own, close the socket and return how the peer ended (for PEER_CLOSE)."""
    tls.settimeout(wait)
    try:
        tls.unwrap()  # SSL_shutdown: writes close_notify, then reads until the peer's arrives
        how = "close_notify"
    except ssl.SSLEOFError:
        how = "cut"
    except (ConnectionResetError, BrokenPipeError):
        how = "reset"
    except TimeoutError:
        how = "timeout"
    except (ssl.SSLError, OSError) as exc:
        how = f"error {type(exc).__name__}: {exc}"
    tls.close()
    return how


def cut(tls):
    """End the connection at the TCP level with no close_notify.

    CPython never calls SSL_shutdown() from close(), but rather than rely on that, the file
    descriptor is detached from the SSLSocket (the OpenSSL object never touches it again; it
    is freed later with SSL_free, which writes nothing) and closed as a plain socket: FIN, no
    alert. unwrap() is what would send close_notify, and it is never called here."""
    raw = socket.socket(fileno=tls.detach())
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # the peer may already be gone
    raw.close()


def run_server(args):
    try:
        ctx = server_context(args.cert, args.key, args.client_ca)
        tls = accept_tls(ctx, args.timeout)
    except (ssl.SSLError, OSError) as exc:
        return fail(exc)
    reader = LineReader(tls)
    while True:
        try:
            line = reader.readline()
        except ssl.SSLEOFError:
            emit("PEER_CLOSE cut")
            tls.close()
            return 0
        except (ssl.SSLError, OSError) as exc:
            return fail(exc)
        if line is None:
            emit("PEER_CLOSE close_notify")
            close_notify(tls, args.close_wait)  # answers with ours; returns at once
            return 0
        if line.endswith(b"\r"):
            line = line[:-1]
        if line == b"bye":
            emit("PEER_CLOSE", close_notify(tls, args.close_wait))
            return 0
        if line == b"cut":
            cut(tls)
            return 0
        if line.startswith(b"big "):
            reply = b"x" * int(line[4:]) + b"\n"
        else:
            reply = b"echo: " + line + b"\n"
        try:
            tls.sendall(reply)
        except (ssl.SSLError, OSError) as exc:
            return fail(exc)


def run_http(args):
    try:
        ctx = server_context(args.cert, args.key)
        tls = accept_tls(ctx, args.timeout)
        head = b""
        while b"\r\n\r\n" not in head:
            data = tls.recv(65536)
            if not data:
                raise ConnectionError("close_notify before the end of the request head")
            head += data
        emit("REQUEST", text(head.split(b"\r\n", 1)[0]))
        tls.sendall(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n"
        )
        left = args.body_bytes
        chunk = b"a" * 65536
        while left > 0:
            n = min(left, len(chunk))
            tls.sendall(chunk[:n])
            left -= n
    except (ssl.SSLError, OSError) as exc:
        return fail(exc)
    if args.end == "cut":
        cut(tls)
    else:
        emit("PEER_CLOSE", close_notify(tls, args.close_wait))
    return 0


def run_client(args):
    try:
        ctx = client_context(args.ca, args.cert, args.key)
        sock = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
        tls = ctx.wrap_socket(sock, server_hostname=args.name, suppress_ragged_eofs=False)
        emit("CIPHER", tls.cipher()[0])
        reader = LineReader(tls)
        for line in args.lines:
            tls.sendall(line.encode("utf-8", "surrogateescape") + b"\n")
            reply = reader.readline()
            if reply is None:
                raise ConnectionError("close_notify before a reply line")
            emit("REPLY", text(reply))
    except (ssl.SSLError, OSError) as exc:
        return fail(exc)
    emit("PEER_CLOSE", close_notify(tls, args.close_wait))
    return 0


def main(argv=None):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--timeout", type=float, default=30.0)
    common.add_argument("--close-wait", type=float, default=5.0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    modes = parser.add_subparsers(dest="mode", required=True)

    server = modes.add_parser("server", parents=[common])
    server.add_argument("--cert", required=True)
    server.add_argument("--key", required=True)
    server.add_argument("--client-ca")
    server.set_defaults(run=run_server)

    http = modes.add_parser("http", parents=[common])
    http.add_argument("--cert", required=True)
    http.add_argument("--key", required=True)
    http.add_argument("--body-bytes", type=int, required=True)
    http.add_argument("--end", choices=["close_notify", "cut"], required=True)
    http.set_defaults(run=run_http)

    client = modes.add_parser("client", parents=[common])
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--ca", required=True)
    client.add_argument("--name", default="localhost")
    client.add_argument("--cert")
    client.add_argument("--key")
    client.add_argument("--lines", nargs="+", required=True)
    client.set_defaults(run=run_client)

    args = parser.parse_args(argv)
    if args.mode == "client" and bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
