"""Search spaces: loading, errors with file:line, sampling, mutation, crossover, encoding, size, CLI."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nas
from nas.cli import main
from nas.search.constraints import probe_points
from nas.space import Space, list_spaces, load_space

SHIPPED = ["convnext", "crossvit", "efficientformer", "efficientvit", "fliqs", "isotropic", "metaformer", "swin",
           "vanillanet", "volo"]
PROPERTY = settings(max_examples=20, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SAMPLES_PER_EXAMPLE = 12  # 20 examples x 12 = 240 samples per space

TINY = """\
schema: 1
name: tiny
description: A small space for exact checks.
input: {resolution: 64, channels: 3}
stem:
  choice:
    - {kind: patch, patch: {choice: [4, 8]}}
    - {kind: overlap, kernel: 7, stride: 4}
stages:
  - dim: {ordinal: [16, 32]}
    downsample: null
    blocks:
      - repeat: {range: [0, 2]}
        independent: true
        block:
          mixer: {choice: [identity, {kind: pooling, pool_size: {choice: [3, 5]}}]}
          ffn: {kind: mlp, ratio: 2}
          norm: layernorm
      - repeat: {choice: [1, 2]}
        pattern:
          - {mixer: {kind: attention, heads: {choice: [1, 2], id: heads}}, norm: layernorm}
          - {mixer: {kind: attention, heads: {same: heads}}, norm: layernorm}
