# ruff: noqa: E501  (the page, its style and its script are strings; their lines are not Python)
"""The single page of `mmfm serve`: HTML, a style sheet and a script, each served by the app itself (nothing is
fetched from the network). No inline script or style, so the app's Content-Security-Policy can forbid both: a
crafted file's text that reached the page could not run. The script builds every user-derived string as text."""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mmfm</title>
<link rel="stylesheet" href="/static/app.css"></head><body>
<header><h1>mmfm</h1><span>try the models on your own scans · files stay on this machine and are deleted when the
app stops</span></header>
<main>
<div class="panel">
  <div class="row"><input type="file" id="file"> <span id="status">no image</span></div>
  <div id="error" role="alert"></div>
  <div class="row">window <select id="preset"></select>
    slice <input type="range" id="slice" min="0" max="0" value="0"> <span id="slice-label">-</span></div>
  <div class="row">prompt <label><input type="radio" name="mode" value="box" checked> box</label>
    <label><input type="radio" name="mode" value="pos"> point +</label>
    <label><input type="radio" name="mode" value="neg"> point -</label>
    <button id="clear">clear</button></div>
  <div id="viewer"><canvas id="view" width="512" height="512"></canvas></div>
  <div class="row"><button id="segment" disabled>Segment</button>
    <button id="predict" disabled>Trained segmenter</button>
    <a id="download" href="#" hidden download="mask.nii.gz">download mask</a>
    <a id="download-seg" href="#" hidden download="mask_seg.dcm">download DICOM SEG</a>
    <span id="result"></span></div>
</div>
<div class="side">
  <div class="panel"><b>Image-text model</b>
    <div class="row"><textarea id="texts" placeholder="one class name or report sentence per line"></textarea></div>
    <button id="zeroshot" disabled>Zero-shot / retrieve</button><div id="zs-out"></div></div>
  <div class="panel" id="chat-panel" hidden><b>Assistant</b> <span class="note">research output, not a diagnosis</span>
    <div id="chat-log"></div>
    <div class="row"><textarea id="chat-q" placeholder="ask a question"></textarea></div>
    <label id="chat-image-label"><input type="checkbox" id="chat-image"> about the image shown</label>
    <button id="chat-send">Ask</button> <button id="chat-clear">new chat</button></div>
  <div class="panel"><b>Saliency</b> <button id="explain" disabled>Explain</button>
    <div id="explain-out"></div><img id="explain-img" hidden alt="saliency"></div>
  <div class="panel"><b>Header (de-identified)</b><div id="header">-</div></div>
  <div class="panel"><b>Models</b><div id="models">-</div></div>
  <div class="panel" id="pacs-panel" hidden><b>PACS</b> <button id="pacs-list">list series</button>
    <div id="pacs-out"></div><button id="pacs-store" disabled>store the mask in the PACS (DICOM SEG)</button>
    <div id="pacs-stored"></div></div>
