// One build, live: its overview, today's budget, and a timeline of its events read from the
// gateway's SSE feed with a short-lived stream token (never the bearer in a URL). A cut
// connection is resumed after the last event shown (?after=); each event is shown once,
// whatever the reconnects (rows are keyed by the SSE id and the event's id).

import {
  $,
  ApiError,
  ENDED,
  FOUNDER,
  api,
  badge,
  count,
  el,
  money,
  seconds,
  signIn,
  signedOut,
  when,
} from "./common.js";

/** Every event type a build's feed carries (EventSource hears only the names it listens to). */
const TYPES = [
  "build.status_changed",
  "agent.iteration_completed",
  "tool.called",
  "tool.completed",
  "agent.screenshot_taken",
  "agent.sleeping",
  "agent.resumed",
  "snapshot.completed",
  "snapshot.failed",
  "build.completed",
  "build.failed",
  "budget.usage",
  "budget.warning",
  "budget.exhausted",
  "budget.wake",
  "build.summary",
];
const RETRY_MS = [1000, 2000, 4000, 8000, 15000];
/** When to read what the pipeline still does for a build after its end (the final snapshot,
 * the last usage): the server ends the stream at the build's end, so the page asks again. */
const AFTER_END_MS = [1500, 4000, 10000, 20000, 40000];

const buildId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[2] || "");
const state = {
  source: null,
  streamToken: null,
  tokenExpires: 0,
  lastId: null,
  seenIds: new Set(),
  seenEvents: new Set(),
  toolRows: new Map(),
  ended: false,
  // The status the feed ended the build with: the row may be a moment behind the feed (the
  // projection writes the feed first), so a late read of the row must not undo it.
  endStatus: null,
  endVersion: null,
  endReason: null,
  failures: 0,
  connections: 0,
  refreshTimer: null,
  usageTimer: null,
};

function connection(stateName, text) {
  const node = $("connection");
  node.dataset.state = stateName;
  node.dataset.connections = String(state.connections);
  node.textContent = text;
}

function fail(exc) {
  if (exc instanceof ApiError && exc.status === 401) {
    signedOut(FOUNDER, "Your session has expired: sign in again.");
    return true;
  }
  return false;
}

// ---- the overview: the build's row and today's budget, refreshed as events come ----

function showBuild(row) {
  const build = state.endStatus && !ENDED.has(row.status) ? { ...row, status: state.endStatus } : row;
  const status = $("status");
  status.replaceChildren(badge(build.status));
  $("goal").textContent = build.goal;
  $("iterations").textContent = count(build.iterations);
  $("tool-calls").textContent = count(build.tool_calls);
  $("tokens").textContent = `${count(build.input_tokens)} in / ${count(build.output_tokens)} out`;
  if (build.preview_url) showPreview(build.preview_url, build.build_version);
  $("cancel").hidden = ENDED.has(build.status);
  if (ENDED.has(build.status)) showOutcome(build);
}

/** A link to a preview: http(s) only (the address comes from the pipeline, not from us). */
function previewLink(url, text) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return el("span", null, url);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return el("span", null, url);
  const link = el("a", null, text);
  link.href = parsed.href;
  link.rel = "noopener noreferrer";
  link.target = "_blank";
  return link;
}

function showPreview(url, version) {
  const preview = $("preview");
  preview.replaceChildren(previewLink(url, url));
  if (version) preview.append(` (version ${version})`);
}

function showOutcome(build, summary) {
  $("outcome").hidden = false;
  const text = $("outcome-text");
  if (build.status === "ready") {
    text.textContent = `Completed: version ${build.build_version ?? state.endVersion ?? "?"}.`;
  } else if (build.status === "cancelled") {
    text.textContent = "Cancelled.";
  } else if (build.status === "failed") {
    text.textContent = `Failed: ${build.error || state.endReason || "no reason given"}`;
  } else {
    text.textContent = `Status: ${build.status}`;
  }
  if (summary) $("outcome-summary").textContent = summary;
}

async function refreshBuild() {
  try {
    showBuild(await api(`/v1/builds/${buildId}`));
  } catch (exc) {
    fail(exc);
  }
}