head: {kind: linear, num_classes: {choice: [10, 100]}}
"""


def _write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _line_of(text: str, needle: str, occurrence: int = 1) -> int:
    lines = [number for number, line in enumerate(text.splitlines(), 1) if needle in line]
    return lines[occurrence - 1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Space:
    return Space.load(_write(tmp_path_factory.mktemp("tiny"), TINY))


# ---------------------------------------------------------------------------
# shipped spaces


def test_shipped_spaces_are_listed_and_load() -> None:
    assert list_spaces() == SHIPPED
    for name in SHIPPED:
        space = load_space(name)
        assert space.name == name and space.description
        assert space.size() > 1 and space.num_slots == len(space.decisions)
    assert nas.Space is Space and nas.space.load_space is load_space


def test_unknown_space_lists_close_names() -> None:
    with pytest.raises(nas.UnknownKindError, match="unknown space 'convnex'; known: convnext"):
        load_space("convnex")


@pytest.mark.parametrize("name", SHIPPED)
@PROPERTY
@given(seed=st.integers(0, 2**32 - 1))
def test_samples_are_valid_points_that_round_trip_and_mutate_inside(name: str, seed: int) -> None:
    space = load_space(name)
    rng = np.random.default_rng(seed)
    vectors = space.sample_vectors(rng, SAMPLES_PER_EXAMPLE)
    assert vectors.shape == (SAMPLES_PER_EXAMPLE, space.num_slots) and vectors.dtype == np.int16
    mutated = space.mutate_vectors(vectors, rng)
    children = space.crossover_vectors(vectors, mutated, rng)
    for vector, mutant, child in zip(vectors, mutated, children, strict=True):
        arch = space.decode(vector)  # constructing the Arch validates it
        assert np.array_equal(space.encode(arch), vector)  # the shipped spaces have one vector per Arch
        assert not np.array_equal(mutant, vector)
        assert space.contains(space.decode(mutant)) == (True, "")
        assert space.contains(space.decode(child)) == (True, "")
    assert nas.Arch.from_yaml(arch.to_yaml()) == arch
    features = space.features(vectors)
    assert features.shape == (SAMPLES_PER_EXAMPLE, space.num_features) and np.isfinite(features).all()


def _arch_fail_codes(space: Space, vectors: np.ndarray) -> list[int]:
    """Per vector, -1 if its Arch constructs, else the part Arch rejects: 0 input or stem, k + 1 stage k, then head."""
    stages = len(space._tree.stages)
    out = []
    for vector in vectors:
        try:
            space.decode(vector)
            out.append(-1)
        except nas.ConfigError as exc:
            stage = re.match(r"stages\[(\d+)\]", exc.path)
            out.append(int(stage.group(1)) + 1 if stage else stages + 1 if exc.path.startswith("head") else 0)
    return out


def _agrees_with_arch(space: Space, vectors: np.ndarray) -> None:
    """Batch validity (the fail code picks the part a sample redraws) and single-vector validity both agree with
    Arch construction."""
    expected = _arch_fail_codes(space, vectors)
    assert space._validity.fail_codes(vectors).tolist() == expected
    for vector, code in zip(vectors[:100], expected[:100], strict=True):
        assert space.is_valid(vector) == (code < 0), space.decode(vector) if code < 0 else vector


@pytest.mark.parametrize("name", SHIPPED)
def test_fast_validity_agrees_with_arch_construction(name: str) -> None:
    space = load_space(name)
    _agrees_with_arch(space, space.sample_vectors(np.random.default_rng(7), 300, valid_only=False))


@pytest.mark.parametrize("name", SHIPPED)
def test_samples_build_on_meta_and_the_smallest_run_at_64px(name: str) -> None:
    space = load_space(name)
    archs = [space.decode(vector) for vector in space.sample_vectors(np.random.default_rng(3), 6)]
    sizes = []
    for arch in archs:
        model = nas.build(arch, device="meta")
        resolution = arch.input.resolution
        out = model(torch.empty(2, 3, resolution, resolution, device="meta"))
        assert out.shape == (2, arch.head.num_classes)  # type: ignore[attr-defined]
        sizes.append(sum(p.numel() for p in model.parameters()))
    smallest = archs[int(np.argmin(sizes))]
    try:
        tiny = smallest.with_resolution(64)
    except nas.ConfigError:
        pytest.skip(f"{name}: its points do not fit 64 px (built on meta only)")
    torch.manual_seed(0)
    model = nas.build(tiny).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, tiny.head.num_classes) and torch.isfinite(out).all()  # type: ignore[attr-defined]


def test_neighbours_are_single_moves_inside_the_space() -> None:
    space = load_space("convnext")
    arch = nas.zoo.get("convnext_tiny")
    base = space.encode(arch)
    neighbours = space.neighbour_vectors(base)
    assert len(neighbours) > 0
    for vector in neighbours:
        changed = np.flatnonzero(vector != base)
        assert len(changed) == 1  # convnext has no conditional decisions
        slot = changed[0]
        assert abs(int(vector[slot]) - int(base[slot])) == 1  # every convnext decision is ordered
    assert all(space.contains(other)[0] for other in space.neighbours(arch))


def test_mutation_moves_ordered_decisions_one_step() -> None:
    space = load_space("efficientformer")
    rng = np.random.default_rng(0)
    vectors = space.sample_vectors(rng, 200)
    mutated = space.mutate_vectors(vectors, rng)
    ordered = np.array([d.ordered for d in space.decisions])
    both = (vectors >= 0) & (mutated >= 0)
    steps = np.abs(mutated.astype(int) - vectors.astype(int))[both & ordered[None, :]]
    assert steps.max() == 1
    assert ((vectors != mutated).sum(axis=1) >= 1).all()


def test_merge_takes_the_donors_decisions_only_where_asked() -> None:
    space = load_space("metaformer")
    rng = np.random.default_rng(0)
    base = space.sample_vectors(rng, 1)[0]
    donors = space.sample_vectors(rng, 50)
    paths = [decision.path for decision in space.decisions]
    trunk = np.array([path == "stem" or path.endswith(".downsample") for path in paths])
    merged = space.merge_vectors(base, donors, trunk, rng)
    assert merged.shape == donors.shape and all(space.is_valid(vector) for vector in merged)
    np.testing.assert_array_equal(merged[:, trunk], donors[:, trunk])  # kinds: always present, always the donor's
    kept = ~trunk & (base >= 0) & (merged >= 0).all(axis=0)
    np.testing.assert_array_equal(merged[:, kept], np.broadcast_to(base[kept], merged[:, kept].shape))
    assert len({tuple(row) for row in merged[:, trunk]}) > 10  # the donors' variety comes through
    np.testing.assert_array_equal(space.merge_vectors(base, donors, np.zeros(len(paths), dtype=bool), rng),
                                  np.broadcast_to(base, donors.shape))
    with pytest.raises(nas.errors.ConfigError, match="one flag per decision"):
        space.merge_vectors(base, donors, trunk[:-1], rng)


def test_randomness_comes_only_from_the_generator() -> None:
    space = load_space("metaformer")
    random.seed(1)
    np.random.seed(1)
    before = (random.getstate(), np.random.get_state()[1].copy())
    first = space.sample_vectors(np.random.default_rng(42), 50)
    again = space.sample_vectors(np.random.default_rng(42), 50)
    assert np.array_equal(first, again)
    assert np.array_equal(space.mutate_vectors(first, np.random.default_rng(5)),
                          space.mutate_vectors(first, np.random.default_rng(5)))
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        space.sample_vectors(42, 1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# a small space checked exhaustively


def _enumerate(space: Space) -> list[list[int]]:
    """Every canonical vector, from the public decision metadata alone."""
    points: list[list[int]] = [[]]
    for decision in space.decisions:
        grown = []
        for point in points:
            exists = decision.parent < 0 or point[decision.parent] in decision.when
            grown.extend(point + [index] for index in range(len(decision.options))) if exists else grown.append(
                point + [-1])
        points = grown
    return points


def test_size_is_exact_and_every_vector_is_a_distinct_point(tiny: Space) -> None:
    points = _enumerate(tiny)
    assert tiny.size() == len(points) == 3 * 2 * (1 + 3 + 9) * 4 * 2
    ids = set()
    for point in points:
        arch = tiny.decode(np.array(point))
        ids.add(arch.id)
        assert list(tiny.encode(arch)) == point
        heads = [block.mixer.heads for block in arch.stages[0].blocks if block.mixer.kind == "attention"]
        assert len(set(heads)) == 1  # tied: the pair shares its heads
    assert len(ids) == len(points)
    assert abs(tiny.log10_size() - np.log10(len(points))) < 1e-9


def test_sampling_covers_the_options(tiny: Space) -> None:
    vectors = tiny.sample_vectors(np.random.default_rng(0), 2000)
    for slot, decision in enumerate(tiny.decisions):
        taken = set(vectors[:, slot][vectors[:, slot] >= 0].tolist())
        assert taken == set(range(len(decision.options))), decision.path


def test_vectors_must_be_canonical(tiny: Space) -> None:
    vector = tiny.sample_vectors(np.random.default_rng(0), 1)[0]
    with pytest.raises(nas.ConfigError, match=f"vector of {tiny.num_slots} slots"):
        tiny.decode(vector[:-1])
    broken = vector.copy()
    broken[0] = 9
    with pytest.raises(nas.ConfigError, match=r"^stem: option index 9 out of range"):
        tiny.decode(broken)
    stem_option = int(vector[0])
    broken = vector.copy()
    broken[1] = -1 if stem_option == 0 else 0  # the patch size exists only for the patch stem
    with pytest.raises(nas.ConfigError, match=r"stem.choice\[0\].patch: this decision"):
        tiny.decode(broken)


def test_contains_explains_why_not(tiny: Space) -> None:
    arch = tiny.decode(tiny.sample_vectors(np.random.default_rng(1), 1)[0])
    attention = next(index for index, block in enumerate(arch.stages[0].blocks) if block.mixer.kind == "attention")
    blocks = list(arch.stages[0].blocks)
    blocks[attention] = nas.Block(mixer=nas.arch.parse_component("mixer", {"kind": "attention", "heads": 4}, "m"),
                                  ffn=blocks[attention].ffn, norm=blocks[attention].norm)
    other = arch.replace(stages=(nas.Stage(arch.stages[0].dim, None, tuple(blocks)),))
    assert tiny.contains(other) == (False, f"stages[0].blocks[{attention}].mixer.heads: 4 is not one of [1, 2]")
    with pytest.raises(nas.ConfigError, match="not a point of space 'tiny'"):
        tiny.encode(other)
    ok, reason = load_space("convnext").contains(nas.zoo.get("deit_tiny"))
    assert not ok and reason == "stages: 1 stages; the space has 4"
    ok, reason = load_space("swin").contains(nas.zoo.get("convnext_tiny"))
    assert (ok, reason) == (False, "stages[0].blocks[0].mixer.kind: 'convnext' is not 'window_attention'")
    swin = nas.zoo.get("swin_tiny")
    first, second = swin.stages[0].blocks
    second = dataclasses.replace(second, mixer=dataclasses.replace(second.mixer, heads=4))
    untied = swin.replace(stages=(dataclasses.replace(swin.stages[0], blocks=(first, second)), *swin.stages[1:]))
    ok, reason = load_space("swin").contains(untied)
    assert not ok and "the space ties it to a decision this Arch takes as 4" in reason, reason


def test_precision_is_a_choice_like_any_other(tmp_path: Path) -> None:
    text = TINY.replace("norm: layernorm}", "norm: layernorm, precision: {choice: [{weights: fp32}, "
                                            "{weights: 'int8:channel', activations: int8}]}}")
    space = Space.load(_write(tmp_path, text))
    vectors = space.sample_vectors(np.random.default_rng(0), 200)
    formats = set()
    for vector in vectors[:40]:
        arch = space.decode(vector)
        formats |= {block.precision.weights for block in arch.stages[0].blocks}
        assert np.array_equal(space.encode(arch), vector)
    assert formats == {"fp32", "int8:channel"}


def test_bounded_retries_end_in_a_clear_error(tmp_path: Path) -> None:
    # one valid point in 4 * 5: heads 3 divides only width 48; a single try per point cannot be relied on
    text = TINY.replace("dim: {ordinal: [16, 32]}", "dim: {ordinal: [16, 32, 48, 64]}").replace(
        "heads: {choice: [1, 2], id: heads}", "heads: {choice: [3, 5, 7, 9, 11], id: heads}")
    space = Space.load(_write(tmp_path, text))
    assert space.sample_vectors(np.random.default_rng(0), 20).shape[0] == 20
    with pytest.raises(nas.ConfigError, match="constraint infeasible in this space: no valid point in 1 tries"):
        space.sample_vectors(np.random.default_rng(0), 50, max_tries=1)


# ---------------------------------------------------------------------------
# bad input: file:line, key path, exit status 2


BAD = [
    ("unknown mixer", "{kind: pooling, pool_size: {choice: [3, 5]}}", "{kind: poolin, pool_size: {choice: [3, 5]}}",
     "mixer: {choice:", r"stages\[0\]\.blocks\[0\]\.block\.mixer\.choice\[1\]\.kind: unknown mixer kind 'poolin'; "
                        r"known: pooling"),
    ("unknown key", "{kind: pooling, pool_size: {choice: [3, 5]}}", "{kind: pooling, pool: {choice: [3, 5]}}",
     "mixer: {choice:", r"mixer\.choice\[1\]\.pool: unknown key 'pool' \(did you mean 'pool_size'\?\)"),
    ("type error", "dim: {ordinal: [16, 32]}", "dim: {ordinal: [16, wide]}",
     "dim: {ordinal", r"stages\[0\]\.dim\.ordinal\[1\]: must be an integer, got 'wide'"),
    ("duplicate key", "    downsample: null\n", "    downsample: null\n    dim: 8\n",
     "    dim: 8", r"stages\[0\]\.dim: duplicate key 'dim' \(first on line \d+\)"),
    ("impossible constraint", "heads: {choice: [1, 2], id: heads}", "heads: {choice: [5, 7], id: heads}",
     "heads: {choice: [5, 7]", r"stages\[0\]\.blocks\[1\]\.pattern\[0\]\.mixer\.heads: constraint infeasible in "
                               r"this space: no valid point in \d+ tries; 100% of samples fail here, e\.g\. "
                               r"stages\[0\]\.blocks\[\d\]\.mixer\.heads: \d does not divide dim \d+"),
    ("bad range", "repeat: {range: [0, 2]}", "repeat: {range: [2, 0]}",
     "repeat: {range", r"blocks\[0\]\.repeat\.range: low <= high must hold, but got \(low=2, high=0\)"),
    ("unknown tie", "heads: {same: heads}", "heads: {same: head}",
     "heads: {same", r"pattern\[1\]\.mixer\.heads\.same: no choice with id 'head' before this point"),
    ("kind as a choice", "{kind: linear, num_classes", "{kind: {choice: [linear]}, num_classes",
     "head:", r"head\.kind: 'kind' cannot be a choice"),
]


@pytest.mark.parametrize(("case", "old", "new", "line_needle", "message"), BAD, ids=[case[0] for case in BAD])
def test_bad_space_files_fail_with_file_line_and_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          case: str, old: str, new: str, line_needle: str,
                                                          message: str) -> None:
    assert old in TINY
    text = TINY.replace(old, new, 1)
    path = _write(tmp_path, text)
    line = _line_of(text, line_needle)
    with pytest.raises(nas.ConfigError) as caught:
        Space.load(path)
    assert str(caught.value).startswith(f"{path}:{line}: "), str(caught.value)
    assert re.search(message, str(caught.value)), str(caught.value)
    assert main(["space", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nas: error: {path}:{line}: ") and err.count("\n") == 1


def test_a_tie_must_exist_wherever_it_is_used(tmp_path: Path) -> None:
    text = TINY.replace("{kind: pooling, pool_size: {choice: [3, 5]}}",
                        "{kind: pooling, pool_size: {choice: [3, 5], id: pool}}").replace(
        "ffn: {kind: mlp, ratio: 2}\n", "ffn: {kind: mlp, ratio: 2}\n          layer_scale: {same: pool}\n")
    with pytest.raises(nas.ConfigError, match=r"layer_scale\.same: choice 'pool' gives a value of type int, but a "
                                              r"value of type float \| None is needed here"):
        Space.load(_write(tmp_path, text))
    text = TINY.replace("{kind: pooling, pool_size: {choice: [3, 5]}}",
                        "{kind: pooling, pool_size: {choice: [3, 5], id: pool}}").replace(
        "mixer: {kind: attention, heads: {same: heads}}", "mixer: {kind: pooling, pool_size: {same: pool}}")
    with pytest.raises(nas.ConfigError, match="choice 'pool' does not exist wherever this tie does"):
        Space.load(_write(tmp_path, text))


def test_a_tie_across_stages_is_part_of_the_later_stage(tmp_path: Path) -> None:
    """Stage 2's validity depends on a decision of stage 1: memoised verdicts must key on it."""
    text = """\
schema: 1
input: {resolution: 64}
stem: {kind: patch, patch: 4}
stages:
  - dim: {ordinal: [16, 24]}
    downsample: null
    blocks: {mixer: {kind: attention, heads: {choice: [2, 3, 4], id: heads}}, norm: layernorm}
  - dim: {ordinal: [32, 48]}
    downsample: {kind: conv, kernel: 2, stride: 2}
    blocks: {repeat: {range: [1, 2]}, block: {mixer: {kind: attention, heads: {same: heads}}, norm: layernorm}}
head: {kind: linear, num_classes: 10}
"""
    space = Space.load(_write(tmp_path, text))
    assert space.size() == 2 * 3 * 2 * 2
    raw = space.sample_vectors(np.random.default_rng(0), 400, valid_only=False)
    for vector in raw:
        try:
            arch = space.decode(vector)
        except nas.ConfigError:
            assert not space.is_valid(vector)
            continue
        assert space.is_valid(vector)
        assert {block.mixer.heads for stage in arch.stages for block in stage.blocks} == {
            arch.stages[0].blocks[0].mixer.heads}
    valid = {tuple(vector) for vector in space.sample_vectors(np.random.default_rng(1), 300)}
    assert len(valid) == 8 + 8 + 2  # heads 2 or 4: any widths and depths; heads 3: only widths 24 and 48


