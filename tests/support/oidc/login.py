#!/usr/bin/env python3
"""Scripted browser-like sign-in client for Gatehouse end-to-end tests.

Python 3.11 standard library only.

Usage:
  login.py --ca CA.pem [--ca OTHER.pem] --resolve HOST:PORT:ADDR [--resolve ...]
           --url https://app.test:PORT/echo/hello
           [--user alice --password secret] [--otp-secret BASE32]
           [--jar cookies.lwp] [--max-hops 40] [--timeout 20] [--expect-fail]
           [--stop-before URL-PREFIX]

What it does, like a browser without JavaScript:
  * GETs --url and follows redirects itself (301/302/303 -> GET, 307/308 keep
    method and body), at most --max-hops requests in all;
  * keeps cookies in an http.cookiejar jar: Secure cookies only go over https,
    host-only cookies only to their host, `__Host-`/`__Secure-` prefix rules
    and SameSite (Strict/Lax; no attribute counts as Lax) are enforced;
  * connects to ADDR for every --resolve'd HOST:PORT while keeping the host
    name for SNI, certificate checks and the Host header (like curl --resolve);
    https certificates are checked against the --ca files (system CAs when none);
  * on a page with a sign-in form (a form with a password field: the
    provider.mjs form `login`/`password`, Gatehouse's dev form
    `username`/`password`, or any other), fills the user name and password and
    submits it, keeping hidden inputs and the submit button's name/value;
  * on a page with a one-time-code form (an input named/id'd `otp`, `code`,
    `totp` or autocomplete=one-time-code) fills a TOTP code computed from
    --otp-secret (RFC 6238, SHA-1, 30 s, 6 digits);
  * auto-submits forms that a browser's script would submit by itself
    (all inputs hidden and a script calling .submit(), e.g. response_mode
    form_post pages and provider.mjs's logout confirmation);
  * each kind of form is submitted at most once: a sign-in form shown again
    after submitting it means the sign-in was rejected, and it stops there.

With --stop-before, the first navigation to a URL that starts with the prefix (a
sign-in callback, say) is not made: the run stops there and the report gives the URL
("stopped_at") and the Cookie header a browser would have sent with it
("stopped_cookie"), so that a test can make that request itself, changed or replayed.

The LAST line of stdout is one JSON object:
  {"status": int, "url": str, "body": str (final body, at most 64 KiB),
   "cookies": [names of cookies held for the --url host],
   "hops": [[status, url], ...] (every request made, in order, with its method
           in "hop_methods"),
   "login_submitted": bool, "otp_submitted": bool, "login_rejected": bool,
   "expect_fail": bool, "cookie_attrs": {name: {...}}, "error": str or null}
"status" is 0 (and "error" says why) when the last request got no response
(connection refused, TLS failure, ...). Exit code 0 whenever it ran to the end,
whatever the outcome; nonzero only on bad arguments or a crash (a bug).
--expect-fail only says that the caller expects the sign-in to be refused: the
run then stops quietly at the re-shown form instead of warning on stderr.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.client
import http.cookiejar
import ipaddress
import json
import re
import socket
import ssl
import struct
import sys
import time
import urllib.request
from html.parser import HTMLParser
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

BODY_LIMIT = 64 * 1024
READ_LIMIT = 8 * 1024 * 1024
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) GatehouseTestLogin/1.0"
ACCEPT_HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
USER_FIELDS = ("login", "username", "user", "email", "identifier", "name")
OTP_FIELDS = ("otp", "code", "totp", "one_time_code", "token")


# --------------------------------------------------------------------- TOTP

def totp(secret_b32: str, at: float | None = None, step: int = 30, digits: int = 6) -> str:
    s = re.sub(r"[\s=-]", "", secret_b32).upper()
    key = base64.b32decode(s + "=" * (-len(s) % 8))
    counter = int((time.time() if at is None else at) // step)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % (10 ** digits)
    return str(code).zfill(digits)


# --------------------------------------------------------------------- HTML forms

class Form:
    def __init__(self, attrs: dict[str, str | None]):
        self.attrs = attrs
        self.id = attrs.get("id") or ""
        self.action = attrs.get("action")
        self.method = (attrs.get("method") or "get").lower()
        self.enctype = (attrs.get("enctype") or "application/x-www-form-urlencoded").lower()
        # inputs: dicts with tag, type, name, id, value, autocomplete, checked
        self.inputs: list[dict[str, str | None]] = []
        self.buttons: list[dict[str, str | None]] = []

    def field(self, *, types=(), names=()) -> dict | None:
        for inp in self.inputs:
            t = (inp.get("type") or "text").lower()
            if types and t not in types:
                continue
            if names:
                n = (inp.get("name") or "").lower()
                i = (inp.get("id") or "").lower()
                ac = (inp.get("autocomplete") or "").lower()
                if not (n in names or i in names or (ac == "one-time-code" and "otp" in names)):
                    continue
            return inp
        return None

    def password_field(self):
        return self.field(types=("password",))

    def otp_field(self):
        return self.field(types=("text", "number", "tel", "password"), names=OTP_FIELDS)

    def user_field(self):
        named = self.field(types=("text", "email"), names=USER_FIELDS)
        if named is not None:
            return named
        return self.field(types=("text", "email"))

    def all_hidden(self) -> bool:
        return bool(self.inputs) and all((i.get("type") or "text").lower() == "hidden" for i in self.inputs)


class PageParser(HTMLParser):
    """Collects forms (with inputs/buttons, including form= owners) and scripts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._current: Form | None = None
        self._orphans: list[tuple[str, dict, str]] = []
        self._tag = ""
        self._in_script = False
        self._in_textarea: dict | None = None
        self.scripts: list[str] = []
        self.onload = ""

    def _owner(self, attrs):
        fid = attrs.get("form")
        if fid:
            for f in self.forms:
                if f.id == fid:
                    return f
            self._orphans.append((fid, attrs, self._tag))
            return None
        return self._current

    def handle_starttag(self, tag, attrs_list):
        attrs = {k.lower(): v for k, v in attrs_list}
        self._tag = tag
        if tag == "form":
            self._current = Form(attrs)
            self.forms.append(self._current)
        elif tag == "input":
            owner = self._owner(attrs)
            if owner is not None:
                t = (attrs.get("type") or "text").lower()
                if t in ("submit", "image"):
                    owner.buttons.append({**attrs, "type": "submit"})
                elif t == "button" or t == "reset":
                    pass
                else:
                    owner.inputs.append({**attrs, "tag": "input", "type": t})
        elif tag == "button":
            owner = self._owner(attrs)
            if owner is not None and (attrs.get("type") or "submit").lower() == "submit":
                owner.buttons.append({**attrs, "type": "submit"})
        elif tag == "textarea":
            owner = self._owner(attrs)
            if owner is not None:
                entry = {**attrs, "tag": "textarea", "type": "textarea", "value": ""}
                owner.inputs.append(entry)
                self._in_textarea = entry
        elif tag == "select":
            owner = self._owner(attrs)
            if owner is not None:
                owner.inputs.append({**attrs, "tag": "select", "type": "select", "value": None})
        elif tag == "option":
            if self._current is not None and self._current.inputs:
                sel = self._current.inputs[-1]
                if sel.get("tag") == "select" and (sel.get("value") is None or "selected" in attrs):
                    sel["value"] = attrs.get("value", "")
        elif tag == "script":
            self._in_script = True
            self.scripts.append("")
        elif tag == "body":
            self.onload = attrs.get("onload") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None
        elif tag == "script":
            self._in_script = False
        elif tag == "textarea":
            self._in_textarea = None

    def handle_data(self, data):
        if self._in_script and self.scripts:
            self.scripts[-1] += data
        elif self._in_textarea is not None:
            self._in_textarea["value"] += data

    def close(self):
        super().close()
        for fid, attrs, tag in self._orphans:  # form= pointing at a later form
            for f in self.forms:
                if f.id == fid:
                    t = (attrs.get("type") or ("submit" if tag == "button" else "text")).lower()
                    if tag == "button" and t != "submit":
                        continue
                    if t in ("submit", "image"):
                        f.buttons.append({**attrs, "type": "submit"})
                    else:
                        f.inputs.append({**attrs, "tag": "input", "type": t})

    def auto_submits(self) -> bool:
        js = " ".join(self.scripts) + " " + self.onload
        return ".submit()" in js


