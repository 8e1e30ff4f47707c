// NodePanel (a real third-party NodePass frontend, static build in ../shared/fixtures/nodepanel)
// driven in headless Chromium against a master, as an operator would use it: every step of
// issue 10 (list, master version and system, create a server and a client through the UI, see
// them running, carry traffic, see traffic figures, stop/start/restart, live logs in the details
// window, delete).
//
// Input (environment): NP_API (the master's API base, e.g. http://127.0.0.1:9090/api/v1),
// NP_KEY (its API key), NP_SITE (the NodePanel build), NP_SCREENS (where screenshots go),
// NP_LABEL (a name for this run, used in file names), CHROMIUM (default /usr/bin/chromium).
// Every address used is on loopback. Every wait is bounded. Exit status 0 only when every step
// passed; the summary names each step with PASS or FAIL.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { startEcho, pushThrough, freePort, serveStatic, need } from './support.mjs';

const API = need('NP_API');
const KEY = need('NP_KEY');
const SITE = need('NP_SITE');
const SCREENS = need('NP_SCREENS');
const LABEL = process.env.NP_LABEL || 'run';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TUNNEL_KEY = 'nodepanel-harness-tunnel-key';
const STEP_TIMEOUT = 120_000;

fs.mkdirSync(SCREENS, { recursive: true });

/** The master's API, used only to check what the UI did and to find ids. */
async function api(method, p, body) {
  const res = await fetch(API + p, {
    method,
    headers: { 'X-API-Key': KEY, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let json;
  try { json = text ? JSON.parse(text) : undefined; } catch { json = text; }
  return { status: res.status, json };
}

async function until(what, fn, ms = 45_000) {
  const deadline = Date.now() + ms;
  let last;
  for (let i = 0; Date.now() < deadline && i < 1000; i++) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (e) { last = e.message; }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what}: not within ${ms} ms (last: ${JSON.stringify(last)?.slice(0, 300)})`);
}

const results = [];
let shot = 0;
const pageErrors = [];

async function screenshot(page, name) {
  shot += 1;
  const file = path.join(SCREENS, `${LABEL}-${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true }).catch(() => {});
  return file;
}

async function step(page, name, fn, requires = []) {
  const started = Date.now();
  const missing = requires.filter((r) => !results.find((x) => x.name === r)?.ok);
  if (missing.length) {
    results.push({ name, ok: false, why: `not run: ${missing.join(', ')} failed` });
    console.log(`FAIL ${name}: not run (${missing.join(', ')} failed)`);
    return;
  }
  try {
    await Promise.race([
      fn(),
      new Promise((_, rej) => setTimeout(() => rej(new Error('step timed out')), STEP_TIMEOUT)),
    ]);
    await screenshot(page, name);
    results.push({ name, ok: true, ms: Date.now() - started });
    console.log(`PASS ${name}`);
  } catch (e) {
    await screenshot(page, `${name}-FAILED`);
    results.push({ name, ok: false, why: e.message.split('\n')[0] });
    console.log(`FAIL ${name}: ${e.message.split('\n').slice(0, 4).join(' | ')}`);
    // Leave any dialog so the next step starts from the overview.
    await page.keyboard.press('Escape').catch(() => {});
  }
}

const echo = await startEcho();
const site = await serveStatic(SITE);
const tunnelPort = await freePort();
const clientPort = await freePort();

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  timeout: 60_000,
});
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
page.setDefaultTimeout(15_000);
page.on('pageerror', (e) => { pageErrors.push(e.message); console.log(`pageerror: ${e.message}`); });
await page.addInitScript(([apiUrl, token]) => {
  if (!localStorage.getItem('nodepass_api_configs_list')) {
    localStorage.setItem('nodepass_api_configs_list', JSON.stringify([{
      id: 'harness-master', name: 'harness master', apiUrl, token,
      masterDefaultLogLevel: 'info', masterDefaultTlsMode: '0',
    }]));
    localStorage.setItem('nodepass_active_api_config_id', 'harness-master');
  }
}, [API, KEY]);