# Every structure the batch check compiles to a plan of its own: choices of whole stages, block structures and
# blocks; independent and shared runs (0 allowed: an empty stage), patterns, single blocks; ties of a stage, of
# blocks, of a block and of a width; nested value choices; mixers that read their block (efficientvit, mbconv),
# shrink the map (mbconv stride 2, repeated) or change the width (mbconv after a width change without a
# downsample, where the other mixers fail); class tokens; and invalid inputs, stems, widths, layer scales and
# precisions. Every stage that may change the width has a downsample option, so about 5% of raw draws are valid
# (enough for the sampler) and every part fails somewhere.
STRUCTURES = """\
schema: 1
name: structures
input: {resolution: {choice: [0, 32, 64, 96, 128]}, channels: 3}
stem:
  choice:
    - {kind: patch, patch: {choice: [0, 2, 4, 8]}}
    - {kind: patch, patch: 4, class_token: {choice: [false, true]}}
    - {kind: conv, hidden: [8], kernel: 3, stride: 2}
    - {kind: overlap, kernel: 7, stride: 4, padding: 3}
stages:
  - choice:
      - dim: {choice: [{ordinal: [16, 24]}, 32]}
        downsample: {choice: [null, {kind: conv, kernel: 1, stride: 1}]}
        blocks:
          - repeat: {range: [0, 2]}
            independent: true
            block:
              choice:
                - {mixer: {kind: attention, heads: {choice: [2, 4]}}, ffn: {kind: mlp, ratio: 2}, norm: layernorm}
                - {mixer: {kind: pooling, pool_size: 3}, ffn: {choice: [none, conv_mlp]},
                   norm: {choice: [layernorm, batchnorm]}, layer_scale: {choice: [null, -1.0, 1.0e-5, 1.0]}}
          - repeat: {choice: [0, 2]}
            pattern:
              - {mixer: {kind: window_attention, heads: {choice: [1, 2], id: heads}, window: {choice: [2, 4]},
                          shift: 0},
                 norm: layernorm}
              - {mixer: {kind: window_attention, heads: {same: heads}, window: 2, shift: 1}, norm: layernorm}
      - dim: 48
        downsample: {choice: [null, {kind: conv, kernel: 2, stride: 2}]}
        blocks:
          - repeat: {range: [1, 3]}
            block:
              id: block
              choice:
                - {mixer: {kind: mbconv, stride: {choice: [1, 2]}, expand_ratio: 2},
                   ffn: {choice: [none, {kind: mlp, ratio: 2}]}, norm: batchnorm}
                - {mixer: {kind: convnext, kernel: {ordinal: [3, 5]}}, ffn: {kind: mlp, ratio: 4}, norm: layernorm}
          - repeat: 2
            block: {same: block}
    id: first
  - dim: {ordinal: [0, 32, 64, 96], id: width}
    downsample: {choice: [null, patch_merging, {kind: conv, kernel: 3, stride: 2, padding: 1}]}
    blocks:
      id: blocks
      choice:
        - repeat: {range: [1, 3]}
          block:
            mixer: {kind: efficientvit, heads: 2, key_dim: 8, kernels: [3, 3], window: 4}
            ffn: {kind: mlp, ratio: 2, act: relu, bias: false, batchnorm: true}
            norm: {choice: [none, batchnorm]}
            precision: {choice: [{weights: fp32}, {weights: int16}]}
        - repeat: {range: [0, 3]}
          pattern:
            - {mixer: {kind: attention, heads: {choice: [4, 8]}}, norm: layernorm}
            - {mixer: {kind: pooling, pool_size: {choice: [3, 5]}}, norm: groupnorm1}
        - {mixer: {kind: mbconv, expand_ratio: 2}, ffn: none, norm: batchnorm}
        - {mixer: {kind: attention, heads: 4}, norm: layernorm}
  - dim: {same: width}
    downsample: {choice: [null, {kind: conv, kernel: 2, stride: 2}]}
    blocks: {same: blocks}
  - {same: first}
head: {kind: linear, pool: {choice: [avg, cls]}, num_classes: 10}
"""