def form_fields(form: Form, overrides: dict[str, str], submitter: bool = True) -> list[tuple[str, str]]:
    out = []
    for inp in form.inputs:
        name = inp.get("name")
        if not name or "disabled" in inp:
            continue
        t = inp.get("type")
        if t in ("checkbox", "radio") and "checked" not in inp:
            continue
        if t == "file":
            continue
        if name in overrides:
            out.append((name, overrides[name]))
        else:
            value = inp.get("value")
            if value is None:
                value = "on" if t in ("checkbox", "radio") else ""
            out.append((name, value))
    if submitter and form.buttons:  # the button a user would press: the first one
        b = form.buttons[0]
        if b.get("name"):
            out.append((b["name"], b.get("value") or ""))
    return out


# --------------------------------------------------------------------- sites

def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def site_of(url: str) -> tuple[str, str]:
    """Schemeful site: (scheme, registrable domain). No PSL: the last two labels."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        ipaddress.ip_address(host)
        reg = host
    except ValueError:
        labels = host.rstrip(".").split(".")
        reg = ".".join(labels[-2:])
    return (parts.scheme.lower(), reg)


def origin_of(url: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "", "", "")).rstrip("/")


# --------------------------------------------------------------------- cookies

class BrowserCookiePolicy(http.cookiejar.DefaultCookiePolicy):
    """DefaultCookiePolicy plus cookie name prefixes and SameSite, as browsers do."""

    def set_ok(self, cookie, request):
        if not super().set_ok(cookie, request):
            return False
        secure_origin = request.type == "https"
        if cookie.secure and not secure_origin:
            return False  # RFC 6265bis: no Secure cookies from insecure origins
        if cookie.name.startswith("__Secure-") and not (cookie.secure and secure_origin):
            return False
        if cookie.name.startswith("__Host-"):
            if not (cookie.secure and secure_origin) or cookie.domain_specified or cookie.path != "/":
                return False
        return True

    def return_ok(self, cookie, request):
        if not super().return_ok(cookie, request):
            return False
        samesite = samesite_of(cookie)
        ctx = getattr(request, "same_site_context", "strict")
        if samesite == "strict" and ctx != "strict":
            return False
        if samesite == "lax" and ctx == "cross-site-unsafe":
            return False
        return True


def samesite_of(cookie) -> str:
    for k, v in getattr(cookie, "_rest", {}).items():
        if k.lower() == "samesite":
            v = (v or "").lower()
            return v if v in ("strict", "lax", "none") else "lax"
    return "lax"  # browsers treat a cookie without SameSite as Lax


class CookieRequest(urllib.request.Request):
    """A urllib Request that only serves the cookie jar's bookkeeping."""

    def __init__(self, url, method, same_site_context):
        super().__init__(url, method=method)
        self.same_site_context = same_site_context


