"""WaveMix's Haar wavelet transform: exact reconstruction, and equality with the textbook two-tap filter bank."""

from __future__ import annotations

import math

import pytest
import torch

from nas.arch import Site
from nas.blocks.wavemix import WaveMixer, WaveMixerCfg, haar_dwt, haar_idwt
from nas.errors import ConfigError
from tests.conftest import seeded_generator


def filter_bank(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One level by the definition: filter rows then columns with Haar's low ``[1, 1] / sqrt 2`` and high
    ``[1, -1] / sqrt 2`` taps, keeping every second sample; one output pixel at a time."""
    taps = {"low": (1 / math.sqrt(2), 1 / math.sqrt(2)), "high": (1 / math.sqrt(2), -1 / math.sqrt(2))}
    height, width = x.shape[-2] // 2, x.shape[-1] // 2
    bands = {}
    for rows in ("low", "high"):
        for columns in ("low", "high"):
            out = torch.zeros(*x.shape[:-2], height, width, dtype=x.dtype)
            for i in range(height):
                for j in range(width):
                    for a in range(2):
                        for b in range(2):
                            out[..., i, j] += taps[rows][a] * taps[columns][b] * x[..., 2 * i + a, 2 * j + b]
            bands[rows, columns] = out
    details = torch.stack([bands["high", "low"], bands["low", "high"], bands["high", "high"]], dim=-3)
    return bands["low", "low"], details


def test_dwt_then_inverse_reconstructs_exactly() -> None:
    x = torch.randn(2, 3, 16, 24, generator=seeded_generator())
    low, details = haar_dwt(x)
    assert low.shape == (2, 3, 8, 12) and details.shape == (2, 3, 3, 8, 12)
    torch.testing.assert_close(haar_idwt(low, details), x, atol=1e-6, rtol=0)


def test_multilevel_dwt_reconstructs_exactly() -> None:
    x = torch.randn(1, 2, 32, 32, generator=seeded_generator())
    low, pyramid = x, []
    for _ in range(4):
        low, details = haar_dwt(low)
        pyramid.append(details)
    for details in reversed(pyramid):
        low = haar_idwt(low, details)
    torch.testing.assert_close(low, x, atol=1e-6, rtol=0)


def test_dwt_is_the_haar_filter_bank() -> None:
    x = torch.randn(1, 2, 6, 8, generator=seeded_generator(), dtype=torch.float64)
    low, details = haar_dwt(x)
    expected_low, expected_details = filter_bank(x)
    torch.testing.assert_close(low, expected_low)
    torch.testing.assert_close(details, expected_details)


def test_dwt_keeps_the_energy() -> None:  # orthonormal: nothing lost, nothing added
    x = torch.randn(1, 4, 8, 8, generator=seeded_generator(), dtype=torch.float64)
    low, details = haar_dwt(x)
    torch.testing.assert_close(low.square().sum() + details.square().sum(), x.square().sum())


def test_the_mixer_returns_the_input_size_at_every_level_count() -> None:
    for levels in (1, 2, 3):
        mixer = WaveMixer(WaveMixerCfg(levels=levels), dim=16, size=(16, 16)).eval()
        assert mixer(torch.randn(2, 16, 16, 16, generator=seeded_generator())).shape == (2, 16, 16, 16)


@pytest.mark.parametrize(("cfg", "site", "message"), [
    (WaveMixerCfg(levels=3), Site(16, 16, 12, 12), "3 wavelet levels need sides divisible by 8, got 12x12"),
    (WaveMixerCfg(levels=1), Site(18, 18, 8, 8), "the width 18 must be a multiple of 4"),
])
def test_the_map_and_width_must_fit_the_levels(cfg: WaveMixerCfg, site: Site, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cfg.check(site)
