"""The exit status with its one-line message for each failure ``bookrec`` reports."""

from __future__ import annotations

from bookrec import client, recommender

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_SERVICE",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "CliError",
    "classify_error",
]

# ====  =======================================================================================
# code  meaning
# ====  =======================================================================================
# 0     success
# 1     unexpected internal error
# 2     bad command line or bad input (missing or malformed catalog, unknown book id, ...)
# 3     the embedding service is unavailable (not running, unreachable, timing out)
# 4     the embedding service or the index cannot be used (request rejected, bad response,
#       another model or dimension than the index, unusable cache, a corrupt index: a file
#       missing, truncated or changed, a vector not finite or not of unit norm)
# 130   interrupted
# ====  =======================================================================================
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_SERVICE = 4
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure the command reports as one line, with its exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _exc_text(exc: BaseException) -> str:
    # KeyError subclasses quote their message; show it as written.
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc) or type(exc).__name__


def classify_error(exc: BaseException) -> tuple[int, str]:
    """The exit status (see the table above) and the one-line message for an exception."""
    text = _exc_text(exc)
    if isinstance(exc, CliError):
        return exc.exit_code, text
    if isinstance(exc, client.EmbeddingUnavailable):
        return (
            EXIT_UNAVAILABLE,
            f"embedding service unavailable: {text} "
            "(is the server running? set --base-url or BOOKREC_BASE_URL)",
        )
    if isinstance(exc, client.ConfigurationError | client.InvalidInputError):
        return EXIT_USAGE, text
    if isinstance(exc, client.EmbeddingError):
        kind = {
            client.EmbeddingRejected: "the embedding service rejected the request",
            client.EmbeddingResponseError: "bad response from the embedding service",
            client.IncompatibleModelError: "incompatible model",
            client.CacheError: "embedding cache error",
        }
        for cls, label in kind.items():
            if isinstance(exc, cls):
                return EXIT_SERVICE, f"{label}: {text}"
        return EXIT_SERVICE, f"embedding error: {text}"
    if isinstance(exc, recommender.IndexBuildError):
        cause = exc.__cause__
        if isinstance(cause, client.EmbeddingUnavailable):
            return EXIT_UNAVAILABLE, f"embedding service unavailable: {text}"
        if isinstance(cause, client.EmbeddingError):
            return classify_error(cause)[0], text
        return EXIT_SERVICE, text
    if isinstance(exc, recommender.CorruptIndexError):
        if "--rebuild" not in text:
            text += " (rebuild the index with bookrec index --rebuild)"
        return EXIT_SERVICE, f"corrupt index: {text}"
    if isinstance(exc, recommender.IndexMismatchError):
        return EXIT_SERVICE, text
    if isinstance(exc, recommender.RecommenderError):
        return EXIT_USAGE, text
    if type(exc).__module__.partition(".")[0] == "psycopg":  # the optional PostgreSQL driver
        return EXIT_UNAVAILABLE, f"database error: {text}"
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
        name = exc.filename if getattr(exc, "filename", None) else text
        return EXIT_USAGE, f"{exc.strerror or 'cannot open'}: {name}"
    if isinstance(exc, PermissionError):
        return EXIT_USAGE, f"permission denied: {exc.filename or text}"
    if isinstance(exc, UnicodeDecodeError):
        return EXIT_USAGE, f"not UTF-8 text: {text}"
    if isinstance(exc, ValueError):  # the library validates its arguments with ValueError
        return EXIT_USAGE, text
    if isinstance(exc, OSError):
        return EXIT_FAILURE, f"{exc.strerror or text}: {exc.filename}" if exc.filename else text
    return (
        EXIT_FAILURE,
        f"internal error: {type(exc).__name__}: {text} (run with --debug for details)",
    )
