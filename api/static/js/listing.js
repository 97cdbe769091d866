// The seller's listing page: suggestions while typing or dropping a photo, then confirmation.
//
// Every text the seller reads comes from the catalogues in /static/i18n/ (French by default).

import { ApiError, api } from "./api.js";
import { initBulk } from "./bulk.js";
import { $, debounce, h, replace, say } from "./dom.js";
import { language, onLanguageChange, percentText, setLanguage, t, translate } from "./i18n.js";
import { friendlyError, initSession } from "./session.js";

const DEBOUNCE_MS = 400;
const TOP_K = 5;
// Rows shown at once: a set larger than this means the model is unsure, and says so.
const SHOWN = 3;
// From this probability the best match reads "very likely"; below it, set members are "possible".
const LIKELY = 0.5;

const els = {
  app: $("#app"),
  form: $("#listing-form"),
  designation: $("#designation"),
  description: $("#description"),
  dropzone: $("#dropzone"),
  input: $("#image-input"),
  choose: $("#choose-image"),
  remove: $("#remove-image"),
  preview: $("#image-preview"),
  imageName: $("#image-name"),
  imageError: $("#image-error"),
  status: $("#suggestions-status"),
  error: $("#predict-error"),
  retry: $("#retry"),
  help: $("#suggestions-help"),
  unsure: $("#unsure"),
  list: $("#suggestions"),
  more: $("#show-more"),
  details: $("#details"),
  detailsList: $("#details-list"),
  confirmation: $("#confirmation"),
  summary: $("#quick-summary"),
  language: $("#language"),
  demoNote: $("#demo-note"),
  demoBadge: $("#demo-badge"),
};

const state = {
  image: null, // the File the seller chose
  previewUrl: null,
  result: null, // the last /predict answer
  controller: null, // aborts the request in flight when a newer one starts
  sequence: 0,
  saving: false,
  saved: null, // {row, product, updated} once this listing is saved
  locked: false, // after saving: the list and the form are locked until "change" or "new"
  expanded: false,
  lastError: null, // the raw service message of the last failure, for the details disclosure
  statusKey: "suggestions.empty",
};

const hasText = () => Boolean(els.designation.value.trim() || els.description.value.trim());

function setStatus(key, vars) {
  state.statusKey = key;
  say(els.status, key ? t(key, vars) : "");
}

function clearSuggestions(key = "suggestions.empty") {
  state.result = null;
  state.expanded = false;
  replace(els.list);
  els.more.hidden = true;
  els.help.hidden = true;
  els.unsure.hidden = true;
  els.summary.hidden = true;
  renderDetails();
  setStatus(key);
}

function clearErrors() {
  say(els.error, "");
  els.retry.hidden = true;
  state.lastError = null;
}

async function predict() {
  scheduled.cancel();
  if (state.locked) return;
  state.controller?.abort();
  clearErrors();
  if (!hasText() && !state.image) {
    clearSuggestions();
    return;
  }
  const sequence = ++state.sequence;
  const controller = new AbortController();
  state.controller = controller;
  const sentImage = state.image;
  const form = new FormData();
  form.set("designation", els.designation.value);
  form.set("description", els.description.value);
  form.set("top_k", String(TOP_K));
  if (sentImage) form.set("image", sentImage, sentImage.name || "photo");

  els.list.setAttribute("aria-busy", "true");
  setStatus("suggestions.updating");
  try {
    const result = await api("/predict", { method: "POST", form, signal: controller.signal });
    if (sequence !== state.sequence) return;
    state.expanded = false;
    render(result);
  } catch (error) {
    if (error.name === "AbortError" || sequence !== state.sequence) return;
    showPredictError(error, sentImage);
  } finally {
    if (sequence === state.sequence) els.list.removeAttribute("aria-busy");
  }
}

const scheduled = debounce(predict, DEBOUNCE_MS);

