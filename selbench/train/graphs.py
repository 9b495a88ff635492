"""CUDA graphs of whole training steps (``graphs = "on"``): one capture per epoch, replayed for every full batch.

A step — forward, backward, gradient clipping, optimiser updates — costs hundreds of kernel
launches; on a GPU the small convolutions of a DARTS supernet or cell network finish faster
than Python launches them.  :class:`GraphedStep` records the step once as a CUDA graph and
then launches it with one call per batch.

* The first :data:`WARMUP_STEPS` calls of an epoch run eagerly on a side stream (as PyTorch
  asks before capture: optimiser state exists, libraries have chosen their kernels); they are
  ordinary training steps.
* The next call captures the step on static copies of its inputs and replays it; every later
  call whose inputs have the captured shapes and dtypes copies them into the static inputs and
  replays.  Any other call — the smaller last batch of an epoch — runs eagerly.
* Python numbers the step reads (learning rate, drop-path probability, clipping threshold)
  are frozen into the graph at capture, so a new :class:`GraphedStep` is made per epoch.
* Optimisers with a ``capturable`` flag (Adam) are made capturable for the capture (their step
  counters move to the device) and set back afterwards, so checkpoints stay loadable anywhere.

Where graphs cannot run — not a CUDA device, a step the caller declares uncapturable (an
observer, sampled architectures, second-order α steps) or a failed capture — the step runs
eagerly, with one log warning per reason.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from selbench.core.errors import SelbenchError

GRAPHS = ("off", "on")
# The recipe key in [search] and [retrain]; optional, so that recipes without it keep their config hash.
GRAPHS_DEFAULTS: dict[str, Any] = {"graphs": "off"}
WARMUP_STEPS = 3

Step = Callable[..., Sequence[Tensor]]
log = logging.getLogger(__name__)
_warned: set[str] = set()


def check_graphs(section: Mapping[str, Any], where: str) -> None:
    """Raise a :class:`SelbenchError` unless ``section["graphs"]`` (when present) is ``"off"`` or ``"on"``."""
    value = section.get("graphs", GRAPHS_DEFAULTS["graphs"])
    if value not in GRAPHS:
        raise SelbenchError(f"{where} = {value!r} is not one of {', '.join(GRAPHS)}")


def warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time this process sees it."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


class GraphedStep:
    """``step(*inputs)``, replayed from a CUDA graph where it can be; see the module docstring.

    ``step`` takes tensors and returns a sequence of tensors; after a replay the returned
    tensors are the graph's static outputs, which the next replay overwrites.  ``optimizers``
    are the ones ``step`` updates.  ``enabled``: the recipe's ``graphs = "on"``; ``eager_reason``
    (a caller's "this step cannot be captured: ...") keeps it eager with one warning; ``where``
    names the recipe key in the warnings.
    """

    def __init__(self, step: Step, *, optimizers: Sequence[torch.optim.Optimizer], enabled: bool,
                 where: str, eager_reason: str | None = None) -> None:
        self.step = step
        self.optimizers = list(optimizers)
        self.where = where
        self.active = enabled
        self.warmed = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: list[Tensor] = []
        self.static_outputs: Sequence[Tensor] = ()
        self.shapes: list[tuple[torch.Size, torch.dtype]] | None = None
        self.stream: torch.cuda.Stream | None = None
        if enabled and eager_reason is not None:
            self._fall_back(eager_reason)

    def __call__(self, *inputs: Tensor) -> Sequence[Tensor]:
        if self.graph is not None:
            if _shapes(inputs) != self.shapes:
                return self.step(*inputs)
            for static, value in zip(self.static_inputs, inputs):
                static.copy_(value)
            self.graph.replay()
            return self.static_outputs
        if not self.active:
            return self.step(*inputs)
        if self.shapes is None:
            device = inputs[0].device
            if device.type != "cuda":
                self._fall_back(f"CUDA graphs need a CUDA device, not {device.type}")
                return self.step(*inputs)
            self.shapes = _shapes(inputs)
            self.stream = torch.cuda.Stream(device)
        if self.warmed < WARMUP_STEPS or _shapes(inputs) != self.shapes:
            self.warmed += 1
            return self._on_side_stream(inputs)
        return self._capture(inputs)

    def _on_side_stream(self, inputs: Sequence[Tensor]) -> Sequence[Tensor]:
        assert self.stream is not None
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            outputs = self.step(*inputs)
        torch.cuda.current_stream().wait_stream(self.stream)
        return outputs

    def _capture(self, inputs: Sequence[Tensor]) -> Sequence[Tensor]:
        """Capture the step on copies of ``inputs`` and replay it once (capturing runs nothing)."""
        static_inputs = [value.clone() for value in inputs]
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            with _capturable(self.optimizers), torch.cuda.graph(graph):
                static_outputs = self.step(*static_inputs)
        except Exception as exc:  # any failure to capture means: run this epoch eagerly
            self._fall_back(f"capture failed ({type(exc).__name__}: {exc})")
            return self.step(*inputs)
        self.graph, self.static_inputs, self.static_outputs = graph, static_inputs, static_outputs
        graph.replay()
        return static_outputs

    def _fall_back(self, reason: str) -> None:
        self.active = False
        warn_once(f"{self.where} = on: {reason}; these steps run eagerly")


def _shapes(inputs: Sequence[Tensor]) -> list[tuple[torch.Size, torch.dtype]]:
    return [(value.shape, value.dtype) for value in inputs]


@contextlib.contextmanager
def _capturable(optimizers: Sequence[torch.optim.Optimizer]) -> Iterator[None]:
    """Optimisers with a ``capturable`` flag (Adam) capturable for the block, their step counters on the device."""
    switched = []
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            if group.get("capturable") is False:
                for param in group["params"]:
                    state = optimizer.state.get(param, {})
                    if isinstance(state.get("step"), Tensor):
                        state["step"] = state["step"].to(param.device)
                group["capturable"] = True
                switched.append(group)
    try:
        yield
    finally:
        for group in switched:
            group["capturable"] = False
