#!/usr/bin/env node
// Test-only, deliberately misbehaving OpenID Connect provider.
//
// A real provider never issues the ID tokens this one can: forged nonces,
// wrong audiences or issuers, expired tokens, `alg: none`, HS256 keyed with
// the public key, bad signatures, group-overage claims and stale auth_time.
// End-to-end tests use it to show that Gatehouse's relying party rejects
// them. Node built-ins only: it needs no `npm ci`.
//
// Usage: node rogue.mjs <port>
//   <port> may be 0 (the kernel picks one). Listens on 127.0.0.1 only.
// Prints exactly one line `READY http://127.0.0.1:<port>` on stdout once
// listening, and nothing else on stdout. That URL (no trailing slash) is the
// issuer. Exits 0 on SIGTERM / SIGINT. Errors go to stderr; set ROGUE_LOG=1 to
// also log every request to stderr.
//
// The "mode" is the client_id: the client called `ok` gets good tokens, the
// client called `nonce` gets a forged nonce, and so on (see MODES below and
// README.md). No login page, no sessions, no state: an authorization code is
// just base64url(JSON {client_id, nonce, redirect_uri, code_challenge,
// code_challenge_method}), can be redeemed any number of times, and never
// expires. Any client secret (or none) is accepted.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

const VERBOSE = process.env.ROGUE_LOG === '1';
const KID = 'rogue-1';
const MAX_BODY = 64 * 1024;

function die(msg, code = 2) {
  process.stderr.write(`rogue.mjs: ${msg}\n`);
  process.exit(code);
}

const args = process.argv.slice(2);
if (args.length !== 1 || !/^\d{1,5}$/.test(args[0])) die('usage: node rogue.mjs <port>');
const port = Number.parseInt(args[0], 10);
if (port > 65535) die('usage: node rogue.mjs <port>');

// ---------------------------------------------------------------- keys

// The good key: published at /jwks. The other key: never published, but its
// signatures carry the same kid, so they fail verification.
const good = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const other = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });

const goodJwkRaw = good.publicKey.export({ format: 'jwk' });
// Exactly the object served in /jwks, in this key order.
const PUBLIC_JWK = {
  kty: 'EC',
  crv: 'P-256',
  x: goodJwkRaw.x,
  y: goodJwkRaw.y,
  kid: KID,
  alg: 'ES256',
  use: 'sig',
};
// The HS256 "key confusion" secret: the UTF-8 bytes of the public JWK JSON,
// exactly as JSON.stringify(PUBLIC_JWK) (which is also the key's text in /jwks).
const HS256_SECRET = Buffer.from(JSON.stringify(PUBLIC_JWK), 'utf8');

// ---------------------------------------------------------------- JWT

const b64u = (buf) => Buffer.from(buf).toString('base64url');
const b64uJson = (obj) => b64u(Buffer.from(JSON.stringify(obj), 'utf8'));

function es256(signingInput, privateKey) {
  return b64u(crypto.sign('sha256', Buffer.from(signingInput, 'ascii'),
    { key: privateKey, dsaEncoding: 'ieee-p1363' }));
}

// Modes: how each one changes the header, the claims and the signature.
// `claims` is the ok claim set, to be changed in place.
const MODES = {
  ok: {},
  nonce: { claims: (c) => { c.nonce = `forged-${c.nonce ?? ''}`; } },
  aud: { claims: (c) => { c.aud = 'someone-else'; } },
  iss: { claims: (c) => { c.iss = 'http://evil.example'; } },
  expired: {
    claims: (c) => {
      c.iat = c.iat - 7200;
      c.auth_time = c.iat;
      c.exp = c.iat + 3600; // now - 3600
    },
  },
  none: { sign: 'none' },
  hs256: { sign: 'hs256' },
  sig: { sign: 'other' },
  overage: {
    claims: (c) => {
      delete c.groups;
      c._claim_names = { groups: 'src1' };
      c._claim_sources = { src1: { endpoint: 'https://graph.example/getMemberObjects' } };
      c.hasgroups = true;
    },
  },
  old: { claims: (c) => { c.auth_time = c.iat - 86400; } },
};

