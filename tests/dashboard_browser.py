#!/usr/bin/env python3
"""Drives the dashboard in headless Chromium over the W3C WebDriver protocol.

Standard library only (urllib, json, zlib): no selenium. Started by
tests/dashboard_browser.rs with the real postern binary already running:

    dashboard_browser.py BASE_URL TOKEN SUSPEND_USER HOSTILE_USER WORK_DIR

It signs in through the form, waits for the users table, reads what the page shows
for HOSTILE_USER, clicks Suspend on SUSPEND_USER and waits for the page to say so,
then takes a screenshot of the traffic charts and decodes the PNG. It prints one
JSON line of what it saw; the Rust test judges it (and checks the suspension
through the API). Any WebDriver failure exits non-zero with the reason.
"""

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
DEADLINE = time.monotonic() + 120
# Loopback only: never through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class WebDriverError(Exception):
    def __init__(self, error, message):
        super().__init__(f"{error}: {message}")
        self.error = error


def call(url, method="GET", body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return json.load(r).get("value")
    except urllib.error.HTTPError as e:
        value = json.load(e).get("value", {})
        raise WebDriverError(value.get("error"), value.get("message", "")[:500]) from None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, limit=20.0):
    """Polls `check` until it returns something truthy; bounded in time and count."""
    end = min(time.monotonic() + limit, DEADLINE)
    for _ in range(int(limit * 10)):
        try:
            got = check()
            if got:
                return got
        except WebDriverError as e:
            if e.error not in ("no such element", "stale element reference"):
                raise
        if time.monotonic() > end:
            break
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {what}")


class Browser:
    def __init__(self, driver_url, session):
        self.url = f"{driver_url}/session/{session}"

    def do(self, method, path, body=None):
        return call(self.url + path, method, body)

    def go(self, url):
        self.do("POST", "/url", {"url": url})

    def find(self, css):
        found = self.do("POST", "/element", {"using": "css selector", "value": css})
        if not isinstance(found, dict) or ELEMENT not in found:
            raise SystemExit(f"unexpected find answer for {css}: {found!r}"[:500])
        return found[ELEMENT]

    def run(self, script, *args):
        return self.do("POST", "/execute/sync", {"script": script, "args": list(args)})

    def alert_open(self):
        try:
            self.do("GET", "/alert/text")
            return True
        except WebDriverError as e:
            if e.error == "no such alert":
                return False
            raise


def chromium_options(work):
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-proxy-server", "--window-size=1280,1800",
            f"--user-data-dir={os.path.join(work, 'chromium-profile')}"]
    return {"binary": shutil.which("chromium") or "/usr/bin/chromium", "args": args}


