"""The web page of ``bookrec serve`` in a real headless Chromium, against the real service.

Debian's ``/usr/bin/chromium`` is driven by Playwright's Python package (never a downloaded
browser); the tests skip when it is missing. The service runs as a process (``bookrec serve``)
over an index built by ``bookrec index`` from the sample catalog, with the fake SGLang server
as its embedding service. Every request the page makes is checked to stay on the service:
the page fetches nothing from the internet.

Screenshots go to ``$BOOKREC_TEST_ARTIFACTS`` (default ``test-artifacts/screenshots/`` in the
repository, which git ignores); their paths are printed at the end of the module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import bookrec.recommender
from bookrec.client.testing import FakeSGLang
from tests.service.conftest import bookrec as bookrec_cli
from tests.service.conftest import clean_env

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SAMPLE = Path(bookrec.recommender.__file__).parent / "data" / "sample_catalog.jsonl"
DIM = 32
K = 10
DEGRADED_TEXT = "The embedding service is unavailable: results are matched by keywords"
STRICT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HOSTILE_TITLE = '<img src=x onerror="window.__pwned=1">Hostile <b>markup</b> & co'
HOSTILE_BOOK: dict[str, Any] = {
    "id": "zz-hostile",
    "title": HOSTILE_TITLE,
    "authors": ["<script>window.__pwned=2</script>Mallory"],
    "summary": "<svg onload=window.__pwned=3></svg> "
    + "A hostile record whose every field is markup, to prove the page treats book data "
    "as text. " * 8,
    "tags": ["hostile", "testing"],
    "language": "en",
    "year": 2024,
}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium "
    "(apt-get install -y chromium); the page tests need a real browser",
)


# -- the service as a process ---------------------------------------------------------------
# tests/service/conftest.py starts services over a synthetic 30-book catalog; the page needs
# real English and Chinese text (and a hostile record), so this module indexes the sample
# catalog itself, with the conftest's environment and command helpers.


@dataclass
class Service:
    """A running ``bookrec serve``: its base URL and everything it printed."""

    proc: subprocess.Popen[str]
    base_url: str = ""
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            match = re.search(r"listening on (http://\S+)", line)
            if match and not self.ready.is_set():
                self.base_url = match.group(1).rstrip("/")
                self.ready.set()
        self.ready.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self.reader is not None:
            self.reader.join(timeout=15)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample catalog plus one hostile record, indexed into idx/ by ``bookrec index``."""
    cwd = tmp_path_factory.mktemp("page")
    books = SAMPLE.read_text(encoding="utf-8").rstrip("\n") + "\n"
    books += json.dumps(HOSTILE_BOOK, ensure_ascii=False) + "\n"
    (cwd / "books.jsonl").write_text(books, encoding="utf-8")
    catalog, index = str(cwd / "books.jsonl"), str(cwd / "idx")
    with FakeSGLang(dim=DIM) as fake:
        env = clean_env(BOOKREC_BASE_URL=fake.base_url)
        proc = bookrec_cli("index", "-c", catalog, "-i", index, "--no-progress", env=env)
    assert proc.returncode == 0, proc.stderr
    return cwd


@pytest.fixture(scope="module")
def start_page_service(workdir: Path) -> Iterator[Callable[..., Service]]:
    """Start ``bookrec serve`` over the index; every service started is stopped at the end."""
    started: list[Service] = []

    def start(base_url: str, extra_env: dict[str, str] | None = None) -> Service:
        env = clean_env(**(extra_env or {}))
        cmd = (
            sys.executable,
            "-m",
            "bookrec.recommender.cli",
            "serve",
            "--index",
            "idx",
            "--catalog",
            "books.jsonl",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--base-url",
            base_url,
        )
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
        )
        service = Service(proc)
        service.reader = threading.Thread(target=service.read, daemon=True)
        service.reader.start()
        started.append(service)
        if not service.ready.wait(timeout=60) or not service.base_url:
            service.stop()
            pytest.fail(f"bookrec serve did not get ready:\n{service.output()}")
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(service.base_url + "/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"bookrec serve does not answer /healthz:\n{service.output()}")
            time.sleep(0.1)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="module")
def page_embedding() -> Iterator[FakeSGLang]:
    with FakeSGLang(dim=DIM) as fake:
        yield fake


