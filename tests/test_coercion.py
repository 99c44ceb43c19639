"""Target files and train settings check their values with nas.arch.coerce_field: errors name the field."""

from __future__ import annotations

import pytest

from nas.errors import ConfigError
from nas.latency.targets import get_target, load_target
from nas.supernet import TrainSettings

SETTING = r"settings\.paddle_trt_fp32"
BAD_TARGET = [
    ("    precision: fp32\n", "    precision: fp64\n", rf"{SETTING}\.precision: must be one of 'fp32', .*'fp64'"),
    ("batch_sizes: [1, 4, 8]", "batch_sizes: [1, four, 8]", rf"{SETTING}\.batch_sizes\[1\]: must be an integer"),
    ("batch_sizes: [1, 4, 8]", "batch_sizes: [1, 0, 8]", rf"{SETTING}\.batch_sizes: must be a non-empty list"),
    ("    overlap: true\n", "    overlap: yes please\n", rf"{SETTING}\.overlap: must be true or false"),
    ("    kind: gpu\n", "    kind: tpu\n", r"devices\.v100\.kind: must be one of 'gpu', 'cpu', 'npu', 'dpu'"),
    ("    channel_tile: 32\n", "    channel_tile: 0\n", r"devices\.v100\.channel_tile: must be an int >= 1"),
    ("    channel_tile: 32\n", "    channel_tile: wide\n", r"devices\.v100\.channel_tile: must be an integer"),
]


@pytest.mark.parametrize(("old", "new", "message"), BAD_TARGET)
def test_a_bad_target_value_names_file_line_and_field(tmp_path, old: str, new: str, message: str) -> None:
    text = get_target("v100").path.read_text()
    assert old in text
    path = tmp_path / "v100.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=rf"v100\.yaml:\d+: {message}"):
        load_target(path)


@pytest.mark.parametrize(("change", "message"), [
    ({"lr": -1.0}, "lr: must be > 0, got -1.0"),
    ({"epochs": 0}, "epochs: must be >= 1, got 0"),
    ({"epochs": "3"}, "epochs: must be an integer, got '3'"),
    ({"ends": "both"}, "ends: must be one of 'fixed', 'varied', got 'both'"),
    ({"grad_clip": "off"}, "grad_clip: must be a number, got 'off'"),
    ({"distill": 1}, "distill: must be true or false, got 1"),
])
def test_a_bad_train_setting_is_named(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TrainSettings(**change)
    assert str(caught.value) == f"train settings: {message}"


def test_train_settings_take_ints_for_floats_and_none_for_no_clipping() -> None:
    settings = TrainSettings(lr=1, grad_clip=None, warmup_epochs=0)
    assert (settings.lr, settings.grad_clip, settings.warmup_epochs) == (1.0, None, 0.0)
    assert isinstance(settings.lr, float) and TrainSettings.from_dict(settings.to_dict()) == settings
