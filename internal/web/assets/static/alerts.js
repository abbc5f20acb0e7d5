// Vigil alert inbox: the alerts of the patients the user may see from
// /web/api/alerts, filtered by state, priority and text; acknowledge with
// a note, escalate, snooze; each alert's history. Kept live from the
// Server-Sent Events at /web/api/events.
'use strict';

(function () {
  const V = window.Vigil;
  const listEl = document.getElementById('inbox');
  if (!listEl) return; // the 403 page
  const statusEl = document.getElementById('status');
  const stateSel = document.getElementById('f-state');
  const textIn = document.getElementById('f-text');
  const prioBoxes = document.querySelectorAll('input[name=priority]');
  const STATE_WORD = { firing: 'FIRING', acknowledged: 'ACKNOWLEDGED', resolved: 'RESOLVED' };
  const EVENT_WORD = {
    firing: 'Fired', acknowledged: 'Acknowledged', resolved: 'Resolved',
    escalated: 'Escalated', snoozed: 'Snoozed', 'snooze-ended': 'Snooze ended',
  };
  const STATES = { open: ['firing', 'acknowledged'], firing: ['firing'], acknowledged: ['acknowledged'], resolved: ['resolved'], all: null };

  const alerts = new Map(); // id → alert (with patientName, ward, bed)
  const items = new Map(); // id → element
  const historyOpen = new Set();
  let reloadTimer = null;
  let more = false;

  function priorities() {
    return [...prioBoxes].filter(b => b.checked).map(b => b.value);
  }

  function isOpen(a) { return a.state === 'firing' || a.state === 'acknowledged'; }

  function rank(a) {
    if (!isOpen(a)) return 100;
    return (V.PRIORITY[a.priority] || { rank: 3 }).rank + (a.state === 'firing' ? 0 : 3);
  }

  function compare(a, b) {
    return rank(a) - rank(b) || Date.parse(b.raised) - Date.parse(a.raised);
  }

  // matches applies the filters the server applied too, so live updates
  // keep the list honest without a reload.
  function matches(a) {
    const states = STATES[stateSel.value];
    if (states && !states.includes(a.state)) return false;
    if (!priorities().includes(a.priority)) return false;
    const q = textIn.value.trim().toLowerCase();
    if (!q) return true;
    return [a.patientName, a.patient, a.ward, a.bed && 'bed ' + a.bed, a.title]
      .some(s => s && String(s).toLowerCase().includes(q));
  }

  function buildItem(a) {
    const p = V.PRIORITY[a.priority] || { shape: '■', text: String(a.priority).toUpperCase() };
    const item = V.el('article', 'inbox-item prio-' + a.priority + ' state-' + a.state);
    item.dataset.alert = a.id;
    const titleId = 'alert-' + a.id;
    item.setAttribute('aria-labelledby', titleId);

    const head = V.el('div', 'inbox-head');
    head.append(V.el('span', 'prio-badge prio-' + a.priority, p.shape + ' ' + p.text));
    const h = V.el('h3', 'inbox-title', a.title);
    h.id = titleId;
    head.append(h);
    head.append(V.el('span', 'state-word state-' + a.state, STATE_WORD[a.state] || a.state.toUpperCase()));
    if (a.tier) head.append(V.el('span', 'tier', 'TIER ' + a.tier));
    if (a.snoozedUntil && isOpen(a)) head.append(V.el('span', 'snoozed', 'SNOOZED until ' + V.clockTime(a.snoozedUntil)));
    item.append(head);

    const who = V.el('p', 'inbox-who');
    const link = V.el('a', 'patient-link', a.patientName || a.patient);
    link.href = '/patients/' + encodeURIComponent(a.patient);
    who.append(link);
    const where = [a.ward, a.bed ? 'Bed ' + a.bed : ''].filter(Boolean).join(' · ');
    if (where) who.append(V.el('span', 'where', ' · ' + where));
    item.append(who);

    const detail = V.el('p', 'inbox-detail');
    if (typeof a.value === 'number' && a.unit !== undefined) {
      detail.append(V.el('span', 'value', a.value + (V.displayUnit(a.unit) ? ' ' + V.displayUnit(a.unit) : '')));
      detail.append(document.createTextNode(' · '));
    }
    const raised = V.el('span', 'raised');
    raised.dataset.time = a.raised;
    detail.append(raised);
    if (a.detail) detail.append(V.el('span', 'explain', ' — ' + a.detail));
    item.append(detail);

    if (isOpen(a)) item.append(buildActions(a));

    const hist = V.el('details', 'history');
    hist.open = historyOpen.has(a.id);
    hist.addEventListener('toggle', () => { if (hist.open) historyOpen.add(a.id); else historyOpen.delete(a.id); });
    const events = a.history || [];
    hist.append(V.el('summary', '', 'History (' + V.plural(events.length, 'event') + ')'));
    const ol = V.el('ol', 'history-list');
    for (const ev of events) {
      const li = V.el('li');
      const t = V.el('time', '', V.dateTime(ev.time));
      t.dateTime = ev.time;
      li.append(t, document.createTextNode(' '), V.el('strong', '', EVENT_WORD[ev.state] || ev.state));
      if (ev.by) li.append(document.createTextNode(' by ' + ev.by));
      if (ev.note) li.append(V.el('span', 'note', ' — ' + ev.note));
      ol.append(li);
    }
    hist.append(ol);
    item.append(hist);
    renderAge(item);
    return item;
  }

  function buildActions(a) {
    const f = V.el('form', 'inbox-actions');
    f.setAttribute('aria-label', 'Act on ' + a.title);
    const noteId = 'note-' + a.id;
    const noteLabel = V.el('label', 'note-label', 'Note');
    noteLabel.htmlFor = noteId;
    const note = V.el('input', 'note');
    note.id = noteId;
    note.name = 'note';
    note.maxLength = 500;
    note.placeholder = 'What you saw or did';
    f.append(noteLabel, note);
    if (a.state === 'firing') {
      const ack = V.el('button', 'ack', 'Acknowledge');
      ack.type = 'submit';
      f.append(ack);
    }
    const esc = V.el('button', 'escalate', 'Escalate');
    esc.type = 'button';
    f.append(esc);
    const minsId = 'mins-' + a.id;
    const minsLabel = V.el('label', 'snooze-label', 'Snooze for');
    minsLabel.htmlFor = minsId;
    const mins = V.el('select', 'minutes');
    mins.id = minsId;
    for (const m of [5, 15, 30, 60]) {
      const o = V.el('option', '', m + ' min');
      o.value = String(m);
      if (m === 15) o.selected = true;
      mins.append(o);
    }
    const snooze = V.el('button', 'snooze', 'Snooze');
    snooze.type = 'button';
    f.append(minsLabel, mins, snooze);
    const err = V.el('p', 'action-error');
    err.setAttribute('role', 'alert');
    f.append(err);

    async function act(button, path, body, verb) {
      for (const b of f.querySelectorAll('button')) b.disabled = true;
      err.textContent = '';
      try {
        const updated = await V.postJSON('/web/api/alerts/' + encodeURIComponent(a.id) + '/' + path, body);
        apply(updated);
        const again = items.get(a.id);
        // The note is in the history now (a live event may have rebuilt
        // the item, with the note, before this answer came).
        const n = again && again.querySelector('input.note');
        if (n) n.value = '';
        const btn = again && again.querySelector('button.' + button.className.split(' ')[0]);
        (btn || (again && again.querySelector('summary')) || listEl).focus();
      } catch (e) {
        for (const b of f.querySelectorAll('button')) b.disabled = false;
        err.textContent = 'Not ' + verb + ': ' + e.message;
      }
    }
    f.addEventListener('submit', e => {
      e.preventDefault();
      const ack = f.querySelector('button.ack');
      if (ack) act(ack, 'ack', { note: note.value.trim() }, 'acknowledged');
    });
    esc.addEventListener('click', () => act(esc, 'escalate', { note: note.value.trim() }, 'escalated'));
    snooze.addEventListener('click', () => act(snooze, 'snooze', { minutes: Number(mins.value), note: note.value.trim() }, 'snoozed'));
    return f;
  }

  function renderAge(item) {
    const r = item.querySelector('.raised');
    if (r) r.textContent = 'raised ' + V.age(r.dataset.time) + ' (' + V.clockTime(r.dataset.time) + ')';
  }

  function render() {
    const shown = [...alerts.values()].filter(matches).sort(compare);
    const keep = new Set(shown.map(a => a.id));
    for (const [id, item] of items) {
      if (!keep.has(id)) { item.remove(); items.delete(id); }
    }
    let prev = null;
    for (const a of shown) {
      let item = items.get(a.id);
      if (!item) {
        item = buildItem(a);
        items.set(a.id, item);
      }
      const want = prev ? prev.nextElementSibling : listEl.firstElementChild;
      if (want !== item) {
        if (prev) prev.after(item); else listEl.prepend(item);
      }
      prev = item;
    }
    const open = shown.filter(isOpen).length;
    statusEl.textContent = shown.length === 0
      ? 'No alerts match.'
      : V.plural(shown.length, 'alert') + (open ? ', ' + open + ' open' : '') + (more ? ' (the newest; narrow the filter to see older ones)' : '');
    document.body.dataset.count = String(shown.length);
  }

  // apply takes a changed alert (an action's answer or a live event).
  function apply(a) {
    const old = alerts.get(a.id);
    if (!old) {
      scheduleReload(300); // a new alert: the server adds the patient's name
      return;
    }
    const merged = Object.assign({}, a, { patientName: old.patientName, ward: old.ward, bed: old.bed });
    alerts.set(a.id, merged);
    const item = items.get(a.id);
    if (item) {
      // Rebuild it, keeping what the nurse is typing.
      const noteEl = item.querySelector('input.note');
      const typed = noteEl ? noteEl.value : '';
      const focused = item.contains(document.activeElement) && document.activeElement === noteEl;
      const fresh = buildItem(merged);
      item.replaceWith(fresh);
      items.set(a.id, fresh);
      const n = fresh.querySelector('input.note');
      if (n && typed) n.value = typed;
      if (n && focused) n.focus();
    }
    render();
  }

  async function load() {
    const q = new URLSearchParams({ state: stateSel.value });
    const ps = priorities();
    if (ps.length < 3) q.set('priority', ps.join(',') || 'none');
    if (ps.length === 0) {
      alerts.clear();
      render();
      return;
    }
    try {
      const data = await V.getJSON('/web/api/alerts?' + q);
      V.setServerNow(data.now);
      more = !!data.more;
      alerts.clear();
      for (const a of data.alerts) alerts.set(a.id, a);
      for (const [id, item] of items) { item.remove(); items.delete(id); }
      render();
      document.body.dataset.loaded = String(Date.now());
    } catch (e) {
      statusEl.textContent = 'Could not load the alerts: ' + e.message + '. Retrying…';
      scheduleReload(5000);
    }
  }

  function scheduleReload(ms) {
    if (reloadTimer) return;
    reloadTimer = setTimeout(() => { reloadTimer = null; load(); }, ms);
  }

  stateSel.addEventListener('change', load);
  for (const b of prioBoxes) b.addEventListener('change', load);
  textIn.addEventListener('input', render);
  document.getElementById('filters').addEventListener('submit', e => e.preventDefault());

  V.startClock(() => { for (const item of items.values()) renderAge(item); });
  V.live({ alert: apply }, load);
})();
