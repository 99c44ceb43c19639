"""The one walk through an Arch (``nas.walk``) and its users agree: Arch validation, ``build.plan``, the batch
latency signatures (``UnitSignatures``), space validity and, through the signatures' stage ends, the vector
scorer. Each test fails if one user stops following the walk's sites."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import nas
from nas.arch import config_type, list_kinds
from nas.blocks.registry import module_class
from nas.blocks.template import BlockContext, create_block
from nas.build import plan
from nas.latency.batch import UnitSignatures
from nas.space import Space, load_space
from nas.walk import Step, past_block, steps
from tests.conftest import tiny_files

SHIPPED = ["convnext", "crossvit", "efficientformer", "efficientvit", "isotropic", "metaformer", "swin", "vanillanet",
           "volo"]
TINY = {path.stem: path for path in tiny_files()}


def _sampled(name: str, count: int = 12) -> list[nas.Arch]:
    space = load_space(name)
    return [space.decode(vector) for vector in space.sample_vectors(np.random.default_rng(3), count)]


def _cases() -> list[tuple[str, nas.Arch]]:
    cases = [(f"tiny:{name}", nas.Arch.load(path)) for name, path in sorted(TINY.items())]
    for name in SHIPPED:
        cases += [(f"{name}[{index}]", arch) for index, arch in enumerate(_sampled(name))]
    return cases


CASES = _cases()


def _in_shape(step: Step) -> tuple[int, ...]:
    site = step.site
    if site.layout == "nchw":
        return (site.in_dim, site.height, site.width)
    return (site.prefix_tokens + site.height * site.width, site.in_dim)


@pytest.mark.parametrize(("label", "arch"), CASES, ids=[label for label, _ in CASES])
def test_plan_has_one_unit_per_step_of_the_walk(label: str, arch: nas.Arch) -> None:
    walked = list(steps(arch))
    assert walked == list(steps(arch, check=False))
    layout = plan(arch)
    assert len(layout.units) == len(walked)
    for unit, step in zip(layout.units, walked, strict=True):
        index = None if step.role == "convert" else step.index  # a unit's index is a block's number only
        assert (unit.role, unit.stage, unit.index, unit.component) == (step.role, step.stage, index, step.component)
        assert unit.path == (f"{step.path}.to_{step.after.layout}" if step.role == "convert" else step.path)
        assert unit.in_shape == _in_shape(step)
        if step.role == "convert":
            assert step.after == step.site._replace(layout=step.after.layout) != step.site
        elif step.role in ("downsample", "block"):
            layout_of = step.component.mixer.layout if step.role == "block" else step.component.layout
            assert step.site.layout == layout_of  # a conversion came first where the layouts differ
    ends = [step.after for step in walked if step.role == "block"
            and step.index == len(arch.stages[step.stage].blocks) - 1]
    assert [(out.layout, out.channels, out.size) for out in layout.stage_outputs] == [
        (site.layout, site.dim, (site.height, site.width)) for site in ends]
    assert layout.prefix_tokens == walked[-1].site.prefix_tokens


@pytest.mark.parametrize(("label", "arch"), CASES, ids=[label for label, _ in CASES])
def test_batch_signatures_carry_the_walks_sites(label: str, arch: nas.Arch) -> None:
    signatures = UnitSignatures()
    for _ in range(2):  # the second walk reads the sites the first one cached
        ends: list[tuple[int, int]] = []
        keys = signatures.walk(arch, ends)
        walked = list(steps(arch))
        before = []  # per unit, the site before its layout conversion (a conversion belongs to the unit after it)
        waiting = None
        for step in walked:
            if step.role == "convert":
                waiting = step.site
                continue
            before.append((step, waiting or step.site))
            waiting = None
        assert [key[0] for key in keys] == [("stem", "downsample", "block", "head").index(step.role)
                                            for step, _ in before]
        assert [signatures.site(key[-1]) for key in keys] == [site for _, site in before]
        stage_ends = [index + 1 for index, (step, _) in enumerate(before) if step.role == "block"
                      and step.index == len(arch.stages[step.stage].blocks) - 1]
        assert [end for end, _ in ends] == stage_ends
        assert [signatures.site(site) for _, site in ends] == [before[end - 1][0].after for end in stage_ends]


def _arch_fail_code(space: Space, vector: np.ndarray) -> int:
    try:
        space.decode(vector)
    except nas.ConfigError as exc:
        stage = re.match(r"stages\[(\d+)\]", exc.path)
        return int(stage.group(1)) + 1 if stage else len(space._tree.stages) + 1 if exc.path.startswith("head") else 0
    return -1


@pytest.mark.parametrize("name", sorted(TINY))
def test_space_validity_judges_tiny_archs_as_the_walk(name: str) -> None:
    """Each tiny arch as a space over input resolutions and widths, most of which some component rejects."""
    data = yaml.safe_load(TINY[name].read_text())
    data["input"]["resolution"] = {"choice": [data["input"]["resolution"], 3, 7, 12, 30, 33, 48]}
    data["stages"][-1]["dim"] = {"choice": [data["stages"][-1]["dim"], 0, 6, 7, 40]}
    space = Space.from_data(data)
    vectors = np.array(list(itertools.product(*(range(options) for options in space._layout.card))), dtype=np.int16)
    assert len(vectors) == space.size() == 35
    expected = [_arch_fail_code(space, vector) for vector in vectors]
    assert -1 in expected and any(code >= 0 for code in expected)  # the test sees both verdicts
    assert space._validity.fail_codes(vectors).tolist() == expected


@pytest.mark.parametrize("role", ["stem", "downsample", "mixer"])
def test_layouts_are_declared_on_configs_not_modules(role: str) -> None:
    for kind in list_kinds(role):
        config = config_type(role, kind)
        assert config.layout in ("nchw", "nlc") or isinstance(vars(config).get("layout"), property), kind
        module = module_class(role, config())
        declared = [cls.__name__ for cls in module.__mro__ if {"layout", "layout_of"} & set(vars(cls))]
        assert not declared, f"{role} {kind}: layout declared on module classes {declared}"


def test_the_walk_places_a_components_error_in_the_arch() -> None:
    data = yaml.safe_load(TINY["mixer_attention"].read_text())
    data["stages"][0]["blocks"]["block"]["mixer"]["heads"] = 5
    with pytest.raises(nas.ConfigError) as caught:
        nas.Arch.from_dict(data)
    assert caught.value.path == "stages[0].blocks[0].mixer.heads"



def _mixer_tiny_archs() -> dict[str, Path]:
    """Mixer kind -> the first tiny arch (by name) with a block of that kind."""
    found: dict[str, Path] = {}
    for path in sorted(TINY.values()):
        for stage in nas.Arch.load(path).stages:
            for block in stage.blocks:
                found.setdefault(block.mixer.kind, path)
    return found


MIXER_TINY = _mixer_tiny_archs()


@pytest.mark.parametrize("kind", sorted(MIXER_TINY))
def test_a_mixer_takes_another_width_only_where_its_config_declares_it(kind: str) -> None:
    """Each kind's first block in its tiny arch, given half the stage width: the walk refuses it unless the config
    declares ``changes_width``, and then the module takes that width (on meta)."""
    step = next(step for step in steps(nas.Arch.load(MIXER_TINY[kind]))
                if step.role == "block" and step.component.mixer.kind == kind)
    site = step.site._replace(in_dim=step.site.dim // 2)
    if not config_type("mixer", kind).changes_width:
        with pytest.raises(nas.ConfigError, match="keeps its width.*put a downsample before the block") as caught:
            past_block(step.component, site)
        assert caught.value.path == "mixer.kind"
        return
    after = past_block(step.component, site)
    context = BlockContext(in_dim=site.in_dim, dim=site.dim, size=(site.height, site.width))
    module = create_block(step.component, context, device="meta").eval()
    out = module(torch.empty(1, site.in_dim, site.height, site.width, device="meta"))
    assert out.shape == (1, after.dim, after.height, after.width)


def test_every_mixer_kind_is_checked_for_the_width_rule() -> None:
    assert not set(list_kinds("mixer")) - set(MIXER_TINY), "a mixer kind in no tiny arch escapes the width check"
