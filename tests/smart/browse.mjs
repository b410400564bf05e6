// Drives headless Chromium (the system's, via playwright-core) through a SMART launch for
// tests/smart_app/smart_launch.rs, in a 1280×800 viewport (an EHR pane).
// Usage: node browse.mjs '<json {url, screenshot, wait_for, feedback?: {verdict, reason},
//   embed_in?, ignore_https_errors?}>'
// Prints one JSON line: {url, status, text, cookies, navigations, a11y, after?} or {error};
// exit 1 on error. With `embed_in` (a page URL taking `?src=`, e.g. auth-server.mjs's
// `/__embed` on another site), `url` is opened inside that page's <iframe>, as an EHR embeds
// a SMART app, and url/status/text/a11y are the frame's. `a11y`: form controls without a label, SVG charts without role/label, the
// page's width, and whether Tab alone reaches the feedback button. With `feedback`, the app's
// form is filled and sent; `after` is the page it lands on.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const opts = JSON.parse(process.argv[2]);
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
let browser;
try {
  if (!fs.existsSync(executablePath)) throw new Error(`Chromium not found at ${executablePath} (apt-get install chromium; .ci/setup does)`);
  const args = ['--no-sandbox', '--disable-dev-shm-usage'];
  if (opts.ignore_https_errors) args.push('--ignore-certificate-errors');
  browser = await chromium.launch({ executablePath, headless: true, args });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ignoreHTTPSErrors: !!opts.ignore_https_errors });
  const page = await context.newPage();
  const navigations = [];
  let status = null;
  // The frame the app runs in: the page itself, or the embedding page's iframe.
  const isApp = (frame) => (opts.embed_in ? frame !== page.mainFrame() : frame === page.mainFrame());
  page.on('response', (r) => {
    if (r.request().isNavigationRequest() && isApp(r.frame())) {
      navigations.push({ url: r.url(), status: r.status() });
      status = r.status();
    }
  });
  let app = page;
  if (opts.embed_in) {
    await page.goto(`${opts.embed_in}?src=${encodeURIComponent(opts.url)}`, { waitUntil: 'load', timeout: 20000 });
    const deadline = Date.now() + 20000;
    const reached = () => page.frames().find((f) => isApp(f) && (!opts.wait_for || new URL(f.url()).pathname === opts.wait_for));
    while (!reached()) {
      if (Date.now() > deadline) throw new Error(`the iframe never reached ${opts.wait_for}; frames: ${page.frames().map((f) => f.url()).join(' ')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    app = reached();
  } else {
    await page.goto(opts.url, { waitUntil: 'load', timeout: 20000 });
    if (opts.wait_for) await page.waitForURL((u) => u.pathname === opts.wait_for, { timeout: 20000 });
  }
  await app.waitForLoadState('load');
  const text = await app.innerText('body');
  if (opts.screenshot) {
    fs.mkdirSync(path.dirname(opts.screenshot), { recursive: true });
    await page.screenshot({ path: opts.screenshot, fullPage: true });
  }
  const cookies = await context.cookies();
  const a11y = await app.evaluate(() => ({
    unlabeled_controls: [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
      .filter((e) => !e.labels || e.labels.length === 0).map((e) => e.name),
    unlabeled_charts: [...document.querySelectorAll('svg')]
      .filter((s) => s.getAttribute('role') !== 'img' || !s.getAttribute('aria-label')).length,
    charts: document.querySelectorAll('svg').length,
    scroll_width: document.documentElement.scrollWidth,
    has_feedback_form: !!document.querySelector('form.feedback'),
  }));
  if (a11y.has_feedback_form) {
    a11y.tab_reaches_feedback = false;
    await page.focus('body');
    for (let i = 0; i < 80 && !a11y.tab_reaches_feedback; i++) {
      await page.keyboard.press('Tab');
      a11y.tab_reaches_feedback = await page.evaluate(() => document.activeElement?.matches('form.feedback button[type=submit]') ?? false);
    }
  }
  const first = { url: app.url(), status };
  let after;
  if (opts.feedback) {
    const form = page.locator('form.feedback').first();
    await form.locator(`input[name=verdict][value=${opts.feedback.verdict}]`).check();
    if (opts.feedback.reason) await form.locator('select[name=reason]').selectOption(opts.feedback.reason);
    status = null;
    await Promise.all([page.waitForNavigation({ waitUntil: 'load', timeout: 20000 }), form.locator('button[type=submit]').click()]);
    after = { url: page.url(), status, text: await page.innerText('body') };
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot.replace(/\.png$/, '-after-feedback.png'), fullPage: true });
  }
  console.log(JSON.stringify({ ...first, text, cookies, navigations, a11y, after }));
  await browser.close();
} catch (e) {
  console.log(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }));
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
