"""Op classes: which class an aten op belongs to, and how an op of each class is counted.

:mod:`nas.cost` records every aten op a unit dispatches and prices it by the
rules here. The table covers the ops of PyTorch's own layers; an op a kind
emits that the table does not know is declared by the kind itself, in the
``ops`` of its config class (``{"aten.my_op": "elementwise"}``, see
:mod:`nas.blocks.contract`), and :func:`op_class` reads those declarations
from the registry. An op neither lists is classed ``view`` when its schema
says it aliases an input, else ``other``; a registry-wide test fails on any op
a kind emits that ends up ``other`` undeclared.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import flop_registry, sdpa_flop_count

from nas.arch import ROLES, config_type, list_kinds
from nas.errors import NasError

__all__ = ["MAC_CLASSES", "OP_CLASSES", "SKIPPED", "OpInfo", "declared_op_classes", "dilation_of", "op_class",
           "op_info"]

# Ops whose FLOPs make up the MACs (MACs = their FLOPs / 2).
MAC_CLASSES = frozenset({"conv", "matmul", "attention"})

# Aten op (overload packet name, without a trailing in-place ``_``) -> op class.
# Ops not listed are classed "view" when their schema says they alias an input, else "other".
_CLASS_OF_OP: dict[str, str] = {
    **dict.fromkeys(("convolution", "_convolution", "convolution_overrideable", "cudnn_convolution",
                     "cudnn_convolution_transpose", "mkldnn_convolution", "_slow_conv2d_forward",
                     "slow_conv_dilated2d", "slow_conv_transpose2d", "_conv_depthwise2d",
                     "convolution_backward"), "conv"),
    **dict.fromkeys(("mm", "addmm", "bmm", "baddbmm", "_scaled_mm", "mv", "addmv", "dot", "addbmm",
                     "_int_mm"), "matmul"),
    **dict.fromkeys(("_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
                     "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
                     "_flash_attention_forward", "_efficient_attention_forward",
                     "_scaled_dot_product_efficient_attention_backward",
                     "_scaled_dot_product_flash_attention_backward",
                     "_scaled_dot_product_cudnn_attention_backward", "_flash_attention_backward",
                     "_efficient_attention_backward"), "attention"),
    **dict.fromkeys(("native_layer_norm", "native_group_norm", "native_batch_norm", "_native_batch_norm_legit",
                     "_native_batch_norm_legit_no_training", "_native_batch_norm_legit_functional",
                     "_fused_rms_norm", "_batch_norm_with_update", "_batch_norm_no_update"), "norm"),
    **dict.fromkeys(("_softmax", "_log_softmax", "_safe_softmax", "softmax", "log_softmax"), "softmax"),
    **dict.fromkeys(("relu", "gelu", "silu", "hardswish", "hardsigmoid", "sigmoid", "tanh", "elu", "selu",
                     "celu", "leaky_relu", "mish", "softplus", "hardtanh", "threshold", "_prelu_kernel",
                     "prelu", "glu", "hardshrink", "softshrink", "log_sigmoid_forward", "rrelu_with_noise"),
                  "activation"),
    **dict.fromkeys(("add", "sub", "rsub", "mul", "div", "neg", "exp", "exp2", "expm1", "log", "log2", "log1p",
                     "sqrt", "rsqrt", "pow", "abs", "sign", "reciprocal", "clamp", "clamp_min", "clamp_max",
                     "maximum", "minimum", "where", "masked_fill", "addcmul", "addcdiv", "lerp", "floor",
                     "ceil", "round", "trunc", "fmod", "remainder", "erf", "erfinv", "sin", "cos", "atan2",
                     "eq", "ne", "gt", "ge", "lt", "le", "logical_and", "logical_or", "logical_not",
                     "bitwise_and", "bitwise_or", "bitwise_not", "tril", "triu", "fill", "bernoulli", "normal",
                     "uniform", "isnan", "nan_to_num"), "elementwise"),
    **dict.fromkeys(("avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool2d_with_indices",
                     "max_pool3d_with_indices", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d",
                     "adaptive_max_pool2d", "adaptive_max_pool3d"), "pool"),
    **dict.fromkeys(("sum", "mean", "amax", "amin", "max", "min", "var", "std", "var_mean", "std_mean", "prod",
                     "argmax", "argmin", "linalg_vector_norm", "norm", "logsumexp", "any", "all", "cumsum",
                     "cumprod", "sort", "count_nonzero"), "reduce"),
    # Data-dependent token routing (mixture of experts): choosing experts, dispatch and combine by index.
    **dict.fromkeys(("topk", "index_add", "index_select"), "routing"),
    **dict.fromkeys(("upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "upsample_linear1d",
                     "upsample_bilinear2d", "upsample_bicubic2d", "upsample_trilinear3d",
                     "_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa", "grid_sampler_2d"), "resize"),
    **dict.fromkeys(("clone", "copy", "_to_copy", "cat", "stack", "constant_pad_nd", "reflection_pad1d",
                     "reflection_pad2d", "replication_pad1d", "replication_pad2d", "roll", "repeat", "flip",
                     "gather", "scatter", "scatter_add", "index", "_unsafe_index", "index_put",
                     "_index_put_impl", "embedding", "im2col", "col2im", "pixel_shuffle", "pixel_unshuffle",
                     "channel_shuffle", "native_channel_shuffle", "masked_select", "slice_scatter",
                     "select_scatter", "narrow_copy", "unfold_copy", "_unsafe_index_put"), "movement"),
    **dict.fromkeys(("view", "_unsafe_view", "_reshape_alias", "permute", "transpose", "t", "expand", "squeeze",
                     "unsqueeze", "slice", "select", "split", "split_with_sizes", "unbind", "unfold",
                     "as_strided", "alias", "detach", "diagonal", "lift_fresh", "view_as_real",
                     "view_as_complex", "_reshape_alias_copy", "real"), "view"),
    **dict.fromkeys(("zeros", "ones", "full", "arange", "new_zeros", "new_ones", "new_full", "zeros_like",
                     "ones_like", "full_like", "linspace", "eye", "scalar_tensor", "lift_fresh_copy",
                     "randn", "rand", "randint", "randperm"), "creation"),
    **dict.fromkeys(("empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided", "resize"),
                    "alloc"),
    **dict.fromkeys(("_fft_r2c", "_fft_c2r", "_fft_c2c"), "fft"),
}

# Op class -> how its FLOPs are counted when no registered formula applies, and whether it moves bytes.
_CLASS_RULES: dict[str, tuple[str, bool]] = {
    "conv": ("zero", True),
    "matmul": ("zero", True),
    "attention": ("zero", True),
    "norm": ("output", True),
    "softmax": ("output", True),
    "activation": ("output", True),
    "elementwise": ("output", True),
    "resize": ("output", True),
    "pool": ("input", True),
    "reduce": ("input", True),
    "movement": ("zero", True),
    "routing": ("zero", True),
    "creation": ("zero", True),
    "view": ("zero", False),
    "alloc": ("zero", False),
    "fft": ("fft", True),
    "other": ("output", True),
}
OP_CLASSES = tuple(_CLASS_RULES)

# Per-op FLOP rules that override the class rule (windowed pools cost one FLOP per window position; a top-k
# one comparison per input element).
_RULE_OF_OP: dict[str, str] = {
    **dict.fromkeys(("avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices"),
                    "window"),
    "topk": "input",
}


def _numel(tensors: Sequence[torch.Tensor]) -> int:
    return tensors[0].numel() if tensors else 0


def _window_flops(args: tuple[Any, ...], inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> int:
    if not outputs:
        return 0
    kernel = list(args[1])
    spatial = outputs[0].dim() - 2 if outputs[0].dim() > 2 else 1
    if len(kernel) == 1:
        kernel *= spatial
    return outputs[0].numel() * math.prod(kernel)


def _fft_flops(args: tuple[Any, ...], inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> int:
    """Radix-2 count: ``5 n log2 n`` per complex transform of length ``n``, half that for a real one.

    ``n`` is the product of the transformed dimensions (``args[1]``) of the real-valued side (or of the input
    of a complex-to-complex transform); every other dimension is a batch of independent transforms.
    """
    if not inputs or not outputs:
        return 0
    source, result = inputs[0], outputs[0]
    signal, per_element = (source, 5.0) if source.is_complex() and result.is_complex() else (
        (result, 2.5) if source.is_complex() else (source, 2.5))
    length = math.prod(signal.shape[dim] for dim in args[1])
    return int(per_element * signal.numel() * math.log2(length)) if length > 1 else 0


_RULES: dict[str, Callable[[tuple[Any, ...], list[torch.Tensor], list[torch.Tensor]], int]] = {
    "zero": lambda args, inputs, outputs: 0,
    "output": lambda args, inputs, outputs: _numel(outputs),
    "input": lambda args, inputs, outputs: _numel(inputs),
    "window": _window_flops,
    "fft": _fft_flops,
}


def _sdpa_cpu_flop(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any,
                   out_val: Any = None, **kwargs: Any) -> int:
    # NOTE: not in torch's registry (FlopCounterMode counts it as 0 on CPU); it never runs on meta.
    return sdpa_flop_count(query.shape, key.shape, value.shape)


_FORMULAS: dict[Any, Callable[..., int]] = {
    **flop_registry,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop,
}

# Shape and metadata queries: not ops of the model (FlopCounterMode skips them too).
SKIPPED = frozenset({
    torch.ops.aten.size.default, torch.ops.aten.sym_size.default, torch.ops.aten.stride.default,
    torch.ops.aten.sym_stride.default, torch.ops.aten.numel.default, torch.ops.aten.sym_numel.default,
    torch.ops.aten.dim.default, torch.ops.aten.is_contiguous.default, torch.ops.aten.is_contiguous.memory_format,
    torch.ops.aten.storage_offset.default, torch.ops.aten.sym_storage_offset.default, torch.ops.prim.layout.default,
    torch.ops.prim.device.default,
})

_COMPOSITE = torch._C.DispatchKey.CompositeImplicitAutograd


@dataclass(frozen=True, slots=True)
class OpInfo:
    """What the recorder needs to know about one aten overload; computed once per overload."""

    name: str
    op_class: str
    formula: Callable[..., int] | None
    rule: Callable[[tuple[Any, ...], list[torch.Tensor], list[torch.Tensor]], int]
    moves_bytes: bool
    decomposes: bool


_OP_INFO: dict[Any, OpInfo] = {}


def declared_op_classes() -> dict[str, str]:
    """Op classes the registered kinds declare (the ``ops`` of their configs), by op name without ``aten.``.

    Raises:
        NasError: a declared class is not one of :data:`OP_CLASSES`, or two declarations (or a
            declaration and the table) class one op differently.
    """
    declared: dict[str, str] = {}
    for role in ROLES:
        for kind in list_kinds(role):
            for name, kind_class in config_type(role, kind).ops.items():
                short = name.removeprefix("aten.")
                if kind_class not in OP_CLASSES:
                    raise NasError(f"{role} {kind!r} declares op {name} as {kind_class!r}; op classes are "
                                   f"{', '.join(OP_CLASSES)}")
                known = _CLASS_OF_OP.get(short) or declared.get(short, kind_class)
                if known != kind_class:
                    raise NasError(f"{role} {kind!r} declares op {name} as {kind_class!r}, but it is {known!r}")
                declared[short] = kind_class
    return declared


def op_class(name: str) -> str:
    """The op class of an aten op named like ``aten.convolution`` (``aten.add_`` as ``aten.add``).

    Ops neither the table nor a kind's declaration lists are ``other``; :func:`nas.cost.profile` also
    classes unlisted aliasing ops as ``view``.
    """
    short = name.removeprefix("aten.")
    found = _CLASS_OF_OP.get(short) or _CLASS_OF_OP.get(short.rstrip("_"))
    if found:
        return found
    declared = declared_op_classes()
    return declared.get(short) or declared.get(short.rstrip("_"), "other")


def op_info(func: torch._ops.OpOverload) -> OpInfo:
    """What the recorder needs to know about ``func``; computed once per overload."""
    info = _OP_INFO.get(func)
    if info is None:
        packet = func.overloadpacket
        name = str(packet)
        kind = op_class(name)
        if kind == "other" and func.is_view:
            kind = "view"
        formula = _FORMULAS.get(packet)
        if formula is not None and kind not in MAC_CLASSES:
            kind = "matmul"
        rule_name, moves_bytes = _CLASS_RULES[kind]
        rule = _RULES[_RULE_OF_OP.get(name.removeprefix("aten."), rule_name)]
        info = OpInfo(name, kind, formula, rule, moves_bytes, func.has_kernel_for_dispatch_key(_COMPOSITE))
        _OP_INFO[func] = info
    return info


def dilation_of(info: OpInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """A convolution call's largest dilation (``aten.convolution`` and ``aten.conv*d`` take it 6th); 1 otherwise."""
    if info.op_class != "conv":
        return 1
    dilation = kwargs.get("dilation", args[5] if len(args) > 5 else 1)
    return max(dilation) if isinstance(dilation, (list, tuple)) and dilation else int(dilation)
