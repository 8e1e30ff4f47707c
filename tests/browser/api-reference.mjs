// The integration examples of the NodePass API reference (../shared/reference/
// nodepass-api-reference.md), run against our master in the `api=envelope` dialect: create,
// status monitoring, control, traffic statistics, caching, health checks, bulk control,
// re-registration after a master restart, and recovery by URL.
//
// The example functions below are the reference's code, unchanged except:
//  - `checkAndRestoreInstances` is declared `async` (the reference uses `await` in a plain
//    function, which is a syntax error);
//  - the helpers the reference leaves to the reader (`createInstance`, `saveInstanceConfig`,
//    `updateInstanceStatus`, ...) are defined here to record what they are given;
//  - `fetch` adds the master's API key, as the authenticating reverse proxy the reference
//    recommends would (its examples send none).
//
// Input (environment): NP_EXE (the nodepass executable). It starts the master itself
// (master://127.0.0.1:PORT/api?api=envelope&log=debug), restarts it twice, and exits 0 only
// when every check passed. Everything stays on loopback; every wait is bounded.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startEcho, pushThrough, freePort, need } from './support.mjs';

const EXE = need('NP_EXE');
const KEY = 'api-reference-example-key-3f9d';
const PORT = await freePort();
const API_URL = `http://127.0.0.1:${PORT}/api`;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'np-api-reference-'));

const realFetch = globalThis.fetch;
globalThis.fetch = (url, options = {}) => realFetch(url, {
  ...options,
  headers: { ...(options.headers || {}), 'X-API-Key': KEY },
  signal: AbortSignal.timeout(10_000),
});

// --- The master process. -------------------------------------------------------------------
let master;
async function startMaster(stateName) {
  const url = `master://127.0.0.1:${PORT}/api?api=envelope&log=debug&state=${path.join(work, stateName)}`;
  master = spawn(EXE, [url], { env: { ...process.env, NODEPASS_API_KEY: KEY }, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`master did not start: ${log}`)), 30_000);
    master.stderr.on('data', (d) => {
      log += d;
      if (log.includes('listening on')) { clearTimeout(timer); resolve(); }
    });
    master.on('exit', (c) => { clearTimeout(timer); reject(new Error(`master exited ${c}: ${log}`)); });
  });
}
async function stopMaster() {
  const exited = new Promise((r) => master.once('exit', r));
  master.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
}

// --- What the reference leaves to the reader. -----------------------------------------------
let storedInstances = [];
const saved = [];
const statusSeen = {};
const metricsSeen = {};
const unreachable = [];
const idUpdates = [];
let creations = 0;
function saveInstanceConfig(c) { saved.push(c); }
function updateInstanceStatus(id, status) { (statusSeen[id] ||= []).push(status); }
function updateInstanceMetrics(id, m) { (metricsSeen[id] ||= []).push(m); }
function markInstanceUnreachable(id) { unreachable.push(id); }
function updateStoredInstanceId(oldId, newId) {
  idUpdates.push([oldId, newId]);
  const s = storedInstances.find((i) => i.id === oldId);
  if (s) s.id = newId;
}
async function createInstance(url) {
  creations += 1;
  const response = await fetch(`${API_URL}/v1/instances`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ url }),
  });
  return response.json();
}

// --- The reference's examples (unchanged but for `async` on checkAndRestoreInstances). ------
async function checkAndRestoreInstances() {
  try {
    // Simple health check to detect if master is running
    const response = await fetch(`${API_URL}/v1/instances`);

    if (response.status === 200) {
      const data = await response.json();

      // If no instances but we have stored configs, master likely restarted
      if (data.data.instances.length === 0 && storedInstances.length > 0) {
        console.log("Detected master restart, re-registering instances...");

        for (const instance of storedInstances) {
          const newInstance = await createInstance(instance.url);
          // Update stored ID with newly assigned ID
          updateStoredInstanceId(instance.id, newInstance.data.id);
        }
      }
    }
  } catch (error) {
    console.error("NodePass master unreachable:", error);
  }
}

async function createNodePassInstance(config) {
  const response = await fetch(`${API_URL}/v1/instances`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      url: `server://0.0.0.0:${config.port}/${config.target}?tls=${config.tls}`
    })
  });

  const data = await response.json();

  // Store in frontend persistence
  saveInstanceConfig({
    id: data.data.id,
    originalConfig: config,
    url: data.data.url
  });

  return data;
}

