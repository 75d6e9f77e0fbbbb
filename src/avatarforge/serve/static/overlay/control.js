// The /overlay/control page: buttons, sliders, keys and microphone lip sync send control
// messages on the control socket; a live preview shares the overlay's frame loop.
// window.controlReplies and window.controlSend are for tests.
(function () {
  const cfg = JSON.parse(document.getElementById('overlay-config').textContent);
  const p = new URLSearchParams(cfg.query);
  const wsBase = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + cfg.root;
  document.getElementById('avatar-name').textContent = cfg.avatar;
  document.getElementById('obs-url').textContent = location.origin + cfg.root + cfg.page + '?' + p;
  const keys = document.getElementById('keys');
  cfg.help.forEach(function (kv) { const tr = keys.insertRow(); tr.insertCell().textContent = kv[0]; tr.insertCell().textContent = kv[1]; });
  const ws = new WebSocket(wsBase + cfg.sockets.control + '?' + p);
  window.controlReplies = 0;
  ws.onmessage = function (ev) { window.controlReplies += 1; document.getElementById('state').textContent = ev.data; };
  function send(msg) { if (ws.readyState === 1) { ws.send(JSON.stringify(msg)); } }
  window.controlSend = send;
  document.querySelectorAll('button[data-msg]').forEach(function (b) {
    b.addEventListener('click', function () { send(JSON.parse(b.dataset.msg)); });
  });
  const sl = document.getElementById('sliders');
  cfg.controls.forEach(function (c) {
    const l = document.createElement('label');
    l.innerHTML = c.name + ' <input type="range" min="' + c.lo + '" max="' + c.hi + '" step="0.01" value="' + c.neutral + '">';
    l.querySelector('input').addEventListener('input', function (ev) { const s = {}; s[c.name] = parseFloat(ev.target.value); send({set: s}); });
    sl.appendChild(l);
  });
  document.addEventListener('keydown', function (ev) {
    if (ev.repeat || ev.ctrlKey || ev.metaKey || ev.altKey || ev.target.tagName === 'INPUT') { return; }
    if (cfg.keys.indexOf(ev.key.toLowerCase()) >= 0) { ev.preventDefault(); send({key: ev.key}); }
  });
  // live preview through the same frame socket as OBS (shares the loop)
  const img = document.getElementById('preview');
  const fws = new WebSocket(wsBase + cfg.sockets.frames + '?' + p);
  let url = null;
  fws.onmessage = function (ev) {
    if (typeof ev.data === 'string') { return; }
    const next = URL.createObjectURL(ev.data);
    img.onload = function () { if (url) { URL.revokeObjectURL(url); } url = next; };
    img.src = next;
  };
  // microphone: RMS of 20 ms blocks -> dBFS -> 0 at -50 dB, 1 at -15 dB -> attack 30 ms / release 120 ms
  let ctx = null, stream = null, timer = null;
  document.getElementById('mic').addEventListener('click', async function (ev) {
    const btn = ev.target;
    if (ctx) {
      clearInterval(timer); stream.getTracks().forEach(function (t) { t.stop(); }); ctx.close(); ctx = null;
      send({clear: ['mouth_open']}); btn.textContent = 'Start microphone'; return;
    }
    try { stream = await navigator.mediaDevices.getUserMedia({audio: true, video: false}); }
    catch (e) { alert('Microphone unavailable: ' + e.message); return; }
    ctx = new AudioContext();
    const an = ctx.createAnalyser(); an.fftSize = 1024;
    ctx.createMediaStreamSource(stream).connect(an);
    const buf = new Float32Array(an.fftSize);
    let level = 0, last = -1;
    const block = 0.02, up = 1 - Math.exp(-block / 0.03), down = 1 - Math.exp(-block / 0.12);
    timer = setInterval(function () {
      an.getFloatTimeDomainData(buf);
      let s = 0; for (let i = 0; i < buf.length; i++) { s += buf[i] * buf[i]; }
      const db = 20 * Math.log10(Math.max(Math.sqrt(s / buf.length), 1e-10));
      const x = Math.min(1, Math.max(0, (db + 50) / 35));
      level += (x - level) * (x > level ? up : down);
      const v = Math.min(1, level * parseFloat(document.getElementById('gain').value));
      document.getElementById('level').value = v;
      if (Math.abs(v - last) > 0.01) { last = v; send({set: {mouth_open: Math.round(v * 1000) / 1000}}); }
    }, block * 1000);
    btn.textContent = 'Stop microphone';
  });
})();
