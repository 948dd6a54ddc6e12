"""Real-browser fixtures: a JupyterLab server and headless Debian chromium driven by Playwright.

nbclient records widget messages but renders nothing; only a browser shows that the widget
manager really draws nbpool's widgets, with the classes and styles people see.

One server serves the whole package (it takes seconds to start). It is a child of pytest that exists
before the autouse leak check in tests/conftest.py takes its snapshot (higher-scoped fixtures are
set up first), so only what a test starts counts: each test's browser and its kernel, which the
``lab`` fixture ends before the check runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOKS = Path(__file__).parent / "notebooks"
# generous for a loaded 2-core machine, yet a stuck test ends well inside its 240 s timeout
SERVER_START_TIMEOUT = 60.0
LOAD_TIMEOUT_MS = 30_000
RUN_TIMEOUT_MS = 60_000
# Debian chromium as root in a closed network: no sandbox (root), no background fetches (every
# refused connection is noise and slows start-up)
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# The current notebook's kernel, idle and connected. The toolbar's execution indicator is no
# such signal: it already says idle before the session has a kernel.
_KERNEL_READY_JS = """() => {
  const dialog = document.querySelector('.jp-Dialog');
  if (dialog !== null) return 'dialog: ' + dialog.innerText;
  const widget = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const session = widget && widget.sessionContext && widget.sessionContext.session;
  const kernel = session && session.kernel;
  return !!kernel && kernel.status === 'idle' && kernel.connectionStatus === 'connected';
}"""
# Run-all has finished: kernel ready, first cell numbered, no cell queued or running. A dialog
# that blocks the page ends the wait with its text, so the test fails at once and says why.
_RUN_DONE_JS = """() => {
  const ready = (""" + _KERNEL_READY_JS + """)();
  if (ready !== true) return ready;
  const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]
    .map(e => e.textContent);
  return prompts.length > 0 && /\\[\\d+\\]/.test(prompts[0]) && !prompts.some(p => p.includes('*'));
}"""


def _missing_requirement() -> str | None:
    if not CHROMIUM.exists():
        return (f"{CHROMIUM} not found: install Debian's chromium (`make test` does as root with "
                "apt-get) to run the browser tests")
    for module in ("playwright", "jupyterlab"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: `pip install -e '.[test]'` brings it"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(url: str, method: str = "GET") -> bytes:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


@dataclass
class LabServer:
    base_url: str
    root: Path
    log: Path
    proc: subprocess.Popen
    runs: int = 0

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def shutdown_kernels(self, timeout: float = 20.0) -> None:
        """Ends every session's kernel and waits until the server has no child process left,
        so a test's kernel (and anything the kernel leaked) is gone before the leak check."""
        for kind in ("sessions", "kernels"):  # a kernel may also run without a session
            for item in json.loads(_request(f"{self.base_url}/api/{kind}")):
                try:
                    _request(f"{self.base_url}/api/{kind}/{item['id']}", method="DELETE")
                except urllib.error.HTTPError as exc:
                    if exc.code != 404:  # 404: already gone with its session
                        raise
        children = psutil.Process(self.proc.pid).children(recursive=True)
        _gone, alive = psutil.wait_procs(children, timeout=timeout)
        for proc in alive:
            proc.kill()
        assert not alive, f"kernel processes outlived their shutdown: {[p.pid for p in alive]}"


def _start_server(home: Path) -> LabServer:
    root = home / "root"
    shutil.copytree(NOTEBOOKS, root)
    # a 'python3' kernelspec for this interpreter, found first through JUPYTER_PATH
    _write_json(home / "jupyter" / "kernels" / "python3" / "kernel.json", {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test interpreter)",
        "language": "python",
    })
    settings = home / "lab-settings"
    # without this a "get notified about Jupyter news?" toast covers the screenshots
    _write_json(settings / "@jupyterlab" / "apputils-extension"
                / "notification.jupyterlab-settings",
                {"fetchNews": "false", "checkForUpdates": False})
    # start the notebook's kernel without a "Select Kernel" dialog, and keep every cell in the
    # DOM, whatever the viewport shows
    _write_json(settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
                {"autoStartDefaultKernel": True, "windowingMode": "none"})
    env = dict(os.environ)
    env.update({
        "JUPYTER_PATH": str(home / "jupyter"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
    })
    port = _free_port()
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
             "--ServerApp.open_browser=False",
             "--ServerApp.allow_root=True",  # CI runs as root; the server refuses it otherwise
             "--IdentityProvider.token=", "--ServerApp.password=",
             "--ServerApp.disable_check_xsrf=True",
             "--ServerApp.terminals_enabled=False",
             f"--ServerApp.root_dir={root}",
             "--LabApp.expose_app_in_browser=True",
             f"--LabApp.user_settings_dir={settings}",
             f"--LabApp.workspaces_dir={home / 'workspaces'}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env,
        )
    server = LabServer(f"http://127.0.0.1:{port}", root, log, proc)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            _request(f"{server.base_url}/api/status")
            return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            _stop_server(server)
            raise RuntimeError(f"jupyter lab did not answer in {SERVER_START_TIMEOUT:.0f} s:\n"
                               f"{server.log_tail()}")
        time.sleep(0.2)  # polling interval, not an assertion


