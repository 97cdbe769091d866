// The seller's listing page: suggestions while typing or dropping a photo, then confirmation.

import { ApiError, api } from "./api.js";
import { $, debounce, h, percent, replace, say } from "./dom.js";
import { initSession } from "./session.js";

const DEBOUNCE_MS = 400;
const TOP_K = 5;
const KIND_NAMES = { text: "text", image: "image", fusion: "text + image" };

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
  list: $("#suggestions"),
  more: $("#show-more"),
  modelInfo: $("#model-info"),
  confirmation: $("#confirmation"),
};

const state = {
  image: null, // the File the seller chose
  previewUrl: null,
  result: null, // the last /predict answer
  controller: null, // aborts the request in flight when a newer one starts
  sequence: 0,
  saving: false,
};

const hasText = () => Boolean(els.designation.value.trim() || els.description.value.trim());

function clearSuggestions(message) {
  state.result = null;
  replace(els.list);
  els.more.hidden = true;
  els.help.hidden = true;
  els.modelInfo.textContent = "";
  say(els.status, message);
}

function clearErrors() {
  say(els.error, "");
  els.retry.hidden = true;
}

async function predict() {
  scheduled.cancel();
  state.controller?.abort();
  clearErrors();
  if (!hasText() && !state.image) {
    clearSuggestions("Type a title or add a photo to see suggestions.");
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
  say(els.status, "Updating suggestions…");
  try {
    const result = await api("/predict", { method: "POST", form, signal: controller.signal });
    if (sequence !== state.sequence) return;
    render(result);
  } catch (error) {
    if (error.name === "AbortError" || sequence !== state.sequence) return;
    showPredictError(error, sentImage);
  } finally {
    if (sequence === state.sequence) els.list.removeAttribute("aria-busy");
  }
}

const scheduled = debounce(predict, DEBOUNCE_MS);

function showPredictError(error, sentImage) {
  if (!(error instanceof ApiError)) {
    clearSuggestions("");
    say(els.error, String(error), "error");
    return;
  }
  if (error.status === 401) return; // the session module takes the seller back to sign-in
  const aboutImage = sentImage && (error.status === 413 || /image/i.test(error.detail));
  if (aboutImage && sentImage === state.image) {
    // A photo the service cannot read: say why, drop it, and carry on with the text alone.
    setImage(null);
    say(els.imageError, `This photo cannot be used: ${error.detail}`, "error");
    if (hasText()) {
      predict();
      return;
    }
    clearSuggestions("Type a title or add a photo to see suggestions.");
    return;
  }
  clearSuggestions(error.unavailable ? "Suggestions are unavailable." : "No suggestions.");
  const text = error.unavailable
    ? `The suggestion service is unavailable right now (${error.detail}). Your listing is kept; try again in a moment.`
    : error.detail;
  say(els.error, text, "error");
  els.retry.hidden = !error.unavailable;
}

function ranked(result) {
  // The ranked predictions, plus any member of the suggestion set ranked below top_k.
  const inSet = new Set(result.suggestions.map((s) => s.prdtypecode));
  const rows = result.predictions.map((p) => ({ ...p, inSet: inSet.has(p.prdtypecode) }));
  const shown = new Set(rows.map((r) => r.prdtypecode));
  for (const s of result.suggestions) if (!shown.has(s.prdtypecode)) rows.push({ ...s, inSet: true });
  return rows;
}

function render(result) {
  state.result = result;
  hideConfirmation();
  const rows = ranked(result);
  const shown = result.predictions.length;
  const items = rows.map((row, index) => {
    const fill = h("span", { class: "fill" });
    fill.style.width = `${Math.max(1, Math.round(row.probability * 100))}%`;
    const button = h(
      "button",
      {
        type: "button",
        class: `suggestion${row.inSet ? " in-set" : ""}`,
        dataset: { code: row.prdtypecode },
        onclick: () => confirm(row, button),
      },
      h("span", { class: "rank", "aria-hidden": "true" }, `${index + 1}`),
      h("span", { class: "name" }, row.category),
      h("span", { class: "prob" }, percent(row.probability)),
      row.inSet ? h("span", { class: "badge" }, "Suggested") : null,
      h("span", { class: "bar", "aria-hidden": "true" }, fill),
      h("span", { class: "code" }, `code ${row.prdtypecode}`),
    );
    // Members of a large suggestion set ranked below top_k wait behind "show more".
    return h("li", { hidden: index >= shown, class: index >= shown ? "extra" : null }, button);
  });
  replace(els.list, items);
  const extra = rows.length - shown;
  els.more.hidden = extra <= 0;
  els.more.setAttribute("aria-expanded", "false");
  els.more.textContent = `Show ${extra} more suggested ${extra === 1 ? "category" : "categories"}`;
  els.help.hidden = false;
  const top = rows[0];
  const setSize = result.suggestions.length;
  say(
    els.status,
    `${setSize} suggested ${setSize === 1 ? "category" : "categories"}. Best match: ${top.category}, ${percent(top.probability)}.`,
  );
  els.modelInfo.textContent = `From the ${KIND_NAMES[result.model] || result.model} model, version ${result.model_version}, in ${Math.round(result.latency_ms)} ms.`;
}

function showMore() {
  for (const item of els.list.querySelectorAll("li.extra")) item.hidden = false;
  els.more.hidden = true;
  els.more.setAttribute("aria-expanded", "true");
  els.list.querySelector("li.extra button")?.focus();
}

async function confirm(row, button) {
  if (state.saving || !state.result) return;
  state.saving = true;
  const requestId = state.result.request_id;
  const buttons = [...els.list.querySelectorAll("button")];
  buttons.forEach((b) => (b.disabled = true));
  button.classList.add("saving");
  clearErrors();
  const form = new FormData();
  form.set("designation", els.designation.value);
  form.set("description", els.description.value);
  form.set("prdtypecode", String(row.prdtypecode));
  form.set("request_id", requestId);
  if (state.image) form.set("image", state.image, state.image.name || "photo");
  try {
    const product = await api("/products", { method: "POST", form });
    buttons.forEach((b) => b.classList.toggle("chosen", b === button));
    button.setAttribute("aria-current", "true");
    showConfirmation(row, product);
  } catch (error) {
    if (error.status !== 401) {
      say(els.error, `Your listing was not saved: ${error.detail || error}`, "error");
      els.retry.hidden = true;
    }
  } finally {
    buttons.forEach((b) => (b.disabled = false));
    button.classList.remove("saving");
    state.saving = false;
  }
}

function showConfirmation(row, product) {
  const title = els.designation.value.trim() || "Your listing";
  replace(
    els.confirmation,
    h("p", { class: "confirmation-title" }, "✓ Listing saved"),
    h("p", {}, `“${title}” is saved in the category `, h("strong", {}, row.category), ` (code ${row.prdtypecode}).`),
    h("p", { class: "fineprint" }, `Reference ${product.product_id}`),
    h("button", { type: "button", class: "button primary", onclick: resetListing }, "Start a new listing"),
  );
  els.confirmation.hidden = false;
  els.confirmation.focus();
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
    els.preview.alt = `Preview of ${file.name || "the chosen photo"}`;
    els.imageName.textContent = file.name || "Pasted photo";
  } else {
    els.preview.removeAttribute("src");
    els.input.value = "";
  }
}

function chooseImage(file) {
  say(els.imageError, "");
  setImage(file);
  predict();
}

function resetListing() {
  state.controller?.abort();
  scheduled.cancel();
  state.sequence++;
  els.form.reset();
  setImage(null);
  say(els.imageError, "");
  clearErrors();
  hideConfirmation();
  clearSuggestions("Type a title or add a photo to see suggestions.");
  els.designation.focus();
}

function wire() {
  for (const field of [els.designation, els.description]) {
    field.addEventListener("input", () => {
      hideConfirmation();
      scheduled();
    });
  }
  els.form.addEventListener("submit", (event) => {
    event.preventDefault(); // Enter in the title asks for suggestions now
    predict();
  });
  els.form.addEventListener("reset", (event) => {
    event.preventDefault();
    resetListing();
  });
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

wire();
initSession({
  onSignedIn() {
    els.app.hidden = false;
    els.designation.focus();
    if (hasText() || state.image) predict();
  },
  onSignedOut() {
    state.controller?.abort();
    scheduled.cancel();
    els.app.hidden = true;
  },
});
