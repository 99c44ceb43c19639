"""The FFT mixers (SpectFormer's global filter, AFFNet's adaptive filter) against a slow circular convolution.

By the convolution theorem a filter ``M`` on the spectrum is a depthwise circular convolution with the kernel
``irfft2(M)``; the reference below computes that convolution directly, one shift at a time, from the same filter.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nas.arch import Site
from nas.blocks.affnet import AdaptiveFrequencyCfg, AdaptiveFrequencyFilter, AffBlockCfg
from nas.blocks.fourier import spectrum
from nas.blocks.spectformer import GlobalFilter, GlobalFilterCfg
from nas.cost import profile_module
from nas.errors import ConfigError
from nas.op_classes import op_class
from nas.space import load_space
from tests.conftest import randomise, seeded_generator

SIZES = [(6, 8), (5, 7), (4, 5)]  # even, odd and mixed sides: the spectrum's Nyquist column or none


def circular_convolution(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``out[b, c, i, j] = sum_{a, d} x[b, c, (i - a) % H, (j - d) % W] * kernel[b, c, a, d]``, shift by shift."""
    height, width = x.shape[-2:]
    out = torch.zeros_like(x)
    for a in range(height):
        for d in range(width):
            out += torch.roll(x, shifts=(a, d), dims=(-2, -1)) * kernel[..., a, d, None, None]
    return out


def kernel_of(filter_: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The spatial kernel of a (possibly non-Hermitian) half-spectrum filter."""
    return torch.fft.irfft2(filter_, s=size)


@pytest.mark.parametrize("size", SIZES)
def test_global_filter_is_a_circular_convolution_with_its_learned_kernel(size: tuple[int, int]) -> None:
    mixer = randomise(GlobalFilter(GlobalFilterCfg(), dim=3, size=size)).double()
    x = torch.randn(2, 3, *size, generator=seeded_generator(), dtype=torch.float64)
    kernel = kernel_of(torch.view_as_complex(mixer.weight), size)
    torch.testing.assert_close(mixer(x), circular_convolution(x, kernel.expand(2, -1, -1, -1)), atol=1e-10,
                               rtol=1e-10)


@pytest.mark.parametrize("size", SIZES)
def test_adaptive_filter_is_a_circular_convolution_with_the_kernel_its_input_makes(size: tuple[int, int]) -> None:
    aff = randomise(AdaptiveFrequencyFilter(8, 2, 0.01, "relu")).double()
    x = torch.randn(2, 8, *size, generator=seeded_generator(), dtype=torch.float64)
    kernel = kernel_of(aff.mask(spectrum(x)), size)  # one kernel per sample and channel: a dynamic convolution
    torch.testing.assert_close(aff(x), circular_convolution(x, kernel), atol=1e-10, rtol=1e-10)
    assert not torch.allclose(kernel[0], kernel[1]), "the mask must depend on the input"


def test_the_soft_threshold_zeroes_small_mask_entries() -> None:
    aff = AdaptiveFrequencyFilter(8, 2, 10.0, "relu")  # a threshold above every entry of a small init
    mask = aff.mask(spectrum(torch.randn(1, 8, 6, 6, generator=seeded_generator())))
    assert torch.count_nonzero(mask) == 0


def test_the_ffts_are_traced_as_fft_ops_with_their_radix_2_flops() -> None:
    report = profile_module(GlobalFilter(GlobalFilterCfg(), dim=4, size=(8, 8)), (4, 8, 8))
    ffts = [op for op in report.ops if op_class(op.name) == "fft"]
    assert [op.name for op in ffts] == ["aten._fft_r2c", "aten._fft_c2r"]
    assert all(op.flops == int(2.5 * 4 * 64 * math.log2(64)) for op in ffts)
    assert report.macs == 0  # an FFT is not a multiply-accumulate layer


@pytest.mark.parametrize("cfg", [AdaptiveFrequencyCfg(groups=3), AffBlockCfg(groups=5)])
def test_filter_groups_must_divide_the_width(cfg: AdaptiveFrequencyCfg | AffBlockCfg) -> None:
    with pytest.raises(ConfigError, match="groups do not divide the width 16"):
        cfg.check(Site(16, 16, 8, 8))


def test_metaformer_samples_draw_the_frequency_and_wavelet_mixers() -> None:
    space = load_space("metaformer")
    archs = [space.decode(vector) for vector in space.sample_vectors(np.random.default_rng(0), 300)]
    mixers = {block.mixer.kind for arch in archs for stage in arch.stages for block in stage.blocks}
    assert {"global_filter", "adaptive_frequency", "wavemix"} <= mixers
    assert any(arch.stem.kind == "spectformer" for arch in archs)
    assert any(arch.head.kind == "class_attention" for arch in archs)