CODE_PATHS = {  # module constants that route the check through its other code paths
    "default": {},
    "codebook": {"nas.space.validity.DIRECT": 0},  # every part's codes through a codebook
    "interned": {"nas.space.tables._WIDE": 0},  # every part interned by raw slot values
    "cleared": {"nas.space.validity._MEMORY_LIMIT": 50},  # the tables cleared before every batch
}


@pytest.mark.parametrize("mode", CODE_PATHS)
@pytest.mark.parametrize("source", ["structures", "metaformer"])
def test_fast_validity_agrees_on_every_plan_and_code_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            source: str, mode: str) -> None:
    for target, value in CODE_PATHS[mode].items():
        monkeypatch.setattr(target, value)
    path = _write(tmp_path, STRUCTURES) if source == "structures" else nas.space.spaces_dir() / "metaformer.yaml"
    space = Space.load(path)
    raw = space.sample_vectors(np.random.default_rng(11), 1000 if source == "structures" else 300, valid_only=False)
    _agrees_with_arch(space, raw)
    if source == "structures":
        codes = set(space._validity.fail_codes(raw).tolist())
        assert codes == {-1, 0, 1, 2, 3, 4, 5}, codes  # valid points, and failures in every part
    rng = np.random.default_rng(12)
    vectors = space.sample_vectors(rng, 60)  # the stage tied to the first is redrawn with the first
    for vector in np.concatenate([vectors, space.mutate_vectors(vectors, rng)]):
        assert space.contains(space.decode(vector)) == (True, "")


