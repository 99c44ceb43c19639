"""Fuzzed bad input (issue 20, categories 1-3): sizes bounded before allocation, YAML edge cases, one validation.

Every case runs a command in-process (``nas.cli.main``) on a generated file and asserts the contract for bad
input: exit status 2, exactly one line on stderr naming the file (with the line and the field path where there
are ones), and every file that existed before unchanged, with no new file. Cases are sampled by hypothesis, not
enumerated.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nas
from nas.cli import main
from nas.component import coerce_field
from nas.errors import ConfigError
from nas.limits import Limits
from nas.yamlio import loads_yaml
from tests.conftest import TINY_DIR

BASE = (TINY_DIR / "mixer_pooling.yaml").read_text()
LIMITS = Limits()
FUZZ = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------
# the contract


@contextmanager
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() if path.is_file() else b"<dir>"
            for path in sorted(root.rglob("*"))}


def bad_input(capsys: pytest.CaptureFixture[str], root: Path, *argv: str, source: str, line: int | None = None,
              field: str | None = None) -> str:
    """Run ``nas argv`` and assert the bad-input contract; the one error line."""
    before = _snapshot(root)
    status = main(list(argv))
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, captured
    assert len(lines) == 1, captured.err
    message = lines[0]
    assert message.startswith("nas: error: "), message
    assert source in message, message
    if line is not None:
        assert f"{source}:{line}: " in message, message
    if field is not None:
        assert f" {field}: " in message, message
    assert _snapshot(root) == before
    return message


def write(root: Path, text: str | bytes, name: str = "arch.yaml") -> Path:
    path = root / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def line_of(text: str, needle: str) -> int:
    return text[:text.index(needle)].count("\n") + 1


# ---------------------------------------------------------------------------
# 1. sizes bounded before allocation

# (text in the tiny arch, its field path, the limit bounding it)
SIZE_FIELDS = [
    ("resolution: 64", "input.resolution", LIMITS.resolution),
    ("channels: 3", "input.channels", LIMITS.width),
    ("dim: 16}", "stem.dim", LIMITS.width),
    ("kernel: 7", "stem.kernel", LIMITS.width),
    ("- dim: 24", "stages[1].dim", LIMITS.width),
    ("repeat: 2", "stages[0].blocks.repeat", LIMITS.blocks),
    ("pool_size: 3", "stages[0].blocks[0].mixer.pool_size", LIMITS.width),
    ("ratio: 2}", "stages[0].blocks[0].ffn.ratio", LIMITS.width),
    ("num_classes: 10", "head.num_classes", LIMITS.classes),
]


@st.composite
def oversized(draw: st.DrawFn) -> tuple[str, str, str, int]:
    """A tiny arch with one number beyond its limit (up to 10^30): its text, the field, the changed line."""
    needle, field, limit = draw(st.sampled_from(SIZE_FIELDS))
    value = draw(st.one_of(st.integers(limit + 1, 4 * limit), st.integers(limit + 1, 10**30)))
    key, _, rest = needle.partition(": ")
    tail = rest.lstrip("0123456789")
    text = BASE.replace(needle, f"{key}: {value}{tail}", 1)
    return text, field, str(value), line_of(BASE, needle)


@FUZZ
@given(case=oversized(), command=st.sampled_from(["build", "predict"]))
def test_a_number_beyond_its_limit_is_refused_before_allocation(capsys, case, command) -> None:
    text, field, value, line = case
    extra = ["--target", "v100"] if command == "predict" else []
    with folder() as root:
        path = write(root, text)
        start = time.perf_counter()
        message = bad_input(capsys, root, command, str(path), *extra, source=str(path), line=line, field=field)
        assert time.perf_counter() - start < 5
    float_field = field.endswith("ratio")  # a float field: an integer beyond 2**53 is held (and shown) rounded
    assert "exceeds the limit NAS_MAX_" in message and (value if not float_field else f"{float(value)}") in message


def test_build_and_predict_agree_on_a_billion_wide_dim(capsys) -> None:
    with folder() as root:
        path = write(root, BASE.replace("- dim: 24", "- dim: 1000000000"))
        built = bad_input(capsys, root, "build", str(path), source=str(path), line=10, field="stages[1].dim")
        priced = bad_input(capsys, root, "predict", str(path), "--target", "v100", source=str(path))
    assert built == priced
    assert "NAS_MAX_WIDTH=16384" in built


def test_params_and_macs_limits_are_counted_on_meta_and_named(capsys, monkeypatch) -> None:
    with folder() as root:
        path = write(root, BASE)
        monkeypatch.setenv("NAS_MAX_PARAMS", "1000")
        message = bad_input(capsys, root, "build", str(path), source=str(path))
        assert "NAS_MAX_PARAMS=1000" in message
        monkeypatch.delenv("NAS_MAX_PARAMS")
        monkeypatch.setenv("NAS_MAX_MACS", "1000")
        message = bad_input(capsys, root, "predict", str(path), "--target", "v100", source=str(path))
        assert "macs: " in message and "NAS_MAX_MACS=1000" in message


def test_a_limit_is_set_by_its_environment_variable(capsys, monkeypatch) -> None:
    with folder() as root:
        path = write(root, BASE)
        monkeypatch.setenv("NAS_MAX_WIDTH", "20")
        bad_input(capsys, root, "build", str(path), source=str(path), line=10, field="stages[1].dim")
        monkeypatch.setenv("NAS_MAX_WIDTH", "lots")
        bad_input(capsys, root, "build", str(path), source="$NAS_MAX_WIDTH")


def test_every_zoo_model_and_sampled_space_point_is_within_the_default_limits() -> None:
    for name in nas.zoo.list_zoo():
        nas.cost.check_limits(nas.zoo.get(name))
    for name in nas.space.list_spaces():
        space = nas.space.load_space(name)  # every option of every decision within the limits
        for vector in space.sample_vectors(np.random.default_rng(0), 2):
            nas.cost.check_limits(space.decode(vector))


# a space file's choices: (text in metaformer.yaml, replacement, what the error names)
SPACE_CASES = [
    ("repeat: {range: [1, 8]}", "repeat: {range: [1, %d]}", "at most 4096 values"),
    ("- dim: {ordinal: [32, 48, 64, 96, 128]}", "- dim: {ordinal: [32, 48, 64, 96, %d]}", "NAS_MAX_WIDTH"),
    ("repeat: {range: [1, 8]}", "repeat: {choice: [1, %d]}\n          independent: true", "NAS_MAX_BLOCKS"),
    ("input: {resolution: {ordinal: [192, 224, 256]}", "input: {resolution: {ordinal: [192, 224, %d]}",
     "NAS_MAX_RESOLUTION"),
]


@FUZZ
@given(case=st.sampled_from(SPACE_CASES), exponent=st.integers(5, 30), command=st.sampled_from(["show", "search"]))
def test_a_space_that_cannot_exist_says_why_at_load_time(capsys, case, exponent, command) -> None:
    needle, replacement, expected = case
    text = (nas.space.spaces_dir() / "metaformer.yaml").read_text()
    with folder() as root:
        path = write(root, text.replace(needle, replacement % 10**exponent, 1), "space.yaml")
        argv = (["space", "show", str(path)] if command == "show" else
                ["search", "--space", str(path), "--target", "v100", "--budget", "2", "--accuracy", "proxy",
                 "--out", str(root / "run"), "--no-plot"])
        message = bad_input(capsys, root, *argv, source=str(path), line=line_of(text, needle))
    assert expected in message


HUGE_SPACE = """\
schema: 1
name: huge
input: {resolution: 224, channels: 3}
stem: {kind: patch, patch: 4}
stages:
  - dim: {ordinal: [%d, 16000]}
    downsample: null
    blocks: {repeat: {range: [%d, 1000]}, block: {mixer: pooling, ffn: {kind: mlp, ratio: 4}, norm: layernorm}}
