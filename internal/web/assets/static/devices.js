// Vigil device fleet: every device the user may see from
// /web/api/devices — online or offline, battery, firmware, last message,
// dead letters, the patient it is assigned to — offline first. Last
// messages move live with the readings on /web/api/events; the list is
// reloaded every 30 seconds for battery and connection changes.
'use strict';

(function () {
  const V = window.Vigil;
  const table = document.getElementById('fleet');
  if (!table) return; // the 403 page
  const tbody = table.querySelector('tbody');
  const statusEl = document.getElementById('status');
  const statusSel = document.getElementById('f-status');
  const textIn = document.getElementById('f-text');
  const LOW_BATTERY = 20;
  const STATUS = {
    offline: { shape: '✕', text: 'OFFLINE' },
    online: { shape: '●', text: 'ONLINE' },
    idle: { shape: '○', text: 'IDLE' },
    unheard: { shape: '?', text: 'NOT HEARD' },
    revoked: { shape: '⊘', text: 'REVOKED' },
  };
  const STATUS_HELP = {
    offline: 'silent for longer than this kind of device may be',
    online: 'connected, or reported within its limit',
    idle: 'reports now and then; not connected now',
    unheard: 'not heard from since Vigil started',
    revoked: 'its credentials are revoked: it may not connect',
  };

  let devices = [];
  const rows = new Map(); // id → row

  function attention(d) {
    return d.status === 'offline' || (typeof d.battery === 'number' && d.battery <= LOW_BATTERY) || d.deadLetters > 0;
  }

  function matches(d) {
    const f = statusSel.value;
    if (f === 'attention' ? !attention(d) : f && d.status !== f) return false;
    const q = textIn.value.trim().toLowerCase();
    if (!q) return true;
    return [d.id, d.kind, d.model, d.manufacturer, d.firmware, d.patientName, d.patient, d.ward, d.bed && 'bed ' + d.bed]
      .some(s => s && String(s).toLowerCase().includes(q));
  }

  function cell(row, cls, text) {
    const td = V.el('td', cls, text);
    row.append(td);
    return td;
  }

  function buildRow(d) {
    const tr = V.el('tr', 'device status-' + d.status);
    tr.dataset.device = d.id;
    const s = STATUS[d.status] || { shape: '', text: d.status };
    const st = cell(tr, 'status');
    const badge = V.el('span', 'fleet-badge status-' + d.status, s.shape + ' ' + s.text);
    badge.title = STATUS_HELP[d.status] || '';
    st.append(badge);
    if (d.connected) st.append(V.el('span', 'sub', 'MQTT connected'));

    const dev = cell(tr, 'device-id');
    dev.append(V.el('strong', '', d.id), V.el('span', 'sub', d.kind));

    const model = [d.manufacturer, d.model].filter(Boolean).join(' ');
    const mc = cell(tr, 'model');
    mc.append(V.el('span', '', model || '—'), V.el('span', 'sub', d.firmware ? 'firmware ' + d.firmware : 'firmware not recorded'));

    const pc = cell(tr, 'patient');
    if (d.patient) {
      const a = V.el('a', 'patient-link', d.patientName || d.patient);
      a.href = '/patients/' + encodeURIComponent(d.patient);
      pc.append(a);
      const where = [d.ward, d.bed ? 'Bed ' + d.bed : ''].filter(Boolean).join(' · ');
      if (where) pc.append(V.el('span', 'sub', where));
    } else {
      pc.append(V.el('span', 'unassigned', 'Not assigned'));
    }

    const last = cell(tr, 'last-seen');
    last.dataset.time = d.lastSeen || '';

    const bc = cell(tr, 'battery');
    if (typeof d.battery === 'number') {
      const low = d.battery <= LOW_BATTERY;
      bc.append(V.el('span', low ? 'battery-low' : 'battery-ok', (low ? '▼ LOW ' : '') + Math.round(d.battery) + ' %'));
      if (d.batteryAt) bc.append(V.el('span', 'sub', 'reported ' + V.age(d.batteryAt)));
    } else {
      bc.append(V.el('span', 'sub', 'not reported'));
    }

    const dl = cell(tr, 'dead-letters', d.deadLetters ? (d.deadLetters + (d.deadLettersMore ? '+' : '')) : '0');
    if (d.deadLetters) {
      dl.classList.add('has-dead');
      dl.title = 'messages from this device Vigil could not store; see vigil deadletters list --device ' + d.id;
    }
    renderLast(tr);
    return tr;
  }

  function renderLast(tr) {
    const td = tr.querySelector('.last-seen');
    td.textContent = td.dataset.time ? V.age(td.dataset.time) : '—';
  }

  function render() {
    tbody.replaceChildren();
    rows.clear();
    const shown = devices.filter(matches);
    for (const d of shown) {
      const tr = buildRow(d);
      rows.set(d.id, tr);
      tbody.append(tr);
    }
    const offline = devices.filter(d => d.status === 'offline').length;
    statusEl.textContent = V.plural(shown.length, 'device') + ' shown of ' + devices.length +
      (offline ? ' · ' + offline + ' offline' : ' · none offline');
    document.body.dataset.count = String(shown.length);
  }

  async function load() {
    try {
      const data = await V.getJSON('/web/api/devices');
      V.setServerNow(data.now);
      devices = data.devices;
      render();
      document.body.dataset.loaded = String(Date.now());
    } catch (e) {
      statusEl.textContent = 'Could not load the devices: ' + e.message + '. Retrying…';
    }
  }

  // A reading moves its device's last message at once.
  function onReading(r) {
    const d = devices.find(x => x.id === r.device);
    if (!d) return;
    d.lastSeen = new Date(V.now()).toISOString();
    if (d.status === 'offline' || d.status === 'unheard') {
      d.status = d.silentAfterSeconds ? 'online' : 'idle';
      render();
      return;
    }
    const tr = rows.get(d.id);
    if (tr) {
      tr.querySelector('.last-seen').dataset.time = d.lastSeen;
      renderLast(tr);
    }
  }

  statusSel.addEventListener('change', render);
  textIn.addEventListener('input', render);
  document.getElementById('filters').addEventListener('submit', e => e.preventDefault());
  V.startClock(() => { for (const tr of rows.values()) renderLast(tr); });
  setInterval(load, 30000);
  V.live({ reading: onReading }, load);
})();
