"""Real browser: JupyterLab on loopback + headless Debian Chromium (Playwright), notebook 02's trimap
inspector. Runs every cell, moves a slider with the keyboard and checks that the preview changed.

Screenshots go to ``test-artifacts/`` (git-ignored). Skipped when ``/usr/bin/chromium`` is absent (CI's
``.ci/run`` installs it); a browser is never downloaded.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer within {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def _notebook_with_parameters(src: Path, dst: Path, params: dict) -> None:
    """Notebook 02 with smoke parameters injected (papermill's injection, without executing it)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(src)), params)
    nbformat.write(nb, str(dst))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed")
def test_trimap_inspector_in_jupyterlab(tmp_path, demo_data_root):
    pytest.importorskip("playwright.sync_api")
    pytest.importorskip("jupyterlab")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    root = tmp_path / "lab"
    root.mkdir()
    runs = tmp_path / "runs"
    _notebook_with_parameters(REPO / "notebooks" / "02_trimap_synthesis.ipynb", root / "02_trimap_synthesis.ipynb",
                              {"config": "demo", "overrides": [f"run.data_root={demo_data_root}"],
                               "run_name": "browser", "runs_root": str(runs), "smoke": True, "n_samples": 2,
                               "inspector_limit": 6})
    # JupyterLab state kept in the temp folder; no news / update checks (no network).
    cfg_dir = tmp_path / "jupyter_config"
    (cfg_dir / "labconfig").mkdir(parents=True)
    (cfg_dir / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    token = os.urandom(16).hex()
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(cfg_dir), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), IPYTHONDIR=str(tmp_path / "ipython"),
               MATTINGKIT_HEADLESS="0", MATTINGKIT_RUNS_ROOT=str(runs), MATTINGKIT_DATA_ROOT=str(demo_data_root))
    env.pop("KAGGLE_KEY", None)
    env.pop("KAGGLE_API_TOKEN", None)
    log = tmp_path / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None",
           "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers / CI run as root
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_server(f"{base}/api/status?token={token}", proc, log)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            try:
                page.goto(f"{base}/lab/tree/02_trimap_synthesis.ipynb?token={token}", wait_until="domcontentloaded")
                page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
                # wait until the notebook's kernel is connected and idle, then Run > Run All Cells
                page.wait_for_function(
                    "() => { const s = document.querySelector('.jp-StatusBar-Widget');"
                    " return s && /Python 3[^\\n]*\\| Idle/.test(s.innerText); }", timeout=120_000)
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                inspector = page.locator(".mattingkit-trimap-inspector")
                inspector.wait_for(state="visible", timeout=180_000)
                preview = inspector.locator("img").first
                preview.wait_for(state="visible")
                page.wait_for_function(
                    "() => { const i = document.querySelector('.mattingkit-trimap-inspector img');"
                    " return i && i.complete && i.naturalWidth > 0; }")
                inspector.scroll_into_view_if_needed()
                info = inspector.locator(".widget-html").first
                info_before = info.inner_text()
                shot_before = preview.screenshot()
                page.screenshot(path=str(ARTIFACTS / "inspector_before.png"))

                # the kernel slider (erode_dilate is the demo config's method): focus its handle, press keys
                slider = inspector.locator(".widget-slider", has_text="kernel px").first
                handle = slider.locator(".noUi-handle").first
                handle.focus()
                for _ in range(8):
                    handle.press("ArrowRight")
                page.wait_for_function(
                    "(before) => { const h = document.querySelector('.mattingkit-trimap-inspector .widget-html');"
                    " return h && h.innerText !== before; }", arg=info_before, timeout=60_000)
                page.wait_for_function(
                    "() => { const i = document.querySelector('.mattingkit-trimap-inspector img');"
                    " return i && i.complete && i.naturalWidth > 0; }")
                time.sleep(0.5)
                shot_after = preview.screenshot()
                info_after = info.inner_text()
                page.screenshot(path=str(ARTIFACTS / "inspector_after.png"))
                inspector.screenshot(path=str(ARTIFACTS / "inspector.png"))
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "inspector_failure.png"))  # what the page showed
                raise
            finally:
                browser.close()
    finally:
        _stop(proc)
    assert info_after != info_before, "the unknown-share text did not change"
    assert shot_after != shot_before, "the preview image did not change after moving the slider"
    share = [float(t.split("unknown")[1].split("%")[0]) for t in (info_before, info_after)]
    assert share[1] > share[0], f"a larger kernel should grow the unknown region: {share}"


