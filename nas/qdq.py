"""Int8 ONNX: which precisions an ONNX model can carry, and the QDQ graph that onnxruntime runs with int8 kernels.

A fake-quantised model (``build`` of an Arch with int8 blocks) quantises each int8 layer's input and weights
(``torch.fake_quantize_*``); the ONNX exporters write each of those as a ``QuantizeLinear`` ->
``DequantizeLinear`` pair (QDQ). The layer's output stays float, as in the torch model. onnxruntime's CPU
provider only replaces ``DQ -> Conv/Gemm/MatMul -> Q`` groups by its int8 kernels (``QLinearConv``, ``QGemm``,
``QLinearMatMul``): without a ``QuantizeLinear`` on the output, it dequantises the weights and runs the float
kernel. :func:`requantize_outputs` therefore gives every int8 convolution's (and Gemm's) output a QDQ pair
too (int8, per tensor, symmetric, its range observed on a calibration batch), unless every reader of the output
already quantises it (the next int8 layer's input). That is the one rounding the torch model does not have:
the exported model matches it to within a few quantisation steps (:func:`int8_tolerance`), not to float
rounding. A MatMul (a Linear on tokens) needs no pair: onnxruntime runs it as ``MatMulIntegerToFloat``, int8
inputs and a float output, as the torch model computes it, as long as the batch dimension is dynamic.

onnx and onnxruntime are optional (``nas[onnx]``) and imported at call time by the caller's ``require``.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.arch import Arch, NumberFormat
from nas.blocks.fakequant import Quantizer, quantized_layers
from nas.errors import NasError
from nas.quiet import quiet_exporters

__all__ = ["ONNX_FORMATS", "INT8_LAYERS", "INT8_KERNELS", "QdqModel", "check_onnx_precision", "has_int8",
           "freeze_ranges", "requantize_outputs", "export_qdq", "int8_tolerance", "int8_kernels"]

ONNX_FORMATS = ("fp32", "int8")
"""The tensor formats an ONNX export carries: fp32, and int8 as QDQ pairs that onnxruntime runs as int8."""

INT8_LAYERS = ("Conv", "Gemm", "MatMul")
"""The ONNX ops a quantised layer (Conv1d/2d, Linear) becomes, each fed by DequantizeLinear when int8."""

INT8_KERNELS = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "ConvInteger", "MatMulInteger")
"""The int8 kernels onnxruntime's CPU provider replaces QDQ groups by (what :func:`int8_kernels` counts)."""

_INT8_MAX = 127.0
_REQUANTIZED = ("Conv", "Gemm")  # the int8 layers whose outputs get a QDQ pair (see _int8_outputs)
# Between a DequantizeLinear and its layer: the TorchScript exporter transposes Linear weights and writes the
# fake-quant ops' float32 -> float32 casts (onnxruntime removes both before it fuses).
_PASS_THROUGH = ("Transpose", "Reshape", "Cast", "Identity")
# The inserted pairs are uint8 with zero point 128: the same grid as int8 with zero point 0, and the activation
# type onnxruntime's x86 int8 kernels take (it converts int8 activations to it when each Q has one reader, which
# a pair whose output several nodes read would not allow).
_REQUANT_ZERO_POINT = 128
_TINY_RANGE = 1e-8  # a range of an all-zero output: any positive scale represents it exactly
_STEPS = 4.0  # int8_tolerance: this many output quantisation steps


@dataclass(frozen=True)
class QdqModel:
    """An int8 model as QDQ ONNX (:func:`export_qdq`).

    Attributes:
        data: the serialised ``onnx.ModelProto`` (input ``image``, output ``logits``).
        calibrated: activation quantisers whose range was observed on the example (0: all were calibrated).
        requantized: int8 layer outputs given a QDQ pair (see the module docstring).
    """

    data: bytes
    calibrated: int
    requantized: int


@dataclass(frozen=True)
class _Site:
    """One block's precision field and the format it names."""

    path: str
    fmt: NumberFormat


def _sites(arch: Arch) -> Iterator[_Site]:
    for stage_index, stage in enumerate(arch.stages):
        for block_index, block in enumerate(stage.blocks):
            path = f"stages[{stage_index}].blocks[{block_index}].precision"
            precision = block.precision
            for name in ("weights", "activations", "ffn_weights", "ffn_activations"):
                spec = getattr(precision, name)
                if spec is not None:
                    yield _Site(f"{path}.{name}", NumberFormat.parse(spec, f"{path}.{name}"))


