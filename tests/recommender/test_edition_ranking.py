"""Rankings group editions as group_editions does: never the book's own other editions, never
two editions of one work in a list."""

from __future__ import annotations

import numpy as np

from bookrec.client import ModelIdentity
from bookrec.recommender import Book, Catalog, Recommender, VectorIndex
from bookrec.recommender.fusion import Fusion

BOOKS = [
    Book("hlm1", "红楼梦", ("曹雪芹",), extra={"isbn": "9787020002207"}),
    # Another edition: the same ISBN under a title and authors that no key joins.
    Book("hlm2", "石头记（脂评本）", ("无名氏",), extra={"isbn": "978-7-02-000220-7"}),
    Book("hlm3", "紅樓夢", ("[清]曹雪芹 著", "高鹗 续")),
    Book("sgyy", "三国演义", ("罗贯中",)),
    Book("shz1", "水浒传", ("施耐庵",), extra={"work_id": "shuihu"}),
    Book("shz2", "忠义水浒全传", ("施耐庵", "罗贯中"), extra={"work_id": "shuihu"}),
    Book("xyj", "西游记", ("吴承恩",)),
]


def _rec() -> Recommender:
    rng = np.random.default_rng(5)
    base = rng.normal(size=8)
    vectors = base + 0.3 * rng.normal(size=(len(BOOKS), 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex.from_vectors(
        [b.id for b in BOOKS], vectors.astype(np.float32), ModelIdentity("fake/model", 8)
    )
    return Recommender(Catalog(BOOKS), index, fusion=Fusion(mode="dense"))


def test_other_editions_of_the_book_never_appear() -> None:
    shown = [r.book.id for r in _rec().similar("hlm1", k=10)]
    assert not {"hlm2", "hlm3"} & set(shown)
    assert {"sgyy", "xyj"} <= set(shown)


def test_one_edition_per_work_in_a_list() -> None:
    shown = [r.book.id for r in _rec().similar("xyj", k=10)]
    assert len({"hlm1", "hlm2", "hlm3"} & set(shown)) == 1
    assert len({"shz1", "shz2"} & set(shown)) == 1
    assert len(shown) == 3  # 红楼梦, 三国演义 and 水浒传, once each


def test_read_editions_are_excluded_from_a_readers_list() -> None:
    shown = [r.book.id for r in _rec().recommend(history=["hlm3", "shz2"], k=10)]
    assert set(shown) == {"sgyy", "xyj"}
