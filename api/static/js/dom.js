// Small DOM helpers. Text always goes in with textContent: sellers' titles and usernames are
// data, never markup.

/** Build an element: h("li", {class: "x", dataset: {code: 1}, onclick: fn}, child, "text"). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") element.addEventListener(key.slice(2), value);
    else if (key in element && typeof value !== "string") element[key] = value;
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

export function show(element, visible = true) {
  element.hidden = !visible;
}

export function debounce(fn, ms) {
  let timer;
  const debounced = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  debounced.cancel = () => clearTimeout(timer);
  return debounced;
}

export function percent(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value > 0 && value * 100 < 10 ** -digits / 2) return `<${(10 ** -digits).toFixed(digits)}%`;
  return `${(value * 100).toFixed(digits)}%`;
}

export const number = (value, digits = 0) =>
  value === null || value === undefined ? "–" : Number(value).toLocaleString("en-GB", { maximumFractionDigits: digits });

const dateFormat = new Intl.DateTimeFormat("en-GB", {
  year: "numeric",
  month: "short",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : dateFormat.format(date);
}

const dayFormat = new Intl.DateTimeFormat("en-GB", { month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit" });

/** A short date and time, for chart axes. */
export function day(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : dayFormat.format(date);
}

/** Set a message in a status or alert element; kind is "info", "ok" or "error". */
export function say(element, text, kind = "info") {
  element.textContent = text || "";
  element.dataset.kind = kind;
  element.hidden = !text;
}
