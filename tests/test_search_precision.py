"""Mixed-precision search (issue 25's acceptance, at a small budget): on Xeon and on the ZCU104, with the latency
predictors and one-shot accuracy from a supernet whose subnets are fake-quantised per block, the Pareto front
holds points with different per-block precisions, and `nas history` (its design column) and the plot show them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nas
from nas.arch import Precision
from nas.cli import main
from nas.data import load_dataset
from nas.report import pareto_info, weight_bits
from nas.runs import ObjectiveSpec, Run
from nas.summary import precision_mix
from nas.supernet import TrainOptions, TrainSettings, train_supernet

INT8 = Precision.from_spec("int8:channel/int8")


def _mobilenet(*precisions: Precision) -> nas.Arch:
    """MobileNetV2 with its blocks at ``precisions`` in turn (the last one repeated to the end)."""
    arch = nas.zoo.get("mobilenetv2_100")
    chosen = iter([*precisions, *[precisions[-1]] * sum(len(stage.blocks) for stage in arch.stages)])
    return arch.replace(stages=tuple(
        dataclasses.replace(stage, blocks=tuple(dataclasses.replace(block, precision=next(chosen))
                                                for block in stage.blocks))
        for stage in arch.stages))


# ---------------------------------------------------------------------------- summaries


def test_weight_bits_average_each_blocks_parts() -> None:
    assert weight_bits(nas.zoo.get("mobilenetv2_100")) == 32.0
    mixed = _mobilenet(Precision(), Precision(), Precision.from_spec("int4:channel/int8"), INT8)
    assert weight_bits(mixed) == pytest.approx((2 * 32 + 4 + 14 * 8) / 17)
    assert weight_bits(_mobilenet(Precision(ffn_weights="int8", ffn_activations="int8"))) == 20.0


def test_the_plot_shows_precision_only_when_it_varies() -> None:
    float_archs = [nas.zoo.get("mobilenetv2_100"), nas.zoo.get("resnet50")]
    mixed = [nas.zoo.get("mobilenetv2_100"), _mobilenet(INT8)]
    objectives = [ObjectiveSpec("accuracy", "accuracy", "maximize"), ObjectiveSpec("latency", "latency_ms", "minimize")]

    def table(archs: list[nas.Arch]) -> pd.DataFrame:
        return pd.DataFrame({"accuracy": [0.5, 0.4], "latency_ms": [2.0, 1.0],
                             "arch": [arch.to_json() for arch in archs]})

    info = pareto_info(table(mixed), objectives=objectives, zoo_space=False)
    assert info.mixed_precision and info.precisions == tuple(precision_mix(arch) for arch in mixed)
    np.testing.assert_array_equal(info.bits, [32.0, 8.0])
    unmixed = pareto_info(table(float_archs), objectives=objectives, zoo_space=False)
    assert not unmixed.mixed_precision and unmixed.precisions == ("fp32 x17", "fp32 x16")


# ---------------------------------------------------------------------------- the search


@pytest.fixture(scope="module")
def supernet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A supernet over `fliqs` after a few steps on the bundled data: enough for one-shot scores that depend on
    each block's precision (the rounding is real), not for good ones."""
    out = tmp_path_factory.mktemp("fliqs-supernet")
    train_supernet("fliqs", load_dataset(None), TrainSettings(epochs=1, batch_size=32, num_random=1, seed=0),
                   width=0.125, resolution=32, scan=16, out=out,
                   options=TrainOptions(max_steps=12, progress=False, evaluate=False))
    return out / "checkpoint.pt"


# Xeon's default setting prices each op at its own format (int8 and bf16 at their peaks); the ZCU104's default
# deploys float32 ops quantised to int8 like the rest, so its +fp32 setting is the one where a block left in
# float really runs on the A53 beside the DPU's int8 blocks.
@pytest.mark.parametrize(("target", "setting"), [("xeon", "onnxruntime_fp32"), ("zcu104", "vitis_ai_2_5+fp32")])
def test_the_front_of_a_mixed_precision_search_mixes_precisions(target: str, setting: str, supernet: Path,
                                                                 tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--space", "fliqs", "--target", target, "--setting", setting, "--accuracy", "supernet",
                 "--supernet", str(supernet), "--budget", "16", "--population", "8", "--out", str(tmp_path),
                 "--json"]) == 0
    capsys.readouterr()
    (folder,) = tmp_path.iterdir()
    run = Run.open(folder)
    front = run.pareto()
    mixes = {precision_mix(run.arch(arch_id)) for arch_id in front["arch_id"]}
    assert len(mixes) >= 2, mixes
    assert front["latency_ms"].nunique() >= 2  # the precisions are priced: the front trades latency for accuracy
    history = run.history()
    assert history["latency_ms"].nunique() > len(history) // 2
    assert main(["history", str(folder), "--pareto"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "design" and len(lines) == 1 + len(front)
    for arch_id in front["arch_id"]:  # each front row's design column ends with its precision mix
        row = next(line for line in lines[1:] if line.split()[1] == arch_id)
        assert row.rstrip().endswith(precision_mix(run.arch(arch_id)))
    info = pareto_info(run, zoo_space=False)
    assert info.mixed_precision and (folder / "pareto.png").stat().st_size > 0
