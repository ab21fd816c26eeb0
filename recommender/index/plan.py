"""What a build does with each catalog book, decided from hashes alone (no files, no embedder)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rows:
    """Book ids with the content hash of each book's text, in row (or catalog) order."""

    ids: tuple[str, ...]
    hashes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BuildPlan:
    """Where the vector of every catalog book comes from.

    Each catalog book is in exactly one of ``reuse`` (book id -> row of the old index with
    its vector), ``resume`` (its vector is staged by an unfinished build) or ``embed`` (this
    build embeds it). ``to_embed`` lists the distinct content hashes to embed, in catalog
    order: books with the same text are embedded once. ``removed`` counts the old index's
    books that are no longer in the catalog; ``unchanged`` means the catalog's rows are exactly
    the old index's rows, so nothing needs to be written.
    """

    reuse: Mapping[str, int]
    resume: tuple[str, ...]
    embed: tuple[str, ...]
    to_embed: tuple[str, ...]
    removed: int
    unchanged: bool

    @property
    def reused(self) -> int:
        return len(self.reuse)

    @property
    def resumed(self) -> int:
        return len(self.resume)

    @property
    def embedded(self) -> int:
        return len(self.embed)

    def counts(self) -> dict[str, int]:
        """The counts a manifest records as its ``last_build``."""
        return {
            "embedded": self.embedded,
            "reused": self.reused,
            "resumed": self.resumed,
            "removed": self.removed,
        }


def plan_build(
    catalog: Rows, old: Rows | None, staged: Collection[str], *, old_reusable: bool
) -> BuildPlan:
    """Decide, for each catalog book, whether its vector is reused, resumed or embedded.

    ``old`` is the existing index (``None``: there is none, or it is being rebuilt),
    ``staged`` the content hashes an unfinished build embedded, ``old_reusable`` whether the
    old index's vectors were made from the same book text version and document prompt (if not,
    none of them is reused). A vector in the old index wins over a staged one.
    """
    old_rows: dict[str, int] = {}
    if old is not None and old_reusable:
        for old_row, h in enumerate(old.hashes):
            old_rows.setdefault(h, old_row)
    reuse: dict[str, int] = {}
    resume: list[str] = []
    embed: list[str] = []
    to_embed: dict[str, None] = {}
    for book_id, h in zip(catalog.ids, catalog.hashes, strict=True):
        row = old_rows.get(h)
        if row is not None:
            reuse[book_id] = row
        elif h in staged:
            resume.append(book_id)
        else:
            embed.append(book_id)
            to_embed[h] = None
    if old is None:
        removed, unchanged = 0, False
    else:
        current = set(catalog.ids)
        removed = sum(1 for book_id in old.ids if book_id not in current)
        unchanged = old_reusable and old == catalog
    return BuildPlan(reuse, tuple(resume), tuple(embed), tuple(to_embed), removed, unchanged)
