// Interface strings: one catalogue per language (api/static/i18n/*.js), French by default.
//
// The seller's choice is remembered per browser (localStorage). A page whose <html> carries
// data-lang-fixed (the admin console, English only) always uses its own lang attribute.
// Elements marked data-i18n="key" get their text from the catalogue; data-i18n-placeholder,
// data-i18n-aria-label and data-i18n-title set those attributes.

import en from "../i18n/en.js";
import fr from "../i18n/fr.js";

export const CATALOGUES = { fr, en };
export const DEFAULT_LANGUAGE = "fr";
const STORAGE_KEY = "rakuten.lang";
const LANGUAGE_CHANGED = "language-changed";

function initialLanguage() {
  const root = document.documentElement;
  if (root.hasAttribute("data-lang-fixed")) return root.lang || "en";
  try {
    const stored = localStorage.getItem(STORAGE_KEY);
    if (stored && CATALOGUES[stored]) return stored;
  } catch {
    // storage blocked: the default
  }
  return DEFAULT_LANGUAGE;
}

let current = initialLanguage();

export function language() {
  return current;
}

/** The string `key` with `{name}` replaced by `vars.name`; `{count}` picks `key_one` / `key_other`. */
export function t(key, vars = {}) {
  const catalogue = CATALOGUES[current] || CATALOGUES[DEFAULT_LANGUAGE];
  let name = key;
  if (typeof vars.count === "number") name = `${key}_${vars.count === 1 ? "one" : "other"}`;
  let text = catalogue[name] ?? CATALOGUES[DEFAULT_LANGUAGE][name] ?? catalogue[key] ?? key;
  for (const [k, v] of Object.entries(vars)) text = text.replaceAll(`{${k}}`, String(v));
  return text;
}

/** A wait in seconds as words: "45 secondes", "5 minutes". */
export function waitText(seconds) {
  const s = Math.max(1, Math.round(Number(seconds) || 0));
  if (s < 90) return t("wait.seconds", { count: s });
  return t("wait.minutes", { count: Math.ceil(s / 60) });
}

/** A share as a percentage in the page's language ("72 %" in French). */
export function percentText(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const shown = value > 0 && value < 0.005 ? 0.01 : value;
  const text = new Intl.NumberFormat(current === "fr" ? "fr-FR" : "en-GB", {
    style: "percent",
    maximumFractionDigits: 0,
  }).format(shown);
  return value > 0 && value < 0.005 ? `< ${text}` : text;
}

/** Fill the marked elements under `root` from the catalogue. */
export function translate(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const [attr, data] of [
    ["placeholder", "i18nPlaceholder"],
    ["aria-label", "i18nAriaLabel"],
    ["title", "i18nTitle"],
  ]) {
    for (const el of root.querySelectorAll(`[data-${attr === "aria-label" ? "i18n-aria-label" : `i18n-${attr}`}]`)) {
      el.setAttribute(attr, t(el.dataset[data]));
    }
  }
  if (root === document) {
    document.documentElement.lang = current;
    if (document.body?.dataset.pageTitle) document.title = t(document.body.dataset.pageTitle);
  }
}

/** Switch language, remember it, translate the page and tell the page's modules. */
export function setLanguage(lang) {
  if (!CATALOGUES[lang] || lang === current) return;
  current = lang;
  try {
    localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // not remembered, still switched
  }
  translate();
  window.dispatchEvent(new CustomEvent(LANGUAGE_CHANGED, { detail: lang }));
}

export function onLanguageChange(fn) {
  window.addEventListener(LANGUAGE_CHANGED, () => fn(current));
}
