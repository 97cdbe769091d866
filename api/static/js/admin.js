// The admin console: users, prediction logs, model versions, and quality and traffic charts.

import { ApiError, api } from "./api.js";
import { classChart, histogramChart, hitChart, latencyChart, trafficChart, trendChart } from "./charts.js";
import { $, day, h, number, percent, replace, say, when } from "./dom.js";
import { initSession } from "./session.js";

const PAGE_SIZE = 25;
const METRICS = [
  ["accuracy", "Accuracy", percent],
  ["weighted_f1", "Weighted F1", (v) => (v === undefined || v === null ? "–" : Number(v).toFixed(3))],
  ["top5", "Top-5 accuracy", percent],
  ["set_coverage", "Set coverage", percent],
  ["set_mean_size", "Mean set size", (v) => number(v, 2)],
];
const KINDS = [
  ["text", "Text model"],
  ["image", "Image model"],
  ["fusion", "Fusion model"],
];

const state = { me: null, users: [], categories: new Map(), logOffset: 0, logTotal: 0 };

/* ---------- helpers ---------- */

function errorText(error) {
  return error instanceof ApiError ? error.detail : String(error);
}

/** Run an API call for a section; refusals and failures are shown in that section's message. */
async function guarded(message, work) {
  try {
    return await work();
  } catch (error) {
    if (error.status === 401) return undefined; // the session module shows sign-in
    if (error.status === 403) refuse(error.detail);
    else say(message, errorText(error), "error");
    return undefined;
  }
}

