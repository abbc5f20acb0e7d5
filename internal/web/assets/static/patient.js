// Vigil patient page: one uPlot chart per vital over 1 h, 8 h, 24 h or
// 7 days from /web/api/patients/{id}/series, with the NEWS2 zero-score
// band shaded and alerts marked; refreshed when the patient's readings,
// alerts or NEWS2 arrive on /web/api/events. Data only ever goes into the
// page with textContent.
'use strict';

(function () {
  const V = window.Vigil;
  const el = V.el;
  const plural = V.plural;
  const getJSON = V.getJSON;
  const body = document.body;
  const id = body.dataset.patient;
  const chartsEl = document.getElementById('charts');
  if (!id || !chartsEl) return; // the 403 page
  const statusEl = document.getElementById('status');
  const devicesEl = document.getElementById('pt-devices');
  const obsEl = document.getElementById('pt-obs');
  const nameEl = document.getElementById('pt-name');
  const whereEl = document.getElementById('pt-where');
  const newsEl = document.getElementById('pt-news2');
  const rangeButtons = document.querySelectorAll('.ranges button');

  const MARK = { high: '▲', medium: '◆', low: '●' };
  const MARK_COLOUR = { high: '#ff7a7a', medium: '#ffc233', low: '#7cc4ff' }; // on --panel: ≥ 7:1
  let range = '8h';
  let plots = [];
  let refreshTimer = null;
  let loading = false;

  async function loadHead() {
    const p = await getJSON('/web/api/patients/' + encodeURIComponent(id));
    nameEl.textContent = p.name;
    document.title = p.name + ' — Vigil';
    whereEl.textContent = [p.ward, p.bed ? 'Bed ' + p.bed : ''].filter(Boolean).join(' · ');
    if (p.news2 && p.news2.total !== undefined && p.news2.total !== null) {
      newsEl.textContent = 'NEWS2 ' + p.news2.total + (p.news2.band ? ' — ' + p.news2.band : '');
    } else {
      newsEl.textContent = 'NEWS2 not available';
    }
    renderObs(p.news2 || {});
  }

  const ACVPU = { A: 'Alert', C: 'New confusion', V: 'Responds to voice', P: 'Responds to pain', U: 'Unresponsive' };

  // renderObs shows the nurse-entered observations NEWS2 uses.
  function renderObs(n) {
    obsEl.replaceChildren();
    const c = n.consciousness;
    const o = n.onOxygen;
    const li1 = el('li');
    li1.append(el('strong', '', 'Consciousness (ACVPU): '), el('span', 'obs-acvpu', c ? c + ' — ' + (ACVPU[c] || c) : 'not recorded'));
    const li2 = el('li');
    li2.append(el('strong', '', 'Oxygen: '), el('span', 'obs-oxygen', o === true ? 'supplemental oxygen' : o === false ? 'room air' : 'not recorded'));
    obsEl.append(li1, li2);
  }

  async function loadDevices() {
    const data = await getJSON('/web/api/devices?patient=' + encodeURIComponent(id));
    V.setServerNow(data.now);
    devicesEl.replaceChildren();
    if (!data.devices.length) {
      devicesEl.append(el('li', 'sub', 'No device assigned'));
      return;
    }
    for (const d of data.devices) {
      const li = el('li', 'pt-device status-' + d.status);
      li.dataset.device = d.id;
      li.append(el('strong', '', d.id), el('span', 'sub', d.kind));
      li.append(el('span', 'dev-status', ({ offline: '✕ OFFLINE', online: '● ONLINE', idle: '○ IDLE', unheard: '? NOT HEARD', revoked: '⊘ REVOKED' })[d.status] || d.status));
      const seen = el('span', 'dev-seen', d.lastSeen ? 'last message ' + V.age(d.lastSeen) : 'no message since Vigil started');
      li.append(seen);
      if (typeof d.battery === 'number') {
        li.append(el('span', d.battery <= 20 ? 'battery-low' : 'dev-battery', (d.battery <= 20 ? '▼ LOW ' : '') + 'battery ' + Math.round(d.battery) + ' %'));
      }
      devicesEl.append(li);
    }
  }

  // bandPlugin shades [low, high] behind the line and draws the alert
  // markers along the top edge (shape and colour by priority).
  function chartPlugin(series, marks) {
    return {
      hooks: {
        drawClear: [u => {
          if (series.low === undefined || series.high === undefined) return;
          const ctx = u.ctx;
          const y0 = u.valToPos(series.high, 'y', true);
          const y1 = u.valToPos(series.low, 'y', true);
          const top = Math.max(u.bbox.top, Math.min(y0, y1));
          const bottom = Math.min(u.bbox.top + u.bbox.height, Math.max(y0, y1));
          if (bottom <= top) return;
          ctx.save();
          ctx.fillStyle = 'rgba(102, 187, 106, 0.16)';
          ctx.fillRect(u.bbox.left, top, u.bbox.width, bottom - top);
          ctx.restore();
        }],
        draw: [u => {
          const ctx = u.ctx;
          ctx.save();
          // Alert limits: dashed lines in the priority's colour, labelled
          // with what they do ("alert below 92").
          ctx.font = (12 * devicePixelRatio) + 'px sans-serif';
          ctx.textAlign = 'right';
          ctx.textBaseline = 'bottom';
          for (const l of series.limits || []) {
            const y = u.valToPos(l.value, 'y', true);
            if (y < u.bbox.top || y > u.bbox.top + u.bbox.height) continue;
            ctx.strokeStyle = ctx.fillStyle = MARK_COLOUR[l.priority] || '#f5f7fa';
            ctx.lineWidth = devicePixelRatio * (l.patientSpecific ? 2 : 1);
            ctx.setLineDash([8 * devicePixelRatio, 5 * devicePixelRatio]);
            ctx.beginPath();
            ctx.moveTo(u.bbox.left, y);
            ctx.lineTo(u.bbox.left + u.bbox.width, y);
            ctx.stroke();
            ctx.fillText((l.below ? 'alert below ' : 'alert above ') + l.value + (l.patientSpecific ? ' (this patient)' : ''),
              u.bbox.left + u.bbox.width - 4, y - 2);
          }
          ctx.setLineDash([]);
          ctx.lineWidth = 1;
          ctx.font = (14 * devicePixelRatio) + 'px sans-serif';
          ctx.textAlign = 'center';
          ctx.textBaseline = 'top';
          for (const m of marks) {
            const x = u.valToPos(m.time / 1000, 'x', true);
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
            ctx.fillStyle = MARK_COLOUR[m.priority] || '#f5f7fa';
            ctx.fillText(MARK[m.priority] || '●', x, u.bbox.top + 2);
            ctx.strokeStyle = ctx.fillStyle;
            ctx.setLineDash([4, 4]);
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top + 16 * devicePixelRatio);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
          }
          ctx.restore();
        }],
      },
    };
  }

  function chartWidth() {
    return Math.max(320, (chartsEl.clientWidth || 900) - 24);
  }

  function render(data) {
    for (const p of plots) p.destroy();
    plots = [];
    chartsEl.textContent = '';
    for (const s of data.series) {
      const fig = el('figure', 'chart');
      fig.dataset.code = s.code;
      const cap = el('figcaption');
      const last = s.points.length ? s.points[s.points.length - 1][1] : null;
      cap.append(el('span', 'chart-label', s.label + (s.unit ? ' (' + s.unit + ')' : '')),
        el('span', 'chart-last', last === null ? 'no values in this range' : 'latest ' + (Math.round(last * 10) / 10)),
        el('span', 'chart-count', plural(s.count, 'value')));
      fig.append(cap);
      chartsEl.append(fig);
      if (!s.points.length) {
        fig.classList.add('empty');
        continue;
      }
      const xs = s.points.map(p => p[0] / 1000);
      const ys = s.points.map(p => p[1]);
      const marks = data.alerts.filter(a => a.code === s.code || s.code === '1104051000000101');
      let lo = Math.min(...ys), hi = Math.max(...ys);
      if (s.low !== undefined) { lo = Math.min(lo, s.low); hi = Math.max(hi, s.high); }
      for (const l of s.limits || []) { lo = Math.min(lo, l.value); hi = Math.max(hi, l.value); }
      const pad = Math.max((hi - lo) * 0.1, 1);
      const opts = {
        width: chartWidth(),
        height: 180,
        scales: { x: { time: true, min: data.from / 1000, max: data.to / 1000 }, y: { range: [lo - pad, hi + pad] } },
        axes: [{ stroke: '#c3cad3', grid: { stroke: '#2a3038' }, ticks: { stroke: '#4a525e' } },
          { stroke: '#c3cad3', grid: { stroke: '#2a3038' }, ticks: { stroke: '#4a525e' }, label: s.unit || '' }],
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        series: [{}, { label: s.label, stroke: '#f5f7fa', width: 2, spanGaps: false, points: { show: s.points.length < 80 } }],
        plugins: [chartPlugin(s, marks)],
      };
      const plot = new uPlot(opts, [xs, ys], fig);
      plot.root.setAttribute('role', 'img');
      plot.root.setAttribute('aria-label', s.label + ' over the last ' + data.range + ': ' + plural(s.count, 'value') +
        (last === null ? '' : ', latest ' + (Math.round(last * 10) / 10) + (s.unit ? ' ' + s.unit : '')) +
        (marks.length ? ', ' + marks.length + ' alerts' : ''));
      plots.push(plot);
    }
    body.dataset.charted = String(plots.length);
  }

  async function loadCharts() {
    if (loading) return;
    loading = true;
    try {
      const data = await getJSON('/web/api/patients/' + encodeURIComponent(id) + '/series?range=' + range);
      render(data);
      statusEl.textContent = 'Updated ' + new Date().toLocaleTimeString([], { hourCycle: 'h23' });
    } catch (e) {
      statusEl.textContent = 'Could not load the charts: ' + e.message + '. Retrying…';
      scheduleRefresh(5000);
    } finally {
      loading = false;
    }
  }

  function scheduleRefresh(ms) {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; loadCharts(); loadHead().catch(() => {}); loadDevices().catch(() => {}); }, ms);
  }

  for (const b of rangeButtons) {
    b.addEventListener('click', () => {
      range = b.dataset.range;
      for (const x of rangeButtons) x.setAttribute('aria-checked', String(x === b));
      loadCharts();
    });
  }

  const onEvent = m => { if (m.patient === id) scheduleRefresh(3000); };
  V.live({ reading: onEvent, alert: onEvent, news2: onEvent }, () => scheduleRefresh(0));
  V.startClock();
  window.addEventListener('resize', () => { for (const p of plots) p.setSize({ width: chartWidth(), height: 180 }); });

  loadHead().catch(e => { statusEl.textContent = 'Could not load the patient: ' + e.message; });
  loadCharts();
  loadDevices().catch(e => { devicesEl.replaceChildren(el('li', 'sub', 'Could not load the devices: ' + e.message)); });
})();
