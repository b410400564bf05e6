// Demo EHR page for `bedside demo` (served at /assets/ehr.js by the demo backend).
// What: lists the synthetic patients, shows a chart, calls bedside's CDS services through the
// backend (/api/patients/{id}/hooks/{hook}), renders the CDS Hooks 2.0 cards as an EHR would
// (indicator, safe Markdown detail, suggestions, links, override), applies accepted
// suggestions (/actions), sends CDS Hooks feedback (/api/feedback/{service}) and embeds the
// SMART app (links[].type "smart") in an iframe via /launch.
// Why this way: no framework and no build step; the page runs under a strict CSP
// (default-src 'self'), so there are no inline scripts or styles, and all card text goes into
// the DOM as text nodes (never innerHTML), because card content comes from a CDS service.
'use strict';

// Override forms made so far: numbers their controls' ids.
let overrideForms = 0;

(() => {
  // ---------- small DOM helpers ----------

  /** el('div', {class: 'x', dataset: {testid: 'y'}, onclick: f}, child, 'text', ...) */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs ?? {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'dataset') Object.assign(e.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
      else if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (v === true) e.setAttribute(k, '');
      else e.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const $ = (id) => document.getElementById(id);
  const clear = (node) => { while (node.firstChild) node.removeChild(node.firstChild); return node; };

  /** Only http(s) URLs become links; anything else (javascript:, data:, relative) stays text. */
  function safeHttpUrl(u) {
    try {
      const url = new URL(String(u));
      return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
    } catch {
      return null;
    }
  }

  async function api(method, path, body) {
    const init = { method, headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    let json = null;
    const text = await r.text();
    try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
    if (!r.ok) {
      const msg = (json && json.error) || text.slice(0, 300) || r.statusText;
      const err = new Error(`${method} ${path}: HTTP ${r.status}: ${msg}`);
      err.status = r.status;
      throw err;
    }
    if (json === null) throw new Error(`${method} ${path}: the response is not JSON`);
    return json;
  }

  // ---------- safe Markdown (the subset CDS cards use) ----------
  // Blocks: paragraphs (blank line), lines (<br>), "- " / "* " bullet lists.
  // Inline: `code`, [text](http(s) url), **bold**, *italic* / _italic_. Everything else is text.

  const INLINE_TOKENS = /`([^`\n]+)`|\[([^\]\n]+)\]\(\s*(https?:\/\/[^\s)]+)\s*\)/gi;

  function emphasis(text, parent) {
    // **bold** first, then *italic* / _italic_ within the rest.
    const parts = text.split(/\*\*(?=\S)(.+?)(?<=\S)\*\*/);
    parts.forEach((part, i) => {
      if (i % 2 === 1) parent.append(italic(part, el('strong')));
      else italic(part, parent);
    });
    return parent;
  }

  function italic(text, parent) {
    const re = /(^|[^\w*])([*_])(?=\S)(.+?)(?<=\S)\2(?![\w*])/g;
    let last = 0;
    let m;
    while ((m = re.exec(text)) !== null) {
      const start = m.index + m[1].length;
      parent.append(text.slice(last, start), el('em', { text: m[3] }));
      last = start + m[2].length * 2 + m[3].length;
      re.lastIndex = last;
    }
    parent.append(text.slice(last));
    return parent;
  }

  function inline(text, parent) {
    let last = 0;
    for (const m of text.matchAll(INLINE_TOKENS)) {
      emphasis(text.slice(last, m.index), parent);
      if (m[1] !== undefined) {
        parent.append(el('code', { text: m[1] }));
      } else {
        const href = safeHttpUrl(m[3]);
        if (href) parent.append(emphasis(m[2], el('a', { href, target: '_blank', rel: 'noopener noreferrer' })));
        else parent.append(m[0]);
      }
      last = m.index + m[0].length;
    }
    emphasis(text.slice(last), parent);
    return parent;
  }

  function markdown(src) {
    const frag = document.createDocumentFragment();
    const blocks = String(src ?? '').replace(/\r\n?/g, '\n').split(/\n[ \t]*\n/);
    const bullet = /^\s*[-*]\s+/;
    for (const block of blocks) {
      const lines = block.split('\n').filter((l) => l.trim() !== '');
      let i = 0;
      while (i < lines.length) {
        if (bullet.test(lines[i])) {
          const ul = el('ul');
          for (; i < lines.length && bullet.test(lines[i]); i++) ul.append(inline(lines[i].replace(bullet, ''), el('li')));
          frag.append(ul);
        } else {
          const p = el('p');
          for (let first = true; i < lines.length && !bullet.test(lines[i]); i++, first = false) {
            if (!first) p.append(el('br'));
            inline(lines[i].trim(), p);
          }
          frag.append(p);
        }
      }
    }
    return frag;
  }

  // ---------- FHIR display helpers ----------

  function conceptText(cc) {
    if (!cc) return '';
    if (cc.text) return cc.text;
    const c = (cc.coding ?? [])[0];
    return c ? c.display || c.code || '' : '';
  }

  function humanName(p) {
    const n = (p?.name ?? [])[0];
    if (!n) return p?.id ?? '';
    if (n.text) return n.text;
    return [...(n.given ?? []), n.family].filter(Boolean).join(' ');
  }

  function quantity(q) {
    if (!q || q.value === undefined) return '';
    const unit = q.unit ?? q.code ?? '';
    return unit ? `${q.value} ${unit}` : String(q.value);
  }

  function observationValue(o) {
    if (o.valueQuantity) return quantity(o.valueQuantity);
    if (Array.isArray(o.component) && o.component.length) {
      const find = (codes) => o.component.find((c) => (c.code?.coding ?? []).some((x) => codes.includes(x.code)));
      const sys = find(['8480-6']);
      const dia = find(['8462-4']);
      if (sys?.valueQuantity && dia?.valueQuantity) {
        const unit = sys.valueQuantity.unit ?? sys.valueQuantity.code ?? '';
        return `${sys.valueQuantity.value}/${dia.valueQuantity.value}${unit ? ' ' + unit : ''}`;
      }
      return o.component.map((c) => `${conceptText(c.code)} ${quantity(c.valueQuantity)}`.trim()).join('; ');
    }
    if (o.valueCodeableConcept) return conceptText(o.valueCodeableConcept);
    if (o.valueString !== undefined) return String(o.valueString);
    if (o.valueInteger !== undefined) return String(o.valueInteger);
    if (o.valueBoolean !== undefined) return String(o.valueBoolean);
    return '';
  }

  const pad = (n) => String(n).padStart(2, '0');
  function formatTime(t) {
    if (!t) return '';
    const d = new Date(t);
    if (Number.isNaN(d.getTime())) return String(t);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function orderText(r) {
    const what = conceptText(r.medicationCodeableConcept) || conceptText(r.code) ||
      r.medicationReference?.display || r.medicationReference?.reference || '(no description)';
    const dose = (r.dosageInstruction ?? [])[0]?.text;
    return dose ? `${what} — ${dose}` : what;
  }

  // ---------- state ----------

  const state = {
    info: null,
    patients: [],
    patient: null, // list entry {id, name, ...}
    record: null, // GET /api/patients/{id}
    generation: 0, // bumps on every patient switch; stale responses are dropped
  };

  // ---------- header, patient list ----------

  async function loadInfo() {
    try {
      const info = await api('GET', '/api/info');
      state.info = info;
      const notice = document.querySelector('[data-testid=notice]');
      if (info.notice) notice.textContent = info.notice;
      if (info.report) document.querySelector('[data-testid=report-link]').setAttribute('href', info.report);
      const services = info.services ?? [];
      const line = document.querySelector('[data-testid=services]');
      line.textContent = services.length
        ? `CDS services discovered at ${info.gateway ?? 'the gateway'}: ` +
          services.map((s) => `${s.id} (${s.hook})`).join(', ')
        : `No CDS services discovered at ${info.gateway ?? 'the gateway'}.`;
      line.title = services.map((s) => `${s.id}: ${s.title ?? ''}`).join('\n');
    } catch (e) {
      const line = document.querySelector('[data-testid=services]');
      line.textContent = `Could not read /api/info: ${e.message}`;
      line.classList.add('error');
    }
  }

  async function loadPatients() {
    const list = $('patient-list');
    const err = document.querySelector('[data-testid=patients-error]');
    try {
      const { patients } = await api('GET', '/api/patients');
      state.patients = patients ?? [];
      clear(list);
      for (const p of state.patients) {
        const button = el('button', { type: 'button', class: 'patient', 'aria-current': 'false', onclick: () => openPatient(p.id) },
          el('span', { class: 'p-name', text: p.name }),
          el('span', { class: 'p-meta', text: [p.gender, p.birthDate].filter(Boolean).join(' · ') }),
          p.label ? el('span', { class: 'p-label', text: p.label }) : null,
          p.what ? el('span', { class: 'p-what', text: p.what }) : null);
        list.append(el('li', { dataset: { testid: `patient-${p.id}`, patient: p.id } }, button));
      }
      list.dataset.state = 'ready';
      const m = /^#patient=(.+)$/.exec(location.hash);
      let wanted = null;
      try { wanted = m ? decodeURIComponent(m[1]) : null; } catch { wanted = null; } // a malformed hash opens nothing
      if (wanted && state.patients.some((p) => p.id === wanted)) openPatient(wanted);
    } catch (e) {
      err.textContent = `Could not load patients: ${e.message}`;
      err.hidden = false;
      list.dataset.state = 'error';
    }
  }

  // ---------- chart ----------

  async function openPatient(id) {
    const gen = ++state.generation;
    const entry = state.patients.find((p) => p.id === id) ?? { id, name: id };
    state.patient = entry;
    state.record = null;
    history.replaceState(null, '', `#patient=${encodeURIComponent(id)}`);
    for (const li of $('patient-list').children) {
      const current = li.dataset.patient === id;
      li.classList.toggle('current', current);
      li.firstChild.setAttribute('aria-current', current ? 'true' : 'false');
    }
    const chart = $('chart');
    chart.hidden = false;
    chart.dataset.patient = id;
    chart.dataset.state = 'loading';
    $('placeholder').hidden = true;
    $('chart-name').textContent = entry.name;
    $('chart-demographics').textContent = 'Loading…';
    closeApp();
    $('applied').hidden = true;
    delete $('hook-result').dataset.state;
    delete $('hook-result').dataset.hook;
    clear($('hook-result')).append(el('p', { class: 'muted', text: 'Press a hook button to call bedside.' }));
    for (const id2 of ['obs-body', 'conditions', 'draft-orders', 'other-orders']) clear($(id2));
    $('obs-more').textContent = '';
    const trend = $('trend');
    trend.src = `/api/patients/${encodeURIComponent(id)}/chart.svg`;
    trend.alt = `Trend of vital signs and laboratory results for ${entry.name}`;
    try {
      const record = await api('GET', `/api/patients/${encodeURIComponent(id)}`);
      if (gen !== state.generation) return;
      state.record = record;
      renderChart(record, entry);
      chart.dataset.state = 'ready';
    } catch (e) {
      if (gen !== state.generation) return;
      $('chart-demographics').textContent = '';
      $('chart-demographics').append(el('span', { class: 'error', text: `Could not load the chart: ${e.message}` }));
      chart.dataset.state = 'error';
    }
  }

  function renderChart(record, entry) {
    const p = record.patient ?? {};
    $('chart-name').textContent = humanName(p) || entry.name;
    const mrn = (p.identifier ?? [])[0]?.value;
    $('chart-demographics').textContent = [
      p.gender ?? entry.gender,
      (p.birthDate ?? entry.birthDate) ? `born ${p.birthDate ?? entry.birthDate}` : null,
      mrn ? `MRN ${mrn}` : null,
      `id ${entry.id}`,
      entry.label,
    ].filter(Boolean).join(' · ');

    const obs = record.observations ?? [];
    const tbody = $('obs-body');
    const shown = obs.slice(0, 60);
    for (const o of shown) {
      const coding = (o.code?.coding ?? [])[0];
      tbody.append(el('tr', { dataset: { testid: 'observation' } },
        el('td', { class: 'time', title: o.effectiveDateTime ?? '', text: formatTime(o.effectiveDateTime ?? o.issued) }),
        el('td', { title: coding ? `${coding.system ?? ''} ${coding.code ?? ''}`.trim() : '', text: conceptText(o.code) || '(no code)' }),
        el('td', { class: 'value', text: observationValue(o) })));
    }
    if (!obs.length) tbody.append(el('tr', {}, el('td', { colspan: 3, class: 'muted', text: 'No observations.' })));
    $('obs-more').textContent = obs.length > shown.length ? `Newest ${shown.length} of ${obs.length} shown.` : '';

    const conditions = (record.conditions ?? []).filter((c) => {
      const status = (c.clinicalStatus?.coding ?? [])[0]?.code;
      return !status || status === 'active' || status === 'recurrence' || status === 'relapse';
    });
    const cl = $('conditions');
    for (const c of conditions) {
      cl.append(el('li', {}, conceptText(c.code) || '(no code)',
        c.onsetDateTime ? el('span', { class: 'muted', text: ` — since ${formatTime(c.onsetDateTime)}` }) : null));
    }
    if (!conditions.length) cl.append(el('li', { class: 'muted', text: 'None recorded.' }));
    renderOrders(record.orders ?? []);
  }

  function renderOrders(orders) {
    if (state.record) state.record.orders = orders;
    const drafts = orders.filter((o) => o.status === 'draft');
    const others = orders.filter((o) => o.status !== 'draft');
    const dl = clear($('draft-orders'));
    const ol = clear($('other-orders'));
    const item = (o, testid) => el('li', { dataset: { testid, id: `${o.resourceType}/${o.id}` } },
      el('span', { class: 'order-text', text: orderText(o) }),
      el('span', { class: 'muted', text: ` — ${o.resourceType}/${o.id}, ${o.status ?? 'no status'}${o.intent ? ', ' + o.intent : ''}` }));
    for (const o of drafts) dl.append(item(o, 'draft-order'));
    for (const o of others) ol.append(item(o, 'order'));
    if (!drafts.length) dl.append(el('li', { class: 'muted', text: 'No draft orders.' }));
    if (!others.length) ol.append(el('li', { class: 'muted', text: 'None.' }));
    $('hook-order-select').hidden = !drafts.length;
    $('hook-order-sign').hidden = !drafts.length;
  }

  // ---------- hooks ----------

  async function callHook(hook) {
    const patient = state.patient;
    if (!patient) return;
    const gen = state.generation;
    const result = $('hook-result');
    const busy = $('hook-busy');
    const buttons = document.querySelectorAll('.toolbar button[data-hook]');
    buttons.forEach((b) => { b.disabled = true; });
    busy.textContent = `Calling ${hook}…`;
    result.dataset.state = 'loading';
    result.dataset.hook = hook;
    try {
      const r = await api('POST', `/api/patients/${encodeURIComponent(patient.id)}/hooks/${encodeURIComponent(hook)}`, {});
      if (gen !== state.generation) return;
      clear(result);
      result.append(el('p', { class: 'hook-meta muted' }, `${r.hook ?? hook} · hookInstance `, el('code', { text: r.hookInstance ?? '–' })));
      const calls = r.calls ?? [];
      if (!calls.length) result.append(el('p', { class: 'muted', text: `No bedside service is registered for ${hook}.` }));
      for (const call of calls) result.append(renderCall(call, patient));
      result.dataset.state = 'done';
      busy.textContent = `${hook}: ${calls.reduce((n, c) => n + (c.cards ?? []).length, 0)} card(s)`;
    } catch (e) {
      if (gen !== state.generation) return;
      clear(result).append(el('p', { class: 'error', dataset: { testid: 'hook-error' }, text: e.message }));
      result.dataset.state = 'done';
      busy.textContent = '';
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  function renderCall(call, patient) {
    const section = el('section', { class: 'call', dataset: { testid: 'call', service: call.service, status: call.status ?? '' } },
      el('h4', {}, call.service, el('span', { class: 'muted', text: ` · HTTP ${call.status ?? '–'}` })));
    if (call.error || (call.status !== undefined && call.status !== 200)) {
      section.append(el('p', { class: 'error', dataset: { testid: 'call-error' }, role: 'alert',
        text: `Error from ${call.service}: ${call.error ?? `HTTP ${call.status}`}` }));
    }
    const cards = call.cards ?? [];
    if (!cards.length && !call.error) section.append(el('p', { class: 'muted', dataset: { testid: 'no-cards' }, text: 'No cards.' }));
    for (const card of cards) section.append(renderCard(card, call.service, patient));
    const sys = call.systemActions ?? [];
    if (sys.length) {
      section.append(el('p', { class: 'muted', dataset: { testid: 'system-actions' },
        text: `System actions: ${sys.map((a) => `${a.type} ${a.resource?.resourceType ?? a.resourceId ?? ''}`.trim()).join(', ')}` }));
    }
    return section;
  }

  // ---------- cards ----------

  function renderCard(card, service, patient) {
    const indicator = ['info', 'warning', 'critical'].includes(card.indicator) ? card.indicator : 'info';
    const article = el('article', {
      class: `card ind-${indicator}`,
      dataset: { testid: 'card', service, indicator: card.indicator ?? '', uuid: card.uuid ?? '' },
      'aria-label': `${card.indicator ?? 'info'} card: ${card.summary ?? ''}`,
    });
    const status = el('p', { class: 'card-status', dataset: { testid: 'card-status' }, role: 'status', 'aria-live': 'polite' });
    const setStatus = (text, kind) => {
      status.textContent = text;
      status.className = `card-status ${kind ?? ''}`;
    };

    article.append(el('div', { class: 'summary' },
      el('span', { class: 'indicator', text: indicator }), ' ', el('strong', { text: card.summary ?? '(no summary)' })));

    if (card.source) {
      const href = safeHttpUrl(card.source.url);
      article.append(el('p', { class: 'source' }, 'Source: ',
        href ? el('a', { href, target: '_blank', rel: 'noopener noreferrer', dataset: { testid: 'source-link' }, text: card.source.label ?? href })
          : card.source.label ?? ''));
    }
    if (card.detail) article.append(el('div', { class: 'detail', dataset: { testid: 'detail' } }, markdown(card.detail)));

    const canFeedback = !!card.uuid;
    const controls = []; // disabled once the card has an outcome

    // Suggestions.
    const suggestions = card.suggestions ?? [];
    if (suggestions.length) {
      const box = el('div', { class: 'suggestions', role: 'group', 'aria-label': 'Suggestions' });
      if (card.selectionBehavior === 'at-most-one' && suggestions.length > 1) {
        box.append(el('p', { class: 'muted', text: 'Choose at most one:' }));
      }
      for (const s of suggestions) {
        const b = el('button', {
          type: 'button',
          class: `suggestion${s.isRecommended ? ' recommended' : ''}`,
          dataset: { testid: 'suggestion', uuid: s.uuid ?? '' },
          onclick: () => acceptSuggestion(card, service, patient, s, b, { controls, setStatus, article }),
        }, s.isRecommended ? el('span', { class: 'badge', text: 'Recommended' }) : null, s.isRecommended ? ' ' : null, el('span', { class: 's-label', text: s.label ?? '(no label)' }));
        const desc = (s.actions ?? []).map((a) => a.description).filter(Boolean).join('; ');
        if (desc) b.title = desc;
        if (!canFeedback && !(s.actions ?? []).length) b.disabled = true;
        controls.push(b);
        box.append(b);
      }
      article.append(box);
    }

    // Links.
    const links = card.links ?? [];
    if (links.length) {
      const box = el('div', { class: 'links' });
      for (const link of links) {
        if (link.type === 'smart') {
          box.append(el('button', {
            type: 'button', class: 'smart-link', dataset: { testid: 'smart-link' },
            onclick: () => openApp(patient, link),
          }, `Open app: ${link.label ?? link.url}`));
        } else {
          const href = safeHttpUrl(link.url);
          box.append(href
            ? el('a', { href, target: '_blank', rel: 'noopener noreferrer', class: 'abs-link', dataset: { testid: 'absolute-link' }, text: link.label ?? href })
            : el('span', { class: 'muted', text: `${link.label ?? ''} (${link.url ?? ''})` }));
        }
      }
      article.append(box);
    }

    // Override (dismiss with a reason), only where feedback is possible.
    if (canFeedback) {
      const reasons = card.overrideReasons ?? [];
      const n = ++overrideForms; // unique ids for the form's labels, even for cards not yet attached
      const form = el('form', { class: 'override-form', dataset: { testid: 'override-form' }, hidden: true });
      let select = null;
      if (reasons.length) {
        select = el('select', { id: `ovr-reason-${n}`, dataset: { testid: 'override-reason' } },
          el('option', { value: '', text: '(no reason given)' }),
          reasons.map((r, i) => el('option', { value: String(i), text: r.display ?? r.code ?? `reason ${i + 1}` })));
        form.append(el('label', { for: `ovr-reason-${n}`, text: 'Override reason' }), select);
      }
      const comment = el('textarea', { id: `ovr-comment-${n}`, rows: 2, dataset: { testid: 'override-comment' } });
      const submit = el('button', { type: 'submit', dataset: { testid: 'override-submit' }, text: 'Dismiss card' });
      form.append(el('label', { for: `ovr-comment-${n}`, text: 'Comment (optional)' }), comment, submit);
      const toggle = el('button', {
        type: 'button', class: 'override', dataset: { testid: 'override' }, 'aria-expanded': 'false',
        onclick: () => {
          form.hidden = !form.hidden;
          toggle.setAttribute('aria-expanded', String(!form.hidden));
          if (!form.hidden) (select ?? comment).focus();
        },
      }, 'Override…');
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const reason = select && select.value !== '' ? reasons[Number(select.value)] : null;
        overrideCard(card, service, reason, comment.value.trim(), { controls, setStatus, article, form });
      });
      controls.push(toggle, submit, comment);
      if (select) controls.push(select);
      article.append(el('div', { class: 'override-box' }, toggle, form));
    } else {
      article.append(el('p', { class: 'muted small', text: 'This card has no uuid: no feedback can be sent.' }));
    }

    article.append(status);
    return article;
  }

  async function sendFeedback(service, item) {
    const body = { feedback: [{ ...item, outcomeTimestamp: new Date().toISOString() }] };
    const r = await api('POST', `/api/feedback/${encodeURIComponent(service)}`, body);
    const ok = r.status >= 200 && r.status < 300;
    const detail = r.body && typeof r.body === 'object' ? JSON.stringify(r.body) : String(r.body ?? '');
    return { ok, text: `feedback → bedside HTTP ${r.status}${ok ? '' : `: ${detail.slice(0, 300)}`}` };
  }

  async function acceptSuggestion(card, service, patient, suggestion, button, ui) {
    const gen = state.generation;
    ui.controls.forEach((c) => { c.disabled = true; });
    ui.setStatus('Applying…');
    const actions = suggestion.actions ?? [];
    let appliedText = 'no actions';
    if (actions.length) {
      try {
        const r = await api('POST', `/api/patients/${encodeURIComponent(patient.id)}/actions`, { actions });
        appliedText = (r.applied ?? []).map((a) => `${a.type} ${a.resourceType}/${a.id}`).join(', ') || 'nothing';
        if (gen === state.generation && r.orders) renderOrders(r.orders);
        const applied = $('applied');
        applied.textContent = `Applied “${suggestion.label ?? ''}”: ${appliedText}`;
        applied.hidden = false;
      } catch (e) {
        ui.setStatus(`Could not apply the suggestion: ${e.message}`, 'error');
        ui.controls.forEach((c) => { c.disabled = false; });
        return;
      }
    }
    button.classList.add('accepted');
    button.setAttribute('aria-pressed', 'true');
    ui.article.classList.add('accepted');
    const label = `Accepted: ${suggestion.label ?? ''} (${appliedText})`;
    if (!card.uuid || !suggestion.uuid) {
      ui.setStatus(`${label} — no feedback sent (the ${card.uuid ? 'suggestion' : 'card'} has no uuid)`);
    } else {
      try {
        const fb = await sendFeedback(service, { card: card.uuid, outcome: 'accepted', acceptedSuggestions: [{ id: suggestion.uuid }] });
        ui.setStatus(`${label} — ${fb.text}`, fb.ok ? 'ok' : 'error');
      } catch (e) {
        ui.setStatus(`${label} — feedback failed: ${e.message}`, 'error');
      }
    }
    // "at-most-one": the others stay disabled; otherwise the other suggestions may still be taken.
    if (card.selectionBehavior !== 'at-most-one') {
      ui.controls.forEach((c) => { if (c.classList.contains('suggestion') && !c.classList.contains('accepted')) c.disabled = false; });
    }
  }

  async function overrideCard(card, service, reason, comment, ui) {
    ui.controls.forEach((c) => { c.disabled = true; });
    ui.setStatus('Sending…');
    const overrideReason = {};
    if (reason) overrideReason.reason = reason; // the Coding exactly as the card gave it
    if (comment) overrideReason.userComment = comment;
    const item = { card: card.uuid, outcome: 'overridden' };
    if (Object.keys(overrideReason).length) item.overrideReason = overrideReason;
    const label = `Overridden: ${reason ? reason.display ?? reason.code : '(no reason)'}${comment ? ` — “${comment}”` : ''}`;
    try {
      const fb = await sendFeedback(service, item);
      ui.setStatus(`${label} — ${fb.text}`, fb.ok ? 'ok' : 'error');
      if (fb.ok) {
        ui.article.classList.add('dismissed');
        ui.form.hidden = true;
      } else {
        ui.controls.forEach((c) => { c.disabled = false; });
      }
    } catch (e) {
      ui.setStatus(`${label} — feedback failed: ${e.message}`, 'error');
      ui.controls.forEach((c) => { c.disabled = false; });
    }
  }

  // ---------- SMART app panel ----------

  function openApp(patient, link) {
    const src = `/launch?patient=${encodeURIComponent(patient.id)}&url=${encodeURIComponent(link.url)}` +
      `&appContext=${encodeURIComponent(link.appContext ?? '')}`;
    const panel = $('app-panel');
    $('app-heading').textContent = `SMART app: ${link.label ?? link.url}`;
    const frame = el('iframe', {
      class: 'smart-app', src, dataset: { testid: 'smart-frame' },
      title: `SMART app: ${link.label ?? link.url} — ${patient.name}`,
    });
    clear($('app-slot')).append(frame);
    panel.hidden = false;
    panel.scrollIntoView({ block: 'start' });
  }

  function closeApp() {
    clear($('app-slot'));
    $('app-panel').hidden = true;
  }

  // ---------- wiring ----------

  document.addEventListener('DOMContentLoaded', () => {
    for (const b of document.querySelectorAll('.toolbar button[data-hook]')) {
      b.addEventListener('click', () => callHook(b.dataset.hook));
    }
    $('app-close').addEventListener('click', closeApp);
    loadInfo();
    loadPatients();
  });
})();
