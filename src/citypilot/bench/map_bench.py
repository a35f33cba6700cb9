"""``citypilot bench map``: the operators' web map in headless Chromium, on a throw-away stack.

What the code controls is measured, not the frame rate: Chromium draws WebGL in software here
(SwiftShader), so frames per second say more about the CPU than about the map. Everything is real:
embedded PostgreSQL and NATS, one ``citypilot serve`` process (no ingest worker, no alarm engine: the
twin deltas are published by this benchmark, as the ingest workers would), Debian's Chromium driven by
Playwright, logging in through the login form.

1. ``assets`` synthetic lights and cabinets are imported, and given a twin row each (online, 1 % offline).
2. Load: from the login response (Resource Timing) to ``window.citypilot.ready`` (all assets fetched,
   decoded and drawn), timed in the page.
3. Steady state, for ``seconds``: once a second, ``change_fraction`` of the assets change (twin deltas on
   core NATS, ``citypilot.twin.street_light``, at most 2,000 a message like the workers); the map is
   dragged a little every two seconds. Read from the page: the UI's own record of the main-thread time of
   each update it applied (``window.citypilot.perf.updates``), long tasks (a ``PerformanceObserver``
   installed before the page's scripts), the live feed's bytes (Playwright's WebSocket frames, decoded
   payload) and requestAnimationFrame callbacks over the whole measurement.

Playwright is not a runtime dependency of citypilot (``pip install 'citypilot[bench]'``), and no browser
is downloaded: Debian's ``chromium`` package is launched.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import secrets
import subprocess
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import nats
import numpy as np
from psycopg_pool import AsyncConnectionPool

from citypilot.auth import accounts
from citypilot.config import Config
from citypilot.equipment.catalog import default_catalog
from citypilot.geo.communes import metropole
from citypilot.ingest import protocol
from citypilot.registry import service
from citypilot.runtime.ports import free_port

from .alarms_bench import _start_serve, _wait_ready
from .ingest_bench import throwaway_stack
from .synthetic import registry_csv

CHROMIUM = os.environ.get("CITYPILOT_CHROMIUM", "/usr/bin/chromium")
DELTAS_PER_MESSAGE = 2000  # as the ingest workers publish them (ingest.store.DELTAS_PER_MESSAGE)
PAN_EVERY_S = 2.0
SETTLE_S = 2.0  # after ready, before the steady state is measured
DRAIN_QUIET_S = 3.0  # after the last publish: wait for the feed's last frames, until it is quiet this long
DRAIN_MAX_S = 30.0

# Installed before the application's scripts: long tasks from the very start, and the moment
# window.citypilot.ready resolves (the property is watched, so the time is not the moment we asked).
PROBE_SCRIPT = """
(() => {
  const bench = window.__bench = {longTasks: [], readyAt: null, frames: 0, counting: false};
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) bench.longTasks.push([e.startTime, e.duration]);
    }).observe({type: 'longtask', buffered: true});
  } catch (e) { bench.longTaskError = String(e); }
  const hook = (value) => {
    if (value && value.ready && typeof value.ready.then === 'function') {
      value.ready.then(() => { if (bench.readyAt === null) bench.readyAt = performance.now(); });
    }
  };
  let current;
  Object.defineProperty(window, 'citypilot', {
    configurable: true, enumerable: true,
    get() { return current; },
    set(value) { current = value; hook(value); },
  });
  bench.countFrames = () => {
    bench.frames = 0; bench.counting = true;
    const tick = () => { if (!bench.counting) return; bench.frames += 1; requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
  };
})();
"""


class BrowserUnavailable(RuntimeError):
    """Playwright or Chromium is not installed: the message says how to install it."""


def chromium_args() -> list[str]:
    """Headless Chromium with WebGL in software (SwiftShader through ANGLE): no GPU on a server."""
    args = ["--headless=new", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
            "--ignore-gpu-blocklist", "--disable-dev-shm-usage"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to sandbox itself as root
    return args


def check_browser() -> None:
    """Fail early, with the fix, when Playwright or Debian's Chromium is missing."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        raise BrowserUnavailable("citypilot bench map needs Playwright: pip install 'citypilot[bench]' "
                                 "(it drives Debian's Chromium; no browser is downloaded)") from None
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        raise BrowserUnavailable(f"no Chromium at {CHROMIUM}: apt-get install chromium "
                                 "(or set CITYPILOT_CHROMIUM to a Chromium executable)")


