"""Genotype: the published DARTS cells, the three text forms, and clear errors for invalid cells."""
from __future__ import annotations

import dataclasses
from collections import namedtuple

import pytest

import selbench
from darts_reference import DARTS_TEXT, NB201_TEXT, PUBLISHED, expand
from selbench import CellGenotype, Genotype, GenotypeError

# What the original code's namedtuple sees when it evaluates a DARTS text form.
DartsNamedTuple = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")


def darts_genotype(name: str) -> Genotype:
    return Genotype.parse(DARTS_TEXT[name])


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_cells_parse_to_the_listed_pairs(name):
    genotype = darts_genotype(name)
    assert genotype.cell_types == ("normal", "reduce")
    for cell_type in ("normal", "reduce"):
        pairs = expand(PUBLISHED[name][cell_type])
        assert genotype[cell_type].nodes == tuple(tuple(pairs[i : i + 2]) for i in range(0, 8, 2))
        assert genotype[cell_type].concat == (2, 3, 4, 5)
        # the attribute access DARTS code uses
        assert getattr(genotype, cell_type) == pairs
        assert getattr(genotype, f"{cell_type}_concat") == [2, 3, 4, 5]
    genotype.validate(selbench.get_space("darts"))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_darts_text_round_trips_and_reads_back_in_darts_code(name):
    genotype = darts_genotype(name)
    text = str(genotype)
    assert text.startswith("Genotype(normal=[('")
    assert Genotype.parse(text) == genotype
    as_darts = eval(text, {"Genotype": DartsNamedTuple, "range": range})  # what DARTS's own code does with it
    for cell_type in ("normal", "reduce"):
        assert as_darts._asdict()[cell_type] == expand(PUBLISHED[name][cell_type])
        assert list(as_darts._asdict()[f"{cell_type}_concat"]) == [2, 3, 4, 5]


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_json_round_trip(name):
    genotype = darts_genotype(name)
    again = Genotype.from_json(genotype.to_json())
    assert again == genotype and hash(again) == hash(genotype)
    assert Genotype.parse(genotype.to_json()) == genotype


def test_genotypes_differ_where_their_cells_differ():
    v1, v2 = darts_genotype("DARTS_V1"), darts_genotype("DARTS_V2")
    assert v1 != v2
    # node 5 (position 3 among the intermediate nodes) of DARTS_V2 takes dil_conv_3x3 from node 2
    assert ("normal", 3, 2, "dil_conv_3x3") in v2.edge_choices() - v1.edge_choices()


def test_nb201_string_round_trip():
    genotype = Genotype.parse(NB201_TEXT)
    assert genotype.cell_types == ("cell",)
    assert genotype["cell"].nodes == (
        (("nor_conv_3x3", 0),),
        (("nor_conv_3x3", 0), ("nor_conv_3x3", 1)),
        (("skip_connect", 0), ("nor_conv_1x1", 1), ("nor_conv_3x3", 2)),
    )
    assert genotype["cell"].concat == (3,)
    assert str(genotype) == NB201_TEXT
    assert genotype.to_nb201() == NB201_TEXT
    assert Genotype.from_json(genotype.to_json()) == genotype


def test_genotype_is_immutable():
    genotype = darts_genotype("DARTS_V2")
    with pytest.raises(AttributeError):
        genotype.normal = []
    with pytest.raises(dataclasses.FrozenInstanceError):
        genotype["normal"].concat = (2,)


def test_variable_degree_cells_use_the_nested_text_form():
    cell = CellGenotype.of([[("sep_conv_3x3", 0)], [("skip_connect", 1), ("sep_conv_3x3", 2), ("max_pool_3x3", 0)],
                            [], [("dil_conv_3x3", 3)]], [2, 3, 5])
    genotype = Genotype({"normal": cell, "reduce": cell})
    text = str(genotype)
    assert "normal=[[('sep_conv_3x3', 0)], [('skip_connect', 1)" in text
    assert "normal_concat=[2, 3, 5]" in text
    assert Genotype.parse(text) == genotype
    genotype.validate(selbench.get_space("darts"), variable_in_degree=True)
    with pytest.raises(GenotypeError, match="exactly 2"):
        genotype.validate(selbench.get_space("darts"))


# -- invalid genotypes ------------------------------------------------------------------------
V2_NORMAL = expand(PUBLISHED["DARTS_V2"]["normal"])
V2_REDUCE = expand(PUBLISHED["DARTS_V2"]["reduce"])


def with_normal(nodes, concat=(2, 3, 4, 5)) -> Genotype:
    """DARTS_V2 with its normal cell replaced by ``nodes`` (one list of pairs per node)."""
    reduce = CellGenotype.of([V2_REDUCE[i : i + 2] for i in range(0, 8, 2)], (2, 3, 4, 5))
    return Genotype({"normal": CellGenotype.of(nodes, concat), "reduce": reduce})


