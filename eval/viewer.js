"use strict";
(function () {
const D = JSON.parse(document.getElementById("segdata").textContent);
const cv = document.getElementById("view"), st = document.getElementById("status");
function bytes(s) { const b = atob(s), u = new Uint8Array(b.length); for (let i = 0; i < b.length; i++) u[i] = b.charCodeAt(i); return u.buffer; }
function decode(m) {
  if (!m || !m.nt) return null;
  const q = new Uint16Array(bytes(m.v)), ix = m.w === 4 ? new Uint32Array(bytes(m.i)) : new Uint16Array(bytes(m.i));
  const nv = q.length / 3, P = new Float32Array(nv * 3), N = new Float32Array(nv * 3);
  for (let i = 0; i < nv * 3; i++) P[i] = D.lo[i % 3] + q[i] * D.sc[i % 3];
  for (let t = 0; t < ix.length; t += 3) {
    const a = 3 * ix[t], b = 3 * ix[t + 1], c = 3 * ix[t + 2];
    const ux = P[b] - P[a], uy = P[b + 1] - P[a + 1], uz = P[b + 2] - P[a + 2];
    const vx = P[c] - P[a], vy = P[c + 1] - P[a + 1], vz = P[c + 2] - P[a + 2];
    const nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
    for (const k of [a, b, c]) { N[k] += nx; N[k + 1] += ny; N[k + 2] += nz; }
  }
  for (let i = 0; i < nv; i++) {
    const l = Math.hypot(N[3 * i], N[3 * i + 1], N[3 * i + 2]) || 1;
    N[3 * i] /= l; N[3 * i + 1] /= l; N[3 * i + 2] /= l;
  }
  return { P: P, N: N, ix: ix, n: ix.length };
}
const S = D.s.map(function (s) { return { name: s.n, col: s.c.map(function (x) { return x / 255; }), dice: s.d, on: true, ref: decode(s.r), pred: decode(s.p) }; });
let yaw = 0, pitch = 0.25, zoom = 1, mode = "side";
const view = { gl: null, ctx: null };

/* rotation: camera x = -world x (patient right on the left: anterior view), camera y = world z (superior up),
   camera z = world y (anterior towards the viewer), after turning by yaw about z and tilting by pitch */
function rot() {
  const cy = Math.cos(yaw), sy = Math.sin(yaw), cp = Math.cos(pitch), sp = Math.sin(pitch);
  const Rz = [[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]], B = [[-1, 0, 0], [0, 0, 1], [0, 1, 0]], Rx = [[1, 0, 0], [0, cp, -sp], [0, sp, cp]];
  function mul(x, y) { const o = [[0, 0, 0], [0, 0, 0], [0, 0, 0]]; for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 3; k++) o[i][j] += x[i][k] * y[k][j]; return o; }
  return mul(Rx, mul(B, Rz));
}
function layout() {
  const w = cv.clientWidth, h = cv.clientHeight, dpr = window.devicePixelRatio || 1;
  if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) { cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr); }
  const half = (mode === "side" ? 2.3 : 1.15) * D.r / zoom;
  return { kx: 1 / half, ky: (cv.width / cv.height) / half, zs: 0.45 / D.r, gap: 1.1 * D.r };
}
function passes() {
  const L = [];
  if (mode === "side") { L.push({ key: "ref", dx: -1 }); L.push({ key: "pred", dx: 1 }); }
  else L.push({ key: mode, dx: 0 });
  return L;
}