@pytest.fixture(scope="module")
def page_service(start_page_service: Callable[..., Service], page_embedding: FakeSGLang) -> Service:
    """The service the page tests share: open (no API keys), its embedding service up."""
    return start_page_service(page_embedding.base_url)


# -- the browser ----------------------------------------------------------------------------


def _artifacts_dir() -> Path:
    configured = os.environ.get("BOOKREC_TEST_ARTIFACTS")
    path = Path(configured) if configured else REPO / "test-artifacts" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def screenshots(pytestconfig: pytest.Config) -> Iterator[list[Path]]:
    """Collects the screenshots taken; their paths are printed when the module is done."""
    taken: list[Path] = []
    yield taken
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not taken:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for path in taken:
            reporter.write_line(f"page screenshot: {path}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Page:
    """A fresh browser context on one service, with every request recorded and checked."""

    def __init__(self, browser: Any, base_url: str, shots: list[Path], **context: Any) -> None:
        self.base_url = base_url
        self.shots = shots
        self.context = browser.new_context(
            **({"viewport": {"width": 1280, "height": 900}} | context)
        )
        self.context.set_default_timeout(15_000)
        self.requests: list[Any] = []
        self.foreign: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", self._console)
        self.page.on("request", lambda request: self.requests.append(request))

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url == self.base_url + "/":
            # The page must work under a strict Content-Security-Policy (no inline script or
            # style, nothing from elsewhere); add one where the service sends none.
            response = route.fetch()
            headers = dict(response.headers)
            headers.setdefault("content-security-policy", STRICT_CSP)
            route.fulfill(response=response, headers=headers)
        elif url.startswith(self.base_url + "/"):
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.errors.append(message.text)

    def open(self, path: str = "/") -> None:
        self.page.goto(self.base_url + path)
        playwright_api.expect(self.page.locator("html")).to_have_attribute("data-ready", "true")

    def by(self, testid: str) -> Any:
        return self.page.get_by_test_id(testid)

    def cards(self, testid: str = "results") -> Any:
        return self.by(testid).get_by_test_id("book-card")

    def card_ids(self, testid: str = "results") -> list[str]:
        ids: list[str] = self.cards(testid).evaluate_all("cs => cs.map(c => c.dataset.bookId)")
        return ids

    def search(self, text: str) -> None:
        self.by("search-input").fill(text)
        self.by("search-button").click()
        self.wait_loaded("results")

    def wait_loaded(self, testid: str) -> None:
        playwright_api.expect(self.by(testid)).not_to_have_attribute("aria-busy", "true")

    def api_requests(self, path: str) -> list[Any]:
        return [r for r in self.requests if r.url.startswith(self.base_url + path)]

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        path = _artifacts_dir() / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        self.shots.append(path)
        return path

    def close(self) -> None:
        pwned = self.page.evaluate("() => window.__pwned === undefined")
        self.context.close()
        assert not self.foreign, f"the page fetched from outside the service: {self.foreign}"
        assert not self.errors, f"uncaught errors in the page: {self.errors}"
        assert pwned, "book data ran as script"


@pytest.fixture
def open_page(browser: Any, screenshots: list[Path]) -> Iterator[Callable[..., Page]]:
    pages: list[Page] = []

    def factory(service: Service, **context: Any) -> Page:
        page = Page(browser, service.base_url, screenshots, **context)
        pages.append(page)
        return page

    yield factory
    for page in pages:
        page.close()


def _api(service: Service, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, service.base_url + path, timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(envelope: Any) -> list[str]:
    return [r["id"] for r in envelope["results"]]


expect = playwright_api.expect
# A search that degrades waits for the embedding request to fail first: give it room.
expect.set_options(timeout=20_000)


# -- scenarios ------------------------------------------------------------------------------


def test_search_shows_cards_as_the_api_ranks_them(page_service: Service, open_page: Any) -> None:
    page = open_page(page_service)
    page.open()
    expect(page.by("degraded-banner")).to_be_hidden()
    page.search("a sharp-witted heroine and a proud suitor")
    expect(page.by("results-heading")).to_contain_text("a sharp-witted heroine")
    expect(page.cards()).to_have_count(K)
    note = page.by("results-note")  # the live region that announces the results
    expect(note).to_have_text(f"{K} books for “a sharp-witted heroine and a proud suitor”")
    assert note.get_attribute("aria-live") == "polite"
    api = _api(
        page_service, "GET", "/v1/search", params={"q": "a sharp-witted heroine and a proud suitor"}
    )
    assert page.card_ids() == _ids(api)
    first, result = page.cards().first, api["results"][0]
    expect(first.get_by_test_id("book-title")).to_have_text(result["title"])
    expect(first.get_by_test_id("book-authors")).to_have_text(", ".join(result["authors"]))
    expect(first.get_by_test_id("book-year")).to_have_text(str(result["year"]))
    expect(first.get_by_test_id("book-score")).to_have_text(f"score {result['score']:.2f}")
    expect(first.get_by_test_id("book-reason")).to_have_text(result["reason"])
    summaries = page.cards().get_by_test_id("book-summary").all_inner_texts()
    assert all(0 < len(s) <= 201 for s in summaries), summaries
    for card, res in zip(page.cards().all(), api["results"], strict=True):
        if len(res["summary"]) > 201:
            expect(card.get_by_test_id("book-summary")).to_have_text(re.compile("…$"))
    expect(page.by("degraded-banner")).to_be_hidden()
    page.screenshot("search-en")

    # Chinese text, with the language filter passed as language=zh.
    page.by("language-filter").select_option("zh")
    page.search("武侠江湖")
    expect(page.cards().first).to_be_visible()
    langs = page.cards().evaluate_all("cs => cs.map(c => c.getAttribute('lang'))")
    assert langs and set(langs) == {"zh"}, langs
    last = page.api_requests("/v1/search")[-1].url
    assert "language=zh" in last, last
    page.screenshot("search-zh")


def test_more_like_this(page_service: Service, open_page: Any) -> None:
    page = open_page(page_service)
    page.open()
    page.search("a voyage across the sea")
    first = page.cards().first
    book_id = first.get_attribute("data-book-id")
    title = first.get_by_test_id("book-title").inner_text()
    first.get_by_test_id("more-like-this").click()
    expect(page.by("results-heading")).to_have_text(f"More like “{title}”")
    page.wait_loaded("results")
    expect(page.cards()).to_have_count(K)
    api = _api(page_service, "GET", f"/v1/books/{book_id}/similar")
    assert page.card_ids() == _ids(api)
    assert book_id not in page.card_ids()
    page.screenshot("more-like-this")
    page.by("back-to-search").click()
    expect(page.by("results-heading")).to_contain_text("a voyage across the sea")


def test_liking_two_books_changes_the_recommendations(
    page_service: Service, open_page: Any
) -> None:
    page = open_page(page_service)
    page.open()
    expect(page.by("for-you-note")).to_contain_text("Like a book")
    page.search("love and marriage in a small town")
    cards = page.cards()
    one, two = (cards.nth(i).get_attribute("data-book-id") for i in (0, 1))

    cards.nth(0).get_by_test_id("like-button").click()
    expect(cards.nth(0).get_by_test_id("like-button")).to_have_attribute("aria-pressed", "true")
    expect(page.by("for-you-note")).to_have_text("Because you liked 1 book")
    after_one = page.card_ids("recommendations")
    assert after_one == _ids(
        _api(page_service, "POST", "/v1/recommendations", json={"liked": [one]})
    )

    cards.nth(1).get_by_test_id("like-button").click()
    expect(page.by("for-you-note")).to_have_text("Because you liked 2 books")
    page.wait_loaded("recommendations")
    after_two = page.card_ids("recommendations")
    both = _api(page_service, "POST", "/v1/recommendations", json={"liked": [one, two]})
    assert after_two == _ids(both)
    assert after_two != after_one
    assert one not in after_two and two not in after_two
    bodies = [json.loads(r.post_data) for r in page.api_requests("/v1/recommendations")]
    assert bodies[-1]["liked"] == [one, two], bodies
    expect(page.by("liked-list").get_by_test_id("liked-chip")).to_have_count(2)
    page.screenshot("for-you-two-likes")

    # The language filter applies to the recommendations too.
    page.by("language-filter").select_option("en")
    page.wait_loaded("recommendations")
    body = json.loads(page.api_requests("/v1/recommendations")[-1].post_data)
    assert body["filters"] == {"language": ["en"]}, body
    langs = page.cards("recommendations").evaluate_all("cs => cs.map(c => c.lang)")
    assert langs and set(langs) == {"en"}, langs
    page.by("language-filter").select_option("")
    page.wait_loaded("recommendations")

    # The profile is kept in localStorage: a reload shows the same recommendations.
    page.page.reload()
    expect(page.by("liked-list").get_by_test_id("liked-chip")).to_have_count(2)
    expect(page.cards("recommendations")).to_have_count(len(after_two))
    assert page.card_ids("recommendations") == after_two

    # Disliking a liked book moves it; the recommendations follow.
    page.cards("recommendations").first.get_by_test_id("dislike-button").click()
    expect(page.by("disliked-list").get_by_test_id("disliked-chip")).to_have_count(1)
    page.wait_loaded("recommendations")
    body = json.loads(page.api_requests("/v1/recommendations")[-1].post_data)
    assert body["liked"] == [one, two] and len(body["disliked"]) == 1, body


def test_degraded_banner_when_the_embedding_server_stops(
    start_page_service: Callable[..., Service], open_page: Any
) -> None:
    fake = FakeSGLang(dim=DIM).start()
    try:
        service = start_page_service(fake.base_url)
        page = open_page(service)
        page.open()
        page.search("a detective in a foggy city")
        expect(page.cards()).to_have_count(K)
        expect(page.by("degraded-banner")).to_be_hidden()
    finally:
        fake.stop()
    started = time.monotonic()
    page.search("Hostile markup")
    degraded_after = time.monotonic() - started
    expect(page.by("degraded-banner")).to_be_visible()
    expect(page.by("degraded-banner")).to_contain_text(DEGRADED_TEXT)
    live = page.by("status-region")
    assert live.get_attribute("aria-live") == "polite"
    expect(page.cards().first).to_be_visible()
    page.screenshot("degraded-banner")
    assert degraded_after < 15, f"a degraded search took {degraded_after:.1f} s"

    # The hostile record is found by keywords; its markup is shown as text, never parsed.
    hostile = page.cards().filter(has=page.page.get_by_text("Hostile", exact=False)).first
    expect(hostile.get_by_test_id("book-title")).to_have_text(HOSTILE_TITLE)
    expect(hostile.get_by_test_id("book-authors")).to_contain_text("<script>")
    assert page.by("results").locator("img, script, svg, b").count() == 0

    # "More like this" needs no embedding call: it works, and the banner goes.
    hostile.get_by_test_id("more-like-this").click()
    page.wait_loaded("results")
    expect(page.by("results-heading")).to_contain_text("More like")
    expect(page.cards()).to_have_count(K)
    expect(page.by("degraded-banner")).to_be_hidden()


def test_phone_viewport_shows_one_column(page_service: Service, open_page: Any) -> None:
    page = open_page(
        page_service, viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True
    )
    page.open()
    page.search("science fiction on a distant planet")
    expect(page.cards()).to_have_count(K)
    boxes = [card.bounding_box() for card in page.cards().all()]
    assert len({round(b["x"]) for b in boxes}) == 1, boxes
    assert all(b["width"] > 300 for b in boxes), boxes
    tops = [b["y"] for b in boxes]
    assert tops == sorted(tops) and len(set(tops)) == len(tops), tops
    width = page.page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways on a phone: {width}px"
    page.cards().first.get_by_test_id("like-button").click()
    expect(page.cards("recommendations").first).to_be_visible()
    # Below the results, in the same column (both measured in the same scroll position).
    last, for_you = page.cards().last.bounding_box(), page.by("for-you").bounding_box()
    assert for_you["y"] > last["y"] + last["height"], (for_you, last)
    assert round(for_you["x"]) <= round(last["x"]) < round(for_you["x"] + for_you["width"])
    page.page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot("phone-375x740", full_page=False)


def _focused(page: Page) -> str | None:
    testid: str | None = page.page.evaluate(
        "() => document.activeElement && document.activeElement.dataset.testid || null"
    )
    return testid


def _tab_to(page: Page, testid: str, limit: int = 12) -> None:
    for _ in range(limit):
        page.page.keyboard.press("Tab")
        if _focused(page) == testid:
            return
    pytest.fail(f"{testid} is not reached with Tab (focus is on {_focused(page)})")


def test_keyboard_only(page_service: Service, open_page: Any) -> None:
    page = open_page(page_service)
    page.open()
    page.page.keyboard.press("Tab")
    assert _focused(page) == "search-input", "the search box is the first stop of Tab"
    outline = page.page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused search box shows no focus ring"
    page.page.keyboard.type("a quiet village, a long winter")
    page.page.keyboard.press("Enter")
    page.wait_loaded("results")
    expect(page.cards()).to_have_count(K)
    expect(page.by("results-heading")).to_contain_text("a quiet village")

    _tab_to(page, "more-like-this")
    outline = page.page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "a focused button shows no focus ring"
    page.page.keyboard.press("Enter")
    expect(page.by("results-heading")).to_contain_text("More like")
    page.wait_loaded("results")
    _tab_to(page, "like-button")
    page.page.keyboard.press("Space")
    expect(page.cards().first.get_by_test_id("like-button")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(page.cards("recommendations").first).to_be_visible()
    page.screenshot("keyboard-only")


def test_api_key_and_problem_details(
    start_page_service: Callable[..., Service], page_embedding: FakeSGLang, open_page: Any
) -> None:
    service = start_page_service(page_embedding.base_url, {"BOOKREC_SERVE_API_KEYS": "reader-key"})
    problem = httpx.get(service.base_url + "/v1/search", params={"q": "x"}, timeout=30)
    assert problem.status_code == 401
    assert problem.headers["content-type"].startswith("application/problem+json")
    page = open_page(service)
    page.open()
    page.search("a ship lost at sea")
    expect(page.by("results-error")).to_be_visible()
    expect(page.by("results-error")).to_contain_text(problem.json()["detail"])
    expect(page.cards()).to_have_count(0)
    page.screenshot("unauthorized")

    expect(page.by("settings")).to_have_attribute("open", "")
    page.by("api-key").fill("reader-key")
    page.by("api-key").press("Tab")
    page.search("a ship lost at sea")
    expect(page.cards()).to_have_count(K)
    expect(page.by("results-error")).to_be_hidden()
    sent = page.api_requests("/v1/search")[-1].headers.get("authorization")
    assert sent == "Bearer reader-key"
    kept = page.page.evaluate("() => sessionStorage.getItem('bookrec.apiKey')")
    assert kept == "reader-key"
    stored = page.page.evaluate("() => JSON.stringify(localStorage)")
    assert "reader-key" not in stored


def test_api_docs_render_with_no_other_origin(page_service: Service, open_page: Any) -> None:
    """/docs (Swagger UI) works offline: its files come from the service, and every request
    to another origin is aborted (``Page`` routes ``**/*``) and fails the test."""
    spec = _api(page_service, "GET", "/openapi.json")
    operations = sum(len(methods) for methods in spec["paths"].values())
    page = open_page(page_service)
    page.page.goto(page.base_url + "/docs")
    ui = page.page.locator("#swagger-ui")
    expect(ui.locator(".info .title")).to_contain_text("bookrec")
    expect(ui.locator(".opblock")).to_have_count(operations)
    similar = ui.locator(".opblock-get").filter(
        has=page.page.locator('.opblock-summary-path[data-path="/v1/books/{id}/similar"]')
    )
    expect(similar).to_be_visible()
    expect(similar.locator(".opblock-summary-path")).to_have_text("/v1/books/{id}/similar")
    expect(ui.get_by_text("Unable to render this definition")).to_have_count(0)
    page.screenshot("api-docs")

    # Try it out: the request goes to the service and its answer is shown.
    similar.locator(".opblock-summary").click()
    similar.locator(".try-out__btn").click()
    similar.locator('.parameters input[placeholder="id"]').fill("en-0001")
    similar.locator(".execute").click()
    answer = similar.locator(".live-responses-table tbody .response")
    expect(answer.locator(".response-col_status")).to_have_text("200")
    expect(answer).to_contain_text('"similar_to": "en-0001"')
    assert page.api_requests("/v1/books/en-0001/similar"), [r.url for r in page.requests]
    loaded = {r.url.removeprefix(page.base_url) for r in page.requests}
    assert {
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/openapi.json",
    } <= loaded, loaded
    answer.scroll_into_view_if_needed()
    page.screenshot("api-docs-try-it-out", full_page=False)
