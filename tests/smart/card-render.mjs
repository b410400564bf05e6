// Renders CDS Hooks cards the way the CDS Hooks sandbox shows them (summary, indicator colour,
// detail as markdown → HTML, source, suggestions as buttons, links) in headless Chromium at EHR
// sidebar widths, for tests/gateway/card_text.rs. Oracle Health gives CDS cards about 1/8 of a 1920 px
// screen: 240 px; 320 px is a roomier pane.
// Usage: node card-render.mjs '<json {cards: [{name, card}], widths: [240, 320], out_dir}>'
// Prints one JSON line: {widths: [{width, page_scroll_width, screenshot, cards: [{name,
// overflow_px, card_right_px, detail_lines, line_height_px, text}]}]} or {error}; exit 1 on
// error. Screenshots: out_dir/cards-<width>px.png (the pane) and <name>-<width>px.png (each card).
// No network: the markdown renderer is the small one below (the subset bedside writes: paragraphs,
// "- " lists, **bold**, _italic_; anything else stays text).
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const opts = JSON.parse(process.argv[2]);
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

function inline(text) {
  return esc(text)
    .replace(/\*\*(.+?)\*\*/g, '<strong>$1</strong>')
    .replace(/(^|[\s(])_(.+?)_(?=$|[\s).,;:])/g, '$1<em>$2</em>');
}

function markdown(text) {
  const html = [];
  for (const block of String(text).split(/\n\s*\n/)) {
    const lines = block.split('\n').filter((l) => l.trim() !== '');
    if (lines.length === 0) continue;
    if (lines.every((l) => /^\s*[-*] /.test(l))) {
      html.push('<ul>' + lines.map((l) => `<li>${inline(l.replace(/^\s*[-*] /, ''))}</li>`).join('') + '</ul>');
    } else {
      html.push(`<p>${lines.map(inline).join('<br>')}</p>`);
    }
  }
  return html.join('\n');
}

function cardHtml(name, card) {
  const suggestions = (card.suggestions ?? [])
    .map((s) => `<button class="suggestion${s.isRecommended ? ' recommended' : ''}">${esc(s.label)}</button>`)
    .join('');
  const links = (card.links ?? []).map((l) => `<button class="link">${esc(l.label)}</button>`).join('');
  const source = card.source?.url
    ? `<a href="${esc(card.source.url)}">${esc(card.source.label)}</a>`
    : esc(card.source?.label ?? '');
  return `<section class="card ${esc(card.indicator)}" data-name="${esc(name)}">
  <div class="summary">${esc(card.summary)}</div>
  <div class="source">Source: ${source}</div>
  <div class="detail">${markdown(card.detail ?? '')}</div>
  <div class="suggestions">${suggestions}</div>
  <div class="links">${links}</div>
</section>`;
}

// Sandbox-like: Terra's 14 px system font, a coloured bar for the indicator, full-width buttons.
const style = `
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/20px -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1c1f21; background: #f4f4f4; }
  .sidebar { padding: 6px; }
  .card { background: #fff; border: 1px solid #dedfe0; border-left: 5px solid #007cc3; margin: 0 0 8px; padding: 8px 10px; }
  .card.warning { border-left-color: #ffb166; }
  .card.critical { border-left-color: #e50000; }
  .summary { font-weight: 700; font-size: 15px; line-height: 20px; margin-bottom: 4px; }
  .source { color: #64696c; font-size: 12px; line-height: 16px; margin-bottom: 6px; }
  .detail p { margin: 0 0 8px; }
  .detail ul { margin: 0 0 8px; padding-left: 18px; }
  button { display: block; width: 100%; margin: 4px 0; padding: 4px 8px; font: inherit; text-align: left; background: #fff; border: 1px solid #007cc3; color: #007cc3; border-radius: 3px; }
  button.recommended { background: #007cc3; color: #fff; }
`;

let browser;
try {
  if (!fs.existsSync(executablePath)) throw new Error(`Chromium not found at ${executablePath} (apt-get install chromium; .ci/setup does)`);
  browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  const html = `<!doctype html><html><head><meta charset="utf-8"><style>${style}</style></head><body><div class="sidebar">${opts.cards
    .map((c) => cardHtml(c.name, c.card))
    .join('\n')}</div></body></html>`;
  const widths = [];
  for (const width of opts.widths) {
    const context = await browser.newContext({ viewport: { width, height: 900 }, deviceScaleFactor: 1 });
    const page = await context.newPage();
    await page.setContent(html, { waitUntil: 'load' });
    const measured = await page.evaluate(() => ({
      page_scroll_width: document.documentElement.scrollWidth,
      cards: [...document.querySelectorAll('.card')].map((card) => {
        const detail = card.querySelector('.detail');
        const lineHeight = parseFloat(getComputedStyle(detail).lineHeight);
        // Lines of text: the detail's height less the paragraph gaps, over the line height.
        const gaps = [...detail.children].reduce((sum, e) => sum + parseFloat(getComputedStyle(e).marginBottom), 0);
        let overflow = 0;
        for (const e of [card, ...card.querySelectorAll('*')]) overflow = Math.max(overflow, e.scrollWidth - e.clientWidth);
        return {
          name: card.dataset.name,
          overflow_px: overflow,
          card_right_px: card.getBoundingClientRect().right,
          detail_lines: Math.round((detail.getBoundingClientRect().height - gaps) / lineHeight),
          line_height_px: lineHeight,
          text: card.innerText,
        };
      }),
    }));
    let screenshot;
    if (opts.out_dir) {
      fs.mkdirSync(opts.out_dir, { recursive: true });
      screenshot = path.join(opts.out_dir, `cards-${width}px.png`);
      await page.screenshot({ path: screenshot, fullPage: true });
      // One picture per card too, to read at its real size.
      const cards = page.locator('.card');
      for (let i = 0; i < (await cards.count()); i++) {
        const name = measured.cards[i].name.replace(/[^a-z0-9-]/gi, '_');
        await cards.nth(i).screenshot({ path: path.join(opts.out_dir, `${name}-${width}px.png`) });
      }
    }
    widths.push({ width, ...measured, screenshot });
    await context.close();
  }
  console.log(JSON.stringify({ widths }));
  await browser.close();
} catch (e) {
  console.log(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }));
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