/* ---- WebGL ---- */
function initGL() {
  let gl = null;
  try { gl = cv.getContext("webgl", { preserveDrawingBuffer: true, antialias: true }) || cv.getContext("experimental-webgl", { preserveDrawingBuffer: true }); } catch (e) { gl = null; }
  if (!gl) return null;
  const vs = "attribute vec3 p; attribute vec3 n; uniform mat3 R; uniform vec3 c; uniform vec3 off; uniform vec3 k; varying vec3 vn;" +
    "void main(){ vec3 q = R*(p-c) + off; vn = R*n; gl_Position = vec4(q.x*k.x, q.y*k.y, -q.z*k.z, 1.0); }";
  const fs = "precision mediump float; uniform vec3 col; varying vec3 vn;" +
    "void main(){ vec3 n = normalize(vn); float l = 0.28 + 0.62*abs(n.z) + 0.12*max(n.y, 0.0); gl_FragColor = vec4(col*l, 1.0); }";
  function sh(t, src) { const s = gl.createShader(t); gl.shaderSource(s, src); gl.compileShader(s); if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s)); return s; }
  const pr = gl.createProgram();
  gl.attachShader(pr, sh(gl.VERTEX_SHADER, vs)); gl.attachShader(pr, sh(gl.FRAGMENT_SHADER, fs)); gl.linkProgram(pr);
  if (!gl.getProgramParameter(pr, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(pr));
  const u32 = gl.getExtension("OES_element_index_uint");
  const loc = { p: gl.getAttribLocation(pr, "p"), n: gl.getAttribLocation(pr, "n") };
  ["R", "c", "off", "k", "col"].forEach(function (u) { loc[u] = gl.getUniformLocation(pr, u); });
  function upload(m) {
    if (!m) return;
    let ix = m.ix, P = m.P, N = m.N, indexed = true;
    if (ix instanceof Uint32Array && !u32) {   /* no 32-bit indices: unroll */
      const p2 = new Float32Array(ix.length * 3), n2 = new Float32Array(ix.length * 3);
      for (let i = 0; i < ix.length; i++) for (let d = 0; d < 3; d++) { p2[3 * i + d] = P[3 * ix[i] + d]; n2[3 * i + d] = N[3 * ix[i] + d]; }
      P = p2; N = n2; indexed = false;
    }
    m.bp = gl.createBuffer(); gl.bindBuffer(gl.ARRAY_BUFFER, m.bp); gl.bufferData(gl.ARRAY_BUFFER, P, gl.STATIC_DRAW);
    m.bn = gl.createBuffer(); gl.bindBuffer(gl.ARRAY_BUFFER, m.bn); gl.bufferData(gl.ARRAY_BUFFER, N, gl.STATIC_DRAW);
    if (indexed) { m.bi = gl.createBuffer(); gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, m.bi); gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, ix, gl.STATIC_DRAW); }
    m.it = ix instanceof Uint32Array ? gl.UNSIGNED_INT : gl.UNSIGNED_SHORT;
  }
  S.forEach(function (s) { upload(s.ref); upload(s.pred); });
  return {
    draw: function () {
      const Lo = layout(), R = rot();
      gl.viewport(0, 0, cv.width, cv.height);
      gl.clearColor(0.10, 0.11, 0.13, 1); gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
      gl.enable(gl.DEPTH_TEST); gl.useProgram(pr);
      gl.uniformMatrix3fv(loc.R, false, new Float32Array([R[0][0], R[1][0], R[2][0], R[0][1], R[1][1], R[2][1], R[0][2], R[1][2], R[2][2]]));
      gl.uniform3fv(loc.c, D.c); gl.uniform3f(loc.k, Lo.kx, Lo.ky, Lo.zs);
      let tris = 0;
      passes().forEach(function (ps) {
        gl.uniform3f(loc.off, ps.dx * Lo.gap, 0, 0);
        S.forEach(function (s) {
          const m = s[ps.key];
          if (!s.on || !m) return;
          gl.uniform3fv(loc.col, s.col);
          gl.bindBuffer(gl.ARRAY_BUFFER, m.bp); gl.enableVertexAttribArray(loc.p); gl.vertexAttribPointer(loc.p, 3, gl.FLOAT, false, 0, 0);
          gl.bindBuffer(gl.ARRAY_BUFFER, m.bn); gl.enableVertexAttribArray(loc.n); gl.vertexAttribPointer(loc.n, 3, gl.FLOAT, false, 0, 0);
          if (m.bi) { gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, m.bi); gl.drawElements(gl.TRIANGLES, m.n, m.it, 0); }
          else gl.drawArrays(gl.TRIANGLES, 0, m.n);
          tris += m.n / 3;
        });
      });
      return tris;
    }, name: "WebGL"
  };
}

