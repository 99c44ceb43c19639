"""Pareto reports of a search: compute a typed :class:`ParetoInfo`, then render it with matplotlib.

The computation is pure and tested (``tests/test_report.py``); the renderer only draws what the info says.

:func:`pareto_info` reads a run (:class:`nas.runs.Run`) or a history table (a pandas DataFrame, one row per
evaluated candidate in evaluation order) and gives:

* the plotted axes (by default latency across, accuracy up; any two objectives can be chosen) and whether the
  latency axis spans enough to be drawn on a log scale;
* every candidate's point, which are infeasible (a constraint violated), and the Pareto front: the feasible,
  scored, non-dominated candidates over *all* the run's objectives, each Arch counted once
  (:func:`nas.search.pareto.front_mask`, the rule of the run's ``pareto.csv``; with three or more objectives
  some front points look dominated in the two plotted ones);
* the zoo's models that are points of the run's space (``space.contains``), priced with the run's own
  objectives (latency by :func:`nas.latency.predict_many` on the run's target). Their accuracy is known only
  when the run's accuracy source can score them: the ``proxy`` stand-in always can; the supernet, zero-cost and
  short-train sources are not run on them unless asked (``score_zoo_accuracy=True``), so a model takes the accuracy the
  run measured when the search evaluated it (evolution starts from the zoo's models), and the others are drawn
  as vertical reference lines at their latency, which the legend says;
* each candidate's precision mix (:func:`nas.summary.precision_mix`, ``int8 x10, fp32 x2``) and the mean
  bits of its blocks' weights (:func:`weight_bits`), read from its Arch; a plot of a run whose candidates
  differ in precision colours the front by those bits and labels each front point with its mix;
* the hypervolume after each evaluation (infeasible candidates add nothing), with the run's reference point
  (:func:`nas.search.pareto.front_reference`: the nadir of the front's candidates pushed out by 10 %).

:func:`render_layer_statistics` draws ``nas analyze``'s per-layer table (:mod:`nas.quantization.analyze`).

:func:`render_pareto` draws two panels (accuracy against latency with the front highlighted; hypervolume
against evaluations) into a PNG, written atomically; :func:`plot` does both for a run
(``runs/<id>/pareto.png``). matplotlib is imported when drawing, through its Agg canvas (no display needed).

Example:
    >>> from nas.runs import Run
    >>> from nas.report import pareto_info, render_pareto
    >>> run = Run.open("runs/20250101-120000-metaformer-iphone12-a1b2c3")  # doctest: +SKIP
    >>> info = pareto_info(run)  # doctest: +SKIP
    >>> int(info.front.sum()), info.x.column, info.y.column  # doctest: +SKIP
    (7, 'latency_ms', 'proxy_score')
    >>> render_pareto(info, run.path / "pareto.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from nas.arch import Arch
from nas.atomic import atomic_output
from nas.errors import NasError
from nas.runs import PLOT_FILE, ObjectiveSpec, Run
from nas.search.pareto import front_mask, front_reference, hypervolume_curve
from nas.summary import precision_mix

if TYPE_CHECKING:
    import pandas
    from matplotlib.axes import Axes

    from nas.space import Space

__all__ = [
    "ReferencePoint",
    "ParetoInfo",
    "pareto_info",
    "zoo_references",
    "render_pareto",
    "plot",
    "render_layer_statistics",
    "weight_bits",
    "FREE_ACCURACY_SOURCES",
]

FREE_ACCURACY_SOURCES = ("proxy",)  # sources cheap and defined for any Arch: zoo models get their accuracy
LOG_SPAN = 20.0  # draw an axis on a log scale when its positive values span more than this factor
_FIGSIZE_IN = (12.0, 5.0)
_DPI = 100


class ReferencePoint(NamedTuple):
    """A zoo model of the run's space, priced with the run's objectives.

    Attributes:
        name: the zoo name.
        arch_id: its :attr:`nas.Arch.id`.
        values: objective column -> value; NaN where not scored (accuracy from an expensive source).
        x: its value on the plotted x axis (NaN if unknown).
        y: its value on the plotted y axis (NaN if unknown: drawn as a vertical line at ``x``).
    """

    name: str
    arch_id: str
    values: Mapping[str, float]
    x: float
    y: float


class ParetoInfo(NamedTuple):
    """Everything a Pareto plot shows, computed (see the module docstring).

    Attributes:
        title: the figure title (the run's name, space and target).
        objectives: every objective of the run, in order.
        x: the objective across (latency by default).
        y: the objective up (accuracy by default).
        x_log: draw ``x`` on a log scale (its positive values span more than :data:`LOG_SPAN`).
        numbers: ``n`` evaluation numbers (trial numbers), in evaluation order.
        arch_ids: ``n`` Arch ids.
        points: ``n x 2`` values (x, y); NaN where a value is missing.
        front: ``n`` bool: on the Pareto front (:func:`nas.search.pareto.front_mask`).
        infeasible: ``n`` bool: violates a constraint.
        references: zoo models of the space (empty when not asked or none is in the space).
        references_note: what the references show, for the legend ("" when there are none).
        hypervolume: ``n`` floats: the hypervolume after each evaluation (in loss space, every column minimised).
        hypervolume_reference: the reference point (losses, one per objective), or None without feasible points.
        precisions: ``n`` precision mixes (:func:`nas.summary.precision_mix`); empty when the source holds no
            Archs.
        bits: ``n`` mean weight bits per block (:func:`weight_bits`); empty when the source holds no Archs.
        mixed_precision: the candidates' blocks are not all at one precision (the plot then shows them).
    """

    title: str
    objectives: tuple[ObjectiveSpec, ...]
    x: ObjectiveSpec
    y: ObjectiveSpec
    x_log: bool
    numbers: np.ndarray
    arch_ids: tuple[str, ...]
    points: np.ndarray
    front: np.ndarray
    infeasible: np.ndarray
    references: tuple[ReferencePoint, ...]
    references_note: str
    hypervolume: np.ndarray
    hypervolume_reference: np.ndarray | None
    precisions: tuple[str, ...] = ()
    bits: np.ndarray = np.zeros(0)
    mixed_precision: bool = False

    def front_order(self) -> np.ndarray:
        """Indices of the front's points sorted by ``x`` (the order to join them with a line)."""
        indices = np.flatnonzero(self.front)
        return indices[np.argsort(self.points[indices, 0], kind="stable")]


# ---------------------------------------------------------------------------
# computation


def weight_bits(arch: Arch) -> float:
    """The mean bits of the blocks' weights, each block the mean of its mixer part and its FFN part."""
    bits = [(block.precision.formats("block")[0].bits + block.precision.formats("ffn")[0].bits) / 2
            for stage in arch.stages for block in stage.blocks]
    return float(np.mean(bits)) if bits else 32.0


def _archs_of(frame: pandas.DataFrame) -> list[Arch] | None:
    """The Archs of a history table's rows (its ``arch`` column, JSON); None if it has none for some row."""
    if "arch" not in frame or not all(isinstance(text, str) and text for text in frame["arch"]):
        return None
    return [Arch.from_json(text) for text in frame["arch"]]


def _arch_summaries(archs: Sequence[Arch] | None) -> tuple[tuple[str, ...], np.ndarray, bool]:
    """Each Arch's precision mix and mean weight bits, and whether their blocks differ in precision at all."""
    if archs is None:
        return (), np.zeros(0), False
    precisions = {block.precision for arch in archs for stage in arch.stages for block in stage.blocks}
    return (tuple(precision_mix(arch) for arch in archs), np.array([weight_bits(arch) for arch in archs]),
            len(precisions) > 1)


def _pick_axes(objectives: Sequence[ObjectiveSpec], x: str | None, y: str | None) -> tuple[int, int]:
    """Column indices of the plotted axes: given by column name, else latency across and accuracy up."""
    columns = [objective.column for objective in objectives]
    if len(objectives) < 2:
        raise NasError(f"a Pareto plot needs two objectives; this history has {columns}")
    for given in (x, y):
        if given is not None and given not in columns:
            raise NasError(f"unknown objective column {given!r}; the objectives are {', '.join(columns)}")
    if x is None:
        latency = [i for i, objective in enumerate(objectives) if objective.name == "latency"]
        minimised = [i for i, objective in enumerate(objectives) if objective.direction == "minimize"
                     and objective.column != y]
        x = columns[(latency or minimised or [len(columns) - 1])[0]]
    if y is None:
        accuracy = [i for i, objective in enumerate(objectives) if objective.name == "accuracy"
                    and objective.column != x]
        others = [i for i, column in enumerate(columns) if column != x]
        y = columns[(accuracy or others)[0]]
    if x == y:
        raise NasError(f"the two plotted objectives must differ, got {x!r} twice")
    return columns.index(x), columns.index(y)


def _is_log(values: np.ndarray) -> bool:
    positive = values[np.isfinite(values) & (values > 0)]
    return bool(len(positive) >= 2 and positive.max() / positive.min() > LOG_SPAN)


def _losses(values: np.ndarray, objectives: Sequence[ObjectiveSpec]) -> np.ndarray:
    """Values to losses (maximised columns negated); missing values become +inf (they dominate nothing)."""
    signs = np.array([objective.sign for objective in objectives])
    losses = values * signs[None, :]
    return np.where(np.isfinite(losses), losses, math.inf)


def _frame_columns(frame: pandas.DataFrame, objectives: Sequence[ObjectiveSpec]) -> None:
    missing = [objective.column for objective in objectives if objective.column not in frame.columns]
    if missing:
        raise NasError(f"the history has no column {', '.join(map(repr, missing))} for the objectives; "
                       f"its columns: {', '.join(map(str, frame.columns))}")


def zoo_references(space: Space, objectives: Sequence[ObjectiveSpec], *, target: str, accuracy: str = "proxy",
                   score_accuracy: bool | None = None, archs: Mapping[str, Arch] | None = None,
                   latency_batch: int = 1,
                   latency_setting: str | None = None) -> tuple[tuple[ReferencePoint, ...], bool]:
    """The zoo models that are points of ``space``, priced with ``objectives``.

    Args:
        space: the run's space.
        objectives: the run's objectives (their ``name`` is the objective kind of :mod:`nas.search.objectives`).
        target: the latency target.
        accuracy: the run's accuracy source.
        score_accuracy: score the accuracy objective too; default: only for :data:`FREE_ACCURACY_SOURCES`.
        archs: the candidates by name (default: the whole zoo).
        latency_batch: inputs per forward pass for latency.
        latency_setting: the target's setting (None: its default).

    Returns:
        The reference points (x and y left NaN: :func:`pareto_info` fills them), and whether accuracy was scored.
    """
    from nas import zoo
    from nas.search.objectives import make_objective

    if archs is None:
        archs = {name: zoo.get(name) for name in zoo.list_zoo()}
    inside = {name: arch for name, arch in archs.items() if space.contains(arch)[0]}
    scored = accuracy in FREE_ACCURACY_SOURCES if score_accuracy is None else score_accuracy
    if not inside:
        return (), scored
    batch = list(inside.values())
    values: dict[str, np.ndarray] = {}
    for objective in objectives:
        if objective.name == "accuracy" and not scored:
            values[objective.column] = np.full(len(batch), math.nan)
            continue
        measure = make_objective(objective.name, target=target, accuracy=accuracy, space=space.name,
                                 latency_batch=latency_batch, latency_setting=latency_setting)
        values[objective.column] = np.asarray(measure.evaluate(batch), dtype=np.float64)
    points = tuple(
        ReferencePoint(name, arch.id, {column: float(column_values[index]) for column, column_values in values.items()},
                       math.nan, math.nan)
        for index, (name, arch) in enumerate(inside.items()))
    return points, scored


def _references_note(references: Sequence[ReferencePoint], y: ObjectiveSpec, accuracy: str) -> str:
    if not references:
        return ""
    if all(math.isfinite(point.y) for point in references):
        return "zoo models of this space"
    if y.name == "accuracy":
        return f"zoo models of this space (lines: {y.column} not scored by the '{accuracy}' source)"
    return f"zoo models of this space (lines: no {y.column})"


def pareto_info(source: Run | pandas.DataFrame, *, objectives: Sequence[ObjectiveSpec] | None = None,
                zoo_space: Space | str | bool = True, target: str | None = None, accuracy: str | None = None,
                score_zoo_accuracy: bool | None = None, zoo_archs: Mapping[str, Arch] | None = None,
                x: str | None = None, y: str | None = None, title: str | None = None) -> ParetoInfo:
    """Compute what a Pareto plot of a run (or of a history table) shows.

    Args:
        source: a run, or a history DataFrame (one row per evaluated candidate, in evaluation order) with a
            column per objective, and optionally ``number`` (default: the row position), ``arch_id`` (default:
            each row its own Arch) and ``feasible`` (default: all feasible).
        objectives: the objectives (required for a DataFrame; a run has its own).
        zoo_space: where zoo reference points come from: ``True`` for the run's space (none for a DataFrame),
            a space or a space name, or ``False`` for none.
        target: the latency target for pricing zoo models (a run has its own).
        accuracy: the accuracy source (a run has its own; default ``proxy``).
        score_zoo_accuracy: see :func:`zoo_references`.
        zoo_archs: candidate reference models by name (default: the whole zoo).
        x: the objective column across (default: latency, else the first minimised objective).
        y: the objective column up (default: accuracy, else the first other objective).
        title: the figure title (default: from the run's name, space and target).

    Raises:
        NasError: fewer than two objectives, a missing column, an unknown ``x``/``y``, zoo references
            asked of a DataFrame without ``target``.
    """
    latency_batch = 1
    latency_setting = None
    if isinstance(source, Run):
        settings = source.settings
        objectives = tuple(settings.objectives) if objectives is None else tuple(objectives)
        target = settings.target if target is None else target
        accuracy = settings.accuracy if accuracy is None else accuracy
        latency_batch = settings.latency_batch
        latency_setting = settings.latency_setting
        frame = source.history()
        known = source.archs
        archs: Sequence[Arch] | None = [known[arch_id] for arch_id in frame["arch_id"]] \
            if all(arch_id in known for arch_id in frame["arch_id"]) else None
        title = title or f"{source.name}: {settings.space} on {settings.target} ({settings.strategy})"
        zoo_choice: Space | str | bool = settings.space if zoo_space is True else zoo_space
    else:
        if objectives is None:
            raise NasError("objectives are required to read a history table")
        objectives = tuple(objectives)
        frame = source
        archs = _archs_of(frame)
        title = title or "Pareto front"
        zoo_choice = False if zoo_space is True else zoo_space
    accuracy = accuracy or "proxy"
    _frame_columns(frame, objectives)
    count = len(frame)
    x_index, y_index = _pick_axes(objectives, x, y)
    columns = [objective.column for objective in objectives]
    values = frame[columns].to_numpy(dtype=np.float64).reshape(count, len(columns))
    numbers = frame["number"].to_numpy(dtype=np.int64) if "number" in frame else np.arange(count, dtype=np.int64)
    arch_ids = tuple(str(value) for value in frame["arch_id"]) if "arch_id" in frame else \
        tuple(f"#{number}" for number in numbers)
    feasible = frame["feasible"].to_numpy(dtype=bool) if "feasible" in frame else np.ones(count, dtype=bool)

    losses = _losses(values, objectives)
    front = front_mask(losses, feasible, arch_ids)
    reference = front_reference(losses, feasible, arch_ids)
    curve = np.zeros(count) if reference is None else hypervolume_curve(losses, reference, feasible)

    references: tuple[ReferencePoint, ...] = ()
    if not isinstance(zoo_choice, bool):
        if target is None:
            raise NasError("zoo reference points need the latency target (target=...)")
        from nas.space import load_space

        space = load_space(zoo_choice) if isinstance(zoo_choice, str) else zoo_choice
        priced, _ = zoo_references(space, objectives, target=target, accuracy=accuracy,
                                   score_accuracy=score_zoo_accuracy, archs=zoo_archs, latency_batch=latency_batch,
                                   latency_setting=latency_setting)
        column_x, column_y = objectives[x_index].column, objectives[y_index].column
        evaluated = {arch_id: index for index, arch_id in reversed(list(enumerate(arch_ids)))}

        def y_of(point: ReferencePoint) -> float:
            """The model's own value; for an unscored accuracy, the run's if the search evaluated the model."""
            value = point.values[column_y]
            if not math.isfinite(value) and point.arch_id in evaluated:
                return float(values[evaluated[point.arch_id], y_index])
            return value

        references = tuple(point._replace(x=point.values[column_x], y=y_of(point)) for point in priced)

    points = values[:, [x_index, y_index]]
    all_x = np.concatenate([points[:, 0], [point.x for point in references]])
    precisions, bits, mixed_precision = _arch_summaries(archs)
    return ParetoInfo(
        title=title,
        objectives=objectives,
        x=objectives[x_index],
        y=objectives[y_index],
        x_log=_is_log(all_x),
        numbers=numbers,
        arch_ids=arch_ids,
        points=points,
        front=front,
        infeasible=~feasible,
        references=references,
        references_note=_references_note(references, objectives[y_index], accuracy),
        hypervolume=curve,
        hypervolume_reference=reference,
        precisions=precisions,
        bits=bits,
        mixed_precision=mixed_precision,
    )


# ---------------------------------------------------------------------------
# rendering


def _matplotlib() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise NasError(f"drawing needs matplotlib ({exc}); install it with: pip install matplotlib") from None
    return Figure, FigureCanvasAgg


def _label(objective: ObjectiveSpec) -> str:
    arrow = "lower is better" if objective.direction == "minimize" else "higher is better"
    return f"{objective.label or objective.column} ({arrow})"


def _draw_front(axes: Axes, info: ParetoInfo) -> None:
    points = info.points
    plain = ~info.front & ~info.infeasible
    axes.scatter(points[plain, 0], points[plain, 1], s=12, color="0.65", alpha=0.7,
                 label=f"evaluated ({int(plain.sum())})")
    if info.infeasible.any():
        axes.scatter(points[info.infeasible, 0], points[info.infeasible, 1], s=14, marker="x", color="#d98c8c",
                     alpha=0.7, label=f"infeasible ({int(info.infeasible.sum())})")
    order = info.front_order()
    if len(order):
        if info.x.direction == "minimize" and info.y.direction == "maximize":
            axes.step(points[order, 0], points[order, 1], where="post", color="#1f5fa8", linewidth=1.2, alpha=0.8)
        else:
            axes.plot(points[order, 0], points[order, 1], color="#1f5fa8", linewidth=1.2, alpha=0.8)
        if info.mixed_precision:
            _draw_front_precisions(axes, info, order)
        else:
            axes.scatter(points[order, 0], points[order, 1], s=36, color="#1f5fa8", edgecolor="white", zorder=3,
                         label=f"Pareto front ({len(order)})")
    lines_labelled = markers_labelled = False
    for point in info.references:
        if not math.isfinite(point.x):
            continue
        if math.isfinite(point.y):
            axes.scatter([point.x], [point.y], s=46, marker="D", facecolor="none", edgecolor="#e07b00",
                         linewidth=1.6, zorder=2, label=None if markers_labelled else info.references_note)
            axes.annotate(point.name, (point.x, point.y), textcoords="offset points", xytext=(5, 4), fontsize=7,
                          color="#a05800")
            markers_labelled = True
        else:
            axes.axvline(point.x, color="#e07b00", linestyle="--", linewidth=0.9, alpha=0.8,
                         label=None if lines_labelled else info.references_note)
            axes.annotate(point.name, (point.x, 1.0), xycoords=("data", "axes fraction"), rotation=90,
                          fontsize=7, color="#a05800", ha="right", va="top", xytext=(-2, -3),
                          textcoords="offset points")
            lines_labelled = True
    if info.x_log:
        axes.set_xscale("log")
    axes.set_xlabel(_label(info.x))
    axes.set_ylabel(_label(info.y))
    axes.set_title(f"{info.y.column} vs {info.x.column}")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)


