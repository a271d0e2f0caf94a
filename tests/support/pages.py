#!/usr/bin/env python3
"""Gatehouse end-to-end test back end for body translation: pages that name their own
internal origin. Standard library only.

Usage: pages.py --other ORIGIN
ORIGIN is the internal origin of another published app (e.g. http://127.0.0.1:9999), named in
the pages too. Prints exactly one line "READY <port>" on stdout once listening; the page's own
internal origin is http://127.0.0.1:<port>.

Endpoints:
  GET /page.html      HTML naming both origins in href, src, srcset, form action, formaction,
                      meta refresh, style attributes, <style> and <script>; written in 7-byte
                      pieces (Content-Length set), so the connector reads it in many pieces
  GET /style.css      CSS with url(...) of both origins
  GET /gzip.html      HTML compressed with gzip (Content-Encoding: gzip) whatever was asked
  GET /plain.txt      text/plain naming the origin (never translated)
  GET /accept         text/plain: the Accept-Encoding the request carried ("-" if none)
  GET /big.html?mib=N chunked HTML of N MiB, each 64-byte line a link to the own origin
  GET /start.html     a page whose link #go names /next by its internal URL
  GET /next           the page the link leads to
"""
import argparse
import gzip
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

OWN = ""
OTHER = ""


def page():
    return f"""<!doctype html>
<html><head><title>internal page</title>
<meta http-equiv="refresh" content="3600; url={OWN}/refreshed">
<link rel="stylesheet" href="{OWN}/style.css">
<style>.a {{ background: url("{OWN}/bg.png") }} .b {{ background: url({OTHER}/other.png) }}</style>
<script>var own = "{OWN}/api"; var other = '{OTHER}/people';</script>
</head><body>
<a id="own" href="{OWN}/page.html?a=1&amp;b=2">own</a>
<a id="other" href="{OTHER}/people">other</a>
<a id="foreign" href="http://example.net/x">foreign</a>
<img src="{OWN}/a.png" srcset="{OWN}/a.png 1x, {OWN}/a@2x.png 2x">
<form action="{OWN}/submit" method="post"><button formaction="{OTHER}/save">go</button></form>
<div style="background-image: url('{OWN}/d.png')"></div>
<p>text {OWN}/untouched</p>
</body></html>
""".encode()


def css():
    return f"a {{ background: url({OWN}/x.png) }} b {{ background: url('{OTHER}/y.png') }}\n".encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send_body(self, status, ctype, body, extra=(), pieces=0):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if not pieces:
            self.wfile.write(body)
            return
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for at in range(0, len(body), pieces):
            self.wfile.write(body[at:at + pieces])
            self.wfile.flush()
            time.sleep(0.0005)

    def do_GET(self):
        url = urlsplit(self.path)
        path = url.path
        if path == "/page.html":
            self.send_body(200, "text/html; charset=utf-8", page(), pieces=7)
        elif path == "/style.css":
            # A strong validator of the back end's bytes (translation changes them).
            self.send_body(200, "text/css", css(), [("ETag", '"css-1"')])
        elif path == "/gzip.html":
            self.send_body(200, "text/html", gzip.compress(page()), [("Content-Encoding", "gzip")])
        elif path == "/plain.txt":
            self.send_body(200, "text/plain", f"{OWN}/x\n".encode())
        elif path == "/accept":
            self.send_body(200, "text/plain", (self.headers.get("Accept-Encoding") or "-").encode())
        elif path == "/big.html":
            mib = int(parse_qs(url.query).get("mib", ["1"])[0])
            self.big(mib)
        elif path == "/start.html":
            self.send_body(200, "text/html", f'<a id="go" href="{OWN}/next">go</a>'.encode())
        elif path == "/next":
            self.send_body(200, "text/html", b"<title>next</title><p id=landed>landed on next</p>")
        else:
            self.send_body(404, "text/plain", b"not found")

    do_HEAD = do_GET

    def big(self, mib):
        line = f'<a href="{OWN}/i">i</a>'.encode()
        line += b"x" * (63 - len(line)) + b"\n"
        block = line * (64 * 1024 // 64)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        head = b"<!doctype html><html><body>\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(head), head))
        for _ in range(mib * 16):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
        self.wfile.write(b"0\r\n\r\n")


def main():
    global OWN, OTHER
    parser = argparse.ArgumentParser()
    parser.add_argument("--other", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    OWN = f"http://127.0.0.1:{port}"
    OTHER = args.other
    print(f"READY {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
