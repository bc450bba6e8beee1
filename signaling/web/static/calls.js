// The operator's live call view: lists /api/calls every second and hangs a
// call up with DELETE /api/calls/{id}. Tests read window.mediarelayCalls.
const tbody = document.querySelector('#calls tbody');
const status = document.getElementById('status');
const tokenInput = document.getElementById('token');
tokenInput.value = sessionStorage.getItem('mediarelay-admin-token') || '';
tokenInput.addEventListener('change', () => {
  sessionStorage.setItem('mediarelay-admin-token', tokenInput.value);
  refresh();
});
document.getElementById('auth').addEventListener('submit', (e) => e.preventDefault());

const state = { calls: [], error: '', refreshes: 0 };
window.mediarelayCalls = state;

function headers() {
  const t = tokenInput.value.trim();
  return t ? { Authorization: 'Bearer ' + t } : {};
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function pct(x) { return (100 * (x || 0)).toFixed(1) + '%'; }

// render updates the table in place: a call's row, and its Hang up button,
// stay the same elements from refresh to refresh. Rebuilt every second,
// a click that began on a button could end on its replacement and be lost.
function render(calls) {
  const rows = new Map([...tbody.rows].map((tr) => [tr.dataset.id, tr]));
  const live = new Set();
  for (const c of calls) {
    live.add(c.id);
    const w = c.legs.webrtc || {}, s = c.legs.sip || {};
    const texts = [c.id, c.from, c.to, c.trunk, c.direction, c.state, c.mode,
      (c.codecs.webrtc || '–') + ' / ' + (c.codecs.sip || '–'),
      (w.packets_in || 0) + ' / ' + (s.packets_in || 0),
      pct(w.loss) + ' / ' + pct(s.loss),
      (w.jitter_ms || 0).toFixed(1) + ' / ' + (s.jitter_ms || 0).toFixed(1),
      Math.round((Date.now() - Date.parse(c.answer || c.start)) / 1000) + ' s'];
    let tr = rows.get(c.id);
    if (!tr) {
      tr = newRow(c.id, texts.length);
      tbody.append(tr);
    }
    texts.forEach((t, i) => {
      if (tr.cells[i].textContent !== t) tr.cells[i].textContent = t;
    });
  }
  for (const [id, tr] of rows) {
    if (!live.has(id)) tr.remove();
  }
}

// newRow is a call's row: n cells for its figures and a Hang up button.
function newRow(id, n) {
  const tr = document.createElement('tr');
  tr.dataset.id = id;
  for (let i = 0; i < n; i++) tr.append(cell(''));
  const td = document.createElement('td');
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'hangup';
  b.textContent = 'Hang up';
  b.addEventListener('click', () => hangup(id, b));
  td.append(b);
  tr.append(td);
  return tr;
}

async function hangup(id, button) {
  button.disabled = true;
  try {
    const res = await fetch('api/calls/' + encodeURIComponent(id), { method: 'DELETE', headers: headers() });
    if (!res.ok && res.status !== 404) {
      status.textContent = 'Hang-up failed: ' + res.status;
    }
  } catch (e) {
    status.textContent = 'Hang-up failed: ' + e;
  }
  refresh();
}

async function refresh() {
  try {
    const res = await fetch('api/calls', { headers: headers(), cache: 'no-store' });
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      state.error = res.status + ' ' + (body.error || res.statusText);
      status.textContent = state.error;
      return;
    }
    state.calls = await res.json();
    state.error = '';
    render(state.calls);
    status.textContent = state.calls.length + (state.calls.length === 1 ? ' call' : ' calls') + ' · ' + new Date().toLocaleTimeString();
  } catch (e) {
    state.error = String(e);
    status.textContent = 'Cannot reach the relay: ' + e;
  } finally {
    state.refreshes++;
  }
}

refresh();
setInterval(refresh, 1000);
