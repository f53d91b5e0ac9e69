"""The container test's figures (durations, image sizes, cold start) in pytest's closing summary,
where CI's log shows them whatever the output capture."""

from __future__ import annotations

import pytest

_LINES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_LINES] = []


@pytest.fixture(scope="session")
def docker_summary(pytestconfig: pytest.Config) -> list[str]:
    """Lines to print under "docker compose" at the end of the run."""
    return pytestconfig.stash[_LINES]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    lines = config.stash.get(_LINES, [])
    if lines:
        terminalreporter.section("docker compose")
        for line in lines:
            terminalreporter.write_line(line)
