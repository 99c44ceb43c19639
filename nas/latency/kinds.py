"""Op kinds: the classes the latency model prices, finer than ``nas.cost``'s op classes.

``nas.cost`` classes an aten op as ``conv``, ``matmul``, ``norm``, ... That is
right for counting FLOPs but too coarse for time: a depthwise convolution has
the FLOPs of a tiny dense one and runs at a fraction of its efficiency on every
target; a batch norm folds into the convolution before it while a layer norm
does not; GELU and softmax cost a transcendental per element where ReLU costs a
compare. :func:`kind_of` refines the class from the op's name and shapes.

Kinds (:data:`KINDS`) and the coefficient groups that share a fitted value:

============  ==========================================  =============  ===========
kind          what                                        compute group  launch group
============  ==========================================  =============  ===========
conv          dense convolution with a spatial kernel     conv           conv
pwconv        dense 1x1 convolution (a matrix product)    pwconv         conv
dwconv        depthwise convolution (1 input channel      dwconv         conv
              per group)
dwconv_large  depthwise convolution with a kernel of      dwconv_large   conv
              7 or more, or dilated
gconv         grouped convolution (ResNeXt, RegNet)       gconv          conv
matmul        linear layer (``mm``/``addmm``: weights;    matmul         matmul
              ``baddbmm``: a batch of them, MoE experts)
bmm           activation x activation (attention)         bmm            matmul
batchnorm     batch norm (foldable into a convolution)    vector         vector
norm          layer / group / RMS norm                    special        vector
softmax       softmax                                     special        vector
act           cheap activation (ReLU, ReLU6, hardswish)   vector         vector
act_special   transcendental activation (GELU, SiLU,      special        vector
              sigmoid, tanh, ...)
elementwise   add, mul, sub, div, ...                     vector         vector
pool          windowed or adaptive pooling                vector         vector
reduce        mean, sum, max over axes                    vector         vector
concat        concatenation                               vector         movement
movement      copies: clone, pad, roll, index, ...        vector         movement
resize        interpolation                               vector         vector
routing       mixture-of-experts routing: top-k, dispatch vector         movement
              and combine by index, and any arithmetic
              on integer tensors (expert ids, slots)
other         an aten op ``nas.cost`` does not list       vector         vector
fft           a real or complex FFT (spectral mixers)     special        vector
============  ==========================================  =============  ===========

An FFT is priced like a transcendental activation: a memory-bound pass per
butterfly stage (its FLOPs are the radix-2 count, see :mod:`nas.op_classes`), run
by a vendor library (cuFFT, MKL, Accelerate) rather than a MAC array; a target
whose main processor has no FFT (the ZCU104's DPU) sends the kind to its fallback.

Views, allocations and constant creation (``zeros``, ``arange``) are free: a
view moves no data, and every runtime modelled here folds constants when it
builds the engine. They are dropped by :func:`kind_of` returning ``None``.

A batched product with a bias per batch entry (``baddbmm``) is a batch of
linear layers with weights of their own, the experts of an MoE FFN, not an
activation x activation product (those have no bias); a runtime runs it as
fully connected layers over the static capacity buffer.

``dwconv_large`` is its own kind because a runtime may run a large or dilated
depthwise kernel on other code than a 3x3 one: Core ML on the Neural Engine runs
RepNeXt's large-kernel depthwise convolutions well above the efficiency of its
3x3 ones (``predictors/iphone12.yaml``). The threshold 7 is where the large-kernel
designs start (ConvNeXt's and FastViT's 7x7, RepNeXt's 7x7 and 11x11, RepLKNet's 13x13
to 31x31) while MobileNets and EfficientNets stop at 5x5, which no calibration row
shows to run differently from 3x3. It is a rule kind of
``dwconv`` (:data:`RULE_KIND_OF`): fusion, placement and unsupported lists naming
``dwconv`` cover it, and a setting without the group in its priors runs it on the
``dwconv`` group's kernels (:data:`OPTIONAL_GROUPS`), so its predictions there
are those of a ``dwconv``.

``routing`` is its own kind so that a target can place it: it is data-dependent
(which token goes where is known only at run time) and works on integer ids,
which an accelerator computing on quantised activations (the ZCU104's DPU)
cannot run, so that target sends it to its CPU (``predictors/zcu104.yaml``).
"""

from __future__ import annotations

import math

from nas.cost import Op

__all__ = [
    "KINDS",
    "COMPUTE_GROUPS",
    "LAUNCH_GROUPS",
    "COMPUTE_GROUP_OF",
    "LAUNCH_GROUP_OF",
    "LARGE_DEPTHWISE_KERNEL",
    "OPTIONAL_GROUPS",
    "RULE_KIND_OF",
    "kind_of",
    "numel",
]