const row = (text) => page.locator('tbody tr', { hasText: text });
const ids = {};

async function home() {
  await page.goto(`${site.url}/`);
  await page.getByText('Instance Overview').waitFor();
}

async function createViaDialog(type, alias, tunnel, target) {
  await page.getByRole('button', { name: 'Create New Instance' }).click();
  const d = page.getByRole('dialog');
  await d.waitFor();
  if (type === 'Server') {
    await d.getByRole('combobox').first().click();
    await page.getByRole('option', { name: 'Server', exact: true }).click();
  }
  await d.locator('input[name=alias]').fill(alias);
  await d.locator('input[name=tunnelKey]').fill(TUNNEL_KEY);
  await d.locator('input[name=tunnelAddress]').fill(tunnel);
  await d.locator('input[name=targetAddress]').fill(target);
  await d.getByRole('button', { name: 'Create Instance' }).click();
  await d.waitFor({ state: 'detached' });
}

/** The id of the instance whose URL names `needle`, from the master. */
async function idOf(needle) {
  return until(`an instance with ${needle} in its url`, async () => {
    const { json } = await api('GET', '/instances');
    return Array.isArray(json) ? json.find((i) => i.id !== '********' && String(i.url).includes(needle))?.id : undefined;
  });
}

async function rowStatus(id, want) {
  await until(`${id} shows ${want}`, async () => (await row(id).innerText()).includes(want));
}

async function action(id, name) {
  await row(id).getByRole('button', { name: 'Manage Instance' }).click();
  await page.getByRole('menuitem', { name, exact: true }).click();
}

/** Both `↓ a / ↑ b` figures of a row, as shown. */
async function usage(id) {
  const cells = await row(id).locator('td').allInnerTexts();
  return cells.find((c) => /\d+(\.\d+)?\s*[KMG]?B/.test(c) && c.includes('/'))?.replace(/\s+/g, ' ') ?? '';
}