def _draw_front_precisions(axes: Axes, info: ParetoInfo, order: np.ndarray) -> None:
    """The front's points coloured by their mean weight bits, each labelled with its precision mix."""
    points = info.points
    drawn = axes.scatter(points[order, 0], points[order, 1], s=40, c=info.bits[order], cmap="viridis",
                         vmin=min(4.0, float(info.bits.min())), vmax=32.0, edgecolor="white", zorder=3,
                         label=f"Pareto front ({len(order)}), coloured by mean weight bits")
    axes.figure.colorbar(drawn, ax=axes, pad=0.01, label="mean weight bits per block")
    for index in order:
        axes.annotate(info.precisions[index], (points[index, 0], points[index, 1]), textcoords="offset points",
                      xytext=(4, -9), fontsize=6, color="#1f3f68")


def _draw_hypervolume(axes: Axes, info: ParetoInfo) -> None:
    evaluations = np.arange(1, len(info.hypervolume) + 1)
    axes.step(evaluations, info.hypervolume, where="post", color="#2e8b57")
    axes.set_xlabel("evaluations")
    axes.set_ylabel("hypervolume (loss space, every objective)")
    final = float(info.hypervolume[-1]) if len(info.hypervolume) else 0.0
    axes.set_title(f"hypervolume over evaluations (final {final:.4g})")
    axes.grid(True, alpha=0.3)


