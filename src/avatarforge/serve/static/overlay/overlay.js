// The /overlay page. Two modes (cfg.mode, chosen by the server):
//   rig:    fetch the avatar's rig once, then draw every animation frame in the page
//           (rig.js) from the controls the socket streams as JSON text;
//   frames: show each binary frame of the socket (rendered by the server's animator) in #avatar.
// window.overlayFrames, window.overlayClosed and window.overlayStats() are read by tests
// (tests/serve/test_browser.py, tests/serve/test_overlay_rig_browser.py); window.overlayShownAt
// (rig mode: tracker seq -> epoch ms when the first frame drawn from its controls was shown) by
// benchmarks/bench_tracking.py (camera frame -> overlay frame latency).
(function () {
  const cfg = JSON.parse(document.getElementById('overlay-config').textContent);
  const img = document.getElementById('avatar');
  const canvas = document.getElementById('avatar-rig');
  const status = document.getElementById('status');
  window.overlayFrames = 0;
  window.overlayClosed = null;
  let url = null, ws = null, retry = 500;
  // Frame intervals of the page (ms), for the frame-rate figures.
  const intervals = [];
  let lastShown = null;
  function shown() {
    const now = performance.now();
    if (lastShown !== null) { intervals.push(now - lastShown); if (intervals.length > 4000) { intervals.shift(); } }
    lastShown = now;
    window.overlayFrames += 1;
  }
  window.overlayStats = function () {
    const v = intervals.slice().sort(function (a, b) { return a - b; });
    const mean = v.reduce(function (a, b) { return a + b; }, 0) / Math.max(v.length, 1);
    return {frames: window.overlayFrames, fps: v.length ? 1000 / mean : 0,
            p99_ms: v.length ? v[Math.min(v.length - 1, Math.floor(0.99 * v.length))] : 0,
            max_ms: v.length ? v[v.length - 1] : 0, samples: v.length};
  };
  window.overlayResetStats = function () { intervals.length = 0; lastShown = null; };
  // Rig mode: the frame the page shows now, as a PNG data URL (tests, screenshots).
  window.overlaySnapshot = function () { return view ? view.snapshot(current || {}) : null; };
  function query() { return new URLSearchParams(cfg.query); }
  function wsUrl(path) {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + cfg.root + path + '?' + query();
  }

  // ---------------------------------------------------------------- rig mode
  let view = null, target = null, current = null, lastTick = null;
  let targetSeq = null, shownSeq = null;  // the tracker frame behind the controls (message "s")
  window.overlayShownAt = {};
  function tick(now) {
    if (view && target) {
      // Ease towards the newest controls between socket messages (display rate > send rate).
      const dt = lastTick === null ? 1 : Math.min(1, (now - lastTick) / 50);
      if (current === null) { current = Object.assign({}, target); }
      for (const k in target) {
        const c = current[k] === undefined ? target[k] : current[k];
        current[k] = c + (target[k] - c) * dt;
      }
      view.draw(current);
      shown();
      if (targetSeq !== null && targetSeq !== shownSeq) {
        shownSeq = targetSeq;
        window.overlayShownAt[shownSeq] = performance.timeOrigin + performance.now();
        delete window.overlayShownAt[shownSeq - 5000];
      }
    }
    lastTick = now;
    requestAnimationFrame(tick);
  }
  async function loadRig() {
    // A new avatar (e.g. the studio's next pick): fetch its rig and swap it in.
    const res = await fetch(cfg.root + cfg.rig + '?' + query());
    const body = await res.json();
    if (!res.ok) { throw new Error(body.detail || ('rig request failed: ' + res.status)); }
    const next = await window.AvatarForgeRig.create(canvas, body);
    canvas.dataset.size = String(body.size);
    view = next;
    window.overlayRigLoads = (window.overlayRigLoads || 0) + 1;
  }
  async function startRig() {
    await loadRig();
    target = {};
    requestAnimationFrame(tick);
  }

  function connect() {
    ws = new WebSocket(wsUrl(cfg.socket));
    ws.binaryType = 'blob';
    ws.onopen = function () { retry = 500; };
    ws.onmessage = function (ev) {
      if (typeof ev.data === 'string') {
        if (cfg.mode === 'rig') {
          const msg = JSON.parse(ev.data);
          if (msg.c) { target = msg.c; status.textContent = ''; if (msg.s !== undefined) { targetSeq = msg.s; } }
          if (msg.reload) { loadRig().catch(function (e) { status.textContent = 'AvatarForge overlay: ' + e.message; }); }
        }
        return;
      }
      const next = URL.createObjectURL(ev.data);
      img.onload = function () { if (url) { URL.revokeObjectURL(url); } url = next; };
      img.src = next;
      shown();
      img.dataset.frames = String(window.overlayFrames);
      status.textContent = '';
    };
    ws.onclose = function (ev) {
      window.overlayClosed = {code: ev.code, reason: ev.reason};
      if (ev.code >= 4400 && ev.code < 4600) {  // configuration problem: say it, do not hammer the server
        status.textContent = 'AvatarForge overlay: ' + ev.reason;
        return;
      }
      setTimeout(connect, retry);  // server restart: reconnect with back-off
      retry = Math.min(retry * 2, 5000);
    };
  }
  window.overlaySend = function (msg) {
    if (ws && ws.readyState === 1) { ws.send(JSON.stringify(msg)); }
  };
  document.addEventListener('keydown', function (ev) {
    if (ev.repeat || ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    if (cfg.keys.indexOf(ev.key.toLowerCase()) >= 0) { ev.preventDefault(); window.overlaySend({key: ev.key}); }
  });
  if (cfg.error) { status.textContent = 'AvatarForge overlay: ' + cfg.error; return; }
  if (cfg.mode === 'rig') {
    img.style.display = 'none';
    canvas.style.display = 'block';
    startRig().then(connect, function (e) { status.textContent = 'AvatarForge overlay: ' + e.message; });
  } else {
    connect();
  }
})();
