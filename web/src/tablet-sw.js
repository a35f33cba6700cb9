/* The field tablet's service worker: the page /tablet and its two files are kept by the browser, so
   that the tablet opens its page without network (its data, the queue and the last task list, are in
   IndexedDB). The page is asked from the network first (a new version is seen at once) and from the
   cache when there is none; the files, whose URLs carry their content's hash, from the cache first.
   The API is never cached here. build.mjs writes __VERSION__ and __FILES__. */
/* global self, caches */

const VERSION = "__VERSION__";
const FILES = __FILES__;
const PAGE = "/tablet";
const CACHE = `citypilot-tablet-${VERSION}`;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((key) => key.startsWith("citypilot-tablet-") && key !== CACHE).map((key) => caches.delete(key))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname === PAGE && request.mode === "navigate") {
    event.respondWith(fetch(request).then((response) => {
      if (response.ok) {
        const copy = response.clone();
        caches.open(CACHE).then((cache) => cache.put(PAGE, copy));
      }
      return response;
    }).catch(() => caches.open(CACHE).then((cache) => cache.match(PAGE)).then((hit) => hit || Response.error())));
    return;
  }
  if (FILES.includes(url.pathname + url.search)) {
    event.respondWith(caches.open(CACHE).then((cache) => cache.match(request)).then((hit) => hit || fetch(request)));
  }
});
