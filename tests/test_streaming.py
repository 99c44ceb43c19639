"""Image folders streamed from disk: the same batches for any worker count, resumable, sharded, trainable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nas.datasets.formats as formats
from nas.cli import main
from nas.data import FolderDataset, StreamLoader, load_dataset, loaders
from nas.datasets.dataset import DatasetError
from nas.supernet import TrainOptions, TrainSettings, train_model
from nas.zoo import get as zoo_arch


def _write_folder(root: Path, counts: dict[str, int], *, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for number in range(count):
            width, height = (int(v) for v in rng.integers(20, 48, size=2))
            pixels = (rng.random((height, width, 3)) * 60 + index * 60).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{number:03d}.jpg", quality=90)


@pytest.fixture(scope="module")
def imagenet_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("streamed")
    _write_folder(root / "train", {"cat": 24, "dog": 20, "fox": 22}, seed=0)
    _write_folder(root / "val", {"cat": 4, "dog": 5, "fox": 3}, seed=1)
    return root


def _batches(loader: StreamLoader, epoch: int, start: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader.iter_epoch(epoch, start=start))


def test_a_streamed_folder_serves_the_same_batches_with_any_worker_count(imagenet_layout: Path) -> None:
    data = load_dataset(imagenet_layout, stream=True)
    assert isinstance(data, FolderDataset)
    assert (data.num_train, data.num_val, data.class_names) == (66, 12, ("cat", "dog", "fox"))
    inline, _ = loaders(data, batch_size=8, resolution=16, augment=True, seed=3, workers=0)
    workers, val = loaders(data, batch_size=8, resolution=16, augment=True, seed=3, workers=2)
    first, second = _batches(inline, 1), _batches(workers, 1)
    assert len(first) == len(inline) == 8
    for (a, labels_a), (b, labels_b) in zip(first, second, strict=True):
        assert a.shape == (8, 3, 16, 16) and torch.equal(a, b) and torch.equal(labels_a, labels_b)
    assert not torch.equal(first[0][0], _batches(inline, 2)[0][0])  # another epoch, another order and crops
    resumed = _batches(inline, 1, start=5)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, first[5:], strict=True))
    served = torch.cat([labels for _, labels in val])
    assert len(served) == 12 and sorted(served.tolist()) == [0] * 4 + [1] * 5 + [2] * 3


def test_ranks_read_disjoint_shards_of_equal_length(imagenet_layout: Path) -> None:
    data = load_dataset(imagenet_layout, stream=True)
    orders = [loaders(data, batch_size=4, resolution=16, rank=rank, world_size=2, workers=0)[0].order(0)
              for rank in (0, 1)]
    assert len(orders[0]) == len(orders[1]) == 33
    assert not set(orders[0].tolist()) & set(orders[1].tolist())


def test_large_folders_stream_and_small_ones_load_into_memory(imagenet_layout: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert not isinstance(load_dataset(imagenet_layout / "train", image_size=16), FolderDataset)
    monkeypatch.setattr(formats, "STREAM_FROM_IMAGES", 66)
    streamed = load_dataset(imagenet_layout / "train")  # no val/: a stratified hold-out of the 66 images
    assert isinstance(streamed, FolderDataset)
    assert (streamed.num_train, streamed.num_val) == (53, 13)
    assert not set(streamed.train_files) & set(streamed.val_files)


def test_a_folder_without_images_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        (tmp_path / "empty" / name).mkdir(parents=True)
        (tmp_path / "empty" / name / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="no images"):
        load_dataset(tmp_path / "empty", stream=True)
    assert main(["train", "poolformer_s12", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run")]) == 2
    assert "no images" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_model_trains_on_a_streamed_folder(imagenet_layout: Path) -> None:
    data = load_dataset(imagenet_layout, stream=True)
    result = train_model(zoo_arch("poolformer_s12"), data, TrainSettings(epochs=1, batch_size=16),
                         width=0.125, resolution=32, options=TrainOptions(progress=False))
    assert result.completed and 0.0 <= result.metrics["accuracy"] <= 1.0
