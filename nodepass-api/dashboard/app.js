// NodePass dashboard: plain JavaScript, no build step. Talks only to the master that served it
// (API prefix from <meta name="np-api">), signed in with a session cookie; charts with uPlot.
"use strict";
(() => {
  const API = document.querySelector('meta[name="np-api"]').content || "";
  const $main = document.getElementById("main");
  const state = {
    csrf: null, instances: new Map(), live: new Map(), logs: new Map(),
    info: null, es: null, total: [], view: null,
  };
  const LIVE_POINTS = 720; // 1 h at one point per 5 s

  // ---- small helpers -------------------------------------------------------------------
  const h = (tag, attrs = {}, ...kids) => {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "text") el.textContent = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) if (kid !== null && kid !== undefined && kid !== false)
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    return el;
  };
  const bytes = (n) => {
    if (n === null || n === undefined || isNaN(n)) return "–";
    const u = ["B", "KB", "MB", "GB", "TB", "PB"];
    let i = 0; n = Number(n);
    while (Math.abs(n) >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(n < 10 ? 2 : 1) : n.toFixed(0)) + " " + u[i];
  };
  const rate = (n) => (n === null || n === undefined) ? "–" : bytes(n) + "/s";
  const dur = (s) => {
    if (!s && s !== 0) return "–";
    s = Math.floor(s);
    const d = Math.floor(s / 86400), hh = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return d ? `${d}d ${hh}h` : hh ? `${hh}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
  };
  const toast = (msg) => {
    const t = document.getElementById("toast");
    t.textContent = msg; t.classList.add("show");
    clearTimeout(toast.timer); toast.timer = setTimeout(() => t.classList.remove("show"), 3500);
  };
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  // ---- API -----------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  async function api(method, path, body) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
    const res = await fetch(API + path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 204) return null;
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { json = text; }
    if (!res.ok) {
      let msg = json && json.error !== undefined ? json.error : json;
      if (msg && typeof msg === "object") msg = msg.message || JSON.stringify(msg);
      if (res.status === 401 && path !== "/v1/session") signedOut();
      throw new ApiError(res.status, String(msg || res.statusText));
    }
    // Both dialects: bare JSON (NodePass) or the {success, data} envelope.
    if (json && typeof json === "object" && typeof json.success === "boolean" && "data" in json)
      return json.data;
    return json;
  }

  // One instance object from either dialect, with NodePass's field names.
  const pick = (...v) => v.find((x) => x !== undefined && x !== null);
  function norm(i) {
    return {
      id: i.id, alias: i.alias || "", type: i.type, status: i.status, url: i.url || "",
      config: i.config || "", restart: !!i.restart, meta: i.meta || {},
      mode: pick(i.mode, ""), state: pick(i.state, i.detail, i.status),
      error: pick(i.error, i.error_text, i.last_error, ""),
      tcps: Number(pick(i.tcps, i.tcp_connections, 0)), udps: Number(pick(i.udps, i.udp_connections, 0)),
      pool: Number(pick(i.pool, i.pool_size, 0)), ping: Number(pick(i.ping, i.ping_ms, 0)),
      tcprx: Number(pick(i.tcprx, i.tcp_in, 0)), tcptx: Number(pick(i.tcptx, i.tcp_out, 0)),
      udprx: Number(pick(i.udprx, i.udp_in, 0)), udptx: Number(pick(i.udptx, i.udp_out, 0)),
      uptime: pick(i.uptime, null),
    };
  }
  const isKeyEntry = (i) => !i || !i.id || /^\*+$/.test(i.id);
  const name = (i) => i.alias || i.id;

  // Keep a live series per instance: rates from consecutive snapshots.
  function observe(inst, at) {
    const t = (at || Date.now()) / 1000;
    let l = state.live.get(inst.id);
    if (!l) { l = { t: [], rx: [], tx: [], trx: [], ttx: [], tcps: [], udps: [], pool: [], last: null }; state.live.set(inst.id, l); }
    const rx = inst.tcprx + inst.udprx, tx = inst.tcptx + inst.udptx;
    const last = l.last;
    if (last && t - last.t >= 0.5) {
      const dt = t - last.t;
      const r = rx >= last.rx ? (rx - last.rx) / dt : null;
      const w = tx >= last.tx ? (tx - last.tx) / dt : null;
      for (const [k, v] of [["t", t], ["rx", r], ["tx", w], ["trx", rx], ["ttx", tx], ["tcps", inst.tcps], ["udps", inst.udps], ["pool", inst.pool]]) {
        l[k].push(v); if (l[k].length > LIVE_POINTS) l[k].shift();
      }
      l.rate = { rx: r, tx: w };
    }
    if (!last || t - last.t >= 0.5) l.last = { t, rx, tx };
  }
  function totalRate() {
    let rx = 0, tx = 0;
    for (const i of state.instances.values()) {
      const l = state.live.get(i.id);
      if (i.status === "running" && l && l.rate) { rx += l.rate.rx || 0; tx += l.rate.tx || 0; }
    }
    return { rx, tx };
  }

  // ---- events --------------------------------------------------------------------------
  function connectEvents() {
    if (state.es) state.es.close();
    const es = new EventSource(API + "/v1/events", { withCredentials: true });
    state.es = es;
    const live = document.getElementById("live");
    es.onopen = () => live.classList.add("on");
    es.onerror = () => live.classList.remove("on");
    const onEvent = (e) => {
      let d; try { d = JSON.parse(e.data); } catch (_) { return; }
      handleEvent(d);
    };
    for (const t of ["instance", "initial", "create", "update", "delete", "log", "stats", "resync", "shutdown"])
      es.addEventListener(t, onEvent);
  }
  function handleEvent(d) {
    const type = d.type;
    if (type === "shutdown") { toast("The master is shutting down"); return; }
    if (!d.instance || isKeyEntry(d.instance)) return;
    const inst = norm(d.instance);
    const at = d.time ? Date.parse(d.time) : Date.now();
    if (type === "delete") {
      state.instances.delete(inst.id); state.live.delete(inst.id);
    } else {
      state.instances.set(inst.id, inst);
      observe(inst, isNaN(at) ? Date.now() : at);
    }
    if (type === "log") {
      const lines = typeof d.logs === "string" ? [d.logs]
        : Array.isArray(d.logs) ? d.logs.map((l) => typeof l === "string" ? l : `${l.time || ""} ${(l.level || "").toUpperCase()} ${l.message || ""}`)
        : [];
      const buf = state.logs.get(inst.id) || [];
      for (const line of lines) if (buf[buf.length - 1] !== line) buf.push(line);
      while (buf.length > 500) buf.shift();
      state.logs.set(inst.id, buf);
    }
    if (type !== "log") {
      const tr = totalRate(), now = Date.now() / 1000, s = state.total;
      if (!s.length || now - s[s.length - 1][0] >= 1) { s.push([now, tr.rx, tr.tx]); if (s.length > LIVE_POINTS) s.shift(); }
    }
    if (state.view && state.view.onEvent) state.view.onEvent(type, inst);
  }

  // ---- session -------------------------------------------------------------------------
  function signedOut() {
    state.csrf = null;
    if (state.es) { state.es.close(); state.es = null; }
    state.instances.clear(); state.live.clear(); state.logs.clear(); state.total = [];
    document.getElementById("top").hidden = true;
    if (location.hash !== "#/signin") location.hash = "#/signin"; else route();
  }
  async function startSession(csrf) {
    state.csrf = csrf;
    document.getElementById("top").hidden = false;
    try {
      const list = await api("GET", "/v1/instances");
      const arr = Array.isArray(list) ? list : (list && list.instances) || [];
      for (const i of arr) if (!isKeyEntry(i)) { const n = norm(i); state.instances.set(n.id, n); observe(n); }
    } catch (e) { toast(e.message); }
    connectEvents();
  }
  function viewSignIn() {
    const err = h("p", { class: "formerr", id: "signin-error", role: "alert" });
    const input = h("input", { type: "password", id: "apikey", name: "key", autocomplete: "current-password", required: true });
    const form = h("form", { class: "panel signin", onsubmit: async (e) => {
      e.preventDefault(); err.textContent = "";
      try {
        const s = await api("POST", "/v1/session", { key: input.value });
        input.value = "";
        await startSession(s.csrf);
        location.hash = "#/";
      } catch (x) { err.textContent = x.message; input.focus(); }
    } },
    h("h1", {}, "NodePass"),
    h("label", { for: "apikey" }, "API key"), input,
    h("p", { class: "muted" }, "The key the master printed at its first start, or NODEPASS_API_KEY. It is sent once; the browser keeps only a session cookie."),
    err, h("button", { class: "primary", type: "submit" }, "Sign in"));
    $main.replaceChildren(form);
    input.focus();
    return {};
  }

  // ---- charts --------------------------------------------------------------------------
  function chart(el, series, data, opts = {}) {
    if (!window.uPlot) { el.textContent = "chart library missing"; return null; }
    const width = Math.max(240, el.clientWidth || 600);
    const axis = { stroke: css("--muted"), grid: { stroke: css("--line"), width: 1 }, ticks: { stroke: css("--line") } };
    const u = new uPlot({
      width, height: opts.height || 200,
      scales: { x: { time: true, range: opts.span ? (u, min, max) => { const now = Date.now() / 1000; return [now - opts.span(), now]; } : undefined }, y: { range: (u, min, max) => [0, Math.max(max || 0, opts.minMax || 1) * 1.1] } },
      axes: [axis, { ...axis, size: 86, values: (u, v) => v.map(opts.fmt || ((x) => x)) }],
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: css(s.color), width: 2, spanGaps: false,
        value: (u, v) => v === null || v === undefined ? "–" : (opts.fmt || ((x) => x))(v) }))],
      legend: { live: true },
    }, data, el);
    new ResizeObserver(() => { const w = el.clientWidth; if (w && Math.abs(w - u.width) > 4) u.setSize({ width: w, height: u.height }); }).observe(el);
    return u;
  }
  function spark(canvas, values) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width = canvas.clientWidth * devicePixelRatio || 100;
    const hh = canvas.height = canvas.clientHeight * devicePixelRatio || 28;
    ctx.clearRect(0, 0, w, hh);
    const v = values.slice(-60).map((x) => x || 0);
    if (v.length < 2) return;
    const max = Math.max(...v, 1);
    ctx.strokeStyle = css("--rx"); ctx.lineWidth = devicePixelRatio * 1.5; ctx.beginPath();
    v.forEach((x, i) => { const px = i / (v.length - 1) * w, py = hh - 2 - x / max * (hh - 4); i ? ctx.lineTo(px, py) : ctx.moveTo(px, py); });
    ctx.stroke();
  }

  // ---- actions -------------------------------------------------------------------------
  async function act(inst, action) {
    if (action === "delete") {
      if (!(await confirmDialog(`Delete ${name(inst)}?`, "It is stopped and removed with its traffic history. This cannot be undone."))) return false;
      await run(() => api("DELETE", "/v1/instances/" + inst.id), `Deleted ${name(inst)}`);
      state.instances.delete(inst.id);
      return true;
    }
    const r = await run(() => api("PATCH", "/v1/instances/" + inst.id, { action }), `${action}: ${name(inst)}`);
    if (r && r.id) { const n = norm(r); state.instances.set(n.id, n); observe(n); }
    return true;
  }
  async function run(fn, ok) {
    try { const r = await fn(); toast(ok); return r; } catch (e) { toast(e.message); return null; }
  }
  function confirmDialog(title, text, yes = "Delete") {
    return new Promise((resolve) => {
      const d = h("dialog", { "aria-labelledby": "dlg-title" },
        h("h2", { id: "dlg-title" }, title), h("p", {}, text),
        h("form", { method: "dialog", class: "row" },
          h("button", { value: "no", autofocus: true }, "Cancel"),
          h("button", { value: "yes", class: "danger", id: "confirm-yes" }, yes)));
      d.addEventListener("close", () => { resolve(d.returnValue === "yes"); d.remove(); });
      document.body.append(d); d.showModal();
    });
  }
  function actionButtons(inst, after) {
    const b = (label, action, cls) => h("button", { type: "button", class: cls, "data-action": action,
      "aria-label": `${label} ${name(inst)}`, onclick: async () => { if (await act(inst, action) && after) after(action); } }, label);
    const running = inst.status === "running" || inst.status === "starting";
    return h("div", { class: "actions" },
      running ? b("Stop", "stop") : b("Start", "start"),
      b("Restart", "restart"), b("Reset", "reset"),
      h("a", { class: "btn", href: `#/edit/${inst.id}`, "aria-label": `Edit ${name(inst)}` }, "Edit"),
      b("Delete", "delete", "danger"));
  }
  const badge = (s) => h("span", { class: `badge s-${s}`, "data-status": s }, s);

  // ---- overview ------------------------------------------------------------------------
  function viewOverview() {
    const cards = h("div", { class: "cards", id: "info" });
    const counts = h("div", { class: "cards", id: "counts" });
    const chartEl = h("div", { class: "chart", id: "total-chart" });
    const rotate = h("button", { type: "button", id: "rotate-key", onclick: rotateKey }, "Rotate API key");
    $main.replaceChildren(h("h1", {}, "Overview", rotate), cards, h("h2", {}, "Instances"), counts,
      h("h2", {}, "Total throughput (live, last 15 min)"), h("div", { class: "panel" }, chartEl));
    const card = (k, v) => h("div", { class: "card" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v));
    const loadInfo = async () => {
      try {
        const i = await api("GET", "/v1/info");
        const load = i.cpu && typeof i.cpu === "object" ? (i.cpu.load || []).map((x) => x.toFixed(2)).join(" ") : i.cpu !== undefined ? `${i.cpu}%` : "–";
        const memUsed = pick(i.mem_used, i.memory && i.memory.system_total - i.memory.system_available);
        const memTotal = pick(i.mem_total, i.memory && i.memory.system_total);
        cards.replaceChildren(
          card("Version", pick(i.version, i.ver, "–")), card("Uptime", dur(i.uptime)),
          card(i.cpu && i.cpu.load ? "Load (1/5/15 min)" : "CPU", load),
          card("Memory", memTotal ? `${bytes(memUsed)} / ${bytes(memTotal)}` : "–"),
          card("System", `${i.os || ""} ${i.arch || ""}`));
      } catch (e) { cards.replaceChildren(card("Master", e.message)); }
    };
    const renderCounts = () => {
      const by = { running: 0, stopped: 0, error: 0 };
      for (const i of state.instances.values()) by[i.status] = (by[i.status] || 0) + 1;
      const tr = totalRate();
      counts.replaceChildren(...Object.entries(by).map(([k, v]) => h("a", { class: "card", href: `#/instances?status=${k}`, style: "text-decoration:none;color:inherit" },
        h("div", { class: "k" }, k), h("div", { class: "v" }, v))),
        card("In now", rate(tr.rx)), card("Out now", rate(tr.tx)));
    };
    loadInfo(); renderCounts();
    const data = () => [state.total.map((p) => p[0]), state.total.map((p) => p[1]), state.total.map((p) => p[2])];
    const u = chart(chartEl, [{ label: "in", color: "--rx" }, { label: "out", color: "--tx" }], data(), { fmt: rate, minMax: 1000, span: () => 900 });
    const timer = setInterval(loadInfo, 10000);
    return {
      onEvent: () => { renderCounts(); if (u) u.setData(data()); },
      close: () => clearInterval(timer),
    };
  }

  // A new API key, shown once; this browser signs in again with it, every other session ends.
  async function rotateKey() {
    if (!(await confirmDialog("Rotate the API key?", "A new key replaces the current one at once: scripts and other signed-in browsers must use the new key.", "Rotate"))) return;
    let key = null;
    try {
      const r = await api("POST", "/v1/key/rotate");
      key = r && r.key;
    } catch (e) {
      if (e.status !== 404 && e.status !== 405) { toast(e.message); return; }
      try { // NodePass's way: restart the key's pseudo-instance; the new key comes back in `url`
        const r = await api("PATCH", "/v1/instances/********", { action: "restart" });
        key = r && r.url;
      } catch (x) { toast(x.message); return; }
    }
    if (!key) { toast("The master did not return a new key"); return; }
    try { const s = await api("POST", "/v1/session", { key }); state.csrf = s.csrf; connectEvents(); } catch (e) { toast(e.message); }
    const d = h("dialog", { "aria-labelledby": "key-title" }, h("h2", { id: "key-title" }, "New API key"),
      h("p", {}, "Store it now: it is not shown again."), h("p", { class: "urlbox", id: "new-key" }, key),
      h("form", { method: "dialog" }, h("button", { class: "primary", autofocus: true }, "Done")));
    d.addEventListener("close", () => d.remove());
    document.body.append(d); d.showModal();
  }

  // ---- instances list ------------------------------------------------------------------
  function viewInstances(params) {
    const q = h("input", { type: "search", placeholder: "Filter by name, id or URL", "aria-label": "Filter", value: params.get("q") || "" });
    const type = h("select", { "aria-label": "Type" }, h("option", { value: "" }, "All types"), h("option", { value: "server" }, "Servers"), h("option", { value: "client" }, "Clients"));
    const status = h("select", { "aria-label": "Status" }, h("option", { value: "" }, "Any status"), ...["running", "stopped", "error"].map((s) => h("option", { value: s }, s)));
    type.value = params.get("type") || ""; status.value = params.get("status") || "";
    const tbody = h("tbody");
    const table = h("table", { class: "list", id: "instances" }, h("thead", {}, h("tr", {},
      ...["Name", "Status", "Mode", "Conns", "Pool", "In", "Out", "Total in / out", "Last hour", "Actions"].map((t) => h("th", { scope: "col" }, t)))), tbody);
    const empty = h("p", { class: "muted", hidden: true }, "No instances match. ", h("a", { href: "#/new" }, "Create one"));
    $main.replaceChildren(h("h1", {}, "Instances", h("a", { class: "btn primary", href: "#/new" }, "New instance")),
      h("div", { class: "filters", role: "search" }, q, type, status), table, empty);
    const render = () => {
      const text = q.value.trim().toLowerCase();
      const rows = [...state.instances.values()].filter((i) =>
        (!type.value || i.type === type.value) && (!status.value || i.status === status.value) &&
        (!text || `${i.alias} ${i.id} ${i.url}`.toLowerCase().includes(text)));
      tbody.replaceChildren(...rows.map((i) => {
        const l = state.live.get(i.id) || {}; const r = l.rate || {};
        const cv = h("canvas", { class: "spark", "aria-hidden": "true" });
        const tr = h("tr", { "data-id": i.id },
          h("td", { "data-label": "Name" }, h("a", { href: `#/i/${i.id}` }, name(i)), h("div", { class: "muted" }, `${i.type} · ${i.id}`)),
          h("td", { "data-label": "Status" }, badge(i.status)),
          h("td", { "data-label": "Mode" }, String(i.mode)),
          h("td", { class: "num", "data-label": "Conns" }, `${i.tcps} tcp · ${i.udps} udp`),
          h("td", { class: "num", "data-label": "Pool" }, i.pool),
          h("td", { class: "num", "data-label": "In" }, rate(r.rx)),
          h("td", { class: "num", "data-label": "Out" }, rate(r.tx)),
          h("td", { class: "num", "data-label": "Totals", "data-total": i.tcprx + i.udprx + i.tcptx + i.udptx }, `${bytes(i.tcprx + i.udprx)} / ${bytes(i.tcptx + i.udptx)}`),
          h("td", { "data-label": "Last hour" }, cv),
          h("td", {}, actionButtons(i, render)));
        requestAnimationFrame(() => spark(cv, (l.rx || []).map((x, k) => (x || 0) + ((l.tx || [])[k] || 0))));
        return tr;
      }));
      empty.hidden = rows.length > 0;
      const p = new URLSearchParams();
      if (q.value) p.set("q", q.value); if (type.value) p.set("type", type.value); if (status.value) p.set("status", status.value);
      const want = "#/instances" + (p.toString() ? "?" + p : "");
      if (location.hash !== want) history.replaceState(null, "", want);
    };
    for (const el of [q, type, status]) el.addEventListener("input", render);
    render();
    let pending = false;
    return { onEvent: () => {
      if (pending || table.contains(document.activeElement) && document.activeElement.tagName === "BUTTON") { pending = true; setTimeout(() => { pending = false; render(); }, 1500); return; }
      render();
    } };
  }

  // ---- create / edit form --------------------------------------------------------------
  // Every URL parameter: [name, label, roles, kind, default, help, options]
  const PARAMS = [
    ["Connection", [
      ["tls", "TLS", "server", "select", "0", "Encryption of the data connections. 1: a certificate made at start; 2: your files.", [["0", "0 · none"], ["1", "1 · self-signed"], ["2", "2 · certificate files"]]],
      ["crt", "Certificate file", "server", "text", "", "PEM certificate chain (tls=2)."],
      ["key", "Private key file", "server", "text", "", "PEM private key (tls=2)."],
      ["sni", "SNI", "client", "text", "", "Server name sent in the TLS handshake (default: the tunnel host)."],
      ["ca", "CA file", "client", "text", "", "PEM CA to verify the server's certificate with."],
      ["dns", "DNS cache", "both", "text", "5m", "How long resolved names are kept, e.g. 30s, 5m."],
      ["dial", "Source address", "both", "text", "auto", "Local IP to connect to targets from."],
    ]],
    ["Mode and pool", [
      ["mode", "Mode", "server", "select", "0", "Who accepts user traffic. 0: decided by the addresses.", [["0", "0 · auto"], ["1", "1 · reverse (server accepts)"], ["2", "2 · forward (client accepts)"]]],
      ["mode", "Mode", "client", "select", "0", "0: decided by the addresses.", [["0", "0 · auto"], ["1", "1 · single-end (no server)"], ["2", "2 · dual-end"]]],
      ["type", "Pool transport", "server", "select", "0", "How pool connections are carried.", [["0", "0 · TCP"], ["1", "1 · QUIC"], ["2", "2 · WebSocket"], ["3", "3 · HTTP/2"]]],
      ["min", "Pool minimum", "client", "number", "64", "Idle connections the client keeps ready (1-65536)."],
      ["max", "Pool maximum", "server", "number", "1024", "Most pool connections the server asks for (1-65536)."],
    ]],
    ["Limits", [
      ["rate", "Bandwidth", "both", "number", "0", "Mbit/s for all connections; 0 = unlimited."],
      ["slot", "Connections", "both", "number", "65536", "Concurrent sessions; 0 = unlimited."],
      ["read", "Idle timeout", "both", "text", "0", "Close sessions idle this long, e.g. 10m; 0 = never."],
      ["proxy", "PROXY protocol", "both", "select", "0", "Header sent to targets with the user's address.", [["0", "0 · off"], ["1", "1 · v1"], ["2", "2 · v2"]]],
      ["block", "Block", "both", "text", "0", "Refuse protocols: digits 1 SOCKS, 2 HTTP, 3 TLS, e.g. 13."],
      ["notcp", "No TCP", "both", "select", "0", "1 turns TCP off.", [["0", "0 · TCP on"], ["1", "1 · TCP off"]]],
      ["noudp", "No UDP", "both", "select", "0", "1 turns UDP off.", [["0", "0 · UDP on"], ["1", "1 · UDP off"]]],
    ]],
    ["Logging", [
      ["log", "Log level", "both", "select", "", "Default: the master's level.", [["", "master's level"], ["debug", "debug"], ["info", "info"], ["warn", "warn"], ["error", "error"], ["event", "event"], ["none", "none"]]],
    ]],
  ];
  function parseUrl(url) {
    const m = /^(server|client):\/\/(?:([^@/]*)@)?([^/?#]*)\/?([^?#]*)(?:\?(.*))?$/.exec(url || "");
    if (!m) return null;
    return { role: m[1], key: m[2] ? decodeURIComponent(m[2]) : "", tunnel: m[3], target: decodeURIComponent(m[4] || ""), q: new URLSearchParams(m[5] || "") };
  }
  function viewForm(id) {
    const editing = id ? state.instances.get(id) : null;
    if (id && !editing) { $main.replaceChildren(h("p", {}, "No such instance. ", h("a", { href: "#/instances" }, "Back"))); return {}; }
    const old = editing ? parseUrl(editing.url) : null;
    const fields = new Map(); // name|role -> {wrap, input, err}
    const field = (nm, label, kind, def, help, options, role) => {
      const fid = `f-${nm}-${role}`;
      const input = kind === "select"
        ? h("select", { id: fid, name: nm }, ...options.map(([v, t]) => h("option", { value: v }, v === def ? `${t} (default)` : t)))
        : h("input", { id: fid, name: nm, type: kind === "number" ? "text" : kind, inputmode: kind === "number" ? "numeric" : null, placeholder: def ? `default ${def}` : "", autocomplete: "off" });
      if (kind === "select") input.value = def;
      const err = h("div", { class: "err", id: fid + "-err", role: "alert" });
      const wrap = h("div", { class: "field", "data-field": nm, "data-role": role },
        h("label", { for: fid }, label), input, h("div", { class: "help" }, help), err);
      input.setAttribute("aria-describedby", fid + "-err");
      fields.set(nm + "|" + role, { wrap, input, err, def, nm, role });
      input.addEventListener("input", update);
      return wrap;
    };
    const role = h("select", { id: "f-role", name: "role", disabled: !!editing },
      h("option", { value: "server" }, "server: listens for clients"), h("option", { value: "client" }, "client: connects to a server"));
    role.value = old ? old.role : "server";
    role.addEventListener("input", update);
    const basics = h("div", { class: "fields" },
      h("div", { class: "field", "data-field": "role" }, h("label", { for: "f-role" }, "Role"), role, h("div", { class: "help" }, "Servers wait for clients; clients connect to a server.")),
      field("alias", "Name", "text", "", "Optional alias shown in lists.", null, "any"),
      field("tunnel", "Tunnel address", "text", "", "Server: where it listens for clients (host:port, port 0 = any). Client: the server's address.", null, "any"),
      field("target", "Target address", "text", "", "Server: where users connect, or the target in forward mode. Client: where traffic goes (host:port; several separated by commas).", null, "any"),
      field("tunnelkey", "Tunnel key", "password", "", editing ? "Leave empty to keep the current key (never shown)." : "Shared secret of server and client; empty: derived from the port.", null, "any"),
      h("div", { class: "field" }, h("label", { for: "f-restart" }, "Restart policy"), h("div", { class: "check" }, h("input", { type: "checkbox", id: "f-restart", checked: editing ? editing.restart : true }), h("label", { for: "f-restart" }, "Restart automatically")), h("div", { class: "help" }, "Start with the master and restart after a failure.")));
    fields.get("tunnelkey|any").input.autocomplete = "new-password";
    const groups = PARAMS.map(([title, list]) => h("fieldset", {}, h("legend", {}, title),
      h("div", { class: "fields" }, ...list.map(([nm, label, roles, kind, def, help, options]) =>
        roles === "both" ? [field(nm, label, kind, def, help, options, "server"), field(nm, label, kind, def, help, options, "client")]
          : field(nm, label, kind, def, help, options, roles)))));
    const urlBox = h("div", { class: "urlbox", id: "canonical", "aria-live": "polite" });
    const formErr = h("p", { class: "formerr", id: "form-error", role: "alert" });
    const submit = h("button", { class: "primary", type: "submit" }, editing ? "Save and restart" : "Create and start");
    const form = h("form", { novalidate: true, onsubmit: save },
      h("fieldset", {}, h("legend", {}, "Basics"), basics), ...groups,
      h("h2", {}, "URL"), urlBox, formErr, h("div", { class: "row" }, submit, h("a", { class: "btn", href: editing ? `#/i/${editing.id}` : "#/instances" }, "Cancel")));
    $main.replaceChildren(h("h1", {}, editing ? `Edit ${name(editing)}` : "New instance"), form);
    // Fill in from the instance (its key is masked: never shown back).
    if (editing) {
      fields.get("alias|any").input.value = editing.alias;
      fields.get("tunnel|any").input.value = old ? old.tunnel : "";
      fields.get("target|any").input.value = old ? old.target : "";
      if (old) for (const [k, v] of old.q) { const f = fields.get(`${k}|${old.role}`); if (f) f.input.value = v; }
    }
    function build(forDisplay) {
      const r = role.value;
      const q = [];
      for (const f of fields.values()) {
        if (f.role !== r) continue;
        const v = f.input.value.trim();
        if (v !== "" && v !== f.def) q.push(`${f.nm}=${encodeURIComponent(v)}`);
      }
      let key = fields.get("tunnelkey|any").input.value;
      if (key && forDisplay) key = "****";
      if (!key && editing && old && old.key) key = old.key; // the masked key: the master keeps the stored one
      const userinfo = key ? `${forDisplay ? key : encodeURIComponent(key)}@` : "";
      const tunnel = fields.get("tunnel|any").input.value.trim();
      const target = fields.get("target|any").input.value.trim();
      return `${r}://${userinfo}${tunnel}/${target}${q.length ? "?" + q.join("&") : ""}`;
    }
    function update() {
      const r = role.value;
      for (const f of fields.values()) f.wrap.hidden = f.role !== "any" && f.role !== r;
      const tls = fields.get("tls|server").input.value;
      fields.get("crt|server").wrap.hidden = r !== "server" || tls !== "2";
      fields.get("key|server").wrap.hidden = r !== "server" || tls !== "2";
      urlBox.textContent = build(true);
    }
    function clearErrors() {
      formErr.textContent = "";
      for (const f of fields.values()) { f.err.textContent = ""; f.wrap.classList.remove("invalid"); f.input.removeAttribute("aria-invalid"); }
    }
    // The server names the field in its message: "invalid url: invalid mode \"9\": ...".
    function placeError(msg) {
      const r = role.value;
      const m = /(?:invalid|missing) (tunnel key|[a-z]+)\b(?! url)/.exec(msg.replace(/^(url: )?invalid url: /, "")) || /parameter "([a-z]+)"/.exec(msg);
      let key = m && m[1];
      if (key === "tunnel key") key = "tunnelkey";
      if (key === "port" || key === "host" || key === "tunnel") key = "tunnel";
      if (/^alias\b/.test(msg)) key = "alias";
      const f = key && (fields.get(`${key}|${r}`) || fields.get(`${key}|any`));
      if (f && !f.wrap.hidden) {
        f.err.textContent = msg.replace(/^(url: )?invalid url: /, ""); f.wrap.classList.add("invalid"); f.input.setAttribute("aria-invalid", "true"); f.input.focus();
      } else { formErr.textContent = msg; }
    }
    async function save(e) {
      e.preventDefault(); clearErrors();
      const alias = fields.get("alias|any").input.value.trim();
      const restart = document.getElementById("f-restart").checked;
      submit.disabled = true;
      try {
        let res;
        if (editing) {
          res = await api("PUT", "/v1/instances/" + editing.id, { url: build(false) });
          const patch = {};
          if (alias !== editing.alias) patch.alias = alias;
          if (restart !== editing.restart) patch.restart = restart;
          if (Object.keys(patch).length) res = await api("PATCH", "/v1/instances/" + editing.id, patch);
        } else {
          const body = { url: build(false), restart };
          if (alias) body.alias = alias;
          res = await api("POST", "/v1/instances", body);
        }
        const n = norm(res); state.instances.set(n.id, n); observe(n);
        toast(editing ? "Saved" : `Created ${name(n)}`);
        location.hash = `#/i/${n.id}`;
      } catch (x) { placeError(x.message); } finally { submit.disabled = false; }
    }
    update();
    fields.get("alias|any").input.focus();
    return {};
  }

  // ---- instance detail -----------------------------------------------------------------
  function viewDetail(id) {
    let inst = state.instances.get(id);
    if (!inst) { $main.replaceChildren(h("p", {}, "No such instance. ", h("a", { href: "#/instances" }, "Back"))); return {}; }
    const title = h("h1", {});
    const cards = h("div", { class: "cards", id: "metrics-cards" });
    const ranges = [["1h", 3600], ["24h", 86400], ["7d", 604800]];
    let range = 3600, history = null;
    const tabs = h("div", { class: "row tabs", role: "group", "aria-label": "History range" },
      ...ranges.map(([label, secs]) => h("button", { type: "button", "aria-pressed": String(secs === range), onclick: (e) => {
        range = secs; for (const b of tabs.children) b.setAttribute("aria-pressed", String(b === e.target)); loadHistory();
      } }, label)));
    const rateEl = h("div", { class: "chart", id: "rate-chart" });
    const totalEl = h("div", { class: "chart", id: "total-chart" });
    const connEl = h("div", { class: "chart", id: "conn-chart" });
    const logs = h("pre", { class: "logs", id: "logs", tabindex: "0", "aria-label": "Log tail" });
    const pingOut = h("div", { id: "tcping-out", "aria-live": "polite" });
    const metrics = h("pre", { class: "metrics", id: "metrics", tabindex: "0" });
    const parsed = parseUrl(inst.url);
    const targets = parsed ? [parsed.target.split(","), inst.type === "client" ? [parsed.tunnel] : []].flat().filter((t) => t && !/:0$/.test(t)) : [];
    $main.replaceChildren(title, h("div", { class: "row", id: "detail-actions" }), h("h2", {}, "Now"), cards,
      h("div", { class: "row" }, h("h2", {}, "Traffic"), tabs),
      h("div", { class: "grid2" }, h("div", { class: "panel" }, h("div", { class: "muted" }, "Rate (history + live)"), rateEl), h("div", { class: "panel" }, h("div", { class: "muted" }, "Totals"), totalEl)),
      h("h2", {}, "Connections and pool (live, last 15 min)"), h("div", { class: "panel" }, connEl),
      h("h2", {}, "Log"), logs,
      h("h2", {}, "TCPing"), h("div", { class: "row" }, ...targets.map((t) => h("button", { type: "button", onclick: () => tcping(t) }, `Ping ${t}`))), pingOut,
      h("h2", {}, "Metrics"), metrics,
      h("h2", {}, "URL"), h("div", { class: "urlbox" }, inst.config || inst.url));
    const renderHead = () => {
      title.replaceChildren(name(inst), badge(inst.status));
      document.getElementById("detail-actions").replaceChildren(actionButtons(inst, (a) => { if (a === "delete") location.hash = "#/instances"; }));
      const l = state.live.get(id) || {}; const r = l.rate || {};
      const card = (k, v, key) => h("div", { class: "card", "data-metric": key }, h("div", { class: "k" }, k), h("div", { class: "v" }, v));
      cards.replaceChildren(
        card("Type / mode", `${inst.type} / ${inst.mode}`, "mode"), card("State", inst.state || inst.status, "state"),
        card("In", rate(r.rx), "in"), card("Out", rate(r.tx), "out"),
        card("Total in", bytes(inst.tcprx + inst.udprx), "total-in"), card("Total out", bytes(inst.tcptx + inst.udptx), "total-out"),
        card("TCP / UDP sessions", `${inst.tcps} / ${inst.udps}`, "sessions"), card("Pool", inst.pool, "pool"),
        card("Ping", inst.ping ? `${inst.ping} ms` : "–", "ping"), card("Uptime", inst.uptime === null ? "–" : dur(inst.uptime), "uptime"),
        ...(inst.error ? [card("Error", inst.error, "error")] : []));
    };
    const renderLogs = () => {
      const atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 8;
      logs.textContent = (state.logs.get(id) || []).join("\n") || "No log lines yet (they arrive live).";
      if (atEnd) logs.scrollTop = logs.scrollHeight;
    };
    const fmtT = (v) => bytes(v);
    const rateU = chart(rateEl, [{ label: "in", color: "--rx" }, { label: "out", color: "--tx" }], [[], [], []], { fmt: rate, minMax: 1000, span: () => range });
    const totalU = chart(totalEl, [{ label: "in", color: "--rx" }, { label: "out", color: "--tx" }], [[], [], []], { fmt: fmtT, minMax: 1000, span: () => range });
    const connU = chart(connEl, [{ label: "tcp", color: "--rx" }, { label: "udp", color: "--c4" }, { label: "pool", color: "--c3" }], [[], [], [], []], { minMax: 1, height: 160, span: () => Math.min(range, 900) });
    const add = (a, b) => a === null && b === null ? null : (a || 0) + (b || 0);
    const renderCharts = () => {
      const l = state.live.get(id) || { t: [], rx: [], tx: [], trx: [], ttx: [], tcps: [], udps: [], pool: [] };
      const cutoff = Date.now() / 1000 - range;
      const hx = [], hin = [], hout = [], tin = [], tout = [];
      if (history) {
        for (let k = 0; k < history.time.length; k++) {
          hx.push(history.time[k] / 1000);
          hin.push(add(history.rate.tcprx[k], history.rate.udprx[k])); hout.push(add(history.rate.tcptx[k], history.rate.udptx[k]));
          tin.push(add(history.total.tcprx[k], history.total.udprx[k])); tout.push(add(history.total.tcptx[k], history.total.udptx[k]));
        }
      }
      // Live points after the stored history.
      const lastH = hx.length ? hx[hx.length - 1] : 0;
      for (let k = 0; k < l.t.length; k++) if (l.t[k] > lastH && l.t[k] >= cutoff) { hx.push(l.t[k]); hin.push(l.rx[k]); hout.push(l.tx[k]); tin.push(l.trx[k]); tout.push(l.ttx[k]); }
      const nowT = Date.now() / 1000;
      hx.push(nowT); hin.push(null); hout.push(null);
      tin.push(inst.tcprx + inst.udprx); tout.push(inst.tcptx + inst.udptx);
      rateEl.dataset.max = String(Math.max(0, ...hin.filter((x) => x !== null), ...hout.filter((x) => x !== null)));
      if (rateU) rateU.setData([hx, hin, hout]);
      if (totalU) totalU.setData([hx, tin, tout]);
      const lt = l.t.filter((t) => t >= cutoff), off = l.t.length - lt.length;
      if (connU) connU.setData([lt, l.tcps.slice(off), l.udps.slice(off), l.pool.slice(off)]);
    };
    async function loadHistory() {
      const to = Date.now(), from = to - range * 1000;
      try { history = await api("GET", `/v1/instances/${id}/traffic?from=${from}&to=${to}`); } catch (e) { history = null; toast(e.message); }
      renderCharts();
    }
    async function tcping(target) {
      pingOut.textContent = `Pinging ${target}…`;
      try {
        const r = await api("GET", "/v1/tcping?target=" + encodeURIComponent(target));
        const ok = pick(r.connected, r.success, false);
        const ms = pick(r.latency, r.latency_ms, null);
        pingOut.textContent = ok ? `${target}: connected in ${ms === null ? "?" : Number(ms).toFixed(1)} ms` : `${target}: not reachable (${r.error || "failed"})`;
      } catch (e) { pingOut.textContent = `${target}: ${e.message}`; }
    }
    async function loadMetrics() {
      try {
        const res = await fetch(API + "/v1/metrics", { credentials: "same-origin" });
        const text = await res.text();
        metrics.textContent = text.split("\n").filter((l) => l.includes(`id="${id}"`)).join("\n") || "No metrics.";
      } catch (e) { metrics.textContent = e.message; }
    }
    renderHead(); renderLogs(); loadHistory(); loadMetrics();
    const timer = setInterval(() => { renderCharts(); loadMetrics(); }, 15000);
    return {
      onEvent: (type, i) => {
        if (i.id !== id) return;
        if (type === "delete") { toast(`${name(inst)} was deleted`); location.hash = "#/instances"; return; }
        inst = state.instances.get(id) || inst;
        if (type === "log") renderLogs(); else { renderHead(); renderCharts(); }
      },
      close: () => clearInterval(timer),
    };
  }

  // ---- routing -------------------------------------------------------------------------
  function route() {
    if (state.view && state.view.close) state.view.close();
    state.view = null;
    const [path, query] = (location.hash.slice(1) || "/").split("?");
    const params = new URLSearchParams(query || "");
    if (!state.csrf) { state.view = viewSignIn(); return; }
    const parts = path.split("/").filter(Boolean);
    for (const a of document.querySelectorAll("[data-nav]")) {
      const on = (a.dataset.nav === "overview" && !parts.length) || a.dataset.nav === parts[0] || (a.dataset.nav === "instances" && parts[0] === "i");
      if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    if (!parts.length || parts[0] === "signin") state.view = viewOverview();
    else if (parts[0] === "instances") state.view = viewInstances(params);
    else if (parts[0] === "new") state.view = viewForm(null);
    else if (parts[0] === "edit") state.view = viewForm(parts[1]);
    else if (parts[0] === "i") state.view = viewDetail(parts[1]);
    else { $main.replaceChildren(h("p", {}, "Not found. ", h("a", { href: "#/" }, "Overview"))); state.view = {}; }
    document.title = `NodePass · ${parts[0] || "overview"}`;
  }

  function applyTheme(t) {
    document.documentElement.dataset.theme = t;
    document.getElementById("theme").textContent = t === "dark" ? "Light theme" : "Dark theme";
  }
  async function boot() {
    const saved = localStorage.getItem("np-theme");
    applyTheme(saved || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
    document.getElementById("theme").addEventListener("click", () => {
      const t = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
      localStorage.setItem("np-theme", t); applyTheme(t); route(); // charts pick up the colours
    });
    document.getElementById("signout").addEventListener("click", async () => {
      try { await api("DELETE", "/v1/session"); } catch (_) { /* signed out anyway */ }
      signedOut();
    });
    window.addEventListener("hashchange", () => { route(); $main.focus({ preventScroll: true }); });
    try {
      const s = await api("GET", "/v1/session");
      await startSession(s.csrf);
    } catch (_) { state.csrf = null; }
    route();
  }
  boot();
})();