def check_onnx_precision(arch: Arch) -> None:
    """Refuse an Arch with a tensor format ONNX export cannot carry (before anything is built or written).

    Raises:
        NasError: naming the first block field whose format is not in :data:`ONNX_FORMATS`.
    """
    for site in _sites(arch):
        if site.fmt.name not in ONNX_FORMATS:
            raise NasError(f"{site.path}: {site.fmt.name} cannot be exported to ONNX: onnxruntime's CPU provider "
                           f"runs {' and '.join(ONNX_FORMATS)} here (int8 as QuantizeLinear/DequantizeLinear pairs)")


def has_int8(arch: Arch) -> bool:
    """Whether any block of ``arch`` quantises a tensor to int8."""
    return any(site.fmt.name == "int8" for site in _sites(arch))


def freeze_ranges(model: nn.Module, example: torch.Tensor) -> int:
    """Fix the range of every uncalibrated quantiser of ``model``, in place: weights from their own values (what
    their dynamic min-max computes anyway), activations from what they see on ``example`` (min-max).

    An exported QDQ model needs constant scales: a range computed from the live tensor would become graph
    arithmetic that onnxruntime cannot fuse into its int8 kernels. Calibrated quantisers (``nas quantize``,
    a PTQ checkpoint) keep their ranges.

    Returns:
        How many activation quantisers were calibrated on ``example`` (0: the model's own ranges were used).
    """
    seen: dict[Quantizer, tuple[torch.Tensor, torch.Tensor]] = {}

    def observe(quantizer: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        seen[quantizer] = quantizer.observed_range(inputs[0])  # type: ignore[operator]

    activations = [layer.input_quantizer for _, layer in quantized_layers(model)
                   if not layer.input_quantizer.fmt.is_float32 and not layer.input_quantizer.is_calibrated]
    handles = [quantizer.register_forward_pre_hook(observe) for quantizer in activations]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    for quantizer in activations:
        quantizer.set_range(*seen[quantizer])
    for _, layer in quantized_layers(model):
        weights = layer.weight_quantizer
        if not weights.fmt.is_float32 and not weights.is_calibrated:
            weights.set_range(*weights.observed_range(layer.deployed_weight()))
    return len(activations)


def export_qdq(model: nn.Module, example: torch.Tensor, *, opset: int, dynamic_batch: bool) -> QdqModel:
    """A fake-quantised model as a QDQ ONNX model that onnxruntime runs with int8 kernels.

    ``model`` is changed: its uncalibrated quantisers get fixed ranges (:func:`freeze_ranges`), so compare it
    with the result afterwards. The TorchScript exporter (``dynamo=False``) writes it: a quantiser branches on
    whether it is calibrated, which the tracer records as taken, while ``torch.export`` refuses to branch on a
    buffer's value.

    Args:
        model: a built model with int8 blocks, in eval mode.
        example: the calibration and tracing batch, ``(batch, channels, resolution, resolution)``.
        opset: the ONNX opset (>= 13, for per-channel QDQ).
        dynamic_batch: whether the batch dimension stays free.

    Raises:
        NasError: the exporter failed.
    """
    import onnx

    calibrated = freeze_ranges(model, example)
    buffer = io.BytesIO()
    axes = {"image": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    try:
        with quiet_exporters(), torch.no_grad():
            torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["image"], output_names=["logits"],
                              opset_version=opset, dynamic_axes=axes)
    except Exception as exc:  # the exporter raises many unrelated types; all mean "cannot export"
        lines = str(exc).strip().splitlines()
        raise NasError(f"int8 ONNX export failed: {type(exc).__name__}: {lines[0] if lines else ''}") from exc
    proto = onnx.load_from_string(buffer.getvalue())
    requantized = requantize_outputs(proto, {"image": example.numpy()})
    return QdqModel(proto.SerializeToString(), calibrated, requantized)


def int8_tolerance(reference: np.ndarray) -> float:
    """The largest difference an int8 export may show to its fake-quantised torch model.

    A few (:data:`_STEPS`) int8 steps of the output's own range, ``max |reference| / 127``: the exported
    model rounds each int8 layer's output once more than the torch model (see the module docstring), and
    the ties of the two rounding implementations may differ by a step.
    """
    return _STEPS * float(np.abs(reference).max()) / _INT8_MAX


def _producers(graph: Any) -> dict[str, Any]:
    return {output: node for node in graph.node for output in node.output}


def _consumers(graph: Any) -> dict[str, list[Any]]:
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _int8_outputs(graph: Any) -> list[str]:
    """The output of every int8 layer that needs a QDQ pair for onnxruntime to run it in int8.

    An int8 layer is a :data:`INT8_LAYERS` node whose data and weight inputs both come from DequantizeLinear.
    Conv and Gemm need the pair, unless every reader of the output quantises it already (the next int8 layer's
    input). MatMul does not: onnxruntime runs ``DQ -> MatMul`` as ``MatMulIntegerToFloat`` (int8 inputs, float
    output: exactly the fake-quantised layer), provided the batch dimension is dynamic (with static shapes it
    first fuses the bias Add into a float Gemm).
    """
    producers, readers = _producers(graph), _consumers(graph)
    graph_outputs = {output.name for output in graph.output}

    def dequantized(name: str) -> bool:
        node = producers.get(name)
        while node is not None and node.op_type in _PASS_THROUGH:
            node = producers.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    out = []
    for node in graph.node:
        if node.op_type not in _REQUANTIZED or not (dequantized(node.input[0]) and dequantized(node.input[1])):
            continue
        name = node.output[0]
        following = readers.get(name, [])
        if name in graph_outputs or (following and all(reader.op_type == "QuantizeLinear" for reader in following)):
            continue
        out.append(name)
    return out


def _observed_scales(model: Any, names: list[str], feed: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Symmetric int8 scale of each named tensor: ``max |value| / 127`` over the calibration batch."""
    import onnx
    import onnxruntime

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {output.name for output in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in names if name not in present)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every name
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = session.run(names, dict(feed))
    return {name: max(float(np.abs(value).max()), _TINY_RANGE) / _INT8_MAX
            for name, value in zip(names, values, strict=True)}


def requantize_outputs(model: Any, feed: Mapping[str, np.ndarray]) -> int:
    """Give every int8 layer's output a QuantizeLinear -> DequantizeLinear pair, in place.

    Args:
        model: an ``onnx.ModelProto`` exported from a fake-quantised model (opset >= 13).
        feed: the calibration batch, input name -> array: the output ranges are observed on it.

    Returns:
        How many outputs were given a QDQ pair.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    names = _int8_outputs(graph)
    if not names:
        return 0
    scales = _observed_scales(model, names, feed)
    readers = _consumers(graph)
    positions = {output: index for index, node in enumerate(graph.node) for output in node.output}
    inserted: list[tuple[int, list[Any]]] = []
    for number, name in enumerate(names):
        scale_name, zero_name = f"nas_requant_{number}_scale", f"nas_requant_{number}_zero_point"
        graph.initializer.extend([numpy_helper.from_array(np.asarray(scales[name], dtype=np.float32), scale_name),
                                  helper.make_tensor(zero_name, TensorProto.UINT8, [], [_REQUANT_ZERO_POINT])])
        quantized, restored = f"{name}_nas_q", f"{name}_nas_dq"
        for reader in readers.get(name, []):
            for index, value in enumerate(reader.input):
                if value == name:
                    reader.input[index] = restored
        inserted.append((positions[name], [
            helper.make_node("QuantizeLinear", [name, scale_name, zero_name], [quantized], name=f"{name}_nas_quantize"),
            helper.make_node("DequantizeLinear", [quantized, scale_name, zero_name], [restored],
                             name=f"{name}_nas_dequantize")]))
    nodes = list(graph.node)
    for position, pair in sorted(inserted, key=lambda item: -item[0]):  # from the back: positions stay valid
        nodes[position + 1:position + 1] = pair
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return len(names)


def int8_kernels(model_bytes: bytes, *, threads: int = 1) -> dict[str, int]:
    """How many nodes of each int8 kernel (:data:`INT8_KERNELS`) onnxruntime runs for a model, after its
    graph optimisations (the proof that a QDQ model executes in int8, not dequantised to float)."""
    import onnx
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="nas-ort-") as folder:
        path = os.path.join(folder, "optimized.onnx")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = path
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(path)
    counts: dict[str, int] = {}
    for node in optimized.graph.node:
        if node.op_type in INT8_KERNELS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
