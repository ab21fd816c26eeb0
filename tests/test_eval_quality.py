"""scripts/eval_quality.py: its metrics on hand-made labels, then one run against a fake server.

The metric tests compute the expected values by hand (idf, discounts) from the small catalogs
they build, not with the harness's own helpers. The end-to-end test runs the script in a
subprocess against FakeSGLang on a 30-book labelled catalog and checks the table, the JSON and
that no label reached the embedding server.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from bookrec.client.testing import FakeSGLang
from bookrec.recommender import Fusion

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "eval_quality.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("eval_quality", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["eval_quality"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


eq = _load_script()


def six_books() -> eq.Labels:
    """Book 0 is the query; book 5 is another edition of it (same work)."""
    tags = [{"a", "b"}, {"a"}, {"a"}, {"a", "b"}, {"c"}, {"a", "b"}]
    lists = [{"L1"}, {"L1"}, set(), {"L2"}, {"L1"}, {"L1"}]
    works = ["w0", "w1", "w2", "w3", "w4", "w0"]
    return eq.Labels([frozenset(t) for t in tags], [frozenset(x) for x in lists], works)


def test_idf_and_gain_by_hand() -> None:
    labels = six_books()
    idf_a, idf_b, idf_c = math.log(6 / 5), math.log(6 / 3), math.log(6 / 1)
    assert labels.idf == pytest.approx({"a": idf_a, "b": idf_b, "c": idf_c})
    assert labels.gain(0, 3) == pytest.approx(idf_a + idf_b)
    assert labels.gain(0, 1) == pytest.approx(idf_a)
    assert labels.gain(0, 4) == 0.0
    # the best ranking: book 3, then books 1 and 2; the query's other edition is left out
    assert labels.ideal_gains(0, 10) == pytest.approx([idf_a + idf_b, idf_a, idf_a])
    assert labels.specific_tag(0) == "b"


def test_ndcg_same_tag_and_same_list_of_a_given_ranking() -> None:
    labels = six_books()
    idf_a, idf_b = math.log(6 / 5), math.log(6 / 3)
    ranking = [5, 1, 3, 4, 2]  # the query's own edition first: gain 0, a miss everywhere
    dcg = idf_a / math.log2(3) + (idf_a + idf_b) / math.log2(4) + idf_a / math.log2(6)
    ideal = (idf_a + idf_b) / math.log2(2) + idf_a / math.log2(3) + idf_a / math.log2(4)
    scores = eq.score_similar(labels, 0, ranking, 10)
    assert scores.ndcg == pytest.approx(dcg / ideal)
    assert scores.ndcg == pytest.approx(0.5762, abs=1e-4)
    assert scores.same_tag == pytest.approx(1 / 10)  # only book 3 carries "b" (book 5: own work)
    assert scores.same_list == pytest.approx(2 / 10)  # books 1 and 4 share L1 (book 5: own work)
    best = eq.score_similar(labels, 0, [3, 1, 2], 10)
    assert best.ndcg == pytest.approx(1.0)


def test_a_work_shown_twice_counts_once() -> None:
    tags = [frozenset({"x"})] * 4
    labels = eq.Labels(tags, [frozenset()] * 4, ["q", "w", "w", "v"])
    assert labels.fresh(0, [1, 2, 3, 0]) == [True, False, True, False]
    scores = eq.score_similar(labels, 0, [1, 2], 2)
    idf = math.log(4 / 4)  # a tag on every book weighs nothing: no gain anywhere
    assert idf == 0.0 and scores.ndcg is None
    assert scores.same_tag == pytest.approx(1 / 2)  # the repeat of work w is a miss
    assert scores.same_list is None  # the query is in no list


def test_dcg_ndcg_precision() -> None:
    assert eq.dcg([3, 0, 1]) == pytest.approx(3 + 0 + 1 / 2)
    assert eq.ndcg_at_k([3, 0, 1], [1, 3, 2], 3) == pytest.approx(
        3.5 / (3 + 2 / math.log2(3) + 0.5)
    )
    assert eq.ndcg_at_k([1, 1], [0, 0], 2) is None
    assert eq.precision_at_k([True, False, True], 10) == pytest.approx(0.2)
    assert eq.precision_at_k([True] * 12, 10) == 1.0


def test_history_cases_one_book_per_work_and_hits_by_work() -> None:
    # list A: books 0, 1 (same work as 0), 2, 3 -> works q, r, s; list B has two works only
    lists = [{"A"}, {"A"}, {"A"}, {"A", "B"}, {"B"}, set()]
    labels = eq.Labels(
        [frozenset()] * 6, [frozenset(x) for x in lists], ["q", "q", "r", "s", "t", "r"]
    )
    cases = eq.history_cases(labels, None, 50, random.Random(0))
    assert len(cases) == 1
    held, rest = cases[0]
    assert sorted([held, *rest]) == [0, 2, 3]  # book 1 is book 0's edition: counted once
    # a result that is another edition of the held-out work is a hit
    if held == 2:
        assert eq.hit_at_k(labels, 2, [4, 5], 10)
    assert eq.hit_at_k(labels, held, [held], 1)
    assert not eq.hit_at_k(labels, held, [4], 10)


def test_wish_cases_take_frequent_tags_but_not_near_universal_ones() -> None:
    tags = [frozenset({"all", "half" if i < 4 else "rest"}) for i in range(12)]
    tags[0] = tags[0] | {"rare"}
    labels = eq.Labels(tags, [frozenset()] * 12, [str(i) for i in range(12)])
    wishes = eq.wish_cases(labels, "en", max_tags=5, min_books=2)
    # "all" (12 of 12) and "rest" (8 of 12) are on more than a third; "rare" on one book
    assert {t for t, _ in wishes} == {"half"}
    assert next(w for _, w in wishes) == "I'd like to read a half book"
    assert {w for _, w in eq.wish_cases(labels, "zh", 5, 2)} >= {"想读一本half类的书"}
    assert eq.wish_precision(labels, "half", [0, 1, 5, 0], 4) == pytest.approx(2 / 4)


def test_matrix_baseline_similar_history_and_wish() -> None:
    angles = np.radians([0.0, 10.0, 50.0, 90.0, 180.0])
    matrix = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    system = eq.MatrixSystem(matrix, lambda text: np.array([[0.0, 1.0]]))
    assert system.similar(0, 2) == [1, 2]  # itself left out
    # average of 0 deg and 90 deg points at 45 deg: 50 deg first, then 10 deg
    assert system.history([0, 3], 2, "average") == [2, 1]
    # best: each book's closest history book; 10 deg (to 0) beats 50 deg (40 to 90)
    assert system.history([0, 3], 2, "best") == [1, 2]
    assert system.wish("up", 1) == [3]
    with pytest.raises(ValueError):
        system.history([0], 1, "blend")


def test_options_pass_through_as_json_and_dataclasses() -> None:
    kw = eq.parse_kw(["k=5", "strategy=best", 'fusion={"mode": "dense"}', "x=a=b"], "--kw")
    assert kw == {"k": 5, "strategy": "best", "fusion": {"mode": "dense"}, "x": "a=b"}
    from bookrec.recommender import Recommender

    built = eq.coerce_kw(Recommender.__init__, {"fusion": {"mode": "dense"}}, "--recommender-kw")
    assert built["fusion"] == Fusion(mode="dense")
    with pytest.raises(eq.UsageError, match="unknown option 'fuson'"):
        eq.coerce_kw(Recommender.__init__, {"fuson": 1}, "--recommender-kw")
    with pytest.raises(eq.UsageError, match="key=value"):
        eq.parse_kw(["novalue"], "--recommend-kw")


def test_labels_are_taken_out_of_the_records(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": "1", "title": "T", "tags": ["x", "y"], "lists": ["u1"]}\n\n'
        '{"id": "2", "title": "U", "lists": "u2"}\n'
    )
    read = eq.read_labelled(path)
    assert read.records == [{"id": "1", "title": "T"}, {"id": "2", "title": "U"}]
    assert read.tags == [frozenset({"x", "y"}), frozenset()]
    assert read.lists == [frozenset({"u1"}), frozenset({"u2"})]
    path.write_text('{"id": "1", "title": "T"}\n{"id": "2", "tags": [["nested"]]}\n')
    with pytest.raises(eq.UsageError, match=r"c\.jsonl:2: tags must be a list of strings"):
        eq.read_labelled(path)


# -- end to end -----------------------------------------------------------------------------------

GENRES = {
    "space": "starship crew orbit planet alien galaxy captain",
    "crime": "detective murder police clue suspect city night",
    "romance": "love heart wedding letters summer longing",
    "history": "empire war king century archive revolution",
    "cooking": "kitchen recipe bread spice garden harvest",
}


def synthetic_catalog(path: Path) -> list[dict[str, object]]:
    """30 books in five genres, each with a unique label word no text contains."""
    rng = random.Random(7)
    books = []
    names = sorted(GENRES)
    for i in range(30):
        genre = names[i % 5]
        words = GENRES[genre].split()
        summary = " ".join(rng.choice(words) for _ in range(12))
        books.append(
            {
                "id": f"b{i:02d}",
                "title": f"{words[i % len(words)].title()} Book {i}",
                "authors": [f"Author {i % 9}"],
                "summary": f"A story of {summary}.",
                "language": "en",
                "tags": [f"zzlabel{genre}", f"zzlabel{'odd' if i % 2 else 'even'}"],
                "lists": [f"zzreader{i % 6}", f"zzreader{(i * 7) % 5 + 6}"],
            }
        )
    path.write_text("".join(json.dumps(b) + "\n" for b in books))
    return books


def test_a_run_against_a_fake_server(tmp_path: Path) -> None:
    catalog = tmp_path / "labelled.jsonl"
    synthetic_catalog(catalog)
    out = tmp_path / "out.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKREC_")}
    server = FakeSGLang()
    with server:
        proc = subprocess.run(
            [
                sys.executable,
                str(SCRIPT),
                str(catalog),
                "--base-url",
                server.base_url,
                "--min-tag-books",
                "3",
                "--workdir",
                str(tmp_path / "work"),
                "--json",
                str(out),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        embedded = list(server.embedded_texts)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    labels = [m["label"] for m in result["metrics"]]
    strategies = result["settings"]["strategies"]
    assert set(strategies) >= {"average", "best"}
    assert labels == [
        '"more like this": graded tag nDCG@10',
        '"more like this": same-tag P@10',
        '"more like this": same-reading-list P@10',
        *(
            f"from history (leave one out), `{s}`"
            + (" (default)" if s == result["settings"]["default_strategy"] else "")
            + " HR@10"
            for s in strategies
        ),
        "preference text (a wish naming a genre) P@10",
    ]
    for metric in result["metrics"]:
        assert set(metric["values"]) == {"tfidf", "plain", "bookrec"}
        assert all(0.0 <= v <= 1.0 for v in metric["values"].values()), metric
        assert metric["counts"] > 0
    assert result["queries"]["similar"] == 30 and result["queries"]["history"] > 0
    assert result["bookrec_degraded_results"] == 0
    table = proc.stdout[proc.stdout.index("| metric |") :]
    assert table.count("\n|") == len(labels) + 1  # header rule and one row per metric
    for label in labels:
        assert label in table
    # the labels never reached the server with a book: no book text names a tag or a list
    # (wishes name a tag: that is what they are)
    book_texts = [t for t in embedded if "A story of" in t]
    assert len(book_texts) >= 60  # each book for the plain baseline and for bookrec
    assert not [t for t in book_texts if "zzlabel" in t]
    assert not [t for t in embedded if "zzreader" in t]
    # a rerun with the same work directory (and server) embeds no book again
    with FakeSGLang(port=server.port) as again:
        rerun = subprocess.run(
            [
                sys.executable,
                str(SCRIPT),
                str(catalog),
                "--base-url",
                again.base_url,
                "--systems",
                "plain,bookrec",
                "--workdir",
                str(tmp_path / "work"),
                "--sample",
                "5",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert rerun.returncode == 0, rerun.stderr
        assert not [t for t in again.embedded_texts if "Book" in t]  # no book text again


def test_a_missing_catalog_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "none.jsonl"), "--systems", "tfidf"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"eval_quality: error: {tmp_path / 'none.jsonl'}: no such file"
