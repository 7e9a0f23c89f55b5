"""Shared fixtures: a running app on a loopback port and a headless Chromium driven by Playwright."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

import core  # noqa: F401  (installs the torch-before-tensorflow import guard for the whole test run)

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def shared_data(*parts: str) -> Path:
    """A folder of ../shared/data, or a skip saying why the regression check cannot run here."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not present: the regression floor on real data needs ../shared/data")
    return path


@pytest.fixture(scope="session", autouse=True)
def scratch_records(tmp_path_factory):
    """Predictions made by the tests (in-process and by the app servers they start) go to a throwaway database, never
    to the user's records.db; a test that needs its own database sets DATABASE_URL itself."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", f"sqlite:///{tmp_path_factory.mktemp('records') / 'records.db'}")
        yield


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(script: Path = ROOT / "app.py", env: dict | None = None, log: Path | None = None):
    """`streamlit run script` on a free loopback port with extra environment variables; yields its base URL."""
    port = _free_port()
    out = open(log, "w") if log else subprocess.DEVNULL
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    for key, value in (env or {}).items():  # a value of None removes the variable
        full_env.pop(key, None) if value is None else full_env.__setitem__(key, value)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        env=full_env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    tail = log.read_text()[-2000:] if log else ""
                    raise RuntimeError(f"streamlit did not start within 90 s: {script}\n{tail}")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def app_url():
    """The app with the shipped weights, started once per test run."""
    log = ROOT / ".pytest_cache" / "streamlit.log"
    log.parent.mkdir(exist_ok=True)
    with streamlit_server(log=log) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: .ci/run must install it (apt-get install chromium)")
        pytest.skip("no system Chromium: apt-get install chromium to run browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        yield b
        b.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.call_failed = report.failed
    return report


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    yield pg
    if getattr(request.node, "call_failed", False):  # what the page and the server showed, for a CI log to explain
        with contextlib.suppress(Exception):
            print(f"--- page {pg.url} when the test failed ---\n{pg.inner_text('body')[-4000:]}")
        server_log = ROOT / ".pytest_cache" / "streamlit.log"
        if server_log.exists():
            print(f"--- end of {server_log} ---\n{server_log.read_text()[-3000:]}")
    context.close()


IDLE = '[data-testid="stApp"][data-test-connection-state="CONNECTED"][data-test-script-state="notRunning"]'


def wait_for_app(pg, timeout_ms: int = 60_000, quiet_ms: int = 1_000) -> None:
    """Wait until Streamlit is connected and its script has stayed idle for `quiet_ms`: a page that reruns itself
    (st.rerun, the drawing canvas reporting its first size) is idle for a moment between runs, and an action sent in
    that moment can be lost. After an interaction, wait for the element you expect as well: the rerun it causes may
    not have started yet."""
    pg.evaluate("window.__appBusyAt = performance.now()")
    pg.wait_for_function(
        """([idle, quiet]) => {
            const now = performance.now();
            if (!document.querySelector(idle) || !document.querySelector('[data-testid="stMain"]')) {
                window.__appBusyAt = now;
                return false;
            }
            if (window.__appBusyAt === undefined) window.__appBusyAt = now;  // the page was reloaded meanwhile
            return now - window.__appBusyAt >= quiet;
        }""",
        arg=[IDLE, quiet_ms], polling=100, timeout=timeout_ms)


def assert_no_errors(pg) -> None:
    exceptions = pg.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()


def zip_of(entries: dict[str, bytes]) -> bytes:
    """A zip archive (bytes) holding each name with its bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()
