// ldct report viewer: raw int16 HU slices (zlib, base64) decoded in the browser and windowed on canvases.
// State comes from the controls; the URL hash (#case=0&slice=3&window=bone) operates those controls, so a
// link (or a headless browser) can open any view. After each render, <body data-rendered="case:slice:window"> and
// each canvas's data-sum (sum of its grey levels) say what is on screen.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("viewer-data").textContent);
  if (!D.cases.length) return;
  const root = document.getElementById("viewer");
  const caseSel = document.getElementById("v-case");
  const slider = document.getElementById("v-slice");
  const sliceLabel = document.getElementById("v-slice-label");
  const note = document.getElementById("v-note");
  const winButtons = Array.from(document.querySelectorAll("#v-windows button"));
  const state = { c: 0, k: 0, w: D.default_window };
  const cache = new Map();
  let generation = 0;

  // The hash drives the same controls a user would: it selects the case, presses a window button and
  // moves the slider (an "input" event), so opening #case=0&slice=3&window=bone exercises the UI itself.
  function applyHash() {
    const h = new URLSearchParams(location.hash.replace(/^#/, ""));
    if (h.has("case")) {
      caseSel.value = String(Math.min(Math.max(parseInt(h.get("case"), 10) || 0, 0), D.cases.length - 1));
      caseSel.dispatchEvent(new Event("change"));
    }
    const btn = winButtons.find((b) => b.dataset.window === h.get("window"));
    if (btn) btn.click();
    if (h.has("slice")) {
      slider.value = String(parseInt(h.get("slice"), 10) || 0); // the range input clamps to [min, max]
      slider.dispatchEvent(new Event("input"));
    }
  }

  async function inflate(b64) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Int16Array(await new Response(stream).arrayBuffer());
  }

  function slice(c, panel, k) {
    const key = c + "/" + panel + "/" + k;
    if (!cache.has(key)) cache.set(key, inflate(D.cases[c].panels[panel][k]));
    return cache.get(key);
  }

  function paint(canvas, values, w, h, lo, hi) {
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(w, h);
    const s = 255 / (hi - lo);
    let sum = 0;
    for (let i = 0, j = 0; i < values.length; i++, j += 4) {
      let v = (values[i] - lo) * s;
      v = v < 0 ? 0 : v > 255 ? 255 : Math.round(v);
      img.data[j] = img.data[j + 1] = img.data[j + 2] = v;
      img.data[j + 3] = 255;
      sum += v;
    }
    ctx.putImageData(img, 0, 0);
    canvas.dataset.sum = String(sum);
  }

  async function render() {
    const gen = ++generation;
    const cs = D.cases[state.c];
    const [lo, hi] = D.windows[state.w];
    const arrays = {};
    for (const p of cs.order) arrays[p] = await slice(state.c, p, state.k);
    if (gen !== generation) return; // a newer render started while decoding
    for (const p of cs.order) {
      paint(root.querySelector('canvas[data-panel="' + p + '"]'), arrays[p], cs.width, cs.height, lo, hi);
    }
    for (const kind of ["difference", "residual"]) {
      const pair = cs[kind];
      if (!pair) continue;
      const a = arrays[pair[0]], b = arrays[pair[1]];
      const d = new Int16Array(a.length);
      for (let i = 0; i < a.length; i++) d[i] = a[i] - b[i];
      paint(root.querySelector('canvas[data-panel="' + kind + '"]'), d, cs.width, cs.height, D.diff_window[0], D.diff_window[1]);
    }
    slider.value = String(state.k);
    sliceLabel.textContent = "slice " + (state.k + 1) + " / " + cs.slices + (cs.slice_labels[state.k] ? " \u2014 " + cs.slice_labels[state.k] : "");
    note.textContent = cs.slice_notes[state.k] || "";
    winButtons.forEach((b) => b.classList.toggle("active", b.dataset.window === state.w));
    document.body.dataset.rendered = state.c + ":" + state.k + ":" + state.w;
  }

  function setupCase() {
    const cs = D.cases[state.c];
    caseSel.value = String(state.c);
    slider.max = String(cs.slices - 1);
    state.k = Math.min(state.k, cs.slices - 1);
    root.querySelectorAll(".panel").forEach((el) => {
      const p = el.dataset.panel;
      const shown = (p === "difference" || p === "residual") ? !!cs[p] : cs.order.includes(p);
      el.style.display = shown ? "" : "none";
      const title = el.querySelector(".panel-title");
      if (shown && cs.titles[p]) title.textContent = cs.titles[p];
    });
  }

  caseSel.addEventListener("change", () => { state.c = parseInt(caseSel.value, 10); setupCase(); render(); });
  slider.addEventListener("input", () => { state.k = parseInt(slider.value, 10); render(); });
  winButtons.forEach((b) => b.addEventListener("click", () => { state.w = b.dataset.window; render(); }));
  document.addEventListener("keydown", (e) => {
    const z = D.cases[state.c].slices;
    if (e.key === "ArrowRight" || e.key === "ArrowUp") state.k = Math.min(state.k + 1, z - 1);
    else if (e.key === "ArrowLeft" || e.key === "ArrowDown") state.k = Math.max(state.k - 1, 0);
    else return;
    e.preventDefault();
    render();
  });
  window.addEventListener("hashchange", applyHash);

  if (typeof DecompressionStream === "undefined") {
    note.textContent = "This browser cannot decode the embedded images (needs DecompressionStream: Chrome 80+, Firefox 113+, Safari 16.4+).";
    return;
  }
  setupCase();
  render();
  applyHash();
})();
