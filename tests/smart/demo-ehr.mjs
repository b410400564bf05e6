// Clicks through `bedside demo`'s demo EHR (smart-launch/demo-ehr/) in headless Chromium (the
// system's, via playwright-core) at 1280×800, the whole loop a CDS developer would: patient list →
// chart → patient-view card → SMART app in the EHR's iframe → the app's feedback form →
// order-sign card on a draft order (suggestion accepted, action applied, feedback sent) → a
// fresh patient-view card overridden with a reason and comment → the feedback report.
// Usage: node demo-ehr.mjs '<json {url: "<EHR origin>/", screenshots: "<dir>"|null,
//   patient?: "<id>", aki_patient?: "<id>", app_feedback?: {verdict: "agree"|"disagree", reason?}}>'
// `patient` defaults to the first whose label / one-liner mentions deterioration; `aki_patient`
// to the first other one that mentions AKI / kidney / a draft order (none: "aki" is null).
// Prints one JSON line: {patients, card, app, app_feedback, aki, override, report, a11y,
// console_errors, csp_violations} or {error}; exit 1 on error. Each wait is at most 20 s.
// Screenshots (if a dir is given): ehr.png (full page), card.png, app.png (the iframe),
// app-feedback.png, aki.png, override.png, report.png.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const opts = JSON.parse(process.argv[2]);
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const WAIT = 20000;
const shots = opts.screenshots ?? null;
const shot = (name) => (shots ? { path: path.join(shots, name) } : null);

