"""The progress bar of the unit being computed: one ``progress(label, done, total)`` callback per unit.

Supernet training, selectors (through ``ctx.progress``) and scorers all report their long
loops as ``(label, done, total)``; a :class:`UnitBar` shows them on one tqdm line above the
grid bar, named after the unit in words (``perturbation · demo · supernet seed 1``), and
starts over whenever the label changes (epoch 2 of a retrain, the next phase of a selector).
"""
from __future__ import annotations

from tqdm import tqdm


class UnitBar:
    """A tqdm bar for one unit; call it as a progress callback, :meth:`close` it when the unit ends."""

    def __init__(self, unit: str, *, enabled: bool = True):
        self.unit = unit
        self.enabled = enabled
        self.label: str | None = None
        self.bar: tqdm | None = None

    def __call__(self, label: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            # position 0, above the grid bar; leave=False: a finished unit's bar makes room for the next
            self.bar = tqdm(total=total, position=0, leave=False, dynamic_ncols=True, unit="step")
        if label != self.label:
            self.label = label
            self.bar.reset(total=total)
            self.bar.set_description(f"{self.unit}: {label}")
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> UnitBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
