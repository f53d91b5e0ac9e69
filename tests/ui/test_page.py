"""The page for people (``/ui``) in headless chromium against a real gunicorn (see conftest.py):
no console errors and nothing fetched from elsewhere; the versions listed are the repository's,
a broken one with its reason; the "try it" form shows what the API answers, refuses bad input
in the browser and shows the server's refusal; the keyboard reaches and submits the form; the
live figures follow real requests; screenshots at desktop and phone widths.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver import Chrome as WebDriver  # get_log is chromium's
from selenium.webdriver.remote.webelement import WebElement

import modelrepo
from tests.support.server import Server

T = TypeVar("T")
WAIT_SECONDS = 20  # for the browser and the server to catch up; never a verdict on speed
IRIS_ROW = [6.7, 3.0, 5.2, 2.3]
PAGES = ["/", "/ui", "/ui/models/iris", "/ui/models/wine", "/ui/models/tiny",
         "/ui/models/census", "/ui/models/wine/compare", "/ui/models/tiny/compare?a=2&b=4"]


# ----------------------------------------------------------------------------------- helpers


def wait_for(what: str, check: Callable[[], T | None]) -> T:
    """``check()`` once it is truthy; fails saying ``what`` after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def visit(browser: WebDriver, server: Server, path: str) -> None:
    browser.get(server.url + path)
    wait_for(f"{path} to load",
             lambda: browser.execute_script("return document.readyState") == "complete")


def console_problems(browser: WebDriver) -> list[dict[str, Any]]:
    """The console's errors and warnings since the last call (CSP violations are errors)."""
    return [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def requested_urls(browser: WebDriver) -> list[str]:
    """Every URL the browser requested since the last call (chromium's network log)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def api(server: Server, path: str, body: Any | None = None) -> tuple[int, Any]:
    """(status, JSON answer) of a GET, or a POST of ``body`` as JSON."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def infer_body(row: Sequence[float | None]) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32",
                        "data": row}]}


def version_rows(browser: WebDriver, model: str) -> list[tuple[int, str, str]]:
    """(version, state, reason) of each row of the model's versions table on this page."""
    table = browser.find_element(By.CSS_SELECTOR, f'table.versions[data-model="{model}"]')
    rows = []
    for row in table.find_elements(By.CSS_SELECTOR, "tr.version"):
        reasons = row.find_elements(By.CSS_SELECTOR, ".reason")
        rows.append((int(row.get_attribute("data-version") or 0),
                     row.get_attribute("data-status") or "",
                     reasons[0].text if reasons else ""))
    return rows


def expected_rows(server: Server, repository: Path, model: str) -> list[tuple[int, str, str]]:
    """What the versions table must say: the server's repository index (READY, or UNAVAILABLE
    with the reason) and the retired versions on disk, newest first."""
    status, index = api(server, "/v2/repository/index", {})
    assert status == 200, index
    entries = {int(e["version"]): e for e in index if e["name"] == model and "version" in e}
    assert set(entries) == set(modelrepo.version_dirs(repository / model))
    ready = [n for n, e in entries.items() if e["state"] == "READY"]
    rows: dict[int, tuple[int, str, str]] = {}
    for number, entry in entries.items():
        if entry["state"] == "READY":
            rows[number] = (number, "live" if number == max(ready) else "loaded", "")
        else:
            state, _, reason = entry["reason"].partition(": ")  # "broken: ...", "not loaded: ..."
            rows[number] = (number, state, reason)
    for number in modelrepo.retired_versions(repository / model):
        rows[number] = (number, "retired", "")
    return [rows[n] for n in sorted(rows, reverse=True)]


def prediction_bars(browser: WebDriver, count: int) -> list[WebElement]:
    return wait_for(f"{count} probability bars", lambda: (
        bars if len(bars := browser.find_elements(By.CSS_SELECTOR, "#try-result .class-bar"))
        == count else None))


