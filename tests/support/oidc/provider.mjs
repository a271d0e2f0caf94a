#!/usr/bin/env node
// Test-only OpenID Connect provider for Gatehouse end-to-end tests.
//
// Runs the real `oidc-provider` package (see package.json) on 127.0.0.1 with
// its own minimal sign-in pages instead of the package's devInteractions, so
// that passwords are really checked and no consent page ever appears.
//
// Usage: node provider.mjs <port> <config.json>
//   <port> may be 0: the kernel picks one, and the issuer then defaults to
//   http://127.0.0.1:<picked port> (when config.json has no "issuer").
// Prints exactly one line `READY <issuer>` on stdout once listening, and
// nothing else on stdout. Exits 0 on SIGTERM / SIGINT. Errors go to stderr;
// set OIDC_PROVIDER_LOG=1 to also log every request to stderr.
//
// config.json (see README.md for the full schema):
// {
//   "issuer": "http://127.0.0.1:PORT",               // optional when port is 0
//   "clients": [{ "client_id": "...", "client_secret": "...",
//                 "redirect_uris": ["https://app.test:9999/.gatehouse/callback"],
//                 "post_logout_redirect_uris": ["https://app.test:9999/"] }],
//   "accounts": { "alice": { "password": "...", "email": "...", "name": "...",
//                            "groups": ["..."], "amr": ["pwd"] } },
//   "ttl": { "IdToken": 3600 },                      // optional, seconds
//   "jwks": { "keys": [ ...private JWKs... ] },      // optional, fixed keys
//   "tls": { "cert": "leaf.pem", "key": "leaf.key" } // optional: serve https
// }

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';

import Provider from 'oidc-provider';

const VERBOSE = process.env.OIDC_PROVIDER_LOG === '1';

// stdout carries only the READY line: oidc-provider prints its NOTICEs with
// console.info, so send console.log/info/debug to stderr.
for (const m of ['log', 'info', 'debug']) {
  console[m] = (...args) => console.error(...args);
}
const AUTO_SCOPES = ['openid', 'profile', 'email', 'groups'];
const NON_REJECTABLE = new Set(['sub', 'sid', 'auth_time', 'acr', 'amr', 'iss']);

function die(msg) {
  process.stderr.write(`provider.mjs: ${msg}\n`);
  process.exit(2);
}

function usage() {
  die('usage: node provider.mjs <port> <config.json>');
}

const [portArg, configPath] = process.argv.slice(2);
if (portArg === undefined || configPath === undefined) usage();
const port = Number.parseInt(portArg, 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) usage();

let config;
try {
  config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
} catch (err) {
  die(`cannot read ${configPath}: ${err.message}`);
}
const configDir = path.dirname(path.resolve(configPath));

const accounts = new Map(Object.entries(config.accounts || {}));
for (const [login, acct] of accounts) {
  if (typeof acct.password !== 'string') die(`account ${login} has no "password"`);
}

