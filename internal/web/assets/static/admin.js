// Vigil admin page: users, devices with enrollment codes, assignment and
// revocation, mapping templates with the dry run, rules with the
// backtest. Everything goes through /web/api/v1/... — the HTTP API, as the
// signed-in admin (the web app checks the session and its CSRF token).
'use strict';

(function () {
  const V = window.Vigil;
  const el = V.el;
  if (!document.getElementById('users')) return; // the 403 page
  const API = '/web/api/v1';

  function list(v) { return v.split(',').map(s => s.trim()).filter(Boolean); }

  function result(form, text, ok) {
    const out = form.querySelector('.form-result');
    out.textContent = text;
    out.classList.toggle('bad', !ok);
  }

  function row(cells) {
    const tr = el('tr');
    for (const c of cells) {
      const td = el('td');
      if (c instanceof Node) td.append(c); else td.textContent = c;
      tr.append(td);
    }
    return tr;
  }

  // ---- users ----
  const userForm = document.getElementById('user-form');
  async function loadUsers() {
    const us = await V.getJSON(API + '/users');
    const tb = document.querySelector('#user-table tbody');
    tb.replaceChildren(...us.map(u => row([u.id, u.name || '', u.role,
      u.role === 'patient' ? 'patient ' + (u.patient || '—') : (u.wards && u.wards.length ? u.wards.join(', ') : 'all wards')])));
  }
  userForm.addEventListener('submit', async e => {
    e.preventDefault();
    const f = new FormData(userForm);
    const body = { id: f.get('id').trim(), name: f.get('name').trim(), role: f.get('role'), password: f.get('password') };
    if (f.get('wards').trim()) body.wards = list(f.get('wards'));
    if (f.get('patient').trim()) body.patient = f.get('patient').trim();
    try {
      const u = await V.postJSON(API + '/users', body);
      result(userForm, 'Added ' + u.id + ' (' + u.role + ').', true);
      userForm.reset();
      loadUsers();
    } catch (err) {
      result(userForm, 'Not added: ' + err.message, false);
    }
  });

  // ---- devices ----
  const deviceForm = document.getElementById('device-form');
  async function loadDevices() {
    const ds = await V.getJSON(API + '/devices');
    const tb = document.querySelector('#device-table tbody');
    tb.replaceChildren(...ds.map(d => {
      const actions = el('div', 'row-actions');
      const out = el('p', 'row-out');
      out.setAttribute('role', 'status');
      const enroll = el('button', 'enroll', 'Enrollment code');
      enroll.type = 'button';
      enroll.setAttribute('aria-label', 'Enrollment code for ' + d.id);
      enroll.addEventListener('click', async () => {
        try {
          const c = await V.postJSON(API + '/devices/' + encodeURIComponent(d.id) + '/enrollment-code', { ttl: '72h' });
          out.textContent = 'One-time code ' + c.code + ' — valid until ' + V.dateTime(c.expires) + '. Shown once: give it to the device now.';
        } catch (err) { out.textContent = 'No code: ' + err.message; }
      });
      const patient = el('input', 'assign-patient');
      patient.setAttribute('aria-label', 'Patient id to assign ' + d.id + ' to');
      patient.placeholder = 'patient id';
      const assign = el('button', 'assign', 'Assign');
      assign.type = 'button';
      assign.setAttribute('aria-label', 'Assign ' + d.id);
      assign.addEventListener('click', async () => {
        try {
          await V.postJSON(API + '/devices/' + encodeURIComponent(d.id) + '/assignments', { patient: patient.value.trim() });
          out.textContent = d.id + ' now measures ' + patient.value.trim() + '.';
        } catch (err) { out.textContent = 'Not assigned: ' + err.message; }
      });
      actions.append(enroll, patient, assign);
      if (!d.revoked) {
        const revoke = el('button', 'revoke', 'Revoke');
        revoke.type = 'button';
        revoke.setAttribute('aria-label', 'Revoke ' + d.id);
        revoke.addEventListener('click', async () => {
          if (!confirm('Revoke ' + d.id + '? It is disconnected at once and may not send until it gets a new secret.')) return;
          try {
            await V.postJSON(API + '/devices/' + encodeURIComponent(d.id) + '/revoke', {});
            loadDevices();
          } catch (err) { out.textContent = 'Not revoked: ' + err.message; }
        });
        actions.append(revoke);
      }
      actions.append(out);
      return row([d.id, d.kind, [d.manufacturer, d.model].filter(Boolean).join(' ') + (d.firmware ? ' · ' + d.firmware : ''),
        d.revoked ? 'REVOKED' : (d.enrollExpires ? 'awaiting enrollment' : 'active'), actions]);
    }));
  }
  deviceForm.addEventListener('submit', async e => {
    e.preventDefault();
    const f = new FormData(deviceForm);
    const body = {};
    for (const k of ['id', 'kind', 'manufacturer', 'model', 'serial', 'firmware']) {
      const v = String(f.get(k) || '').trim();
      if (v) body[k] = v;
    }
    try {
      const c = await V.postJSON(API + '/devices', body);
      result(deviceForm, 'Added ' + c.device.id + '. Its secret, shown once — configure the device with it now: ' + c.secret, true);
      deviceForm.reset();
      loadDevices();
    } catch (err) {
      result(deviceForm, 'Not added: ' + err.message, false);
    }
  });

  // ---- mapping templates ----
  const mapForm = document.getElementById('mapping-form');
  const mapOut = document.getElementById('mapping-result');
  function pretty(raw) { try { return JSON.stringify(typeof raw === 'string' ? JSON.parse(raw) : raw, null, 2); } catch (e) { return String(raw); } }
  async function loadMappings() {
    const ms = await V.getJSON(API + '/mappings');
    const ul = document.getElementById('mapping-list');
    if (!ms.length) { ul.replaceChildren(el('li', 'sub', 'No mapping templates yet.')); return; }
    ul.replaceChildren(...ms.map(m => {
      const li = el('li');
      const b = el('button', 'load', 'Edit ' + m.id);
      b.type = 'button';
      b.addEventListener('click', () => {
        mapForm.elements.deviceTemplate.value = pretty(m.deviceTemplate);
        mapForm.elements.fhirTemplate.value = pretty(m.fhirTemplate);
        mapForm.elements.id.value = m.id;
        mapForm.elements.devices.value = (m.devices || []).join(', ');
        mapForm.elements.kinds.value = (m.kinds || []).join(', ');
        mapForm.elements.deviceTemplate.focus();
      });
      li.append(b, el('span', 'sub', ' version ' + m.version + ' · for ' +
        ([...(m.devices || []), ...(m.kinds || []).map(k => 'kind ' + k)].join(', ') || 'nothing bound yet') +
        (m.savedBy ? ' · saved by ' + m.savedBy : '')));
      return li;
    }));
  }
  function parsed(name) {
    try { return JSON.parse(mapForm.elements[name].value); } catch (e) { throw new Error(name + ' is not JSON: ' + e.message); }
  }
  mapForm.addEventListener('submit', async e => {
    e.preventDefault();
    mapOut.textContent = '';
    try {
      const res = await V.postJSON(API + '/mappings/test', { deviceTemplate: parsed('deviceTemplate'), fhirTemplate: parsed('fhirTemplate'), message: parsed('message') });
      mapOut.textContent = JSON.stringify(res, null, 2);
      result(mapForm, 'Dry run done: nothing was stored.', true);
    } catch (err) {
      result(mapForm, 'Dry run refused: ' + err.message, false);
    }
  });
  mapForm.querySelector('button.save').addEventListener('click', async () => {
    const id = mapForm.elements.id.value.trim();
    if (!id) { result(mapForm, 'Give the template an id to save it.', false); return; }
    try {
      const body = { deviceTemplate: parsed('deviceTemplate'), fhirTemplate: parsed('fhirTemplate'),
        devices: list(mapForm.elements.devices.value), kinds: list(mapForm.elements.kinds.value) };
      const res = await V.send('PUT', API + '/mappings/' + encodeURIComponent(id), body);
      result(mapForm, 'Saved ' + res.id + ' as version ' + res.version + '.', true);
      loadMappings();
    } catch (err) {
      result(mapForm, 'Not saved: ' + err.message, false);
    }
  });

  // ---- rules ----
  const ruleForm = document.getElementById('rule-form');
  const backtestEl = document.getElementById('backtest');
  function ruleBody() {
    const f = ruleForm.elements;
    return { id: f.id.value.trim(), title: f.title.value.trim(), priority: f.priority.value, forSeconds: Number(f.forSeconds.value) || 0,
      expr: f.expr.value.trim(), enabled: f.enabled.checked, note: f.note.value.trim() };
  }
  async function loadRules() {
    const rs = await V.getJSON(API + '/rules');
    const tb = document.querySelector('#rule-table tbody');
    tb.replaceChildren(...rs.map(r => {
      const b = el('button', 'load', r.id);
      b.type = 'button';
      b.setAttribute('aria-label', 'Edit rule ' + r.id);
      b.addEventListener('click', () => {
        const f = ruleForm.elements;
        f.id.value = r.id; f.title.value = r.title; f.priority.value = r.priority;
        f.forSeconds.value = r.forSeconds; f.expr.value = r.expr; f.enabled.checked = r.enabled; f.note.value = '';
        f.expr.focus();
      });
      return row([b, r.title, r.priority, r.forSeconds ? r.forSeconds + ' s' : 'at once', el('code', '', r.expr),
        (r.enabled ? 'enabled' : 'DISABLED') + ' · v' + r.version + (r.savedBy ? ' by ' + r.savedBy : '')]);
    }));
  }
  ruleForm.addEventListener('submit', async e => {
    e.preventDefault();
    backtestEl.replaceChildren();
    const days = Math.min(90, Math.max(1, Number(ruleForm.elements.days.value) || 7));
    const to = new Date(V.now());
    const from = new Date(to.getTime() - days * 86400000);
    result(ruleForm, 'Backtesting over ' + V.plural(days, 'day') + '…', true);
    try {
      const rep = await V.postJSON(API + '/rules/backtest', { rule: ruleBody(), from: from.toISOString(), to: to.toISOString() });
      result(ruleForm, 'Would have raised ' + V.plural(rep.alerts, 'alert') + ' for ' + V.plural(Object.keys(rep.perPatient || {}).length, 'patient') +
        ' (' + V.plural(rep.readings, 'reading') + ' of ' + V.plural(rep.patients, 'patient') + ' replayed' +
        (rep.unknown ? '; ' + rep.unknown + ' evaluations unknown for missing data' : '') + '). Nothing was saved.', true);
      if (rep.list && rep.list.length) {
        const t = el('table', 'admin-table');
        const cap = el('caption', '', 'Alerts the rule would have raised' + (rep.truncated ? ' (the first ' + rep.list.length + ')' : ''));
        const head = el('tr');
        for (const h of ['Patient', 'Condition began', 'Fired', 'Resolved', 'Value', 'Why']) { const th = el('th', '', h); th.scope = 'col'; head.append(th); }
        const thead = el('thead'); thead.append(head);
        const tb = el('tbody');
        for (const a of rep.list) {
          tb.append(row([a.patient, V.dateTime(a.since), V.dateTime(a.fired), a.resolved ? V.dateTime(a.resolved) : 'still open',
            a.value + (a.unit ? ' ' + V.displayUnit(a.unit) : ''), a.detail || '']));
        }
        t.append(cap, thead, tb);
        backtestEl.append(t);
      }
    } catch (err) {
      result(ruleForm, 'Backtest refused: ' + err.message, false);
    }
  });
  ruleForm.querySelector('button.save').addEventListener('click', async () => {
    const body = ruleBody();
    const id = body.id;
    delete body.id; // the id is in the path
    if (!id) { result(ruleForm, 'Give the rule an id.', false); return; }
    try {
      const r = await V.send('PUT', API + '/rules/' + encodeURIComponent(id), body);
      result(ruleForm, 'Saved ' + r.id + ' version ' + r.version + '; in force now.', true);
      loadRules();
    } catch (err) {
      result(ruleForm, 'Not saved: ' + err.message, false);
    }
  });

  V.startClock();
  document.getElementById('conn').hidden = true; // no live stream here
  const statusEl = document.getElementById('status');
  for (const load of [loadUsers, loadDevices, loadMappings, loadRules]) {
    load().catch(err => { statusEl.textContent = 'Could not load: ' + err.message; });
  }
  document.body.dataset.ready = '1';
})();