function startInstanceMonitoring(instanceId, interval = 5000) {
  return setInterval(async () => {
    try {
      const response = await fetch(`${API_URL}/v1/instances/${instanceId}`);
      const data = await response.json();

      if (data.success) {
        updateInstanceStatus(instanceId, data.data.status);
        updateInstanceMetrics(instanceId, {
          connections: data.data.connections,
          pool_size: data.data.pool_size,
          uptime: data.data.uptime
        });
      }
    } catch (error) {
      markInstanceUnreachable(instanceId);
    }
  }, interval);
}

async function controlInstance(instanceId, action) {
  // action can be: start, stop, restart
  const response = await fetch(`${API_URL}/v1/instances/${instanceId}`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ action })
  });

  const data = await response.json();
  return data.success;
}

const previousStats = {};
function processTrafficStats(instanceId, currentStats) {
  // Store the current timestamp
  const timestamp = Date.now();

  // If we have previous stats for this instance, calculate the difference
  if (previousStats[instanceId]) {
    const timeDiff = timestamp - previousStats[instanceId].timestamp;
    const tcpInDiff = currentStats.tcp_in - previousStats[instanceId].tcp_in;
    const tcpOutDiff = currentStats.tcp_out - previousStats[instanceId].tcp_out;
    const udpInDiff = currentStats.udp_in - previousStats[instanceId].udp_in;
    const udpOutDiff = currentStats.udp_out - previousStats[instanceId].udp_out;

    // Store historical data for graphs
    storeTrafficHistory(instanceId, {
      timestamp,
      tcp_in_rate: tcpInDiff / timeDiff * 1000, // bytes per second
      tcp_out_rate: tcpOutDiff / timeDiff * 1000,
      udp_in_rate: udpInDiff / timeDiff * 1000,
      udp_out_rate: udpOutDiff / timeDiff * 1000
    });
  }

  // Update the previous stats for next calculation
  previousStats[instanceId] = {
    timestamp,
    tcp_in: currentStats.tcp_in,
    tcp_out: currentStats.tcp_out,
    udp_in: currentStats.udp_in,
    udp_out: currentStats.udp_out
  };
}

const trafficHistory = {};
function storeTrafficHistory(instanceId, metrics) {
  if (!trafficHistory[instanceId]) {
    trafficHistory[instanceId] = {
      timestamps: [],
      tcp_in_rates: [],
      tcp_out_rates: [],
      udp_in_rates: [],
      udp_out_rates: []
    };
  }

  trafficHistory[instanceId].timestamps.push(metrics.timestamp);
  trafficHistory[instanceId].tcp_in_rates.push(metrics.tcp_in_rate);
  trafficHistory[instanceId].tcp_out_rates.push(metrics.tcp_out_rate);
  trafficHistory[instanceId].udp_in_rates.push(metrics.udp_in_rate);
  trafficHistory[instanceId].udp_out_rates.push(metrics.udp_out_rate);

  // Keep history size manageable
  const MAX_HISTORY = 1000;
  if (trafficHistory[instanceId].timestamps.length > MAX_HISTORY) {
    trafficHistory[instanceId].timestamps.shift();
    trafficHistory[instanceId].tcp_in_rates.shift();
    trafficHistory[instanceId].tcp_out_rates.shift();
    trafficHistory[instanceId].udp_in_rates.shift();
    trafficHistory[instanceId].udp_out_rates.shift();
  }
}

function findInstanceByUrl(url) {
  return storedInstances.find(instance => instance.url === url);
}

const instanceMapping = {};
function updateInstanceMapping(appInstanceId, nodepassInstanceId) {
  instanceMapping[appInstanceId] = nodepassInstanceId;
}
function getNodePassId(appInstanceId) {
  return instanceMapping[appInstanceId];
}