async function refreshUsage() {
  try {
    const usage = await api("/v1/usage?days=1");
    const today = usage.today;
    const meter = $("budget-meter");
    meter.max = Math.max(today.budget_micros, 1);
    meter.value = Math.min(today.spent_micros, meter.max);
    const resets = new Date(today.resets_at).toLocaleString();
    const share = today.budget_micros ? (100 * today.spent_micros) / today.budget_micros : 0;
    $("budget-text").textContent =
      `${money(today.spent_micros)} of ${money(today.budget_micros)} spent today ` +
      `(${share < 1 && share > 0 ? "<1" : Math.round(share)}%, ` +
      `${today.tier} plan); model calls ${today.gate === "open" ? "allowed" : "paused"}; ` +
      `resets ${resets}.`;
  } catch (exc) {
    if (!fail(exc)) $("budget-text").textContent = "Today's budget is not available.";
  }
}

function soon(timer, run, ms) {
  if (state[timer] !== null) return;
  state[timer] = setTimeout(() => {
    state[timer] = null;
    run();
  }, ms);
}

// ---- the timeline ----

function row(kind, data, ids, ...parts) {
  const item = el("li", `row kind-${kind}`);
  item.dataset.sseIds = ids.join(" ");
  item.append(when(data.occurred_at), ...parts);
  $("timeline").append(item);
  return item;
}

function what(text, strong) {
  const span = el("span", "what", text);
  if (strong !== undefined) span.append(" ", el("strong", null, strong));
  return span;
}

const RENDER = {
  "build.status_changed": (d, ids) =>
    row("status", d, ids, what("Status"), badge(d.status), d.reason ? el("span", "note", d.reason) : ""),
  "agent.iteration_completed": (d, ids) =>
    row(
      "iteration",
      d,
      ids,
      what("Iteration", String(d.iteration)),
      el(
        "span",
        "note",
        `done: ${count(d.tool_calls)} tool calls so far; ` +
          `${count(d.input_tokens)} tokens in / ${count(d.output_tokens)} out`,
      ),
    ),
  "tool.called": (d, ids) => {
    const item = row(
      "tool",
      d,
      ids,
      what("Tool", d.name),
      el("span", "note", `iteration ${d.iteration}`),
      el("span", "duration", "running…"),
      el("code", "input", d.input_preview),
    );
    state.toolRows.set(d.tool_use_id, item);
    return item;
  },
  "tool.completed": (d, ids) => {
    let item = state.toolRows.get(d.tool_use_id);
    if (item) {
      item.dataset.sseIds += ` ${ids.join(" ")}`;
      item.querySelector(".duration").textContent = seconds(d.duration_ms);
    } else {
      item = row("tool", d, ids, what("Tool", d.name), el("span", "duration", seconds(d.duration_ms)));
    }
    if (d.is_error) {
      item.classList.add("failed");
      item.querySelector(".duration").after(el("span", "badge status-failed", "error"));
    }
    const details = el("details", "output");
    details.append(el("summary", null, d.is_error ? "Error output" : "Output"));
    details.append(el("pre", null, d.output_preview || "(no output)"));
    item.append(details);
    return item;
  },
  "agent.screenshot_taken": (d, ids) => {
    const image = el("img", "screenshot");
    image.alt = `Screenshot of ${d.page_url || "the preview"}`;
    image.dataset.name = d.name;
    screenshotSrc(d.name).then(
      (src) => {
        image.src = src;
      },
      () => image.replaceWith(el("span", "note", "the screenshot could not be loaded")),
    );
    const size = d.width ? `${d.width}×${d.height}, ` : "";
    return row(
      "screenshot",
      d,
      ids,
      what("Screenshot"),
      el("span", "note", `${size}${count(d.bytes)} bytes, iteration ${d.iteration}`),
      image,
    );
  },
  "agent.sleeping": (d, ids) =>
    row(
      "sleep",
      d,
      ids,
      what("Sleeping"),
      el(
        "span",
        "note",
        `today's budget is spent; wakes at ${new Date(d.resets_at).toLocaleString()} at the ` +
          `latest (checkpoint ${d.checkpoint_seq})`,
      ),
    ),
  "agent.resumed": (d, ids) =>
    row("wake", d, ids, what("Resumed"), el("span", "note", `reason: ${d.reason}; from checkpoint ${d.checkpoint_seq}`)),
  "budget.wake": (d, ids) => row("wake", d, ids, what("Woken"), el("span", "note", `reason: ${d.reason}`)),
  "budget.warning": (d, ids) =>
    row(
      "budget",
      d,
      ids,
      what("Budget"),
      el("span", "note", `80% of today's budget spent (${money(d.spent_micros)} of ${money(d.budget_micros)})`),
    ),
  "budget.exhausted": (d, ids) =>
    row(
      "budget",
      d,
      ids,
      what("Budget"),
      el("span", "note", `today's budget is spent; it resets at ${new Date(d.resets_at).toLocaleString()}`),
    ),
  "budget.usage": (d, ids) => {
    const cached = d.cache_read_input_tokens ? `, ${count(d.cache_read_input_tokens)} read from cache` : "";
    return row(
      "usage",
      d,
      ids,
      what("Model call", d.model),
      el("span", "note", `${count(d.input_tokens)} tokens in / ${count(d.output_tokens)} out${cached}` +
        (d.outcome && d.outcome !== "ok" ? ` (${d.outcome})` : "")),
    );
  },
  "snapshot.completed": (d, ids) => {
    const text = d.skipped
      ? `skipped: ${d.skipped_reason || "snapshots are off"}`
      : `version ${d.version}: ${count(d.files)} files, ${count(d.bytes_uploaded)} bytes uploaded`;
    if (!d.skipped) $("snapshot").textContent = `version ${d.version} (${count(d.files)} files)`;
    return row("snapshot", d, ids, what("Snapshot"), el("span", "note", text));
  },
  "snapshot.failed": (d, ids) =>
    row("snapshot", d, ids, what("Snapshot failed"), el("span", "note", `${d.reason} (the build goes on)`)),
  "build.completed": (d, ids) => {
    const item = row("end", d, ids, what("Completed"), el("span", "note", `version ${d.build_version}`));
    if (d.preview_url) {
      item.append(previewLink(d.preview_url, "preview"));
      showPreview(d.preview_url, d.build_version);
    }
    item.append(el("p", "summary", d.summary));
    state.endVersion = d.build_version;
    showOutcome({ status: "ready", build_version: d.build_version }, d.summary);
    return item;
  },
  "build.failed": (d, ids) => {
    state.endReason = d.reason;
    return row("end", d, ids, what("Failed"), el("span", "note", d.reason));
  },
  "build.summary": (d, ids) =>
    row(
      "end",
      { occurred_at: d.finished_at },
      ids,
      what("Finished"),
      badge(d.status),
      el("span", "note", "the build's events have expired; this is its outcome"),
    ),
};

