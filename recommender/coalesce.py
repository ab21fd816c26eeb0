"""Concurrent single-query searches over one matrix, answered together in one pass.

Exact search over the numpy index is memory-bound: each query reads the whole matrix. When
several threads search at once (the HTTP service's request threads), a :class:`Coalescer`
gathers their queries for up to ``window`` seconds and answers them with one matrix product
(``Q @ M.T``, the matrix read once), each with its own ``k``, filter mask and exclusions. A
search that finds no other search under way runs at once, so an idle server adds no wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Coalescer", "Query"]


@dataclass
class Query:
    """One waiting search: ``group`` says which searches can share a pass (same matrix and
    filter mask)."""

    vector: NDArray[np.float32]
    k: int
    exclude: Sequence[int]
    group: Hashable
    context: Any
    done: threading.Event = field(default_factory=threading.Event)
    rows: NDArray[np.intp] | None = None
    scores: NDArray[np.float32] | None = None
    error: BaseException | None = None


#: ``run(context, queries (m, d), k, exclude)`` -> rows and scores, (m, k) each, as
#: ``ranking.search_batch`` returns them.
Batch = Callable[
    [Any, NDArray[np.float32], int, list[Sequence[int]]],
    tuple[NDArray[np.intp], NDArray[np.float32]],
]


class Coalescer:
    """Answers concurrent searches in shared passes of at most ``max_batch`` queries."""

    def __init__(self, run: Batch, *, window: float = 0.002, max_batch: int = 64) -> None:
        self._run = run
        self.window = window
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[Query] = []
        self._active = 0  # searches under way (waiting or running)
        self._collecting = False

    def search(self, query: Query) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
        with self._lock:
            self._active += 1
            self._waiting.append(query)
            lead = not self._collecting
            if lead:
                self._collecting = True
            alone = self._active == 1
        try:
            if lead:
                if not alone:
                    time.sleep(self.window)
                with self._lock:
                    batch = self._waiting[: self.max_batch]
                    del self._waiting[: self.max_batch]
                    self._collecting = False
                    leftover = bool(self._waiting)
                self._answer(batch)
                while leftover:
                    leftover = self._drain()
            else:
                while not query.done.wait(1.0):
                    self._drain()  # a leader may have left queries behind; take them
        finally:
            with self._lock:
                self._active -= 1
        if query.error is not None:
            raise query.error
        assert query.rows is not None and query.scores is not None
        return query.rows, query.scores

    def _drain(self) -> bool:
        """Answer queries a pass left waiting (more than ``max_batch``); ``True`` while more
        are left."""
        with self._lock:
            if self._collecting or not self._waiting:
                return False
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
        self._answer(batch)
        with self._lock:
            return bool(self._waiting) and not self._collecting

    def _answer(self, batch: list[Query]) -> None:
        groups: dict[Hashable, list[Query]] = {}
        for q in batch:
            groups.setdefault(q.group, []).append(q)
        for members in groups.values():
            try:
                k = max(q.k for q in members)
                matrix = np.stack([q.vector for q in members])
                rows, scores = self._run(
                    members[0].context, matrix, k, [q.exclude for q in members]
                )
                for i, q in enumerate(members):
                    keep = rows[i, : q.k] >= 0
                    q.rows, q.scores = rows[i, : q.k][keep], scores[i, : q.k][keep]
            except BaseException as exc:  # every waiter of the pass gets the error
                for q in members:
                    q.error = exc
            finally:
                for q in members:
                    q.done.set()
