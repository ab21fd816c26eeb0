"""Whether an embedder can produce vectors comparable with an index's (``check_compatible``)."""

from __future__ import annotations

from pathlib import Path

from bookrec.client import Embedder, ModelIdentity

from ..errors import IndexMismatchError


def check_compatible(
    identity: ModelIdentity, embedder: Embedder, *, where: str | Path = "the index"
) -> None:
    """Raise :class:`IndexMismatchError` if ``embedder`` cannot produce vectors for ``identity``.

    Uses only what is known without a request: the embedder's identity if it has one, else its
    configured dimensions. Call again after the first embedding call to check the model too.
    """
    known = embedder.identity
    if known is not None:
        if known != identity:
            raise IndexMismatchError(
                f"the index at {where} was built with {identity}, but the embedder serves "
                f"{known}; vectors from different models cannot be compared. Rebuild the index "
                "(bookrec index --rebuild) or use the embedding service it was built with"
            )
        return
    dims = embedder.dimensions
    if dims is not None and dims != identity.dimensions:
        raise IndexMismatchError(
            f"the index at {where} has {identity.dimensions}-d vectors ({identity}), but the "
            f"embedder is configured for {dims} dimensions. Rebuild the index "
            "(bookrec index --rebuild) or configure the same dimensions"
        )
