// Vigil ward view: loads a snapshot from /web/api/ward, then keeps it live
// from the Server-Sent Events at /web/api/events. Plain DOM, no framework;
// data is only ever inserted with textContent.
'use strict';

(function () {
  const V = window.Vigil;
  const { el, formatAge, displayUnit, now, PRIORITY } = V;
  const STALE_SECONDS = 5 * 60;
  const RECONNECT_MS = 3000;
  const CODES = {
    '8867-4': 'hr',
    '59408-5': 'spo2',
    '9279-1': 'rr',
    '8310-5': 'temp',
    '8480-6': 'sys',
    '8462-4': 'dia',
    '85354-9': 'bp',
  };
  const VITALS = [
    { key: 'hr', label: 'HR', unit: '/min', digits: 0 },
    { key: 'spo2', label: 'SpO₂', unit: '%', digits: 0 },
    { key: 'rr', label: 'RR', unit: '/min', digits: 0 },
    { key: 'temp', label: 'Temp', unit: '°C', digits: 1 },
    { key: 'bp', label: 'BP', unit: 'mmHg', digits: 0 },
  ];

  const tilesEl = document.getElementById('tiles');
  const statusEl = document.getElementById('status');

  let canAck = false;
  const patients = new Map(); // id → {data, el, cells, alertsEl}
  let reloadTimer = null;

  // timed runs fn and records how long it took as a Performance API
  // measure (read by BenchmarkBrowserLiveUpdate; kept bounded for a wall
  // display that runs for days).
  let measures = 0;
  function timed(name, fn) {
    const t0 = performance.now();
    fn();
    performance.measure(name, { start: t0, end: performance.now() });
    if (++measures >= 5000) {
      performance.clearMeasures();
      measures = 0;
    }
  }

  // onReading applies a live reading, timed; and, when the server said
  // when it received the reading, the time from there to this page.
  function onReading(r) {
    timed('vigil:reading', () => applyReading(r));
    const start = r.received ? Date.parse(r.received) - performance.timeOrigin : -1;
    if (start >= 0) performance.measure('vigil:reading-e2e', { start, end: performance.now() });
  }

  function fmt(v, digits) {
    return typeof v === 'number' ? v.toFixed(digits) : '—';
  }

  // ---- state ----

  function alertRank(alerts) {
    let best = 100;
    for (const a of alerts) {
      let r = (PRIORITY[a.priority] || { rank: 10 }).rank;
      if (a.state !== 'firing') r += 3;
      best = Math.min(best, r);
    }
    return best;
  }

  function compareTiles(a, b) {
    const ra = alertRank(a.data.alerts), rb = alertRank(b.data.alerts);
    if (ra !== rb) return ra - rb;
    for (const k of ['ward', 'bed', 'name', 'id']) {
      const x = a.data[k] || '', y = b.data[k] || '';
      if (x !== y) return x < y ? -1 : 1;
    }
    return 0;
  }

  function isOpen(a) { return a.state === 'firing' || a.state === 'acknowledged'; }

  function newer(t1, t2) { return !t2 || Date.parse(t1) >= Date.parse(t2); }

  // ---- rendering ----

  function buildTile(data) {
    const tile = el('section', 'tile');
    tile.dataset.patient = data.id;
    const head = el('div', 'tile-head');
    const name = el('h2', 'name');
    const where = el('span', 'where');
    head.append(name, where);
    const news = el('div', 'news2');
    news.setAttribute('role', 'group');
    const newsLabel = el('span', 'news2-label', 'NEWS2');
    const newsScore = el('span', 'news2-score', '—');
    const newsBand = el('span', 'news2-band', '');
    const newsNote = el('span', 'news2-note', '');
    news.append(newsLabel, newsScore, newsBand, newsNote);
    const record = el('button', 'record', 'Record obs');
    record.type = 'button';
    record.hidden = true;
    const form = buildObsForm(data.id);
    record.addEventListener('click', () => {
      form.el.hidden = !form.el.hidden;
      record.setAttribute('aria-expanded', String(!form.el.hidden));
      if (!form.el.hidden) form.fill(patients.get(data.id).data.news2), form.acvpu.focus();
    });
    const newsRow = el('div', 'news2-row');
    newsRow.append(news, record);
    const alertsEl = el('ul', 'alerts');
    alertsEl.setAttribute('aria-label', 'Alerts');
    const vitals = el('div', 'vitals');
    const cells = {};
    for (const v of VITALS) {
      const cell = el('div', 'vital ' + v.key);
      cell.dataset.vital = v.key;
      const label = el('div', 'label');
      label.append(el('span', 'name', v.label), el('span', 'unit', v.unit));
      const num = el('div', 'value', '—');
      const age = el('div', 'age-line');
      const ageText = el('span', 'age', 'no data');
      const stale = el('span', 'stale-tag', 'STALE');
      age.append(ageText, stale);
      cell.append(label, num, age);
      vitals.append(cell);
      cells[v.key] = { cell, num, ageText, spec: v };
    }
    tile.append(head, newsRow, form.el, alertsEl, vitals);
    const p = { data, el: tile, cells, alertsEl, name, where, news, newsScore, newsBand, newsNote, record, form };
    return p;
  }

  // The nurse's observation form: consciousness (ACVPU) and oxygen.
  function buildObsForm(id) {
    const f = el('form', 'obs-form');
    f.hidden = true;
    const l1 = el('label', '', 'Consciousness ');
    const acvpu = el('select');
    acvpu.name = 'consciousness';
    for (const [v, t] of [['A', 'A — alert'], ['C', 'C — new confusion'], ['V', 'V — responds to voice'], ['P', 'P — responds to pain'], ['U', 'U — unresponsive']]) {
      const o = el('option', '', t);
      o.value = v;
      acvpu.append(o);
    }
    l1.append(acvpu);
    const l2 = el('label', '', 'Breathing ');
    const oxy = el('select');
    oxy.name = 'oxygen';
    for (const [v, t] of [['air', 'room air'], ['oxygen', 'supplemental oxygen']]) {
      const o = el('option', '', t);
      o.value = v;
      oxy.append(o);
    }
    l2.append(oxy);
    const save = el('button', 'save', 'Save observation');
    save.type = 'submit';
    const msg = el('span', 'obs-error');
    msg.setAttribute('role', 'alert');
    f.append(l1, l2, save, msg);
    f.addEventListener('submit', async (e) => {
      e.preventDefault();
      save.disabled = true;
      msg.textContent = '';
      try {
        const body = await V.postJSON('/web/api/patients/' + encodeURIComponent(id) + '/news2-inputs',
          { consciousness: acvpu.value, onOxygen: oxy.value === 'oxygen' });
        const p = patients.get(id);
        p.data.news2 = body;
        renderNEWS2(p);
        f.hidden = true;
        p.record.setAttribute('aria-expanded', 'false');
        p.record.focus();
      } catch (err) {
        msg.textContent = 'Not saved: ' + err.message;
      } finally {
        save.disabled = false;
      }
    });
    return {
      el: f, acvpu,
      fill(n) {
        if (n && n.consciousness) acvpu.value = n.consciousness;
        if (n && typeof n.onOxygen === 'boolean') oxy.value = n.onOxygen ? 'oxygen' : 'air';
      },
    };
  }

  const BANDS = { low: 'LOW', 'low-medium': 'LOW-MEDIUM', medium: 'MEDIUM', high: 'HIGH' };

  function renderNEWS2(p) {
    const n = p.data.news2;
    p.record.hidden = !canAck;
    if (!n) {
      p.news.hidden = true;
      return;
    }
    p.news.hidden = false;
    p.news.className = 'news2 band-' + n.band + (n.complete ? '' : ' incomplete');
    p.newsScore.textContent = String(n.total) + (n.complete ? '' : '+');
    p.newsBand.textContent = BANDS[n.band] || n.band;
    p.newsNote.textContent = n.complete ? '' : 'incomplete';
    p.newsNote.title = n.note || '';
    p.news.setAttribute('aria-label', 'NEWS2 ' + n.total + (n.complete ? '' : ' or more, incomplete') + ', ' + (BANDS[n.band] || n.band) + ' risk');
  }

  function renderHead(p) {
    p.name.textContent = '';
    const link = el('a', '', p.data.name);
    link.href = '/patients/' + encodeURIComponent(p.data.id);
    link.title = 'Charts and history';
    p.name.append(link);
    const where = [p.data.ward, p.data.bed ? 'Bed ' + p.data.bed : ''].filter(Boolean).join(' · ');
    p.where.textContent = where;
    p.el.setAttribute('aria-label', p.data.name + (where ? ', ' + where : ''));
  }

  function renderVitals(p) {
    for (const v of VITALS) {
      const c = p.cells[v.key];
      const d = p.data[v.key];
      if (!d) {
        c.num.textContent = '—';
        c.cell.classList.add('none');
        c.cell.dataset.time = '';
        continue;
      }
      c.cell.classList.remove('none');
      c.num.textContent = v.key === 'bp'
        ? fmt(d.systolic, 0) + '/' + (d.diastolic ? fmt(d.diastolic, 0) : '—')
        : fmt(d.value, v.digits);
      c.cell.dataset.time = d.time;
    }
    renderAges(p);
  }

  function renderAges(p) {
    const t = now();
    for (const v of VITALS) {
      const c = p.cells[v.key];
      const time = c.cell.dataset.time;
      if (!time) {
        c.ageText.textContent = 'no data';
        c.cell.classList.remove('stale');
        continue;
      }
      const age = t - Date.parse(time);
      c.ageText.textContent = formatAge(age);
      c.cell.classList.toggle('stale', age > STALE_SECONDS * 1000);
    }
  }

  function vitalOfCode(code) {
    const k = CODES[code];
    return k === 'sys' || k === 'dia' ? 'bp' : k;
  }

  function renderAlerts(p) {
    const alerts = p.data.alerts;
    const ul = p.alertsEl;
    // Keep keyboard focus on an Ack button across re-renders.
    const focusedId = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.alert : undefined;
    ul.replaceChildren();
    let refocus = null;
    for (const a of alerts) {
      const pr = PRIORITY[a.priority] || { shape: '■', text: String(a.priority).toUpperCase() };
      const li = el('li', 'alert ' + a.priority + (a.state === 'acknowledged' ? ' acknowledged' : ''));
      li.dataset.alert = a.id;
      const shape = el('span', 'shape', pr.shape);
      shape.setAttribute('aria-hidden', 'true');
      li.append(shape, el('span', 'prio', pr.text), el('span', 'title', a.title));
      if (typeof a.value === 'number') li.append(el('span', 'value', ('at ' + a.value + ' ' + displayUnit(a.unit)).trim()));
      const since = el('span', 'since');
      since.dataset.since = a.since;
      li.append(since);
      const snoozed = a.snoozedUntil && Date.parse(a.snoozedUntil) > now();
      if (snoozed) {
        li.append(el('span', 'snoozed', 'SNOOZED until ' + V.clockTime(a.snoozedUntil)));
      }
      if (a.state === 'acknowledged') {
        const ack = (a.history || []).filter(h => h.state === 'acknowledged').pop();
        li.append(el('span', 'acked', 'ACKNOWLEDGED' + (ack && ack.by ? ' by ' + ack.by : '')));
      } else if (canAck) {
        const b = el('button', 'ack', 'Acknowledge');
        b.type = 'button';
        b.dataset.alert = a.id;
        b.setAttribute('aria-label', 'Acknowledge ' + pr.text + ' alert: ' + a.title + ' for ' + p.data.name);
        b.addEventListener('click', () => acknowledge(a.id, b, li));
        li.append(b);
        if (focusedId === a.id) refocus = b;
        if (!snoozed) {
          const z = el('button', 'snooze', 'Snooze 15 min');
          z.type = 'button';
          z.setAttribute('aria-label', 'Snooze 15 min: ' + a.title + ' for ' + p.data.name);
          z.addEventListener('click', () => snooze(a.id, z, li));
          li.append(z);
        }
      }
      ul.append(li);
    }
    ul.hidden = alerts.length === 0;
    if (refocus) refocus.focus();
    const open = alerts.filter(a => a.state === 'firing');
    const top = open.sort((a, b) => (PRIORITY[a.priority] || { rank: 9 }).rank - (PRIORITY[b.priority] || { rank: 9 }).rank)[0];
    p.el.classList.remove('alert-high', 'alert-medium', 'alert-low', 'alert-acked');
    if (top) p.el.classList.add('alert-' + top.priority);
    else if (alerts.length > 0) p.el.classList.add('alert-acked');
    const abnormal = new Set(alerts.map(a => vitalOfCode(a.code)));
    for (const v of VITALS) p.cells[v.key].cell.classList.toggle('abnormal', abnormal.has(v.key));
    renderAlertAges(p);
  }

  function renderAlertAges(p) {
    const t = now();
    for (const s of p.alertsEl.querySelectorAll('.since')) {
      s.textContent = 'for ' + formatAge(t - Date.parse(s.dataset.since)).replace(' ago', '');
    }
  }

  function sortTiles() {
    const list = [...patients.values()].sort(compareTiles);
    let changed = list.length !== tilesEl.children.length;
    for (let i = 0; !changed && i < list.length; i++) {
      if (tilesEl.children[i] !== list[i].el) changed = true;
    }
    if (!changed) return;
    // Moving the focused element would blur it: remember and restore.
    const focused = document.activeElement;
    tilesEl.replaceChildren(...list.map(p => p.el));
    if (focused && focused !== document.body && document.contains(focused)) focused.focus();
  }

  // ---- data ----

  function applySnapshot(w) {
    V.setServerNow(w.now);
    canAck = !!w.canAck;
    const seen = new Set();
    for (const d of w.patients) {
      seen.add(d.id);
      let p = patients.get(d.id);
      if (!p) {
        p = buildTile(d);
        patients.set(d.id, p);
      } else {
        // Keep a live value that is newer than the snapshot's.
        for (const v of VITALS) {
          const mine = p.data[v.key];
          if (mine && (!d[v.key] || !newer(d[v.key].time, mine.time))) d[v.key] = mine;
        }
        // Keep an alert version that is newer than the snapshot's.
        const byId = new Map(p.data.alerts.map(a => [a.id, a]));
        d.alerts = d.alerts.map(a => {
          const mine = byId.get(a.id);
          return mine && !newer(a.updated, mine.updated) ? mine : a;
        }).filter(isOpen);
        p.data = d;
      }
      renderHead(p);
      renderVitals(p);
      renderAlerts(p);
      renderNEWS2(p);
    }
    for (const [id, p] of patients) {
      if (!seen.has(id)) {
        p.el.remove();
        patients.delete(id);
      }
    }
    statusEl.textContent = w.patients.length === 0 ? 'No patients to show.' : '';
    sortTiles();
  }

  function applyReading(r) {
    const p = patients.get(r.patient);
    if (!p) {
      scheduleReload();
      return;
    }
    let sys, dia;
    for (const m of r.values || []) {
      const k = CODES[m.code];
      if (k === 'sys') sys = m.value;
      else if (k === 'dia') dia = m.value;
      else if (k && k !== 'bp') {
        if (!p.data[k] || newer(r.time, p.data[k].time)) p.data[k] = { value: m.value, unit: m.unit, time: r.time };
      }
    }
    if (sys !== undefined && (!p.data.bp || newer(r.time, p.data.bp.time))) {
      p.data.bp = { systolic: sys, diastolic: dia, unit: 'mm[Hg]', time: r.time };
    }
    renderVitals(p);
  }

  function applyAlert(a) {
    const p = patients.get(a.patient);
    if (!p) {
      scheduleReload();
      return;
    }
    const old = p.data.alerts.find(x => x.id === a.id);
    if (old && !newer(a.updated, old.updated)) return;
    p.data.alerts = p.data.alerts.filter(x => x.id !== a.id);
    if (isOpen(a)) {
      p.data.alerts.push(a);
      p.data.alerts.sort((x, y) => Date.parse(y.raised) - Date.parse(x.raised));
    }
    renderAlerts(p);
    sortTiles();
  }

  async function loadWard() {
    try {
      const w = await V.getJSON('/web/api/ward');
      timed('vigil:snapshot', () => applySnapshot(w));
    } catch (e) {
      statusEl.textContent = 'Could not load the ward: ' + e.message + '. Retrying…';
      scheduleReload(RECONNECT_MS);
    }
  }

  function scheduleReload(ms) {
    if (reloadTimer) return;
    reloadTimer = setTimeout(() => { reloadTimer = null; loadWard(); }, ms || 250);
  }

  // alertAction posts an action on an alert from its tile; a refusal is
  // said next to the alert and the button is usable again.
  async function alertAction(id, path, body, button, li, failed) {
    button.disabled = true;
    try {
      applyAlert(await V.postJSON('/web/api/alerts/' + encodeURIComponent(id) + '/' + path, body));
      return true;
    } catch (e) {
      button.disabled = false;
      let err = li.querySelector('.ack-error');
      if (!err) {
        err = el('span', 'ack-error');
        err.setAttribute('role', 'alert');
        li.append(err);
      }
      err.textContent = failed + ': ' + e.message;
      return false;
    }
  }

  async function acknowledge(id, button, li) {
    button.textContent = 'Acknowledging…';
    if (!await alertAction(id, 'ack', {}, button, li, 'Not acknowledged')) button.textContent = 'Acknowledge';
  }

  function snooze(id, button, li) {
    return alertAction(id, 'snooze', { minutes: 15 }, button, li, 'Not snoozed');
  }

  function applyNEWS2(u) {
    const p = patients.get(u.patient);
    if (!p) return;
    const old = p.data.news2 || {};
    p.data.news2 = Object.assign({}, u, { consciousness: old.consciousness, onOxygen: old.onOxygen });
    renderNEWS2(p);
  }

  V.startClock(() => {
    for (const p of patients.values()) {
      renderAges(p);
      renderAlertAges(p);
    }
  });
  window.vigilWard = { reload: loadWard }; // for BenchmarkBrowserLiveUpdate
  loadWard();
  // Every (re)connection reloads the snapshot: whatever was missed while
  // the stream was down.
  V.live({ reading: onReading, alert: applyAlert, news2: applyNEWS2 }, loadWard);
})();
