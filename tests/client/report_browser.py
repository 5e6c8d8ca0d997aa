"""Driving headless Chromium on a report: the DOM after its script ran, a probe's measurements, screenshots.

A probe is JavaScript appended after the report's own script (the page's CSP allows inline scripts); it measures
the laid-out page and writes JSON into ``<pre id="probe">``, which ``--dump-dom`` returns."""
from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless chromium not installed (apt-get install chromium)")
WINDOW = (1200, 900)


def chromium(args: list[str], url: str, window: tuple[int, int] = WINDOW) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr",
                           "--v=0", "--hide-scrollbars", f"--window-size={window[0]},{window[1]}", *args, url],
                          capture_output=True, text=True, timeout=120)


def console_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


def with_extra(page: Path, out: Path, *, script: str = "", css: str = "") -> Path:
    """A copy of the report `page` with `css` and a probe `script` added at the end of its body."""
    text = page.read_text(encoding="utf-8")
    extra = (f"<style>{css}</style>" if css else "") + (f"<script>{script}</script>" if script else "")
    out.write_text(text.replace("</body>", extra + "</body>"), encoding="utf-8")
    return out


def probe(page: Path, script: str, fragment: str = "", window: tuple[int, int] = WINDOW) -> dict:
    """Run `script` (a function body returning a JSON-able value) on the laid-out report; its result."""
    wrapped = ("(function(){let out;try{out=(function(){" + script + "})();}catch(e){out={error:String(e)}}"
               "const pre=document.createElement('pre');pre.id='probe';pre.textContent=JSON.stringify(out);"
               "document.body.appendChild(pre);})();")
    copy = with_extra(page, page.with_name(page.stem + ".probe.html"), script=wrapped)
    result = chromium(["--dump-dom"], copy.as_uri() + fragment, window)
    assert console_lines(result) == [], console_lines(result)
    match = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert match, result.stdout[-2000:]
    value = json.loads(html_lib.unescape(match.group(1)))
    assert not (isinstance(value, dict) and "error" in value), value
    return value


def screenshot(page: Path, fragment: str = "", window: tuple[int, int] = WINDOW, name: str = "shot.png") -> Image.Image:
    shot = page.with_name(name)
    result = chromium([f"--screenshot={shot}"], page.as_uri() + fragment, window)
    assert shot.exists(), result.stderr[-2000:]
    return Image.open(shot).convert("RGB")


def ink_box(image: Image.Image, threshold: int = 60) -> tuple[int, int, int, int] | None:
    """Bounding box of the pixels that differ from white by more than `threshold` (None: blank)."""
    grey = image.convert("L").point(lambda v: 255 if v < 255 - threshold else 0)
    return grey.getbbox()