async function recoverInstances() {
  // Get all current instances from NodePass
  const response = await fetch(`${API_URL}/v1/instances`);
  const data = await response.json();

  // Match instances by URL
  for (const storedInstance of storedInstances) {
    const matchingInstance = data.data.instances.find(
      instance => instance.url === storedInstance.url
    );

    if (matchingInstance) {
      // Update the ID mapping
      updateInstanceMapping(storedInstance.appId, matchingInstance.id);
    } else {
      // Instance doesn't exist, recreate it
      const newInstance = await createInstance(storedInstance.url);
      updateInstanceMapping(storedInstance.appId, newInstance.data.id);
    }
  }
}

async function bulkControlInstances(instanceIds, action) {
  const promises = instanceIds.map(id => controlInstance(id, action));
  return Promise.all(promises);
}

const instanceCache = new Map();
const CACHE_TTL = 60000; // 1 minute
async function getCachedInstance(id) {
  const now = Date.now();
  const cached = instanceCache.get(id);

  if (cached && now - cached.timestamp < CACHE_TTL) {
    return cached.data;
  }

  const response = await fetch(`${API_URL}/v1/instances/${id}`);
  const data = await response.json();

  instanceCache.set(id, {
    data: data.data,
    timestamp: now
  });

  return data.data;
}

async function isApiHealthy() {
  try {
    const response = await fetch(`${API_URL}/v1/instances`, {
      method: 'GET',
      timeout: 5000 // 5 second timeout
    });

    return response.status === 200;
  } catch (error) {
    return false;
  }
}

async function checkInstanceHealth(id) {
  try {
    const response = await fetch(`${API_URL}/v1/instances/${id}`);
    const data = await response.json();

    if (!data.success) return false;

    return data.data.status === 'running';
  } catch (error) {
    return false;
  }
}

// --- The checks. -----------------------------------------------------------------------------
const results = [];
async function check(name, fn) {
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`PASS ${name}`);
  } catch (e) {
    results.push({ name, ok: false, why: e.message });
    console.log(`FAIL ${name}: ${e.message}`);
  }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }
