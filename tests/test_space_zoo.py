"""The papers' models are points of the spaces they belong to, and of no other shipped space.

``MEMBERSHIP`` lists, for every zoo model, exactly the shipped spaces that must
contain it; a pair not listed must not. A model listed here that the zoo does
not have (yet) is skipped with a note; a zoo model missing from the table fails
until its row is added.
"""

from __future__ import annotations

import pytest

import nas
from nas.space import list_spaces, load_space

MEMBERSHIP: dict[str, tuple[str, ...]] = {
    "poolformer_s12": ("metaformer",),
    "poolformer_s24": ("metaformer",),
    "poolformer_s36": ("metaformer",),
    "poolformer_m36": ("metaformer",),
    "poolformer_m48": ("metaformer",),
    "convnext_tiny": ("convnext", "metaformer"),
    "convnext_small": ("convnext", "metaformer"),
    "convnext_base": ("convnext", "metaformer"),
    "swin_tiny": ("swin", "metaformer"),
    "swin_small": ("swin", "metaformer"),
    "swin_base": ("swin", "metaformer"),
    "efficientformer_l1": ("efficientformer", "metaformer"),
    "efficientformer_l3": ("efficientformer", "metaformer"),
    "efficientformer_l7": ("efficientformer", "metaformer"),
    "pvt_tiny": ("metaformer",),
    "pvt_small": ("metaformer",),
    "van_b0": ("metaformer",),
    "van_b1": ("metaformer",),
    "van_b2": ("metaformer",),
    "van_b3": ("metaformer",),
    "dinat_mini": ("metaformer",),
    "smt_tiny": ("metaformer",),
    "davit_tiny": ("metaformer",),
    "gcvit_xxtiny": ("metaformer",),
    "gcvit_tiny": ("metaformer",),
    "maxvit_tiny": ("metaformer",),
    "efficientvit_m0": ("efficientvit",),  # three stages: not a point of the 4-stage metaformer space
    "efficientvit_m1": ("efficientvit",),
    "efficientvit_m2": ("efficientvit",),
    "efficientvit_m3": ("efficientvit",),
    "efficientvit_m4": ("efficientvit",),
    "efficientvit_m5": ("efficientvit",),
    "deit_tiny": ("isotropic",),
    "deit_small": ("isotropic",),
    "deit_base": ("isotropic",),
    "convit_tiny": ("isotropic",),
    "t2t_vit_14": ("isotropic",),
    "mobilenetv2_100": ("fliqs",),  # the mixed-precision space's backbone (every block at fp32)
    "resnet50": (),  # bottleneck blocks, strided inside the stage: not a MetaFormer design
    "cvt_13": (),  # three stages (1/4, 1/8, 1/16): not a point of the 4-stage metaformer space
    "uniformer_s": ("metaformer",),
    "volo_d1": ("volo",),
    "crossvit_tiny": ("crossvit",),  # two branches in one body behind the image stem: a family space of its own
    "spectformer_h_s": ("metaformer",),
    "vanillanet_5": ("vanillanet",),
    "wavemix_192_16": (),  # one isotropic stage of WaveMix blocks at 1/4: not a point of a shipped space
    "affnet": (),  # five MobileViT-shaped stages (1/2 ... 1/32): not a point of the 4-stage metaformer space
}

PAIRS = [(model, space) for model in MEMBERSHIP for space in list_spaces()]


def _zoo_model(name: str) -> nas.Arch:
    if name not in nas.zoo.list_zoo():
        pytest.skip(f"zoo model {name} does not exist yet")
    return nas.zoo.get(name)


@pytest.mark.parametrize(("model", "space"), PAIRS, ids=[f"{model}-{space}" for model, space in PAIRS])
def test_membership(model: str, space: str) -> None:
    arch = _zoo_model(model)
    inside, reason = load_space(space).contains(arch)
    if space in MEMBERSHIP[model]:
        assert inside, f"{model} should be a point of {space}: {reason}"
        assert load_space(space).decode(load_space(space).encode(arch)) == arch.replace(name=None, published=None)
    else:
        assert not inside, f"{model} is a point of {space}; add it to MEMBERSHIP if that is intended"
        assert reason, f"{model} is not in {space}, but no reason was given"
        print(f"{model} is not a point of {space}: {reason}")  # shown with pytest -rP


def test_every_zoo_model_has_a_row() -> None:
    missing = sorted(set(nas.zoo.list_zoo()) - set(MEMBERSHIP))
    assert not missing, f"zoo models without a row in MEMBERSHIP (tests/test_space_zoo.py): {missing}"


def test_every_family_space_holds_a_zoo_model() -> None:
    held = {space for spaces in MEMBERSHIP.values() for space in spaces}
    assert held == set(list_spaces())


def test_reasons_name_the_first_difference() -> None:
    reasons = {space: load_space(space).contains(nas.zoo.get("deit_tiny"))[1] for space in ("convnext", "swin")}
    assert reasons == {"convnext": "stages: 1 stages; the space has 4", "swin": "stages: 1 stages; the space has 4"}
    inside, reason = load_space("efficientvit").contains(nas.zoo.get("swin_tiny"))
    assert not inside and reason == "stages: 4 stages; the space has 3"
    inside, reason = load_space("convnext").contains(nas.zoo.get("swin_tiny"))
    assert (inside, reason) == (False, "stages[0].blocks[0].mixer.kind: 'window_attention' is not 'convnext'")
    inside, reason = load_space("metaformer").contains(nas.zoo.get("resnet50"))
    assert not inside and reason.startswith("stem."), reason