function predictErrorText(error) {
  if (error.status === 422 && /longer than/i.test(error.detail)) return t("error.text_too_long");
  if (error.status === 422 && /nothing to classify/i.test(error.detail)) return t("error.nothing");
  return friendlyError(error);
}

function showPredictError(error, sentImage) {
  if (error instanceof ApiError && error.status === 401) return; // the session module shows sign-in
  state.lastError = error instanceof ApiError ? error.detail : String(error);
  const aboutImage =
    error instanceof ApiError && sentImage && (error.status === 413 || (error.status === 422 && /image/i.test(error.detail)));
  if (aboutImage && sentImage === state.image) {
    // A photo the service cannot read: say why, drop it, and carry on with the text alone.
    setImage(null);
    say(els.imageError, error.status === 413 ? t("error.too_large") : t("error.unreadable"), "error");
    if (hasText()) {
      predict();
      return;
    }
    clearSuggestions();
    return;
  }
  const unavailable = error instanceof ApiError ? error.unavailable : true;
  clearSuggestions(unavailable ? "suggestions.unavailable" : "suggestions.none");
  say(els.error, predictErrorText(error), "error");
  els.retry.hidden = !unavailable;
  renderDetails();
}

function ranked(result) {
  // The ranked predictions, plus any member of the suggestion set ranked below top_k.
  const inSet = new Set(result.suggestions.map((s) => s.prdtypecode));
  const rows = result.predictions.map((p) => ({ ...p, inSet: inSet.has(p.prdtypecode) }));
  const shown = new Set(rows.map((r) => r.prdtypecode));
  for (const s of result.suggestions) if (!shown.has(s.prdtypecode)) rows.push({ ...s, inSet: true });
  return rows;
}

function tierOf(row) {
  if (row.inSet && row.probability >= LIKELY) return "likely";
  return row.inSet ? "possible" : "unlikely";
}

function render(result) {
  state.result = result;
  const rows = ranked(result);
  const setSize = result.suggestions.length;
  // The best match first; then the other members of the suggestion set, up to SHOWN rows;
  // everything else (less likely rows of the top 5, a large set's tail) waits behind "show more".
  const visible = Math.max(1, Math.min(SHOWN, rows.filter((r) => r.inSet).length));
  const chosenCode = state.saved?.row.prdtypecode;
  const items = rows.map((row, index) => {
    const tier = tierOf(row);
    const fill = h("span", { class: "fill" });
    fill.style.width = `${Math.max(1, Math.round(row.probability * 100))}%`;
    const chosen = row.prdtypecode === chosenCode;
    const button = h(
      "button",
      {
        type: "button",
        class: `suggestion tier-${tier}${row.inSet ? " in-set" : ""}${chosen ? " chosen" : ""}`,
        dataset: { code: row.prdtypecode, tier },
        disabled: state.locked,
        "aria-current": chosen ? "true" : null,
        onclick: () => confirm(row, button),
      },
      h("span", { class: "rank", "aria-hidden": "true" }, `${index + 1}`),
      h("span", { class: "name" }, row.category),
      h("span", { class: "prob" }, percentText(row.probability)),
      h("span", { class: "bar", "aria-hidden": "true" }, fill),
      h("span", { class: `tier ${tier}` }, t(`tier.${tier}`)),
    );
    const extra = index >= visible;
    return h("li", { hidden: extra && !state.expanded, class: extra ? "extra" : null }, button);
  });
  replace(els.list, items);
  const extra = rows.length - visible;
  els.more.hidden = extra <= 0 || state.expanded;
  els.more.setAttribute("aria-expanded", String(state.expanded));
  els.more.textContent = t("suggestions.more", { count: extra });
  els.help.hidden = state.locked;
  const top = rows[0];
  const unsure = setSize > SHOWN;
  els.unsure.hidden = !unsure;
  if (unsure) els.unsure.textContent = t("suggestions.unsure", { count: setSize });
  const vars = { category: top.category, percent: percentText(top.probability), count: setSize };
  if (tierOf(top) === "likely") setStatus("suggestions.status.likely", vars);
  else setStatus("suggestions.status.possible", vars);
  els.summary.textContent = t(unsure ? "summary.unsure" : "summary.best", vars);
  els.summary.hidden = false;
  renderDetails();
}