@pytest.mark.parametrize(("source", "count"), [("structures", 20)] + [(name, 4) for name in SHIPPED])
def test_every_valid_point_builds_and_runs_on_meta(tmp_path: Path, source: str, count: int) -> None:
    """Valid means buildable: a rule the walk lacked (a mixer given a width it cannot take) would pass the
    batch check and Arch construction and crash here, in the module."""
    path = _write(tmp_path, STRUCTURES) if source == "structures" else nas.space.spaces_dir() / f"{source}.yaml"
    space = Space.load(path)
    raw = space.sample_vectors(np.random.default_rng(5), 1000 if source == "structures" else 40, valid_only=False)
    valid = raw[space._validity.fail_codes(raw) < 0][:count]
    assert len(valid) == count
    for vector in valid:
        arch = space.decode(vector)
        model = nas.build(arch, device="meta").eval()
        resolution = arch.input.resolution
        out = model(torch.empty(1, 3, resolution, resolution, device="meta"))
        assert out.shape == (1, arch.head.num_classes)  # type: ignore[attr-defined]


class _BlockProbe:
    """Stands in for ``Site.block`` and notes which of its fields a check reads."""

    def __init__(self, block: nas.Block):
        self._block = block
        self.read: set[str] = set()

    def __getattr__(self, name: str) -> object:
        self.read.add(name)
        return getattr(self._block, name)