def render_pareto(info: ParetoInfo, path: str | os.PathLike[str], *, dpi: int = _DPI,
                  size_in: tuple[float, float] = _FIGSIZE_IN) -> Path:
    """Draw ``info`` as a PNG at ``path`` (atomically: a temporary file renamed into place).

    Left: y against x, every candidate, infeasible ones crossed, the front highlighted and joined, zoo models as
    labelled markers or vertical lines. Right: hypervolume after each evaluation.

    Returns:
        The path written; the image is ``size_in * dpi`` pixels.

    Raises:
        NasError: matplotlib is missing.
    """
    figure_class, canvas_class = _matplotlib()
    path = Path(path)
    figure = figure_class(figsize=size_in, dpi=dpi)
    canvas_class(figure)
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    _draw_front(left, info)
    _draw_hypervolume(right, info)
    figure.suptitle(info.title, fontsize=10)
    figure.tight_layout()
    with atomic_output(path) as out:
        figure.savefig(out, format="png", dpi=dpi)
    return path


def plot(run: Run, out: str | os.PathLike[str] | None = None, *, zoo_space: Space | str | bool = True,
         score_zoo_accuracy: bool | None = None) -> tuple[Path, ParetoInfo]:
    """Compute and draw a run's Pareto report; default file ``<run>/pareto.png``.

    Args:
        run: the run.
        out: the PNG path.
        zoo_space: see :func:`pareto_info`.
        score_zoo_accuracy: see :func:`zoo_references`.

    Returns:
        The path written and the info drawn.
    """
    info = pareto_info(run, zoo_space=zoo_space, score_zoo_accuracy=score_zoo_accuracy)
    return render_pareto(info, run.path / PLOT_FILE if out is None else out), info


