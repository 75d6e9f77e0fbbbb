// The /overlay page: show each binary frame of the socket in #avatar; forward bound keys.
// window.overlayFrames and window.overlayClosed are read by tests (tests/serve/test_browser.py).
(function () {
  const cfg = JSON.parse(document.getElementById('overlay-config').textContent);
  const img = document.getElementById('avatar');
  const status = document.getElementById('status');
  window.overlayFrames = 0;
  window.overlayClosed = null;
  let url = null, ws = null, retry = 500;
  function wsUrl(path) {
    const p = new URLSearchParams(cfg.query);
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + cfg.root + path + '?' + p;
  }
  function connect() {
    ws = new WebSocket(wsUrl(cfg.socket));
    ws.binaryType = 'blob';
    ws.onopen = function () { retry = 500; };
    ws.onmessage = function (ev) {
      if (typeof ev.data === 'string') { return; }
      const next = URL.createObjectURL(ev.data);
      img.onload = function () { if (url) { URL.revokeObjectURL(url); } url = next; };
      img.src = next;
      window.overlayFrames += 1;
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
  connect();
})();
