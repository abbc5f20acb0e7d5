// Vigil web app: helpers shared by the patient page, the alert inbox and
// the device fleet. Plain DOM; data only ever goes into the page with
// textContent.
'use strict';

window.Vigil = (function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : '';
  const PRIORITY = {
    high: { shape: '▲', text: 'HIGH', rank: 0 },
    medium: { shape: '◆', text: 'MEDIUM', rank: 1 },
    low: { shape: '●', text: 'LOW', rank: 2 },
  };
  let skewMs = 0; // server time minus browser time

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function plural(n, word) { return n + ' ' + word + (n === 1 ? '' : 's'); }

  function now() { return Date.now() + skewMs; }

  // setServerNow aligns ages with the server's clock (a snapshot's "now").
  function setServerNow(iso) {
    const t = Date.parse(iso);
    if (!Number.isNaN(t)) skewMs = t - Date.now();
  }

  function formatAge(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }

  function age(iso) { return formatAge(now() - Date.parse(iso)); }

  function clockTime(iso) {
    return new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  }

  function dateTime(iso) {
    return new Date(iso).toLocaleString([], { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });
  }

  function displayUnit(u) {
    if (u && u.startsWith('{')) return ''; // a UCUM annotation such as {score}: no unit to show
    return ({ 'Cel': '°C', 'mm[Hg]': 'mmHg' })[u] || (u || '');
  }

  // problem says what a refusal says: the web app's {"error"} or the
  // API's problem+json (detail, and the field it is about).
  function problem(d) {
    if (!d) return '';
    if (d.error) return d.error;
    const msg = d.detail || d.title || '';
    return d.field ? d.field + ': ' + msg : msg;
  }

  async function getJSON(url) {
    const res = await fetch(url, { headers: { Accept: 'application/json' } });
    if (res.status === 401) {
      location.assign('/login');
      throw new Error('signed out');
    }
    if (!res.ok) {
      let msg = 'HTTP ' + res.status;
      try { msg = problem(await res.json()) || msg; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    return res.json();
  }

  // send makes a state-changing request with the session's CSRF token
  // and returns the answer; a refusal throws with the server's words.
  async function send(method, url, body) {
    const res = await fetch(url, {
      method,
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf, Accept: 'application/json' },
      body: JSON.stringify(body || {}),
    });
    if (res.status === 401) {
      location.assign('/login');
      throw new Error('signed out');
    }
    let data = null;
    try { data = await res.json(); } catch (e) { /* not JSON */ }
    if (!res.ok) throw new Error(problem(data) || ('HTTP ' + res.status));
    return data;
  }

  function postJSON(url, body) { return send('POST', url, body); }

  // notice shows, replaces or removes a system notice (an edge gateway's
  // link to its server down, say) across the top of the page.
  function notice(n) {
    const box = document.getElementById('notices');
    if (!box) return;
    let el = Array.from(box.children).find(c => c.dataset.notice === n.id);
    if (!n.active) { if (el) el.remove(); return; }
    if (!el) {
      el = document.createElement('p');
      el.className = 'banner notice';
      el.setAttribute('role', 'status');
      el.dataset.notice = n.id;
      box.appendChild(el);
    }
    el.textContent = n.text;
  }

  // live keeps the Server-Sent Events stream open: handlers maps event
  // types to functions of the parsed data; onOpen runs at every
  // (re)connection, to reload what was missed. While the stream is down
  // the banner says values may be stale.
  function live(handlers, onOpen) {
    const connEl = document.getElementById('conn');
    const bannerEl = document.getElementById('banner');
    let source = null;
    let retry = null;
    function set(state) {
      if (connEl) {
        connEl.dataset.state = state;
        connEl.textContent = state === 'live' ? 'Live' : state === 'lost' ? 'Offline' : 'Connecting…';
      }
      if (bannerEl) bannerEl.hidden = state !== 'lost';
    }
    function connect() {
      if (source) source.close();
      const es = new EventSource('/web/api/events');
      source = es;
      es.addEventListener('open', () => { set('live'); if (onOpen) onOpen(); });
      es.addEventListener('error', () => {
        set('lost');
        if (es.readyState === EventSource.CLOSED && !retry) {
          // The browser gave up (a 401, say): try again ourselves; the
          // reload sends us to the login page if the session ended.
          retry = setTimeout(() => { retry = null; if (onOpen) onOpen(); connect(); }, 3000);
        }
      });
      for (const [type, fn] of Object.entries(handlers)) {
        es.addEventListener(type, e => fn(JSON.parse(e.data)));
      }
      es.addEventListener('notice', e => notice(JSON.parse(e.data)));
    }
    set('connecting');
    connect();
  }

  // startClock shows the time in the header, and calls each() every
  // second (to refresh ages).
  function startClock(each) {
    const clockEl = document.getElementById('clock');
    function tick() {
      if (clockEl) clockEl.textContent = new Date(now()).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });
      if (each) each();
    }
    setInterval(tick, 1000);
    tick();
  }

  return { PRIORITY, el, plural, now, setServerNow, formatAge, age, clockTime, dateTime, displayUnit, getJSON, postJSON, send, live, startClock };
})();