def fill(browser: WebDriver, model: str, row: list[float]) -> None:
    for i, value in enumerate(row):
        field = browser.find_element(By.ID, f"f-{model}-{i}")
        field.clear()
        field.send_keys(str(value))


def save_full_page(browser: WebDriver, path: Path, width: int) -> None:
    browser.set_window_size(width, 900)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, min(int(height) + 20, 6000))
    assert browser.save_screenshot(str(path)), path


# ------------------------------------------------------------------------------------- tests


@pytest.fixture
def page(browser: WebDriver, ui_server: Server) -> WebDriver:
    """The browser at desktop width with its logs drained."""
    browser.set_window_size(1280, 900)
    browser.get("about:blank")
    browser.get_log("browser")
    browser.get_log("performance")
    return browser


def test_pages_load_without_console_errors_or_requests_elsewhere(page: WebDriver,
                                                                ui_server: Server) -> None:
    for path in PAGES:
        visit(page, ui_server, path)
        problems = console_problems(page)
        assert not problems, (path, problems)
        urls = requested_urls(page)
        # the log sees the page itself, so an empty log cannot pass for a clean one
        assert any(u.startswith(ui_server.url + "/ui") for u in urls), (path, urls)
        elsewhere = [u for u in urls if urlsplit(u).scheme not in ("data", "about")
                     and urlsplit(u).netloc != urlsplit(ui_server.url).netloc]
        assert not elsewhere, (path, elsewhere)
        timing = page.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(name.startswith(ui_server.url + "/") for name in timing), (path, timing)
    visit(page, ui_server, "/")  # a browser asking for / lands on the page
    assert urlsplit(page.current_url).path == "/ui"


@pytest.mark.parametrize("model", ["iris", "wine", "tiny", "census"])
def test_version_list_matches_the_repository(page: WebDriver, ui_server: Server,
                                             ui_repository: Path, model: str) -> None:
    expected = expected_rows(ui_server, ui_repository, model)
    for path in ("/ui", f"/ui/models/{model}"):
        visit(page, ui_server, path)
        shown = version_rows(page, model)
        assert [(n, s) for n, s, _ in shown] == [(n, s) for n, s, _ in expected], path
        for (number, state, reason), (_, _, expected_reason) in zip(shown, expected):
            if state in ("broken", "not loaded"):
                assert reason == expected_reason and reason, (path, number)
    if model == "wine":  # what the fixture built: the table covers every state
        assert [(n, s) for n, s, _ in expected] == [
            (4, "retired"), (3, "broken"), (2, "live"), (1, "loaded")]
    if model == "tiny":
        assert [s for _, s, _ in expected] == ["live", "loaded", "loaded", "not loaded"]


def test_broken_version_shows_its_reason(page: WebDriver, ui_server: Server) -> None:
    visit(page, ui_server, "/ui/models/wine")
    (reason,) = [r for n, s, r in version_rows(page, "wine") if n == 3 and s == "broken"]
    status, answer = api(ui_server, "/v2/models/wine/versions/3/ready")
    assert status == 503
    assert reason and reason in answer["error"]  # the reason the API gives
    assert "sha256" in reason


def test_form_is_prefilled_with_the_training_means(page: WebDriver, ui_server: Server,
                                                   ui_repository: Path) -> None:
    metadata = json.loads((ui_repository / "iris" / "1" / "metadata.json").read_text())
    means = metadata["training"]["standardization"]["mean"]
    visit(page, ui_server, "/ui/models/iris")
    for i, (name, mean) in enumerate(zip(metadata["feature_names"], means)):
        field = page.find_element(By.ID, f"f-iris-{i}")
        label = page.find_element(By.CSS_SELECTOR, f'label[for="f-iris-{i}"]')
        assert label.text == name
        assert field.get_attribute("required") is not None
        assert float(field.get_attribute("value") or "nan") == pytest.approx(mean, rel=1e-5)


