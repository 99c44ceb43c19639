"""mixup, CutMix and RandAugment: what they do to a batch, their seeding, and how a run asks for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nas.cli import main
from nas.data import Augment, load_dataset, loaders
from nas.datasets.augment import mix_batch
from nas.datasets.randaugment import OPERATIONS, _operations, rand_augment
from nas.errors import ConfigError
from nas.supernet import TrainSettings


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, 16, 16, generator=generator), torch.randint(0, 5, (8,), generator=generator)


def test_mixup_blends_images_and_targets_by_one_share() -> None:
    images, labels = _batch()
    mixed, targets = mix_batch(images, labels, num_classes=5, mixup=0.8, cutmix=0.0,
                               generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(targets.sum(1), torch.ones(8))
    own = targets[torch.arange(8), labels]
    lam = float(own.min())  # an image whose partner has its own class keeps all of its share plus the partner's
    assert 0.0 <= lam <= 1.0
    partner = torch.randperm(8, generator=_partner_generator(1))
    torch.testing.assert_close(mixed, lam * images + (1 - lam) * images[partner])


def _partner_generator(seed: int) -> torch.Generator:
    """The generator state mix_batch reaches when it draws its partner (after one integer draw)."""
    generator = torch.Generator().manual_seed(seed)
    torch.randint(0, 2**62, (1,), generator=generator)
    return generator


def test_cutmix_pastes_one_box_whose_area_is_the_partners_share() -> None:
    images, labels = _batch(2)
    mixed, targets = mix_batch(images, labels, num_classes=5, mixup=0.0, cutmix=1.0,
                               generator=torch.Generator().manual_seed(3))
    changed = (mixed != images).any(dim=1)  # pixels taken from the partner (one box, the same for every image)
    partner = torch.randperm(8, generator=_partner_generator(3))
    share = float(changed[partner != torch.arange(8)].float().mean(dim=(1, 2)).max())
    one_hot = torch.nn.functional.one_hot(labels, 5).float()
    expected = (1 - share) * one_hot + share * one_hot[partner]
    torch.testing.assert_close(targets, expected)


def test_randaugment_is_fixed_by_its_generator_and_keeps_the_image_shape() -> None:
    from PIL import Image

    pixels = (np.random.default_rng(0).random((24, 20, 3)) * 255).astype(np.uint8)
    picture = Image.fromarray(pixels)
    table = _operations()
    for name in OPERATIONS:  # every operation runs and keeps size and mode
        out = table[name](picture, 1.0, torch.Generator().manual_seed(0))
        assert out.size == picture.size and out.mode == picture.mode, name
    first, again, other = (np.asarray(rand_augment(picture, ops=3, magnitude=15,
                                                   generator=torch.Generator().manual_seed(seed)))
                           for seed in (4, 4, 5))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_loaders_mix_and_augment_with_the_run_seed(tmp_path: Path) -> None:
    data = load_dataset(None)
    policy = Augment(mixup=0.8, cutmix=1.0, randaugment=(2, 9))
    first, _ = loaders(data, batch_size=16, resolution=28, augment=policy, seed=1)
    again, _ = loaders(data, batch_size=16, resolution=28, augment=policy, seed=1)
    images, targets = next(first.iter_epoch(0))
    same_images, same_targets = next(again.iter_epoch(0))
    assert first.soft_targets and targets.shape == (16, data.num_classes)
    assert torch.equal(images, same_images) and torch.equal(targets, same_targets)
    torch.testing.assert_close(targets.sum(1), torch.ones(16))
    with pytest.raises(ConfigError, match="augment.mixup"):
        Augment(mixup=-1.0)


def test_new_settings_keep_old_checkpoints_resumable() -> None:
    assert not {"mixup", "cutmix", "randaugment_ops", "randaugment_magnitude"} & set(TrainSettings().to_dict())
    settings = TrainSettings(mixup=0.8, randaugment_ops=2)
    assert settings.to_dict()["mixup"] == 0.8 and TrainSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(ConfigError, match="randaugment_magnitude"):
        TrainSettings(randaugment_magnitude=31)


def test_train_command_takes_the_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "poolformer_s12", "--proxy-width", "0.125", "--max-steps", "2", "--json"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--mixup", "0.8", "--cutmix", "1.0", "--randaugment", "2"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--out", str(tmp_path / "bad"), "--mixup", "-1"])
    assert exited.value.code == 2
    assert "--mixup" in capsys.readouterr().err and not (tmp_path / "bad").exists()
