"""Shared fixtures: the generated GeoTIFFs (made on demand) and the location of the shared real data."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# The tests run on two CPU cores shared with other work: with one intra-op thread a small convolution
# takes ~0.2 ms, with two threads spin-waiting against a busy neighbour ~30 ms.  EOTRANSFER_TEST_THREADS
# overrides it.
torch.set_num_threads(int(os.environ.get("EOTRANSFER_TEST_THREADS", "1")))

# caches (weights, features, the user catalogue) go to a throw-away folder, never the user's ~/.cache
os.environ.setdefault("EOTRANSFER_CACHE", tempfile.mkdtemp(prefix="eotransfer-test-cache-"))


def _load_make_fixtures() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_fixtures", TESTS / "data" / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_fixtures = _load_make_fixtures()


@pytest.fixture(scope="session")
def generated() -> Path:
    """``tests/_generated``, (re)written by ``tests/data/make_fixtures.py`` when missing or stale."""
    return make_fixtures.ensure()


@pytest.fixture(scope="session")
def eurosat_like(generated: Path) -> Path:
    return generated / "eurosat_like"


@pytest.fixture(scope="session")
def bad(generated: Path) -> Path:
    return generated / "bad"


@pytest.fixture(scope="session")
def fixture_spec() -> ModuleType:
    """The fixture script itself, for its constants (classes, sizes, offsets)."""
    return make_fixtures


@pytest.fixture(scope="session")
def probe_model(eurosat_like: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved linear-probe model (resnet18, 2 epochs) on the fixture, shared by the tests that score saved models."""
    import eotransfer

    out = tmp_path_factory.mktemp("probe") / "model"
    eotransfer.fit(eurosat_like, bands="eurosat-ms", strategy="linear-probe", backbone="resnet18", epochs=2,
                   accelerator="cpu", progress=False, verbose=False, out=str(out))  # fmt: skip
    return out


@pytest.fixture
def resume_matches_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``check(data, cls, method, calls, **fit_options)``: fit once uninterrupted; fit again, killed when
    ``cls.method`` is called for the ``calls + 1``-th time, then resumed; assert both end bit-identical."""
    import eotransfer

    def check(data: Any, cls: type, method: str, calls: int, **opts: Any) -> None:
        full = eotransfer.fit(data, out=str(tmp_path / "full"), **opts)
        count = {"n": 0}
        real = getattr(cls, method)

        def dying(self: Any, *args: Any) -> Any:
            count["n"] += 1
            if count["n"] > calls:
                raise KeyboardInterrupt
            return real(self, *args)

        with monkeypatch.context() as m:
            m.setattr(cls, method, dying)
            with pytest.raises(KeyboardInterrupt):
                eotransfer.fit(data, out=str(tmp_path / "resumed"), **opts)
        resumed = eotransfer.fit(data, out=str(tmp_path / "resumed"), resume=True, **opts)
        a, b = full.model.state_dict(), resumed.model.state_dict()
        assert [k for k in a if not torch.equal(a[k], b[k])] == []

    return check


CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium_dom() -> Callable[[Path], str]:
    """``dom(page)``: the page loaded in headless Chromium (Debian's ``chromium``), its DOM after loading; fails on
    any console message (our pages carry no script, so any is an error). Skips where Chromium is not installed."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (make install installs it as root)")
    exe = CHROMIUM

    def dom(page: Path) -> str:
        proc = subprocess.run(
            [exe, "--headless=new", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=2000", "--dump-dom", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
        assert not console, console
        return proc.stdout

    return dom
