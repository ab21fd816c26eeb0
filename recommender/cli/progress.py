"""A tqdm progress bar on stderr, driven by the library's ``progress(done, total)`` callbacks."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

__all__ = ["ProgressBar"]


class ProgressBar:
    """A ``progress(done, total)`` callback that drives a tqdm bar on stderr.

    The bar appears on the first call, and only when stderr is a terminal (tqdm's
    ``disable=None``), so logs and pipes get no carriage-return noise.
    """

    def __init__(self, desc: str, *, enabled: bool = True, unit: str = "book") -> None:
        self._desc = desc
        self._enabled = enabled
        self._unit = unit
        self._bar: tqdm[Any] | None = None

    def __call__(self, done: int, total: int) -> None:
        if not self._enabled:
            return
        if self._bar is None:
            self._bar = tqdm(
                total=total,
                desc=self._desc,
                unit=self._unit,
                file=sys.stderr,
                disable=None,
                dynamic_ncols=True,
                leave=True,
            )
        if self._bar.total != total:
            self._bar.total = total
        self._bar.update(max(0, done - self._bar.n))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
