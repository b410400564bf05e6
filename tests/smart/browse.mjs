// Drives headless Chromium (the system's, via playwright-core) through a SMART launch for
// tests/smart_launch.rs. Usage: node browse.mjs '<json {url, screenshot, wait_for}>'
// Prints one JSON line: {url, status, text, cookies, navigations} or {error}; exit 1 on error.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const opts = JSON.parse(process.argv[2]);
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
let browser;
try {
  if (!fs.existsSync(executablePath)) throw new Error(`Chromium not found at ${executablePath} (apt-get install chromium; .ci/setup does)`);
  browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  const context = await browser.newContext();
  const page = await context.newPage();
  const navigations = [];
  let status = null;
  page.on('response', (r) => {
    if (r.request().isNavigationRequest() && r.frame() === page.mainFrame()) {
      navigations.push({ url: r.url(), status: r.status() });
      status = r.status();
    }
  });
  await page.goto(opts.url, { waitUntil: 'load', timeout: 20000 });
  if (opts.wait_for) await page.waitForURL((u) => u.pathname === opts.wait_for, { timeout: 20000 });
  await page.waitForLoadState('load');
  const text = await page.innerText('body');
  if (opts.screenshot) {
    fs.mkdirSync(path.dirname(opts.screenshot), { recursive: true });
    await page.screenshot({ path: opts.screenshot, fullPage: true });
  }
  const cookies = await context.cookies();
  console.log(JSON.stringify({ url: page.url(), status, text, cookies, navigations }));
  await browser.close();
} catch (e) {
  console.log(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }));
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
