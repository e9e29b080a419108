"""The package surface: the typed stub matches the built module, the version."""

from __future__ import annotations

import subprocess
import sys

import pytest

import langscale


@pytest.mark.slow
def test_stub_matches_the_built_module():
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "langscale._core"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_version_is_exposed():
    assert langscale.__version__.count(".") == 2
