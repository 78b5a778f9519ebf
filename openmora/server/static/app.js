// The page of `openmora serve`: plan a request (POST /plan), submit it (POST /jobs), watch its events
// (EventSource on /jobs/{id}/events), play its video, revise or cancel it, open earlier jobs (GET /jobs).
// Every text that comes from a user, the LLM or the server goes in with textContent, never as HTML.
"use strict";

const FINISHED = new Set(["done", "failed", "cancelled"]);
const $ = (id) => document.getElementById(id);

// The open job: its id, its event stream, the last event seen, the previews shown.
let current = null;

// ----- helpers -------------------------------------------------------------------------------------------------
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// fetch with the session cookie; a 4xx's {"error"} becomes an ApiError; 401 shows the login form.
async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  let body = null;
  try {
    body = await response.json();
  } catch (_err) {
    body = null;
  }
  if (response.status === 401 && path !== "/login") showLogin();
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return body;
}

function bubble(kind, ...nodes) {
  const box = el("div", null, `bubble ${kind}`);
  for (const node of nodes) box.append(typeof node === "string" ? el("p", node) : node);
  $("chat").append(box);
  box.scrollIntoView({ block: "nearest" });
  return box;
}

function showError(err) {
  bubble("error", `Error: ${err && err.message ? err.message : String(err)}`);
}

function seconds(value) {
  if (typeof value !== "number") return "unknown";
  return value < 90 ? `${value.toFixed(1)} s` : `${(value / 60).toFixed(1)} min`;
}

// ----- login -------------------------------------------------------------------------------------------------------
function showLogin() {
  $("login").hidden = false;
  $("token").focus();
}

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    await api("/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: $("token").value }),
    });
    $("token").value = "";
    $("login").hidden = true;
    await refreshJobs();
  } catch (err) {
    $("login-error").textContent = err.message;
  }
}

// ----- planning and submitting ------------------------------------------------------------------------------------
function requestFields() {
  return {
    request: $("request").value.trim(),
    task: $("task").value,
    segments: $("segments").value.trim(),
    best_of: $("best-of").value.trim(),
    image: $("image").files.length > 0,
    videos: $("video-files").files.length,
  };
}

function planView(plan) {
  const box = el("div", null, "plan");
  box.append(el("p", `Plan (${plan.source}, ${plan.steps.length} steps), estimate ${seconds(plan.estimate_s)}`, "plan-head"));
  const list = el("ol", null, "plan-steps");
  for (const step of plan.steps) {
    const args = Object.entries(step.args || {})
      .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
      .join(", ");
    list.append(el("li", `${step.agent}: ${step.tool}${args ? ` (${args})` : ""}`));
  }
  box.append(list);
  return box;
}

// The request last shown in the chat, so that submitting it after "Show plan" does not repeat it.
let shown = null;

function showRequest(fields) {
  const text = fields.request || `(${fields.task}, no words)`;
  if (shown !== text) bubble("user", text);
  shown = text;
}

async function showPlan() {
  const fields = requestFields();
  showRequest(fields);
  try {
    const plan = await api("/plan", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(fields),
    });
    bubble("assistant", planView(plan));
  } catch (err) {
    showError(err);
  }
}

async function submit(event) {
  event.preventDefault();
  const fields = requestFields();
  showRequest(fields);
  shown = null;
  const form = new FormData();
  form.append("task", fields.task);
  if (fields.request) form.append("prompt", fields.request);
  if (fields.segments) form.append("segments", fields.segments);
  if (fields.best_of) form.append("best_of", fields.best_of);
  if ($("image").files.length) form.append("image", $("image").files[0]);
  for (const file of $("video-files").files) form.append("video", file);
  $("submit").disabled = true;
  try {
    const job = await api("/jobs", { method: "POST", body: form });
    bubble("system", `Submitted job ${job.id} (${job.task})`);
    $("request").value = "";
    await openJob(job.id, false);
    await refreshJobs();
  } catch (err) {
    showError(err);
  } finally {
    $("submit").disabled = false;
  }
}

// ----- one job -----------------------------------------------------------------------------------------------------
function closeStream() {
  if (current && current.source) {
    current.source.close();
    current.source = null;
  }
}