function renderDetails() {
  const result = state.result;
  const lines = [];
  if (result) {
    lines.push(t("details.model", { kind: t(`kind.${result.model}`), version: result.model_version }));
    lines.push(t("details.latency", { ms: Math.round(result.latency_ms) }));
    lines.push(t("details.request", { id: result.request_id }));
    const codes = [...els.list.querySelectorAll("li:not([hidden]) .suggestion")].map((b) => b.dataset.code);
    lines.push(t("details.codes", { codes: codes.join(", ") }));
  }
  if (state.saved) lines.push(t("details.product", { id: state.saved.product.product_id }));
  if (state.lastError) lines.push(t("details.message", { message: state.lastError }));
  replace(
    els.detailsList,
    lines.map((line) => h("li", {}, line)),
  );
  els.details.hidden = lines.length === 0;
}

function showMore() {
  state.expanded = true;
  for (const item of els.list.querySelectorAll("li.extra")) item.hidden = false;
  els.more.hidden = true;
  els.more.setAttribute("aria-expanded", "true");
  els.list.querySelector("li.extra button")?.focus();
  renderDetails();
}

async function confirm(row, button) {
  if (state.saving || state.locked || !state.result) return;
  state.saving = true;
  const buttons = [...els.list.querySelectorAll("button")];
  buttons.forEach((b) => (b.disabled = true));
  button.classList.add("saving");
  clearErrors();
  const form = new FormData();
  form.set("designation", els.designation.value);
  form.set("description", els.description.value);
  form.set("prdtypecode", String(row.prdtypecode));
  // The same request id every time: a change of mind updates the saved product (200).
  form.set("request_id", state.result.request_id);
  if (state.image) form.set("image", state.image, state.image.name || "photo");
  let saved = false;
  try {
    const product = await api("/products", { method: "POST", form });
    state.saved = { row, product, updated: Boolean(state.saved) };
    saved = true;
    lock(true);
    buttons.forEach((b) => {
      b.classList.toggle("chosen", b === button);
      if (b === button) b.setAttribute("aria-current", "true");
      else b.removeAttribute("aria-current");
    });
    showConfirmation();
  } catch (error) {
    if (error.status !== 401) {
      state.lastError = error.detail || String(error);
      say(els.error, t("saved.failed", { reason: friendlyError(error) }), "error");
      els.retry.hidden = true;
      renderDetails();
    }
  } finally {
    if (!saved) buttons.forEach((b) => (b.disabled = state.locked));
    button.classList.remove("saving");
    state.saving = false;
  }
}

/** After saving, the suggestion list and the form are locked: one listing, one product. */
function lock(locked) {
  state.locked = locked;
  for (const b of els.list.querySelectorAll("button")) b.disabled = locked;
  els.designation.readOnly = locked;
  els.description.readOnly = locked;
  els.choose.disabled = locked;
  els.remove.disabled = locked;
  els.help.hidden = locked || !state.result;
}

function showConfirmation() {
  const saved = state.saved;
  if (!saved) {
    hideConfirmation();
    return;
  }
  const title = els.designation.value.trim() || t("saved.untitled");
  replace(
    els.confirmation,
    h("p", { class: "confirmation-title" }, t(saved.updated ? "saved.updated" : "saved.title")),
    h("p", {}, t("saved.body", { title, category: saved.row.category })),
    h("p", { class: "fineprint" }, t("saved.locked")),
    h(
      "div",
      { class: "row" },
      h("button", { id: "new-listing", type: "button", class: "button primary", onclick: () => els.form.reset() }, t("saved.new")),
      h("button", { id: "change-category", type: "button", class: "button", onclick: changeCategory }, t("saved.change")),
    ),
  );
  els.confirmation.hidden = false;
  els.confirmation.focus();
  renderDetails();
}

