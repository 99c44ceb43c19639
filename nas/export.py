"""Hand an Arch to other teams: as a config file (YAML/JSON) or as a runnable model (torch.export, ONNX, CoreML).

:func:`export` writes one Arch in one format into a folder:

=========  =====================================================================================================
format     files (``<stem>`` is the Arch's name, else its id)
=========  =====================================================================================================
yaml       ``<stem>.yaml``: the Arch file; reads back (:meth:`nas.Arch.load`) to the same :attr:`~nas.Arch.id`
json       ``<stem>.json``: the same as JSON
torch      ``<stem>.pt2``: a :func:`torch.export.export` program (:func:`torch.export.save`; the Arch YAML and a
           note travel inside as extra files), plus ``<stem>.state_dict.pt`` when a trained checkpoint is given;
           without one the program holds a seeded random initialisation, and the result says so
onnx       ``<stem>.onnx``: one self-contained file, checked by running it in onnxruntime against torch; an Arch
           with int8 blocks becomes a QDQ model that onnxruntime runs with int8 kernels (see below)
coreml     ``<stem>.mlpackage``: an ML program converted by coremltools from the torch.export program; CoreML
           prediction needs macOS, so it is written and not run here
=========  =====================================================================================================

Model formats take a batch of ``(batch, channels, resolution, resolution)`` float32 images, the batch dimension
dynamic where the model allows (CoreML: batch 1), and give ``(batch, num_classes)`` logits.

Writes are atomic as a whole: everything is written and checked in a staging folder beside the destination and
moved into place only when every step succeeded, so a failure leaves the folder as it was.

Int8 points (blocks whose precision names int8) export to ONNX as QuantizeLinear/DequantizeLinear (QDQ) pairs
(:func:`nas.qdq.export_qdq`): the fake-quantised model with its ranges fixed (a checkpoint's calibrated ranges;
otherwise min-max over the check input, and the result says so), each int8 layer's output requantised so that
onnxruntime fuses its int8 kernels. It is checked against the fake-quantised torch model to within a few int8
steps of the output (:func:`nas.qdq.int8_tolerance`), and the notes name the int8 kernels onnxruntime runs.
Formats ONNX cannot carry here (int4, fp8, fp16, bf16) are refused before anything is written, naming the block.

ONNX and CoreML are optional extras (``pip install "nas[onnx]"``, ``pip install "nas[coreml]"``); they are
imported at call time and their absence is a :class:`~nas.errors.NasError` carrying the install hint.

Example:
    >>> import nas
    >>> from nas.export import export
    >>> result = export(nas.zoo.get("poolformer_s12"), "exported", format="yaml")  # doctest: +SKIP
    >>> nas.Arch.load(result.files[0]).id == nas.zoo.get("poolformer_s12").id  # doctest: +SKIP
    True
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nas.arch import Arch
from nas.build import build
from nas.errors import NasError
from nas.qdq import check_onnx_precision, export_qdq, has_int8, int8_kernels, int8_tolerance
from nas.quiet import quiet_exporters
from nas.registry import Registry

if TYPE_CHECKING:
    from torch.export import ExportedProgram

__all__ = [
    "EXPORT_FORMATS",
    "FORMATS",
    "MODEL_FORMATS",
    "ONNX_TOLERANCE",
    "Checkpoint",
    "ExportFormat",
    "ExportResult",
    "export",
    "export_many",
    "load_checkpoint",
    "require",
]

ONNX_TOLERANCE = 1e-4  # max |onnxruntime - torch| on the check input
TORCH_TOLERANCE = 1e-5  # max |reloaded program - eager module|
ONNX_OPSET = 18
_INIT_SEED = 0  # random initialisation of a model exported without a checkpoint
_CHECK_SEED = 1  # the check input
_CHECK_BATCH = 2  # traced with batch 2: a batch of 1 would specialise the batch dimension to the constant 1
_MAX_BATCH = 4096
_SAFE_STEM = re.compile(r"[^A-Za-z0-9_.-]+")
_INSTALL_HINTS = {
    "onnx": 'pip install "nas[onnx]"  (onnx, onnxscript and onnxruntime)',
    "onnxruntime": 'pip install "nas[onnx]"  (onnx, onnxscript and onnxruntime)',
    "onnxscript": 'pip install "nas[onnx]"  (onnx, onnxscript and onnxruntime)',
    "coremltools": 'pip install "nas[coreml]"',
}
RANDOM_INIT_NOTE = (
    "no trained checkpoint: the program holds a random initialisation (seed 0); its structure, shapes and "
    "cost are the Arch's, its outputs are not meaningful"
)
COREML_NOTE = "CoreML prediction needs macOS: the .mlpackage was converted and written, not run here"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote.

    Attributes:
        format: one of :data:`FORMATS`.
        arch_id: :attr:`nas.Arch.id` of the exported point.
        files: the paths written, main file first.
        notes: things the receiver must know (random weights, where prediction can run, a static batch).
        max_abs_diff: for ``onnx`` and ``torch``, the largest difference to the eager torch module on the
            check input; ``None`` for the other formats.
    """

    format: str
    arch_id: str
    files: tuple[Path, ...]
    notes: tuple[str, ...] = ()
    max_abs_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON)."""
        return {"format": self.format, "arch_id": self.arch_id, "files": [str(path) for path in self.files],
                "notes": list(self.notes), "max_abs_diff": self.max_abs_diff}


@dataclass
class _Job:
    """One export in progress: what to write, the staging folder and what was found on the way."""

    arch: Arch
    stem: str
    root: Path
    model: Callable[[], nn.Module]
    trained: bool
    names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    max_abs_diff: float | None = None

    def path(self, name: str) -> Path:
        """A path in the staging folder, recorded to be moved into place."""
        self.names.append(name)
        return self.root / name


def require(module: str) -> Any:
    """Import an optional dependency, or raise :class:`NasError` with its install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = _INSTALL_HINTS.get(module, f"pip install {module}")
        raise NasError(f"this export needs the optional package {module!r}, which is not installed "
                       f"({exc}); install it with: {hint}") from None


