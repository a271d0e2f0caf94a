#!/usr/bin/env node
// Real-browser sign-in driver for Gatehouse end-to-end tests (playwright-core
// driving the system Chromium at /usr/bin/chromium; no browser download).
//
// Usage:
//   node chromium.mjs --url URL [--user alice --password secret]
//        [--map "MAP other.example 127.0.0.1"]... [--otp-secret BASE32]
//        [--timeout-ms 20000] [--screenshot out.png] [--executable /usr/bin/chromium]
//        [--click SELECTOR]
//
// Opens URL in a fresh headless profile (app.test and *.test resolve to
// 127.0.0.1, plus every --map rule; certificate errors are ignored), then
// fills whichever sign-in form shows up, each at most once:
//   * provider.mjs's form:           #login, #password, click #submit
//   * Gatehouse's built-in dev form: #username, #password, click #sign-in
//   * a second step:                 #otp (TOTP from --otp-secret), click #verify
// then waits (up to the timeout) to be back on URL's origin, clicks SELECTOR if
// --click names one (following the navigation it starts), and prints, as
// the LAST line of stdout, one JSON object:
//   {"url": page.url(), "status": last main-frame response status (0 if none),
//    "text": document.body.innerText (at most 16 KiB), "steps": [...forms filled],
//    "login_rejected": bool, "error": string or null}
// Exit code 0 whenever it ran (whatever the page shows); nonzero only on bad
// arguments or when the browser could not be started.

import * as crypto from 'node:crypto';
import { chromium } from 'playwright-core';

const TEXT_LIMIT = 16 * 1024;

