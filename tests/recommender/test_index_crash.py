"""A process killed (SIGKILL) in the middle of saving an index leaves the old one loadable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from bookrec.recommender import Catalog, VectorIndex, book_text, build_index
from tests.recommender.conftest import FakeEmbedder, make_books, text_vector

REPO = Path(__file__).resolve().parents[2]
N_BOOKS = 3000
DIM = 64

# The child builds an index of N_BOOKS books where one book changed, so it writes a whole new
# generation. `_fsync` (called after each file and directory is written) is wrapped so that the
# child announces the point it reached and stops there, waiting to be killed.
CHILD = textwrap.dedent(
    """
    import sys, time, dataclasses
    from pathlib import Path
    from bookrec.recommender import Catalog, build_index
    from bookrec.recommender.index import files as ix
    from tests.recommender.conftest import FakeEmbedder, make_books

    path, target = sys.argv[1], sys.argv[2]
    nth, n, dim, loops = (int(a) for a in sys.argv[3:7])
    seen = 0
    original = ix.fsync

    def hook(p):
        global seen
        original(p)
        if target and (p.name.startswith(target) or (target == "<dir>" and p == Path(path))):
            seen += 1
            if seen == nth:
                print("PAUSED", flush=True)
                time.sleep(60)

    ix.fsync = hook
    books = make_books(n)
    print("STARTED", flush=True)
    for i in range(loops):
        changed = dataclasses.replace(books[0], summary=f"changed {i}")
        build_index(path, Catalog([changed, *books[1:]]), FakeEmbedder(dim))
    """
)


@pytest.fixture
def saved_index(tmp_path: Path) -> Path:
    path = tmp_path / "idx"
    build_index(path, Catalog(make_books(N_BOOKS)), FakeEmbedder(DIM))
    return path


def _child(path: Path, target: str, nth: int, loops: int = 1) -> subprocess.Popen[str]:
    script = path.parent / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [str(path), target, str(nth), str(N_BOOKS), str(DIM), str(loops)]
    return subprocess.Popen(
        [sys.executable, str(script), *args], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )


def _assert_consistent(path: Path, *, first_summary_changed: bool | None) -> None:
    index = VectorIndex.open(path)
    books = make_books(N_BOOKS)
    assert index.ids == tuple(b.id for b in books)
    assert index.vectors.shape == (N_BOOKS, DIM)
    for book in books[1:4] + books[-2:]:
        np.testing.assert_allclose(
            index.vector(book.id), text_vector(book_text(book), DIM), rtol=1e-6
        )
    original = text_vector(book_text(books[0]), DIM)
    is_original = bool(np.allclose(index.vector(books[0].id), original, rtol=1e-6))
    if first_summary_changed is not None:
        assert is_original is not first_summary_changed


@pytest.mark.parametrize(
    ("target", "nth", "published"),
    [
        ("vectors.npy", 1, False),  # vectors written, ids not yet
        (".tmp-gen-", 1, False),  # generation complete, not yet renamed into place
        ("<dir>", 1, False),  # generation renamed, manifest not yet replaced
        ("<dir>", 2, True),  # manifest replaced: the new index is live
    ],
)
def test_kill_at_each_step_of_a_save(
    saved_index: Path, target: str, nth: int, published: bool
) -> None:
    with _child(saved_index, target, nth) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "STARTED"
            assert proc.stdout.readline().strip() == "PAUSED"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    _assert_consistent(saved_index, first_summary_changed=published)
    # The next build cleans up what the killed one left behind and works.
    index, _ = build_index(saved_index, Catalog(make_books(N_BOOKS)), FakeEmbedder(DIM))
    leftovers = [p.name for p in saved_index.iterdir() if p.name.startswith((".tmp", "gen-"))]
    assert leftovers == [index.manifest.generation if index.manifest else ""]
    _assert_consistent(saved_index, first_summary_changed=False)


def test_kill_at_random_moments(saved_index: Path) -> None:
    rng = np.random.default_rng(7)
    for _ in range(3):
        with _child(saved_index, "", 0, loops=1000) as proc:
            try:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "STARTED"
                time.sleep(float(rng.uniform(0.05, 0.3)))
                proc.send_signal(signal.SIGKILL)
            finally:
                proc.kill()
                proc.wait(timeout=10)
        _assert_consistent(saved_index, first_summary_changed=None)