function changeCategory() {
  // The list opens again; the next choice updates the saved product instead of adding one.
  lock(false);
  els.designation.readOnly = true; // the listing itself stays as saved
  els.description.readOnly = true;
  hideConfirmation();
  (els.list.querySelector(".suggestion.chosen") || els.list.querySelector(".suggestion"))?.focus();
}

function hideConfirmation() {
  els.confirmation.hidden = true;
  replace(els.confirmation);
}

function setImage(file) {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.image = file;
  state.previewUrl = file ? URL.createObjectURL(file) : null;
  els.preview.hidden = !file;
  els.remove.hidden = !file;
  els.imageName.hidden = !file;
  els.dropzone.classList.toggle("has-image", Boolean(file));
  if (file) {
    els.preview.src = state.previewUrl;
    els.preview.alt = t("form.photo.preview", { name: file.name || t("form.photo.chosen") });
    els.imageName.textContent = file.name || t("form.photo.pasted");
  } else {
    els.preview.removeAttribute("src");
    els.input.value = "";
  }
}

function chooseImage(file) {
  if (state.locked) return;
  say(els.imageError, "");
  setImage(file);
  predict();
}

/** Everything back to an empty listing. Runs inside the form's reset event, which clears the fields. */
function onReset() {
  state.controller?.abort();
  scheduled.cancel();
  state.sequence++;
  state.saved = null;
  lock(false);
  // The browser clears the fields right after this event; cleared here too, so that nothing
  // depends on the order in which it does so.
  els.designation.value = "";
  els.description.value = "";
  setImage(null);
  say(els.imageError, "");
  clearErrors();
  hideConfirmation();
  clearSuggestions();
  setTimeout(() => els.designation.focus());
}

function retranslate() {
  translate();
  els.language.value = language();
  if (state.result) render(state.result);
  else setStatus(state.statusKey);
  if (state.saved && !els.confirmation.hidden) showConfirmation();
  if (state.image) setImage(state.image);
  session.refresh();
}

async function showDemoNote() {
  try {
    const info = await api("/models");
    els.demoNote.hidden = !info.demo;
    els.demoBadge.hidden = !info.demo;
  } catch {
    // the note is informative only
  }
}

function wire() {
  for (const field of [els.designation, els.description]) {
    field.addEventListener("input", () => scheduled());
  }
  els.form.addEventListener("submit", (event) => {
    event.preventDefault(); // Enter in the title asks for suggestions now
    predict();
  });
  els.form.addEventListener("reset", onReset);
  els.retry.addEventListener("click", predict);
  els.more.addEventListener("click", showMore);
  els.choose.addEventListener("click", () => els.input.click());
  els.input.addEventListener("change", () => {
    if (els.input.files.length) chooseImage(els.input.files[0]);
  });
  els.remove.addEventListener("click", () => {
    setImage(null);
    say(els.imageError, "");
    els.choose.focus();
    predict();
  });
  els.language.value = language();
  els.language.addEventListener("change", () => setLanguage(els.language.value));
  onLanguageChange(retranslate);

  const zone = els.dropzone;
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      zone.classList.add("dragover");
    });
  }
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("dragover");
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragover");
    const file = event.dataTransfer?.files?.[0];
    if (file) chooseImage(file);
  });
  // A photo dropped next to the zone must not make the browser leave the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  // Pasting a copied image anywhere on the form works too.
  els.form.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) {
      event.preventDefault();
      chooseImage(file);
    }
  });
}

translate();
setStatus("suggestions.empty");
wire();
initBulk();
const session = initSession({
  onSignedIn() {
    els.app.hidden = false;
    els.designation.focus();
    showDemoNote();
    if ((hasText() || state.image) && !state.locked) predict();
  },
  onSignedOut() {
    state.controller?.abort();
    scheduled.cancel();
    els.app.hidden = true;
  },
});