function usage(msg) {
  if (msg) process.stderr.write(`chromium.mjs: ${msg}\n`);
  process.stderr.write('usage: node chromium.mjs --url URL [--user U --password P] '
    + '[--map "MAP host 127.0.0.1"]... [--otp-secret BASE32] [--header "Name: value"]... [--timeout-ms 20000] '
    + '[--screenshot FILE] [--executable /usr/bin/chromium] [--click SELECTOR]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    url: null, user: null, password: null, maps: [], otpSecret: null,
    timeoutMs: 20000, screenshot: null, executable: '/usr/bin/chromium', headers: {},
    click: null,
  };
  const need = (i) => {
    if (i + 1 >= argv.length) usage(`${argv[i]} needs a value`);
    return argv[i + 1];
  };
  for (let i = 0; i < argv.length; i += 2) {
    const a = argv[i];
    switch (a) {
      case '--url': opts.url = need(i); break;
      case '--user': opts.user = need(i); break;
      case '--password': opts.password = need(i); break;
      case '--map': opts.maps.push(need(i)); break;
      case '--otp-secret': opts.otpSecret = need(i); break;
      case '--timeout-ms': opts.timeoutMs = Number(need(i)); break;
      case '--screenshot': opts.screenshot = need(i); break;
      case '--executable': opts.executable = need(i); break;
      case '--click': opts.click = need(i); break;
      case '--header': {
        // "Name: value", sent with every request (e.g. an admin token).
        const h = need(i);
        const at = h.indexOf(':');
        if (at <= 0) usage(`--header needs "Name: value", not ${h}`);
        opts.headers[h.slice(0, at).trim()] = h.slice(at + 1).trim();
        break;
      }
      case '-h': case '--help': usage(); break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (!opts.url) usage('--url is required');
  if (!Number.isFinite(opts.timeoutMs) || opts.timeoutMs <= 0) usage('bad --timeout-ms');
  return opts;
}

// RFC 4648 base32 (no padding needed) -> Buffer.
function base32Decode(s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const clean = s.toUpperCase().replace(/[\s=-]/g, '');
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of clean) {
    const idx = alphabet.indexOf(ch);
    if (idx < 0) throw new Error(`invalid base32 character ${JSON.stringify(ch)}`);
    value = (value << 5) | idx;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

// RFC 6238 TOTP: HMAC-SHA1, 30 s step, 6 digits.
export function totp(secretB32, atMs = Date.now(), step = 30, digits = 6) {
  const counter = BigInt(Math.floor(atMs / 1000 / step));
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(counter);
  const mac = crypto.createHmac('sha1', base32Decode(secretB32)).update(msg).digest();
  const off = mac[mac.length - 1] & 0x0f;
  const code = (mac.readUInt32BE(off) & 0x7fffffff) % 10 ** digits;
  return String(code).padStart(digits, '0');
}

async function visible(page, selector) {
  try {
    return await page.locator(selector).first().isVisible();
  } catch {
    return false;
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const appOrigin = new URL(opts.url).origin;
  const rules = ['MAP app.test 127.0.0.1', 'MAP *.test 127.0.0.1', ...opts.maps].join(', ');

  let browser;
  try {
    browser = await chromium.launch({
      executablePath: opts.executable,
      headless: true,
      timeout: opts.timeoutMs,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        `--host-resolver-rules=${rules}`,
      ],
    });
  } catch (err) {
    process.stderr.write(`chromium.mjs: cannot start the browser: ${err.message}\n`);
    process.exit(3);
  }

  const result = {
    url: '', status: 0, text: '', steps: [], login_rejected: false, error: null,
  };
  try {
    const context = await browser.newContext({
      ignoreHTTPSErrors: true, extraHTTPHeaders: opts.headers,
    });
    context.setDefaultTimeout(opts.timeoutMs);
    context.setDefaultNavigationTimeout(opts.timeoutMs);
    const page = await context.newPage();

    page.on('response', (resp) => {
      try {
        if (resp.frame() === page.mainFrame() && resp.request().isNavigationRequest()) {
          result.status = resp.status();
        }
      } catch { /* frame detached */ }
    });

    const deadline = Date.now() + opts.timeoutMs;
    const remaining = () => Math.max(1000, deadline - Date.now());

    try {
      await page.goto(opts.url, { waitUntil: 'load', timeout: remaining() });
    } catch (err) {
      result.error = `goto: ${err.message.split('\n')[0]}`;
    }

    const done = new Set();
    // Each form kind at most once; a kind seen again after filling it = rejected.
    const forms = [
      {
        kind: 'gatehouse-login', detect: ['#username', '#password'], submit: '#sign-in',
        fill: async () => {
          await page.fill('#username', opts.user ?? '');
          await page.fill('#password', opts.password ?? '');
        },
        needs: () => opts.user !== null && opts.password !== null,
      },
      {
        kind: 'provider-login', detect: ['#login', '#password'], submit: '#submit',
        fill: async () => {
          await page.fill('#login', opts.user ?? '');
          await page.fill('#password', opts.password ?? '');
        },
        needs: () => opts.user !== null && opts.password !== null,
      },
      {
        kind: 'otp', detect: ['#otp'], submit: '#verify',
        fill: async () => { await page.fill('#otp', totp(opts.otpSecret)); },
        needs: () => opts.otpSecret !== null,
      },
    ];

    for (let round = 0; result.error === null && round < 8 && Date.now() < deadline; round += 1) {
      try {
        await page.waitForLoadState('load', { timeout: remaining() });
      } catch { /* keep going with whatever is there */ }
      let form = null;
      for (const f of forms) {
        const present = (await Promise.all(f.detect.map((s) => visible(page, s)))).every(Boolean);
        if (present) { form = f; break; }
      }
      if (form === null) break;
      if (done.has(form.kind)) { result.login_rejected = true; break; }
      if (!form.needs()) break;
      done.add(form.kind);
      result.steps.push(form.kind);
      await form.fill();
      const before = page.url();
      const nav = page.waitForNavigation({ timeout: remaining(), waitUntil: 'load' }).catch(() => null);
      await page.click(form.submit, { timeout: remaining() });
      const navigated = await nav;
      if (navigated === null && page.url() === before) {
        // Same document (e.g. a script-driven form): give it a moment, then re-check.
        await page.waitForTimeout(250);
      }
    }

    // Wait to be back on the app (e.g. after the last redirect chain).
    if (result.error === null && !result.login_rejected && new URL(page.url()).origin !== appOrigin) {
      try {
        await page.waitForURL((u) => u.origin === appOrigin, { timeout: Math.min(remaining(), 5000), waitUntil: 'load' });
      } catch { /* report wherever we are */ }
    }

    if (result.error === null && opts.click !== null) {
      try {
        const nav = page.waitForNavigation({ timeout: remaining(), waitUntil: 'load' });
        await page.click(opts.click, { timeout: remaining() });
        await nav;
        result.steps.push(`click ${opts.click}`);
      } catch (err) {
        result.error = `click: ${err.message.split('\n')[0]}`;
      }
    }

    result.url = page.url();
    try {
      const text = await page.evaluate(() => (document.body ? document.body.innerText : ''));
      result.text = Buffer.from(text, 'utf8').subarray(0, TEXT_LIMIT).toString('utf8').replace(/\uFFFD$/, '');
    } catch (err) {
      if (result.error === null) result.error = `innerText: ${err.message.split('\n')[0]}`;
    }
    if (opts.screenshot) {
      await page.screenshot({ path: opts.screenshot, fullPage: true }).catch(() => {});
    }
  } catch (err) {
    result.error = err.message.split('\n')[0];
  } finally {
    await browser.close().catch(() => {});
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(`chromium.mjs: ${err.stack || err}\n`);
  process.exit(1);
});