/** Where an <img> loads a screenshot from: the gateway's route, whichever store keeps it, with
 * this page's stream token (an <img> sends no Authorization header). Not the event's own URL:
 * an S3 store's is a presigned URL on the bucket's origin, where this page's
 * Content-Security-Policy lets no image load from (and which expires); and no token of the
 * page's is ever appended to a URL an event carries. */
async function screenshotSrc(name) {
  const route = `/v1/builds/${encodeURIComponent(buildId)}/screenshots/${encodeURIComponent(name)}`;
  return `${route}?${new URLSearchParams({ token: await streamToken() })}`;
}

/** The status an event ends the build with, or null when it does not end it. */
function ending(type, data) {
  if (type === "build.completed") return "ready";
  if (type === "build.failed") return "failed";
  if (type === "build.summary" || (type === "build.status_changed" && ENDED.has(data.status))) {
    return data.status;
  }
  return null;
}

function onEvent(message) {
  const id = message.lastEventId;
  let data;
  try {
    data = JSON.parse(message.data);
  } catch {
    return;
  }
  // Once per SSE id, and once per event (a feed rebuilt after Redis lost it has new entry ids
  // for the same events).
  if (id && state.seenIds.has(id)) return;
  if (data.event_id && state.seenEvents.has(data.event_id)) {
    if (id) state.seenIds.add(id);
    state.lastId = id || state.lastId;
    return;
  }
  if (id) state.seenIds.add(id);
  if (data.event_id) state.seenEvents.add(data.event_id);
  state.lastId = id || state.lastId;
  const render = RENDER[message.type];
  if (render) render(data, id ? [id] : []);
  if (message.type.startsWith("budget.")) {
    soon("usageTimer", refreshUsage, 1000);
  }
  soon("refreshTimer", refreshBuild, 500);
  const end = ending(message.type, data);
  if (end) {
    if (data.reason && !state.endReason) state.endReason = data.reason;
    finish(end);
  }
}