def _stem_of(arch: Arch, name: str | None) -> str:
    stem = _SAFE_STEM.sub("_", name or arch.name or arch.id).strip("._")
    if not stem:
        raise NasError(f"export name {name!r} has no usable character (letters, digits, '_', '-', '.')")
    return stem


Checkpoint = str | os.PathLike[str] | Mapping[str, torch.Tensor] | nn.Module


def _calibrated_model(arch: Arch, path: Path) -> nn.Module:
    """A `nas quantize` model file: its calibrated ranges and any noisy biases, which a plain load would drop."""
    from nas.quantization.model_file import load_quantized

    loaded = load_quantized(path)
    if loaded.arch.id != arch.id:
        raise NasError(f"{path}: a calibrated model of Arch {loaded.arch.id}, not of {arch.id} "
                       f"(export the arch.yaml written beside it)")
    return loaded.module


def load_checkpoint(arch: Arch, checkpoint: Checkpoint) -> nn.Module:
    """``build(arch)`` with trained weights from ``checkpoint``, in eval mode.

    Args:
        arch: the point the weights belong to.
        checkpoint: a file holding a ``state_dict`` (``torch.save(model.state_dict(), path)``, or a dict with a
            ``state_dict``/``model`` entry), a ``state_dict`` itself, a module with the same parameter names
            (what ``nas.supernet`` extracts for an Arch), or a calibrated model file of ``nas quantize``.

    Raises:
        NasError: the file cannot be read or is damaged (its recorded hash does not match), or its keys or
            shapes do not match the Arch's model.
    """
    if isinstance(checkpoint, nn.Module):
        state = checkpoint.state_dict()
    elif isinstance(checkpoint, Mapping):
        state = dict(checkpoint)
    else:
        from nas.quantization.model_file import QUANTIZED_KIND
        from nas.supernet.checkpoint import read_torch_file  # the one safe torch.load; the import is heavy

        path = Path(checkpoint)
        if not path.is_file():
            raise NasError(f"{path}: cannot read checkpoint (no such file)")
        loaded = read_torch_file(path)
        if isinstance(loaded, Mapping) and loaded.get("kind") == QUANTIZED_KIND:
            return _calibrated_model(arch, path)
        if isinstance(loaded, Mapping) and not any(isinstance(value, torch.Tensor) for value in loaded.values()):
            loaded = loaded.get("state_dict", loaded.get("model", loaded))
        if not isinstance(loaded, Mapping):
            raise NasError(f"{path}: expected a state_dict, got {type(loaded).__name__}")
        state = dict(loaded)
    model = build(arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        reason = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
        raise NasError(f"checkpoint does not fit Arch {arch.id}: {reason}") from None
    return model.eval()


def _random_model(arch: Arch) -> nn.Module:
    """``build(arch)`` with a seeded initialisation that leaves the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_INIT_SEED)
        return build(arch).eval()


def _check_input(arch: Arch, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_CHECK_SEED)
    spec = arch.input
    return torch.randn(batch, spec.channels, spec.resolution, spec.resolution, generator=generator)


def _program(model: nn.Module, example: torch.Tensor, *, dynamic_batch: bool) -> ExportedProgram:
    """``torch.export.export`` of the model; the batch dimension dynamic when asked."""
    from torch.export import Dim

    shapes = ({0: Dim("batch", min=1, max=_MAX_BATCH)},) if dynamic_batch else None
    try:
        with quiet_exporters():
            return torch.export.export(model, (example,), dynamic_shapes=shapes)
    except Exception as exc:  # torch.export raises many unrelated types; all mean "cannot export"
        raise NasError(f"torch.export could not export the model: {type(exc).__name__}: {_first_line(exc)}") from exc


def _exported(model: nn.Module, arch: Arch, notes: list[str]) -> tuple[ExportedProgram, torch.Tensor]:
    """The program with a dynamic batch, or with batch 1 where the model fixes it (noted)."""
    example = _check_input(arch, _CHECK_BATCH)
    try:
        return _program(model, example, dynamic_batch=True), example
    except NasError:
        notes.append("the model fixes its batch size: exported for batch 1")
        example = _check_input(arch, 1)
        return _program(model, example, dynamic_batch=False), example


def _max_diff(first: torch.Tensor, second: torch.Tensor) -> float:
    return float((first.detach().float() - second.detach().float()).abs().max())


def _eager(model: nn.Module, example: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(example)


# ---------------------------------------------------------------------------
# one writer per format


def _export_yaml(job: _Job) -> None:
    job.path(f"{job.stem}.yaml").write_text(job.arch.to_yaml(), encoding="utf-8")


def _export_json(job: _Job) -> None:
    job.path(f"{job.stem}.json").write_text(job.arch.to_json(), encoding="utf-8")


def _export_torch(job: _Job) -> None:
    module = job.model()
    program, example = _exported(module, job.arch, job.notes)
    target = job.path(f"{job.stem}.pt2")
    extra = {"arch.yaml": job.arch.to_yaml(), "note.txt": "".join(f"{note}\n" for note in job.notes)}
    torch.export.save(program, target, extra_files=extra)
    reloaded = torch.export.load(target)
    with torch.no_grad():
        job.max_abs_diff = _max_diff(reloaded.module()(example), _eager(module, example))
    if job.max_abs_diff > TORCH_TOLERANCE:
        raise NasError(f"the saved program differs from the model by {job.max_abs_diff:.3g} "
                       f"(tolerance {TORCH_TOLERANCE:g}); nothing written")
    if job.trained:
        torch.save(module.state_dict(), job.path(f"{job.stem}.state_dict.pt"))


def _decompose_wide_attention(program: ExportedProgram) -> ExportedProgram:
    """Decompose scaled-dot-product attention whose query is not 4-D (window attention's is 5-D).

    The ONNX translation of ``aten.scaled_dot_product_attention`` takes 4-D inputs only; the op's own
    decomposition (matmul, softmax, matmul) is exact and translates for any rank.
    """
    sdpa = torch.ops.aten.scaled_dot_product_attention.default

    def wide(node: Any) -> bool:
        value = node.args[0].meta.get("val") if node.args and hasattr(node.args[0], "meta") else None
        return value is None or value.dim() != 4

    if not any(node.op == "call_function" and node.target is sdpa and wide(node) for node in program.graph.nodes):
        return program
    return program.run_decompositions({sdpa: torch.export.default_decompositions()[sdpa]})


def _export_onnx(job: _Job) -> None:
    require("onnx")
    require("onnxscript")
    onnxruntime = require("onnxruntime")
    if has_int8(job.arch):
        _export_onnx_int8(job, onnxruntime)
        return
    module = job.model()
    program, example = _exported(module, job.arch, job.notes)
    target = job.path(f"{job.stem}.onnx")
    try:
        with quiet_exporters():
            torch.onnx.export(_decompose_wide_attention(program), (example,), target, dynamo=True,
                              input_names=["image"], output_names=["logits"], opset_version=ONNX_OPSET,
                              external_data=False, verbose=False)
    except Exception as exc:  # the exporter's ConversionError and whatever it wraps
        raise NasError(f"ONNX export failed: {_first_line(exc)}") from exc
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (output,) = session.run(["logits"], {"image": example.numpy()})
    job.max_abs_diff = _max_diff(torch.from_numpy(output), _eager(module, example))
    if job.max_abs_diff > ONNX_TOLERANCE:
        raise NasError(f"onnxruntime's output differs from torch's by {job.max_abs_diff:.3g} "
                       f"(tolerance {ONNX_TOLERANCE:g}); nothing written")


def _export_onnx_int8(job: _Job, onnxruntime: Any) -> None:
    """The QDQ model of an int8 point, checked against its fake-quantised torch model (module docstring)."""
    module = copy.deepcopy(job.model())  # fixing the ranges changes the module: the caller's stays as it was
    example = _check_input(job.arch, _CHECK_BATCH)
    exported = export_qdq(module, example, opset=ONNX_OPSET, dynamic_batch=True)
    target = job.path(f"{job.stem}.onnx")
    target.write_bytes(exported.data)
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (output,) = session.run(["logits"], {"image": example.numpy()})
    reference = _eager(module, example)
    job.max_abs_diff = _max_diff(torch.from_numpy(output), reference)
    tolerance = int8_tolerance(reference.numpy())
    if job.max_abs_diff > tolerance:
        raise NasError(f"onnxruntime's output differs from the fake-quantised torch model's by "
                       f"{job.max_abs_diff:.3g} (tolerance {tolerance:.3g}: a few int8 steps); nothing written")
    if exported.calibrated:
        job.notes.append(f"{exported.calibrated} activation range(s) were not calibrated: min-max over the check "
                         "input (random images); calibrate on real data first (nas quantize)")
    kernels = int8_kernels(exported.data)
    job.notes.append(f"int8: {exported.requantized} layer output(s) requantised to int8 (ranges from the check "
                     f"input); onnxruntime runs int8 kernels: "
                     + (", ".join(f"{name} x{count}" for name, count in sorted(kernels.items()))
                        or "none (the int8 layers run dequantised, in float)"))


def _drop_aliases(program: ExportedProgram) -> ExportedProgram:
    """Remove ``aten.alias`` nodes (identities in an inference graph), which coremltools cannot convert."""
    graph = program.graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.alias.default:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    program.graph_module.recompile()
    return program


def _export_coreml(job: _Job) -> None:
    with quiet_exporters():  # its import prints that the macOS-only runtime parts are missing, as expected here
        coremltools = require("coremltools")
    program = _program(job.model(), _check_input(job.arch, 1), dynamic_batch=False)
    try:
        with quiet_exporters():
            converted = coremltools.convert(_drop_aliases(program.run_decompositions({})), convert_to="mlprogram",
                                            minimum_deployment_target=coremltools.target.iOS17)
            converted.save(str(job.path(f"{job.stem}.mlpackage")))
    except Exception as exc:  # coremltools raises NotImplementedError/ValueError/RuntimeError per op
        raise NasError(f"CoreML conversion failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    job.notes.append("CoreML input: batch 1")
    job.notes.append(COREML_NOTE)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@dataclass
class ExportFormat:
    """One export format, registered in :data:`EXPORT_FORMATS`.

    Attributes:
        name: what ``--format`` takes.
        write: stages the format's files for one job.
        model: whether it is a runnable model (it takes trained weights; without them it holds a seeded random
            initialisation, and the result says so) rather than a config file.
    """

    name: str
    write: Callable[[_Job], None]
    model: bool


EXPORT_FORMATS: Registry[ExportFormat] = Registry("export format")
_IN_HELP_ORDER = (ExportFormat("yaml", _export_yaml, model=False), ExportFormat("json", _export_json, model=False),
                  ExportFormat("torch", _export_torch, model=True), ExportFormat("onnx", _export_onnx, model=True),
                  ExportFormat("coreml", _export_coreml, model=True))
for _format in _IN_HELP_ORDER:
    EXPORT_FORMATS.register(_format.name)(_format)
FORMATS = tuple(kind.name for kind in _IN_HELP_ORDER)  # config files first, then models: the order help lists them
MODEL_FORMATS = tuple(kind.name for kind in _IN_HELP_ORDER if kind.model)


def _move_into(job: _Job, out_dir: Path) -> tuple[Path, ...]:
    """Move the staged entries into ``out_dir``, replacing same-named ones (each entry atomically)."""
    moved = []
    for name in job.names:
        source, target = job.root / name, out_dir / name
        if source.is_dir() and target.exists():  # a folder cannot replace a non-empty one: move the old aside
            os.replace(target, job.root / f".old-{name}")
        os.replace(source, target)
        moved.append(target)
    return tuple(moved)


def export(arch: Arch, out_dir: str | os.PathLike[str], *, format: str,
           checkpoint: Checkpoint | None = None,
           name: str | None = None) -> ExportResult:
    """Write ``arch`` in ``format`` into ``out_dir`` (created if missing).

    Args:
        arch: the point to export.
        out_dir: the destination folder; entries of the same names are replaced.
        format: one of :data:`FORMATS` (see the module docstring for the files each writes).
        checkpoint: trained weights for the model formats (see :func:`load_checkpoint`); without them the
            model is randomly initialised (seeded) and the result's notes say so. Ignored by ``yaml``/``json``.
        name: file stem (default: the Arch's name, else its id).

    Returns:
        What was written, notes for the receiver, and the measured difference to torch where checked.

    Raises:
        UnknownKindError: unknown format.
        NasError: a missing optional package (with its install hint), a checkpoint that does not fit,
            an exporter failure, or a check beyond its tolerance; nothing is written then.

    Example:
        >>> result = export(nas.zoo.get("poolformer_s12"), "out", format="onnx")  # doctest: +SKIP
        >>> result.max_abs_diff < ONNX_TOLERANCE  # doctest: +SKIP
        True
    """
    return export_many([arch], out_dir, format=format, names=[name], checkpoints=[checkpoint])[0]


def export_many(archs: Sequence[Arch], out_dir: str | os.PathLike[str], *, format: str,
                names: Sequence[str | None] | None = None,
                checkpoints: Sequence[Checkpoint | None] | None = None) -> list[ExportResult]:
    """:func:`export` for several Archs, all or nothing: every export is staged and checked before any moves in.

    Args:
        archs: the points, in order.
        out_dir: the destination folder.
        format: one of :data:`FORMATS`.
        names: a file stem per Arch (None entries: the Arch's name, else its id); stems must be distinct.
        checkpoints: trained weights per Arch (None entries: random initialisation).

    Raises:
        as :func:`export`; also a repeated stem or lists of different lengths.
    """
    kind = EXPORT_FORMATS.get(str(format))
    archs = list(archs)
    names = [None] * len(archs) if names is None else list(names)
    checkpoints = [None] * len(archs) if checkpoints is None else list(checkpoints)
    if not len(names) == len(checkpoints) == len(archs):
        raise NasError(f"names ({len(names)}) and checkpoints ({len(checkpoints)}) must match archs ({len(archs)})")
    for arch in archs:
        if not isinstance(arch, Arch):
            raise NasError(f"expected an Arch, got {type(arch).__name__}")
        if kind.name == "onnx":
            check_onnx_precision(arch)
    stems = [_stem_of(arch, name) for arch, name in zip(archs, names, strict=True)]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise NasError(f"two exports would write the same files: {', '.join(repeated)}; give distinct names")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NasError(f"{out}: exists and is not a folder")
    # a bad checkpoint fails here, before anything is created
    trained = [None if checkpoint is None or not kind.model else load_checkpoint(arch, checkpoint)
               for arch, checkpoint in zip(archs, checkpoints, strict=True)]
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".nas-export-"))
    try:
        jobs = []
        for arch, stem, model in zip(archs, stems, trained, strict=True):
            notes = [RANDOM_INIT_NOTE] if kind.model and model is None else []
            job = _Job(arch, stem, staging, _model_factory(arch, model), model is not None, notes=notes)
            kind.write(job)
            jobs.append(job)
        results = [ExportResult(format, job.arch.id, _move_into(job, out), tuple(job.notes), job.max_abs_diff)
                   for job in jobs]
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return results


def _model_factory(arch: Arch, trained: nn.Module | None) -> Callable[[], nn.Module]:
    if trained is not None:
        return lambda: trained
    return lambda: _random_model(arch)