def test_form_shows_the_probabilities_the_api_returns(page: WebDriver,
                                                      ui_server: Server) -> None:
    visit(page, ui_server, "/ui/models/iris")
    fill(page, "iris", IRIS_ROW)
    page.find_element(By.ID, "try-submit").click()
    bars = prediction_bars(page, 3)
    shown = {b.get_attribute("data-label"): float(b.get_attribute("data-probability") or "nan")
             for b in bars}
    status, answer = api(ui_server, "/v2/models/iris/versions/1/infer", infer_body(IRIS_ROW))
    assert status == 200, answer
    (probabilities,) = [o["data"] for o in answer["outputs"] if o["name"] == "probabilities"]
    assert shown == dict(zip(["setosa", "versicolor", "virginica"], probabilities))
    best = max(shown, key=lambda label: shown[label])
    assert f"predicts {best}" in page.find_element(By.ID, "try-answer").text
    for bar in bars:  # each bar is labelled with its class and its value
        assert str(bar.get_attribute("data-label")) in bar.text
        assert f"{float(bar.get_attribute('data-probability') or 'nan'):.4f}" in bar.text
    assert not console_problems(page)

    # The curl command shown is the same request: run it.
    command = page.find_element(By.ID, "try-curl").text
    assert command.startswith(f"curl -s -X POST '{ui_server.url}/v2/models/iris/versions/1/")
    if shutil.which("curl") is None:
        pytest.skip("no curl on PATH to run the page's command with")
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == answer["outputs"], shlex.quote(command)


def test_form_refuses_bad_input_in_the_browser(page: WebDriver, ui_server: Server) -> None:
    visit(page, ui_server, "/ui/models/iris")
    field = page.find_element(By.ID, "f-iris-2")
    field.clear()  # required: an empty feature never leaves the browser
    page.find_element(By.ID, "try-submit").click()
    time.sleep(0.5)  # a request, if the page wrongly sent one, would be under way by now
    assert page.execute_script("return arguments[0].matches(':invalid')", field)
    assert page.execute_script("return arguments[0].validationMessage", field)
    assert not [u for u in requested_urls(page) if u.endswith("/infer")]
    assert not page.find_elements(By.CSS_SELECTOR, "#try-result .class-bar")


def test_form_shows_the_servers_refusal(page: WebDriver, ui_server: Server) -> None:
    visit(page, ui_server, "/ui/models/iris")
    field = page.find_element(By.ID, "f-iris-0")
    # Past the browser's checks (as a hand-edited page would be): the server decides.
    page.execute_script("document.getElementById('try-form').noValidate = true;"
                        "arguments[0].removeAttribute('max'); arguments[0].value = '1e39';",
                        field)
    page.find_element(By.ID, "try-submit").click()
    error = wait_for("the error message", lambda: (
        e if (e := page.find_element(By.ID, "try-error")).is_displayed() else None))
    status, answer = api(ui_server, "/v2/models/iris/versions/1/infer",
                         infer_body([1e39, *IRIS_ROW[1:]]))
    assert status == 400
    assert error.text == f"The server answered 400: {answer['error']}"


def test_form_sends_empty_fields_as_missing_to_a_model_that_imputes(page: WebDriver,
                                                                    ui_server: Server) -> None:
    visit(page, ui_server, "/ui/models/census")
    field = page.find_element(By.ID, "f-census-3")
    assert field.get_attribute("required") is None
    field.clear()
    page.find_element(By.ID, "try-submit").click()
    bars = prediction_bars(page, 3)
    row: list[float | None] = [float(page.find_element(By.ID, f"f-census-{i}")
                                     .get_attribute("value") or 0) for i in range(13)]
    row[3] = None
    status, answer = api(ui_server, "/v2/models/census/versions/1/infer", infer_body(row))
    assert status == 200, answer
    (probabilities,) = [o["data"] for o in answer["outputs"] if o["name"] == "probabilities"]
    assert [float(b.get_attribute("data-probability") or "nan") for b in bars] == probabilities


