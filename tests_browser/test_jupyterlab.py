"""The students' path in a real browser: JupyterLab, headless Chromium, notebooks 01 and 03.

Every cell runs, the kernel goes idle, no cell shows an error, and moving each slider redraws
the figure it drives (the output's pixels before and after must differ). Screenshots go to
``runs/browser/``. Needs Debian's ``chromium`` and ``chromium-driver`` (``make test-browser``;
``.ci/run`` installs them) and selenium (the lock file). Not part of ``make test``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runs" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NOTEBOOKS = ["01_forward_diffusion.ipynb", "03_anomaly_synthesis.ipynb"]
RUN_TIMEOUT_S = 600

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, interval: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 with a token, serving copies of the notebooks (autosave must
    not touch the committed ones)."""
    work = tmp_path_factory.mktemp("lab")
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / name, work / name)
    token, port = secrets.token_hex(16), _free_port()
    OUT.mkdir(parents=True, exist_ok=True)
    log = (OUT / "jupyterlab.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
            "--ServerApp.allow_root=True", "--LabApp.news_url=",
        ],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                return r.status == 200
        except OSError:
            return proc.poll() is not None and pytest.fail("JupyterLab exited (jupyterlab.log)")

    _wait(up, 120, "JupyterLab to answer")
    yield url, token
    proc.terminate()
    proc.wait(30)
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("Chromium not found: apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1400,1100", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):  # fmt: skip
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(CHROMEDRIVER))
    yield driver
    driver.quit()


def _prompts(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]"
        ".map(e => e.textContent.trim())"
    )


def _kernel_state(lab: tuple[str, str], name: str) -> str | None:
    """The execution state of the kernel of notebook ``name`` (None: no session yet)."""
    url, token = lab
    with urllib.request.urlopen(f"{url}/api/sessions?token={token}", timeout=5) as r:
        states = [s["kernel"]["execution_state"] for s in json.load(r) if s["path"] == name]
    return states[0] if states else None


def _run_all(driver, lab: tuple[str, str], name: str) -> None:
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell"), 120, f"{name} to open")
    _wait(lambda: _kernel_state(lab, name) == "idle", 120, "the kernel to start")
    driver.find_element(By.XPATH, "//div[contains(@class,'lm-MenuBar-itemLabel')][.='Run']").click()
    item = "//div[contains(@class,'lm-Menu-itemLabel')][.='Run All Cells']"
    _wait(lambda: driver.find_elements(By.XPATH, item), 10, "the Run menu")[0].click()

    def finished() -> bool:
        p = _prompts(driver)
        return bool(p) and all(x.startswith("[") and x[1:-2].isdigit() for x in p)

    _wait(finished, RUN_TIMEOUT_S, f"every cell of {name} to run", interval=2)
    _wait(lambda: _kernel_state(lab, name) == "idle", 60, "the kernel to go idle")


def _sliders(driver):
    return driver.find_elements(By.CSS_SELECTOR, ".widget-slider .noUi-handle")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_sliders_redraw(lab, browser, name):
    url, token = lab
    browser.get(f"{url}/lab/tree/{name}?token={token}&reset")
    stem = name.removesuffix(".ipynb")
    try:
        _run_all(browser, lab, name)
    except TimeoutError:
        browser.save_screenshot(str(OUT / f"{stem}_timeout.png"))
        raise
    browser.save_screenshot(str(OUT / f"{stem}_after_run_all.png"))
    errors = browser.find_elements(
        By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
    )
    assert not errors, f"{name}: error output: {errors[0].text[:500]}"
    handles = _wait(lambda: _sliders(browser), 60, f"the sliders of {name}")
    for k in range(len(handles)):
        handle = _sliders(browser)[k]
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", handle)
        view = handle.find_element(
            By.XPATH, "ancestor::div[contains(@class,'widget-interact')]"
        )  # the interact box: its sliders and the output they drive
        out = view.find_element(By.CSS_SELECTOR, ".widget-output")
        _wait(lambda o=out: o.find_elements(By.TAG_NAME, "img"), 60, "the slider's figure")
        before = out.screenshot_as_png
        handle.click()
        for _ in range(3):
            handle.send_keys(Keys.ARROW_RIGHT)
        after = _wait(
            lambda o=out, b=before: (p := o.screenshot_as_png) != b and p,
            60,
            "the figure to redraw",
        )
        time.sleep(1)  # let the last redraw land before the screenshot kept as evidence
        after = out.screenshot_as_png
        (OUT / f"{stem}_slider{k}_before.png").write_bytes(before)
        (OUT / f"{stem}_slider{k}_after.png").write_bytes(after)
        assert after != before, f"{name}: slider {k} moved but its figure did not change"


def test_book_page_shows_its_figures_and_typesets_correctly(browser, tmp_path):
    """``make book``'s front page (the learning path) links every notebook; a page's figures
    load (offline) and its equations are laid out right, not merely typeset."""
    import io

    import numpy as np
    from PIL import Image

    from n2n_core.book import build_book

    index = build_book(tmp_path / "book")
    browser.get(index.as_uri())
    lessons = len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    # the learning path, in order (waited for: a loaded page may not be laid out yet)
    find = lambda: browser.find_elements(By.CSS_SELECTOR, "h3 a")  # noqa: E731
    links = _wait(lambda: len(find()) == lessons and find(), 60, "the learning path's links")
    assert len(links) == lessons
    next(a for a in links if a.text.startswith("09")).click()
    _wait(lambda: browser.execute_script("return document.readyState") == "complete", 60, "09")
    sizes = browser.execute_script(  # the notebook's own figures (not the online Colab badge)
        "return [...document.images].filter(i => i.src.startsWith('data:'))"
        ".map(i => i.complete ? i.naturalWidth : 0)"
    )
    assert len(sizes) >= 5 and all(w > 0 for w in sizes), sizes
    typeset = "return document.querySelectorAll('span.MathJax').length"
    _wait(lambda: browser.execute_script(typeset) > 10, 60, "MathJax to typeset 09's equations")
    idle = "return MathJax.Hub.queue.pending === 0 && !MathJax.Hub.queue.running"
    _wait(lambda: browser.execute_script(idle), 60, "MathJax to finish")
    browser.save_screenshot(str(OUT / "book_09.png"))
    # the fonts the book ships: with MathJax's default (its TeX fonts, absent) the layout breaks
    assert browser.execute_script("return MathJax.OutputJax['HTML-CSS'].fontInUse") == "STIX-Web"
    # a known equation: 09's first display, δ = (z_t − z_0)/√(1 − ᾱ_t). Laid out right its ink
    # is ≈ 3.1 font sizes tall; with the radicand dropped below the fraction bar ≈ 4.6
    display = browser.find_elements(By.CSS_SELECTOR, ".MathJax_Display")[0]
    browser.execute_script("arguments[0].scrollIntoView()", display)
    png = display.screenshot_as_png
    (OUT / "book_09_delta.png").write_bytes(png)
    rows = np.flatnonzero((np.asarray(Image.open(io.BytesIO(png)).convert("L")) < 128).any(1))
    size = browser.execute_script(
        "return parseFloat(getComputedStyle(arguments[0]).fontSize)", display
    )
    assert (rows.max() - rows.min() + 1) / size < 3.8, "09's δ equation is laid out wrong"
