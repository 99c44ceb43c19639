"""The op graph follows the real data flow of the traced module."""

from __future__ import annotations

import networkx as nx
import pytest
from torch import nn

import nas
from nas.cost import profile_module
from nas.graph import op_graph


@pytest.mark.parametrize("name", ["poolformer_s12", "swin_tiny", "efficientformer_l1", "resnet50"])
def test_zoo_graphs_are_connected_dags(name: str) -> None:
    arch = nas.zoo.get(name)
    graph = op_graph(arch)
    assert nx.is_directed_acyclic_graph(graph)
    assert graph.number_of_nodes() == len(nas.profile(arch).ops)
    stem_conv = next(i for i, d in graph.nodes(data=True) if d["unit"] == "stem" and d["op_class"] == "conv")
    logits = max(graph.nodes)
    assert nx.has_path(graph, stem_conv, logits), "the classifier must depend on the stem"
    units = op_graph(arch, level="unit")
    assert nx.is_directed_acyclic_graph(units)
    assert nx.has_path(units, "stem", "head")
    assert sum(d["flops"] for _, d in units.nodes(data=True)) == nas.profile(arch).flops


def test_residual_add_reads_the_block_input() -> None:
    graph = op_graph(nas.zoo.get("poolformer_s12"))
    block = [i for i, d in graph.nodes(data=True) if d["unit"] == "stages[0].blocks[0]"]
    first_add = next(i for i in block if graph.nodes[i]["name"] == "aten.add")
    stem_out = max(i for i, d in graph.nodes(data=True) if d["unit"] == "stem")
    assert stem_out in set(graph.predecessors(first_add)), "the residual must skip back to the block input"
    assert graph.in_degree(first_add) == 2


def test_unit_graph_of_a_chain_is_a_path() -> None:
    units = op_graph(nas.zoo.get("poolformer_s12"), level="unit")
    order = list(nx.topological_sort(units))
    assert order[0] == "stem" and order[-1] == "head"
    assert all(units.out_degree(node) == 1 for node in order[:-1])


def test_plain_module_branches() -> None:
    class TwoBranches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.a(x) * self.b(x)

    graph = op_graph(profile_module(TwoBranches(), (3, 8, 8)))
    product = next(i for i, d in graph.nodes(data=True) if d["name"] == "aten.mul")
    assert sorted(graph.nodes[p]["name"] for p in graph.predecessors(product)) == ["aten.convolution"] * 2


def test_unknown_level() -> None:
    with pytest.raises(ValueError, match="level must be"):
        op_graph(nas.zoo.get("poolformer_s12"), level="block")  # type: ignore[arg-type]
