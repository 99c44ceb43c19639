"""Shared fixtures: tiny arch files and the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

import nas

ROOT = Path(__file__).resolve().parent.parent
TINY_DIR = ROOT / "tests" / "tiny"


def tiny_files() -> list[Path]:
    return sorted(TINY_DIR.glob("*.yaml"))


@pytest.fixture(scope="session")
def tiny_pooling() -> nas.Arch:
    return nas.Arch.load(TINY_DIR / "mixer_pooling.yaml")
