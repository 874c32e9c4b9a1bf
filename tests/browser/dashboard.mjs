// Drives headless Chromium (Debian's, through playwright-core) through the
// dashboard of a live coordinator that crates/server/tests/dashboard.rs
// started and filled. Input (environment):
//   TF_URL      the coordinator, http://127.0.0.1:PORT
//   TF_PLAN     JSON: {pages: [{path, selectors: [css…]}], live: {job, task},
//               series: {path, changes: "20"}, fleet: "/", retry: {job}}
//   TF_SHOTS    the directory screenshots are written to
//   TF_CHROMIUM the browser (default /usr/bin/chromium)
// It prints `READY` when the live pages are open and watching, then expects
// the test to finish the live task; `PASS name` per check; exits 1 on the
// first failure with `FAIL name: why`.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const url = process.env.TF_URL;
const plan = JSON.parse(process.env.TF_PLAN);
const shots = process.env.TF_SHOTS;
mkdirSync(shots, { recursive: true });

const MAX_PAGE_BYTES = 200 * 1024;
const failures = [];
function pass(name) { console.log(`PASS ${name}`); }
function fail(name, why) {
  console.log(`FAIL ${name}: ${why}`);
  failures.push(name);
}

const browser = await chromium.launch({
  executablePath: process.env.TF_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});

/** A page whose console errors, page errors and bytes are recorded. */
async function open(context, name) {
  const page = await context.newPage();
  page.errors = [];
  page.bytes = 0;
  page.on('console', (m) => { if (m.type() === 'error') page.errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => page.errors.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    // The live socket is closed when the page goes: not an error.
    if (!r.url().includes('/socket.io/')) page.errors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
  page.on('response', async (r) => {
    if (r.url().includes('/socket.io/')) return;
    try { page.bytes += (await r.body()).length; } catch { /* a redirect has no body */ }
  });
  page.testName = name;
  return page;
}

function slug(path) { return path.replace(/[^a-z0-9]+/gi, '_').replace(/^_|_$/g, '') || 'fleet'; }

async function checkErrors(page, name) {
  if (page.errors.length) fail(`${name} has no console errors`, page.errors.join('; '));
  else pass(`${name} has no console errors`);
}

const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });

// ----- every page: key elements, no console errors, weight, screenshot -------
for (const { path, selectors, live } of plan.pages) {
  const page = await open(context, path);
  const name = `GET ${path}`;
  try {
    await page.goto(url + path, { waitUntil: 'load' });
    for (const sel of selectors) {
      await page.waitForSelector(sel, { timeout: 5000, state: 'attached' });
    }
    pass(`${name} shows ${selectors.join(', ')}`);
    if (live) {
      await page.waitForFunction(() => window.tfDashboard && window.tfDashboard.connected, null, { timeout: 5000 });
      pass(`${name} is live`);
    }
    // A settled page: the log tail and any first refresh are in.
    await page.waitForTimeout(300);
    if (page.bytes > MAX_PAGE_BYTES) fail(`${name} weighs under 200 KB`, `${page.bytes} bytes`);
    else pass(`${name} weighs ${page.bytes} bytes`);
    await page.screenshot({ path: join(shots, `${slug(path)}.png`), fullPage: true });
    await checkErrors(page, name);
  } catch (e) {
    fail(name, e.message.split('\n')[0]);
  }
  await page.close();
}

// ----- the series: the step's change point is drawn ---------------------------
{
  const page = await open(context, 'series');
  const name = `plot of ${plan.series.path}`;
  try {
    await page.goto(url + plan.series.path, { waitUntil: 'load' });
    await page.waitForSelector('#plot[data-drawn="true"] canvas', { timeout: 5000 });
    const drawn = await page.getAttribute('#plot', 'data-drawn-changes');
    if (drawn === plan.series.changes) pass(`${name} marks the change point at ${drawn}`);
    else fail(`${name} marks the change point`, `drawn ${JSON.stringify(drawn)}, expected ${plan.series.changes}`);
    // 10,000 points through the page's own drawing code.
    const { ms, marked } = await page.evaluate(async () => {
      const n = 10000, d = { x: [], y: [], task: [], job: [], changes: [5000], band: [99, 101], time: false, unit: 'msecs' };
      for (let i = 0; i < n; i++) { d.x.push(i); d.y.push((i < 5000 ? 100 : 120) + (i % 7) * 0.3); d.task.push(1); d.job.push(1); }
      const box = document.createElement('div');
      box.style.width = '1000px';
      document.body.appendChild(box);
      const t0 = performance.now();
      window.tfDrawSeries(box, d);
      // Drawn: the draw hook marked the change point (uPlot may draw in a
      // microtask), and the frame is painted.
      while (box.getAttribute('data-drawn') !== 'true') await new Promise((r) => setTimeout(r, 1));
      await new Promise((r) => requestAnimationFrame(() => r()));
      return { ms: performance.now() - t0, marked: box.getAttribute('data-drawn-changes') };
    });
    if (marked !== '5000') fail('10,000 points: the change point is marked', marked);
    if (ms < 1000) pass(`10,000 points drawn in ${Math.round(ms)} ms`);
    else fail('10,000 points drawn in under 1 s', `${Math.round(ms)} ms`);
    await page.screenshot({ path: join(shots, 'series_plot.png'), fullPage: true });
    await checkErrors(page, name);
  } catch (e) {
    fail(name, e.message.split('\n')[0]);
  }
  await page.close();
}