class CookieResponse:
    def __init__(self, msg):
        self._msg = msg

    def info(self):
        return self._msg


def cookie_attrs(cookie) -> dict:
    rest = {k.lower(): v for k, v in getattr(cookie, "_rest", {}).items()}
    return {
        "value": cookie.value,
        "domain": cookie.domain,
        "host_only": not cookie.domain_specified,
        "path": cookie.path,
        "secure": bool(cookie.secure),
        "httponly": "httponly" in rest,
        "samesite": rest.get("samesite"),
        "expires": cookie.expires,
    }


# --------------------------------------------------------------------- connections

class ResolvingHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host, port, *, addr, **kw):
        super().__init__(host, port, **kw)
        self._addr = addr

    def connect(self):
        self.sock = socket.create_connection((self._addr, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class ResolvingHTTPSConnection(http.client.HTTPSConnection):
    """Connects to a fixed address but keeps the host name for SNI, checks and Host."""

    def __init__(self, host, port, *, addr, context, **kw):
        super().__init__(host, port, context=context, **kw)
        self._addr = addr
        self._ctx = context

    def connect(self):
        sock = socket.create_connection((self._addr, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


class Browser:
    def __init__(self, args):
        self.args = args
        self.resolve: dict[tuple[str, int], str] = {}
        for r in args.resolve:
            host, port, addr = parse_resolve(r)
            self.resolve[(host, port)] = addr
        self.tls = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if args.ca:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.tls.check_hostname = True
            self.tls.verify_mode = ssl.CERT_REQUIRED
            for ca in args.ca:
                self.tls.load_verify_locations(cafile=ca)
        self.tls.set_alpn_protocols(["http/1.1"])
        policy = BrowserCookiePolicy()
        if args.jar:
            self.jar = http.cookiejar.LWPCookieJar(args.jar, policy=policy)
            try:
                self.jar.load(ignore_discard=True)
            except FileNotFoundError:
                pass
        else:
            self.jar = http.cookiejar.CookieJar(policy=policy)
        self.hops: list[tuple[int, str]] = []
        self.hop_methods: list[str] = []

    def request(self, method, url, *, body=None, headers=None, same_site_context="strict",
                referrer=None, sec_fetch_site="none"):
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme in {url!r}")
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
        addr = self.resolve.get((host.lower(), port), host)
        timeout = self.args.timeout
        if scheme == "https":
            conn = ResolvingHTTPSConnection(host, port, addr=addr, context=self.tls, timeout=timeout)
        else:
            conn = ResolvingHTTPConnection(host, port, addr=addr, timeout=timeout)
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        hdrs = {
            "User-Agent": USER_AGENT,
            "Accept": ACCEPT_HTML,
            "Accept-Language": "en",
            "Accept-Encoding": "identity",
            "Sec-Fetch-Dest": "document",
            "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Site": sec_fetch_site,
            "Upgrade-Insecure-Requests": "1",
        }
        if referrer:
            ref = referrer_for(referrer, url)
            if ref:
                hdrs["Referer"] = ref
        hdrs.update(headers or {})
        creq = CookieRequest(url, method, same_site_context)
        self.jar.add_cookie_header(creq)
        cookie = creq.get_header("Cookie")
        if cookie:
            hdrs["Cookie"] = cookie
        try:
            conn.request(method, target, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read(READ_LIMIT)
        finally:
            conn.close()
        self.jar.extract_cookies(CookieResponse(resp.msg), creq)
        self.hops.append((resp.status, url))
        self.hop_methods.append(method)
        return resp, data

    def cookies_for_host(self, host: str) -> dict:
        out = {}
        host = host.lower()
        for c in self.jar:
            d = c.domain.lower()
            if c.domain_specified or d.startswith("."):
                d = d.lstrip(".")
                ok = host == d or host.endswith("." + d)
            else:
                ok = host == d
            if ok:
                out[c.name] = cookie_attrs(c)
        return out


def parse_resolve(s: str) -> tuple[str, int, str]:
    host, sep, rest = s.partition(":")
    port, sep2, addr = rest.partition(":")
    if not (sep and sep2 and host and port.isdigit() and addr):
        raise argparse.ArgumentTypeError(f"--resolve wants HOST:PORT:ADDR, got {s!r}")
    return host.lower(), int(port), addr.strip("[]")


def referrer_for(referrer: str, target: str) -> str | None:
    """Chromium's default policy, strict-origin-when-cross-origin."""
    r, t = urlsplit(referrer), urlsplit(target)
    if r.scheme == "https" and t.scheme == "http":
        return None
    if origin_of(referrer) == origin_of(target):
        return urlunsplit((r.scheme, r.netloc, r.path, r.query, ""))
    return origin_of(referrer) + "/"


def decode_body(resp, data: bytes) -> str:
    ctype = resp.getheader("Content-Type") or ""
    m = re.search(r"charset=([\w-]+)", ctype, re.I)
    enc = m.group(1) if m else "utf-8"
    try:
        return data.decode(enc, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def fetch_site(initiator: str | None, target: str) -> str:
    if initiator is None:
        return "none"
    if origin_of(initiator) == origin_of(target):
        return "same-origin"
    if site_of(initiator) == site_of(target):
        return "same-site"
    return "cross-site"


def run(args) -> dict:
    b = Browser(args)
    app_host = host_of(args.url)
    result = {
        "status": 0, "url": args.url, "body": "", "cookies": [], "hops": [],
        "hop_methods": [], "login_submitted": False, "otp_submitted": False,
        "login_rejected": False, "expect_fail": bool(args.expect_fail),
        "cookie_attrs": {}, "error": None,
    }

    # A navigation: method, url, body, initiator page url (None = typed by the user).
    method, url, body, initiator = "GET", args.url, None, None
    chain: list[str] = []  # URLs of the current redirect chain (site computation)
    submitted = {"login": 0, "otp": 0, "auto": 0}
    status, text, final_url = 0, "", url

    while True:
        if len(b.hops) >= args.max_hops:
            result["error"] = f"gave up after {args.max_hops} requests"
            break
        url = urlunsplit(urlsplit(url)._replace(fragment=""))
        if args.stop_before and url.startswith(args.stop_before):
            creq = CookieRequest(url, method, "lax")
            b.jar.add_cookie_header(creq)
            result["stopped_at"] = url
            result["stopped_cookie"] = creq.get_header("Cookie") or ""
            break
        sites = [site_of(u) for u in ([initiator] if initiator else []) + chain]
        cross = any(s != site_of(url) for s in sites)
        if not cross:
            ss_ctx = "strict"
        elif method in ("GET", "HEAD"):
            ss_ctx = "lax"
        else:
            ss_ctx = "cross-site-unsafe"
        hdrs = {}
        if body is not None:
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
            # A POST carries its initiator's origin, "null" after a cross-origin redirect.
            same_origin_chain = all(origin_of(u) == origin_of(url) for u in chain)
            hdrs["Origin"] = origin_of(initiator) if initiator and same_origin_chain else "null"
        levels = [fetch_site(initiator, u) for u in chain + [url]]
        sfs = next((lv for lv in ("cross-site", "same-site", "same-origin", "none") if lv in levels), "none")
        try:
            resp, data = b.request(method, url, body=body, headers=hdrs, same_site_context=ss_ctx,
                                   referrer=initiator, sec_fetch_site=sfs)
        except (OSError, http.client.HTTPException, ssl.SSLError, ValueError) as e:
            result["error"] = f"{type(e).__name__}: {e} (while requesting {method} {url})"
            b.hops.append((0, url))
            b.hop_methods.append(method)
            status, text, final_url = 0, "", url
            break
        status, final_url = resp.status, url
        text = decode_body(resp, data)

        location = resp.getheader("Location")
        if status in (301, 302, 303, 307, 308) and location:
            chain.append(url)
            nxt = urljoin(url, location)
            if status in (307, 308):
                pass  # keep method and body
            elif status == 303 or method == "POST":
                method, body = ("GET" if method != "HEAD" else "HEAD"), None
            url = nxt
            continue

        # A page: look for something to submit.
        ctype = (resp.getheader("Content-Type") or "").lower()
        if "html" not in ctype:
            break
        parser = PageParser()
        try:
            parser.feed(text)
            parser.close()
        except Exception:  # noqa: BLE001 - malformed HTML: just stop at this page
            break
        action = pick_form(parser, args, submitted)
        if action is None:
            if submitted["login"] and any(f.password_field() for f in parser.forms):
                result["login_rejected"] = True
            elif submitted["otp"] and any(
                    f.otp_field() is not None and f.password_field() in (None, f.otp_field())
                    for f in parser.forms):
                result["login_rejected"] = True
            break
        kind, form, overrides = action
        submitted[kind] += 1
        if kind == "login":
            result["login_submitted"] = True
        elif kind == "otp":
            result["otp_submitted"] = True
        fields = form_fields(form, overrides, submitter=(kind != "auto"))
        target = urljoin(url, form.action) if form.action else url
        target = urlunsplit(urlsplit(target)._replace(fragment=""))
        encoded = urlencode(fields)
        initiator, chain = url, []
        if form.method == "post":
            method, body = "POST", encoded.encode()
            url = target
        else:
            method, body = "GET", None
            url = urlunsplit(urlsplit(target)._replace(query=encoded))

    if result["login_rejected"] and not args.expect_fail:
        print("login.py: the sign-in form was shown again after submitting it (rejected?)", file=sys.stderr)
    held = b.cookies_for_host(app_host)
    result.update({
        "status": status,
        "url": final_url,
        "body": text.encode("utf-8")[:BODY_LIMIT].decode("utf-8", errors="ignore"),
        "cookies": sorted(held),
        "hops": [[s, u] for s, u in b.hops],
        "hop_methods": b.hop_methods,
        "cookie_attrs": held,
    })
    if args.jar:
        b.jar.save(ignore_discard=True)
    return result


def pick_form(parser: PageParser, args, submitted):
    """Returns (kind, form, overrides) for the form to submit on this page, or None."""
    for form in parser.forms:
        pw = form.password_field()
        otp = form.otp_field()
        if pw is None or pw is otp:
            continue
        if submitted["login"] or args.user is None or args.password is None:
            return None
        overrides = {}
        user = form.user_field()
        if user is not None and user.get("name"):
            overrides[user["name"]] = args.user
        if pw.get("name"):
            overrides[pw["name"]] = args.password
        if otp is not None and otp.get("name") and args.otp_secret:
            overrides[otp["name"]] = totp(args.otp_secret)
        return ("login", form, overrides)
    for form in parser.forms:
        otp = form.otp_field()
        if otp is None:
            continue
        if submitted["otp"] or not args.otp_secret or not otp.get("name"):
            return None
        return ("otp", form, {otp["name"]: totp(args.otp_secret)})
    if parser.auto_submits() and parser.forms and submitted["auto"] < 5:
        form = parser.forms[0]
        if form.all_hidden():
            return ("auto", form, {})
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ca", action="append", default=[], help="PEM CA file to trust (repeatable)")
    ap.add_argument("--resolve", action="append", default=[], metavar="HOST:PORT:ADDR",
                    help="connect to ADDR for HOST:PORT (repeatable)")
    ap.add_argument("--url", required=True, help="the app URL to open")
    ap.add_argument("--user", help="user name for the sign-in form")
    ap.add_argument("--password", help="password for the sign-in form")
    ap.add_argument("--otp-secret", help="base32 TOTP secret for a one-time-code form")
    ap.add_argument("--jar", help="LWP cookie file to load before and save after the run")
    ap.add_argument("--max-hops", type=int, default=40, help="max requests in all (default 40)")
    ap.add_argument("--timeout", type=float, default=20.0, help="socket timeout in seconds")
    ap.add_argument("--stop-before", help="stop, without requesting it, at the first URL with this prefix")
    ap.add_argument("--expect-fail", action="store_true",
                    help="the sign-in is expected to be refused (no warning on stderr)")
    args = ap.parse_args(argv)
    for r in args.resolve:
        try:
            parse_resolve(r)
        except argparse.ArgumentTypeError as e:
            ap.error(str(e))
    result = run(args)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