// opts: {issuer, aud, nonce?, sub?, groups?, amr?}. Returns a compact JWS.
function mintToken(mode, opts) {
  const m = MODES[mode];
  const now = Math.floor(Date.now() / 1000);
  const claims = {
    iss: opts.issuer,
    sub: opts.sub ?? 'alice',
    aud: opts.aud,
    iat: now,
    exp: now + 300,
    auth_time: now,
  };
  if (opts.nonce !== undefined) claims.nonce = opts.nonce;
  Object.assign(claims, {
    preferred_username: 'alice',
    email: 'alice@example.com',
    email_verified: true,
    name: 'Alice',
    groups: opts.groups ?? ['staff'],
    amr: opts.amr ?? ['pwd'],
  });
  if (m.claims) m.claims(claims);

  let header;
  switch (m.sign) {
    case 'none': header = { alg: 'none', typ: 'JWT' }; break;
    case 'hs256': header = { alg: 'HS256', kid: KID }; break;
    default: header = { alg: 'ES256', kid: KID, typ: 'JWT' };
  }
  const input = `${b64uJson(header)}.${b64uJson(claims)}`;
  switch (m.sign) {
    case 'none': return `${input}.`;
    case 'hs256': return `${input}.${b64u(crypto.createHmac('sha256', HS256_SECRET).update(input, 'ascii').digest())}`;
    case 'other': return `${input}.${es256(input, other.privateKey)}`;
    default: return `${input}.${es256(input, good.privateKey)}`;
  }
}

// ---------------------------------------------------------------- HTTP helpers

function send(res, status, body, type, extra = {}) {
  const buf = Buffer.from(body, 'utf8');
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': buf.length,
    'Cache-Control': 'no-store',
    ...extra,
  });
  res.end(buf);
}
const sendJson = (res, status, obj, extra) =>
  send(res, status, JSON.stringify(obj), 'application/json', extra);
const oauthError = (res, status, error, description, extra) =>
  sendJson(res, status, description ? { error, error_description: description } : { error }, extra);

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error('body too large'), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

// application/x-www-form-urlencoded decoding of one value ('+' is a space).
function formDecode(s) {
  return decodeURIComponent(s.replace(/\+/g, ' '));
}

// Comma list from a query parameter: "a,b" -> ["a","b"], "" -> [].
function listParam(v) {
  if (v === null) return undefined;
  return v === '' ? [] : v.split(',');
}

// ---------------------------------------------------------------- endpoints

let issuer; // set once listening

