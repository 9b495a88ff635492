"""``select()``: run one registered selector on a private copy of a supernet and record the run."""
from __future__ import annotations

import copy
import random
import time
from typing import Any, Callable, Mapping

import torch
from torch import nn

from selbench.core.errors import SelbenchError
from selbench.core.genotype import Genotype
from selbench.core.options import resolve_options
from selbench.plugin.host import plugin_host
from selbench.select.context import SelectionContext, SupernetData
from selbench.select.contract import Selection, SelectionRun, Selector


def select(supernet: nn.Module, selector: str | Selector, *, data: SupernetData | None = None, seed: int = 0,
           device: str | torch.device | None = None, progress: Callable[[str, int, int], None] | None = None,
           search: Mapping[str, Any] | None = None, **options: Any) -> SelectionRun:
    """Run one selector on (a private copy of) ``supernet`` and return the recorded :class:`SelectionRun`.

    ``search``: the ``[search]`` section of the supernet's recipe; fine-tuning selectors take
    their hyper-parameters from it (see :func:`selbench.select.context.finetune_settings`;
    default DARTS's).
    """
    if isinstance(selector, str):
        registration = plugin_host().get("selector", selector)
        chosen, dist, version = registration.obj, registration.distribution, registration.version
    else:
        chosen, dist, version = selector, None, None
    resolved = resolve_options(chosen.options, options, f"selector {chosen.name!r}")
    if chosen.needs_data and data is None:
        raise SelbenchError(
            f"selector {chosen.name!r} needs the supernet's train/valid data; pass data=... "
            "(on the command line: --recipe or a checkpoint written by `selbench train`)")
    _check_finite(supernet)
    target = torch.device(device) if device is not None else next(supernet.parameters()).device
    private = copy.deepcopy(supernet).to(target)
    torch.manual_seed(seed)
    random.seed(seed)
    ctx = SelectionContext(private, options=resolved, seed=seed, device=target, data=data,
                           selector=chosen.name, progress=progress, search=search)
    _synchronize(target)
    start = time.perf_counter()
    result = chosen.run(ctx)
    _synchronize(target)
    seconds = time.perf_counter() - start
    if isinstance(result, Genotype):
        result = Selection(genotype=result)
    if not isinstance(result, Selection):
        raise SelbenchError(f"selector {chosen.name!r} returned a {type(result).__name__}; "
                            "run(ctx) must return a selbench.Selection or a selbench.Genotype")
    variable_in_degree = chosen.variable_in_degree if result.variable_in_degree is None else result.variable_in_degree
    if variable_in_degree and not chosen.variable_in_degree:
        raise SelbenchError(f"selector {chosen.name!r} returned a variable in-degree selection "
                            "but is not registered with variable_in_degree=True")
    if result.genotype is not None:
        result.genotype.validate(ctx.space, variable_in_degree=variable_in_degree)
    elif not result.failure:
        raise SelbenchError(f"selector {chosen.name!r} returned no genotype and no failure reason")
    run = SelectionRun(result, selector=chosen.name, distribution=dist, version=version, options=resolved,
                       seed=seed, device=str(target), seconds=seconds, counters={**ctx.counters, **result.counters},
                       variable_in_degree=variable_in_degree)
    plugin_host().notify("selbench_selection_finished", selection=run)
    return run


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_finite(supernet: nn.Module) -> None:
    """Refuse a diverged supernet (NaN or infinite α or weights) before a selector reads it; one host sync."""
    named = [(name, p) for name, p in supernet.named_parameters() if p.numel()]
    if not named:
        return
    finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named]).cpu()
    if not bool(finite.all()):
        bad = [name for (name, _), ok in zip(named, finite.tolist()) if not ok]
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise SelbenchError(f"the supernet holds non-finite values (NaN or infinity) in {', '.join(bad[:3])}{more}: "
                            "its training diverged; train it again (e.g. with a lower learning rate)")
