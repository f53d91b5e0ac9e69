"""The README's two commands, as make would run them (``make -n -B``: printed, not run)."""

from __future__ import annotations

import re
import subprocess

from tests.support import ROOT


def planned(target: str) -> list[str]:
    """The commands ``make <target>`` runs from scratch, without running them."""
    result = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True,
                            text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    return result.stdout.splitlines()


def extras(commands: list[str]) -> set[str]:
    found: set[str] = set()
    for line in commands:
        if "pip install" in line and (match := re.search(r"-e '\.\[([a-z,]+)\]'", line)):
            found |= set(match.group(1).split(","))
    return found


def test_make_run_installs_only_what_running_needs() -> None:
    commands = planned("run")
    assert extras(commands) == {"train", "serve"}, commands
    assert not [c for c in commands if "pip install" in c and "--quiet -e" in c], \
        "the long install shows pip's progress"
    assert "a minute or two the first time" in "\n".join(commands), "say what is installed"


def test_make_test_adds_the_test_tools() -> None:
    assert extras(planned("test")) == {"train", "serve", "test"}
