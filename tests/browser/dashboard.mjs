// Drives the master's dashboard in headless Chromium, as a user would. Started by
// tests/tests/dashboard_browser.rs with NP_URL (http://127.0.0.1:PORT), NP_KEY, NP_PORTS (three
// free loopback ports) and NP_SHOTS (screenshot directory). Exits non-zero on the first failure.
// Traffic goes only to loopback: an echo server started here, through the tunnel made here.
import { chromium } from "playwright-core";
import net from "node:net";
import fs from "node:fs";
import path from "node:path";

const { NP_URL, NP_KEY, NP_PORTS, NP_SHOTS } = process.env;
const [tunnelPort, usersPort] = NP_PORTS.split(",").map(Number);
const TIMEOUT = 30_000;
fs.mkdirSync(NP_SHOTS, { recursive: true });
const step = (s) => console.log(`step: ${s}`);

// Loopback echo server: the client's target.
const echo = net.createServer((s) => s.pipe(s));
await new Promise((r) => echo.listen(0, "127.0.0.1", r));
const echoPort = echo.address().port;

// Send `n` bytes to the server's user port and read them back.
function pushBytes(n) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(usersPort, "127.0.0.1");
    let got = 0;
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`echo: ${got}/${n} bytes back`)); }, 10_000);
    sock.on("connect", () => sock.write(Buffer.alloc(n, 7)));
    sock.on("data", (d) => { got += d.length; if (got >= n) { clearTimeout(timer); sock.end(); resolve(got); } });
    sock.on("error", (e) => { clearTimeout(timer); reject(e); });
  });
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: "light" });
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT);
const external = [];
page.on("request", (r) => { if (!r.url().startsWith(NP_URL)) external.push(r.url()); });
page.on("pageerror", (e) => { console.error("page error:", e.message); process.exitCode = 1; });
const shot = async (name) => page.screenshot({ path: path.join(NP_SHOTS, `${name}.png`), fullPage: true });
const expect = (cond, what) => { if (!cond) throw new Error(`expected: ${what}`); };

