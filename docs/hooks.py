"""MkDocs hook: a name ``langscale`` exports without a docstring is a warning, so
``mkdocs build --strict`` (CI) fails on it as it does on a broken link."""

from __future__ import annotations

import logging
from typing import Any

import griffe

LOG = logging.getLogger("mkdocs.plugins.langscale")


def on_pre_build(config: Any) -> None:
    package = griffe.load("langscale", search_paths=["python"], resolve_aliases=False)
    missing: list[str] = []
    for name in package.exports or []:
        if name.startswith("__"):
            continue
        try:
            target = package[name].final_target if package[name].is_alias else package[name]
        except (griffe.AliasResolutionError, griffe.CyclicAliasError, KeyError):
            continue
        if target.is_attribute:  # `X = _core.X`: documented where it is defined
            continue
        if not target.docstring:
            missing.append(f"langscale.{name}")
    for path in missing:
        LOG.warning("no docstring: %s", path)
