"""Shared fixtures: tiny arch files and the repository root."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import settings

import nas

# The suite draws the same examples on every run, so a run's verdict depends on the code only (CI cannot fail
# on an example no earlier run drew); HYPOTHESIS_PROFILE=explore draws new ones to look for more.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

# No test reads or writes the user's ``~/.cache/nas``: a profiled ``local`` target there would change what
# ``nas targets`` lists. Set on import, before collection, since some tests are parametrised by the targets.
os.environ["NAS_HOME"] = tempfile.mkdtemp(prefix="nas-home-")

ROOT = Path(__file__).resolve().parent.parent
TINY_DIR = ROOT / "tests" / "tiny"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Test tensors are tiny: one intra-op thread avoids OpenMP spin-waiting, which made them up to 10x slower
    with two threads on a busy 2-core machine (the CLI's --threads defaults to 1 for the same reason)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_files() -> list[Path]:
    return sorted(TINY_DIR.glob("*.yaml"))


@pytest.fixture(scope="session")
def tiny_pooling() -> nas.Arch:
    return nas.Arch.load(TINY_DIR / "mixer_pooling.yaml")


def seeded_generator() -> torch.Generator:
    """The same random stream in every test that asks: references and modules see the same numbers."""
    return torch.Generator().manual_seed(0)


def randomise(module: torch.nn.Module) -> torch.nn.Module:
    """Give every parameter non-trivial values (biases and position tables start at zero, which would hide a
    wrong bias or table in a comparison with a reference)."""
    generator = seeded_generator()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return module
