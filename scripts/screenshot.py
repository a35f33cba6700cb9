"""Screenshot of the control room with the simulated Dijon métropole in it: docs/control-room.png.

Runs a real `citypilot demo` (embedded servers in a temporary directory, free ports, the simulated city
of ~37,000 assets reporting over MQTT), lets it live a little so that alarms come in, logs in through the
login form in Debian's headless Chromium (Playwright; no browser is downloaded) and saves the page at
1440×900.

    .venv/bin/python scripts/screenshot.py                      # docs/control-room.png, in English
    .venv/bin/python scripts/screenshot.py --lang fr --scenario cabinet_power_cut --sheet --output /tmp/room.png

Needs `pip install -e '.[bench]'` (or `.[test]`) and `apt-get install chromium` (and pngquant, which keeps
the PNG under 400 KB).
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from citypilot.bench.map_bench import BrowserUnavailable, check_browser, launch_options
from citypilot.runtime.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
CITYPILOT = str(Path(sys.executable).parent / "citypilot")
MAX_BYTES = 400_000


def start_demo(data_dir: Path, port: int, scenario: str, speed: float) -> tuple[subprocess.Popen[str], str]:
    """A `citypilot demo` on free ports; returns it and the password it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYPILOT_")}
    env.update(CITYPILOT_DATA_DIR=str(data_dir), CITYPILOT_NATS_PORT=str(free_port()),
               CITYPILOT_MQTT_PORT=str(free_port()), CITYPILOT_NATS_MONITOR_PORT="0", CITYPILOT_HTTP_PORT=str(port),
               CITYPILOT_AUTH_SECRET_KEY=secrets.token_urlsafe(32))
    demo = subprocess.Popen([CITYPILOT, "demo", "--data-dir", str(data_dir), "--port", str(port), "--scenario", scenario,
                             "--speed", str(speed)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if demo.poll() is not None:
                break
            continue
        match = re.search(r"login\s+demo / (\S+)", line)
        if match:
            return demo, match.group(1)
    demo.kill()
    raise SystemExit("the demo did not get ready:\n" + "".join(output[-40:]))


def wait_for_alarms(base: str, password: str, minimum: int, timeout: float) -> int:
    """Let the city live until ``minimum`` alarms are open (or ``timeout`` s); returns how many are."""
    with httpx.Client(base_url=base, timeout=10) as client:
        token = client.post("/api/v1/auth/login", json={"username": "demo", "password": password}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + timeout
        count = 0
        while time.monotonic() < deadline:
            count = len(client.get("/api/v1/alarms", params={"limit": 100}, headers=headers).json()["items"])
            if count >= minimum:
                break
            time.sleep(2)
        client.post("/api/v1/auth/logout", headers=headers)
        return count


def shoot(base: str, password: str, output: Path, lang: str, open_sheet: bool) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(**launch_options())
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900}, locale="fr-FR" if lang == "fr" else "en-GB")
            page.set_default_timeout(60_000)
            page.goto(base + "/")
            page.fill('form#login [name="username"]', "demo")
            page.fill('form#login [name="password"]', password)
            page.click('form#login [type="submit"]')
            page.wait_for_function("() => window.citypilot && window.citypilot.ready")
            page.evaluate("() => window.citypilot.ready.then(() => true)")
            if page.evaluate("() => document.documentElement.lang") != lang:
                page.click('[data-testid="lang-switch"]')
                page.wait_for_function("(lang) => document.documentElement.lang === lang", arg=lang)
            items = page.locator('[data-testid="alarm-item"]')
            items.first.wait_for(state="visible")  # the alarm list loads after the map is drawn
            if open_sheet:
                items.first.click(position={"x": 6, "y": 6})
                page.locator('[data-testid="sheet"]').wait_for(state="visible")
            page.wait_for_timeout(3000)  # tiles, fonts, the last live frames
            output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(output))
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "control-room.png")
    parser.add_argument("--lang", choices=["en", "fr"], default="en")
    parser.add_argument("--scenario", default="normal", help="the demo's scenario (normal, snow, flood, ...)")
    parser.add_argument("--speed", type=float, default=60.0, help="the demo's speed (more incidents a minute)")
    parser.add_argument("--alarms", type=int, default=12, help="wait until this many alarms are open ...")
    parser.add_argument("--wait", type=float, default=90.0, help="... or this many seconds")
    parser.add_argument("--sheet", action="store_true", help="open the first alarm's asset sheet (the map zooms to it)")
    args = parser.parse_args()
    try:
        check_browser()
    except BrowserUnavailable as exc:
        raise SystemExit(f"error: {exc}") from None

    with tempfile.TemporaryDirectory(prefix="citypilot-screenshot-") as tmp:
        port = free_port()
        demo, password = start_demo(Path(tmp), port, args.scenario, args.speed)
        try:
            base = f"http://127.0.0.1:{port}"
            alarms = wait_for_alarms(base, password, args.alarms, args.wait)
            shoot(base, password, args.output, args.lang, args.sheet)
        finally:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(timeout=60)
            except subprocess.TimeoutExpired:
                demo.kill()
    if args.output.stat().st_size > MAX_BYTES:
        shrink(args.output)
    size = args.output.stat().st_size
    print(f"{args.output}: {size / 1000:.0f} KB, {alarms} open alarms in the city")
    if size > MAX_BYTES:
        print(f"warning: over {MAX_BYTES // 1000} KB", file=sys.stderr)


def shrink(path: Path) -> None:
    """A 256-colour palette (Debian's pngquant, if installed): a map of 37,000 points is ~500 KB otherwise."""
    pngquant = shutil.which("pngquant")
    if pngquant is None:
        print("note: apt-get install pngquant to make the PNG smaller", file=sys.stderr)
        return
    subprocess.run([pngquant, "--quality", "70-95", "--speed", "1", "--strip", "--force", "--output", str(path), str(path)],
                   check=False)


if __name__ == "__main__":
    main()
