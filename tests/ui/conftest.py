"""The page for people in a real browser: Debian's chromium, driven through its chromedriver by
Selenium, against a real gunicorn serving a repository made here.

Where chromium or chromedriver is missing the browser tests skip, saying how to get them
(``make test`` installs them as root); ``SOFTSERVE_REQUIRE_BROWSER=1`` (set by .ci/run) makes
that a failure. Selenium is told both paths, so Selenium Manager never runs (it would download a
driver); ``SE_OFFLINE`` keeps it offline should anything call it.

Screenshots go to ``build/test-artifacts/ui/`` (git-ignored; ``SOFTSERVE_TEST_ARTIFACTS``
chooses another folder); their paths are printed in pytest's closing summary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver import Chrome as WebDriver  # get_log is chromium's

import modelrepo
from tests.support import ROOT
from tests.support.models import publish_linear_model
from tests.support.server import Server, start_server

REQUIRE = "SOFTSERVE_REQUIRE_BROWSER"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HOW_TO_GET_THEM = "make test installs them as root (apt-get install chromium chromium-driver)"
ARTIFACTS_ENV = "SOFTSERVE_TEST_ARTIFACTS"

_LINES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_LINES] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    lines = config.stash.get(_LINES, [])
    if lines:
        terminalreporter.section("the page (tests/ui)")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def ui_summary(pytestconfig: pytest.Config) -> list[str]:
    """Lines to print under "the page" at the end of the run."""
    return pytestconfig.stash[_LINES]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where the browser tests write their screenshots."""
    folder = Path(os.environ.get(ARTIFACTS_ENV) or ROOT / "build" / "test-artifacts") / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return
    message = (f"BROWSER TESTS NOT RUN: {', '.join(missing)} missing (Debian's chromium and "
               f"chromium-driver); {HOW_TO_GET_THEM}. {REQUIRE}=1 turns this skip into a failure.")
    if os.environ.get(REQUIRE, "") not in ("", "0"):
        pytest.fail(f"{message} {REQUIRE} is set: the browser tests must run.", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def ui_repository(iris_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris trained for real (loss curve, confusion matrix, per-class figures, parity) and
    linear models: wine 13 x 2 with versions 1 and 2 loaded, 3 broken (model.onnx is not a
    graph) and 4 retired; tiny 1 x 2 with four versions, of which the server keeps three;
    census 13 x 3, which imputes missing values."""
    repository = tmp_path_factory.mktemp("ui-repository")
    shutil.copytree(iris_repository / "iris", repository / "iris")
    for seed in (1, 2):
        publish_linear_model(repository, "wine", 13, 2, seed=seed)
    broken = publish_linear_model(repository, "wine", 13, 2, seed=3)
    (broken.path / modelrepo.MODEL_FILE).write_bytes(b"not an onnx graph")
    retired = publish_linear_model(repository, "wine", 13, 2, seed=4)
    with modelrepo.model_lock(repository / "wine"):
        modelrepo.retire_version(repository / "wine", retired.version)
    for seed in range(4):
        publish_linear_model(repository, "tiny", 1, 2, seed=seed)
    publish_linear_model(repository, "census", 13, 3, impute=True, seed=5)
    return repository


@pytest.fixture(scope="session")
def ui_server(ui_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real 2-worker gunicorn over ``ui_repository``, keeping three versions per model and
    flushing its figures every 0.2 s."""
    srv = start_server(ui_repository, tmp_path_factory.mktemp("ui-logs"),
                       ready_path="/v2/health/ready",
                       env={"SOFTSERVE_KEEP_VERSIONS": "3",
                            "SOFTSERVE_METRICS_FLUSH_SECONDS": "0.2"})
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    """Headless chromium through Debian's chromedriver (a selenium WebDriver), 1280 x 900,
    keeping its console and network logs."""
    _require_browser()
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--window-size=1280,900", "--disable-gpu",
                     "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--disable-default-apps", "--hide-scrollbars",
                     "--force-device-scale-factor=1"):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # chromium refuses to run as root with its sandbox
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