function confirmDialog({ title, body, action }) {
  const dialog = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  $("#confirm-body").textContent = body;
  $("#confirm-ok").textContent = action;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

function refuse(detail) {
  $("#console").hidden = true;
  $("#refused").hidden = false;
  say($("#refused-message"), detail, "error");
}

/* ---------- users ---------- */

async function loadUsers() {
  const users = await guarded($("#users-message"), () => api("/users", { query: { limit: 500 } }));
  if (!users) return;
  state.users = users;
  const rows = users.map((user) => {
    const self = user.id === state.me.id;
    const action = self
      ? h("span", { class: "hint" }, "you")
      : h(
          "button",
          {
            type: "button",
            class: `button small${user.is_active ? " danger" : ""}`,
            onclick: () => setActive(user, !user.is_active),
            "aria-label": `${user.is_active ? "Deactivate" : "Reactivate"} ${user.username}`,
          },
          user.is_active ? "Deactivate" : "Reactivate",
        );
    return h(
      "tr",
      { dataset: { username: user.username } },
      h("th", { scope: "row" }, user.username),
      h("td", { dataset: { label: "Role" } }, user.role),
      h(
        "td",
        { dataset: { label: "Status" } },
        h("span", { class: `badge ${user.is_active ? "ok" : "muted"}` }, user.is_active ? "active" : "deactivated"),
      ),
      h("td", { class: "nowrap", dataset: { label: "Created" } }, when(user.created_at)),
      h("td", {}, action),
    );
  });
  replace($("#users-table tbody"), rows);

  const select = $("#filter-user");
  const chosen = select.value;
  replace(
    select,
    h("option", { value: "" }, "All users"),
    users.map((u) => h("option", { value: String(u.id) }, u.username)),
  );
  select.value = users.some((u) => String(u.id) === chosen) ? chosen : "";
}

async function setActive(user, active) {
  const message = $("#users-message");
  if (!active) {
    const ok = await confirmDialog({
      title: `Deactivate ${user.username}?`,
      body: "They will not be able to sign in or get predictions until an admin reactivates them.",
      action: "Deactivate",
    });
    if (!ok) return;
  }
  const updated = await guarded(message, () => api(`/users/${user.id}`, { method: "PATCH", json: { is_active: active } }));
  if (!updated) return;
  say(message, `${updated.username} is ${updated.is_active ? "active again" : "deactivated"}.`, "ok");
  await loadUsers();
}

async function createUser(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const message = $("#users-message");
  if (!form.checkValidity()) {
    const invalid = form.querySelector(":invalid");
    say(message, `${invalid.labels[0].textContent.trim()}: ${invalid.validationMessage}`, "error");
    invalid.focus();
    return;
  }
  const body = {
    username: form.elements.username.value.trim(),
    password: form.elements.password.value,
    role: form.elements.role.value,
  };
  const user = await guarded(message, () => api("/register", { method: "POST", json: body }));
  if (!user) return;
  form.reset();
  say(message, `Created ${user.role} ${user.username}.`, "ok");
  await loadUsers();
}

/* ---------- logs ---------- */

function localToIso(value) {
  return value ? new Date(value).toISOString() : undefined;
}

async function loadLogs() {
  const form = $("#log-filters");
  const message = $("#logs-message");
  const query = {
    user_id: form.elements.user_id.value,
    model_kind: form.elements.model_kind.value,
    outcome: form.elements.outcome.value,
    since: localToIso(form.elements.since.value),
    until: localToIso(form.elements.until.value),
    offset: state.logOffset,
    limit: PAGE_SIZE,
  };
  const page = await guarded(message, () => api("/logs", { query }));
  if (!page) return;
  say(message, "");
  state.logTotal = page.total;
  const rows = page.items.map((log) => {
    const top = log.top_prdtypecode;
    const category = top === null ? "–" : `${state.categories.get(top) || top} (${top})`;
    const product = log.product
      ? h(
          "button",
          {
            type: "button",
            class: "button small",
            onclick: () => showProduct(log.product),
            "aria-label": `Product saved from request ${log.request_id}`,
          },
          "Saved product",
        )
      : "–";
    return h(
      "tr",
      { dataset: { requestId: log.request_id } },
      h("td", { class: "nowrap", dataset: { label: "Time" } }, when(log.created_at)),
      h("td", { dataset: { label: "User" } }, log.username || (log.user_id === null ? "anonymous" : `#${log.user_id}`)),
      h(
        "td",
        { class: "title-cell", dataset: { label: "Title typed" } },
        log.designation || h("span", { class: "hint" }, log.inputs?.designation_chars ? "cleared" : "–"),
      ),
      h("td", { dataset: { label: "Model" } }, log.model_kind || "–"),
      h("td", { class: "mono", dataset: { label: "Version" } }, log.model_version || "–"),
      h("td", { dataset: { label: "Top category" } }, category),
      h("td", { class: "num", dataset: { label: "Prob." } }, percent(log.top_probability)),
      h("td", { class: "num", dataset: { label: "Set" } }, log.suggestion_size ?? "–"),
      h("td", { class: "num", dataset: { label: "Latency" } }, log.latency_ms === null ? "–" : `${Math.round(log.latency_ms)} ms`),
      h(
        "td",
        { title: log.error || "", dataset: { label: "Outcome" } },
        h("span", { class: `badge ${log.outcome === "ok" ? "ok" : "warn"}` }, log.outcome),
        log.outcome === "ok" ? null : ` ${log.status_code}`,
      ),
      h("td", { dataset: { label: "Product" } }, product),
    );
  });
  const tbody = $("#logs-table tbody");
  if (rows.length) replace(tbody, rows);
  else replace(tbody, h("tr", {}, h("td", { colspan: "11", class: "empty" }, "No prediction matches these filters.")));
  const first = page.total ? page.offset + 1 : 0;
  const last = page.offset + page.items.length;
  $("#logs-range").textContent = `${first}–${last} of ${page.total}`;
  $("#logs-total").textContent = `${page.total} matching`;
  $("#logs-prev").disabled = page.offset === 0;
  $("#logs-next").disabled = last >= page.total;
}

async function showProduct(productId) {
  const product = await guarded($("#logs-message"), () => api(`/products/${encodeURIComponent(productId)}`));
  if (!product) return;
  const category = state.categories.get(product.prdtypecode) || product.prdtypecode;
  await confirmDialog({
    title: `Product ${product.product_id}`,
    body: [
      `Title: ${product.designation || "–"}`,
      `Category: ${category} (${product.prdtypecode})`,
      `Label status: ${product.label_status}`,
      `Saved: ${when(product.created_at)}`,
    ].join("\n"),
    action: "Close",
  });
}

/* ---------- models ---------- */

/* The shadowed version (api/shadow.py) and both live top-1 hit rates on the same confirmed requests. */
function shadowLine(shadow) {
  if (!shadow || !shadow.version) return null;
  const live = shadow.live || {};
  const rate = (value) => (value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`);
  const figures = live.confirmed
    ? `live top-1 hit rate ${rate(live.shadow_top1_rate)} vs production ${rate(live.production_top1_rate)} on ${live.confirmed} confirmed requests`
    : "no confirmed request answered in shadow yet";
  return [
    h("dt", {}, "Shadow"),
    h("dd", {}, `${shadow.version} on ${Math.round(shadow.share * 100)}% of requests since ${when(shadow.since)}: ${figures}`),
  ];
}

async function loadModels() {
  const message = $("#models-message");
  const info = await guarded(message, () => api("/models"));
  if (!info) return;
  const loaded = info.loaded || {};
  const production = info.production?.version ?? info.production ?? null;
  replace(
    $("#models-status"),
    h("dt", {}, "Serving"),
    h("dd", {}, loaded.version ? `${loaded.version} (from ${loaded.source}, since ${when(loaded.loaded_at)})` : "no model loaded"),
    loaded.fallback ? [h("dt", {}, "Fallback"), h("dd", { class: "error-text" }, loaded.reason)] : null,
    h("dt", {}, "Production"),
    h("dd", {}, production || "none promoted yet"),
    h("dt", {}, "Model store"),
    h("dd", {}, `${info.store} — ${info.store_reachable ? "reachable" : "unreachable"}`),
    loaded.last_error ? [h("dt", {}, "Last error"), h("dd", { class: "error-text" }, loaded.last_error)] : null,
    shadowLine(info.shadow),
  );

  const history = info.rollback_target || null;
  const rollbackButton = $("#rollback");
  rollbackButton.disabled = !history;
  rollbackButton.title = history ? `Production returns to ${history}` : "No earlier production version to return to";
  state.rollbackTarget = history;
  const demo = info.demo;
  $("#models-demo").hidden = !demo;

  const versions = [...info.versions]
    .filter((v) => v.complete !== false)
    .sort(
      (a, b) =>
        String(b.published_at || b.created_at).localeCompare(String(a.published_at || a.created_at)) ||
        b.version.localeCompare(a.version),
    );
  const head = h(
    "tr",
    {},
    h("th", { scope: "col" }, "Metric"),
    versions.map((v) =>
      h(
        "th",
        { scope: "col", class: "num", dataset: { version: v.version } },
        h("span", { class: "mono" }, v.version),
        v.version === production ? [h("br"), h("span", { class: "badge ok" }, "production")] : null,
        v.version === loaded.version ? [" ", h("span", { class: "badge muted" }, "serving")] : null,
      ),
    ),
  );
  replace($("#versions-table thead"), head);

  const body = [];
  for (const [kind, kindName] of KINDS) {
    if (!versions.some((v) => v.metrics?.[kind])) continue;
    body.push(h("tr", {}, h("th", { scope: "rowgroup", colspan: String(versions.length + 1), class: "group" }, kindName)));
    for (const [key, label, format] of METRICS) {
      const values = versions.map((v) => v.metrics?.[kind]?.[key]);
      const numeric = values.filter((v) => typeof v === "number");
      // Higher is better for every figure but the set size, where smaller sets help sellers more.
      const differ = new Set(numeric).size > 1;
      const best = differ ? (key === "set_mean_size" ? Math.min(...numeric) : Math.max(...numeric)) : null;
      body.push(
        h(
          "tr",
          {},
          h("th", { scope: "row" }, label),
          values.map((v) => h("td", { class: `num${v === best ? " best" : ""}` }, format(v))),
        ),
      );
    }
  }
  body.push(
    h(
      "tr",
      {},
      h("th", { scope: "row" }, "Training data"),
      versions.map((v) => {
        const data = v.training_data || {};
        return h(
          "td",
          { class: "num", title: data.detail || "" },
          data.demo ? h("span", { class: "badge warn" }, "demo") : null,
          data.demo ? " " : null,
          data.label || "unknown",
        );
      }),
    ),
    h(
      "tr",
      {},
      h("th", { scope: "row" }, "Trained"),
      versions.map((v) => h("td", { class: "num" }, when(v.created_at || v.published_at))),
    ),
    h(
      "tr",
      {},
      h("th", { scope: "row" }, "Published"),
      versions.map((v) => h("td", { class: "num" }, when(v.published_at || v.created_at))),
    ),
    h(
      "tr",
      {},
      h("th", { scope: "row" }, "Action"),
      versions.map((v) =>
        h(
          "td",
          { class: "num" },
          v.version === production
            ? h("span", { class: "hint" }, "in production")
            : h(
                "button",
                { type: "button", class: "button small", onclick: () => promote(v.version), "aria-label": `Promote ${v.version}` },
                "Promote…",
              ),
        ),
      ),
    ),
  );
  if (!versions.length) {
    replace($("#versions-table tbody"), h("tr", {}, h("td", { class: "empty" }, "The model store holds no version yet.")));
  } else {
    replace($("#versions-table tbody"), body);
  }
}

async function promote(version) {
  const ok = await confirmDialog({
    title: `Promote ${version}?`,
    body: `Version ${version} becomes the production model and this API loads it now. You can roll back afterwards.`,
    action: "Promote",
  });
  if (!ok) return;
  await registryAction(`Promoting ${version}…`, () => api(`/models/${encodeURIComponent(version)}/promote`, { method: "POST" }));
}

async function rollback() {
  const target = state.rollbackTarget;
  if (!target) return;
  const ok = await confirmDialog({
    title: `Roll back production to ${target}?`,
    body: `Production returns to ${target}, the previously promoted version, and this API loads it now.`,
    action: "Roll back",
  });
  if (!ok) return;
  await registryAction("Rolling back…", () => api("/models/rollback", { method: "POST" }));
}

async function reloadModel() {
  await registryAction("Reloading…", () => api("/models/reload", { method: "POST" }));
}

async function registryAction(pending, call) {
  const message = $("#models-message");
  say(message, pending);
  const result = await guarded(message, call);
  if (!result) return;
  const production = result.production ?? result.version;
  const detail = String(result.detail || "done").replace(/\.+$/, "");
  say(message, `${production ? `Production: ${production}; ` : ""}${detail}.`, "ok");
  await loadModels();
}

/* ---------- quality and traffic ---------- */

async function loadStats() {
  const message = $("#stats-message");
  const seconds = Number($("#stats-window").value);
  const until = new Date();
  const since = new Date(until.getTime() - seconds * 1000);
  const stats = await guarded(message, () =>
    api("/stats", { query: { since: since.toISOString(), until: until.toISOString() } }),
  );
  if (!stats) return;
  say(message, "");
  const all = stats.hit_rate.find((r) => r.model_kind === "all");
  const failed = stats.requests - (stats.outcomes.ok || 0);
  replace(
    $("#stats-summary"),
    h("dt", {}, "Requests"),
    h("dd", {}, `${number(stats.requests)} (${number(failed)} failed)`),
    h("dt", {}, "Confirmed by sellers"),
    h(
      "dd",
      {},
      all
        ? `${number(all.confirmed)}: top 1 right ${percent(all.top1_rate)}, in the suggestion set ${percent(all.suggestion_rate)}`
        : "none yet",
    ),
  );
  try {
    trafficChart($("#chart-traffic"), stats);
    latencyChart($("#chart-latency"), stats.latency);
    classChart($("#chart-classes"), stats.classes);
    hitChart($("#chart-hits"), stats.hit_rate);
  } catch (error) {
    say(message, errorText(error), "error");
  }
}

/* ---------- monitoring reports (pipelines/monitor.py writes them) ---------- */

const fixed = (digits) => (v) => (typeof v === "number" ? v.toFixed(digits) : "–");
const signedPercent = (v) => (typeof v === "number" ? `${v > 0 ? "+" : ""}${(v * 100).toFixed(1)} pts` : "–");

/** [label, value, threshold text] rows of a report's figures; absent figures are skipped. */
function reportFigures(figures) {
  const t = figures.thresholds || {};
  const live = figures.live_accuracy || {};
  const confidence = figures.confidence || {};
  const drift = figures.drift || {};
  const inputs = figures.inputs || {};
  const rows = [
    ["Requests (answered)", `${number(figures.requests)} (${number(figures.answered)})`, ""],
    ["Confirmed by sellers", number(live.confirmed), live.judged === false ? live.note || "not judged" : ""],
    ["Live top-1 hit rate", percent(live.top1_hit_rate, 1), t.min_top1_hit_rate !== undefined ? `alert below ${percent(t.min_top1_hit_rate)}` : ""],
    [
      `Live top-${live.k ?? t.top_k ?? "k"} hit rate`,
      percent(live.topk_hit_rate, 1),
      t.min_topk_hit_rate !== undefined ? `alert below ${percent(t.min_topk_hit_rate)}` : "",
    ],
    ["Mean confidence (median)", `${fixed(3)(confidence.mean)} (${fixed(3)(confidence.median)})`, t.min_mean_confidence !== undefined ? `alert below ${t.min_mean_confidence}` : ""],
    ["Predicted-class PSI", fixed(3)(drift.class_psi), drift.judged === false ? drift.note || "not judged" : t.max_class_psi !== undefined ? `alert above ${t.max_class_psi}` : ""],
    ["Text-length PSI", fixed(3)(drift.text_length_psi), drift.judged === false ? "" : t.max_input_psi !== undefined ? `alert above ${t.max_input_psi}` : ""],
    ["Share of requests with an image", percent(inputs.image_share, 1), ""],
    ["Image share vs training", signedPercent(drift.image_share_delta), drift.judged === false ? "" : t.max_image_share_delta !== undefined ? `alert beyond ±${(t.max_image_share_delta * 100).toFixed(0)} pts` : ""],
    ["Mean text length (chars)", number(inputs.text_chars_mean), ""],
  ];
  return rows;
}

function flagText(flag) {
  if (typeof flag === "string") return flag;
  if (flag && typeof flag === "object") return [flag.detail || flag.message, flag.code && `(${flag.code})`].filter(Boolean).join(" ");
  return String(flag);
}

async function loadReport() {
  const box = $("#report");
  const charts = $("#report-charts");
  let latest;
  try {
    latest = await api("/monitoring/reports/latest");
  } catch (error) {
    if (error.status === 401) return;
    charts.hidden = true;
    const why = error.status === 404 || error.status === 0 || !error.status ? "" : ` (${error.detail})`;
    replace(
      box,
      h(
        "p",
        { class: "empty" },
        `No report yet${why}. The monitoring DAG writes one every day at 02:00 UTC; `,
        "“Run the quality report now” makes one for the last 24 hours, and so does ",
        h("code", {}, "python -m pipelines.monitor --start ISO --end ISO"),
        " from a shell.",
      ),
    );
    return;
  }
  const figures = latest?.report || {};
  const flags = latest?.flags || [];
  replace(
    box,
    h(
      "dl",
      { class: "kv" },
      h("dt", {}, "Window"),
      h("dd", {}, `${when(latest.window_start)} → ${when(latest.window_end)}`),
      h("dt", {}, "Model version"),
      h("dd", { class: "mono" }, latest.model_version || "–"),
      h("dt", {}, "Status"),
      h("dd", {}, h("span", { class: `badge ${latest.flagged ? "warn" : "ok"}` }, latest.flagged ? "flagged" : "no alert")),
    ),
    flags.length
      ? h("ul", { class: "message flags", dataset: { kind: "warn" } }, flags.map((f) => h("li", {}, flagText(f))))
      : null,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { id: "report-table" },
        h("caption", { class: "visually-hidden" }, "Figures of the latest monitoring report"),
        h(
          "thead",
          {},
          h("tr", {}, h("th", { scope: "col" }, "Figure"), h("th", { scope: "col", class: "num" }, "Value"), h("th", { scope: "col" }, "Rule")),
        ),
        h(
          "tbody",
          {},
          reportFigures(figures).map(([label, value, rule]) =>
            h("tr", {}, h("th", { scope: "row" }, label), h("td", { class: "num" }, value), h("td", { class: "hint" }, rule)),
          ),
        ),
      ),
    ),
  );

  const histogram = figures.confidence?.histogram;
  const confidenceFigure = $("#chart-confidence").closest("figure");
  const hasHistogram = histogram && typeof histogram === "object" && Object.keys(histogram).length > 0;
  confidenceFigure.hidden = !hasHistogram;
  if (hasHistogram) {
    const labels = Object.keys(histogram);
    const counts = Object.values(histogram);
    histogramChart(
      $("#chart-confidence"),
      labels,
      counts,
      `Top-1 probability of ${counts.reduce((a, b) => a + b, 0)} answered requests, in ${labels.length} bins.`,
    );
  }
  const trend = await drawTrend();
  charts.hidden = !hasHistogram && !trend;
}

async function drawTrend() {
  const figure = $("#chart-trend").closest("figure");
  let page;
  try {
    page = await api("/monitoring/reports", { query: { limit: 30 } });
  } catch {
    figure.hidden = true;
    return false;
  }
  const items = [...(page?.items || [])].reverse(); // oldest first
  if (items.length < 2) {
    figure.hidden = true;
    return false;
  }
  figure.hidden = false;
  const pick = (fn) => items.map((r) => (typeof fn(r.report || {}) === "number" ? fn(r.report || {}) : null));
  const series = [
    { label: "top-1 hit rate", values: pick((f) => f.live_accuracy?.top1_hit_rate) },
    { label: "top-k hit rate", values: pick((f) => f.live_accuracy?.topk_hit_rate) },
    { label: "mean confidence", values: pick((f) => f.confidence?.mean) },
    { label: "class PSI (right axis)", values: pick((f) => f.drift?.class_psi), axis: "y2" },
  ].filter((s) => s.values.some((v) => v !== null));
  trendChart(
    $("#chart-trend"),
    items.map((r) => day(r.window_end)),
    series,
    `${series.map((s) => s.label).join(", ")} over the last ${items.length} reports.`,
  );
  return true;
}

async function runReport() {
  const button = $("#run-report");
  const message = $("#report-message");
  button.disabled = true;
  say(message, "Building the report of the last 24 hours…");
  const report = await guarded(message, () => api("/monitoring/reports/run", { method: "POST" }));
  button.disabled = false;
  if (!report) return;
  say(message, `Report of ${when(report.window_start)} → ${when(report.window_end)} stored.`, "ok");
  await loadReport();
}

/* ---------- wiring ---------- */

async function loadCategories() {
  try {
    const categories = await api("/categories", { auth: false });
    state.categories = new Map(categories.map((c) => [c.prdtypecode, c.category]));
  } catch {
    state.categories = new Map(); // codes are shown instead of names
  }
}

async function start(me) {
  state.me = me;
  if (me.role !== "admin") {
    refuse(`This console is for administrators. You are signed in as ${me.username} (${me.role}).`);
    return;
  }
  $("#refused").hidden = true;
  $("#console").hidden = false;
  await loadCategories();
  await loadUsers();
  state.logOffset = 0;
  await Promise.all([loadLogs(), loadModels(), loadStats(), loadReport()]);
}

function wire() {
  $("#create-user").addEventListener("submit", createUser);
  const filters = $("#log-filters");
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    state.logOffset = 0;
    loadLogs();
  });
  filters.addEventListener("reset", () => {
    state.logOffset = 0;
    setTimeout(loadLogs); // after the browser has cleared the fields
  });
  $("#logs-prev").addEventListener("click", () => {
    state.logOffset = Math.max(0, state.logOffset - PAGE_SIZE);
    loadLogs();
  });
  $("#logs-next").addEventListener("click", () => {
    state.logOffset += PAGE_SIZE;
    loadLogs();
  });
  $("#rollback").addEventListener("click", rollback);
  $("#run-report").addEventListener("click", runReport);
  $("#reload-model").addEventListener("click", reloadModel);
  $("#stats-window").addEventListener("change", loadStats);
  $("#stats-refresh").addEventListener("click", () => Promise.all([loadStats(), loadReport()]));
}

wire();
initSession({
  onSignedIn: start,
  onSignedOut() {
    $("#console").hidden = true;
    $("#refused").hidden = true;
  },
});