def launch_options() -> dict[str, Any]:
    """Keyword arguments for Playwright's ``chromium.launch`` (sync or async API)."""
    return {"executable_path": CHROMIUM, "headless": True, "args": chromium_args()}


@dataclass
class MapPlan:
    assets: int = 40_000
    seconds: float = 15.0
    change_fraction: float = 0.05
    viewport: tuple[int, int] = (1440, 900)
    seed: int = 3
    targets: dict[str, float] = field(default_factory=dict)


def targets_for(assets: int) -> dict[str, float]:
    """The issue's targets: at 40,000 assets, and at 250,000 (a city 7 times Dijon's)."""
    if assets <= 40_000:
        return {"load_ms": 2000, "update_ms_p50": 8, "update_ms_p99": 16, "max_task_ms": 50}
    return {"max_task_ms": 200}


def run_map_benchmark(config: Config, plan: MapPlan) -> dict[str, Any]:
    check_browser()
    plan.targets = plan.targets or targets_for(plan.assets)
    with throwaway_stack(config) as (cfg, database_url, nats_url):
        return asyncio.run(_run(cfg, database_url, nats_url, plan))


async def _prepare(database_url: str, plan: MapPlan, password: str) -> list[str]:
    """The registry, a twin row per asset, an operator; returns the street lights' ids."""
    catalog, communes = default_catalog(), metropole()
    registry = registry_csv(communes, plan.assets, seed=plan.seed)
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as pool:
        await pool.open(wait=True)
        await service.import_file(pool, registry, "csv", actor="bench", source="bench", catalog=catalog,
                                  communes=communes)
        async with pool.connection() as conn:
            await accounts.add_user(conn, "bench", "operator", password, services=dict(catalog.services))
            # As if every device had reported once (what the ingest workers would have written), 1 % offline.
            await conn.execute(
                "INSERT INTO twin (asset_id, kind, ts, received_at, values, last_seen, connectivity, offline_since) "
                "SELECT id, kind, now() - interval '5 minutes', now() - interval '5 minutes', "
                "CASE kind WHEN 'street_light' THEN jsonb_build_object('power_state', 'on', 'dimming_pct', 80, "
                "'power_w', 31.5, 'fault', 'none') ELSE jsonb_build_object('mains', 'ok') END, "
                "now() - interval '5 minutes', CASE WHEN right(id, 2) = '37' THEN 'offline' ELSE 'online' END, "
                "CASE WHEN right(id, 2) = '37' THEN now() - interval '1 hour' END FROM assets "
                "ON CONFLICT (asset_id) DO NOTHING")
            rows = await (await conn.execute(
                "SELECT id FROM assets WHERE kind = 'street_light' ORDER BY id")).fetchall()
    return [r[0] for r in rows]


def _values(updates: list[Any]) -> list[float]:
    """The UI's update records: numbers (ms), or objects with the time in ``ms`` or ``duration``."""
    out = []
    for u in updates:
        if isinstance(u, (int, float)):
            out.append(float(u))
        elif isinstance(u, dict):
            for key in ("ms", "duration", "durationMs", "time"):
                if isinstance(u.get(key), (int, float)):
                    out.append(float(u[key]))
                    break
    return out


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))], 2)