try {
  step("sign-in page, wrong key refused");
  await page.goto(NP_URL + "/");
  await page.locator("#apikey").fill("not-the-key");
  await page.locator("#apikey").press("Enter");
  await page.locator("#signin-error", { hasText: "wrong API key" }).waitFor();
  await shot("signin-light");

  step("sign in");
  await page.locator("#apikey").fill(NP_KEY);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#info .card").first().waitFor();
  const cookies = await context.cookies();
  const c = cookies.find((x) => x.name === "np_session");
  expect(c && c.httpOnly && c.sameSite === "Strict", "an HttpOnly, SameSite=Strict session cookie");

  step("a state-changing request without the CSRF token is refused");
  const status = await page.evaluate(async (api) => (await fetch(api + "/v1/instances", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ url: "server://x@127.0.0.1:0/127.0.0.1:0" }),
  })).status, NP_URL + "/api");
  expect(status === 403, `403 without X-CSRF-Token, got ${status}`);

  step("create a server through the form, with one invalid value first");
  await page.getByRole("link", { name: "New", exact: true }).click();
  await page.locator("#f-role").selectOption("server");
  await page.locator("#f-alias-any").fill("web-server");
  await page.locator("#f-tunnel-any").fill(`127.0.0.1:${tunnelPort}`);
  await page.locator("#f-target-any").fill(`127.0.0.1:${usersPort}`);
  await page.locator("#f-tunnelkey-any").fill("s3cret-tunnel");
  await page.locator("#f-max-server").fill("lots");
  const url = await page.locator("#canonical").textContent();
  expect(url.includes("max=lots") && url.includes("****@") && !url.includes("s3cret"), `canonical URL shown with the key masked: ${url}`);
  await page.getByRole("button", { name: "Create and start" }).click();
  const maxErr = page.locator('[data-field="max"][data-role="server"] .err');
  await maxErr.filter({ hasText: "max" }).waitFor();
  await shot("form-error-light");
  await page.locator("#f-max-server").fill("");
  await page.getByRole("button", { name: "Create and start" }).click();
  await page.locator("h1", { hasText: "web-server" }).waitFor();

  step("create a client");
  await page.getByRole("link", { name: "New", exact: true }).click();
  await page.locator("#f-role").selectOption("client");
  await page.locator("#f-alias-any").fill("web-client");
  await page.locator("#f-tunnel-any").fill(`127.0.0.1:${tunnelPort}`);
  await page.locator("#f-target-any").fill(`127.0.0.1:${echoPort}`);
  await page.locator("#f-tunnelkey-any").fill("s3cret-tunnel");
  await shot("form-light");
  await page.getByRole("button", { name: "Create and start" }).click();
  await page.locator("h1", { hasText: "web-client" }).waitFor();

  step("both running in the list");
  await page.getByRole("link", { name: "Instances" }).click();
  for (const n of ["web-server", "web-client"])
    await page.locator("#instances tr", { hasText: n }).locator('[data-status="running"]').waitFor();

  step("push bytes; rate graph and totals move");
  await page.locator("#instances a", { hasText: "web-server" }).click();
  await page.locator("h1", { hasText: "web-server" }).waitFor();
  const totalBefore = await page.locator('[data-metric="total-in"] .v').textContent();
  let pushing = true;
  const pusher = (async () => { while (pushing) { await pushBytes(256 * 1024); await new Promise((r) => setTimeout(r, 200)); } })();
  await page.waitForFunction(() => Number(document.getElementById("rate-chart").dataset.max || 0) > 0, null, { timeout: TIMEOUT });
  await page.waitForFunction((before) => {
    const v = document.querySelector('[data-metric="total-in"] .v').textContent;
    return v !== before && v !== "0 B";
  }, totalBefore, { timeout: TIMEOUT });
  const inRate = await page.locator('[data-metric="in"] .v').textContent();
  expect(inRate !== "–" && !inRate.startsWith("0 B"), `a live in-rate, got ${inRate}`);
  pushing = false;
  await pusher;

  step("a log line arrives");
  await page.locator("#logs").filter({ hasText: /\S+ (INFO|WARN|DEBUG|ERROR)|info|INFO/ }).waitFor();

  step("tcping the target");
  await page.getByRole("button", { name: `Ping 127.0.0.1:${usersPort}` }).click();
  await page.locator("#tcping-out", { hasText: "connected in" }).waitFor();
  await shot("detail-light");

  step("screens at 360 px and in the dark theme");
  await page.setViewportSize({ width: 360, height: 780 });
  await shot("detail-360-light");
  await page.getByRole("link", { name: "Instances" }).click();
  await page.locator("#instances tr", { hasText: "web-client" }).waitFor();
  await shot("instances-360-light");
  await page.setViewportSize({ width: 1280, height: 900 });
  await shot("instances-light");
  await page.getByRole("link", { name: "Overview" }).click();
  await page.locator("#info .card").first().waitFor();
  await shot("overview-light");
  await page.locator("#theme").click();
  expect(await page.evaluate(() => document.documentElement.dataset.theme) === "dark", "dark theme on");
  await page.locator("#info .card").first().waitFor();
  await shot("overview-dark");
  await page.getByRole("link", { name: "Instances" }).click();
  await page.locator("#instances tr", { hasText: "web-client" }).waitFor();
  await shot("instances-dark");
  await page.setViewportSize({ width: 360, height: 780 });
  await shot("instances-360-dark");
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.locator("#instances a", { hasText: "web-server" }).click();
  await page.locator("#rate-chart canvas").waitFor();
  await shot("detail-dark");
  await page.getByRole("link", { name: "New", exact: true }).click();
  await page.locator("#f-tunnel-any").fill("127.0.0.1:0");
  await page.locator("#f-target-any").fill("127.0.0.1:0");
  await page.locator("#f-max-server").fill("lots");
  await page.getByRole("button", { name: "Create and start" }).click();
  await maxErr.filter({ hasText: "max" }).waitFor();
  await shot("form-error-dark");

  step("stop and start from the detail page (keyboard for start)");
  await page.getByRole("link", { name: "Instances" }).click();
  await page.locator("#instances a", { hasText: "web-client" }).click();
  await page.getByRole("button", { name: "Stop web-client", exact: true }).click();
  await page.locator("h1 [data-status=stopped]").waitFor();
  await page.getByRole("button", { name: "Start web-client", exact: true }).focus();
  await page.keyboard.press("Enter");
  await page.locator("h1 [data-status=running]").waitFor();

  step("delete both, with confirmation");
  await page.getByRole("link", { name: "Instances" }).click();
  for (const n of ["web-client", "web-server"]) {
    await page.getByRole("button", { name: `Delete ${n}` }).click();
    await page.locator("dialog #confirm-yes").click();
    await page.locator("#instances tr", { hasText: n }).waitFor({ state: "detached" });
  }

  step("rotate the key: this browser stays signed in with the new one, the old key stops working");
  await page.getByRole("link", { name: "Overview" }).click();
  await page.locator("#rotate-key").click();
  await page.locator("dialog #confirm-yes").click();
  const newKey = (await page.locator("#new-key").textContent()).trim();
  expect(newKey.length >= 32 && newKey !== NP_KEY, "a new key shown once");
  await page.getByRole("button", { name: "Done" }).click();
  const oldKey = await page.evaluate(async ([api, key]) => (await fetch(api + "/v1/instances", { credentials: "omit", headers: { "X-API-Key": key } })).status, [NP_URL + "/api", NP_KEY]);
  expect(oldKey === 401, `the old key is refused, got ${oldKey}`);
  const still = await page.evaluate(async (api) => (await fetch(api + "/v1/instances")).status, NP_URL + "/api");
  expect(still === 200, `this browser is still signed in, got ${still}`);

  step("sign out");
  await page.locator("#theme").click();
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.locator("#apikey").waitFor();
  const after = await page.evaluate(async (api) => (await fetch(api + "/v1/instances")).status, NP_URL + "/api");
  expect(after === 401, `401 after sign-out, got ${after}`);
  await page.emulateMedia({ colorScheme: "dark" });
  await page.evaluate(() => localStorage.removeItem("np-theme"));
  await page.reload();
  await page.locator("#apikey").waitFor();
  await shot("signin-dark");

  expect(external.length === 0, `no request outside the master: ${external.join(", ")}`);
  step("done");
} catch (e) {
  console.error("FAILED:", e.message);
  try { await shot("failure"); } catch (_) { /* best effort */ }
  process.exitCode = 1;
} finally {
  await browser.close();
  echo.close();
}
