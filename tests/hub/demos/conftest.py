"""Fixtures of the demo tests: the browser ones come from tests/browser.py; ``demo_bundles`` builds the
demos' bundles as ``make demos`` does (``npm ci`` when node_modules is missing or older than the lock,
then ``npm run build`` when a source is newer than the last build), so a clean checkout tests them."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hub.demos import demo_folder
from tests.browser import (  # noqa: F401
    PAGE_TIMEOUT_MS,
    artifacts,
    browser,
    browser_hubs,
    chromium_path,
    context,
)
from tests.installs import installing

NPM_TIMEOUT = 600


def _newest(paths: list[Path]) -> float:
    return max(p.stat().st_mtime for p in paths)


def _npm(folder: Path, *args: str) -> None:
    done = subprocess.run(
        ["npm", *args, "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT,
    )
    if done.returncode != 0:
        pytest.fail(f"npm {' '.join(args)} in {folder} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def demo_bundles() -> Path:
    """static/demo/dist, built from the pinned packages when missing or stale."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are required to build the demo bundles (make demos)")
    folder = demo_folder()
    lock = folder / "package-lock.json"
    installed = folder / "node_modules" / ".package-lock.json"
    built = folder / "dist" / ".built"
    with installing(folder):  # the other xdist worker may build at the same time
        if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
            _npm(folder, "ci")
        sources = [lock, folder / "build.mjs", *folder.glob("src/**/*.js")]
        if not built.exists() or built.stat().st_mtime < _newest(sources):
            _npm(folder, "run", "build")
    return built.parent


@pytest_asyncio.fixture(loop_scope="session")
async def new_context(browser: Any) -> AsyncIterator[Callable[[], Awaitable[Any]]]:  # noqa: F811
    """More browser contexts for one test (one per person: their own storage), closed at its end."""
    opened: list[Any] = []

    async def make() -> Any:
        ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
        ctx.set_default_timeout(PAGE_TIMEOUT_MS)
        opened.append(ctx)
        return ctx

    yield make
    for ctx in opened:
        await ctx.close()
