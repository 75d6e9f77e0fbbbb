// The 3D view: load the avatar's VRM with three-vrm, draw it unlit with an orthographic camera
// framed like the 2D avatar (canvas pixel = avatar pixel at the front view), rotate it, turn its
// head, play its expressions. window.view3d is the page's API (buttons and tests use it).
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { VRMLoaderPlugin, VRMUtils } from "@pixiv/three-vrm";

const params = new URLSearchParams(location.search);
const avatar = params.get("avatar") || "procedural:0";
const format = params.get("format") || "vrm1";
const canvas = document.getElementById("stage");
const status = document.getElementById("status");

const renderer = new THREE.WebGLRenderer({ canvas, alpha: true, antialias: false, preserveDrawingBuffer: true });
renderer.setPixelRatio(1);
renderer.setClearColor(0x000000, 0);
const scene = new THREE.Scene();
const camera = new THREE.OrthographicCamera(-0.3, 0.3, 0.3, -0.3, 0.01, 10);
// The exported materials are unlit; a light only matters for other VRMs (MToon).
const light = new THREE.DirectionalLight(0xffffff, Math.PI);
light.position.set(0, 1, 2);
scene.add(light, new THREE.AmbientLight(0xffffff, 0.4));
const pivot = new THREE.Group(); // the whole model turns about the vertical axis through the head bone
scene.add(pivot);

const api = {
  ready: false,
  errors: window.view3dErrors,
  avatar,
  format,
  expressions: [],
  yaw: 0,
  headYaw: 0,
  weights: {},
  vrm: null,
  setExpression(name, weight) {
    this.weights[name] = weight;
    this.vrm.expressionManager.setValue(name, weight);
    this.render();
  },
  resetExpressions() {
    for (const name of this.expressions) this.vrm.expressionManager.setValue(name, 0);
    this.weights = {};
    this.render();
  },
  setYaw(deg) {
    this.yaw = deg;
    pivot.rotation.y = THREE.MathUtils.degToRad(deg);
    this.render();
  },
  setHeadYaw(deg) {
    this.headYaw = deg;
    this.vrm.humanoid.getNormalizedBoneNode("head").rotation.y = THREE.MathUtils.degToRad(deg);
    this.render();
  },
  render() {
    if (!this.vrm) return;
    this.vrm.update(0);
    renderer.render(scene, camera);
  },
};
window.view3d = api;

function frame(framing) {
  // Orthographic camera showing exactly the 2D avatar's square at the front view.
  const S = framing.size, m = framing.metres_per_pixel;
  const ox = framing.origin_x, oy = framing.origin_y, hy = framing.head_y;
  camera.left = -ox * m;
  camera.right = (S - ox) * m;
  camera.top = hy + oy * m;
  camera.bottom = hy - (S - oy) * m;
  camera.position.set(0, 0, 3);
  camera.lookAt(0, 0, 0);
  camera.updateProjectionMatrix();
  canvas.width = canvas.height = S;
  renderer.setSize(S, S, false);
}