KINDS = ("conv", "pwconv", "dwconv", "gconv", "matmul", "bmm", "batchnorm", "norm", "softmax", "act", "act_special",
         "elementwise", "pool", "reduce", "concat", "movement", "resize", "other", "fft", "routing",
         "dwconv_large")

COMPUTE_GROUP_OF: dict[str, str] = {
    "conv": "conv", "pwconv": "pwconv", "dwconv": "dwconv", "gconv": "gconv", "matmul": "matmul", "bmm": "bmm",
    "dwconv_large": "dwconv_large", "norm": "special", "softmax": "special", "act_special": "special", "fft": "special",
    **dict.fromkeys(("batchnorm", "act", "elementwise", "pool", "reduce", "concat", "movement", "resize", "routing",
                     "other"), "vector"),
}
LAUNCH_GROUP_OF: dict[str, str] = {
    **dict.fromkeys(("conv", "pwconv", "dwconv", "dwconv_large", "gconv"), "conv"),
    **dict.fromkeys(("matmul", "bmm"), "matmul"),
    "concat": "movement",
    "movement": "movement",
    "routing": "movement",
    **dict.fromkeys(("batchnorm", "norm", "softmax", "act", "act_special", "elementwise", "pool", "reduce",
                     "resize", "other", "fft"), "vector"),
}
COMPUTE_GROUPS = ("conv", "pwconv", "dwconv", "gconv", "matmul", "bmm", "vector", "special", "dwconv_large")
OPTIONAL_GROUPS: dict[str, str] = {"dwconv_large": "dwconv"}
"""Compute groups a target file may leave out -> the group whose kernels run them where it does."""
RULE_KIND_OF: dict[str, str] = {"dwconv_large": "dwconv"}
"""Kinds that settings' fusion, placement and unsupported lists name by another kind."""
LARGE_DEPTHWISE_KERNEL = 7
"""The smallest depthwise kernel (on its larger side) that makes a ``dwconv_large``."""
LAUNCH_GROUPS = ("conv", "matmul", "vector", "movement")

_FREE_CLASSES = frozenset({"view", "alloc", "creation"})
_BATCHNORM = frozenset({"aten._native_batch_norm_legit_no_training", "aten.native_batch_norm",
                        "aten._native_batch_norm_legit", "aten._native_batch_norm_legit_functional",
                        "aten._batch_norm_with_update", "aten._batch_norm_no_update"})
_CHEAP_ACTIVATIONS = frozenset({"aten.relu", "aten.hardtanh", "aten.leaky_relu", "aten.threshold", "aten.hardswish",
                                "aten.hardsigmoid", "aten._prelu_kernel", "aten.prelu", "aten.clamp",
                                "aten.hardshrink", "aten.softshrink"})
_INDEX_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8"})  # arithmetic on ids and masks
_SIMPLE_CLASSES = {"elementwise": "elementwise", "pool": "pool", "reduce": "reduce", "movement": "movement",
                   "resize": "resize", "softmax": "softmax", "other": "other", "fft": "fft"}


def _conv_kind(op: Op) -> str:
    # in_shapes = (input, weight[, bias]); weight is (out, in / groups, *kernel).
    if len(op.in_shapes) < 2 or len(op.in_shapes[0]) < 2 or len(op.in_shapes[1]) < 2:
        return "conv"
    in_channels = op.in_shapes[0][1]
    per_group = op.in_shapes[1][1]
    groups = in_channels // per_group if per_group else 1
    if groups <= 1:
        return "pwconv" if all(size == 1 for size in op.in_shapes[1][2:]) else "conv"
    if per_group != 1:
        return "gconv"
    large = op.dilation > 1 or max(op.in_shapes[1][2:], default=1) >= LARGE_DEPTHWISE_KERNEL
    return "dwconv_large" if large else "dwconv"


def kind_of(op: Op) -> str | None:
    """The kind of ``op`` (one of :data:`KINDS`), or ``None`` for an op that costs nothing."""
    op_class = op.op_class
    if op_class in _FREE_CLASSES:
        return None
    if op_class == "routing" or op.dtype in _INDEX_DTYPES:
        return "routing"
    name = op.name.rstrip("_")
    if op_class == "conv":
        return _conv_kind(op)
    if op_class == "matmul":
        return "bmm" if name == "aten.bmm" else "matmul"
    if op_class == "attention":
        return "bmm"
    if name in ("aten.cat", "aten.stack"):
        return "concat"
    if op_class == "norm":
        return "batchnorm" if name in _BATCHNORM else "norm"
    if op_class == "activation":
        return "act" if name in _CHEAP_ACTIVATIONS else "act_special"
    return _SIMPLE_CLASSES.get(op_class, "other")


def numel(shape: tuple[int, ...]) -> int:
    """Elements of a tensor of ``shape``."""
    return math.prod(shape)