let browser;
try {
  if (!fs.existsSync(executablePath)) throw new Error(`Chromium not found at ${executablePath} (apt-get install chromium; .ci/setup does)`);
  if (shots) fs.mkdirSync(shots, { recursive: true });
  browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(WAIT);

  // Console errors and CSP violations, from the EHR page and the app's frame alike.
  const consoleErrors = [];
  const cspViolations = [];
  await context.exposeBinding('__reportCsp', ({ frame }, v) => cspViolations.push({ frame: frame?.url(), ...v }));
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__reportCsp?.({ directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber });
    });
  });
  const watch = (p) => {
    p.on('console', (m) => { if (m.type() === 'error') consoleErrors.push({ page: p.url(), text: m.text() }); });
    p.on('pageerror', (e) => consoleErrors.push({ page: p.url(), text: String(e) }));
  };
  context.on('page', watch);

  const page = await context.newPage();
  const step = async (what, fn) => {
    try {
      return await fn();
    } catch (e) {
      throw new Error(`${what}: ${e.message.split('\n')[0]}`);
    }
  };

  // 1. The patient list.
  await step('open the EHR', () => page.goto(opts.url, { waitUntil: 'load', timeout: WAIT }));
  await step('the patient list', () => page.waitForSelector('[data-testid=patient-list][data-state=ready] li[data-patient]', { timeout: WAIT }));
  const patients = await page.$$eval('li[data-patient]', (lis) => lis.map((li) => ({ id: li.dataset.patient, text: li.innerText })));
  const first = opts.patient ?? patients.find((p) => /deteriorat/i.test(p.text))?.id;
  if (!first) throw new Error(`no patient mentions deterioration: ${JSON.stringify(patients)}`);
  if (!patients.some((p) => p.id === first)) throw new Error(`patient ${first} is not in the list`);
  const akiPatient = opts.aki_patient ?? patients.find((p) => p.id !== first && /\baki\b|kidney|renal|nephro|draft/i.test(p.text))?.id ?? null;

  const openPatient = async (id) => {
    await step(`open patient ${id}`, async () => {
      await page.click(`[data-testid="patient-${id}"] button`);
      await page.waitForSelector(`[data-testid=chart][data-patient="${id}"][data-state=ready]`, { timeout: WAIT });
    });
  };
  // Clicks a hook button and waits for its answer; returns what came back, per call.
  const callHook = async (hook) => step(`call ${hook}`, async () => {
    await page.click(`[data-testid=hook-${hook}]`);
    await page.waitForSelector(`[data-testid=hook-result][data-hook=${hook}][data-state=done]`, { timeout: WAIT });
    return page.$$eval('[data-testid=hook-result] [data-testid=call], [data-testid=hook-error]', (els) => els.map((e) => ({
      service: e.dataset.service ?? null, status: e.dataset.status ?? null, cards: e.querySelectorAll('[data-testid=card]').length,
      error: e.matches('[data-testid=hook-error]') ? e.innerText : e.querySelector('[data-testid=call-error]')?.innerText ?? null,
    })));
  });
  const cardInfo = (loc) => loc.evaluate((c) => ({
    summary: c.querySelector('.summary strong')?.innerText ?? '',
    indicator: c.dataset.indicator, service: c.dataset.service, uuid: c.dataset.uuid,
  }));

  // 2. The chart of the deterioration patient, and its patient-view card.
  await openPatient(first);
  await page.waitForFunction(() => { const i = document.querySelector('[data-testid=trend]'); return i && i.complete; }, null, { timeout: WAIT }).catch(() => {});
  if (shots) await page.screenshot({ ...shot('ehr.png'), fullPage: true });
  const calls = await callHook('patient-view');
  const cards = page.locator('[data-testid=card]');
  if ((await cards.count()) === 0) throw new Error(`patient-view gave no card for ${first}: ${JSON.stringify(calls)}`);
  const withApp = page.locator('[data-testid=card]:has([data-testid=smart-link])');
  const card = (await withApp.count()) ? withApp.first() : cards.first();
  if (shots) await card.screenshot(shot('card.png'));
  const cardSeen = { ...(await cardInfo(card)), calls };

  // 3. The SMART app in the EHR's iframe, and its feedback form.
  let app = null;
  let appFeedback = null;
  if (await card.locator('[data-testid=smart-link]').count()) {
    await card.locator('[data-testid=smart-link]').first().click();
    const frameEl = await step('the app iframe', () => page.waitForSelector('[data-testid=smart-frame]', { timeout: WAIT }));
    const frame = await step('the SMART app in the iframe', async () => {
      const deadline = Date.now() + WAIT;
      for (;;) {
        const f = await frameEl.contentFrame();
        if (f && f.url().includes('/smart/') && !/\/smart\/(launch|callback)\b/.test(f.url())) {
          const ready = await f.evaluate(() => document.readyState === 'complete' && (document.body?.innerText ?? '').trim().length > 0).catch(() => false);
          if (ready) return f;
        }
        // A blocked frame (CSP frame-src, X-Frame-Options / frame-ancestors) never recovers.
        if (f && f.url().startsWith('chrome-error:')) throw new Error(`the iframe was blocked; CSP violations: ${JSON.stringify(cspViolations)}; console errors: ${JSON.stringify(consoleErrors)}`);
        if (Date.now() > deadline) throw new Error(`the iframe never showed bedside's app; it is at ${f?.url()}: ${(await f?.evaluate(() => document.body?.innerText ?? '').catch(() => '')) ?? ''}`.slice(0, 1000));
        await new Promise((r) => setTimeout(r, 100));
      }
    });
    app = { url: frame.url(), frame_title: await frameEl.getAttribute('title'), text: (await frame.innerText('body')).slice(0, 2000) };
    if (shots) await frameEl.screenshot(shot('app.png'));
    // The app's own form, as tests/smart/browse.mjs fills it: verdict radio, optional reason.
    const fb = opts.app_feedback ?? { verdict: 'agree' };
    const form = frame.locator('form.feedback').first();
    if (await form.count()) {
      await step('the app feedback form', async () => {
        await form.locator(`input[name=verdict][value=${fb.verdict}]`).check();
        if (fb.reason) await form.locator('select[name=reason]').selectOption(fb.reason);
        await Promise.all([frame.waitForNavigation({ waitUntil: 'load', timeout: WAIT }), form.locator('button[type=submit]').click()]);
      });
      appFeedback = { url: frame.url(), text: (await frame.innerText('body')).slice(0, 2000) };
      if (shots) await frameEl.screenshot(shot('app-feedback.png'));
    } else {
      appFeedback = { url: frame.url(), text: null, skipped: 'the app shows no form.feedback' };
    }
  }

  // 4. An order-sign card on a draft order: accept its first suggestion.
  let aki = null;
  if (akiPatient) {
    await openPatient(akiPatient);
    const drafts = () => page.$$eval('[data-testid=draft-orders] [data-testid=draft-order]', (lis) => lis.map((li) => li.innerText));
    const draftsBefore = await drafts();
    if (!(await page.isVisible('[data-testid=hook-order-sign]'))) throw new Error(`patient ${akiPatient} has no draft order, so no order-sign button (did an earlier run accept its suggestion? the demo keeps orders in memory)`);
    const akiCalls = await callHook('order-sign');
    const akiCards = await page.$$eval('[data-testid=hook-result] [data-testid=card]', (cs) => cs.map((c) => ({
      summary: c.querySelector('.summary strong')?.innerText ?? '', indicator: c.dataset.indicator, service: c.dataset.service,
      suggestions: [...c.querySelectorAll('[data-testid=suggestion]')].map((b) => (b.querySelector('.s-label') ?? b).innerText),
    })));
    aki = { patient: akiPatient, calls: akiCalls, cards: akiCards, draft_orders_before: draftsBefore };
    const target = page.locator('[data-testid=hook-result] [data-testid=card]:has([data-testid=suggestion])').first();
    if (await target.count()) {
      await target.locator('[data-testid=suggestion]').first().click();
      await step('the accepted suggestion', async () => page.waitForFunction((c) => {
        const s = c.querySelector('[data-testid=card-status]');
        return s && /HTTP \d+|failed|Could not|no feedback sent/.test(s.innerText);
      }, await target.elementHandle(), { timeout: WAIT }));
      aki.applied_text = (await page.isVisible('[data-testid=applied]')) ? await page.innerText('[data-testid=applied]') : null;
      aki.feedback_status = await target.locator('[data-testid=card-status]').innerText();
      aki.draft_orders_after = await drafts();
      if (shots) await page.screenshot({ ...shot('aki.png'), fullPage: true });
    } else {
      aki.applied_text = null;
      aki.feedback_status = 'no card with a suggestion';
      aki.draft_orders_after = draftsBefore;
    }
  }

  // 5. A fresh patient-view call on the first patient: override its card.
  await openPatient(first);
  await callHook('patient-view');
  const target = page.locator('[data-testid=hook-result] [data-testid=card]:has([data-testid=override])').first();
  if (!(await target.count())) throw new Error('no card with an override control on the second patient-view call');
  const overridden = await cardInfo(target);
  await target.locator('[data-testid=override]').click();
  const reasons = target.locator('[data-testid=override-reason]');
  if (await reasons.count()) {
    const n = await reasons.locator('option').count();
    if (n > 1) await reasons.selectOption({ index: 1 });
  }
  await target.locator('[data-testid=override-comment]').fill('Reviewed at the bedside with the team (demo EHR test).');
  await target.locator('[data-testid=override-submit]').click();
  await step('the override feedback', async () => page.waitForFunction(
    (c) => /HTTP \d+|failed/.test(c.querySelector('[data-testid=card-status]')?.innerText ?? ''),
    await target.elementHandle(), { timeout: WAIT }));
  const override = { card: overridden, status_text: await target.locator('[data-testid=card-status]').innerText() };
  if (shots) await target.screenshot(shot('override.png'));

  // Accessibility and card safety on the page as it stands: labelled controls, named buttons,
  // the app iframe's title, no horizontal scroll at 1280 px, and nothing active in card details.
  const a11y = await page.evaluate(() => ({
    unlabeled_controls: [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
      .filter((e) => !e.labels || e.labels.length === 0).map((e) => e.dataset.testid ?? e.id),
    unnamed_buttons: [...document.querySelectorAll('button')].filter((b) => !b.innerText.trim() && !b.getAttribute('aria-label')).length,
    scroll_width: document.documentElement.scrollWidth,
    unsafe_in_details: [...document.querySelectorAll('[data-testid=detail] *')]
      .filter((e) => !['P', 'BR', 'UL', 'LI', 'STRONG', 'EM', 'CODE', 'A'].includes(e.tagName) || [...e.attributes].some((a) => a.name.startsWith('on'))
        || (e.tagName === 'A' && !/^https?:/.test(e.getAttribute('href') ?? ''))).map((e) => e.outerHTML.slice(0, 200)),
  }));

  // 6. The feedback report, through the header link (a new tab).
  const [reportPage] = await step('the report link', () => Promise.all([
    context.waitForEvent('page', { timeout: WAIT }),
    page.click('[data-testid=report-link]'),
  ]));
  await step('the report page', () => reportPage.waitForLoadState('load', { timeout: WAIT }));
  const report = { url: reportPage.url(), text: (await reportPage.innerText('body')).slice(0, 5000) };
  if (shots) await reportPage.screenshot({ ...shot('report.png'), fullPage: true });

  console.log(JSON.stringify({
    patients: patients.map((p) => p.id),
    card: cardSeen,
    app,
    app_feedback: appFeedback,
    aki,
    override,
    report,
    a11y,
    console_errors: consoleErrors,
    csp_violations: cspViolations,
  }));
  await browser.close();
} catch (e) {
  console.log(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }));
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