function discovery(res) {
  sendJson(res, 200, {
    issuer,
    authorization_endpoint: `${issuer}/authorize`,
    token_endpoint: `${issuer}/token`,
    jwks_uri: `${issuer}/jwks`,
    response_types_supported: ['code'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['ES256'],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
  });
}

function authorize(res, q) {
  const redirectUri = q.get('redirect_uri');
  const clientId = q.get('client_id');
  if (!redirectUri) return send(res, 400, 'missing redirect_uri\n', 'text/plain');
  if (!clientId) return send(res, 400, 'missing client_id\n', 'text/plain');
  if (q.get('response_type') !== 'code') {
    return send(res, 400, 'response_type must be code\n', 'text/plain');
  }
  const method = q.get('code_challenge_method');
  if (method !== null && method !== 'S256') {
    return send(res, 400, 'code_challenge_method must be S256\n', 'text/plain');
  }
  const payload = { client_id: clientId, redirect_uri: redirectUri };
  if (q.get('nonce') !== null) payload.nonce = q.get('nonce');
  if (q.get('code_challenge') !== null) payload.code_challenge = q.get('code_challenge');
  const code = b64uJson(payload);
  let location = `${redirectUri}${redirectUri.includes('?') ? '&' : '?'}code=${encodeURIComponent(code)}`;
  if (q.get('state') !== null) location += `&state=${encodeURIComponent(q.get('state'))}`;
  res.writeHead(302, { Location: location, 'Content-Length': 0, 'Cache-Control': 'no-store' });
  res.end();
}

async function token(req, res) {
  const ctype = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  if (ctype !== 'application/x-www-form-urlencoded') {
    return oauthError(res, 400, 'invalid_request', 'expected application/x-www-form-urlencoded');
  }
  const form = new URLSearchParams((await readBody(req)).toString('utf8'));

  // Client authentication: HTTP Basic (id and secret form-encoded, RFC 6749
  // 2.3.1) or client_id/client_secret in the body. Any secret is accepted.
  let clientId = null;
  const authz = req.headers.authorization;
  if (authz !== undefined) {
    const m = /^Basic\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(authz);
    const decoded = m ? Buffer.from(m[1], 'base64').toString('utf8') : '';
    const colon = decoded.indexOf(':');
    if (!m || colon < 0) {
      return oauthError(res, 401, 'invalid_client', 'malformed Basic credentials',
        { 'WWW-Authenticate': 'Basic realm="rogue"' });
    }
    try {
      clientId = formDecode(decoded.slice(0, colon));
      formDecode(decoded.slice(colon + 1));
    } catch {
      return oauthError(res, 401, 'invalid_client', 'bad percent-encoding in Basic credentials',
        { 'WWW-Authenticate': 'Basic realm="rogue"' });
    }
    if (form.has('client_id') && form.get('client_id') !== clientId) {
      return oauthError(res, 400, 'invalid_request', 'client_id in body differs from Basic auth');
    }
  } else {
    clientId = form.get('client_id');
  }
  if (!clientId) {
    return oauthError(res, 401, 'invalid_client', 'no client authentication',
      { 'WWW-Authenticate': 'Basic realm="rogue"' });
  }
  const mode = clientId;
  if (!Object.hasOwn(MODES, mode)) return oauthError(res, 400, 'unauthorized_client');

  if (form.get('grant_type') !== 'authorization_code') {
    return oauthError(res, 400, 'unsupported_grant_type');
  }
  let code;
  try {
    code = JSON.parse(Buffer.from(form.get('code') || '', 'base64url').toString('utf8'));
    if (typeof code !== 'object' || code === null) throw new Error('not an object');
  } catch {
    return oauthError(res, 400, 'invalid_grant', 'undecodable code');
  }
  if (code.client_id !== clientId) {
    return oauthError(res, 400, 'invalid_grant', 'code was issued to another client');
  }
  if (form.get('redirect_uri') !== code.redirect_uri) {
    return oauthError(res, 400, 'invalid_grant', 'redirect_uri mismatch');
  }
  const verifier = form.get('code_verifier');
  if (typeof code.code_challenge !== 'string' || verifier === null
      || b64u(crypto.createHash('sha256').update(verifier, 'ascii').digest()) !== code.code_challenge) {
    return oauthError(res, 400, 'invalid_grant', 'PKCE verification failed');
  }

  const idToken = mintToken(mode, { issuer, aud: clientId, nonce: code.nonce });
  sendJson(res, 200, {
    access_token: 'x',
    token_type: 'Bearer',
    expires_in: 300,
    id_token: idToken,
  }, { Pragma: 'no-cache' });
}

function mint(res, q) {
  const mode = q.get('mode') ?? 'ok';
  const aud = q.get('aud');
  if (!aud) return oauthError(res, 400, 'invalid_request', 'aud is required');
  if (!Object.hasOwn(MODES, mode)) return oauthError(res, 400, 'unauthorized_client');
  const opts = { issuer, aud };
  if (q.get('nonce') !== null) opts.nonce = q.get('nonce');
  if (q.get('sub')) opts.sub = q.get('sub');
  opts.groups = listParam(q.get('groups'));
  opts.amr = listParam(q.get('amr'));
  send(res, 200, mintToken(mode, opts), 'text/plain; charset=utf-8');
}

// ---------------------------------------------------------------- server

const ROUTES = {
  '/.well-known/openid-configuration': { GET: (req, res) => discovery(res) },
  '/jwks': { GET: (req, res) => sendJson(res, 200, { keys: [PUBLIC_JWK] }) },
  '/authorize': { GET: (req, res, url) => authorize(res, url.searchParams) },
  '/token': { POST: (req, res) => token(req, res) },
  '/mint': { GET: (req, res, url) => mint(res, url.searchParams) },
};

const server = http.createServer(async (req, res) => {
  if (VERBOSE) {
    res.on('finish', () => process.stderr.write(`rogue.mjs: ${req.method} ${req.url} -> ${res.statusCode}\n`));
  }
  try {
    const url = new URL(req.url, 'http://127.0.0.1');
    const route = ROUTES[url.pathname];
    if (!route) return send(res, 404, 'not found\n', 'text/plain');
    const handler = route[req.method];
    if (!handler) {
      return send(res, 405, 'method not allowed\n', 'text/plain', { Allow: Object.keys(route).join(', ') });
    }
    await handler(req, res, url);
  } catch (err) {
    if (err?.status === 413) {
      if (!res.headersSent) send(res, 413, 'body too large\n', 'text/plain', { Connection: 'close' });
      return;
    }
    process.stderr.write(`rogue.mjs: ${req.method} ${req.url}: ${err?.stack || err}\n`);
    if (!res.headersSent) send(res, 500, 'internal error\n', 'text/plain');
    else res.destroy();
  }
});

server.on('error', (err) => die(`listen on 127.0.0.1:${port}: ${err.message}`, 1));
server.listen(port, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  process.stdout.write(`READY ${issuer}\n`);
});

function shutdown() {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
