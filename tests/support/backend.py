#!/usr/bin/env python3
"""Gatehouse end-to-end test back end ("internal app"). Standard library only.

Usage: backend.py [--host 127.0.0.1] [--port 0] [--log FILE]
Prints exactly one line "READY <port>" on stdout once listening.

Endpoints:
  * /echo...              JSON {method, path, headers, body_len, body_sha256}
  GET  /bytes/<n>[?chunked=1]  n pattern bytes (repeating 0..255), CL or chunked
  POST|PUT /upload        JSON {body_len, body_sha256}, body streamed, not kept
  GET  /redirect          302 with Location/Set-Cookie/Content-Location/Refresh
  GET  /status/<code>     empty body with that status
  GET  /slow-head?ms=N    waits N ms before sending the head
  GET  /drip?n=K&ms=M     chunked, K one-byte chunks M ms apart
  GET  /ws                WebSocket echo (RFC 6455)
Anything else is 404. HEAD is accepted wherever GET is. Request bodies may be
Content-Length or chunked; Transfer-Encoding other than "chunked", both TE and
CL, or a bad Content-Length/chunk framing gets 400 and the connection closed.
"""
import argparse
import base64
import hashlib
import json
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PIECE = 64 * 1024
PATTERN = bytes(range(256)) * (PIECE // 256)  # exactly 64 KiB of the pattern
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_MAX_MESSAGE = 64 * 1024 * 1024
LOG_LOCK = threading.Lock()
LOG_PATH = None


class BadRequest(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GatehouseTestBackend/1"
    default_request_version = "HTTP/1.0"  # so garbage request lines get a real 400 status line

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass

    def parse_request(self):
        if not super().parse_request():
            return False
        # http.server silently tolerates junk header lines and obs-fold; we don't.
        if self.headers.defects or self.headers.get_payload() or any(
                "\n" in v or "\r" in v for v in self.headers.values()):
            self.send_error(400, "malformed header section")
            return False
        return True

    # ---- request body -------------------------------------------------
    def _body_chunks(self):
        """Yield the request body in pieces of at most 64 KiB."""
        te = self.headers.get_all("Transfer-Encoding") or []
        cl = self.headers.get_all("Content-Length") or []
        if te:
            codings = [c.strip().lower() for v in te for c in v.split(",") if c.strip()]
            if codings != ["chunked"] or cl:
                raise BadRequest("unsupported transfer-encoding or TE+CL")
            yield from self._chunked_body()
            return
        if not cl:
            return
        values = {v.strip() for v in ",".join(cl).split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise BadRequest("bad content-length")
        remaining = int(values.pop())
        while remaining:
            data = self.rfile.read(min(PIECE, remaining))
            if not data:
                raise BadRequest("short body")
            remaining -= len(data)
            yield data

    def _readline(self):
        line = self.rfile.readline(4097)
        if not line.endswith(b"\n") or len(line) > 4096:
            raise BadRequest("bad chunk line")
        return line.rstrip(b"\r\n")

    def _chunked_body(self):
        while True:
            size_s = self._readline().split(b";", 1)[0].strip()
            try:
                if not size_s or size_s.startswith((b"-", b"+", b"0x", b"0X")):
                    raise ValueError
                size = int(size_s, 16)
            except ValueError:
                raise BadRequest("bad chunk size")
            if size == 0:
                while self._readline():  # trailers, until the empty line
                    pass
                return
            while size:
                data = self.rfile.read(min(PIECE, size))
                if not data:
                    raise BadRequest("short chunk")
                size -= len(data)
                yield data
            if self.rfile.read(2) != b"\r\n":
                raise BadRequest("missing CRLF after chunk")

    def _consume_body(self):
        """Read (and hash) the whole body, log the request. Returns summary."""
        sha, n, err = hashlib.sha256(), 0, None
        try:
            for data in self._body_chunks():
                sha.update(data)
                n += len(data)
        except BadRequest as e:
            err = str(e)
        info = {"method": self.command, "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_len": n, "body_sha256": sha.hexdigest()}
        if err:
            info["error"] = err
        if LOG_PATH:
            with LOG_LOCK, open(LOG_PATH, "a", encoding="utf-8") as f:
                f.write(json.dumps(info) + "\n")
        if err:
            self.send_error(400, err)  # sets Connection: close
            self.close_connection = True
            return None
        return info

    # ---- response helpers ----------------------------------------------
    def _send(self, code, body=b"", ctype="text/plain", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        if code not in (204, 304) and not 100 <= code < 200:
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and code not in (204, 304):
            self.wfile.write(body)

    def _json(self, obj, code=200):
        self._send(code, json.dumps(obj).encode(), "application/json")

    def _write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    # ---- dispatch ---------------------------------------------------------
    def _dispatch(self):
        try:
            self._route()
        except ValueError:  # bad numeric path/query parameter (raised before the head)
            self.send_error(400, "bad parameter")
            self.close_connection = True

    def _route(self):
        url = urlsplit(self.path)
        path, q = url.path, parse_qs(url.query)
        m = self.command
        get = m in ("GET", "HEAD")
        if get and path == "/ws":
            return self._ws()
        info = self._consume_body()
        if info is None:
            return
        parts = path.split("/")
        if path.startswith("/echo"):
            return self._json({k: info[k] for k in
                               ("method", "path", "headers", "body_len", "body_sha256")})
        if m in ("POST", "PUT") and path == "/upload":
            return self._json({"body_len": info["body_len"], "body_sha256": info["body_sha256"]})
        if get and len(parts) == 3 and parts[1] == "bytes" and parts[2].isdigit():
            return self._bytes(int(parts[2]), q.get("chunked", ["0"])[0] == "1")
        if get and path == "/redirect":
            host = self.headers.get("Host", "")
            hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 or "]:" in host else host
            return self._send(302, headers=[
                ("Location", "http://%s/echo/landed" % host),
                ("Set-Cookie", "app=1; Domain=%s; Path=/" % hostname),
                ("Content-Location", "http://%s/echo/cl" % host),
                ("Refresh", "0; url=http://%s/echo/r" % host)])
        if get and len(parts) == 3 and parts[1] == "status" and parts[2].isdigit() \
                and 200 <= int(parts[2]) <= 599:
            return self._send(int(parts[2]))
        if path == "/slow-head":
            time.sleep(int(q.get("ms", ["0"])[0]) / 1000.0)
            return self._send(200, b"slow\n")
        if get and path == "/drip":
            k, ms = int(q.get("n", ["1"])[0]), int(q.get("ms", ["0"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if m == "HEAD":
                return
            for i in range(k):
                if i:
                    time.sleep(ms / 1000.0)
                self._write_chunk(b"x")
            self.wfile.write(b"0\r\n\r\n")
            return
        self._send(404, b"not found\n")

    def _bytes(self, n, chunked):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        while n:
            piece = PATTERN[:min(n, PIECE)]
            n -= len(piece)
            self._write_chunk(piece) if chunked else self.wfile.write(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    # ---- WebSocket ------------------------------------------------------
    def _ws(self):
        h = self.headers
        conn_tokens = {t.strip().lower() for v in h.get_all("Connection") or [] for t in v.split(",")}
        key = h.get("Sec-WebSocket-Key", "").strip()
        try:
            key_ok = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            key_ok = False
        if (self.command != "GET" or (h.get("Upgrade") or "").strip().lower() != "websocket"
                or "upgrade" not in conn_tokens or not key_ok
                or (h.get("Sec-WebSocket-Version") or "").strip() != "13"):
            if self._consume_body() is not None:
                self._send(400, b"bad websocket handshake\n")
            return
        if self._consume_body() is None:
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.close_connection = True
        try:
            self._ws_loop()
        except (ConnectionError, OSError, EOFError):
            pass

    def _ws_read(self, n):
        data = self.rfile.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def _ws_send(self, opcode, payload):
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        self.wfile.write(head + payload)

    def _ws_close(self, code):
        self._ws_send(0x8, struct.pack("!H", code))

    def _ws_loop(self):
        msg_op, parts, total = None, [], 0
        while True:
            b0, b1 = self._ws_read(2)
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if not b1 & 0x80 or b0 & 0x70:  # client frames must be masked; no RSV
                return self._ws_close(1002)
            if n == 126:
                n = struct.unpack("!H", self._ws_read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._ws_read(8))[0]
            if opcode >= 0x8 and (n > 125 or not fin):
                return self._ws_close(1002)
            if total + n > WS_MAX_MESSAGE:
                return self._ws_close(1009)
            mask = self._ws_read(4)
            raw = self._ws_read(n)
            payload = (int.from_bytes(raw, "big") ^ int.from_bytes(
                (mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big") if n else b""
            if opcode == 0x8:  # close: echo status code back, then done
                return self._ws_send(0x8, payload[:2])
            if opcode == 0x9:
                self._ws_send(0xA, payload)
            elif opcode == 0xA:
                pass
            elif opcode in (0x1, 0x2, 0x0):
                if (opcode == 0x0) == (msg_op is None):  # bad continuation sequence
                    return self._ws_close(1002)
                if opcode:
                    msg_op = opcode
                parts.append(payload)
                total += n
                if fin:
                    self._ws_send(msg_op, b"".join(parts))
                    msg_op, parts, total = None, [], 0
            else:
                return self._ws_close(1002)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = _dispatch


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        pass  # a client vanishing mid-response is normal in tests


def main():
    global LOG_PATH
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", default=None)
    args = ap.parse_args()
    LOG_PATH = args.log
    srv = Server((args.host, args.port), Handler)
    sys.stdout.write("READY %d\n" % srv.server_address[1])
    sys.stdout.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
