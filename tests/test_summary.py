"""The one-line design summary `nas history` shows: kinds and precisions, counted."""

from __future__ import annotations

from dataclasses import replace

import nas
from nas.arch import Precision
from nas.summary import design_summary, precision_mix


def test_the_summary_counts_mixers_and_ffns_and_leaves_out_float32() -> None:
    arch = nas.zoo.get("efficientformer_l1")
    blocks = [block for stage in arch.stages for block in stage.blocks]
    mixers, ffns = design_summary(arch).split("; ")
    assert sum(int(part.rsplit(" x", 1)[1]) for part in mixers.split(", ")) == len(blocks)
    assert f"attention x{sum('attention' in block.mixer.kind for block in blocks)}" in mixers
    assert ffns == f"mlp x{len(blocks)}"


def test_a_mixed_precision_point_shows_its_mix() -> None:
    arch = nas.zoo.get("poolformer_s12")
    first = arch.stages[0]
    int8 = Precision("int8:channel", "int8", ffn_weights="int4")
    blocks = tuple(replace(block, precision=int8) for block in first.blocks)
    mixed = arch.replace(stages=(replace(first, blocks=blocks), *arch.stages[1:]))
    assert precision_mix(mixed) == "fp32 x10, int8:channel/int8 ffn int4/int8 x2"
    assert design_summary(mixed).endswith("; fp32 x10, int8:channel/int8 ffn int4/int8 x2")
