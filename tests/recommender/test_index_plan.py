"""The build plan on hand-made rows: no files, no embedder."""

from __future__ import annotations

from bookrec.recommender.index.plan import BuildPlan, Rows, plan_build


def rows(*pairs: str) -> Rows:
    """``rows("a:h1", "b:h2")``: book ids with their content hashes."""
    split = [p.split(":") for p in pairs]
    return Rows(tuple(i for i, _ in split), tuple(h for _, h in split))


def test_no_old_index_embeds_every_distinct_text_once() -> None:
    plan = plan_build(rows("a:h1", "b:h2", "c:h1"), None, set(), old_reusable=True)
    assert plan.reuse == {} and plan.resume == ()
    assert plan.embed == ("a", "b", "c") and plan.to_embed == ("h1", "h2")
    assert (plan.embedded, plan.reused, plan.resumed, plan.removed) == (3, 0, 0, 0)
    assert not plan.unchanged


def test_an_unchanged_catalog_reuses_every_row() -> None:
    old = rows("a:h1", "b:h2")
    plan = plan_build(rows("a:h1", "b:h2"), old, set(), old_reusable=True)
    assert plan.reuse == {"a": 0, "b": 1} and plan.to_embed == ()
    assert plan.unchanged
    assert plan.counts() == {"embedded": 0, "reused": 2, "resumed": 0, "removed": 0}


def test_reordered_rows_are_reused_but_not_unchanged() -> None:
    plan = plan_build(rows("b:h2", "a:h1"), rows("a:h1", "b:h2"), set(), old_reusable=True)
    assert plan.reuse == {"b": 1, "a": 0} and not plan.unchanged


def test_changed_added_removed_and_staged_books() -> None:
    old = rows("a:h1", "b:h2", "c:h3", "d:h4")
    catalog = rows("a:h1", "b:new", "c:h3", "e:h5", "f:h6")  # b changed, d removed, e and f new
    plan = plan_build(catalog, old, {"h5", "unrelated"}, old_reusable=True)
    assert plan.reuse == {"a": 0, "c": 2}
    assert plan.resume == ("e",)
    assert plan.embed == ("b", "f") and plan.to_embed == ("new", "h6")
    assert plan.counts() == {"embedded": 2, "reused": 2, "resumed": 1, "removed": 1}
    assert plan.embedded + plan.reused + plan.resumed == len(catalog.ids)
    assert not plan.unchanged


def test_an_old_vector_wins_over_a_staged_one() -> None:
    plan = plan_build(rows("a:h1"), rows("a:h1"), {"h1"}, old_reusable=True)
    assert plan.reuse == {"a": 0} and plan.resume == () and plan.unchanged


def test_the_first_old_row_of_a_text_is_reused() -> None:
    plan = plan_build(rows("x:h1"), rows("a:h1", "b:h1"), set(), old_reusable=True)
    assert plan.reuse == {"x": 0} and plan.removed == 2


def test_other_text_version_or_prompt_reuses_nothing() -> None:
    old = rows("a:h1", "b:h2")
    plan = plan_build(rows("a:h1", "b:h2"), old, {"h2"}, old_reusable=False)
    assert plan.reuse == {} and not plan.unchanged
    assert plan.resume == ("b",) and plan.embed == ("a",) and plan.to_embed == ("h1",)
    assert plan.removed == 0


def test_a_plan_is_a_value() -> None:
    catalog, old = rows("a:h1", "b:h2"), rows("a:h1")
    first = plan_build(catalog, old, {"h2"}, old_reusable=True)
    assert first == plan_build(catalog, old, {"h2"}, old_reusable=True)
    assert first == BuildPlan({"a": 0}, ("b",), (), (), 0, False)