async function until(what, fn, ms = 60_000) {
  const deadline = Date.now() + ms;
  for (let i = 0; Date.now() < deadline && i < 2000; i++) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

const echo = await startEcho();
const tunnelPort = await freePort();
const usersPort = await freePort();
const ids = {};

try {
  await startMaster('a.db');

  await check('health check: isApiHealthy', async () => {
    assert(await isApiHealthy() === true, 'isApiHealthy() is not true');
  });

  await check('creation: createNodePassInstance', async () => {
    const data = await createNodePassInstance({ port: tunnelPort, target: `127.0.0.1:${echo.port}`, tls: 0 });
    assert(data.success === true, `success is ${data.success}: ${JSON.stringify(data)}`);
    assert(typeof data.data.id === 'string' && data.data.id, 'no data.id');
    assert(saved[0].url === data.data.url && typeof data.data.url === 'string', 'url not stored');
    ids.server = data.data.id;
    // mode=2: this client must always connect to the server. In the default auto mode a client
    // restarted while its server is down (bulk control restarts both at once) could bind the
    // free tunnel port as a single-end forwarder and keep the server from binding it.
    const client = await createInstance(`client://127.0.0.1:${tunnelPort}/127.0.0.1:${usersPort}?mode=2`);
    assert(client.success === true, `client: ${JSON.stringify(client)}`);
    ids.client = client.data.id;
    storedInstances = [
      { id: ids.server, appId: 'app-server', url: data.data.url },
      { id: ids.client, appId: 'app-client', url: client.data.url },
    ];
  });

  await check('monitoring: startInstanceMonitoring sees running', async () => {
    const timers = [startInstanceMonitoring(ids.server, 200), startInstanceMonitoring(ids.client, 200)];
    try {
      await until('both running', () => statusSeen[ids.server]?.includes('running') && statusSeen[ids.client]?.includes('running'));
      const m = metricsSeen[ids.client].at(-1);
      for (const f of ['connections', 'pool_size', 'uptime']) {
        assert(typeof m[f] === 'number', `${f} is ${JSON.stringify(m[f])}`);
      }
      assert(unreachable.length === 0, `unreachable: ${unreachable}`);
    } finally {
      timers.forEach(clearInterval);
    }
  });

  await check('traffic statistics: processTrafficStats', async () => {
    processTrafficStats(ids.client, await getCachedInstance(ids.client));
    await until('traffic through the tunnel', () => pushThrough(usersPort, 128 * 1024));
    await until('tcp_in counted', async () => {
      const r = await (await fetch(`${API_URL}/v1/instances/${ids.client}`)).json();
      processTrafficStats(ids.client, r.data);
      return previousStats[ids.client].tcp_in > 0;
    });
    const h = trafficHistory[ids.client];
    assert(h && h.tcp_in_rates.some((x) => x > 0), `no positive tcp_in rate: ${JSON.stringify(h)}`);
    for (const f of ['tcp_in', 'tcp_out', 'udp_in', 'udp_out']) {
      assert(Number.isFinite(previousStats[ids.client][f]), `${f} is ${previousStats[ids.client][f]}`);
    }
  });

  await check('control: controlInstance stop/start/restart', async () => {
    assert(await controlInstance(ids.client, 'stop') === true, 'stop');
    await until('stopped', async () => !(await checkInstanceHealth(ids.client)));
    assert(await controlInstance(ids.client, 'start') === true, 'start');
    await until('running after start', () => checkInstanceHealth(ids.client));
    assert(await controlInstance(ids.server, 'restart') === true, 'restart');
    await until('running after restart', () => checkInstanceHealth(ids.server));
    await until('traffic after restart', () => pushThrough(usersPort, 32 * 1024));
    assert(await controlInstance(ids.server, 'bogus') === false, 'an unknown action succeeded');
  });

  await check('bulk control and caching', async () => {
    const all = await bulkControlInstances([ids.server, ids.client], 'restart');
    assert(all.every((x) => x === true), `bulk restart: ${all}`);
    const c = await getCachedInstance(ids.server);
    assert(c.id === ids.server, `cached ${JSON.stringify(c)}`);
    try {
      await until('both healthy', async () => (await checkInstanceHealth(ids.server)) && (await checkInstanceHealth(ids.client)), 60_000);
    } catch (e) {
      const st = async (id) => (await (await fetch(`${API_URL}/v1/instances/${id}`)).json()).data;
      const [a, b] = [await st(ids.server), await st(ids.client)];
      throw new Error(`${e.message}; server ${a.status} (${a.state ?? ''} ${a.error ?? ''}), client ${b.status} (${b.state ?? ''} ${b.error ?? ''})`);
    }
  });

  await check('instance health: checkInstanceHealth of an unknown id is false', async () => {
    assert(await checkInstanceHealth('no-such-instance') === false, 'true for an unknown id');
  });

  await check('recovery by URL after a master restart (state kept)', async () => {
    await stopMaster();
    await startMaster('a.db');
    const before = creations;
    await recoverInstances();
    assert(creations === before, `recreated ${creations - before} instances that still existed`);
    assert(getNodePassId('app-server') === ids.server && getNodePassId('app-client') === ids.client,
      `mapping ${JSON.stringify(instanceMapping)}`);
    assert(findInstanceByUrl(storedInstances[0].url) !== undefined, 'findInstanceByUrl');
    await until('traffic after the master restart', () => pushThrough(usersPort, 32 * 1024));
  });

  await check('re-registration after a restart that lost every instance', async () => {
    await stopMaster();
    await startMaster('b.db'); // a fresh state: what NodePass does on every restart
    await checkAndRestoreInstances();
    assert(idUpdates.length === 2, `re-registered ${idUpdates.length} of 2`);
    for (const s of storedInstances) {
      await until(`${s.appId} running again`, () => checkInstanceHealth(s.id));
    }
    await until('traffic after re-registration', () => pushThrough(usersPort, 32 * 1024));
  });
} catch (e) {
  results.push({ name: 'setup', ok: false, why: e.message });
  console.log(`FAIL setup: ${e.message}`);
} finally {
  if (master && master.exitCode === null) await stopMaster();
  echo.server.close();
  fs.rmSync(work, { recursive: true, force: true });
}

console.log('\nAPI reference examples against api=envelope:');
for (const r of results) console.log(`  ${r.ok ? 'PASS' : 'FAIL'}  ${r.name}${r.ok ? '' : `  (${r.why})`}`);
const failed = results.filter((r) => !r.ok).length;
console.log(`${results.length - failed}/${results.length} passed`);
process.exit(failed ? 1 : 0);