def v2_normal_nodes() -> list[list[tuple[str, int]]]:
    return [list(V2_NORMAL[i : i + 2]) for i in range(0, 8, 2)]


def replaced(node: int, pairs) -> list:
    nodes = v2_normal_nodes()
    nodes[node] = pairs
    return nodes


INVALID = {
    "unknown op": (with_normal(replaced(1, [("conv_7x7", 0), ("sep_conv_3x3", 1)])),
                   r"normal cell, node 3: op 'conv_7x7' is not one of"),
    "none in a DARTS cell": (with_normal(replaced(0, [("none", 0), ("sep_conv_3x3", 1)])),
                             r"normal cell, node 2: op 'none' is not one of"),
    "input from a later node": (with_normal(replaced(1, [("sep_conv_3x3", 0), ("sep_conv_3x3", 4)])),
                                r"node 3: input 4 must be an earlier node \(0\.\.2\)"),
    "input from the node itself": (with_normal(replaced(2, [("sep_conv_3x3", 4), ("sep_conv_3x3", 1)])),
                                   r"node 4: input 4 must be an earlier node"),
    "negative input": (with_normal(replaced(0, [("sep_conv_3x3", -1), ("sep_conv_3x3", 1)])),
                       r"node 2: input -1 must be an earlier node"),
    "three inputs": (with_normal(replaced(3, [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 2)])),
                     r"node 5: 3 inputs, a valid cell has exactly 2"),
    "one input": (with_normal(replaced(3, [("sep_conv_3x3", 0)])), r"node 5: 1 inputs, a valid cell has exactly 2"),
    "repeated input": (with_normal(replaced(2, [("sep_conv_3x3", 1), ("skip_connect", 1)])),
                       r"node 4: inputs \[1, 1\] repeat a node"),
    "concat names a missing node": (with_normal(v2_normal_nodes(), concat=(2, 3, 4, 9)),
                                    r"normal cell: concat \[2, 3, 4, 9\] must list nodes that exist"),
    "empty concat": (with_normal(v2_normal_nodes(), concat=()), r"normal cell: concat \[\] must list nodes"),
    "too few nodes": (with_normal(v2_normal_nodes()[:3]), r"normal cell: 3 nodes, the space has 4 intermediate"),
    "missing cell type": (Genotype({"normal": darts_genotype("DARTS_V2")["normal"]}),
                          r"genotype has cell types \['normal'\], the darts space needs \['normal', 'reduce'\]"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_genotypes_raise_one_clear_line(case):
    genotype, message = INVALID[case]
    with pytest.raises(GenotypeError, match=message) as info:
        genotype.validate(selbench.get_space("darts"))
    assert "\n" not in str(info.value)


def test_build_network_refuses_an_invalid_genotype():
    genotype, message = INVALID["none in a DARTS cell"]
    with pytest.raises(GenotypeError, match=message):
        selbench.get_space("darts").build_network(genotype, C=4, layers=3)


UNREADABLE = {
    "not a genotype at all": ("sep_conv_3x3 from 0", r"cannot read genotype 'sep_conv_3x3 from 0': expected"),
    "python syntax error": ("Genotype(normal=[('sep_conv_3x3', 0)", r"DARTS genotype text does not parse"),
    "positional arguments": ("Genotype([('sep_conv_3x3', 0), ('sep_conv_3x3', 1)])", r"keywords only"),
    "odd number of pairs": ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('skip_connect', 0)])",
                            r"normal has 3 pairs; the flat form needs two per node"),
    "a name instead of a list": ("Genotype(normal=PRIMITIVES)", r"normal= must be a literal list"),
    "input that is not a number": ("Genotype(normal=[('sep_conv_3x3', 'x'), ('sep_conv_3x3', 1)])",
                                   r"malformed cell: expected lists of \(op, input\) pairs"),
    "concat expression": ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=list(x))",
                          r"normal_concat must be range\(a, b\) or a list of node indices"),
    "concat without its cell": ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], reduce_concat=[2])",
                                r"reduce_concat has no matching cell list"),
    "NB201 token without input": ("|nor_conv_3x3|+|skip_connect~0|nor_conv_3x3~1|",
                                  r"'nor_conv_3x3' is not of the form op~input"),
    "NB201 empty node": ("|nor_conv_3x3~0|+|", r"node '\|' is not of the form"),
    "JSON of something else": ('{"cells": 3}', r"not a selbench genotype JSON"),
    "JSON that does not parse": ('{"format": ', r"genotype JSON does not parse"),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_unreadable_genotype_text_raises_one_clear_line(case):
    text, message = UNREADABLE[case]
    with pytest.raises(GenotypeError, match=message) as info:
        Genotype.parse(text)
    assert "\n" not in str(info.value)


def test_genotype_errors_are_user_errors():
    assert issubclass(GenotypeError, selbench.SelbenchError)