def _stop_server(server: LabServer) -> None:
    """Asks the server to shut down (it ends its kernels), then ends whatever is left of it."""
    procs = [psutil.Process(server.proc.pid)]
    try:
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        pass
    try:
        _request(f"{server.base_url}/api/shutdown", method="POST")
    except OSError:
        server.proc.terminate()
    _gone, alive = psutil.wait_procs(procs, timeout=20)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=5)
    server.proc.wait(timeout=5)


@pytest.fixture(scope="package")
def lab_server():
    """One JupyterLab server for the browser tests, in a temp root dir it removes at the end."""
    reason = _missing_requirement()
    if reason:
        pytest.skip(reason)
    home = Path(tempfile.mkdtemp(prefix="nbpool-lab-"))
    try:
        server = _start_server(home)
        try:
            yield server
        finally:
            _stop_server(server)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the item so ``lab`` can screenshot a failed test."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


class JupyterLab:
    """Drives one browser page against the server: open a notebook, run it, take screenshots."""

    def __init__(self, server: LabServer, page, artifacts: Path):
        self.server = server
        self.page = page
        self.artifacts = artifacts

    def run_notebook(self, name: str):
        """Opens a fresh copy of ``name`` (so no earlier run's saved prompts can fool the wait),
        runs all cells from the Run menu and waits until the kernel is idle with every cell
        done. Returns the Playwright page."""
        self.server.runs += 1  # unique across the tests that share the server
        copy = f"run{self.server.runs}-{name}"
        shutil.copyfile(self.server.root / name, self.server.root / copy)
        page = self.page
        # a workspace of its own, so JupyterLab reopens no notebook of an earlier test
        page.goto(f"{self.server.base_url}/lab/workspaces/run{self.server.runs}/tree/{copy}")
        page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=LOAD_TIMEOUT_MS)
        ready = page.wait_for_function(_KERNEL_READY_JS, timeout=LOAD_TIMEOUT_MS).json_value()
        assert ready is True, f"opening {name} was blocked by a {ready}"
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        done = page.wait_for_function(_RUN_DONE_JS, timeout=RUN_TIMEOUT_MS).json_value()
        assert done is True, f"running {name} was blocked by a {done}"
        return page

    def cell_outputs(self, index: int):
        """The output area of the ``index``-th code cell."""
        return self.page.locator(".jp-NotebookPanel .jp-CodeCell").nth(index).locator(
            ".jp-OutputArea")

    def screenshot(self, name: str, locator=None) -> Path:
        """Saves a PNG of the page (or of one element) in this test's artifact dir."""
        path = self.artifacts / f"{name}.png"
        (locator or self.page).screenshot(path=str(path))
        return path


@pytest.fixture
def lab(lab_server, request, tmp_path):
    """A fresh headless chromium on the shared server. Screenshots go to $NBPOOL_BROWSER_ARTIFACTS
    or the test's tmp_path; a failed test leaves ``failure.png`` there."""
    from playwright.sync_api import sync_playwright

    artifacts = Path(os.environ.get("NBPOOL_BROWSER_ARTIFACTS") or tmp_path) / request.node.name
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                         args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                helper = JupyterLab(lab_server, page, artifacts)
                yield helper
                report = getattr(request.node, "rep_call", None)
                if report is not None and report.failed:
                    path = helper.screenshot("failure")
                    print(f"screenshot of the failed page: {path}\nserver log:\n"
                          f"{lab_server.log_tail(20)}")
            finally:
                browser.close()
    finally:
        lab_server.shutdown_kernels()
