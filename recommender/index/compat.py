"""Whether an embedder can produce vectors comparable with an index's (``check_compatible``,
``check_prompts``)."""

from __future__ import annotations

from pathlib import Path

from bookrec.client import Embedder, ModelIdentity, PromptFormats

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


def check_prompts(
    stored: PromptFormats | None, embedder: Embedder, *, where: str | Path = "the index"
) -> None:
    """Raise :class:`IndexMismatchError` if ``embedder`` formats texts unlike the vectors of an
    index whose recorded formats are ``stored``: documents exactly, queries up to their
    instruction (a task of one's own per call is fine; another preset is not).

    Call it after the embedder has embedded something: the client's formats are then the
    served model's preset (no request); before, they may be a stand-in. Nothing is checked
    when either side records no formats (indexes of old versions, lexical embedders).
    """
    current = embedder.prompt_formats
    if stored is None or current is None:
        return
    if stored.document == current.document and _query_shape(stored) == _query_shape(current):
        return
    raise IndexMismatchError(
        f"the index at {where} was built with the prompts {stored.document!r} (documents) / "
        f"{stored.query!r} (queries), but the embedder formats {current.document!r} / "
        f"{current.query!r}: the served model's prompt preset or the configured prompts "
        "changed. Rebuild the index (bookrec index --rebuild) or configure the prompts it was "
        "built with (BOOKREC_PROMPT_PRESET, BOOKREC_QUERY_PROMPT, ...)"
    )


def _query_shape(formats: PromptFormats) -> str:
    """The query format with its instruction put back as a placeholder."""
    if not formats.instruction:
        return formats.query
    return formats.query.replace(formats.instruction, "{instruction}")