// ----- a phone in dark mode, from the keyboard -------------------------------
{
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, colorScheme: 'dark', hasTouch: true, isMobile: true });
  const page = await open(phone, 'phone');
  const name = 'the fleet on a dark phone';
  try {
    await page.goto(url + plan.fleet, { waitUntil: 'load' });
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    if (background === 'rgb(22, 23, 26)') pass(`${name} is dark`);
    else fail(`${name} is dark`, background);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow <= 1) pass(`${name} does not scroll sideways`);
    else fail(`${name} does not scroll sideways`, `${overflow} px too wide`);
    await page.keyboard.press('Tab');
    const first = await page.evaluate(() => document.activeElement && document.activeElement.className);
    if (first === 'skip') pass('the first Tab reaches "Skip to content"');
    else fail('the first Tab reaches "Skip to content"', `focused ${first}`);
    await page.screenshot({ path: join(shots, 'fleet_phone_dark.png'), fullPage: true });
    await checkErrors(page, name);
  } catch (e) {
    fail(name, e.message.split('\n')[0]);
  }
  await phone.close();
}

// ----- live: the job and task pages follow the agent without a reload --------
{
  const job = await open(context, 'live job');
  const task = await open(context, 'live task');
  try {
    await job.goto(`${url}/jobs/${plan.live.job}`, { waitUntil: 'load' });
    await task.goto(`${url}/tasks/${plan.live.task}`, { waitUntil: 'load' });
    for (const p of [job, task]) {
      await p.waitForFunction(() => window.tfDashboard && window.tfDashboard.connected, null, { timeout: 5000 });
      await p.evaluate(() => { window.tfMarker = 'same document'; });
    }
    const before = await job.getAttribute('#job-state', 'data-state');
    if (before !== 'running') fail('the live job starts running', before);
    await task.waitForFunction(() => document.getElementById('log').textContent.includes('building step 1 of 3'), null, { timeout: 5000 });
    pass('the log tail shows the output so far');
    console.log('READY');
    await job.waitForSelector('#job-state[data-state="passed"]', { timeout: 20000 });
    pass('the job page shows the job passed without a reload');
    await task.waitForFunction(() => document.getElementById('log').textContent.includes('step 3 of 3'), null, { timeout: 20000 });
    pass('the log tail follows new output');
    await task.waitForSelector('#task-state.passed', { timeout: 20000 });
    pass('the task page shows the task passed');
    for (const p of [job, task]) {
      const same = await p.evaluate(() => window.tfMarker === 'same document'
        && performance.getEntriesByType('navigation').length === 1
        && window.tfDashboard.refreshes > 0);
      if (same) pass(`${p.testName} was updated in place (no reload)`);
      else fail(`${p.testName} was updated in place`, 'the page was reloaded or never refreshed');
    }
    await job.screenshot({ path: join(shots, 'live_job_after.png'), fullPage: true });
    await task.screenshot({ path: join(shots, 'live_task_after.png'), fullPage: true });
    await checkErrors(job, 'the live job page');
    await checkErrors(task, 'the live task page');
  } catch (e) {
    fail('live updates', e.message.split('\n')[0]);
  }
}

// ----- an action: the failed job's Retry button -----------------------------
{
  const page = await open(context, 'retry');
  const name = 'Retry on the failed job';
  try {
    await page.goto(`${url}/jobs/${plan.retry.job}`, { waitUntil: 'load' });
    await page.waitForFunction(() => window.tfDashboard && window.tfDashboard.connected, null, { timeout: 5000 });
    await page.click('button[data-post$="/retry"]');
    await page.waitForFunction(() => document.getElementById('action-status').textContent === 'Done.', null, { timeout: 5000 });
    await page.waitForSelector('#job-state:not([data-state="failed"])', { timeout: 10000 });
    pass(`${name} queues its task again and the page shows it`);
    await page.screenshot({ path: join(shots, 'retried_job.png'), fullPage: true });
    await checkErrors(page, name);
  } catch (e) {
    fail(name, e.message.split('\n')[0]);
  }
}

await browser.close();
console.log(`screenshots in ${shots}`);
if (failures.length) {
  console.log(`${failures.length} browser check(s) failed`);
  process.exit(1);
}
