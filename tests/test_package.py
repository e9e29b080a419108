"""The package surface: the typed stub matches the built module, the CLI runs the demo."""

from __future__ import annotations

import json
import subprocess
import sys

import langscale


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


def test_demo_runs_and_reports(tmp_path):
    out = tmp_path / "demo.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "langscale.cli",
            "demo",
            "--requests",
            "60",
            "--rate",
            "200",
            "--latency-ms",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "provider calls" in result.stdout
    report = json.loads(out.read_text())
    assert report["plain"]["ok"] == report["langscale"]["ok"] == 60
    distinct = report["settings"]["distinct_questions"]
    scaled = report["langscale"]
    # concurrent first askers of a question may all miss, so calls fall between the two
    assert distinct <= scaled["provider_calls"] < 60
    assert scaled["cache_hits"] + scaled["provider_calls"] == 60
    assert 0 < scaled["semantic_hits"] <= scaled["cache_hits"], "retyped questions hit"
    assert report["plain"]["provider_calls"] == 60
