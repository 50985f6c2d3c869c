// alframe labelling page: shows the current batch one sample at a time; every answer is
// POSTed at once and saved by the server before it replies.
// The session cookie (HttpOnly, set by the printed ?token= URL) goes with every request; writes
// send JSON, the X-Requested-With header and the version of the state they were based on. A 409
// (another tab or the run changed the batch) brings the current state, which is shown at once.
"use strict";

let state = null;      // last /api/state reply
let selected = null;   // class number selected for the current sample
let shownIndex = null; // sample index on screen
let busy = false;

const $ = (id) => document.getElementById(id);

function message(text) { $("message").textContent = text || ""; }

class HttpError extends Error {
  constructor(status, data) {
    super(data.error || `HTTP ${status}`);
    this.status = status;
    this.state = data.state || null;  // 409: the current state
  }
}

async function call(method, path, body) {
  const opts = { method, credentials: "same-origin", cache: "no-store",
                 headers: { "X-Requested-With": "alframe" } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new HttpError(res.status, data);
  return data;
}

function render(s) {
  state = s;
  const labelling = s.status === "labelling";
  $("labelling").hidden = !labelling;
  $("waiting").hidden = labelling;
  if (s.status === "waiting") {
    $("progress-text").textContent = "waiting for the next batch";
    $("waiting-text").textContent = "The model is training on your labels; the next batch appears here by itself.";
  } else if (s.status === "finished") {
    $("progress-text").textContent = "the experiment has finished";
    $("waiting-text").textContent = "All done: the experiment has finished. You can close this page.";
  }
  const answeredList = $("answered");
  answeredList.innerHTML = "";
  if (!s.items) { $("progress-bar").value = 0; return; }
  const p = s.progress;
  $("progress-bar").max = p.total;
  $("progress-bar").value = p.done;
  if (s.status === "complete") {
    $("progress-text").textContent = `round ${s.round}: all ${p.total} answered, training the next model`;
    $("waiting-text").textContent = "Batch complete. The model is training on your labels; the next batch appears here by itself.";
  }
  for (const it of s.items) {
    if (it.answer === null) continue;
    const li = document.createElement("li");
    li.textContent = `#${it.index}: ` + (it.answer === "skip" ? "skipped" : s.classes[it.answer]);
    answeredList.appendChild(li);
  }
  if (!labelling) return;
  $("progress-text").textContent = `round ${s.round}: sample ${p.done + 1} of ${p.total}`;
  $("undo").disabled = !s.can_undo;
  const item = s.items.find((it) => it.index === s.current);
  if (shownIndex !== item.index) {
    shownIndex = item.index;
    selected = item.suggested;
    const img = $("sample-image");
    img.src = item.image;
    img.dataset.index = item.index;
    $("sample-index").textContent = `#${item.index}`;
  }
  $("suggestion").textContent = item.suggested === null
    ? "No suggestion yet (no model in round 0): pick a class."
    : `Model suggests ${s.classes[item.suggested]} (${Math.round(item.confidence * 100)}% confident); press Enter to accept.`;
  const box = $("classes");
  if (box.children.length !== s.classes.length) {
    box.innerHTML = "";
    s.classes.forEach((name, k) => {
      const b = document.createElement("button");
      b.textContent = name;
      b.dataset.class = k;
      b.title = k < 10 ? `key ${k}` : name;
      b.addEventListener("click", () => answer(k));
      box.appendChild(b);
    });
  }
  for (const b of box.children) {
    const k = Number(b.dataset.class);
    b.setAttribute("aria-pressed", String(k === selected));
    b.classList.toggle("suggested", k === item.suggested);
  }
}

async function refresh() {
  try { render(await call("GET", "/api/state")); }
  catch (e) {
    $("progress-text").textContent = e instanceof HttpError && e.status === 403
      ? "not authorised: open the link with ?token=... that the run printed"
      : "the labelling server is not reachable (the run stopped or finished)";
  }
}

async function post(path, body) {
  if (busy || !state) return;
  busy = true;
  try { render(await call("POST", path, { ...body, version: state.version })); message(""); }
  catch (e) {
    if (e instanceof HttpError && e.state) {  // stale page: show what the server has now
      shownIndex = null;
      render(e.state);
    }
    message(e.message);
  }
  finally { busy = false; }
}

function answer(k) {
  if (state && state.status === "labelling") post("/api/label", { index: shownIndex, label: k });
}

function skip() {
  if (state && state.status === "labelling") post("/api/skip", { index: shownIndex });
}

function undo() {
  shownIndex = null;  // show the undone sample with its suggestion again
  post("/api/undo", {});
}

$("accept").addEventListener("click", () => {
  if (selected === null) message("no class selected: click a class or press its number");
  else answer(selected);
});
$("skip").addEventListener("click", skip);
$("undo").addEventListener("click", undo);

document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (!state || state.status !== "labelling") return;
  const n = state.classes.length;
  if (/^[0-9]$/.test(ev.key) && Number(ev.key) < n) { answer(Number(ev.key)); }
  else if (ev.key === "Enter") {
    ev.preventDefault();
    if (selected === null) message("no class selected: press a class number or use the arrows");
    else answer(selected);
  }
  else if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
    const step = ev.key === "ArrowRight" ? 1 : -1;
    selected = selected === null ? 0 : (selected + step + n) % n;
    render(state);
  }
  else if (ev.key === "s") skip();
  else if (ev.key === "u" || ev.key === "Backspace") undo();
  else return;
  ev.preventDefault();
});

refresh();
setInterval(() => { if (!busy && (!state || state.status !== "labelling")) refresh(); }, 1000);
