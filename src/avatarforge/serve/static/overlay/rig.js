// The live rig in the page: the same two steps as avatarforge.animate.rig (read its
// docstring first), so the server sends the avatar's layers once and then only numbers.
//   1. face: plate + eyes (lids, gaze, lashes) + brows + mouth on a 2D canvas, unwarped;
//   2. warp: one WebGL pass maps every output pixel back to the face canvas (head roll/yaw/
//      pitch weighted from the chin to the shoulders, body sway and breath).
// Without WebGL the face canvas is drawn as it is (expressions still move; pose does not).
(function () {
  'use strict';

  function loadImage(src) {
    return new Promise(function (resolve, reject) {
      const img = new Image();
      img.onload = function () { resolve(img); };
      img.onerror = function () { reject(new Error('rig layer failed to load')); };
      img.src = src;
    });
  }

  function canvas2d(w, h) {
    const c = document.createElement('canvas');
    c.width = w; c.height = h;
    return c;
  }

  // The warp as a mesh: grid vertices at source pixels moved by the forward transform of
  // AvatarRig.warp_maps (rotation about the neck pivot weighted from the chin to the shoulders,
  // head shift, sway, breath); the fragment shader is one texture lookup, so software WebGL
  // (a streamer's OBS without GPU compositing, or CI) stays cheap. Python inverts the same
  // transform per pixel; between grid lines the two differ by well under a pixel.
  const GRID = 48;
  // Columns per strip of the moving upper lash (Python moves each column; 2 px apart the
  // lid's slope moves the strips' edges by well under a pixel).
  const LASH_STRIP = 2;
  const VERT = [
    'attribute vec2 src;',  // source pixel coordinates (pixel i spans [i - 0.5, i + 0.5])
    'uniform float S, pivx, pivy, chin, shoulder, roll, yawS, pitchS, swayS, breathS;',
    'varying vec2 uv;',
    'float weight(float y) { float t = clamp((shoulder - y) / max(shoulder - chin, 1.0), 0.0, 1.0); return t * t * (3.0 - 2.0 * t); }',
    'void main() {',
    '  float w = weight(src.y);',
    '  float up = clamp((S - src.y) / S, 0.0, 1.0);',
    '  float chest = clamp((S - src.y) / max(S - shoulder, 1.0), 0.0, 1.0);',
    '  float ang = roll * w;',
    '  vec2 q = src - vec2(pivx, pivy);',
    '  vec2 d = vec2(cos(ang) * q.x - sin(ang) * q.y, sin(ang) * q.x + cos(ang) * q.y) + vec2(pivx, pivy);',
    '  d += vec2(yawS * w + swayS * up, -pitchS * w - breathS * chest);',
    '  uv = (src + 0.5) / S;',
    '  gl_Position = vec4((d.x + 0.5) / S * 2.0 - 1.0, 1.0 - (d.y + 0.5) / S * 2.0, 0.0, 1.0);',
    '}',
  ].join('\n');
  const FRAG = 'precision mediump float; varying vec2 uv; uniform sampler2D face; void main() { gl_FragColor = texture2D(face, uv); }';

  function RigView(target, rig) {
    this.rig = rig;
    this.S = rig.size;
    this.k = rig.constants;
    this.target = target;
    target.width = this.S; target.height = this.S;
    this.face = canvas2d(this.S, this.S);
    // CPU-backed: step 1 is a few small blits, and its changed rectangle is read back for upload.
    this.fctx = this.face.getContext('2d', {willReadFrequently: true});
    this.eyeCanvas = {};
    this.images = {};
    this.gl = null;
  }

  RigView.prototype.load = async function () {
    const r = this.rig, jobs = [], im = this.images;
    function add(key, src) { if (src) { jobs.push(loadImage(src).then(function (img) { im[key] = img; })); } }
    add('plate', r.plate);
    for (const side in r.eyes) {
      const e = r.eyes[side];
      add(side + ':opening', e.opening); add(side + ':iris', e.iris); add(side + ':ring', e.ring);
      add(side + ':upper', e.upper); add(side + ':lower', e.lower);
      this.eyeCanvas[side] = canvas2d(e.w, e.h);
    }
    if (r.brows) { add('brows', r.brows.png); }
    if (r.mouth && r.mouth.original) { add('mouth', r.mouth.original.png); }
    await Promise.all(jobs);
    this.initGL();
    return this;
  };

  RigView.prototype.initGL = function () {
    // No MSAA (software GL multiplies its raster work; the texture lookup already smooths) and
    // no preserved buffer (a copy per frame): snapshot() reads a frame it has just drawn.
    const gl = this.target.getContext('webgl', {premultipliedAlpha: true, alpha: true, antialias: false, preserveDrawingBuffer: false});
    if (!gl) { this.ctx2d = this.target.getContext('2d'); return; }
    function shader(type, src) {
      const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) { throw new Error(gl.getShaderInfoLog(s)); }
      return s;
    }
    const prog = gl.createProgram();
    gl.attachShader(prog, shader(gl.VERTEX_SHADER, VERT));
    gl.attachShader(prog, shader(gl.FRAGMENT_SHADER, FRAG));
    gl.linkProgram(prog);
    gl.useProgram(prog);
    // The grid: (GRID + 1)^2 vertices over the source, two triangles per cell.
    const S = this.S, n = GRID + 1, verts = new Float32Array(n * n * 2), idx = new Uint16Array(GRID * GRID * 6);
    for (let j = 0; j < n; j++) {
      for (let i = 0; i < n; i++) {
        verts[2 * (j * n + i)] = -0.5 + S * i / GRID;
        verts[2 * (j * n + i) + 1] = -0.5 + S * j / GRID;
      }
    }
    let k = 0;
    for (let j = 0; j < GRID; j++) {
      for (let i = 0; i < GRID; i++) {
        const a = j * n + i, b = a + 1, c = a + n, d = c + 1;
        idx[k++] = a; idx[k++] = b; idx[k++] = c; idx[k++] = b; idx[k++] = d; idx[k++] = c;
      }
    }
    gl.bindBuffer(gl.ARRAY_BUFFER, gl.createBuffer());
    gl.bufferData(gl.ARRAY_BUFFER, verts, gl.STATIC_DRAW);
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, gl.createBuffer());
    gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, idx, gl.STATIC_DRAW);
    this.indexCount = idx.length;
    const loc = gl.getAttribLocation(prog, 'src');
    gl.enableVertexAttribArray(loc);
    gl.vertexAttribPointer(loc, 2, gl.FLOAT, false, 0, 0);
    const tex = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, tex);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    gl.pixelStorei(gl.UNPACK_PREMULTIPLY_ALPHA_WEBGL, true);
    this.gl = gl;
    this.u = {};
    for (const n of ['S', 'pivx', 'pivy', 'chin', 'shoulder', 'roll', 'yawS', 'pitchS', 'swayS', 'breathS']) {
      this.u[n] = gl.getUniformLocation(prog, n);
    }
  };

  // Every live control as a number: missing ones neutral, eye_open sets both eyes.
  RigView.prototype.controls = function (c) {
    const out = Object.assign({}, this.rig.neutral);
    if (c && c.eye_open !== undefined) { out.eye_open_l = c.eye_open; out.eye_open_r = c.eye_open; }
    for (const n in c || {}) {
      const r = this.rig.controls[n];
      if (r) { out[n] = Math.min(r[1], Math.max(r[0], Number(c[n]) || 0)); }
    }
    return out;
  };

  RigView.prototype.drawEye = function (side, e, open, gx, gy, smile) {
    const cv = this.eyeCanvas[side], g = cv.getContext('2d', {willReadFrequently: true}), im = this.images, k = this.k;
    g.globalCompositeOperation = 'source-over'; g.globalAlpha = 1;
    g.clearRect(0, 0, e.w, e.h);
    g.drawImage(im[side + ':opening'], 0, 0);
    g.globalCompositeOperation = 'source-atop';  // the iris only inside the opening
    g.drawImage(im[side + ':iris'], gx * e.travel[0], -gy * e.travel[1]);
    // Lids (EyeRig.lids): keep the rows between the upper and the lower lid.
    const rise = Math.min(1, Math.max(1 - open / k.lower_lid_from, k.smile_lid * Math.max(smile, 0)));
    const upper = new Float32Array(e.w), lower = new Float32Array(e.w);
    for (let j = 0; j < e.w; j++) {
      upper[j] = e.closed[j] + (e.top[j] - e.closed[j]) * open;
      lower[j] = Math.max(e.bottom[j] + (e.closed[j] - e.bottom[j]) * rise, upper[j]);
    }
    g.globalCompositeOperation = 'destination-in';
    g.beginPath();
    g.moveTo(0, upper[0]);
    for (let j = 0; j < e.w; j++) { g.lineTo(j, upper[j]); g.lineTo(j + 1, upper[j]); }
    for (let j = e.w - 1; j >= 0; j--) { g.lineTo(j + 1, lower[j] + 1); g.lineTo(j, lower[j] + 1); }
    g.closePath();
    g.fill();
    g.globalCompositeOperation = 'source-over';
    g.globalAlpha = Math.min(1, 3 * open);  // the lower lash fades as the eye closes
    g.drawImage(im[side + ':lower'], 0, 0);
    g.globalAlpha = 1;
    const up = im[side + ':upper'];
    g.globalAlpha = open;  // the moving lash fades out as the eye closes (EyeRig.draw)
    for (let j = 0; j < e.w; j += LASH_STRIP) {  // the upper lash follows the lid, strip by strip
      const w = Math.min(LASH_STRIP, e.w - j), m = Math.min(j + (w >> 1), e.w - 1);
      g.drawImage(up, j, 0, w, e.h, j, upper[m] - e.top[m], w, e.h);
    }
    const fade = Math.min(1, 2 * (1 - open));  // ... and a lid line along the lid fades in
    if (fade > 0 && e.lid_span[1] - e.lid_span[0] >= 2) {
      g.globalAlpha = fade;
      g.strokeStyle = 'rgb(' + e.lid_colour.join(',') + ')';
      g.lineWidth = e.lid_width; g.lineJoin = 'round'; g.lineCap = 'butt';
      g.beginPath();
      for (let j = e.lid_span[0]; j < e.lid_span[1]; j++) {
        if (j === e.lid_span[0]) { g.moveTo(j + 0.5, upper[j]); } else { g.lineTo(j + 0.5, upper[j]); }
      }
      g.stroke();
    }
    g.globalAlpha = 1;
    return cv;
  };

  // MouthRig.shape: the drawn mouth's numbers.
  RigView.prototype.mouthShape = function (c) {
    const m = this.rig.mouth;
    let va = c.vowel_a, vi = c.vowel_i, vu = c.vowel_u, ve = c.vowel_e, vo = c.vowel_o;
    const open = Math.max(c.mouth_open, va, vi, vu, ve, vo);
    const vsum = va + vi + vu + ve + vo;
    if (vsum > 0) { va /= vsum; vi /= vsum; vu /= vsum; ve /= vsum; vo /= vsum; }
    const fw = 1 + 0.35 * vi + 0.15 * ve - 0.40 * vu - 0.20 * vo;
    const fh = 1 + 0.15 * va - 0.55 * vi - 0.15 * vu - 0.30 * ve + 0.10 * vo;
    const s = c.smile;
    const hw = m.half_width * fw * (0.75 + 0.25 * open) * (1 + 0.15 * Math.max(s, 0));
    const hh = m.height * open * fh;
    const lift = s * 0.35 * m.half_width;
    return {
      open: open, hw: hw, corner_y: m.cy - lift,
      upper_y: m.cy - 0.30 * hh - 0.25 * lift, lower_y: m.cy + 0.70 * hh + 0.25 * lift,
      teeth: vsum > 0 ? 0.5 * (vi + ve) : 0,
      fade: Math.min(1, Math.max(open, Math.abs(s)) / this.k.mouth_fade),
    };
  };

  RigView.prototype.drawMouth = function (g, c, px, py) {
    const m = this.rig.mouth;
    if (!m) { return; }  // a pose-only rig (no face found)
    const sh = this.mouthShape(c);
    const hasOriginal = !!m.original;
    if (hasOriginal && sh.fade < 1) {
      g.globalAlpha = 1 - sh.fade;
      g.drawImage(this.images.mouth, m.original.x + px, m.original.y + py);
    }
    const fade = hasOriginal ? sh.fade : 1;
    if (fade <= 0) { g.globalAlpha = 1; return; }
    g.globalAlpha = fade;
    g.save();
    g.translate(px, py);
    const L = m.cx - sh.hw, R = m.cx + sh.hw, cy = sh.corner_y;
    const rgb = function (a) { return 'rgb(' + a[0] + ',' + a[1] + ',' + a[2] + ')'; };
    g.lineWidth = m.line_width; g.lineJoin = 'round'; g.lineCap = 'round';
    g.strokeStyle = rgb(m.line);
    if (sh.open < 0.04) {
      const mid = 0.5 * (m.cy + (m.cy - cy) + m.cy);
      g.beginPath(); g.moveTo(L, cy); g.quadraticCurveTo(m.cx, 2 * mid - cy, R, cy); g.stroke();
    } else {
      const path = new Path2D();
      path.moveTo(L, cy);
      path.quadraticCurveTo(m.cx, 2 * sh.upper_y - cy, R, cy);
      path.quadraticCurveTo(m.cx, 2 * sh.lower_y - cy, L, cy);
      path.closePath();
      g.fillStyle = rgb(m.inside); g.fill(path);
      g.save(); g.clip(path);
      const h = sh.lower_y - sh.upper_y, ty = sh.lower_y - 0.2 * h;
      g.fillStyle = rgb(m.tongue);
      g.beginPath(); g.ellipse(m.cx, ty, 0.6 * sh.hw, Math.max(0.35 * h, 0.01), 0, 0, 2 * Math.PI); g.fill();
      if (sh.teeth > 0) {
        g.fillStyle = 'rgb(250,250,250)';
        g.fillRect(L, sh.upper_y - 4, 2 * sh.hw, 4 + sh.teeth * 0.35 * h);
      }
      g.restore();
      g.stroke(path);
    }
    g.restore();
    g.globalAlpha = 1;
  };

  // Step 1 (AvatarRig.face).
  // The rectangle step 1 can change: every face part's box, moved as far as parallax,
  // brows and mouth can move it. Outside it the face canvas is the plate, drawn once; inside
  // it each face frame redraws and uploads only these pixels (a few % of the avatar).
  RigView.prototype.faceRect = function () {
    const r = this.rig, k = this.k, S = this.S;
    const m = Math.ceil(k.parallax * S + k.brow_travel * r.brow_gap + 0.006 * S) + 2;
    let x0 = S, y0 = S, x1 = 0, y1 = 0;
    function add(x, y, w, h) { x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h); }
    for (const side in r.eyes) { const e = r.eyes[side]; add(e.x, e.y, e.w, e.h); }
    if (r.brows) { add(r.brows.x, r.brows.y, r.brows.w, r.brows.h); }
    if (r.mouth) {
      const pad = 2 * r.mouth.half_width + r.mouth.height + 2 * r.mouth.line_width + 4;
      add(r.mouth.cx - pad, r.mouth.cy - pad, 2 * pad, 2 * pad);
    }
    if (x1 <= x0) { return null; }  // a pose-only rig: nothing in step 1 ever changes
    x0 = Math.max(0, Math.floor(x0 - m)); y0 = Math.max(0, Math.floor(y0 - m));
    x1 = Math.min(S, Math.ceil(x1 + m)); y1 = Math.min(S, Math.ceil(y1 + m));
    return {x: x0, y: y0, w: x1 - x0, h: y1 - y0};
  };

  RigView.prototype.drawFace = function (c) {
    const g = this.fctx, r = this.rig, k = this.k, S = this.S, im = this.images;
    g.globalCompositeOperation = 'source-over'; g.globalAlpha = 1;
    if (this.rect === undefined) {  // first frame: the whole plate
      this.rect = this.faceRect();
      g.clearRect(0, 0, S, S);
      g.drawImage(im.plate, 0, 0);
    }
    const R = this.rect;
    if (!R) { return; }
    g.save();
    g.beginPath(); g.rect(R.x, R.y, R.w, R.h); g.clip();
    g.clearRect(R.x, R.y, R.w, R.h);
    g.drawImage(im.plate, R.x, R.y, R.w, R.h, R.x, R.y, R.w, R.h);
    const px = c.head_yaw * k.parallax * S, py = -c.head_pitch * k.parallax * S;
    for (const side in r.eyes) {
      const e = r.eyes[side], open = c['eye_open_' + side];
      g.globalAlpha = open;  // the avatar's own pixels around the eye, faded as it closes
      g.drawImage(im[side + ':ring'], e.x + px, e.y + py);
      g.globalAlpha = 1;
      const cv = this.drawEye(side, e, open, c.gaze_x, c.gaze_y, c.smile);
      g.drawImage(cv, e.x + px, e.y + py);
    }
    if (r.brows) {
      const lift = c.brow_y * k.brow_travel * r.brow_gap + 0.006 * S * Math.max(c.smile, 0);
      g.drawImage(im.brows, r.brows.x + px, r.brows.y - lift + py);
    }
    this.drawMouth(g, c, px, py);
    g.restore();
  };

  // Step 2 (AvatarRig.warp_maps), then show.
  // The controls that change step 1's picture; the others (pose, sway, breath) only change
  // the warp, so most frames (breathing, swaying) skip step 1 and the texture upload.
  const FACE_CONTROLS = ['eye_open_l', 'eye_open_r', 'gaze_x', 'gaze_y', 'mouth_open', 'smile',
    'vowel_a', 'vowel_i', 'vowel_u', 'vowel_e', 'vowel_o', 'brow_y', 'head_yaw', 'head_pitch'];

  RigView.prototype.draw = function (controls) {
    const c = this.controls(controls), k = this.k, S = this.S, h = this.rig.head;
    const key = FACE_CONTROLS.map(function (n) { return Math.round(c[n] * 1000); }).join(',');
    const first = this.faceKey === undefined;
    const faceChanged = key !== this.faceKey;
    if (faceChanged) { this.drawFace(c); this.faceKey = key; }
    const gl = this.gl;
    if (!gl) {
      this.ctx2d.clearRect(0, 0, S, S);
      this.ctx2d.drawImage(this.face, 0, 0);
      return;
    }
    gl.viewport(0, 0, S, S);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT);
    if (first || !this.rect) {
      if (faceChanged) { gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, this.face); }
    } else if (faceChanged) {  // only the face rectangle changed
      const R = this.rect;
      gl.texSubImage2D(gl.TEXTURE_2D, 0, R.x, R.y, gl.RGBA, gl.UNSIGNED_BYTE, this.fctx.getImageData(R.x, R.y, R.w, R.h));
    }
    const u = this.u;
    gl.uniform1f(u.S, S);
    gl.uniform1f(u.pivx, h.pivot_x); gl.uniform1f(u.pivy, h.pivot_y);
    gl.uniform1f(u.chin, h.chin_y); gl.uniform1f(u.shoulder, h.shoulder_y);
    gl.uniform1f(u.roll, k.roll_deg * c.head_tilt * Math.PI / 180);
    gl.uniform1f(u.yawS, c.head_yaw * k.yaw_shift * S);
    gl.uniform1f(u.pitchS, c.head_pitch * k.pitch_shift * S);
    gl.uniform1f(u.swayS, c.body_sway * k.sway_shift * S);
    gl.uniform1f(u.breathS, c.breath * k.breath_lift * S);
    gl.drawElements(gl.TRIANGLES, this.indexCount, gl.UNSIGNED_SHORT, 0);
  };

  // A PNG data URL of a frame drawn now (the drawing buffer is not preserved between frames).
  RigView.prototype.snapshot = function (controls) {
    this.faceKey = undefined;  // draw (and upload) step 1 again: a complete frame
    this.rect = undefined;
    this.draw(controls);
    return this.target.toDataURL('image/png');
  };

  window.AvatarForgeRig = {
    create: async function (target, rig) { return new RigView(target, rig).load(); },
  };
})();
