"""Browser tests: Debian's Chromium driven by Playwright's Python package (never Playwright's own browser
download), one browser per test session, one context per test.

The set-up installs what it needs, like tests/hub/test_js_sdk.py installs its npm packages: when
``/usr/bin/chromium`` is missing it runs ``apt-get install -y chromium`` (root, with a timeout, after an
``apt-get update`` if the first attempt fails) and fails the tests with a clear message if it cannot.
Playwright itself is a test dependency (pyproject's ``test`` extra, pinned in constraints.txt).

Screenshots go to ``$SWITCHBOARD_ARTIFACTS/screenshots`` when that variable is set, else under the
session's pytest temporary directory; the path is printed at the end of the run.

Everything browser-related runs on the session's event loop (the browser is shared across tests), so a
browser test is ``@pytest.mark.asyncio(loop_scope="session")`` and starts its hubs with ``browser_hubs``
(not ``make_hub``, whose servers live on the test's own loop). Use these fixtures from a conftest:
``from tests.browser import artifacts, browser, browser_hubs, context  # noqa: F401``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hub.app import Switchboard
from hub.config import Config
from tests.conftest import RunningHub, asgi_servers, test_config
from tests.installs import installing

CHROMIUM = "/usr/bin/chromium"
INSTALL_TIMEOUT = 900
PAGE_TIMEOUT_MS = 10_000
"""How long a page waits for an element or a text (generous: a busy 2-core machine)."""
_ARTIFACTS_KEY = pytest.StashKey[set[Path]]()


def _install_chromium() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(
            f"{CHROMIUM} is missing and cannot be installed here: run `apt-get install -y chromium` as root"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", f"DPkg::Lock::Timeout={INSTALL_TIMEOUT}"]  # another apt-get on the machine: wait for it
    install = ["apt-get", *wait, "install", "-y", "-q", "--no-install-recommends", "chromium"]
    try:
        if subprocess.run(install, env=env, capture_output=True, timeout=INSTALL_TIMEOUT).returncode != 0:
            update = ["apt-get", *wait, "update", "-q"]
            subprocess.run(update, env=env, capture_output=True, timeout=INSTALL_TIMEOUT)
            done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
            if done.returncode != 0:
                pytest.fail(f"apt-get install chromium failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    except subprocess.TimeoutExpired:
        pytest.fail(f"apt-get install chromium did not finish in {INSTALL_TIMEOUT} s")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} does not exist")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not os.path.exists(CHROMIUM):
        with installing("apt"):  # the other xdist worker may install it at the same time
            if not os.path.exists(CHROMIUM):
                _install_chromium()
    return CHROMIUM


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium_path: str) -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("Playwright's Python package is missing: make install (the test extra pins it)")
    async with async_playwright() as pw:
        # --no-sandbox: the tests may run as root (CI does), where Chromium's sandbox refuses to start.
        launched = await pw.chromium.launch(
            executable_path=chromium_path, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def context(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser context (its own cookies and storage) for one test."""
    ctx = await browser.new_context(viewport={"width": 1360, "height": 860})
    ctx.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest.fixture(scope="session")
def artifacts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots are saved (printed at the end of the run)."""
    configured = os.environ.get("SWITCHBOARD_ARTIFACTS", "").strip()
    base = Path(configured) if configured else tmp_path_factory.getbasetemp()
    folder = base / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    request.config.stash.setdefault(_ARTIFACTS_KEY, set()).add(folder)
    workeroutput = getattr(request.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: its controller prints the summary
        workeroutput["screenshots"] = str(folder)
    return folder


def collect_worker_artifacts(node: Any) -> None:
    """For the pytest-xdist controller's ``pytest_testnodedown``: where that worker saved screenshots."""
    folder = node.workeroutput.get("screenshots")
    if folder:
        node.config.stash.setdefault(_ARTIFACTS_KEY, set()).add(Path(folder))


def report_artifacts(config: pytest.Config, terminalreporter: Any) -> None:
    """For ``pytest_terminal_summary`` (tests/conftest.py): say where the screenshots are (once; a folder
    per pytest-xdist worker, or one with ``$SWITCHBOARD_ARTIFACTS``)."""
    folders = config.stash.get(_ARTIFACTS_KEY, None)
    if folders:
        del config.stash[_ARTIFACTS_KEY]
        for folder in sorted(folders):
            shots = sorted(p.name for p in folder.glob("*.png"))
            terminalreporter.write_line(f"browser screenshots ({len(shots)}): {folder}")


BrowserHubs = Callable[..., Awaitable[RunningHub]]


@pytest_asyncio.fixture(loop_scope="session")
async def browser_hubs() -> AsyncIterator[BrowserHubs]:
    """Start hubs on the session's loop (where the browser lives): ``await browser_hubs(**config)``."""
    async with asgi_servers() as start:

        async def factory(config: Config | None = None, **overrides: Any) -> RunningHub:
            cfg = config if config is not None else test_config(**overrides)
            sb = Switchboard(cfg)
            server, port = await start(sb, cfg)
            return RunningHub(sb, server, port)

        yield factory
