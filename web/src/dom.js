// A small element builder: h("button", {class: "x", dataset: {action: "ack"}, onclick}, "text").
// Text is always set as text (never parsed as HTML): what devices and operators write stays inert.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key === "style") el.style.cssText = value;
      else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
      else if (value === true) el.setAttribute(key, "");
      else el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

// Replaces an element's children, leaving out null, undefined and false as h() does (the DOM's own
// replaceChildren would write them as text).
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  return el;
}

// Focus goes back where it was before a panel opened, if that is still shown; else nowhere (the page),
// never stays in the panel just hidden (a key pressed next would go to a field no one sees).
export function restoreFocus(el, panel) {
  if (el && el !== document.body && document.contains(el) && el.getClientRects().length > 0) {
    el.focus();
  } else if (panel && panel.contains(document.activeElement)) {
    document.activeElement.blur();
  }
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

// Coalesces many calls into one run at the next animation frame (a burst of alarms redraws the list
// once). A page busy drawing (software WebGL draws a frame in a second or more) gets few frames: the run
// then comes after at most MAX_WAIT_MS all the same.
const MAX_WAIT_MS = 100;

export function perFrame(callback) {
  let pending = false;
  let frame = 0;
  let timer = 0;
  const run = () => {
    if (!pending) return;
    pending = false;
    cancelAnimationFrame(frame);
    clearTimeout(timer);
    callback();
  };
  return () => {
    if (pending) return;
    pending = true;
    frame = requestAnimationFrame(run);
    timer = setTimeout(run, MAX_WAIT_MS);
  };
}
