"""Text measures without a tokenizer: a CJK character is about one token, other text about
four characters per token (Qwen3's tokenizer on English prose)."""

from __future__ import annotations

import math
import re

__all__ = ["estimate_tokens", "is_cjk", "truncate_to_tokens"]

CHARS_PER_TOKEN = 4
# CJK punctuation, kana, CJK ideographs (and extension A), Hangul, full-width forms.
_CJK = re.compile(
    r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]"
)


def is_cjk(text: str) -> bool:
    """Whether ``text`` contains CJK characters (ideographs, kana, Hangul, CJK punctuation or
    full-width forms): the characters :func:`estimate_tokens` counts as a token each."""
    return _CJK.search(text) is not None


def estimate_tokens(text: str) -> int:
    """Estimated token count of ``text`` (end-of-text token not included)."""
    if text.isascii():
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    cjk = len(_CJK.findall(text))
    return cjk + math.ceil((len(text) - cjk) / CHARS_PER_TOKEN)


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` whose estimate is at most ``max_tokens``."""
    if max_tokens <= 0:
        return ""
    if estimate_tokens(text) <= max_tokens:
        return text
    if text.isascii():
        return text[: max_tokens * CHARS_PER_TOKEN]
    budget = max_tokens * CHARS_PER_TOKEN  # in quarter tokens
    for end, char in enumerate(text):
        budget -= CHARS_PER_TOKEN if _CJK.match(char) else 1
        if budget < 0:
            return text[:end]
    return text