function resetJobView() {
  for (const id of ["transcript", "previews"]) $(id).replaceChildren();
  $("progress").max = 1;
  $("progress").value = 0;
  $("progress-label").textContent = "";
  const video = $("video");
  video.hidden = true;
  video.removeAttribute("src");
  video.load();
  $("report").hidden = true;
}

async function openJob(jobId, fromList = true) {
  closeStream();
  current = { id: jobId, source: null, lastSeq: 0, previews: new Set(), video: null };
  if (fromList) $("chat").replaceChildren();
  resetJobView();
  $("job").hidden = false;
  markCurrent();
  try {
    const job = await api(`/jobs/${encodeURIComponent(jobId)}`);
    if (fromList) {
      bubble("user", job.prompt || `(${job.task})`);
      for (const step of (job.steps || []).slice(1)) bubble("user", step.text || "(revision)");
    }
    render(job);
    watch();
  } catch (err) {
    showError(err);
  }
}

function render(job) {
  if (!current || current.id !== job.id) return;
  $("job-title").textContent = `${job.prompt || job.task} (${job.id})`;
  $("job-status").textContent = job.status;
  $("job-status").dataset.status = job.status;
  $("cancel").hidden = FINISHED.has(job.status);
  $("revise-form").hidden = job.status !== "done";
  if (job.error) $("job-status").textContent = `${job.status}: ${job.error}`;
  if (job.status === "done") {
    $("progress").value = $("progress").max;
  }
  if (job.final && FINISHED.has(job.status)) {
    // A revision makes a new final.mp4 at the same URL (rewritten while it runs): the finish time tells the
    // versions apart, and the video is only (re)loaded once the job has finished.
    const url = `${job.final}?v=${encodeURIComponent(job.finished || "")}`;
    const video = $("video");
    if (current.video !== url) {
      current.video = url;
      video.src = url;
      video.load();
    }
    video.hidden = false;
  }
  const report = $("report");
  if ((job.files || []).includes("report.html")) {
    report.href = `/jobs/${encodeURIComponent(job.id)}/files/report.html`;
    report.hidden = false;
  }
}

function transcriptText(line) {
  const who = line.agent || line.type;
  if (line.type === "tool_call") {
    const outputs = (line.outputs || []).join(", ") || "nothing";
    const failed = line.error ? ` failed: ${line.error === true ? "yes" : line.error}` : "";
    return `${who}: ${line.tool} -> ${outputs}${failed}`;
  }
  if (line.type === "run_start") return `${who}: run started (${line.task || "task"})`;
  if (line.type === "run_end") return `${who}: run ${line.status || "ended"}${line.error ? `: ${line.error}` : ""}`;
  const words = line.text || line.result || line.type;
  return `${who}: ${typeof words === "string" ? words : JSON.stringify(words)}`;
}

function addLine(text, className) {
  const item = el("li", text, className);
  $("transcript").append(item);
}

const handlers = {
  transcript(record) {
    const line = record.event || {};
    addLine(transcriptText(line), `line ${line.type || ""}`);
  },
  chat(record) {
    addLine(`${record.source}: ${record.text}`, "line chat");
  },
  progress(record) {
    const total = Number(record.total) || 1;
    $("progress").max = total;
    $("progress").value = Math.min(Number(record.step) || 0, total);
    $("progress-label").textContent = `${record.stage || record.role}: ${record.step}/${total}`;
  },
  load(record) {
    const what = record.phase === "end" ? `loaded ${record.role}` : `loading ${record.role}`;
    $("progress-label").textContent = what;
  },
  encode(_record) {},
  compile(record) {
    // The server's first job on a machine compiles the models' hot blocks while it renders (seconds from the cache).
    if (record.phase === "queued" && !current.compiling) {
      current.compiling = true;
      const how = record.background === false ? "from the compile cache" : "in the background, rendering meanwhile";
      addLine(`compiling the models' hot blocks ${how}`, "line note");
    }
    if (record.phase === "end" && record.ok === false) addLine(`${record.name} stays eager: its compile failed`, "line note");
    $("progress-label").textContent =
      record.phase === "end" ? `compiled ${record.name} (${record.pending} left)` : `compiling ${record.name}`;
  },
  preview(record) {
    const uri = String(record.image || "");
    if (current.previews.has(record.id) || !uri.startsWith("data:image/png;base64,")) return;
    current.previews.add(record.id);
    const figure = el("figure", null, "preview");
    const img = document.createElement("img");
    img.src = uri;
    img.alt = `${record.id} (${record.tool || record.kind})`;
    figure.append(img, el("figcaption", `${record.id} ${record.tool || ""}`));
    $("previews").append(figure);
  },
  async status(record) {
    $("job-status").textContent = record.status;
    $("job-status").dataset.status = record.status;
    $("cancel").hidden = FINISHED.has(record.status);
    if (record.status === "queued" && record.step === "revise") addLine("user: revision queued", "line note");
    if (FINISHED.has(record.status)) await refresh();
    refreshJobs();
  },
};