head: {kind: linear, num_classes: 10}
"""


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(12000, 15999), depth=st.integers(900, 999), command=st.sampled_from(["sample", "search"]))
def test_a_space_whose_every_point_is_too_large_is_refused_before_use(capsys, width, depth, command) -> None:
    """Every number within its own limit, every point far beyond NAS_MAX_PARAMS: refused before a point is printed
    or a run directory made, the limit named."""
    with folder() as root:
        path = write(root, HUGE_SPACE % (width, depth), "space.yaml")
        argv = (["space", "sample", str(path)] if command == "sample" else
                ["search", "--space", str(path), "--target", "v100", "--budget", "2", "--accuracy", "proxy",
                 "--out", str(root / "run"), "--no-plot"])
        message = bad_input(capsys, root, *argv, source=str(path), field="params")
    assert "NAS_MAX_PARAMS=" in message and "no point within the size limits" in message


def test_a_space_with_some_point_within_the_limits_is_kept(capsys, monkeypatch) -> None:
    """The probe stops at a point within the limits: a limit between the smallest and the largest point passes."""
    space = nas.space.load_space("metaformer")
    sizes = [nas.cost.profile(space.decode(vector)).params
             for vector in nas.search.constraints.probe_points(space, np.random.default_rng(0), 4)]
    monkeypatch.setenv("NAS_MAX_PARAMS", str(min(sizes)))
    assert main(["space", "sample", "metaformer"]) == 0
    monkeypatch.setenv("NAS_MAX_PARAMS", str(min(sizes) - 1))
    assert main(["space", "sample", "metaformer"]) == 2
    assert "no point within the size limits" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# 2. YAML edge cases


@FUZZ
@given(depth=st.integers(LIMITS.yaml_depth + 1, 5000), opener=st.sampled_from(["[", "{a: "]),
       command=st.sampled_from(["build", "predict"]))
def test_deep_nesting_is_refused_without_recursion(capsys, depth, opener, command) -> None:
    closer = "]" if opener == "[" else "}"
    text = BASE.replace("name: tiny_pooling", "name: " + opener * depth + "1" * (opener != "[") + closer * depth)
    extra = ["--target", "v100"] if command == "predict" else []
    with folder() as root:
        path = write(root, text)
        message = bad_input(capsys, root, command, str(path), *extra, source=str(path), line=3)
    assert "NAS_MAX_YAML_DEPTH" in message


def test_deep_json_is_refused_without_recursion(capsys) -> None:
    data = nas.Arch.load(TINY_DIR / "mixer_pooling.yaml").to_dict()
    text = json.dumps(data).replace('"tiny_pooling"', "[" * 100_000 + "]" * 100_000)
    with folder() as root:
        path = write(root, text, "arch.json")
        bad_input(capsys, root, "build", str(path), source=str(path))


@FUZZ
@given(levels=st.integers(6, 12), width=st.integers(10, 12), place=st.sampled_from(["name", "layer_scale"]))
def test_billion_laughs_fail_fast(capsys, levels, width, place) -> None:
    anchors = [f"  - &a0 [{', '.join(['lol'] * width)}]"]
    anchors += [f"  - &a{level} [{', '.join([f'*a{level - 1}'] * width)}]" for level in range(1, levels)]
    laughs = "\n".join(anchors)
    if place == "name":
        text = BASE.replace("name: tiny_pooling", f"name:\n{laughs}")
    else:
        text = f"laughs:\n{laughs}\n" + BASE.replace("layer_scale: 1.0e-5", f"layer_scale: *a{levels - 1}")
    with folder() as root:
        path = write(root, text)
        start = time.perf_counter()
        message = bad_input(capsys, root, "build", str(path), source=str(path))
        assert time.perf_counter() - start < 5
    assert "NAS_MAX_YAML_NODES" in message


@FUZZ
@given(key=st.sampled_from(["? [a, b]\n: 1\n", "? {a: 1}\n: 2\n", "[a, b]: 1\n", "{a: 1}: 2\n"]),
       command=st.sampled_from(["build", "predict"]))
def test_a_complex_mapping_key_is_refused(capsys, key, command) -> None:
    text = BASE + key
    extra = ["--target", "v100"] if command == "predict" else []
    with folder() as root:
        path = write(root, text)
        message = bad_input(capsys, root, command, str(path), *extra, source=str(path),
                            line=BASE.count("\n") + 1)
    assert "mapping key" in message


@FUZZ
@given(position=st.integers(0, len(BASE)), character=st.sampled_from(["\x00", "\x01", "\x1b", "\x7f", "\ufffe"]))
def test_a_forbidden_character_names_its_line(capsys, position, character) -> None:
    text = BASE[:position] + character + BASE[position:]
    with folder() as root:
        path = write(root, text)
        bad_input(capsys, root, "build", str(path), source=str(path), line=BASE[:position].count("\n") + 1)


@FUZZ
@given(position=st.integers(0, len(BASE)), garbage=st.sampled_from([b"\xff", b"\xc3(", b"\x80", b"\xed\xa0\x80"]),
       suffix=st.sampled_from(["arch.yaml", "arch.json"]))
def test_undecodable_bytes_name_their_line(capsys, position, garbage, suffix) -> None:
    data = BASE.encode()
    with folder() as root:
        path = write(root, data[:position] + garbage + data[position:], suffix)
        bad_input(capsys, root, "build", str(path), source=str(path), line=data[:position].count(b"\n") + 1)


def test_a_bad_timestamp_is_a_yaml_error(capsys) -> None:
    with folder() as root:
        path = write(root, BASE.replace("name: tiny_pooling", "name: 2020-13-45"))
        bad_input(capsys, root, "build", str(path), source=str(path), line=3)


YAML_PIECES = st.sampled_from([*"[]{}:,-?&*!|>'\"#%@` \n\tab01.~", "\x00", "\x85", "\ufeff", "&a ", "*a", "<<: ",
                               "---\n",
                               "? ", "%YAML 1.1\n", "!!int ", "!!float ", "!!timestamp ", "!!binary ", "!!set ",
                               "!!omap ", "!!map ", "!!seq ", "!!python/object ", "!<tag:yaml.org,2002:int> "])


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(YAML_PIECES, max_size=40))
def test_the_loader_raises_only_config_errors(pieces) -> None:
    text = "".join(pieces)
    try:
        loads_yaml(text, source="fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml") and "\n" not in str(exc)


@FUZZ
@given(value=st.sampled_from([".nan", ".NaN", ".inf", ".Inf", "-.inf", "-.INF", "1e999", "-1e999", "nan"]),
       field=st.sampled_from([("layer_scale: 1.0e-5", "stages[0].blocks.block.layer_scale"),
                              ("ratio: 2}", "stages[0].blocks.block.ffn.ratio")]))
def test_non_finite_numbers_are_refused_with_their_field(capsys, value, field) -> None:
    needle, path = field
    key = needle.split(":")[0]
    text = BASE.replace(needle, f"{key}: {value}" + ("}" if needle.endswith("}") else ""), 1)
    with folder() as root:
        file = write(root, text)
        message = bad_input(capsys, root, "predict", str(file), "--target", "v100", source=str(file),
                            line=line_of(BASE, needle), field=path)
    assert "finite" in message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), "nan", "-inf", 10**400])
def test_coerce_field_refuses_non_finite_numbers(value) -> None:
    with pytest.raises(ConfigError, match="finite") as caught:
        coerce_field(value, float, "published.gmacs")
    assert caught.value.path == "published.gmacs"


def test_a_huge_wrong_value_is_shown_in_one_short_line() -> None:
    with pytest.raises(ConfigError) as caught:
        coerce_field(list(range(100_000)), int, "stages[0].dim")
    assert len(str(caught.value)) < 300


METAFORMER = (nas.space.spaces_dir() / "metaformer.yaml").read_text()
_NAME_LINE = line_of(METAFORMER, "name: metaformer")
_DIM = "- dim: {ordinal: [32, 48, 64, 96, 128]}"


def _alias_bomb(text: str, levels: int = 9, width: int = 12) -> str:
    anchors = [f"  - &a0 [{', '.join(['lol'] * width)}]"]
    anchors += [f"  - &a{level} [{', '.join([f'*a{level - 1}'] * width)}]" for level in range(1, levels)]
    return "laughs:\n" + "\n".join(anchors) + "\n" + text.replace("name: metaformer", f"name: *a{levels - 1}")


# Every YAML edge case of category 2 in a space file: (damaged bytes, the line named, what the message says)
SPACE_YAML_DAMAGE: list[Callable[[st.DataObject], tuple[bytes, int, str]]] = [
    lambda data: (METAFORMER.replace("name: metaformer", "name: " + "[" * data.draw(st.integers(101, 5000)))
                  .encode(), _NAME_LINE, "NAS_MAX_YAML_DEPTH"),
    lambda data: ((METAFORMER + data.draw(st.sampled_from(["? [a, b]\n: 1\n", "{a: 1}: 2\n"]))).encode(),
                  METAFORMER.count("\n") + 1, "mapping key"),
    lambda data: (METAFORMER.replace("name: metaformer", "name: meta" + data.draw(st.sampled_from(["\x00", "\x1b"]))
                                     + "former").encode(), _NAME_LINE, "not allowed"),
    lambda data: (METAFORMER.replace("name: metaformer", "name: meta\udcffformer").encode("utf-8", "surrogateescape"),
                  _NAME_LINE, "not UTF-8"),
    lambda data: (_alias_bomb(METAFORMER).encode(), 0, "NAS_MAX_YAML_NODES"),
    lambda data: (METAFORMER.replace(_DIM, f"- dim: {{ordinal: [{data.draw(st.sampled_from(['.nan', '.inf']))}, 64]}}")
                  .encode(), line_of(METAFORMER, _DIM), "stages[0].dim.ordinal[0]: must be an integer"),
]


@FUZZ
@given(damage=st.sampled_from(SPACE_YAML_DAMAGE), command=st.sampled_from(["show", "sample", "search"]),
       data=st.data())
def test_every_yaml_edge_case_in_a_space_file_is_one_line(capsys, damage, command, data) -> None:
    raw, line, expected = damage(data)
    with folder() as root:
        path = write(root, raw, "space.yaml")
        argv = (["space", command, str(path)] if command != "search" else
                ["search", "--space", str(path), "--target", "v100", "--budget", "2", "--accuracy", "proxy",
                 "--out", str(root / "run"), "--no-plot"])
        message = bad_input(capsys, root, *argv, source=str(path), line=line or None)
    assert expected in message


# ---------------------------------------------------------------------------
# 3. one validation path


CLASS_TOKEN_POOLING = BASE.replace("stem: {kind: overlap, kernel: 7, stride: 4, dim: 16}",
                                   "stem: {kind: patch, patch: 4, dim: 16, class_token: true}")

REFUSED_BY_BOTH = [
    ("stride: 4, dim: 16}", "stride: 4, padding: -3, dim: 16}", "stem.padding", 5),
    ("kernel: 7", "kernel: 0", "stem.kernel", 5),
    ("- dim: 24", "- dim: 1000000000", "stages[1].dim", 10),
]


@pytest.mark.parametrize(("old", "new", "field", "line"), REFUSED_BY_BOTH)
def test_predict_never_prices_what_build_refuses(capsys, old, new, field, line) -> None:
    with folder() as root:
        path = write(root, BASE.replace(old, new, 1))
        built = bad_input(capsys, root, "build", str(path), source=str(path), line=line, field=field)
        priced = bad_input(capsys, root, "predict", str(path), "--target", "v100", source=str(path), line=line,
                           field=field)
    assert built == priced


def test_a_feature_map_mixer_after_a_class_token_is_an_arch_error(capsys) -> None:
    with pytest.raises(ConfigError, match="class token") as caught:
        nas.Arch.from_yaml(CLASS_TOKEN_POOLING)
    assert caught.value.path.startswith("stages[0].blocks[0].mixer")
    with folder() as root:
        path = write(root, CLASS_TOKEN_POOLING)
        built = bad_input(capsys, root, "build", str(path), source=str(path), line=9)
        priced = bad_input(capsys, root, "predict", str(path), "--target", "v100", source=str(path), line=9)
    assert built == priced


def test_a_block_style_stem_error_names_the_line_of_its_field(capsys) -> None:
    text = BASE.replace("stem: {kind: overlap, kernel: 7, stride: 4, dim: 16}",
                        "stem:\n  kind: overlap\n  stride: 4\n  kernel: 0\n  dim: 16")
    with folder() as root:
        path = write(root, text)
        bad_input(capsys, root, "build", str(path), source=str(path), line=line_of(text, "kernel: 0"),
                  field="stem.kernel")


@FUZZ
@given(resolution=st.integers(LIMITS.resolution + 1, 10**30), command=st.sampled_from(["build", "predict"]))
def test_an_oversized_resolution_argument_is_refused(capsys, resolution, command) -> None:
    extra = ["--target", "v100"] if command == "predict" else []
    with folder() as root:
        message = bad_input(capsys, root, command, "poolformer_s12", "--resolution", str(resolution), *extra,
                            source="--resolution", field="input.resolution")
    assert "NAS_MAX_RESOLUTION" in message



@FUZZ
@given(width=st.integers(-10**6, 0), command=st.sampled_from(["build", "predict"]))
def test_a_stem_width_below_one_is_refused(capsys, width, command) -> None:
    extra = ["--target", "v100"] if command == "predict" else []
    with folder() as root:
        path = write(root, BASE.replace("stride: 4, dim: 16}", f"stride: 4, dim: {width}}}"))
        bad_input(capsys, root, command, str(path), *extra, source=str(path), line=5, field="stem.dim")



RUNS = ("blocks:\n      - repeat: {repeat}\n        block: {{mixer: identity}}\n"
        "      - {{mixer: {{kind: identity}}}}\n      - {{mixer: identity}}")


@FUZZ
@given(repeat=st.integers(1, 5),
       bad=st.sampled_from([("kind: identity", "kind: bogus", "stages[1].blocks[1].mixer.kind"),
                            ("{mixer: identity}", "{mixer: identity, extra: 1}", "stages[1].blocks[2].extra")]))
def test_an_error_after_a_run_of_blocks_names_the_line_as_written(capsys, repeat, bad) -> None:
    old, new, field = bad
    second_stage = "blocks: {repeat: 1, block: {mixer: identity, ffn: {kind: conv_mlp, ratio: 2}, norm: batchnorm}}"
    lines = BASE.replace(second_stage, RUNS.format(repeat=repeat)).splitlines()
    target = len(lines) - 2 if "kind" in old else len(lines) - 1  # the head is last
    lines[target - 1] = lines[target - 1].replace(old, new)
    with folder() as root:
        path = write(root, "\n".join(lines) + "\n")
        bad_input(capsys, root, "build", str(path), source=str(path), line=target, field=field)