</div>
</main>
<script src="/static/app.js"></script></body></html>
"""

STYLE = r"""body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1c2430}
header{background:#17324d;color:#fff;padding:10px 20px}header h1{margin:0;font-size:20px}
header span{opacity:.75;font-size:13px}
main{display:flex;gap:16px;padding:14px 20px;flex-wrap:wrap}
.panel{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:10px 14px}
#viewer{position:relative;line-height:0}canvas{border:1px solid #ccd;cursor:crosshair;image-rendering:pixelated}
.row{margin:6px 0}button{padding:5px 12px;margin-right:6px}#error{color:#b00020;white-space:pre-wrap}
#result,#status{font-size:13px}table{border-collapse:collapse;font-size:12px}td{border:1px solid #dde2e8;
padding:2px 6px}textarea{width:260px;height:70px}.side{width:330px}
#explain-img{max-width:300px;display:block}[hidden]{display:none !important}
#chat-log{max-height:260px;overflow-y:auto;font-size:13px}#chat-log div{margin:4px 0;white-space:pre-wrap}
.note{font-size:12px;color:#8a5a00}
"""

SCRIPT = r"""// Every string that comes from a file, a model or the server is set as text (textContent, option.text, cells):
// never parsed as HTML, so a header field such as "<img onerror=...>" shows as those characters.
const $ = id => document.getElementById(id);
function el(tag, text) { const e = document.createElement(tag); if (text !== undefined) e.textContent = String(text); return e; }
function table(rows) { const t = el("table");
  for (const r of rows) { const tr = t.insertRow(); for (const c of r) tr.insertCell().textContent = String(c); }
  return t; }
let cur = null, scale = 1, box = null, drag = null, points = [], imgEl = new Image(), maskEl = null, models = [];
function err(msg) { $("error").textContent = msg || ""; }
async function api(url, opts) {
  const r = await fetch(url, opts);
  const type = r.headers.get("content-type") || "";
  if (!r.ok) { const j = type.includes("json") ? await r.json() : {error: r.statusText};
    throw new Error(j.error + (j.hint ? "\nhint: " + j.hint : "")); }
  return type.includes("json") ? r.json() : r;
}
async function init() {
  const m = await api("/api/models"); models = m.models;
  $("models").replaceChildren(...models.map(x => el("div", x.kind + ": " + x.name)));
  const auto = el("option", "auto"); auto.value = "";
  $("preset").replaceChildren(auto, ...m.presets.map(p => el("option", p)));
  $("pacs-panel").hidden = !m.pacs;
  const bot = models.find(x => x.kind === "assistant");
  $("chat-panel").hidden = !bot; $("chat-image-label").hidden = !(bot && bot.vision);
}
function has(kind) { return models.some(m => m.kind === kind); }
function k() { return cur && cur.spatial_dims === 3 ? parseInt($("slice").value) : 0; }
function draw() {
  const c = $("view"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (!cur) return;
  g.drawImage(imgEl, 0, 0, c.width, c.height);
  if (maskEl) g.drawImage(maskEl, 0, 0, c.width, c.height);
  g.strokeStyle = "#ffd400"; g.lineWidth = 2;
  const b = drag || box;
  if (b) g.strokeRect(b[0] * scale, b[1] * scale, (b[2] - b[0]) * scale, (b[3] - b[1]) * scale);
  for (const p of points) { g.fillStyle = p[2] ? "#00e070" : "#ff3050";
    g.beginPath(); g.arc(p[0] * scale, p[1] * scale, 4, 0, 7); g.fill(); }
}
async function loadSlice() {
  if (!cur) return;
  $("slice-label").textContent = cur.spatial_dims === 3 ? `${k()} / ${cur.slices - 1}` : "2D";
  const src = `/api/slice/${cur.id}?k=${k()}&preset=${encodeURIComponent($("preset").value)}`;
  await new Promise(res => { imgEl = new Image(); imgEl.onload = res; imgEl.src = src; });
  maskEl = null;
  if (cur.hasMask) await new Promise(res => { maskEl = new Image(); maskEl.onload = res;
    maskEl.onerror = () => { maskEl = null; res(); }; maskEl.src = `/api/maskslice/${cur.id}?k=${k()}&t=${Date.now()}`; });
  draw();
}
// a new image (an upload, or a series opened from the PACS)
async function openImage(what, request) {
  err(""); $("status").textContent = what; $("download").hidden = true; $("download-seg").hidden = true; $("result").textContent = "";
  $("pacs-store").disabled = true; $("pacs-stored").textContent = "";
  try {
    const info = await request();
    cur = info; box = null; points = [];
    const w = info.shape[0], h = info.shape[1];
    scale = Math.min(512 / w, 512 / h); const c = $("view"); c.width = Math.round(w * scale); c.height = Math.round(h * scale);
    $("slice").max = info.slices - 1; $("slice").value = Math.floor(info.slices / 2);
    $("status").textContent = `loaded: ${info.format}, ${info.modality}, ${info.shape.join("×")}`;
    const fields = Object.entries(info.header);
    $("header").replaceChildren(fields.length ? table(fields.map(([a, b]) => [a, JSON.stringify(b)])) : el("span", "(not DICOM)"));
    $("segment").disabled = !has("promptable"); $("predict").disabled = !has("segmenter"); $("zeroshot").disabled = !has("dual"); $("explain").disabled = !has("classification");
    await loadSlice();
  } catch (x) { cur = null; $("status").textContent = "no image"; err(x.message); draw(); }
}
$("file").addEventListener("change", async e => {
  const f = e.target.files[0]; if (!f) return;
  await openImage("uploading…", () => api("/api/upload", {method: "POST", body: f, headers: {"X-Filename": f.name}}));
});
$("pacs-list").addEventListener("click", async () => {
  err("");
  try { const r = await api("/api/pacs/series");
    $("pacs-out").replaceChildren(...r.series.map(s => { const b = el("button", `${s.modality} series ${s.number}, ${s.instances} instances, patient ${s.patient}`);
      b.addEventListener("click", () => openImage("retrieving from the PACS…", () => api("/api/pacs/open", {method: "POST",
        headers: {"Content-Type": "application/json"}, body: JSON.stringify({study: s.study, series: s.series})})));
      return b; }));
  } catch (x) { err(x.message); }
});
$("pacs-store").addEventListener("click", async () => {
  err("");
  try { const r = await api(`/api/pacs/store/${cur.id}`, {method: "POST"});
    $("pacs-stored").textContent = "stored as SEG series " + r.stored[0].series;
  } catch (x) { err(x.message); }
});
$("slice").addEventListener("input", loadSlice);
$("preset").addEventListener("change", loadSlice);
$("clear").addEventListener("click", () => { box = null; points = []; draw(); });
function pos(e) { const r = $("view").getBoundingClientRect();
  return [(e.clientX - r.left) / scale, (e.clientY - r.top) / scale]; }
function mode() { return document.querySelector('input[name="mode"]:checked').value; }
$("view").addEventListener("mousedown", e => { if (!cur) return; const p = pos(e);
  if (mode() === "box") drag = [p[0], p[1], p[0], p[1]]; else { points.push([p[0], p[1], mode() === "pos"]); draw(); } });
$("view").addEventListener("mousemove", e => { if (!drag) return; const p = pos(e); drag[2] = p[0]; drag[3] = p[1]; draw(); });
window.addEventListener("mouseup", () => { if (!drag) return;
  const b = [Math.min(drag[0], drag[2]), Math.min(drag[1], drag[3]), Math.max(drag[0], drag[2]), Math.max(drag[1], drag[3])];
  drag = null; box = (b[2] - b[0] > 1 && b[3] - b[1] > 1) ? b.map(v => Math.round(v)) : null; draw(); });
// a DICOM upload: its mask is also offered as a DICOM Segmentation (r.seg)
function seg(r) { const s = $("download-seg"); s.hidden = !r.seg; if (r.seg) s.href = r.seg; $("pacs-store").disabled = !r.seg; }
$("segment").addEventListener("click", async () => {
  if (!cur) return; err(""); $("result").textContent = "segmenting…";
  const body = {box: box, points: points.filter(p => p[2]).map(p => [Math.round(p[0]), Math.round(p[1])]),
    negative_points: points.filter(p => !p[2]).map(p => [Math.round(p[0]), Math.round(p[1])])};
  if (cur.spatial_dims === 3) body.slice = k();
  try {
    const r = await api(`/api/segment/${cur.id}`, {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body)});
    cur.hasMask = true;
    $("result").textContent = `mask: ${r.foreground} voxels` + (r.slices ? `, slices ${r.slices[0]}–${r.slices[1]}` : "");
    const d = $("download"); d.href = r.mask; d.download = cur.format === "raster" ? "mask.png" : "mask.nii.gz";
    d.hidden = false; seg(r); await loadSlice();
  } catch (x) { $("result").textContent = ""; err(x.message); }
});
$("predict").addEventListener("click", async () => {
  if (!cur) return; err(""); $("result").textContent = "segmenting the whole scan…";
  try {
    const r = await api(`/api/predict/${cur.id}`, {method: "POST", headers: {"Content-Type": "application/json"},
      body: "{}"});
    cur.hasMask = true;
    $("result").textContent = r.empty ? "the trained model predicts nothing on this scan" : `mask: ${r.foreground} voxels`;
    const d = $("download"); d.href = r.mask; d.download = "mask.nii.gz"; d.hidden = false; seg(r); await loadSlice();
  } catch (x) { $("result").textContent = ""; err(x.message); }
});
$("zeroshot").addEventListener("click", async () => {
  err(""); const texts = $("texts").value.split("\n").map(t => t.trim()).filter(t => t);
  try { const r = await api(`/api/zeroshot/${cur.id}`, {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({texts: texts, mode: texts.length > 1 ? "classify" : "retrieve", slice: cur.spatial_dims === 3 ? k() : null})});
    $("zs-out").replaceChildren(table(r.ranked.map(t => [t.text, Number(t.score).toFixed(3)])));
  } catch (x) { err(x.message); }
});
$("explain").addEventListener("click", async () => {
  err(""); $("explain-out").textContent = "explaining…";
  try { const r = await api(`/api/explain/${cur.id}`, {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({slice: cur.spatial_dims === 3 ? k() : null})});
    $("explain-out").textContent = "predicted: " + r.prediction.class;
    const im = $("explain-img"); im.src = r.overlay + "?t=" + Date.now(); im.hidden = false;
  } catch (x) { $("explain-out").textContent = ""; err(x.message); }
});
// the assistant: the app keeps no history; the page sends the conversation so far with each question
let chat = [];
$("chat-clear").addEventListener("click", () => { chat = []; $("chat-log").replaceChildren(); });
$("chat-send").addEventListener("click", async () => {
  const q = $("chat-q").value.trim(); if (!q) return; err("");
  const about = $("chat-image").checked && !$("chat-image-label").hidden && cur ? cur.id : null;
  const turns = chat.concat([{role: "user", content: q}]);
  $("chat-log").append(el("div", "you: " + q)); $("chat-q").value = ""; $("chat-send").disabled = true;
  try { const r = await api("/api/chat", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({messages: turns, id: about})});
    chat = turns.slice(turns.length - r.turns_used).concat([{role: "assistant", content: r.answer}]);
    $("chat-log").append(el("div", r.model + ": " + r.answer));
    if (r.turns_dropped) $("chat-log").append(el("div", `(${r.turns_dropped} earlier turns dropped: the model's context is full)`));
  } catch (x) { err(x.message); } finally { $("chat-send").disabled = false; }
});
init().catch(x => err(x.message));
"""
