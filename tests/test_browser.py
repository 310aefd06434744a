"""The quickstart notebook in a real browser: JupyterLab on loopback, headless Chromium driven by
selenium (Debian's chromium and chromium-driver packages; .ci/run installs them).

Runs all cells, re-runs the cells that build the Simulator, the App and the Keypad (which stops
the ones the first run built, with one line), then clicks Call and the digits on the Keypad
and checks what the page shows: the transcript, the status line, the audio player paused after
the call, the Hang up label not cut, no "Error displaying widget" and no console error from
the widgets. Screenshots go to build/browser-screenshots/ (or $IVRSCRIPT_SCREENSHOTS), the
folder printed at the start and named in any failure.
"""

from __future__ import annotations

import os
import queue
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT

CHROMIUM = os.environ.get("IVRSCRIPT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("IVRSCRIPT_CHROMEDRIVER", "/usr/bin/chromedriver")
START_TIMEOUT = 90.0  # JupyterLab's start, the page's first load (2 slow cores)
CELL_TIMEOUT = 120.0  # all cells of the quickstart (two calls in real time)
STEP_TIMEOUT = 45.0  # one step of a call as the page shows it

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver; "
           ".ci/run installs them)")


class Lab:
    """JupyterLab on loopback (a port it picks), its folders under a temporary directory."""

    def __init__(self, root: Path, home: Path) -> None:
        self.token = secrets.token_urlsafe(16)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RINGCENTRAL_", "NGROK_", "IVRSCRIPT_", "JUPYTER"))}
        env.update(JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
                   JUPYTER_RUNTIME_DIR=str(home / "runtime"), IPYTHONDIR=str(home / "ipython"),
                   JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        # Every cell rendered (no windowing: the page shows all outputs) and no news prompt.
        settings = home / "settings"
        for name, value in (("notebook-extension/tracker", '{"windowingMode": "none"}'),
                            ("apputils-extension/notification", '{"fetchNews": "false"}')):
            path = settings / "@jupyterlab" / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", "--port=0",
             f"--IdentityProvider.token={self.token}", "--allow-root", f"--ServerApp.root_dir={root}",
             "--expose-app-in-browser", "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             ],
            cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert self.popen.stdout is not None
            for line in self.popen.stdout:
                self.log.append(line.rstrip())
                lines.put(line)
            lines.put(None)

        self.reader = threading.Thread(target=read, daemon=True, name="jupyterlab-log")
        self.reader.start()
        try:
            self.url = self._wait_for_url(lines)
        except BaseException:
            self.stop()
            raise

    def _wait_for_url(self, lines: queue.Queue[str | None]) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        pattern = re.compile(r"(http://127\.0\.0\.1:\d+)/lab\?token=")
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"JupyterLab did not print its URL within {START_TIMEOUT} s"
                                     f":\n{self.output()}") from None
            if line is None:
                raise AssertionError(f"JupyterLab exited before serving:\n{self.output()}")
            match = pattern.search(line)
            if match:
                return match.group(1)

    def output(self) -> str:
        return "\n".join(self.log[-80:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()  # JupyterLab shuts its kernels down on SIGTERM
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.reader.join(10)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A copy of notebooks/ (the run must not write outputs into the repository's notebooks)
    beside the real examples/, as the notebooks' relative paths expect."""
    root = tmp_path / "work"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(Path(ROOT) / "notebooks" / "quickstart.ipynb", root / "notebooks")
    (root / "examples").symlink_to(Path(ROOT) / "examples")
    return root


@pytest.fixture
def lab(workspace: Path, tmp_path: Path) -> Iterator[Lab]:
    server = Lab(workspace, tmp_path / "jupyter")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-extensions",
                 "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                 "--window-size=1280,1600", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()  # ends Chromium and chromedriver


def wait_until(what: str, check: Callable[[], Any], timeout: float, on_fail: Callable[[], str]
               ) -> Any:
    """Poll ``check()`` (the page has no change events to wait on from here) until it returns
    something true; fail with ``what`` and ``on_fail()`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except Exception as error:  # the page is still building: try again
            value, last = None, error
        else:
            last = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout} s"
                                 f"{f' (last error: {last})' if last else ''}\n{on_fail()}")
        time.sleep(0.25)


def test_quickstart_in_jupyterlab_with_the_keypad_clicked(lab: Lab, browser: Any,
                                                          tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    # Kept after the run (pytest's temporary folders are pruned): build/ is git-ignored.
    shots = Path(os.environ.get("IVRSCRIPT_SCREENSHOTS")
                 or Path(ROOT) / "build" / "browser-screenshots")
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    print(f"screenshots in {shots}")
    step = iter(range(1, 100))

    def shoot(name: str) -> str:
        path = shots / f"{next(step):02d}-{name}.png"
        browser.save_screenshot(str(path))
        return str(path)

    def page_text() -> str:
        return str(browser.execute_script("return document.body.innerText"))

    def failed() -> str:
        try:
            shot = shoot("failure")
        except Exception as error:
            shot = f"(no screenshot: {error})"
        text = page_text()
        return (f"screenshot {shot} (all in {shots})\n--- page (end) ---\n{text[-3000:]}\n"
                f"--- JupyterLab ---\n{lab.output()}")

    def js(script: str, *args: Any) -> Any:
        return browser.execute_script(script, *args)

    browser.get(f"{lab.url}/lab/tree/notebooks/quickstart.ipynb?token={lab.token}")
    wait_until("the notebook open with its kernel idle", lambda: js(
        "const app = window.jupyterapp; const w = app && app.shell.currentWidget;"
        "return !!(w && w.sessionContext && w.sessionContext.session && w.content &&"
        " w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle')"),
        START_TIMEOUT, failed)
    shoot("opened")

    js("window.jupyterapp.commands.execute('notebook:run-all-cells')")

    def all_ran() -> bool:
        return bool(js(
            "const nb = window.jupyterapp.shell.currentWidget;"
            "const k = nb.sessionContext.session.kernel;"
            "const cells = nb.content.widgets.filter(c => c.model.type === 'code');"
            "return k.status === 'idle' && cells.every(c => c.model.executionCount !== null);"))

    wait_until("every cell run", all_ran, CELL_TIMEOUT, failed)
    text = page_text()
    for expected in ("'1234' Completed", "The call ended: forwarded to 102", "exit    forwarded",
                     "stopped the earlier App"):
        assert expected in text, f"{expected!r} not on the page\n{failed()}"
    shoot("all-cells-run")

    # Re-run the cell that builds the simulator and the app, then the keypad's cell: what the
    # earlier run built is stopped, in one line; the new keypad rings the new app.
    def run_cell(containing: str) -> int:
        index = js("const nb = window.jupyterapp.shell.currentWidget;"
                   "return nb.content.widgets.findIndex(c => c.model.type === 'code' &&"
                   " c.model.sharedModel.getSource().includes(arguments[0]));", containing)
        assert index >= 0, f"no cell containing {containing!r}"
        js("const nb = window.jupyterapp.shell.currentWidget; nb.content.activeCellIndex ="
           " arguments[0]; return window.jupyterapp.commands.execute('notebook:run-cell');",
           index)
        wait_until(f"the cell with {containing!r} run again", lambda: js(
            "const nb = window.jupyterapp.shell.currentWidget;"
            "return nb.sessionContext.session.kernel.status === 'idle' &&"
            " nb.content.widgets[arguments[0]].model.executionCount > arguments[1];",
            index, count), STEP_TIMEOUT, failed)
        return int(index)

    count = js("return window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
               ".status === 'idle' ? Math.max(...window.jupyterapp.shell.currentWidget.content"
               ".widgets.map(c => c.model.executionCount || 0)) : -1")
    # The last cell stopped everything: the first re-run builds a new pair, the second one
    # replaces that pair and says so.
    run_cell("sim = Simulator().start()")
    count = js("return window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
               ".status === 'idle' ? Math.max(...window.jupyterapp.shell.currentWidget.content"
               ".widgets.map(c => c.model.executionCount || 0)) : -1")
    rebuilt = run_cell("sim = Simulator().start()")
    outputs = str(js("return JSON.stringify(window.jupyterapp.shell.currentWidget.content"
                     ".widgets[arguments[0]].model.outputs.toJSON())", rebuilt))
    assert re.search(r"ivrscript: this cell was run again: stopped the App on http://127"
                     r"\.0\.0\.1:\d+ and the Simulator on http://127\.0\.0\.1:\d+ it built "
                     r"before", outputs), f"no line about the stopped app: {outputs}\n{failed()}"
    count += 1
    run_cell("keypad = Keypad(sim, app)")
    shoot("rebuilt")

    keypad = wait_until("the keypad", lambda: browser.find_element(
        By.CSS_SELECTOR, ".ivrscript-keypad"), STEP_TIMEOUT, failed)
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", keypad)
    output = keypad.find_element(By.XPATH, "./ancestor::div[contains(@class,'jp-OutputArea')]")

    def button(label: str) -> Any:
        for element in output.find_elements(By.TAG_NAME, "button"):
            if element.text.strip() == label:
                return element
        raise AssertionError(f"no button {label!r} on the keypad\n{failed()}")

    hang_up = button("Hang up")
    assert js("return arguments[0].scrollWidth <= arguments[0].clientWidth", hang_up), (
        f"the Hang up label is cut\n{failed()}")

    def status() -> str:
        return str(js("return arguments[0].innerText", output))

    button("Call").click()
    wait_until("the app listening for xxxx", lambda: "listening for xxxx" in status(),
               STEP_TIMEOUT, failed)
    shoot("listening")
    for key in "1234":
        button(key).click()
    wait_until("the PIN collected", lambda: "'1234' Completed" in status(), STEP_TIMEOUT,
               failed)
    wait_until("the menu listening", lambda: "listening for 1 2" in status(), STEP_TIMEOUT,
               failed)
    button("2").click()
    wait_until("the call forwarded", lambda: "Call ended: forwarded to 102" in status(),
               STEP_TIMEOUT, failed)
    shoot("forwarded")
    shown = status()
    for line in ("enter   from +15550100", "collect xxxx", "-> '1234' Completed",
                 "-> '2' Completed", "forward extension 102", "exit    forwarded",
                 "keys 1234 2"):
        assert line in shown, f"{line!r} not shown by the keypad\n{failed()}"

    audio = wait_until("the audio player", lambda: output.find_element(By.TAG_NAME, "audio"),
                       STEP_TIMEOUT, failed)
    assert js("return arguments[0].loop", audio) is False
    wait_until("the audio player paused after the call",
               lambda: js("return arguments[0].paused", audio), STEP_TIMEOUT, failed)

    text = page_text()
    assert "Error displaying widget" not in text, failed()
    errors = [entry for entry in browser.get_log("browser") if entry.get("level") == "SEVERE"]
    ours = [entry["message"] for entry in errors
            if re.search(r"ivrscript|widget|audio|blob:|media", entry["message"], re.I)]
    assert not ours, f"console errors from the widgets: {ours}\n{failed()}"
    shoot("done")

    # The widgets take their colours from the theme: the dark one darkens the keypad's card.
    def card() -> str:
        return str(js("return getComputedStyle(arguments[0]).backgroundColor", keypad))

    light = card()
    js("return window.jupyterapp.commands.execute('apputils:change-theme',"
       " {theme: 'JupyterLab Dark'})")
    wait_until("the dark theme", lambda: js("return document.body.dataset.jpThemeLight")
               == "false", STEP_TIMEOUT, failed)
    wait_until("the keypad's card in the dark theme's colours", lambda: card() != light,
               STEP_TIMEOUT, failed)
    shoot("dark-theme")
