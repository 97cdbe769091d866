// Bulk listings: a CSV of designation/description rows -> POST /predict/batch in chunks -> a CSV.

import { ApiError, api } from "./api.js";
import { $, say } from "./dom.js";
import { onLanguageChange, t, waitText } from "./i18n.js";
import { friendlyError } from "./session.js";

export const CHUNK = 50; // items per /predict/batch call (the API accepts BATCH_MAX_ITEMS, 100 by default)
export const MAX_ROWS = 1000; // per upload
const MAX_WAITS = 20; // rate-limit pauses before giving up

/** Parse CSV text (RFC 4180 quoting; "," or ";" as the separator, guessed from the header). */
export function parseCsv(text) {
  const source = text.replace(/^\uFEFF/, "");
  const firstLine = source.split(/\r?\n/, 1)[0] || "";
  const separator = firstLine.split(";").length > firstLine.split(",").length ? ";" : ",";
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (quoted) {
      if (c === '"' && source[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === separator) {
      row.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && source[i + 1] === "\n") i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else field += c;
  }
  if (field || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows.filter((r) => r.some((cell) => cell.trim() !== ""));
}

function csvCell(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\r\n;]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

export function toCsv(rows) {
  return `\uFEFF${rows.map((r) => r.map(csvCell).join(",")).join("\r\n")}\r\n`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function certainty(answer) {
  const top = answer.predictions[0];
  const inSet = answer.suggestions.some((s) => s.prdtypecode === top.prdtypecode);
  if (inSet && top.probability >= 0.5) return t("tier.likely");
  return inSet ? t("tier.possible") : t("tier.unlikely");
}

export function initBulk() {
  const form = $("#bulk-form");
  const file = $("#bulk-file");
  const start = $("#bulk-start");
  const box = $("#bulk-status");
  const progress = $("#bulk-progress");
  const message = $("#bulk-message");
  const download = $("#bulk-download");
  const error = $("#bulk-error");
  let url = null;
  let last = null; // the message shown, re-rendered on a language change

  function show(key, vars) {
    last = [key, vars];
    say(message, t(key, vars));
  }
  onLanguageChange(() => last && show(...last));

  async function sendChunk(items) {
    for (let waits = 0; ; waits++) {
      try {
        return await api("/predict/batch", { method: "POST", json: { items, top_k: 5 } });
      } catch (err) {
        const retryable = err instanceof ApiError && (err.status === 429 || err.status === 503);
        if (!retryable || waits >= MAX_WAITS) throw err;
        const seconds = err.retryAfter || 5;
        show("bulk.waiting", { wait: waitText(seconds) });
        await sleep(seconds * 1000);
      }
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    say(error, "");
    download.hidden = true;
    if (url) URL.revokeObjectURL(url);
    const chosen = file.files[0];
    if (!chosen) {
      say(error, t("bulk.error.empty"), "error");
      return;
    }
    let rows;
    try {
      rows = parseCsv(await chosen.text());
    } catch (err) {
      say(error, t("bulk.error.read", { reason: String(err) }), "error");
      return;
    }
    const header = (rows.shift() || []).map((name) => name.trim().toLowerCase());
    const col = { designation: header.indexOf("designation"), description: header.indexOf("description") };
    if (col.designation < 0 && col.description < 0) {
      say(error, t("bulk.error.columns"), "error");
      return;
    }
    if (!rows.length) {
      say(error, t("bulk.error.empty"), "error");
      return;
    }
    if (rows.length > MAX_ROWS) {
      say(error, t("bulk.error.too_many", { count: rows.length, max: MAX_ROWS }), "error");
      return;
    }
    const listings = rows.map((r) => ({
      designation: col.designation >= 0 ? r[col.designation] || "" : "",
      description: col.description >= 0 ? r[col.description] || "" : "",
    }));
    start.disabled = true;
    box.hidden = false;
    progress.max = listings.length;
    progress.value = 0;
    const out = [
      [
        "designation",
        "description",
        "prdtypecode",
        t("bulk.column.category"),
        "probability",
        t("bulk.column.certainty"),
        t("bulk.column.alternatives"),
        "request_id",
        t("bulk.column.error"),
      ],
    ];
    let ok = 0;
    let failed = 0;
    show("bulk.running", { done: 0, total: listings.length });
    try {
      for (let i = 0; i < listings.length; i += CHUNK) {
        const items = listings.slice(i, i + CHUNK);
        const answer = await sendChunk(items);
        answer.items.forEach((item, k) => {
          const { designation, description } = items[k];
          if (item.predictions) {
            ok++;
            const top = item.predictions[0];
            const others = item.suggestions
              .filter((s) => s.prdtypecode !== top.prdtypecode)
              .map((s) => `${s.category} (${s.prdtypecode})`)
              .join(" | ");
            out.push([designation, description, top.prdtypecode, top.category, top.probability.toFixed(3), certainty(item), others, item.request_id, ""]);
          } else {
            failed++;
            out.push([designation, description, "", "", "", "", "", item.request_id, item.detail]);
          }
        });
        progress.value = Math.min(listings.length, i + items.length);
        show("bulk.running", { done: progress.value, total: listings.length });
      }
      url = URL.createObjectURL(new Blob([toCsv(out)], { type: "text/csv;charset=utf-8" }));
      download.href = url;
      download.download = `${chosen.name.replace(/\.csv$/i, "") || "annonces"}-categories.csv`;
      download.hidden = false;
      show("bulk.done", { ok, failed });
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) say(error, friendlyError(err), "error");
    } finally {
      start.disabled = false;
    }
  });
}
