// The /tracker page: webcam -> MediaPipe face_mesh (478 landmarks with irises, run in this page
// from files this server serves) -> the 17 live controls -> the control socket, at camera rate.
// docs/tracking.md explains the parameters. window.trackerStats(), window.trackerLog and
// window.trackerSentAt are read by tests and benchmarks (tests/serve/test_tracker_browser.py).
(function () {
  'use strict';
  const cfg = JSON.parse(document.getElementById('tracker-config').textContent);
  const q = new URLSearchParams(cfg.query);
  const page = new URLSearchParams(location.search);  // page-only options (?inference=, ?input=, ?preview=, ?image=)
  const statusEl = document.getElementById('status');
  const video = document.getElementById('video');
  const marks = document.getElementById('marks');
  const debug = q.get('debug') === '1';
  function say(text, error) { statusEl.textContent = text; statusEl.className = 'status' + (error ? ' error' : ''); }
  window.trackerError = null;
  function fail(text) { window.trackerError = text; say(text, true); }

  const obs = new URLSearchParams(); if (q.get('avatar')) { obs.set('avatar', q.get('avatar')); } if (q.get('key')) { obs.set('key', q.get('key')); }
  document.getElementById('obs-url').textContent = location.origin + cfg.root + cfg.overlay + (obs.toString() ? '?' + obs : '');

  // ------------------------------------------------------------------ One-Euro filter (tracking.OneEuroFilter)
  function OneEuro(minCutoff, beta, dCutoff) { this.mc = minCutoff; this.beta = beta; this.dc = dCutoff; this.x = null; this.dx = 0; this.t = null; }
  function alpha(cutoff, dt) { const tau = 1 / (2 * Math.PI * cutoff); return 1 / (1 + tau / dt); }
  OneEuro.prototype.filter = function (x, t) {
    if (this.x === null || t <= this.t) { if (this.x === null) { this.x = x; this.t = t; } return this.x; }
    const dt = t - this.t;
    this.dx += alpha(this.dc, dt) * ((x - this.x) / dt - this.dx);
    this.x += alpha(this.mc + this.beta * Math.abs(this.dx), dt) * (x - this.x);
    this.t = t;
    return this.x;
  };
  const tune = {
    min_cutoff: parseFloat(q.get('mincutoff') || cfg.filter.min_cutoff),
    beta: parseFloat(q.get('beta') || cfg.filter.beta),
  };
  let filters = {};
  function smooth(params, t) {
    const out = {};
    for (const k in params) {
      if (!filters[k]) {
        const mc = k.indexOf('eye_open') === 0 ? Math.max(cfg.filter.eye_min_cutoff, tune.min_cutoff) : tune.min_cutoff;
        filters[k] = new OneEuro(mc, tune.beta, cfg.filter.d_cutoff);
      }
      out[k] = Math.round(filters[k].filter(params[k], t) * 10000) / 10000;
    }
    return out;
  }
  ['min_cutoff', 'beta'].forEach(function (name) {
    const el = document.getElementById(name === 'min_cutoff' ? 'mincutoff' : 'beta');
    el.value = tune[name];
    el.addEventListener('input', function () { tune[name] = parseFloat(el.value); filters = {}; showFilter(); });
  });
  function showFilter() { document.getElementById('filter-values').textContent = 'min cutoff ' + tune.min_cutoff + ' Hz, beta ' + tune.beta; }
  showFilter();

  // ------------------------------------------------------------------ landmarks -> parameters
  // MediaPipe face mesh indices (image coordinates of a camera image that is not mirrored:
  // the subject's right eye is on the image left). _l = the character's (and subject's) left.
  const EYE = {
    r: {outer: 33, inner: 133, top: 159, bottom: 145, brow: 105},
    l: {outer: 263, inner: 362, top: 386, bottom: 374, brow: 334},
  };
  const IRIS = [468, 473];
  const clamp = function (x, lo, hi) { return Math.min(hi, Math.max(lo, x)); };
  let W = 640, H = 480;
  function P(lm, i) { const p = lm[i]; return [p.x * W, p.y * H, p.z * W]; }
  function sub(a, b) { return [a[0] - b[0], a[1] - b[1], a[2] - b[2]]; }
  function len2(a) { return Math.hypot(a[0], a[1]); }
  function dist(a, b) { return Math.hypot(a[0] - b[0], a[1] - b[1]); }
  function mid(a, b) { return [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2, (a[2] + b[2]) / 2]; }
  const DEG = 180 / Math.PI;

  // Raw measurements of one face (no calibration): pose in degrees, ratios of the eye distance.
  function measure(lm) {
    const xr = P(lm, EYE.r.outer), xl = P(lm, EYE.l.outer);
    const xa = sub(xl, xr);                        // image-left eye -> image-right eye
    const ya = sub(P(lm, 152), P(lm, 10));         // forehead -> chin
    const roll = Math.atan2(xa[1], xa[0]) * DEG;   // + = clockwise on screen
    const yaw = Math.atan2(xa[2], len2(xa)) * DEG; // + = the image-right side is further: turned towards image right
    const pitch = Math.atan2(-ya[2], len2(ya)) * DEG; // + = the chin is nearer: looking up
    const c = Math.cos(-roll / DEG), s = Math.sin(-roll / DEG);
    function up(p, o) { const dx = p[0] - o[0], dy = p[1] - o[1]; return [c * dx - s * dy, s * dx + c * dy]; }  // face-aligned
    const ec = {r: mid(P(lm, EYE.r.outer), P(lm, EYE.r.inner)), l: mid(P(lm, EYE.l.outer), P(lm, EYE.l.inner))};
    const iod = dist(ec.r, ec.l) || 1;
    const m = {roll: roll, yaw: yaw, pitch: pitch, iod: iod};
    const irises = IRIS.map(function (i) { return P(lm, i); });
    ['l', 'r'].forEach(function (side) {
      const e = EYE[side];
      const width = dist(P(lm, e.outer), P(lm, e.inner)) || 1;
      m['eye_' + side] = dist(P(lm, e.top), P(lm, e.bottom)) / width;
      const iris = dist(irises[0], ec[side]) < dist(irises[1], ec[side]) ? irises[0] : irises[1];
      const d = up(iris, ec[side]);
      m['gx_' + side] = d[0] / (width / 2);
      m['gy_' + side] = -d[1] / (width / 2);
      m['brow_' + side] = -up(P(lm, e.brow), ec[side])[1] / iod;
    });
    const upper = P(lm, 13), lower = P(lm, 14), cl = P(lm, 61), cr = P(lm, 291);
    m.mouth = dist(upper, lower) / iod;
    m.width = dist(cl, cr) / iod;
    const centre = mid(upper, lower);
    m.corners = -(up(cl, centre)[1] + up(cr, centre)[1]) / 2 / iod; // + = corners above the lips' centre
    return m;
  }

  const NEUTRAL = {yaw: 0, pitch: 0, roll: 0, eye_l: 0.30, eye_r: 0.30, gx_l: 0, gx_r: 0, gy_l: 0, gy_r: 0,
                   brow_l: 0.42, brow_r: 0.42, mouth: 0.0, width: 0.95, corners: 0.0};
  let neutral = Object.assign({}, NEUTRAL);
  try { Object.assign(neutral, JSON.parse(localStorage.getItem('avatarforge-tracker-neutral') || '{}')); } catch (e) { /* private mode */ }

  function toParams(m) {
    const n = neutral, out = {};
    ['l', 'r'].forEach(function (side) {
      const closed = 0.35 * n['eye_' + side];
      out['eye_open_' + side] = clamp((m['eye_' + side] - closed) / (0.9 * n['eye_' + side] - closed), 0, 1);
    });
    out.gaze_x = clamp(2.5 * ((m.gx_l - n.gx_l) + (m.gx_r - n.gx_r)) / 2, -1, 1);
    out.gaze_y = clamp(4.0 * ((m.gy_l - n.gy_l) + (m.gy_r - n.gy_r)) / 2, -1, 1);
    const open = clamp((m.mouth - n.mouth - 0.04) / 0.35, 0, 1);
    out.mouth_open = open;
    out.smile = clamp(8 * (m.corners - n.corners) + 1.5 * (m.width - n.width), -1, 1);
    const wr = m.width / n.width;
    const round = clamp((0.97 - wr) / 0.15, 0, 1), wide = clamp((wr - 1.03) / 0.15, 0, 1);
    const v = {
      vowel_a: open * (1 - round),
      vowel_o: open * round,
      vowel_u: round * clamp(1 - 3 * open, 0, 1),
      vowel_i: wide * clamp(1 - 2.5 * open, 0, 1) * clamp(m.mouth / 0.02, 0, 1),
      vowel_e: wide * open * clamp(1 - open, 0, 1) * 2,
    };
    let sum = 0; for (const k in v) { sum += v[k]; }
    for (const k in v) { out[k] = clamp(sum > 1 ? v[k] / sum : v[k], 0, 1); }
    out.brow_y = clamp(((m.brow_l - n.brow_l) + (m.brow_r - n.brow_r)) / 2 / 0.06, -1, 1);
    out.head_yaw = clamp((m.yaw - n.yaw) / 30, -1, 1);
    out.head_pitch = clamp((m.pitch - n.pitch) / 20, -1, 1);
    out.head_tilt = clamp((m.roll - n.roll) / 10, -1, 1);
    return out;
  }

  // ------------------------------------------------------------------ socket
  let ws = null, seq = 0, sent = 0, lostSent = false;
  window.trackerSentAt = {};  // seq -> epoch ms of the camera frame (latency measurements)
  function connect() {
    ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + cfg.root + cfg.socket + '?' + q);
    ws.onclose = function (ev) {
      if (ev.code === 1008 || ev.code === 4400) { fail('The server refused the control socket: ' + (ev.reason || ev.code)); return; }
      setTimeout(connect, 1000);
    };
  }
  function send(msg) { if (ws && ws.readyState === 1) { ws.send(JSON.stringify(msg)); sent += 1; return true; } return false; }

  // ------------------------------------------------------------------ frames
  let frames = 0, faces = 0, last = null, paused = false;
  const times = [], sendMs = [];
  window.trackerLog = [];
  window.trackerStats = function () {
    const fps = times.length > 1 ? 1000 * (times.length - 1) / (times[times.length - 1] - times[0]) : 0;
    const ms = sendMs.slice().sort(function (a, b) { return a - b; });
    return {frames: frames, faces: faces, fps: fps, sent: sent, last: last, error: window.trackerError,
            send_ms: ms.length ? ms[ms.length >> 1] : null};
  };
  function frameCode(image) {  // debug: the frame number a test video carries in its top-left corner
    const sx = image.width / 640, sy = image.height / 480;  // 10 blocks of 16 x 12 px at 640 x 480
    const px = image.getContext('2d').getImageData(0, 0, Math.ceil(160 * sx), Math.ceil(12 * sy));
    let code = 0;
    for (let b = 0; b < 10; b++) {
      const i = (Math.floor(6 * sy) * px.width + Math.floor((b * 16 + 8) * sx)) * 4;
      code = code * 2 + (px.data[i] > 128 ? 1 : 0);
    }
    return code;
  }
  const table = document.getElementById('params');
  function show(params) {
    table.textContent = '';
    Object.keys(params).forEach(function (k) { const r = table.insertRow(); r.insertCell().textContent = k; r.insertCell().textContent = params[k].toFixed(2); });
  }
  // The preview: the live <video>, or on a software renderer (see start) the frames the model got,
  // drawn here under the landmarks every third tracked frame: a <video> showing the camera at
  // 30 frames/s keeps a software GPU process busy (measured: half a core of 2) and the model's
  // GL steps wait behind it.
  let previewFrom = null;
  function drawMarks(lm) {
    const g = marks.getContext('2d');
    if (marks.width !== W || marks.height !== H) { marks.width = W; marks.height = H; }
    g.clearRect(0, 0, W, H);
    if (previewFrom) { g.drawImage(previewFrom, 0, 0, W, H); }
    if (!lm) { return; }
    g.fillStyle = '#0f0';
    for (let i = 0; i < lm.length; i += 3) { g.fillRect(lm[i].x * W - 1, lm[i].y * H - 1, 2, 2); }
  }

  let current = null;  // measurements of the newest frame (for calibration)
  function onResults(results, t0, code) {
    frames += 1;
    const now = performance.now();
    times.push(now); if (times.length > 60) { times.shift(); }
    const lm = results.multiFaceLandmarks && results.multiFaceLandmarks[0];
    if (!lm) {
      current = null;
      if (!lostSent) { send({track: null}); lostSent = true; }
      if (debug) { window.trackerLog.push({code: code, face: false}); }
      say('No face found: face the camera, with light on your face (not behind you).');
      drawMarks(null);
      return;
    }
    faces += 1;
    lostSent = false;
    const m = measure(lm);
    current = m;
    const params = smooth(toParams(m), t0 / 1000);
    seq += 1;
    window.trackerSentAt[seq] = performance.timeOrigin + t0;
    delete window.trackerSentAt[seq - 5000];
    send({track: params, seq: seq});
    last = params;
    if (debug) {
      window.trackerLog.push({code: code, face: true, roll: m.roll, yaw: m.yaw, pitch: m.pitch, mouth: m.mouth,
                              eye_l: m.eye_l, eye_r: m.eye_r, params: params});
      if (window.trackerLog.length > 5000) { window.trackerLog.shift(); }
    }
    if (frames % 3 === 0) {
      show(params); drawMarks(lm);
      document.getElementById('fps').textContent = window.trackerStats().fps.toFixed(1);
      document.getElementById('found').textContent = Math.round(100 * faces / frames);
      document.getElementById('sent').textContent = sent;
      say('Tracking. Press “Look forward” while looking straight at the camera to calibrate.');
    }
  }

  document.getElementById('calibrate').addEventListener('click', function () {
    if (!current) { say('No face to calibrate on: face the camera first.', true); return; }
    neutral = Object.assign({}, NEUTRAL, current);
    filters = {};
    try { localStorage.setItem('avatarforge-tracker-neutral', JSON.stringify(neutral)); } catch (e) { /* private mode */ }
    say('Calibrated: this pose and face are neutral now.');
  });
  window.trackerCalibrate = function () { document.getElementById('calibrate').click(); };
  document.getElementById('pause').addEventListener('click', function (ev) {
    paused = !paused; ev.target.textContent = paused ? 'Resume' : 'Pause';
    if (paused) { send({track: null}); }
  });

  // ------------------------------------------------------------------ inference: CPU or WebGL
  let inference = {mode: 'auto', cpu: null, renderer: ''};
  function webglRenderer() {
    try {
      const gl = document.createElement('canvas').getContext('webgl2') || document.createElement('canvas').getContext('webgl');
      if (!gl) { return 'none'; }
      const ext = gl.getExtension('WEBGL_debug_renderer_info');
      const name = String(gl.getParameter(ext ? ext.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
      const lose = gl.getExtension('WEBGL_lose_context'); if (lose) { lose.loseContext(); }
      return name;
    } catch (e) { return 'none'; }
  }
  function chooseInference(asked) {
    const renderer = webglRenderer();
    const software = renderer === 'none' || /swiftshader|llvmpipe|softpipe|software|basic render/i.test(renderer);
    if (asked === 'cpu' || asked === 'gpu') { return {mode: asked, cpu: asked === 'cpu', renderer: renderer, software: software}; }
    return {mode: 'auto', cpu: software ? true : null, renderer: renderer, software: software};
  }
  window.trackerInference = function () { return Object.assign({}, inference, {input: lastInput, preview: previewFrom ? 'frames' : 'video'}); };
  let lastInput = null;
  // The frame size the model gets: ?input=WIDTH, else on a software renderer 320 px wide (the
  // GL work of scaling the frame is the CPU's; the landmark net sees a 192-px crop of the face
  // either way), else the camera's own size.
  function inputWidth(camera) {
    const asked = parseInt(page.get('input') || '0', 10);
    if (asked > 0) { return asked; }
    return inference.software ? Math.min(camera, 320) : camera;
  }

  // The solution draws every input frame back out as results.image (a GL draw into its canvas),
  // which this page never shows: drop that output (the pinned face_mesh 0.4.1633559619 keeps its
  // config at mesh.g.g; anything else is left as it is). ?image=1 (page-only) keeps it.
  function dropOutputImage(mesh) {
    const c = mesh && mesh.g && mesh.g.g;
    const l = c && Array.isArray(c.listeners) && c.listeners[0];
    if (page.get('image') === '1' || !l || !Array.isArray(l.wants) || !l.outs || l.outs.image !== 'image_transformed') { return false; }
    c.listeners = [Object.assign({}, l, {
      wants: l.wants.filter(function (w) { return w !== 'image_transformed'; }),
      outs: Object.assign({}, l.outs, {image: undefined}),
    })];
    delete c.listeners[0].outs.image;
    return true;
  }

  async function start() {
    if (!cfg.installed) {
      fail('The face-tracking model is not installed on this server, so this page cannot track.\nRun: ' + cfg.install);
      return;
    }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      fail('This browser gives no camera here: open the page as http://127.0.0.1 or http://localhost (a secure context), or over https.');
      return;
    }
    say('Loading the face model (MediaPipe face_mesh, from this server)…');
    try {
      await new Promise(function (resolve, reject) {
        const s = document.createElement('script');
        s.src = cfg.root + cfg.mediapipe + '/face_mesh.js';
        s.onload = resolve;
        s.onerror = function () { reject(new Error('face_mesh.js did not load')); };
        document.head.appendChild(s);
      });
    } catch (e) {
      fail('The face-tracking files did not load from this server (' + e.message + ').\nRun: ' + cfg.install);
      return;
    }
    const mesh = new window.FaceMesh({locateFile: function (f) { return cfg.root + cfg.mediapipe + '/' + f; }});
    dropOutputImage(mesh);
    // Where the two neural nets run: MediaPipe's default is WebGL (ML Drift), which on a
    // software WebGL (SwiftShader, llvmpipe: no GPU, a VM, a headless browser) emulates the
    // GPU on the CPU, far slower than running them on the CPU directly (wasm SIMD + XNNPACK,
    // MediaPipe's own "useCpuInference" option, its default on iPhones and Macs). ?inference=
    // cpu|gpu overrides; auto: CPU on a software renderer, else MediaPipe's default.
    inference = chooseInference(page.get('inference'));
    const opts = {maxNumFaces: 1, refineLandmarks: true, minDetectionConfidence: 0.5, minTrackingConfidence: 0.5, selfieMode: false};
    if (inference.cpu !== null) { opts.useCpuInference = inference.cpu; }
    mesh.setOptions(opts);
    // A cut or a fast move loses the tracked face for a frame: the model then looks for it again
    // on the next frame. Retry that same frame once at once (detection runs), so one camera
    // frame is not reported as "no face" for a face that is plainly there.
    let pending = null, hadFace = false, retry = false;
    mesh.onResults(function (r) {
      if (!pending) { return; }
      const face = !!(r.multiFaceLandmarks && r.multiFaceLandmarks[0]);
      if (!face && hadFace && !pending.retried) { retry = true; return; }
      hadFace = face;
      onResults(r, pending.t0, pending.code);
    });
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 640}, height: {ideal: 480}, frameRate: {ideal: 30}}, audio: false});
    } catch (e) {
      if (e.name === 'NotAllowedError' || e.name === 'SecurityError') {
        fail('Camera permission is missing: allow the camera for this page (the camera icon in the address bar, or the browser\'s site settings), then reload.');
      } else if (e.name === 'NotFoundError' || e.name === 'OverconstrainedError') {
        fail('No camera found: connect a webcam (or close the app that holds it), then reload.');
      } else if (e.name === 'NotReadableError') {
        fail('The camera is busy: another app (OBS, a video call) is using it. Close it, then reload.');
      } else {
        fail('The camera could not start: ' + e.name + ': ' + e.message);
      }
      return;
    }
    video.srcObject = stream;
    await video.play();
    W = video.videoWidth || 640; H = video.videoHeight || 480;
    try { await mesh.initialize(); } catch (e) { fail('The face model failed to start: ' + e.message + '\nRun: ' + cfg.install); return; }
    connect();
    document.getElementById('calibrate').disabled = false;
    document.getElementById('pause').disabled = false;
    say('Tracking…');
    // The model gets each frame as a canvas copy (scaled to ?input=WIDTH px, page-only; default
    // the camera's size; see inputWidth): the frame number a test reads (frameCode) and the
    // frame the model sees are then the same picture, whatever the camera does meanwhile.
    const grab = document.createElement('canvas');
    // a CPU canvas on a software renderer (no GPU-process work for the copy), or when a test reads it
    const grabCtx = grab.getContext('2d', {willReadFrequently: debug || inference.software});
    const preview = page.get('preview');  // ?preview=video|frames (page-only)
    if (preview === 'frames' || (preview !== 'video' && inference.software)) {
      video.style.display = 'none';
      previewFrom = grab;
    }
    function grabFrame() {
      const w = Math.min(video.videoWidth, inputWidth(video.videoWidth));
      const h = Math.round(w * video.videoHeight / video.videoWidth);
      if (grab.width !== w || grab.height !== h) { grab.width = w; grab.height = h; }
      grabCtx.drawImage(video, 0, 0, w, h);
      lastInput = [w, h];
      return grab;
    }
    // A requestVideoFrameCallback loop of its own notes the newest camera frame; the tracking
    // loop takes it as soon as the model is free (no wait for the frame after).
    const rvfc = 'requestVideoFrameCallback' in HTMLVideoElement.prototype;
    let newest = 0, taken = 0, newestMeta = null, wake = null;
    function onFrame(now, meta) {
      newest += 1; newestMeta = meta;
      if (wake) { const w = wake; wake = null; w(); }
      video.requestVideoFrameCallback(onFrame);
    }
    function nextFrame() {
      if (!rvfc) { return new Promise(function (resolve) { requestAnimationFrame(resolve); }); }
      return new Promise(function (resolve) { if (newest > taken) { resolve(); } else { wake = resolve; } });
    }
    if (rvfc) { video.requestVideoFrameCallback(onFrame); }
    async function track(meta) {
      W = video.videoWidth; H = video.videoHeight;
      // t0: when the camera took the frame (requestVideoFrameCallback's captureTime), else now
      const t0 = meta && meta.captureTime ? meta.captureTime : performance.now();
      let image = grabFrame();
      pending = {t0: t0, code: debug ? frameCode(image) : null, retried: false};
      const s0 = performance.now();
      await mesh.send({image: image});
      if (retry) {  // the video may have moved on meanwhile: the retry is of the frame shown now
        retry = false; hadFace = false;
        image = grabFrame();
        pending = {t0: pending.t0, code: debug ? frameCode(image) : null, retried: true};  // t0 kept: latency counted from the first try
        await mesh.send({image: image});
      }
      sendMs.push(performance.now() - s0); if (sendMs.length > 60) { sendMs.shift(); }
    }
    async function loop() {
      for (;;) {
        await nextFrame();
        taken = newest;
        if (paused || video.readyState < 2) { continue; }
        try { await track(newestMeta); } catch (e) { fail('Face tracking stopped: ' + e.message); return; }
      }
    }
    loop();
  }
  start();
})();
