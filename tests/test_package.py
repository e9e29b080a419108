"""The package surface: the typed stub matches the built module, the version."""

from __future__ import annotations

import subprocess
import sys

import pytest

import langscale


@pytest.mark.slow
def test_stub_matches_the_built_module(tmp_path):
    # The stub against the module, following no import: mypy otherwise analysed all of
    # langchain_core and pydantic that langscale/__init__.py imports (a minute of CI; stubtest
    # is never incremental), none of which the stub uses.
    config = tmp_path / "stubtest.ini"
    config.write_text("[mypy]\nfollow_imports = skip\n")
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "langscale._core", "--mypy-config-file", config],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_version_is_exposed():
    assert langscale.__version__.count(".") == 2