/* ---- Canvas 2D fallback: painter's algorithm ---- */
function init2D() {
  const ctx = cv.getContext("2d");
  if (!ctx) return null;
  return {
    draw: function () {
      const Lo = layout(), R = rot(), W = cv.width, H = cv.height, T = [];
      ctx.fillStyle = "rgb(26,28,33)"; ctx.fillRect(0, 0, W, H);
      passes().forEach(function (ps) {
        S.forEach(function (s) {
          const m = s[ps.key];
          if (!s.on || !m) return;
          const nv = m.P.length / 3, X = new Float32Array(nv), Y = new Float32Array(nv), Z = new Float32Array(nv);
          for (let i = 0; i < nv; i++) {
            const px = m.P[3 * i] - D.c[0], py = m.P[3 * i + 1] - D.c[1], pz = m.P[3 * i + 2] - D.c[2];
            const qx = R[0][0] * px + R[0][1] * py + R[0][2] * pz + ps.dx * Lo.gap;
            const qy = R[1][0] * px + R[1][1] * py + R[1][2] * pz, qz = R[2][0] * px + R[2][1] * py + R[2][2] * pz;
            X[i] = (qx * Lo.kx * 0.5 + 0.5) * W; Y[i] = (0.5 - qy * Lo.ky * 0.5) * H; Z[i] = qz;
          }
          for (let t = 0; t < m.n; t += 3) {
            const a = m.ix[t], b = m.ix[t + 1], c = m.ix[t + 2];
            const ux = X[b] - X[a], uy = Y[b] - Y[a], uz = Z[b] - Z[a], vx = X[c] - X[a], vy = Y[c] - Y[a], vz = Z[c] - Z[a];
            const n0 = uy * vz - uz * vy, n1 = uz * vx - ux * vz, n2 = ux * vy - uy * vx;
            const l = 0.28 + 0.72 * Math.abs(n2) / (Math.hypot(n0, n1, n2) || 1);
            T.push([(Z[a] + Z[b] + Z[c]) / 3, X[a], Y[a], X[b], Y[b], X[c], Y[c], s.col, l]);
          }
        });
      });
      T.sort(function (p, q) { return p[0] - q[0]; });
      for (const t of T) {
        const c = "rgb(" + Math.round(t[7][0] * t[8] * 255) + "," + Math.round(t[7][1] * t[8] * 255) + "," + Math.round(t[7][2] * t[8] * 255) + ")";
        ctx.fillStyle = c; ctx.strokeStyle = c; ctx.lineWidth = 0.5;
        ctx.beginPath(); ctx.moveTo(t[1], t[2]); ctx.lineTo(t[3], t[4]); ctx.lineTo(t[5], t[6]); ctx.closePath(); ctx.fill(); ctx.stroke();
      }
      return T.length;
    }, name: "Canvas 2D"
  };
}

let R = null;
const force2d = /[?&]renderer=2d/.test(location.search);
try { R = force2d ? null : initGL(); } catch (e) { console.log("WebGL failed: " + e.message); R = null; }
if (!R) R = init2D();
let pending = false;
function redraw() {
  if (!R) return;
  const n = R.draw();
  st.textContent = R.name + ": " + n + " triangles. Drag to rotate, wheel to zoom, double-click to reset.";
  document.title = D.title + " [rendered]";
  document.getElementById("ltag").style.display = mode === "side" ? "flex" : "none";
}
function later() { if (!pending) { pending = true; requestAnimationFrame(function () { pending = false; redraw(); }); } }

/* ---- controls ---- */
const list = document.getElementById("list");
S.forEach(function (s, i) {
  const row = document.createElement("label"), cb = document.createElement("input"), sw = document.createElement("span"), tx = document.createElement("span");
  cb.type = "checkbox"; cb.checked = true; cb.id = "s" + i;
  cb.addEventListener("change", function () { s.on = cb.checked; later(); });
  sw.className = "sw"; sw.style.background = "rgb(" + D.s[i].c.join(",") + ")";
  tx.textContent = s.name + (s.dice === null ? "" : "  (Dice " + s.dice.toFixed(3) + ")") + (s.ref ? "" : "  [no ref]") + (s.pred ? "" : "  [not predicted]");
  row.appendChild(cb); row.appendChild(sw); row.appendChild(tx); list.appendChild(row);
});
function setAll(v) { S.forEach(function (s, i) { s.on = v; document.getElementById("s" + i).checked = v; }); later(); }
document.getElementById("all").onclick = function () { setAll(true); };
document.getElementById("none").onclick = function () { setAll(false); };
document.querySelectorAll("input[name=mode]").forEach(function (r) { r.addEventListener("change", function () { mode = r.value; later(); }); });
let drag = null;
cv.addEventListener("mousedown", function (e) { drag = [e.clientX, e.clientY, yaw, pitch]; });
window.addEventListener("mouseup", function () { drag = null; });
window.addEventListener("mousemove", function (e) {
  if (!drag) return;
  yaw = drag[2] + (e.clientX - drag[0]) * 0.01;
  pitch = Math.max(-1.57, Math.min(1.57, drag[3] + (e.clientY - drag[1]) * 0.01));
  later();
});
cv.addEventListener("wheel", function (e) { e.preventDefault(); zoom = Math.max(0.2, Math.min(20, zoom * Math.exp(-e.deltaY * 0.0015))); later(); }, { passive: false });
cv.addEventListener("dblclick", function () { yaw = 0; pitch = 0.25; zoom = 1; later(); });
window.addEventListener("resize", later);
redraw();
})();