@pytest.mark.parametrize("role", ["mixer", "ffn", "norm"])
def test_configs_that_read_the_block_declare_it(role: str) -> None:
    """The batch check judges a component once per site unless its config declares ``reads_block``."""
    block = nas.Block(mixer=nas.arch.parse_component("mixer", "identity", "m"),
                      ffn=nas.arch.parse_component("ffn", "none", "f"),
                      norm=nas.arch.parse_component("norm", "batchnorm", "n"))
    for kind in nas.arch.list_kinds(role):
        config = nas.arch.config_type(role, kind)()  # every kind of these roles has defaults for all fields
        probe = _BlockProbe(block)
        try:
            config.check(nas.arch.Site(768, 768, 56, 56, probe, 0))  # type: ignore[arg-type]
        except nas.ConfigError:
            pass
        assert bool(probe.read) == config.reads_block, (kind, probe.read)


def test_a_decode_error_points_into_the_space_file(tmp_path: Path) -> None:
    text = TINY.replace("heads: {choice: [1, 2], id: heads}", "heads: {choice: [1, 2, 3], id: heads}")
    path = _write(tmp_path, text)
    space = Space.load(path)
    raw = space.sample_vectors(np.random.default_rng(0), 200, valid_only=False)
    invalid = next(vector for vector in raw if not space.is_valid(vector))
    with pytest.raises(nas.ConfigError, match=r"mixer\.heads: 3 does not divide dim (16|32)") as caught:
        space.decode(invalid)
    assert str(caught.value).startswith(f"{path}:{_line_of(text, 'heads: {choice: [1, 2, 3]')}: ")


