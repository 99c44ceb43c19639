"""nas.data: the bundled dataset, every on-disk format, the split, loaders, augmentation, errors."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from nas.data import (
    Augment,
    DatasetError,
    PatchMixing,
    load_dataset,
    loaders,
    patch_mix,
    random_crop,
    random_flip,
    split_indices,
)
from nas.errors import ConfigError, NasError


@pytest.fixture(scope="module")
def bundled():
    return load_dataset(None)


def _digests(images: torch.Tensor) -> set[bytes]:
    return {hashlib.sha1(image.numpy().tobytes()).digest() for image in images}


# -- the bundled default ------------------------------------------------------------------------------------------


def test_bundled_dataset_shape_balance_and_split(bundled):
    assert bundled.name == "animal-mnist" and "MIT" in bundled.source
    assert (bundled.num_classes, bundled.channels, bundled.resolution) == (10, 1, 28)
    assert bundled.class_names[:2] == ("bear", "bird")
    assert bundled.num_train + bundled.num_val == 9716
    per_class = torch.bincount(bundled.train_labels, minlength=10) + torch.bincount(bundled.val_labels, minlength=10)
    assert per_class.tolist() == [937, 812, 992, 996, 997, 1000, 1000, 997, 985, 1000]
    expected_val = [int(round(0.2 * n)) for n in per_class.tolist()]
    assert torch.bincount(bundled.val_labels, minlength=10).tolist() == expected_val
    assert not _digests(bundled.train_images) & _digests(bundled.val_images)  # duplicates removed: no leakage
    assert 0.1 < bundled.mean[0] < 0.5 and 0.2 < bundled.std[0] < 0.6
    assert len(set(bundled.val_labels[:50].tolist())) >= 8  # validation order is mixed, not class-sorted


def test_bundled_file_is_small_and_has_its_notice():
    folder = Path(__import__("nas.datasets").datasets.__file__).parent
    assert (folder / "animal_mnist.npz").stat().st_size < 4_000_000
    notice = (folder / "NOTICE").read_text()
    assert "MIT" in notice and "animal-mnist" in notice and "0.4" in notice


def test_split_is_deterministic_and_follows_split_seed(bundled):
    again = load_dataset("animal-mnist")
    assert torch.equal(again.val_images, bundled.val_images) and torch.equal(again.train_labels, bundled.train_labels)
    other = load_dataset(None, split_seed=1)
    assert not torch.equal(other.val_images, bundled.val_images)
    assert other.num_val == bundled.num_val


def test_split_indices_is_stratified_and_partitions():
    labels = np.repeat(np.arange(3), [10, 20, 5])
    train, val = split_indices(labels, val_fraction=0.2, seed=0)
    assert np.bincount(labels[val]).tolist() == [2, 4, 1]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))


# -- loaders ------------------------------------------------------------------------------------------------------


def test_loader_shapes_channels_and_normalisation(bundled):
    train, val = loaders(bundled, batch_size=32, resolution=32, channels=3, seed=0)
    images, labels = next(iter(train))
    assert images.shape == (32, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (32,) and labels.dtype == torch.int64
    assert torch.equal(images[:, 0], images[:, 2])  # grey repeated
    assert len(train) == bundled.num_train // 32 and len(val) == -(-bundled.num_val // 32)
    seen = torch.cat([labels for _, labels in val])
    assert torch.equal(seen, bundled.val_labels)  # validation: stored order, every image once
    assert abs(float(images.mean())) < 0.3


def test_loader_order_is_seeded_per_epoch_and_resumable(bundled):
    train, _ = loaders(bundled, batch_size=64, resolution=28, augment=True, seed=3)
    twin, _ = loaders(bundled, batch_size=64, resolution=28, augment=True, seed=3)
    first = [batch for _, batch in zip(range(4), train.iter_epoch(1), strict=False)]
    again = [batch for _, batch in zip(range(4), twin.iter_epoch(1), strict=False)]
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    resumed = next(train.iter_epoch(1, start=2))
    assert torch.equal(resumed[0], first[2][0]) and torch.equal(resumed[1], first[2][1])
    train.set_epoch(2)
    assert not torch.equal(next(iter(train))[1], first[0][1])
    other, _ = loaders(bundled, batch_size=64, resolution=28, augment=True, seed=4)
    assert not torch.equal(next(other.iter_epoch(1))[1], first[0][1])


def test_ddp_shards_match_distributed_sampler(bundled):
    shards = []
    for rank in range(2):
        train, val = loaders(bundled, batch_size=50, resolution=28, seed=7, rank=rank, world_size=2)
        sampler = DistributedSampler(range(bundled.num_train), num_replicas=2, rank=rank, shuffle=True, seed=7)
        sampler.set_epoch(5)
        assert train.order(5).tolist() == list(sampler)
        shards.append(train.order(5))
        assert len(train) == len(loaders(bundled, batch_size=50, seed=7, rank=1 - rank, world_size=2)[0])
        assert sum(len(labels) for _, labels in val) == len(range(rank, bundled.num_val, 2))
    assert set(torch.cat(shards).tolist()) == set(range(bundled.num_train))


def test_loader_rejects_bad_arguments(bundled):
    with pytest.raises(DatasetError, match="exceeds"):
        loaders(bundled, batch_size=10**6)
    with pytest.raises(ConfigError, match="rank"):
        loaders(bundled, batch_size=8, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="channels"):
        loaders(bundled, batch_size=8, channels=2)
    with pytest.raises(ConfigError, match="patch_size"):
        loaders(bundled, batch_size=8, resolution=30, augment=Augment(patch_mixing=PatchMixing(patch_size=4)))


# -- augmentation -------------------------------------------------------------------------------------------------


def test_random_crop_is_a_shifted_window():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    cropped = random_crop(images, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for index in range(2):
        windows = [padded[index, :, top : top + 6, left : left + 6] for top in range(5) for left in range(5)]
        assert any(torch.equal(cropped[index], window) for window in windows)
    assert torch.equal(random_crop(images, 0, torch.Generator()), images)


def test_random_flip_mirrors_some_images():
    images = torch.randn(64, 1, 4, 4)
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(a, b.flip(-1)) for a, b in zip(images, flipped, strict=True)]
    same = [torch.equal(a, b) for a, b in zip(images, flipped, strict=True)]
    assert all(m or s for m, s in zip(mirrored, same, strict=True)) and 10 < sum(mirrored) < 54


def test_patch_mixing_moves_patches_and_mixes_targets():
    images = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(16)])
    labels = torch.arange(16) % 4
    config = PatchMixing(probability=1.0, max_share=1.0)
    mixed, targets = patch_mix(images, labels, num_classes=4, config=config, patch_size=2,
                               generator=torch.Generator().manual_seed(0))
    assert targets.shape == (16, 4) and torch.allclose(targets.sum(1), torch.ones(16))
    for index in range(16):
        foreign = float((mixed[index] != index).float().mean())
        own = float(targets[index, labels[index]])
        if foreign:  # the foreign share of pixels is the share moved in the target
            partner = int(mixed[index][mixed[index] != index][0])
            assert torch.all(mixed[index][mixed[index] != index] == partner)
            if labels[partner] != labels[index]:
                assert own == pytest.approx(1.0 - foreign)
    assert (mixed != images).any()
    unchanged, one_hot = patch_mix(images, labels, num_classes=4, config=PatchMixing(probability=0.0), patch_size=2,
                                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(unchanged, images) and torch.equal(one_hot.argmax(1), labels)


def test_loader_with_patch_mixing_gives_soft_targets(bundled):
    train, val = loaders(bundled, batch_size=16, resolution=32,
                         augment=Augment(patch_mixing=PatchMixing(max_share=0.5)), seed=0)
    images, targets = next(iter(train))
    assert train.soft_targets and not val.soft_targets
    assert images.shape == (16, 1, 32, 32) and targets.shape == (16, 10)
    assert torch.allclose(targets.sum(1), torch.ones(16)) and float(targets.max(1).values.min()) >= 0.5
    assert torch.isfinite(torch.nn.functional.cross_entropy(torch.zeros(16, 10), targets))


# -- on-disk formats (tiny fakes) ---------------------------------------------------------------------------------


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _cifar_batch(path: Path, count: int, label_key: str, classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
             label_key: rng.integers(0, classes, count).tolist()}
    path.write_bytes(pickle.dumps(batch))


def test_cifar10_format(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for index in (1, 2):
        _cifar_batch(root / f"data_batch_{index}", 12, "labels", 10, index)
    _cifar_batch(root / "test_batch", 6, "labels", 10, 9)
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    data = load_dataset(tmp_path)  # the parent directory is followed into cifar-10-batches-py
    assert (data.name, data.num_train, data.num_val, data.channels, data.resolution) == ("cifar10", 24, 6, 3, 32)
    assert data.class_names[3] == "c3"
    raw = pickle.loads((root / "data_batch_1").read_bytes())["data"][0].reshape(3, 32, 32)
    assert torch.equal(data.train_images[0], torch.from_numpy(raw))


def test_cifar100_format(tmp_path):
    _cifar_batch(tmp_path / "train", 10, "fine_labels", 100, 1)
    _cifar_batch(tmp_path / "test", 4, "fine_labels", 100, 2)
    (tmp_path / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"f{i}" for i in range(100)]}))
    data = load_dataset(str(tmp_path))
    assert (data.name, data.num_classes, data.num_train, data.num_val) == ("cifar100", 100, 10, 4)


def test_image_folders_split_here(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        for index in range(5):
            _write_png(tmp_path / "pets" / name / f"{index}.png", rng.integers(0, 256, (12, 12), dtype=np.uint8))
    data = load_dataset(tmp_path / "pets")
    assert data.class_names == ("cat", "dog") and (data.channels, data.resolution) == (1, 12)
    assert (data.num_train, data.num_val) == (8, 2)
    assert torch.bincount(data.val_labels).tolist() == [1, 1]


def test_image_folders_presplit_rgb_and_resized(tmp_path):
    rng = np.random.default_rng(1)
    for split, count in (("train", 3), ("val", 1)):
        for name in ("a", "b"):
            for index in range(count):
                size = 10 + index  # sizes differ: image_size resizes
                _write_png(tmp_path / split / name / f"{index}.png", rng.integers(0, 256, (size, size, 3), np.uint8))
    with pytest.raises(DatasetError, match="image_size"):
        load_dataset(tmp_path)
    data = load_dataset(tmp_path, image_size=8)
    assert (data.num_train, data.num_val, data.channels, data.resolution) == (6, 2, 3, 8)
    train, _ = loaders(data, batch_size=2, resolution=16, channels=1, augment=True)
    assert next(iter(train))[0].shape == (2, 1, 16, 16)


def test_npz_formats(tmp_path):
    rng = np.random.default_rng(2)
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=rng.integers(0, 256, (20, 9, 9), dtype=np.uint8), y=np.arange(20) % 2)
    data = load_dataset(plain)
    assert (data.name, data.num_train, data.num_val, data.channels) == ("plain", 16, 4, 1)
    presplit = tmp_path / "presplit.npz"
    floats = rng.random((6, 5, 5, 3)).astype(np.float32)  # N x H x W x C in [0, 1]
    np.savez(presplit, x_train=floats, y_train=np.arange(6) % 3, x_test=floats[:2], y_test=np.array([0, 2]),
             class_names=np.array(["x", "y", "z"]))
    data = load_dataset(presplit)
    assert (data.num_train, data.num_val, data.channels, data.resolution) == (6, 2, 3, 5)
    assert data.class_names == ("x", "y", "z")
    assert torch.equal(data.train_images[0, :, 1, 2], torch.from_numpy(np.round(floats[0, 1, 2] * 255)).byte())


# -- errors -------------------------------------------------------------------------------------------------------


def test_missing_and_unknown_paths_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match="no such file") as info:
        load_dataset(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value) and isinstance(info.value, NasError)
    text = tmp_path / "data.csv"
    text.write_text("1,2\n")
    with pytest.raises(DatasetError, match=r"\.npz"):
        load_dataset(text)
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("content", [b"not a zip", None])
def test_malformed_npz(tmp_path, content):
    path = tmp_path / "bad.npz"
    if content is None:
        np.savez(path, images=np.zeros((2, 4, 4), np.uint8))
    else:
        path.write_bytes(content)
    with pytest.raises(DatasetError, match="bad.npz"):
        load_dataset(path)


def test_npz_with_wrong_shapes(tmp_path):
    path = tmp_path / "shapes.npz"
    np.savez(path, x=np.zeros((4, 5, 6), np.uint8), y=np.zeros(4, np.int64))
    with pytest.raises(DatasetError, match="square"):
        load_dataset(path)
    np.savez(path, x=np.zeros((4, 5, 5), np.uint8), y=np.zeros(3, np.int64))
    with pytest.raises(DatasetError, match="4 integer labels"):
        load_dataset(path)


def test_corrupt_and_hostile_cifar_pickles(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetError, match="data_batch_1"):
        load_dataset(tmp_path)

    class Hostile:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({"data": Hostile(), "labels": [0]}))
    with pytest.raises(DatasetError, match="refusing"):
        load_dataset(tmp_path)
    assert not (tmp_path / "pwned").exists()
    _cifar_batch(tmp_path / "data_batch_1", 4, "labels", 10, 0)
    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset(tmp_path)


def test_unreadable_image_names_the_file(tmp_path):
    _write_png(tmp_path / "a" / "good.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"no png")
    with pytest.raises(DatasetError, match="broken.png"):
        load_dataset(tmp_path)
