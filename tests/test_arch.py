"""The Arch contract: round trips, stable ids, validation with field paths and file:line."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nas
from nas.arch import Arch
from nas.errors import ConfigError, UnknownKindError
from nas.yamlio import loads_yaml

BLOCK_CHOICES = [
    {"mixer": {"kind": "pooling", "pool_size": 3}, "ffn": {"kind": "mlp", "ratio": 4}, "norm": "groupnorm1",
     "layer_scale": 1e-5},
    {"mixer": "identity", "ffn": {"kind": "conv_mlp", "ratio": 2, "act": "relu"}, "norm": "batchnorm"},
    {"mixer": {"kind": "pooling", "pool_size": 5}, "ffn": "none", "norm": "layernorm"},
    {"mixer": {"kind": "pooling", "pool_size": 1}, "ffn": {"kind": "mlp", "ratio": 1.5, "batchnorm": True},
     "norm": "none", "precision": {"weights": "int8:channel", "activations": "int8:affine"}},
]


@st.composite
def arch_dicts(draw: st.DrawFn) -> dict:
    """Random valid arch documents over the core kinds, with shuffled key order."""
    stages = []
    for index in range(draw(st.integers(1, 4))):
        blocks = [draw(st.sampled_from(BLOCK_CHOICES)) for _ in range(draw(st.integers(1, 3)))]
        stages.append({
            "dim": draw(st.integers(1, 96)),
            "downsample": None if index == 0 else {"kind": "conv", "kernel": draw(st.sampled_from([2, 3])),
                                                   "stride": 2, "norm": draw(st.sampled_from(["none", "batchnorm"]))},
            "blocks": blocks,
        })
    return {
        "schema": 1,
        "name": draw(st.one_of(st.none(), st.text("abcdef_", min_size=1, max_size=8))),
        "input": {"resolution": draw(st.sampled_from([64, 96, 224])), "channels": draw(st.sampled_from([1, 3]))},
        "stem": {"kind": "overlap", "kernel": 7, "stride": 4, "dim": stages[0]["dim"]},
        "stages": stages,
        "head": {"kind": "linear", "num_classes": draw(st.integers(0, 1000)),
                 "norm": draw(st.sampled_from(["none", "layernorm"]))},
    }


def _shuffled(value: object, rng: random.Random) -> object:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: _shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [_shuffled(item, rng) for item in value]
    return value


@settings(max_examples=150, deadline=None)
@given(arch_dicts(), st.integers(0, 2**16))
def test_round_trips_and_id_ignores_key_order(data: dict, seed: int) -> None:
    arch = Arch.from_dict(data)
    assert Arch.from_yaml(arch.to_yaml()) == arch
    assert Arch.from_json(arch.to_json()) == arch
    assert Arch.from_yaml(arch.to_yaml()).id == arch.id
    shuffled = Arch.from_dict(_shuffled(data, random.Random(seed)))
    assert shuffled == arch and shuffled.id == arch.id


def test_id_changes_with_the_architecture_not_with_metadata(tiny_pooling: Arch) -> None:
    assert tiny_pooling.replace(name="other").id == tiny_pooling.id
    assert tiny_pooling.with_resolution(96).id != tiny_pooling.id
    assert len(tiny_pooling.id) == 12


def test_repeat_and_pattern_expand_and_compress(tiny_pooling: Arch) -> None:
    data = tiny_pooling.to_dict()
    block_a = data["stages"][0]["blocks"]["block"]
    block_b = {**block_a, "layer_scale": None}
    data["stages"][0]["blocks"] = {"repeat": 3, "pattern": [block_a, block_b]}
    arch = Arch.from_dict(data)
    assert len(arch.stages[0].blocks) == 6
    assert arch.to_dict()["stages"][0]["blocks"]["repeat"] == 3
    assert Arch.from_dict(arch.to_dict()) == arch


@pytest.mark.parametrize(
    ("change", "path", "fragment"),
    [
        (lambda d: d["stages"][0]["blocks"]["block"]["mixer"].update(pool_size=4),
         "stages[0].blocks[0].mixer.pool_size", "odd"),
        (lambda d: d["stages"][0]["blocks"]["block"]["mixer"].update(kind="poling"),
         "stages[0].blocks.block.mixer.kind", "known: pooling"),  # parse errors use the document's own path
        (lambda d: d["stages"][1].update(dim=0), "stages[1].dim", ">= 1"),
        (lambda d: d["stages"][1].update(width=3), "stages[1].width", "unknown key"),
        (lambda d: d["stages"][0]["blocks"]["block"]["ffn"].update(ratio="big"), "stages[0].blocks.block.ffn.ratio",
         "number"),
        (lambda d: (d["stem"].update(padding=0), d["input"].update(resolution=4)), "stem", "too small"),
        (lambda d: d.update(schema=2), "schema", "must be 1"),
        (lambda d: d["head"].update(pool="cls"), "head.pool", "class token"),
        (lambda d: d["stages"][0]["blocks"]["block"].update(precision={"weights": "int9"}),
         "stages[0].blocks[0].precision.weights", "unknown number format 'int9'"),
    ],
)
def test_validation_names_the_field(tiny_pooling: Arch, change, path: str, fragment: str) -> None:
    data = json.loads(tiny_pooling.to_json())
    change(data)
    with pytest.raises(ConfigError) as caught:
        Arch.from_dict(data)
    assert caught.value.path == path
    assert fragment in str(caught.value)


def test_unknown_kind_lists_closest_first() -> None:
    with pytest.raises(UnknownKindError, match=r"unknown mixer kind 'pool'; known: pooling"):
        nas.arch.config_type("mixer", "pool")


def test_errors_from_a_file_carry_file_and_line(tmp_path, tiny_pooling: Arch) -> None:
    text = tiny_pooling.to_yaml().replace("pool_size: 3", "pool_size: 2")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        Arch.load(path)
    line = next(number for number, row in enumerate(text.splitlines(), 1) if "pool_size: 2" in row)
    assert str(caught.value).startswith(f"{path}:{line}: stages[0].blocks[0].mixer.pool_size:")


def test_duplicate_keys_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"<string>:2: duplicate key 'a' \(first on line 1\)"):
        loads_yaml("a: 1\na: 2\n")


def test_malformed_yaml_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        Arch.from_yaml("stages: [1, 2\n")


def test_stem_width_defaults_to_the_first_stage(tiny_pooling: Arch) -> None:
    data = json.loads(tiny_pooling.to_json())
    del data["stem"]["dim"]
    assert Arch.from_dict(data).stem.dim == data["stages"][0]["dim"]


def test_arch_is_frozen(tiny_pooling: Arch) -> None:
    with pytest.raises(AttributeError):
        tiny_pooling.name = "x"  # type: ignore[misc]