async def _run(cfg: Config, database_url: str, nats_url: str, plan: MapPlan) -> dict[str, Any]:
    password = secrets.token_urlsafe(18)
    prepare_started = time.monotonic()
    lights = await _prepare(database_url, plan, password)
    prepare_s = time.monotonic() - prepare_started

    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYPILOT_")}
    env.update(CITYPILOT_DATABASE_URL=database_url, CITYPILOT_NATS_URL=nats_url, CITYPILOT_DATA_DIR=str(cfg.data_dir),
               CITYPILOT_LOG_LEVEL="warning", CITYPILOT_INGEST_WORKERS="0", CITYPILOT_ALARMS_ENGINE="false",
               CITYPILOT_AUTH_SECRET_KEY=secrets.token_urlsafe(32))
    port = free_port()
    serve = _start_serve(env, port)
    nc = await nats.connect(nats_url)
    try:
        base = f"http://127.0.0.1:{port}"
        await _wait_ready(base, serve)
        async with httpx.AsyncClient(base_url=base) as http:
            index = await http.get("/")
            if index.status_code != 200 or "html" not in index.headers.get("content-type", ""):
                raise RuntimeError(f"the web UI is not served at / (HTTP {index.status_code})")
        figures = await _measure(base, nc, plan, password, lights)
    finally:
        await nc.close()
        serve.terminate()
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
    figures["prepare_s"] = round(prepare_s, 1)
    return figures


async def _measure(base: str, nc: Any, plan: MapPlan, password: str, lights: list[str]) -> dict[str, Any]:
    from playwright.async_api import Error as PlaywrightError

    try:
        return await _drive(base, nc, plan, password, lights)
    except PlaywrightError as exc:  # the page did not do what the DOM contract says: say where
        raise RuntimeError(f"the web UI did not behave as expected: {exc.message.splitlines()[0]}") from None


