"""The op graph of an Arch (or any traced module) as a networkx DiGraph.

The graph comes from the same trace as the cost (:mod:`nas.cost`): one node
per aten op, one edge per tensor that one op's output feeds into another, so
graph-based latency or accuracy predictors and drawings see exactly what
``build`` runs. ``level="unit"`` contracts the ops of each unit (stem, block,
downsampler, head) into one node, which is the graph to draw.
"""

from __future__ import annotations

from typing import Literal

import networkx as nx

from nas.arch import Arch
from nas.cost import CostReport, profile

__all__ = ["op_graph"]

Level = Literal["op", "unit"]


def op_graph(source: Arch | CostReport, *, level: Level = "op", batch: int = 1) -> nx.DiGraph:
    """The data-flow graph of ``source``.

    Args:
        source: an Arch (traced with :func:`nas.cost.profile`) or a report from
            :func:`nas.cost.profile` / :func:`nas.cost.profile_module`.
        level: ``"op"``: node ``i`` is ``report.ops[i]`` with its name, op class, unit, FLOPs,
            bytes and output shapes; ``"unit"``: one node per unit, named by its path, with the
            summed FLOPs and bytes and its number of ops.
        batch: batch size to trace an Arch at.

    Returns:
        A directed acyclic graph; edges point from producer to consumer.

    Example:
        >>> import nas
        >>> graph = op_graph(nas.zoo.get("poolformer_s12"), level="unit")
        >>> list(graph.successors("stem"))
        ['stages[0].blocks[0]']
    """
    if level not in ("op", "unit"):
        raise ValueError(f"level must be 'op' or 'unit', got {level!r}")
    report = profile(source, batch=batch) if isinstance(source, Arch) else source
    graph = nx.DiGraph()
    for index, op in enumerate(report.ops):
        graph.add_node(index, name=op.name, op_class=op.op_class, unit=op.unit, flops=op.flops,
                       bytes=op.bytes_read + op.bytes_written, out_shapes=op.out_shapes)
        graph.add_edges_from((source_index, index) for source_index in op.sources)
    return graph if level == "op" else _contract_units(graph)


def _contract_units(ops: nx.DiGraph) -> nx.DiGraph:
    units = nx.DiGraph()
    for _, data in ops.nodes(data=True):
        name = data["unit"]
        if name not in units:
            units.add_node(name, flops=0, bytes=0, ops=0)
        node = units.nodes[name]
        node["flops"] += data["flops"]
        node["bytes"] += data["bytes"]
        node["ops"] += 1
    for producer, consumer in ops.edges:
        a, b = ops.nodes[producer]["unit"], ops.nodes[consumer]["unit"]
        if a != b:
            units.add_edge(a, b)
    return units