async function refresh() {
  if (!current) return null;
  const job = await api(`/jobs/${encodeURIComponent(current.id)}`);
  render(job);
  return job;
}

function watch() {
  if (!current || current.source) return;
  const mine = current;
  const source = new EventSource(`/jobs/${encodeURIComponent(mine.id)}/events`);
  mine.source = source;
  for (const type of Object.keys(handlers)) {
    source.addEventListener(type, (event) => {
      if (current !== mine) return;
      let record;
      try {
        record = JSON.parse(event.data);
      } catch (_err) {
        return;
      }
      // a stream opened again (after a revision) replays what was shown already
      if (Number(record.seq) <= mine.lastSeq) return;
      mine.lastSeq = Number(record.seq);
      handlers[type](record);
    });
  }
  // The server ends the stream once the job has nothing queued or running; EventSource would reconnect forever.
  source.onerror = async () => {
    if (current !== mine) return source.close();
    try {
      const job = await refresh();
      if (job && FINISHED.has(job.status)) {
        source.close();
        if (mine.source === source) mine.source = null;
      }
    } catch (_err) {
      source.close();
      if (mine.source === source) mine.source = null;
    }
  };
}

async function revise(event) {
  event.preventDefault();
  const text = $("revise-text").value.trim();
  if (!text || !current) return;
  bubble("user", text);
  try {
    const job = await api(`/jobs/${encodeURIComponent(current.id)}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text }),
    });
    $("revise-text").value = "";
    render(job);
    watch();
  } catch (err) {
    showError(err);
  }
}

async function cancel() {
  if (!current) return;
  try {
    const job = await api(`/jobs/${encodeURIComponent(current.id)}/cancel`, { method: "POST" });
    bubble("system", `Cancel: ${job.cancel}`);
    render(job);
  } catch (err) {
    showError(err);
  }
}

// ----- the job list ------------------------------------------------------------------------------------------------
function markCurrent() {
  for (const item of $("jobs").children) {
    item.classList.toggle("current", Boolean(current) && item.dataset.id === current.id);
  }
}

async function refreshJobs() {
  let listed;
  try {
    listed = await api("/jobs");
  } catch (_err) {
    return;
  }
  const items = listed.jobs.map((job) => {
    const item = el("li", null, "job-item");
    item.dataset.id = job.id;
    const button = el("button", null, "job-open");
    button.type = "button";
    button.append(el("span", job.prompt || `(${job.task})`, "job-prompt"), el("span", job.status, "job-status"));
    button.title = `${job.id}, ${job.task}, ${job.created}`;
    button.addEventListener("click", () => openJob(job.id));
    item.append(button);
    return item;
  });
  $("jobs").replaceChildren(...items);
  markCurrent();
}

function newRequest() {
  closeStream();
  current = null;
  $("job").hidden = true;
  $("chat").replaceChildren();
  markCurrent();
  $("request").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("composer").addEventListener("submit", submit);
  $("plan-button").addEventListener("click", showPlan);
  $("revise-form").addEventListener("submit", revise);
  $("cancel").addEventListener("click", cancel);
  $("new-request").addEventListener("click", newRequest);
  refreshJobs();
  setInterval(() => {
    if (!document.hidden && $("login").hidden) refreshJobs();
  }, 5000);
});