def png_pixels(png):
    """The set of distinct (r, g, b) colours in an 8-bit RGB or RGBA PNG."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit("the screenshot is not a PNG")
    pos, idat, width, height, depth, kind = 8, b"", 0, 0, 0, 0
    while pos < len(png):
        length, tag = struct.unpack(">I4s", png[pos:pos + 8])
        data = png[pos + 8:pos + 8 + length]
        pos += 12 + length
        if tag == b"IHDR":
            width, height, depth, kind = struct.unpack(">IIBB", data[:10])
        elif tag == b"IDAT":
            idat += data
        elif tag == b"IEND":
            break
    if depth != 8 or kind not in (2, 6):
        sys.exit(f"unexpected PNG format: depth {depth}, colour type {kind}")
    bpp = 3 if kind == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    colours = set()
    for y in range(height):
        start = y * (stride + 1)
        kind_f, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        unfilter(kind_f, line, prev, bpp)
        for x in range(0, stride, bpp):
            colours.add(bytes(line[x:x + 3]))
        prev = line
    return width, height, colours


def unfilter(f, line, prev, bpp):
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if f == 1:
            line[i] = (line[i] + a) & 0xFF
        elif f == 2:
            line[i] = (line[i] + b) & 0xFF
        elif f == 3:
            line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line[i] = (line[i] + pred) & 0xFF
        elif f != 0:
            sys.exit(f"bad PNG filter {f}")


def scenario(b, base, token, suspend_user, hostile):
    seen = {}
    b.go(base + "/")
    wait_for("the sign-in form", lambda: b.find("#signin:not([hidden]) #token"))
    b.do("POST", f"/element/{b.find('#token')}/value", {"text": token})
    b.do("POST", f"/element/{b.find('#signin-form button')}/click", {})
    wait_for("the users table", lambda: b.run(
        "return document.querySelectorAll('#users-body tr').length >= 1"))
    seen["names"] = b.run(
        "return [...document.querySelectorAll('#users-body td.name')].map(td => td.textContent)")
    seen["hostile_row_text"] = b.run(
        "const r = [...document.querySelectorAll('#users-body tr')]"
        ".find(tr => tr.dataset.user === arguments[0]); return r ? r.textContent : null", hostile)
    seen["images"] = b.run("return document.images.length")
    seen["cookie_visible_to_script"] = b.run("return document.cookie")
    button = b.find(f'button.suspend[data-user="{suspend_user}"]')
    b.do("POST", f"/element/{button}/click", {})
    wait_for("the Unsuspend button", lambda: b.find(f'button.unsuspend[data-user="{suspend_user}"]'))
    seen["status_note"] = b.run("return document.getElementById('status').textContent")
    seen["alert"] = b.alert_open()
    charts = b.find("#traffic")
    seen["chart_bars"] = b.run("return document.querySelectorAll('#charts svg rect').length")
    shot = base64.b64decode(b.do("GET", f"/element/{charts}/screenshot"))
    with open(os.path.join(os.environ.get("SHOT_DIR", "."), "traffic.png"), "wb") as f:
        f.write(shot)
    width, height, colours = png_pixels(shot)
    seen["shot"] = {"width": width, "height": height, "colours": len(colours),
                    "has_accepted": bytes((0x2f, 0x9e, 0x44)) in colours,
                    "has_refused": bytes((0xd9, 0x48, 0x0f)) in colours}
    return seen


def diagnose(b):
    """What the page showed and logged, for a failure message."""
    try:
        page = b.run("return location.href + ' | ' + document.body.innerText.slice(0, 800)")
        logs = b.do("POST", "/se/log", {"type": "browser"})
        return f"page: {page}\nconsole: {json.dumps(logs)[:2000]}"
    except (WebDriverError, OSError) as e:
        return f"no diagnosis: {e}"


def driver_ready(url):
    try:
        return call(url + "/status", timeout=2).get("ready")
    except OSError:
        return False  # not listening yet


def main():
    base, token, suspend_user, hostile, work = sys.argv[1:6]
    os.environ["SHOT_DIR"] = work
    port = free_port()
    log = open(os.path.join(work, "chromedriver.log"), "wb")
    driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=log, stderr=log)
    driver_url = f"http://127.0.0.1:{port}"
    try:
        wait_for("chromedriver", lambda: driver_ready(driver_url))
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": chromium_options(work),
            "goog:loggingPrefs": {"browser": "ALL"}}}}
        session = call(driver_url + "/session", "POST", caps, timeout=90)["sessionId"]
        b = Browser(driver_url, session)
        try:
            seen = scenario(b, base, token, suspend_user, hostile)
        except SystemExit:
            print(diagnose(b), file=sys.stderr)
            raise
        finally:
            try:
                b.do("DELETE", "")
            except (WebDriverError, OSError):
                pass
        print(json.dumps(seen))
    except WebDriverError as e:
        sys.exit(f"WebDriver: {e}")
    finally:
        driver.terminate()
        try:
            driver.wait(10)
        except subprocess.TimeoutExpired:
            driver.kill()


if __name__ == "__main__":
    main()