def test_keyboard_reaches_and_submits_the_form(page: WebDriver, ui_server: Server) -> None:
    visit(page, ui_server, "/ui/models/iris")
    wanted = ["try-version", *(f"f-iris-{i}" for i in range(4)), "try-submit"]
    reached: list[str] = []
    body = page.find_element(By.TAG_NAME, "body")
    body.click()
    for _ in range(60):
        page.switch_to.active_element.send_keys(Keys.TAB)
        active = page.switch_to.active_element
        reached.append(active.get_attribute("id") or active.tag_name)
        if reached[-1] == "try-submit":
            break
    assert [r for r in reached if r in wanted] == wanted, reached
    # keyboard focus is visible
    assert page.execute_script(
        "return getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.switch_to.active_element.send_keys(Keys.ENTER)
    prediction_bars(page, 3)


def test_live_figures_follow_real_requests(page: WebDriver, ui_server: Server) -> None:
    body = infer_body([0.5] * 13)
    for _ in range(3):
        assert api(ui_server, "/v2/models/wine/versions/2/infer", body)[0] == 200
    assert api(ui_server, "/v2/models/wine/versions/2/infer",
               infer_body([0.5] * 12))[0] == 400

    def figures() -> dict[str, str] | None:
        visit(page, ui_server, "/ui")
        row = page.find_element(By.CSS_SELECTOR,
                                'table.versions[data-model="wine"] tr[data-version="2"]')
        found = {"requests": row.find_element(By.CSS_SELECTOR, ".requests").text,
                 "errors": row.find_element(By.CSS_SELECTOR, ".errors").text}
        return found if int(found["requests"]) >= 4 and int(found["errors"]) >= 1 else None

    wait_for("wine version 2's figures on /ui", figures)  # the workers flush every 0.2 s


def test_compare_shows_both_versions(page: WebDriver, ui_server: Server) -> None:
    visit(page, ui_server, "/ui/models/wine")
    page.find_element(By.CSS_SELECTOR, "form.compare button").click()
    wait_for("the compare page", lambda: "/compare" in page.current_url)
    headings = [h.text for h in page.find_elements(By.CSS_SELECTOR, ".side-by-side h2")]
    assert headings == ["Version 1", "Version 2"]
    glance = page.find_element(By.CSS_SELECTOR, "table.glance").text
    assert "requests" in glance and "errors" in glance


def test_screenshots_at_desktop_and_phone_widths(page: WebDriver, ui_server: Server,
                                                 artifacts: Path,
                                                 ui_summary: list[str]) -> None:
    written = []
    for width, name in ((1280, "desktop"), (390, "phone")):
        page.set_window_size(width, 900)
        visit(page, ui_server, "/ui/models/iris")
        fill(page, "iris", IRIS_ROW)
        page.find_element(By.ID, "try-submit").click()
        prediction_bars(page, 3)
        # Nothing wider than the screen: wide tables scroll in their own box.
        assert page.execute_script("return document.documentElement.scrollWidth") <= width
        for path, stem in (("/ui/models/iris", "model"), ("/ui", "index")):
            if stem == "index":
                visit(page, ui_server, path)
                assert page.execute_script(
                    "return document.documentElement.scrollWidth") <= width
            target = artifacts / f"ui-{stem}-{name}.png"
            save_full_page(page, target, width)
            assert target.stat().st_size > 10_000
            written.append(str(target))
        for path in ("/ui/models/wine", "/ui/models/wine/compare", "/ui/models/census"):
            page.set_window_size(width, 900)
            visit(page, ui_server, path)
            assert page.execute_script(
                "return document.documentElement.scrollWidth") <= width, (path, width)
    page.set_window_size(1280, 900)
    ui_summary.append("screenshots: " + ", ".join(written))
    print("\n".join(written))
