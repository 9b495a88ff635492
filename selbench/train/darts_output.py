"""α from the original DARTS search output: the softmax(α) tables ``train_search.py`` prints to stdout.

quark0/darts never saves α: at the start of every epoch it prints ``F.softmax(alphas_normal)``
and ``F.softmax(alphas_reduce)`` to standard output only.  Two print forms occur:

* PyTorch 0.3: a line ``Variable containing:``, rows of numbers (wide tables in blocks
  headed ``Columns i to j``), then ``[torch.cuda.FloatTensor of size 14x8 (GPU 0)]``;
* later PyTorch: ``tensor([[...], ...], device='cuda:0', grad_fn=<SoftmaxBackward0>)``,
  one bracketed row per edge (rows may wrap over several lines).

:func:`read_printed_alphas` returns the last two tables of a captured stdout (normal, reduce)
as α = log(softmax), which is α up to a constant per row: softmax(α), hence every forward
pass and every selection that reads only the mixing weights, is unchanged.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import Tensor

from selbench.core.errors import CheckpointError

_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
_OLD_END = re.compile(r"^\s*\[torch\.\S*Tensor of size")
# printed probabilities are rounded; one printed as 0 becomes this before the logarithm
SMALLEST_PROBABILITY = 1e-8


def parse_printed_tables(text: str) -> list[Tensor]:
    """Every softmax table printed in ``text``, in order, in either PyTorch print form."""
    lines = text.splitlines()
    tables: list[Tensor] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == "Variable containing:":
            end = next((j for j in range(i + 1, len(lines)) if _OLD_END.match(lines[j])), None)
            if end is not None:
                tables.append(_old_table(lines[i + 1:end]))
                i = end
        elif "tensor([[" in line:
            end = next((j for j in range(i, len(lines)) if "]]" in lines[j]), None)
            if end is not None:
                body = " ".join(lines[i:end + 1])
                tables.append(_new_table(body[body.index("tensor([[") + len("tensor(["):body.index("]]") + 1]))
                i = end
        i += 1
    return tables


def _old_table(lines: list[str]) -> Tensor:
    """PyTorch 0.3's print: rows of numbers, possibly in column blocks headed ``Columns i to j``."""
    blocks: list[list[list[float]]] = [[]]
    for line in lines:
        if line.strip().startswith("Columns"):
            if blocks[-1]:
                blocks.append([])
        elif line.strip():
            blocks[-1].append([float(x) for x in _NUMBER.findall(line)])
    try:
        return torch.cat([torch.tensor(block, dtype=torch.float64) for block in blocks], dim=1)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"a 'Variable containing:' table has rows of different lengths ({exc})") from None


def _new_table(rows_text: str) -> Tensor:
    """The later print: ``[a, b, ...], [c, d, ...]`` (one bracketed row per edge)."""
    rows = [[float(x) for x in _NUMBER.findall(row)] for row in re.findall(r"\[([^\[\]]*)\]", rows_text)]
    try:
        return torch.tensor(rows, dtype=torch.float64)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"a 'tensor([[...]])' table has rows of different lengths ({exc})") from None


def alphas_from_softmax(probabilities: Tensor) -> Tensor:
    """α with ``softmax(α) = probabilities`` (rows renormalised after rounding): log p, one constant per row off."""
    rows = probabilities.clamp_min(SMALLEST_PROBABILITY)
    return (rows / rows.sum(dim=-1, keepdim=True)).log().float()


def read_printed_alphas(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """α (normal, reduce) from the last two softmax tables printed in the captured stdout at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise CheckpointError(f"--alphas {path}: cannot read it ({exc.strerror})") from None
    tables = parse_printed_tables(text)
    if len(tables) < 2:
        raise CheckpointError(
            f"--alphas {path}: found {len(tables)} softmax(α) table(s), need the normal and reduce tables that "
            "DARTS's train_search.py prints to stdout each epoch ('Variable containing:' or 'tensor([[...]])'); "
            "give the captured standard output, not log.txt")
    normal, reduce = tables[-2:]
    if normal.shape != reduce.shape:
        raise CheckpointError(f"--alphas {path}: the last two tables have shapes {tuple(normal.shape)} and "
                              f"{tuple(reduce.shape)}; expected the normal and reduce tables of one epoch")
    return alphas_from_softmax(normal), alphas_from_softmax(reduce)