# ---------------------------------------------------------------------------
# command line


def test_cli_spaces_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spaces", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == SHIPPED
    assert all(row["size"] is None or row["size"] == load_space(row["name"]).size() for row in rows)
    assert main(["spaces"]) == 0
    assert "metaformer" in capsys.readouterr().out
    assert main(["space", "show", "swin"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("swin: 944,784 points, 13 decisions") and "stages[2].blocks.repeat: range" in out
    assert main(["space", "show", "efficientvit", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert len(described["decisions"]) == load_space("efficientvit").num_slots
    assert main(["space", "show", "nope"]) == 2
    assert "unknown space 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", SHIPPED)
def test_the_constraint_probe_draws_canonical_valid_points(name: str) -> None:
    # Its smallest points lower every ordered decision, a depth among them: the decisions of the blocks beyond
    # the new depth must go (`nas space sample isotropic` refused its own space before).
    space = load_space(name)
    vectors = probe_points(space, np.random.default_rng(0), 4)
    assert all(space.is_valid(vector) for vector in vectors)  # is_valid refuses a vector that is not canonical


def test_cli_sample_prints_archs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["space", "sample", "efficientformer", "-n", "3", "--seed", "4"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    archs = [nas.Arch.from_dict(document) for document in documents]
    space = load_space("efficientformer")
    expected = space.sample_vectors(np.random.default_rng(4), 3)
    assert [space.encode(arch).tolist() for arch in archs] == expected.tolist()
    assert archs[0].name == "efficientformer_seed4_0"
    assert main(["space", "sample", "efficientformer", "-n", "3", "--seed", "4", "--json"]) == 0
    assert [nas.Arch.from_dict(item) for item in json.loads(capsys.readouterr().out)] == archs
    with pytest.raises(SystemExit) as exited:
        main(["space", "sample", "swin", "-n", "0"])
    assert exited.value.code == 2