function htmlEscape(s) {
  return String(s ?? '')
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

// Constant-time string comparison (the provider is test-only, but keep the habit).
function safeEqual(a, b) {
  const ha = crypto.createHash('sha256').update(String(a)).digest();
  const hb = crypto.createHash('sha256').update(String(b)).digest();
  return crypto.timingSafeEqual(ha, hb) && String(a) === String(b);
}

// Account ids (the `sub`) are the login names unless the account sets "sub".
const accountsBySub = new Map();
for (const [login, acct] of accounts) accountsBySub.set(acct.sub ?? login, { login, ...acct });

function claimsFor(sub) {
  const acct = accountsBySub.get(sub);
  const login = acct.login;
  const out = {
    sub,
    email: acct.email ?? `${login}@example.test`,
    email_verified: acct.email_verified ?? true,
    name: acct.name ?? login,
    preferred_username: acct.preferred_username ?? login,
    groups: acct.groups ?? [],
  };
  if (acct.amr !== undefined) out.amr = acct.amr;
  // Extra per-account claims, e.g. {"claims": {"department": "x"}}: in the ID
  // token and userinfo with the `openid` scope.
  if (acct.claims && typeof acct.claims === 'object') Object.assign(out, acct.claims);
  return out;
}

// Names of the accounts' extra claims ("claims": {...}); served with `openid`.
const extraClaimNames = [...new Set([...accounts.values()]
  .flatMap((a) => (a.claims && typeof a.claims === 'object' ? Object.keys(a.claims) : [])))];

async function findAccount(ctx, id) {
  if (!accountsBySub.has(id)) return undefined;
  return {
    accountId: id,
    async claims() {
      return claimsFor(id);
    },
  };
}

function defaultJwks() {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return {
    keys: [
      { ...rsa, kid: `rsa-${crypto.randomBytes(6).toString('hex')}`, use: 'sig', alg: 'RS256' },
      { ...ec, kid: `ec-${crypto.randomBytes(6).toString('hex')}`, use: 'sig', alg: 'ES256' },
    ],
  };
}

function clientsFromConfig() {
  return (config.clients || []).map((c) => {
    if (!c.client_id) die('every client needs "client_id"');
    const {
      client_id: clientId, client_secret: clientSecret, redirect_uris: redirectUris,
      post_logout_redirect_uris: postLogout, ...rest
    } = c;
    return {
      client_id: clientId,
      ...(clientSecret !== undefined ? { client_secret: clientSecret } : {}),
      redirect_uris: redirectUris || [],
      post_logout_redirect_uris: postLogout || [],
      response_types: ['code'],
      // The device-code grant too: Gatehouse relays it when a connector enrols by an
      // administrator's sign-in.
      grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
      token_endpoint_auth_method: clientSecret !== undefined ? 'client_secret_basic' : 'none',
      // Anything else (id_token_signed_response_alg, token_endpoint_auth_method,
      // ...) is passed to oidc-provider as client metadata.
      ...rest,
    };
  });
}

// Grants everything the client asked for, so the consent prompt never shows.
async function loadExistingGrant(ctx) {
  const { oidc } = ctx;
  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
  let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
  if (!grant) {
    grant = new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
  }
  const scopes = new Set(AUTO_SCOPES);
  for (const s of oidc.requestParamOIDCScopes || []) scopes.add(s);
  grant.addOIDCScope([...scopes].join(' '));
  const claims = [...(oidc.requestParamClaims || [])].filter((c) => !NON_REJECTABLE.has(c));
  if (claims.length) grant.addOIDCClaims(claims);
  await grant.save();
  return grant;
}

const logoutAutoConfirm = config.logout_auto_confirm !== false;

// RP-initiated logout: by default confirm automatically (a test has no human
// to click "Yes"); the page still works without JavaScript via the button.
async function logoutSource(ctx, form) {
  const confirmed = logoutAutoConfirm
    ? form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>')
    : form;
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign out</title></head>
<body>
<h1>Signing out</h1>
${confirmed}
<button id="logout" type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
${logoutAutoConfirm ? "<script>document.addEventListener('DOMContentLoaded', function () { document.forms[0].submit() });</script>" : ''}
</body></html>`;
}

async function postLogoutSuccessSource(ctx) {
  ctx.type = 'html';
  ctx.body = '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Signed out</title></head><body><h1 id="signed-out">Signed out</h1></body></html>';
}

// Device flow (RFC 8628) pages, with stable ids for the tests. The confirmation page
// submits itself (a test has no human to click "Continue"); the sign-in that follows is
// the same login page as for the code flow.
async function userCodeInputSource(ctx, form, out, err) {
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Device sign-in</title></head>
<body>
<h1>Enter the code shown on your device</h1>
${err ? `<p id="device-error" role="alert">${htmlEscape(err.userCode ? 'The code is not valid or has expired.' : err.message || 'error')}</p>` : ''}
${form}
<label for="user_code">Code</label>
<input id="user_code" name="user_code" form="op.deviceInputForm" type="text" autofocus>
<button id="device-submit" type="submit" form="op.deviceInputForm">Continue</button>
</body></html>`;
}

async function userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Confirm device</title></head>
<body>
<h1>Confirm the device showing <code id="user-code">${htmlEscape(userCode)}</code></h1>
${form}
<button id="device-confirm" type="submit" form="op.deviceConfirmForm">Continue</button>
<script>document.addEventListener('DOMContentLoaded', function () { document.getElementById('device-confirm').click() });</script>
</body></html>`;
}

async function deviceSuccessSource(ctx) {
  ctx.type = 'html';
  ctx.body = '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Device signed in</title></head><body><h1 id="device-done">Device signed in</h1></body></html>';
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Provider error</title></head><body>
<h1>Provider error</h1>
<pre id="error">${htmlEscape(out.error)}</pre>
<pre id="error_description">${htmlEscape(out.error_description)}</pre>
</body></html>`;
}

