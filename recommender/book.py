"""The ``Book`` record, with the normalised keys that group a work's editions.

A work key is ``title key`` + ``\x1f`` + ``primary author key``, or ``work_id\x1f<id>`` when the
catalog gives a ``work_id``. The title key folds width (NFKC), case, punctuation, Latin
diacritics and traditional Chinese characters (to simplified); it drops bracketed notes other
than volume numbers, ``《》`` or ``「」`` quotation marks (keeping the title inside), alternative
titles (", or ..."), translator notes ("translated by ..."), and edition markers (第2版, 修订版,
典藏版, 插图本, 全译本, 精装, 全二册, "2nd Edition", "75th Anniversary Edition", "Unabridged",
"A Novel") at the end of the title or as its whole subtitle. Other subtitles are kept, so
"三体" and "三体Ⅱ：黑暗森林" stay apart, and so do volumes: "(上)", "(下)", "(卷一)", "Vol. 2"
are part of the key. The primary author is the first credited name that is not a translator,
editor, illustrator or continuator once nationality or dynasty markers ("[日]", "（美）",
"〔清〕"), roles ("著", "译", "主编", "续", "(Translator)", "edited by") and suffixes ("Jr.")
are removed and inverted names ("Tolkien, J. R. R.") put back in order.

:func:`group_editions` goes further than one key per book can: it joins books that share a
``work_id``, an ISBN, or a title key and any author, and a title without a subtitle to the one
subtitled title of the same authors.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ._hanzi import TRADITIONAL_TO_SIMPLIFIED

__all__ = [
    "ISBN_FIELDS",
    "KNOWN_FIELDS",
    "Book",
    "author_keys",
    "group_editions",
    "normalize_isbn",
    "normalize_name",
    "title_key",
    "work_key",
]

#: The catalog fields a :class:`Book` has attributes for; any other field goes to ``extra``.
KNOWN_FIELDS = (
    "id",
    "title",
    "authors",
    "summary",
    "tags",
    "language",
    "year",
    "rating",
    "popularity",
    "series",
)

#: The catalog fields (kept in ``Book.extra``) read as ISBNs: a string or a list of strings each.
ISBN_FIELDS = ("isbn", "isbn13", "isbn10")


@dataclass(frozen=True, slots=True)
class Book:
    """One catalog record. ``extra`` keeps the fields this library does not know about."""

    id: str
    title: str
    authors: tuple[str, ...] = ()
    summary: str = ""
    tags: tuple[str, ...] = ()
    language: str | None = None
    year: int | None = None
    rating: float | None = None
    popularity: int | None = None
    series: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def work_id(self) -> str | None:
        """The catalog's own ``work_id`` field (a string or an integer), stripped; None when
        absent or empty."""
        return _work_id(self.extra.get("work_id"))

    @property
    def work_key(self) -> str:
        """Key shared by the editions of one work: from ``work_id`` when the catalog gives one,
        else :func:`work_key` of the title and authors. Books sharing only an ISBN get one key
        from :func:`group_editions`, not here."""
        found = self.work_id
        if found is not None:
            return _WORK_ID_PREFIX + found
        return work_key(self.title, self.authors)

    @property
    def isbns(self) -> tuple[str, ...]:
        """The book's valid ISBNs from the ``isbn``, ``isbn13`` and ``isbn10`` fields, as
        ISBN-13 digits (ISBN-10s converted), first seen first, without repeats; invalid ones are
        left out."""
        found: dict[str, None] = {}
        for name in ISBN_FIELDS:
            for text in _isbn_texts(self.extra.get(name)):
                isbn = normalize_isbn(text)
                if isbn is not None:
                    found.setdefault(isbn)
        return tuple(found)

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict, unknown fields included (as loaded)."""
        out: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "authors": list(self.authors),
            "summary": self.summary,
            "tags": list(self.tags),
        }
        for name in ("language", "year", "rating", "popularity", "series"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out


def normalize_name(text: str) -> str:
    """Case-, width- and punctuation-insensitive form of a title, author, tag or series."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(
        " " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in text
    )  # punctuation, symbols, separators and controls become spaces
    return " ".join(text.split())


def work_key(title: str, authors: Iterable[str]) -> str:
    """The key shared by the editions of one work, from its title and authors alone: the title
    key and the primary author's key (the module docstring says what each drops)."""
    names = author_keys(authors)
    return title_key(title) + "\x1f" + (names[0] if names else "")


def title_key(title: str) -> str:
    """The title as the work key compares it: subtitles kept unless they are edition notes."""
    return _title_parts(title)[0]


def author_keys(authors: Iterable[str]) -> tuple[str, ...]:
    """The normalised names of the authors proper, in order, without repeats: translators,
    editors, illustrators and continuators are left out unless nobody else is credited."""
    return _author_keys(tuple(authors))


def group_editions(books: Iterable[Book]) -> dict[str, str]:
    """One key per book id, shared by all editions of a work: books are joined when they share
    a ``work_id``; an ISBN; a title key and any author (see :func:`author_keys`); when one has
    no subtitle and the other has the only subtitle found with that main title and author; or
    when one has no authors and the other is the only work with that title. Books with
    different ``work_id`` values are never joined.

    The key of a group is the smallest :attr:`Book.work_key` of its members that have a
    ``work_id`` (else of all its members), so a book alone keeps its own work key."""
    items = list(books)
    groups = _Groups([b.work_id for b in items])
    by_work: dict[str, int] = {}
    by_isbn: dict[str, int] = {}
    by_title_author: dict[tuple[str, str], int] = {}
    subtitled: dict[tuple[str, str], set[str]] = {}
    parts = [_title_parts(b.title) for b in items]
    names = [_author_keys(b.authors) for b in items]
    for i, book in enumerate(items):
        found = groups.work_ids[i]
        if found is not None:
            groups.union(i, by_work.setdefault(found, i))
        for isbn in book.isbns:
            groups.union(i, by_isbn.setdefault(isbn, i))
    for i in range(len(items)):
        full, main = parts[i]
        for name in names[i] or ("",):
            groups.union(i, by_title_author.setdefault((full, name), i))
            if name and full != main:
                subtitled.setdefault((main, name), set()).add(full)
    for i in range(len(items)):
        full, main = parts[i]
        if full != main:
            continue
        for name in names[i]:
            variants = subtitled.get((full, name), set())
            if len(variants) == 1:
                groups.union(i, by_title_author[(next(iter(variants)), name)])
    authored: dict[str, set[int]] = {}
    for i in range(len(items)):
        if names[i]:
            authored.setdefault(parts[i][0], set()).add(i)
    for i in range(len(items)):
        if not names[i]:
            roots = {groups.find(j) for j in authored.get(parts[i][0], ())}
            if len(roots) == 1:
                groups.union(i, roots.pop())
    best: dict[int, tuple[bool, str]] = {}
    for i, book in enumerate(items):
        root = groups.find(i)
        candidate = (groups.work_ids[i] is None, book.work_key)
        if root not in best or candidate < best[root]:
            best[root] = candidate
    return {book.id: best[groups.find(i)][1] for i, book in enumerate(items)}


class _Groups:
    """Union-find over book positions that never joins two different ``work_id`` values."""

    def __init__(self, work_ids: list[str | None]) -> None:
        self.work_ids = work_ids
        self.parent = list(range(len(work_ids)))
        self.root_work = list(work_ids)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a == b:
            return
        wa, wb = self.root_work[a], self.root_work[b]
        if wa is not None and wb is not None and wa != wb:
            return
        self.parent[b] = a
        self.root_work[a] = wa if wa is not None else wb


_WORK_ID_PREFIX = "work_id\x1f"  # never a title key: normalising turns "_" into a space


def _work_id(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text or None


# -- text folding ---------------------------------------------------------------------------

_CJK = "\u2e80-\u2fff\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_SPACE = re.compile(rf"(?<=[{_CJK}\U00020000-\U0003ffff]) | (?=[{_CJK}\U00020000-\U0003ffff])")


#: The traditional-to-simplified table, plus simplified variants that name one character
#: (钱锺书 = 钱钟书 = 錢鍾書).
_FOLD_TABLE = {**TRADITIONAL_TO_SIMPLIFIED, ord("锺"): "钟"}


def _fold(text: str) -> str:
    """NFKC with traditional Chinese characters made simplified."""
    return unicodedata.normalize("NFKC", text).translate(_FOLD_TABLE)


def _key(text: str) -> str:
    """:func:`normalize_name` without Latin diacritics or spaces next to CJK characters."""
    decomposed = unicodedata.normalize("NFD", text)
    kept: list[str] = []
    for ch in decomposed:
        if unicodedata.combining(ch) and kept and kept[-1] < "\u0250":
            continue  # an accent on a Latin letter: García = Garcia
        kept.append(ch)
    return _CJK_SPACE.sub("", normalize_name(unicodedata.normalize("NFC", "".join(kept))))


def _letters(text: str) -> int:
    """How many letters or digits ``text`` has (what survives :func:`_key`)."""
    return sum(ch.isalnum() for ch in text)


# -- titles ---------------------------------------------------------------------------------

_OPEN = "([【〔〖"
_CLOSE = ")]】〕〗"
_BRACKETED = re.compile(
    rf"[{re.escape(_OPEN)}]([^{re.escape(_OPEN + _CLOSE)}]*)[{re.escape(_CLOSE)}]"
)
_UNCLOSED = re.compile(rf"[{re.escape(_OPEN)}][^{re.escape(_CLOSE)}]*$")
_QUOTES = re.compile(r"[《》〈〉「」『』“”‘’\"]")

_NUMERAL = (
    r"(?:[\d一二三四五六七八九十百零〇两壹贰叁肆伍陆柒捌玖拾]+"
    r"|(?=[ivxlc])c{0,3}(?:x[cl]|l?x{0,3})(?:i[xv]|v?i{0,3}))"
)
_VOLUME = re.compile(
    rf"(?:第\s*)?{_NUMERAL}\s*[卷册部辑集本篇季期]?|[卷册部]\s*{_NUMERAL}|[上中下]\s*[册卷部篇集]?"
    rf"|(?:vol(?:ume)?|book|part|tome|no|#)\.?\s*{_NUMERAL}(?:\.\d+)?",
    re.IGNORECASE,
)

_ZH_WORDS = (
    "周年纪念|纪念|典藏|珍藏|收藏|修订|增订|增补|插图|插画|彩图|彩插|彩绘|图文|注音|全译|新译|精装|平装|"
    "精选|完整|全新|口袋|礼盒|限量|特装|签名|普及|学生|青少年|青少|少儿|儿童|中英双语|英汉双语|双语|"
    "英汉对照|中英对照|汉英对照|英文|中文|简体|繁体|校注|评注|注释|注评|汇校|脂评|评点|批注|影印|"
    "全|足|新|最新|豪华|经典|权威|无删节|未删节|名家|名师|译注|详注|精注|精编|全注|全解|特别|升级"
)
_ZH_NUM = r"[\d一二三四五六七八九十百两]+"
_ZH_EDITION = (
    rf"(?:{_ZH_NUM}周年)?(?:{_ZH_WORDS})*第?{_ZH_NUM}版(?:{_ZH_WORDS})*[版本]?"
    rf"|(?:{_ZH_NUM}周年)?(?:{_ZH_WORDS})+[版本]|精装|平装|套装|盒装|全{_ZH_NUM}册|全{_ZH_NUM}[卷本]"
    rf"|共{_ZH_NUM}册|套装共{_ZH_NUM}册|上下册|上中下册|上下|上中下|{_ZH_NUM}册全|全集版"
)
_EN_MODIFIER = (
    r"\d+(?:st|nd|rd|th)|\d{4}|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|"
    r"new|revised|updated|expanded|enlarged|anniversary|deluxe|special|collector'?s|illustrated|"
    r"annotated|definitive|complete|unabridged|abridged|uncut|restored|authori[sz]ed|"
    r"international|american|british|us|uk|paperback|hardcover|hardback|mass[- ]market|movie|"
    r"film|tv|media|tie[- ]in|gift|library|school|student|classics?|centennial|centenary|"
    r"jubilee|limited|signed|export|trade|large[- ]print|kindle|reissued?|reprint|standard|"
    r"original|author'?s|preferred|text|critical|norton|penguin|oxford|everyman'?s|and|&"
)
_EN_EDITION = (
    rf"(?:the\s+|an?\s+)?(?:(?:{_EN_MODIFIER})[\s,-]*)*(?:edition|printing)"
    rf"|(?:(?:{_EN_MODIFIER})[\s,-]+)+ed\.?"
    r"|an?\s+novel|illustrated|unabridged|abridged|annotated|paperback|hardcover|deluxe|"
    r"large print"
)
_EDITION = re.compile(rf"(?:{_ZH_EDITION}|{_EN_EDITION})", re.IGNORECASE)
_EDITION_TAIL = re.compile(
    rf"(?:\s*(?:{_ZH_EDITION})|[\s,.;:/-]+(?:{_EN_EDITION}))\s*$", re.IGNORECASE
)
_TAIL_HINT = re.compile(
    r"(?:[版本装册下]|edition|printing|ed\.?|novel|illustrated|abridged|annotated|paperback|"
    r"hardcover|deluxe|large print)\s*$",
    re.IGNORECASE,
)
_NOTE_TAIL = re.compile(
    r"[\s,;:.-]+(?:translated|edited|illustrated|introduced|adapted|retold|abridged|"
    r"with an introduction|introduction|with a foreword|foreword)\s+by\b.*$"
    r"|\s*[,;:]\s*or\b[,:]?\s+.*$",
    re.IGNORECASE,
)
_GENERIC_SUBTITLE = re.compile(r"novel|a novel|小说|长篇小说|中篇小说", re.IGNORECASE)
_SUBTITLE = re.compile(r"\s*(?::|\s[-–—]+\s|——|—|--)\s*")


#: What of a title or of one author entry the keys read: real ones are far shorter, and some
#: patterns here take time growing with the square of the length on hostile text.
_MAX_TITLE_CHARS = 500
_MAX_NAME_CHARS = 300
_MAX_NAMES = 32
#: How far from the end an edition marker is looked for.
_TAIL_CHARS = 120


@lru_cache(maxsize=1 << 16)
def _title_parts(title: str) -> tuple[str, str]:
    """``(title key, main title key)``: the second without a kept subtitle (equal when none)."""
    title = title[:_MAX_TITLE_CHARS]
    text = _fold(title)
    notes_gone = _drop_notes(text)
    if _letters(notes_gone):
        text = notes_gone
    text = _QUOTES.sub(" ", text)
    text = _NOTE_TAIL.sub("", text) or text
    split = _SUBTITLE.search(text)
    main, sub = text, ""
    if split is not None and split.start() > 0 and _letters(text[: split.start()]):
        main, sub = text[: split.start()], text[split.end() :]
    main = _drop_edition_tail(main)
    if _EDITION.fullmatch(sub.strip()) or _GENERIC_SUBTITLE.fullmatch(sub.strip()):
        sub = ""
    sub = _drop_edition_tail(sub)
    main_key = _key(main) or _key(text) or normalize_name(title)
    sub_key = _key(sub)
    return (f"{main_key} {sub_key}" if sub_key else main_key), main_key


def _drop_notes(text: str) -> str:
    """``text`` without bracketed notes, keeping the ones that number a volume."""

    def note(match: re.Match[str]) -> str:
        inner = match.group(1).strip()
        if not _VOLUME.fullmatch(inner):
            return " "
        return f" {inner[0]} " if inner[0] in "上中下" else f" {inner} "  # (下册) = (下)

    while True:
        stripped = _BRACKETED.sub(note, text)
        if stripped == text:
            break
        text = stripped
    head = _UNCLOSED.sub(" ", text)
    return head if _letters(head) else text


def _drop_edition_tail(text: str) -> str:
    if not _TAIL_HINT.search(text):
        return text  # the full pattern is slow to search: most titles end otherwise
    while True:
        found = _EDITION_TAIL.search(text, max(0, len(text) - _TAIL_CHARS))
        if found is None or not _letters(text[: found.start()]):
            return text
        text = text[: found.start()]


# -- authors --------------------------------------------------------------------------------

_AUTHOR_ROLES = {
    "著",
    "原著",
    "撰",
    "著述",
    "口述",
    "等著",
    "著者",
    "作者",
    "author",
    "goodreads author",
    "writer",
}
_ZH_AUTHOR_SUFFIX = re.compile(r"\s*(?:原著|编著|等著|著述|口述|撰写|撰文|著|撰)$")
_ZH_OTHER_SUFFIX = re.compile(
    r"\s*(?:译者|翻译|合译|编译|译注|译述|主编|副主编|编者|编选|选编|编辑|编绘|改编|改写|缩写|整理|"
    r"校注|校订|校点|点校|注释|评注|评点|批注|续作|续书|绘图|绘画|插图|插画|导读|审校|审定|摄影|配图|"
    r"朗读|译|编|续|绘)$"
    r"|\s+(?:注|评|校|序|图|画|选)$"
)
_ZH_PREFIX = re.compile(
    r"^(?:(作者|著者|原著)|(译者|翻译|主编|编者|绘者|绘图|插图|编|译|绘))\s*:\s*"
)
_EN_BY = re.compile(
    r"\b(?:translated|edited|illustrated|introduced|compiled|adapted|retold|narrated|selected|"
    r"annotated|abridged|read|with an introduction|introduction|with a foreword|foreword|"
    r"afterword|preface|notes)\s+by\b",
    re.IGNORECASE,
)
_EN_ROLE_WORD = re.compile(
    r"(?:translator|translators|translation|trans|tr|transl|editor|editors|ed|eds|edited|"
    r"illustrator|illustrations|illus|introduction|intro|foreword|afterword|preface|"
    r"contributor|narrator|reader|adapter|adaptation|compiler|commentary|notes|cover art|"
    r"译|译者|翻译|编|编者|主编|编著|校注|注|绘|插图|续|整理|改编)\.?",
    re.IGNORECASE,
)
_EN_ROLE_TAIL = re.compile(
    r",?\s+\(?(?:ed|eds|editor|editors|trans|tr|translator|illus|illustrator)\.?\)?$", re.IGNORECASE
)
_EN_ROLE_HEAD = re.compile(r"^(?:ed|eds|trans|tr|transl|illus)\.\s+", re.IGNORECASE)
_SUFFIX = re.compile(r",?\s+(?:jr|sr|ph\.?\s?d|m\.?\s?d|esq)\.?(?=\s*(?:,|$))", re.IGNORECASE)
_OUTSIDE_BRACKETS = r"(?![^()\[\]【】〔〕]*[)\]】〕])"
_NAME_SEPARATORS = re.compile(
    rf"\s*(?:[/;|、&]|\s(?:and|with)\s){_OUTSIDE_BRACKETS}\s*", re.IGNORECASE
)
_COMMA = re.compile(rf",{_OUTSIDE_BRACKETS}")
_INITIAL = re.compile(r"(?:[A-Za-z]\.){1,4}|[A-Za-z]")
_LATIN = re.compile(r"[A-Za-z]")


@lru_cache(maxsize=1 << 16)
def _author_keys(authors: tuple[str, ...]) -> tuple[str, ...]:
    primary: dict[str, None] = {}
    others: dict[str, None] = {}
    for entry in authors[:_MAX_NAMES]:
        for name, is_author in _credits(entry[:_MAX_NAME_CHARS]):
            key = _key(name)
            if key:
                (primary if is_author else others).setdefault(key)
    return tuple(primary or others)


def _credits(entry: str) -> list[tuple[str, bool]]:
    """The names of one authors entry, each with whether it is credited as an author."""
    text = _SUFFIX.sub("", _fold(entry))
    out: list[tuple[str, bool]] = []
    for chunk_index, chunk in enumerate(_EN_BY.split(text)):
        for piece in _NAME_SEPARATORS.split(chunk):
            for name, role in _split_commas(piece):
                is_author = chunk_index == 0 if role is None else role
                out.append((name, is_author))
    return out


def _split_commas(piece: str) -> list[tuple[str, bool | None]]:
    """Names in one piece: "Tolkien, J. R. R." is one name put in order, "A B, C D" two."""
    parts = [p.strip() for p in _COMMA.split(piece) if p.strip()]
    if len(parts) == 2:
        first, first_role = _one_name(parts[0])
        second, second_role = _one_name(parts[1])
        if first_role is None and second_role is None and _inverted(first, second):
            return [(f"{second} {first}", None)]
        return [(first, first_role), (second, second_role)]
    return [_one_name(p) for p in parts]


def _inverted(surname: str, given: str) -> bool:
    if not (_LATIN.search(surname) and _LATIN.search(given)) or _CJK_SPACE.search(surname + given):
        return False
    surnames, givens = surname.split(), given.split()
    return len(surnames) == 1 or len(givens) == 1 or any(_INITIAL.fullmatch(t) for t in givens)


def _one_name(piece: str) -> tuple[str, bool | None]:
    """One credited name without its markers, and its role: True an author, False another
    role, None not said."""
    role: bool | None = None

    def note(match: re.Match[str]) -> str:
        nonlocal role
        inner = match.group(1).strip().casefold()
        if inner in _AUTHOR_ROLES:
            role = True if role is None else role
        elif any(_EN_ROLE_WORD.fullmatch(w.strip()) for w in re.split(r"[,/&]| and ", inner)):
            role = False
        return " "

    text = piece.strip()
    while True:
        stripped = _BRACKETED.sub(note, text)
        if stripped == text:
            break
        text = stripped
    text = text.strip()
    head = _ZH_PREFIX.match(text)
    if head is not None:
        role = head.group(1) is not None if role is None else role
        text = text[head.end() :]
    for pattern, is_author in ((_EN_ROLE_TAIL, False), (_EN_ROLE_HEAD, False)):
        stripped = pattern.sub("", text)
        if stripped != text and stripped.strip():
            text, role = stripped, is_author
    for pattern, is_author in ((_ZH_OTHER_SUFFIX, False), (_ZH_AUTHOR_SUFFIX, True)):
        match = pattern.search(text)
        if match is not None and _letters(text[: match.start()]) >= 2:
            text = text[: match.start()]
            role = is_author if role is None or not is_author else role
            break
    text = re.sub(r"^(?:by)\s+", "", text.strip(), flags=re.IGNORECASE)
    if text.endswith("等") and _letters(text[:-1]) >= 2:
        text = text[:-1]  # et al.
    return text.strip(), role


_ISBN_PREFIX = re.compile(r"^ISBN(?:-?1[03])?:?", re.IGNORECASE)
_ISBN_NOISE = re.compile(r"[\s\-\u2010-\u2015=\"']")
_ISBN_SEPARATORS = re.compile(r"[,;|]")


def normalize_isbn(text: str) -> str | None:
    """The ISBN-13 digits of ``text`` (an ISBN-10 or ISBN-13, with or without hyphens, spaces,
    an ``ISBN`` prefix or Goodreads' ``="..."`` quoting), or None when it is not a valid ISBN
    (wrong length, not digits, or a wrong check digit).

    >>> normalize_isbn("0-306-40615-2")
    '9780306406157'
    """
    if not isinstance(text, str):
        return None
    bare = _ISBN_NOISE.sub("", unicodedata.normalize("NFKC", text))
    bare = _ISBN_NOISE.sub("", _ISBN_PREFIX.sub("", bare)).upper()
    if not bare.isascii():
        return None
    if len(bare) == 10 and bare[:9].isdigit() and (bare[9].isdigit() or bare[9] == "X"):
        total = sum((10 - i) * int(ch) for i, ch in enumerate(bare[:9]))
        total += 10 if bare[9] == "X" else int(bare[9])
        if total % 11:
            return None
        body = "978" + bare[:9]
        return body + _isbn13_check(body)
    if len(bare) == 13 and bare.isdigit() and bare[:3] in ("978", "979"):
        return bare if _isbn13_check(bare[:12]) == bare[12] else None
    return None


def _isbn13_check(body: str) -> str:
    total = sum(int(ch) * (3 if i % 2 else 1) for i, ch in enumerate(body))
    return str(-total % 10)


def _isbn_texts(value: object) -> list[str]:
    """The ISBN strings of one catalog field: a string (several may be separated by , ; or |),
    a number, or a list of those; anything else (which the catalog loader rejects) none."""
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [str(value).zfill(10)]  # a spreadsheet drops an ISBN-10's leading zeros
    if isinstance(value, str):
        return [part for part in _ISBN_SEPARATORS.split(value) if part.strip()]
    if isinstance(value, list | tuple):
        return [
            text
            for item in value
            if not isinstance(item, list | tuple)
            for text in _isbn_texts(item)
        ]
    return []