async function load() {
  const loader = new GLTFLoader();
  loader.register((parser) => new VRMLoaderPlugin(parser));
  const key = params.get('key');  // a keyed server: the model needs the key the page was opened with
  const url = `./view3d/model.vrm?avatar=${encodeURIComponent(avatar)}&format=${encodeURIComponent(format)}` +
    (key ? `&key=${encodeURIComponent(key)}` : '');
  const gltf = await loader.loadAsync(url);
  const vrm = gltf.userData.vrm;
  if (!vrm) throw new Error("the file has no VRM extension three-vrm can read");
  VRMUtils.rotateVRM0(vrm); // 0.x models face -Z; three-vrm turns them to face +Z like 1.0
  pivot.add(vrm.scene);
  vrm.scene.traverse((o) => { o.frustumCulled = false; });
  const extras = (gltf.parser.json.scenes[0].extras || {}).avatarforge || {
    size: 512, metres_per_pixel: 0.0012, origin_x: 256, origin_y: 300, head_y: 1.36,
  };
  frame(extras);
  api.vrm = vrm;
  api.framing = extras;
  api.expressions = vrm.expressionManager.expressions.map((e) => e.expressionName);
  const box = document.getElementById("expressions");
  for (const name of api.expressions) {
    const b = document.createElement("button");
    b.textContent = name;
    b.onclick = () => {
      const on = !b.classList.contains("on");
      b.classList.toggle("on", on);
      api.setExpression(name, on ? 1 : 0);
    };
    box.appendChild(b);
  }
  document.getElementById("yaw").oninput = (e) => api.setYaw(+e.target.value);
  document.getElementById("head").oninput = (e) => api.setHeadYaw(+e.target.value);
  const spin = document.getElementById("spin");
  let t0 = performance.now();
  const tick = (t) => {
    if (spin.checked) api.setYaw(30 * Math.sin((t - t0) / 1000));
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  api.render();
  api.ready = true;
  status.textContent = `${avatar} (${format}): ${api.expressions.length} expressions - ${vrm.meta.name || vrm.meta.title || ""}`;
}

// Live mode (?live=1, the overlay's 3D mode): the same control stream as the 2D overlay
// (/ws/overlay in rig mode: idle life, keys, audio, VMC, iFacialMocap, the tracker page, emotes)
// drives the model's expressions and head. ?bg=0 hides the page's backdrop and controls
// (an OBS browser source on transparency).
function controlsToVrm(c) {
  const v = (k) => (c[k] === undefined ? 0 : +c[k]);
  const open = (k) => (c[k] === undefined ? (c.eye_open === undefined ? 1 : +c.eye_open) : +c[k]);
  const vowels = { aa: v("vowel_a"), ih: v("vowel_i"), ou: v("vowel_u"), ee: v("vowel_e"), oh: v("vowel_o") };
  // a mouth opened without a vowel opens as "aa"
  vowels.aa = Math.max(vowels.aa, v("mouth_open") - Math.max(vowels.ih, vowels.ou, vowels.ee, vowels.oh));
  return {
    // VRM's blinkLeft is the character's left eye, like our eye_open_l
    blinkLeft: 1 - open("eye_open_l"),
    blinkRight: 1 - open("eye_open_r"),
    ...vowels,
    happy: Math.max(0, v("smile")),
    sad: Math.max(0, -v("smile")),
    headYaw: 30 * v("head_yaw"),
    headPitch: 20 * v("head_pitch"),
    headRoll: -12 * v("head_tilt"),
    sway: 6 * v("body_sway"),
  };
}
api.controlsToVrm = controlsToVrm;
api.liveFrames = 0;

function live() {
  const q = new URLSearchParams({ avatar, mode: "rig" });
  for (const k of ["key", "fps", "idle"]) if (params.get(k) !== null) q.set(k, params.get(k));
  const root = location.pathname.replace(/\/view3d\/?$/, "");
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + root + "/ws/overlay?" + q);
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string" || !api.vrm) return;
    const msg = JSON.parse(ev.data);
    if (!msg.c) return;
    const m = controlsToVrm(msg.c);
    const em = api.vrm.expressionManager;
    for (const name of ["blinkLeft", "blinkRight", "aa", "ih", "ou", "ee", "oh", "happy", "sad"]) {
      if (em.getExpression(name)) em.setValue(name, Math.min(1, Math.max(0, m[name])));
    }
    const head = api.vrm.humanoid.getNormalizedBoneNode("head");
    head.rotation.set(THREE.MathUtils.degToRad(m.headPitch), THREE.MathUtils.degToRad(m.headYaw), THREE.MathUtils.degToRad(m.headRoll));
    pivot.rotation.z = THREE.MathUtils.degToRad(m.sway);
    api.render();
    api.liveFrames += 1;
  };
  ws.onclose = () => setTimeout(live, 1000);  // server restart: reconnect
  api.send = (obj) => ws.readyState === 1 && ws.send(JSON.stringify(obj));
}

load().then(() => {
  if (params.get("live") === "1") {
    if (params.get("bg") === "0") {
      document.body.style.background = "transparent";
      document.getElementById("controls").style.display = "none";
    }
    live();
  }
}).catch((e) => {
  window.view3dErrors.push(String(e && e.stack ? e.stack : e));
  status.textContent = "could not load the model: " + e;
});