function providerConfiguration() {
  // Fixed lifetimes (seconds); config.ttl overrides any of them.
  const ttl = {
    AccessToken: 3600,
    AuthorizationCode: 60,
    ClientCredentials: 600,
    DeviceCode: 600,
    BackchannelAuthenticationRequest: 600,
    Grant: 14 * 24 * 3600,
    IdToken: 3600,
    Interaction: 3600,
    RefreshToken: 14 * 24 * 3600,
    Session: 14 * 24 * 3600,
  };
  for (const [k, v] of Object.entries(config.ttl || {})) {
    if (!Number.isInteger(v) || v <= 0) die(`ttl.${k} must be a positive integer (seconds)`);
    ttl[k] = v;
  }
  return {
    clients: clientsFromConfig(),
    jwks: config.jwks || defaultJwks(),
    findAccount,
    // amr/acr/auth_time come from the sign-in (interactionFinished's login
    // result), not from findAccount; listing them under `openid` makes every
    // ID token carry them (oidc-provider only emits claims some scope maps).
    claims: {
      openid: ['sub', 'amr', 'acr', 'auth_time', ...extraClaimNames],
      profile: ['name', 'preferred_username'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    // Put the scope claims into the ID token even though an access token is issued.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    cookies: {
      keys: config.cookie_keys || ['gatehouse-test-oidc-cookie-key-0001'],
    },
    interactions: {
      url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
      deviceFlow: {
        enabled: true, userCodeInputSource, userCodeConfirmSource, successSource: deviceSuccessSource,
      },
      revocation: { enabled: true },
      introspection: { enabled: true },
      userinfo: { enabled: true },
    },
    loadExistingGrant,
    renderError,
    ttl,
  };
}

// ---------------------------------------------------------------- interactions

function loginPage({ uid, error, login }) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in to the test provider</h1>
${error ? `<p id="login-error" role="alert">${htmlEscape(error)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${htmlEscape(uid)}/login" autocomplete="off">
  <label for="login">Login</label>
  <input id="login" name="login" type="text" value="${htmlEscape(login)}" autofocus required>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" required>
  <button id="submit" type="submit">Sign in</button>
</form>
<p><a id="abort" href="/interaction/${htmlEscape(uid)}/abort">Cancel</a></p>
</body></html>`;
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
}

function readForm(req, limit = 64 * 1024) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

async function autoConsent(provider, req, res, details) {
  const { prompt: { details: missing }, params, session, grantId } = details;
  let grant = grantId ? await provider.Grant.find(grantId) : undefined;
  if (!grant) grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scope] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scope.join(' '));
    }
  }
  const id = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId: id } }, { mergeWithLastSubmission: true });
}

async function handleInteraction(provider, req, res, url) {
  const m = url.pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(\/(login|abort))?$/);
  if (!m) return send(res, 404, 'not found', 'text/plain');
  const [, uid, , action] = m;
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    return send(res, 400, `<!DOCTYPE html><p id="error">${htmlEscape(err.message)}</p>`);
  }
  if (details.uid !== uid) return send(res, 400, '<!DOCTYPE html><p id="error">interaction mismatch</p>');

  if (action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }

  const promptName = details.prompt.name;
  if (action === undefined && req.method === 'GET') {
    if (promptName === 'login') {
      return send(res, 200, loginPage({ uid, login: details.params.login_hint || '' }));
    }
    if (promptName === 'consent') return autoConsent(provider, req, res, details);
    return send(res, 501, `<!DOCTYPE html><p id="error">prompt ${htmlEscape(promptName)} not implemented</p>`);
  }

  if (action === 'login' && req.method === 'POST') {
    if (promptName !== 'login') return send(res, 400, '<!DOCTYPE html><p id="error">not a login prompt</p>');
    const form = await readForm(req);
    const login = form.get('login') || '';
    const password = form.get('password') || '';
    const acct = accounts.get(login);
    if (!acct || !safeEqual(password, acct.password)) {
      if (VERBOSE) process.stderr.write(`provider.mjs: rejected login for ${JSON.stringify(login)}\n`);
      return send(res, 401, loginPage({ uid, error: 'Invalid login or password.', login }));
    }
    const result = {
      login: {
        accountId: acct.sub ?? login,
        ...(acct.amr ? { amr: acct.amr } : {}),
        ...(acct.acr ? { acr: acct.acr } : {}),
      },
    };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  }
  return send(res, 405, 'method not allowed', 'text/plain');
}

// ---------------------------------------------------------------- server

let server;
if (config.tls) {
  const rel = (p) => path.resolve(configDir, p);
  server = https.createServer({ cert: fs.readFileSync(rel(config.tls.cert)), key: fs.readFileSync(rel(config.tls.key)) });
} else {
  server = http.createServer();
}

server.on('error', (err) => die(`server error: ${err.message}`));

server.listen(port, '127.0.0.1', () => {
  const actualPort = server.address().port;
  const scheme = config.tls ? 'https' : 'http';
  const issuer = config.issuer || `${scheme}://127.0.0.1:${actualPort}`;

  const provider = new Provider(issuer, providerConfiguration());
  for (const ev of ['server_error', 'authorization.error', 'grant.error', 'end_session.error',
    'userinfo.error', 'jwks.error', 'discovery.error', 'introspection.error', 'revocation.error']) {
    provider.on(ev, (ctx, err) => {
      const e = err || ctx;
      process.stderr.write(`provider.mjs: ${ev}: ${e?.error || e?.name || ''} ${e?.error_description || e?.message || ''}\n`);
    });
  }
  const callback = provider.callback();

  server.on('request', (req, res) => {
    const url = new URL(req.url, issuer);
    if (VERBOSE) {
      res.on('finish', () => process.stderr.write(`provider.mjs: ${req.method} ${req.url} -> ${res.statusCode}\n`));
    }
    if (url.pathname.startsWith('/interaction/')) {
      handleInteraction(provider, req, res, url).catch((err) => {
        process.stderr.write(`provider.mjs: interaction error: ${err.stack || err}\n`);
        if (!res.headersSent) send(res, 500, `<!DOCTYPE html><p id="error">${htmlEscape(err.message)}</p>`);
        else res.destroy();
      });
      return;
    }
    callback(req, res);
  });

  process.stdout.write(`READY ${issuer}\n`);
});

function shutdown() {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
