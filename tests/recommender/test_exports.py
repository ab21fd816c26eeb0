"""The public API: one sorted, complete __all__."""

from __future__ import annotations

import types

from bookrec import recommender


def test_all_is_sorted_and_complete() -> None:
    names = recommender.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    assert len(set(names)) == len(names)
    for name in names:
        assert hasattr(recommender, name), name
    public = {
        n
        for n, v in vars(recommender).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert public <= set(names)