await step(page, 'list', async () => {
  await home();
  await row('********').waitFor();
  if (!(await row('********').innerText()).includes('API Key')) throw new Error('no API Key row');
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join('; ')}`);
});

await step(page, 'master-version-and-system', async () => {
  await page.getByRole('button', { name: 'Application Settings' }).click();
  await page.getByRole('menuitem', { name: 'Manage All Controllers' }).click();
  const r = page.locator('tbody tr', { hasText: 'harness master' });
  await until('version and system info shown', async () => {
    const t = await r.innerText();
    return /v1\.\d+\.\d+/.test(t) && /linux\s+(amd64|arm64)/.test(t) ? t : false;
  });
  await page.locator('a[href="/"]').first().click();
  await page.getByText('Instance Overview').waitFor();
}, ['list']);

await step(page, 'create-server', async () => {
  await createViaDialog('Server', 'np-server', `127.0.0.1:${tunnelPort}`, `127.0.0.1:${echo.port}`);
  ids.server = await idOf(`:${tunnelPort}/127.0.0.1:${echo.port}`);
  await row(ids.server).waitFor();
}, ['list']);

await step(page, 'create-client', async () => {
  await createViaDialog('Client', 'np-client', `127.0.0.1:${tunnelPort}`, String(clientPort));
  ids.client = await idOf(`:${clientPort}`);
  await row(ids.client).waitFor();
}, ['create-server']);

await step(page, 'running', async () => {
  await rowStatus(ids.server, 'Running');
  await rowStatus(ids.client, 'Running');
}, ['create-server', 'create-client']);

await step(page, 'carry-traffic', async () => {
  await until('256 KiB echoed through the tunnel', () => pushThrough(clientPort, 256 * 1024), 30_000);
}, ['running']);

await step(page, 'traffic-figures', async () => {
  await until('non-zero usage on the client row', async () => {
    const u = await usage(ids.client);
    return /[1-9]/.test(u) ? u : false;
  }, 30_000);
  await until('non-zero usage on the server row', async () => /[1-9]/.test(await usage(ids.server)), 30_000);
}, ['carry-traffic']);

await step(page, 'traffic-statistics-page', async () => {
  await page.getByRole('button', { name: 'Application Settings' }).click();
  await page.getByRole('menuitem', { name: 'Traffic Statistics' }).click();
  await until('both instances listed with traffic', async () => {
    const t = await page.innerText('body');
    return t.includes(ids.server) && t.includes(ids.client) && /[1-9][\d.]*\s*(Bytes|KB|MB)/.test(t);
  });
  await page.locator('a[href="/"]').first().click();
  await page.getByText('Instance Overview').waitFor();
}, ['carry-traffic']);

await step(page, 'stop', async () => {
  await action(ids.client, 'Stop');
  await rowStatus(ids.client, 'Stopped');
  const { json } = await api('GET', `/instances/${ids.client}`);
  if (json.status !== 'stopped') throw new Error(`master says ${json.status}`);
}, ['running']);

await step(page, 'start', async () => {
  await action(ids.client, 'Start');
  await rowStatus(ids.client, 'Running');
  await until('traffic again after start', () => pushThrough(clientPort, 64 * 1024), 60_000);
}, ['stop']);

await step(page, 'restart', async () => {
  await action(ids.server, 'Restart');
  await rowStatus(ids.server, 'Running');
  await until('traffic again after restart', () => pushThrough(clientPort, 64 * 1024), 60_000);
}, ['running']);

await step(page, 'details-live-logs', async () => {
  await action(ids.server, 'View Details');
  const d = page.getByRole('dialog');
  await d.getByText('Instance Logs').waitFor();
  const t = await d.innerText();
  if (!t.includes(ids.server)) throw new Error('details window does not name the instance');
  if (!/TCP Traffic[^\n]*\n?[^\n]*[1-9]/.test(t)) throw new Error(`no traffic figures in details: ${t.slice(0, 400)}`);
  const logLines = async () => (await d.innerText()).split('Instance Logs')[1] ?? '';
  const before = await logLines();
  // Something happens while the window is open: the instance restarts (through the API, since
  // the window is modal) and traffic flows; its log lines must arrive live.
  const r = await api('PATCH', `/instances/${ids.server}`, { action: 'restart' });
  if (r.status !== 200) throw new Error(`restart via API: ${r.status}`);
  await until('new log lines in the details window', async () => {
    const now = await logLines();
    const lines = now.split('\n').filter((l) => /^(INFO|WARN|ERROR|DEBUG|EVENT)$/.test(l.trim())).length;
    const was = before.split('\n').filter((l) => /^(INFO|WARN|ERROR|DEBUG|EVENT)$/.test(l.trim())).length;
    return lines > was + 1 ? now : false;
  });
  await screenshot(page, 'details-window');
  await d.getByRole('button', { name: 'Close' }).first().click();
  await d.waitFor({ state: 'detached' });
}, ['create-server']);

await step(page, 'delete', async () => {
  for (const id of [ids.client, ids.server]) {
    await action(id, 'Delete');
    const confirm = page.getByRole('alertdialog').or(page.getByRole('dialog'));
    await confirm.getByRole('button', { name: 'Delete', exact: true }).click();
    await row(id).waitFor({ state: 'detached' });
    const { status } = await api('GET', `/instances/${id}`);
    if (status !== 404) throw new Error(`${id} still on the master (${status})`);
  }
}, ['create-server']);

await step(page, 'no-page-errors', async () => {
  if (pageErrors.length) throw new Error(pageErrors.join('; '));
});

await browser.close();
site.server.close();
echo.server.close();

console.log(`\nNodePanel against ${LABEL}:`);
for (const r of results) console.log(`  ${r.ok ? 'PASS' : 'FAIL'}  ${r.name}${r.ok ? '' : `  (${r.why})`}`);
const failed = results.filter((r) => !r.ok).length;
console.log(`${results.length - failed}/${results.length} steps passed; screenshots in ${SCREENS}`);
process.exit(failed ? 1 : 0);