function finish(status) {
  if (state.ended) return; // a second end (the runner confirming a cancel) changes nothing
  state.ended = true;
  state.endStatus = status;
  if (state.source) state.source.close();
  state.source = null;
  $("status").replaceChildren(badge(status));
  if (status !== "ready") showOutcome({ status, error: state.endReason }); // "ready": its event did
  connection("ended", "The build has ended; everything it did is below.");
  $("cancel").hidden = true;
  // The row's last counters and the last usage land a moment after the feed's end.
  for (const ms of [0, 1500, 5000]) {
    setTimeout(() => {
      refreshBuild();
      refreshUsage();
    }, ms);
  }
  afterEnd(0);
}

/** Reads the feed after the build's end, a few times: each read returns what is there and
 * closes (the build is over, so nothing blocks); rows are deduplicated as always. */
function afterEnd(pass) {
  if (pass >= AFTER_END_MS.length) return;
  setTimeout(async () => {
    let token;
    try {
      token = await streamToken();
    } catch {
      afterEnd(pass + 1);
      return;
    }
    const query = new URLSearchParams({ token });
    if (state.lastId) query.set("after", state.lastId);
    const source = new EventSource(`/v1/builds/${encodeURIComponent(buildId)}/events?${query}`);
    for (const type of TYPES) source.addEventListener(type, onEvent);
    source.onerror = () => {
      source.close();
      $("timeline").dataset.afterEndPasses = String(pass + 1);
      afterEnd(pass + 1);
    };
  }, AFTER_END_MS[pass]);
}

// ---- the stream: a stream token, then EventSource; reconnects resume after the last id ----

async function streamToken() {
  if (state.streamToken && Date.now() < state.tokenExpires - 30000) return state.streamToken;
  const issued = await api("/v1/stream-tokens", { method: "POST", body: { build_id: buildId } });
  state.streamToken = issued.token;
  state.tokenExpires = Date.now() + issued.expires_in * 1000;
  return issued.token;
}

function retry() {
  const delay = RETRY_MS[Math.min(state.failures, RETRY_MS.length - 1)];
  state.failures += 1;
  connection("reconnecting", `Connection lost; reconnecting in ${Math.round(delay / 1000)} s…`);
  setTimeout(connect, delay);
}

async function connect() {
  if (state.ended) return;
  let token;
  try {
    token = await streamToken();
  } catch (exc) {
    if (!fail(exc)) retry();
    return;
  }
  const query = new URLSearchParams({ token });
  if (state.lastId) query.set("after", state.lastId);
  const source = new EventSource(`/v1/builds/${encodeURIComponent(buildId)}/events?${query}`);
  state.source = source;
  let opened = false;
  source.onopen = () => {
    opened = true;
    state.failures = 0;
    state.connections += 1;
    connection("live", "Live: new events appear as they happen.");
  };
  // Any error: this connection is done. The page, not the browser, reconnects, so each new
  // connection gets a fresh token when it needs one and resumes after the last event shown.
  source.onerror = () => {
    source.close();
    if (state.source === source) state.source = null;
    if (state.ended) return;
    if (!opened) state.streamToken = null; // refused (expired, say): ask for another
    retry();
  };
  for (const type of TYPES) source.addEventListener(type, onEvent);
}

// ---- cancel ----

async function cancel() {
  const button = $("cancel");
  if (!window.confirm("Cancel this build? The agent stops after its current step.")) return;
  button.disabled = true;
  try {
    await api(`/v1/builds/${buildId}/cancel`, { method: "POST" });
    $("cancel-result").textContent = "Cancel requested: the agent stops after its current step.";
  } catch (exc) {
    if (fail(exc)) return;
    $("cancel-result").textContent =
      exc.type === "build_finished" ? "The build had already ended." : `Cancel failed: ${exc.message}`;
    button.disabled = false;
  }
}

async function main() {
  await signIn();
  $("content").hidden = false;
  $("title").textContent = `Build ${buildId.slice(0, 8)}`;
  document.title = `Build ${buildId.slice(0, 8)} · Cofounder`;
  $("cancel").addEventListener("click", cancel);
  try {
    showBuild(await api(`/v1/builds/${buildId}`));
  } catch (exc) {
    if (fail(exc)) return;
    connection("ended", "");
    $("load-error").textContent =
      exc.status === 404 || exc.status === 422 ? "No such build of yours." : `Could not load the build: ${exc.message}`;
    return;
  }
  refreshUsage();
  connection("connecting", "Connecting…");
  connect();
}

main();
