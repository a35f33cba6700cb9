// Builds the control room's bundle into the Python package (src/citypilot/web/static/), so that
// `pip install citypilot` needs no Node: app.js (ES module, minified), app.css (MapLibre's styles and
// ours), MapLibre's worker, the licences of the bundled libraries, and index.html linking each file
// with a hash of its content (the server lets browsers cache hashed URLs for a year), and licences.txt.
// And the field tablet's page, a second, light entry point without the map's libraries: tablet.js,
// tablet.css, tablet.html, and its service worker tablet-sw.js (served at /tablet/sw.js).
//
//   npm run build          one build
//   npm run watch          rebuild on every change (development)

import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "src", "citypilot", "web", "static");
const workerSource = join(here, "node_modules", "maplibre-gl", "dist", "maplibre-gl-worker.mjs");
const WORKER = "maplibre-gl-worker.mjs";
const LICENCES = "licences.txt";
const watch = process.argv.includes("--watch");

const hash = (bytes) => createHash("sha256").update(bytes).digest("hex").slice(0, 12);

// Libraries carry fallback URLs of public CDNs (loaders.gl's worker scripts, luma.gl's debug tools)
// for features this application does not use; blank them so that the bundle can never fetch from
// outside the control centre.
const CDN = /https:\/\/(unpkg\.com|cdn\.jsdelivr\.net|cdnjs\.cloudflare\.com)\/[^"'`\s)]*/g;
const noCdn = {
  name: "no-cdn",
  setup(build) {
    build.onLoad({ filter: /node_modules[\\/]@(loaders|luma|deck|probe)\.gl[\\/].*\.js$/ }, (args) => {
      const text = readFileSync(args.path, "utf8");
      return CDN.test(text) ? { contents: text.replace(CDN, ""), loader: "js" } : undefined;
    });
  },
};

// The licences of the bundled packages (MIT, BSD, ISC...: each asks for its notice to travel with the
// code), gathered from the packages the bundle actually contains (MapLibre's worker is MapLibre's).
function writeLicences(metafile) {
  const packages = new Map();
  const used = Object.values(metafile.outputs).flatMap((o) => Object.entries(o.inputs))
    .filter(([, info]) => info.bytesInOutput > 0).map(([input]) => input);
  for (const input of used) {
    const match = input.match(/^(.*node_modules[\\/](?:@[^\\/]+[\\/])?[^\\/]+)/);
    if (match) packages.set(match[1], true);
  }
  const sections = [];
  for (const dir of [...packages.keys()].sort()) {
    const meta = JSON.parse(readFileSync(join(here, dir, "package.json"), "utf8"));
    const file = readdirSync(join(here, dir)).find((name) => /^licen[cs]e/i.test(name));
    const text = file ? readFileSync(join(here, dir, file), "utf8").trim() : `License: ${meta.license || "see the package"}`;
    sections.push(`${meta.name} ${meta.version} (${meta.license || "?"})\n\n${text}`);
  }
  writeFileSync(join(out, LICENCES), `Third-party software in app.js and ${WORKER}\n\n${sections.join("\n\n" + "-".repeat(78) + "\n\n")}\n`);
}

function clean() {
  mkdirSync(out, { recursive: true });
  for (const name of readdirSync(out)) rmSync(join(out, name), { recursive: true, force: true });
}

const kib = (bytes) => `${(bytes.length / 1024).toFixed(0)} KiB`;

function writeIndex() {
  const js = readFileSync(join(out, "app.js"));
  const css = readFileSync(join(out, "app.css"));
  const html = readFileSync(join(here, "index.html"), "utf8")
    .replace("__JS_HASH__", hash(js)).replace("__CSS_HASH__", hash(css));
  writeFileSync(join(out, "index.html"), html);
  console.log(`built ${out}: app.js ${kib(js)}, app.css ${kib(css)}, ${WORKER} ${kib(readFileSync(join(out, WORKER)))}`);
}

// The tablet's page and its service worker, which keeps exactly these files (the page at /tablet).
function writeTablet() {
  const js = readFileSync(join(out, "tablet.js"));
  const css = readFileSync(join(out, "tablet.css"));
  const html = readFileSync(join(here, "tablet.html"), "utf8")
    .replace("__JS_HASH__", hash(js)).replace("__CSS_HASH__", hash(css));
  writeFileSync(join(out, "tablet.html"), html);
  const files = ["/tablet", `/static/tablet.js?v=${hash(js)}`, `/static/tablet.css?v=${hash(css)}`];
  const worker = readFileSync(join(here, "src", "tablet-sw.js"), "utf8")
    .replaceAll("__VERSION__", hash(Buffer.concat([js, css, Buffer.from(html)])))
    .replaceAll("__FILES__", JSON.stringify(files));
  writeFileSync(join(out, "tablet-sw.js"), esbuild.transformSync(worker, { minify: true, legalComments: "none" }).code);
  console.log(`built the tablet: tablet.js ${kib(js)}, tablet.css ${kib(css)}`);
}

clean();
copyFileSync(workerSource, join(out, WORKER));
const workerUrl = `/static/${WORKER}?v=${hash(readFileSync(workerSource))}`;

const common = { bundle: true, minify: true, legalComments: "none", logLevel: "warning", target: ["es2022"] };
const jsOptions = {
  ...common, entryPoints: [join(here, "src", "main.js")], outfile: join(out, "app.js"), format: "esm", metafile: true,
  define: { __WORKER_URL__: JSON.stringify(workerUrl) }, plugins: [noCdn],
  banner: { js: `/*! citypilot control room. Third-party licences: ${LICENCES} */` },
};
const cssOptions = {
  ...common, outfile: join(out, "app.css"),
  stdin: { contents: '@import "maplibre-gl/dist/maplibre-gl.css";\n@import "./src/style.css";\n', resolveDir: here, loader: "css" },
};
const tabletJs = {
  ...common, entryPoints: [join(here, "src", "tablet.js")], outfile: join(out, "tablet.js"), format: "esm",
  banner: { js: "/*! citypilot field tablet */" },
};
const tabletCss = { ...common, entryPoints: [join(here, "src", "tablet.css")], outfile: join(out, "tablet.css") };

const afterBuild = { name: "index", setup(build) { build.onEnd((result) => {
  if (result.errors.length) return;
  if (result.metafile) writeLicences(result.metafile);
  try { writeIndex(); } catch { /* the other half is not built yet */ }
}); } };
const afterTablet = { name: "tablet", setup(build) { build.onEnd((result) => {
  if (result.errors.length) return;
  try { writeTablet(); } catch { /* the other half is not built yet */ }
}); } };

if (watch) {
  const contexts = await Promise.all([
    esbuild.context({ ...jsOptions, plugins: [noCdn, afterBuild] }),
    esbuild.context({ ...cssOptions, plugins: [afterBuild] }),
    esbuild.context({ ...tabletJs, plugins: [afterTablet] }),
    esbuild.context({ ...tabletCss, plugins: [afterTablet] }),
  ]);
  await Promise.all(contexts.map((c) => c.watch()));
  console.log("watching web/src for changes…");
} else {
  const [js] = await Promise.all([esbuild.build(jsOptions), esbuild.build(cssOptions), esbuild.build(tabletJs),
    esbuild.build(tabletCss)]);
  writeLicences(js.metafile);
  writeIndex();
  writeTablet();
}