async def _drive(base: str, nc: Any, plan: MapPlan, password: str, lights: list[str]) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    rng = np.random.default_rng(plan.seed)
    per_second = max(1, round(plan.assets * plan.change_fraction))
    encoder = msgspec.json.Encoder()
    ws_bytes = [0]
    ws_frames = [0]
    wire_bytes = [0]
    # The feed negotiates permessage-deflate (uvicorn's websockets: 12-bit window, memLevel 5, context
    # kept between messages): the frames are compressed the same way here to estimate the bytes on the wire.
    deflate = zlib.compressobj(6, zlib.DEFLATED, -12, 5)

    ws_deltas = [0]
    last_frame = [time.monotonic()]

    def on_frame(payload: str | bytes) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        ws_bytes[0] += len(data)
        ws_deltas[0] += data.count(b'{"asset":')  # twin deltas; events name theirs "asset_id"
        last_frame[0] = time.monotonic()
        wire_bytes[0] += len(deflate.compress(data) + deflate.flush(zlib.Z_SYNC_FLUSH)) - 4
        ws_frames[0] += 1

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(**launch_options())
        try:
            width, height = plan.viewport
            context = await browser.new_context(viewport={"width": width, "height": height}, locale="fr-FR")
            page = await context.new_page()
            await page.add_init_script(PROBE_SCRIPT)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)[:300]))
            page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
            await page.goto(base + "/", wait_until="load")
            await page.fill('form#login [name="username"]', "bench")
            await page.fill('form#login [name="password"]', password)
            async with page.expect_response(lambda r: "/api/v1/auth/login" in r.url) as login:
                await page.click('form#login [type="submit"]')
            if (await login.value).status != 200:
                raise RuntimeError(f"login through the form failed: HTTP {(await login.value).status}")
            await page.wait_for_function("() => window.citypilot && window.citypilot.ready", timeout=60_000)
            # Resolves when every asset is fetched, decoded and drawn (the probe noted the moment).
            await page.evaluate("() => window.citypilot.ready.then(() => true)")
            load = await page.evaluate("""() => {
                const login = performance.getEntriesByType('resource').filter(e => e.name.includes('/api/v1/auth/login'));
                const perf = (window.citypilot && window.citypilot.perf) || {};
                const map = performance.getEntriesByType('resource').filter(e => e.name.includes('/api/v1/twin/map'));
                const last = map.length ? map[map.length - 1] : null;
                return {loginAt: login.length ? login[login.length - 1].responseEnd : null,
                        mapAt: last ? last.responseEnd : null, mapBytes: last ? last.encodedBodySize : null,
                        mapDecoded: last ? last.decodedBodySize : null,
                        readyAt: window.__bench.readyAt, now: performance.now(),
                        uiLoadMs: typeof perf.loadMs === 'number' ? perf.loadMs : null,
                        shown: typeof window.citypilot.assetCount === 'function' ? window.citypilot.assetCount() : null};
            }""")
            ready_at = load["readyAt"] if load["readyAt"] is not None else load["now"]
            load_ms = ready_at - load["loginAt"] if load["loginAt"] is not None else None

            await asyncio.sleep(SETTLE_S)
            box = await page.locator("#map").bounding_box()
            start = await page.evaluate("""() => { const perf = window.citypilot.perf || {}; return {t: performance.now(),
                updates: (perf.updates || []).length, parse: (perf.parse || []).length,
                commits: (perf.commits || []).length, wsBytes: perf.wsBytes}; }""")
            ws_bytes[0] = ws_frames[0] = wire_bytes[0] = ws_deltas[0] = 0
            began = time.monotonic()
            sent = [0]
            pans: list[tuple[float, float]] = []  # page times of the drags: long tasks during them are told apart

            async def publish() -> None:
                """Once a second, ``per_second`` lights change, as the ingest workers would report it."""
                subject = protocol.TWIN_DELTA_SUBJECT.format(kind="street_light")
                next_tick = began
                while next_tick - began < plan.seconds:
                    now = dt.datetime.now(dt.timezone.utc).isoformat()
                    chosen = rng.choice(len(lights), size=min(per_second, len(lights)), replace=False)
                    items = [{"asset": lights[i], "ts": now,
                              "changed": {"dimming_pct": int(rng.integers(20, 101)),
                                          "power_w": round(float(rng.uniform(10, 70)), 1)},
                              "back_online": False, "new": False} for i in chosen]
                    for i in range(0, len(items), DELTAS_PER_MESSAGE):
                        await nc.publish(subject, encoder.encode(items[i:i + DELTAS_PER_MESSAGE]))
                    await nc.flush()
                    sent[0] += len(items)
                    next_tick += 1.0
                    await asyncio.sleep(max(0.0, next_tick - time.monotonic()))

            async def pan() -> None:
                """A small mouse drag every two seconds, back and forth, as an operator looks around. Each
                input event is acknowledged once the page handled it, at its next frame: with software
                WebGL a drag may take seconds, so drags are cut off when the measurement ends."""
                if not box:
                    return
                x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                n = 0
                while True:
                    dx = 80 if n % 2 == 0 else -80
                    t0 = await page.evaluate("() => performance.now()")
                    pans.append((t0, float("inf")))  # until it ends
                    await page.mouse.move(x, y)
                    await page.mouse.down()
                    await page.mouse.move(x + dx, y + dx / 2, steps=4)
                    await page.mouse.up()
                    pans[-1] = (t0, await page.evaluate("() => performance.now()"))
                    n += 1
                    await asyncio.sleep(max(0.0, began + n * PAN_EVERY_S - time.monotonic()))

            await page.evaluate("() => window.__bench.countFrames()")
            fps_from = time.monotonic()
            panning = asyncio.create_task(pan())
            try:
                await publish()
            finally:
                panning.cancel()
                await asyncio.gather(panning, return_exceptions=True)
            deltas_sent = sent[0]
            elapsed = time.monotonic() - began
            # The feed may be behind (the hub coalesces a second, then encodes): let the last deltas arrive,
            # so that every update of the window is counted (a delta merged into a later one never comes).
            published = time.monotonic()
            while ws_deltas[0] < deltas_sent and time.monotonic() - last_frame[0] < DRAIN_QUIET_S \
                    and time.monotonic() - published < DRAIN_MAX_S:
                await asyncio.sleep(0.1)
            feed_behind_s = max(0.0, last_frame[0] - published)
            end = await page.evaluate("""() => {
                window.__bench.counting = false;
                const perf = window.citypilot.perf || {};
                return {t: performance.now(), updates: perf.updates || [], wsBytes: perf.wsBytes,
                        parse: perf.parse || [], commits: perf.commits || [], phases: perf.phases || null,
                        drawCalls: perf.drawCalls, frames: window.__bench.frames, longTasks: window.__bench.longTasks,
                        longTaskError: window.__bench.longTaskError || null,
                        heap: performance.memory ? performance.memory.usedJSHeapSize : null,
                        shown: typeof window.citypilot.assetCount === 'function' ? window.citypilot.assetCount() : null};
            }""")
            fps = round(end["frames"] / (time.monotonic() - fps_from), 1)
            version = browser.version
        finally:
            await browser.close()

    updates = _values(end["updates"][start["updates"]:]) if isinstance(end["updates"], list) else []
    # Beyond the contract, when the UI records them: JSON.parse of each frame, and the layers' commit
    # (at most one per animation frame) that follows the updates.
    parse = _values(end["parse"][start["parse"]:]) if isinstance(end["parse"], list) else []
    commits = _values(end["commits"][start["commits"]:]) if isinstance(end["commits"], list) else []
    steady_tasks = [d for s, d in end["longTasks"] if s >= start["t"]]
    # A long task overlapping a drag (from its first event to the page's answer to the last one).
    quiet_tasks = [d for s, d in end["longTasks"] if s >= start["t"] and not any(s < b and s + d > a for a, b in pans)]
    drags = [b - a for a, b in pans if b != float("inf")]
    login_at = load["loginAt"] or 0.0
    load_tasks = [d for s, d in end["longTasks"] if login_at <= s < ready_at]
    breakdown = {  # where the load's time goes: the snapshot's download, and the main thread's long tasks
        "map_fetched_ms": round(load["mapAt"] - login_at) if load["mapAt"] is not None else None,
        "map_bytes": load["mapBytes"], "map_bytes_decoded": load["mapDecoded"],
        "long_tasks": len(load_tasks), "long_tasks_ms": round(sum(load_tasks)),
        "max_task_ms": round(max(load_tasks)) if load_tasks else 0}
    ui_ws = None
    if isinstance(end["wsBytes"], (int, float)) and isinstance(start["wsBytes"], (int, float)):
        ui_ws = round((end["wsBytes"] - start["wsBytes"]) / elapsed)
    draw_calls = end["drawCalls"] if isinstance(end["drawCalls"], (int, float)) else None
    return {
        "benchmark": "map", "assets": plan.assets, "assets_shown": end["shown"] if end["shown"] is not None else load["shown"],
        "viewport": f"{plan.viewport[0]}x{plan.viewport[1]}",
        "load_ms": round(load_ms) if load_ms is not None else None,
        "ui_load_ms": round(load["uiLoadMs"]) if load["uiLoadMs"] is not None else None,
        "update_ms_p50": _pct(updates, 0.5), "update_ms_p99": _pct(updates, 0.99),
        "update_ms_max": round(max(updates), 2) if updates else None,
        "updates": len(updates), "update_ms_per_s": round(sum(updates) / elapsed, 2) if updates else None,
        "deltas_per_s": round(deltas_sent / elapsed),
        "parse_ms_p50": _pct(parse, 0.5), "parse_ms_p99": _pct(parse, 0.99),
        "commit_ms_p50": _pct(commits, 0.5), "commit_ms_p99": _pct(commits, 0.99),
        "max_task_ms": round(max(steady_tasks)) if steady_tasks else 0,
        "long_tasks": len(steady_tasks),
        "max_task_ms_outside_pans": round(max(quiet_tasks)) if quiet_tasks else 0, "pans": len(pans),
        "drag_ms_p50": _pct(drags, 0.5),
        "load_breakdown": breakdown, "ui_load_phases_ms": end["phases"],
        "ws_bytes_per_s": round(ws_bytes[0] / elapsed), "ws_frames_per_s": round(ws_frames[0] / elapsed, 1),
        "ws_deltas_received": ws_deltas[0], "feed_behind_s": round(feed_behind_s, 1),
        "ws_deflated_bytes_per_s": round(wire_bytes[0] / elapsed),
        "ui_ws_bytes_per_s": ui_ws,
        "draw_calls": draw_calls, "fps": fps,
        "js_heap_mb": round(end["heap"] / 1e6, 1) if end["heap"] else None,
        "seconds": round(elapsed, 1), "page_errors": errors[:5],
        "targets": plan.targets,
        "browser": f"Chromium {version} headless, SwiftShader WebGL",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