# ---------------------------------------------------------------------------
# per-layer quantisation statistics (`nas analyze`)

_LAYER_PANELS = (("max_abs", "max |x| (layer input)", True), ("kurtosis", "kurtosis of the input", True),
                 ("sqnr_db", "SQNR of the output (dB)", False))


def render_layer_statistics(table: pandas.DataFrame, path: str | os.PathLike[str], *, title: str = "",
                            dpi: int = _DPI) -> Path:
    """Draw a :func:`nas.quantization.layer_statistics` table as a PNG at ``path`` (atomically).

    Three panels over the layers in model order: the input's largest magnitude and its kurtosis (log scales: the
    outliers span orders of magnitude) and the output's SQNR at the table's precision (higher is better).

    Raises:
        NasError: matplotlib is missing, or the table has no row.
    """
    if table.empty:
        raise NasError("no layer to draw")
    figure_class, canvas_class = _matplotlib()
    path = Path(path)
    width = max(_FIGSIZE_IN[0], 0.25 * len(table))
    figure = figure_class(figsize=(width, 8.0), dpi=dpi)
    canvas_class(figure)
    positions = np.arange(len(table))
    panels = figure.subplots(len(_LAYER_PANELS), 1, sharex=True)
    for axes, (column, label, log) in zip(panels, _LAYER_PANELS, strict=True):
        values = table[column].to_numpy(dtype=float)
        axes.bar(positions, np.where(np.isfinite(values), values, np.nan), color="tab:blue")
        if log and np.nanmin(values) > 0:
            axes.set_yscale("log")
        axes.set_ylabel(label, fontsize=8)
        axes.grid(True, axis="y", alpha=0.3)
    panels[-1].set_xticks(positions, table["layer"].tolist(), rotation=90, fontsize=6)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    with atomic_output(path) as out:
        figure.savefig(out, format="png", dpi=dpi)
    return path
