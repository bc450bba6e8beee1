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

function render(calls) {
  tbody.replaceChildren();
  for (const c of calls) {
    const w = c.legs.webrtc || {}, s = c.legs.sip || {};
    const tr = document.createElement('tr');
    tr.dataset.id = c.id;
    tr.append(cell(c.id), cell(c.from), cell(c.to), cell(c.trunk), cell(c.direction), cell(c.state), cell(c.mode),
      cell((c.codecs.webrtc || '–') + ' / ' + (c.codecs.sip || '–')),
      cell((w.packets_in || 0) + ' / ' + (s.packets_in || 0)),
      cell(pct(w.loss) + ' / ' + pct(s.loss)),
      cell((w.jitter_ms || 0).toFixed(1) + ' / ' + (s.jitter_ms || 0).toFixed(1)),
      cell(Math.round((Date.now() - Date.parse(c.answer || c.start)) / 1000) + ' s'));
    const td = document.createElement('td');
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'hangup';
    b.textContent = 'Hang up';
    b.addEventListener('click', () => hangup(c.id, b));
    td.append(b);
    tr.append(td);
    tbody.append(tr);
  }
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
