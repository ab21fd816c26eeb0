// The bookrec page: search, "more like this", a reader profile and its recommendations.
// Plain JavaScript, no build step, nothing fetched but this service's own /v1 API.
// Book data is untrusted: it only ever reaches the page through textContent.
"use strict";

(function () {
  const PROFILE_KEY = "bookrec.profile";
  const API_KEY_KEY = "bookrec.apiKey";
  const SUMMARY_CHARS = 200;
  const K = 10;
  const DEGRADED_TEXT =
    "The embedding service is unavailable: results are matched by keywords.";

  const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
  const el = {
    form: $("search-form"),
    query: $("search-input"),
    language: $("language-filter"),
    banner: $("degraded-banner"),
    resultsHeading: $("results-heading"),
    back: $("back-to-search"),
    resultsError: $("results-error"),
    resultsNote: $("results-note"),
    results: $("results"),
    forYouError: $("for-you-error"),
    forYouNote: $("for-you-note"),
    recommendations: $("recommendations"),
    liked: $("liked-list"),
    disliked: $("disliked-list"),
    clear: $("clear-profile"),
    apiKey: $("api-key"),
    settings: $("settings"),
    template: document.getElementById("card-template"),
  };

  // -- storage (either may be unavailable: private windows, disabled storage) ------------------

  function load(storage, key) {
    try {
      return storage.getItem(key);
    } catch (_) {
      return null;
    }
  }

  function save(storage, key, value) {
    try {
      if (value === null || value === "") storage.removeItem(key);
      else storage.setItem(key, value);
    } catch (_) {
      // Not kept across reloads; the page still works.
    }
  }

  // The profile: liked and disliked books, in the order they were chosen, with their titles.
  function loadProfile() {
    const empty = { liked: [], disliked: [] };
    const raw = load(window.localStorage, PROFILE_KEY);
    if (!raw) return empty;
    try {
      const data = JSON.parse(raw);
      const clean = (list) =>
        Array.isArray(list)
          ? list
              .filter((b) => b && typeof b.id === "string" && b.id)
              .map((b) => ({ id: b.id, title: typeof b.title === "string" ? b.title : b.id }))
          : [];
      return { liked: clean(data.liked), disliked: clean(data.disliked) };
    } catch (_) {
      return empty;
    }
  }

  const state = {
    profile: loadProfile(),
    view: null, // {kind: "search", q} or {kind: "similar", id, title}
    lastSearch: null,
    degraded: { results: false, forYou: false },
    seq: { results: 0, forYou: 0 },
    controllers: { results: null, forYou: null },
  };

  // -- HTTP ---------------------------------------------------------------------------------

  class ApiError extends Error {}

  // The message for a failed response: the problem's detail (RFC 9457), else its title.
  async function problemMessage(response) {
    let problem = null;
    try {
      problem = await response.json();
    } catch (_) {
      problem = null;
    }
    let message = "";
    if (problem && typeof problem === "object") {
      if (typeof problem.detail === "string" && problem.detail) message = problem.detail;
      else if (typeof problem.title === "string" && problem.title) message = problem.title;
      if (Array.isArray(problem.errors)) {
        const fields = problem.errors
          .filter((e) => e && typeof e.message === "string")
          .map((e) => (typeof e.field === "string" ? `${e.field}: ${e.message}` : e.message));
        const extra = fields.filter((f) => !message.includes(f));
        if (extra.length) message = message ? `${message} (${extra.join("; ")})` : extra.join("; ");
      }
    }
    if (!message) message = `The service answered ${response.status} ${response.statusText}`.trim();
    if (!/[.!?。！？)]$/u.test(message)) message += ".";
    if (response.status === 401) {
      message += " Enter an API key under “API key” below.";
      el.settings.open = true;
    }
    if (response.status === 503) {
      const retry = response.headers.get("Retry-After");
      if (retry && /^\d+$/.test(retry)) message += ` Try again in ${retry} s.`;
    }
    return message;
  }

  async function api(section, path, options) {
    if (state.controllers[section]) state.controllers[section].abort();
    const controller = new AbortController();
    state.controllers[section] = controller;
    const headers = { Accept: "application/json" };
    const key = el.apiKey.value.trim();
    if (key) headers.Authorization = `Bearer ${key}`;
    const init = { method: "GET", headers, signal: controller.signal, credentials: "same-origin" };
    if (options && options.body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiError("The service cannot be reached. Is bookrec serve running?");
    }
    if (!response.ok) throw new ApiError(await problemMessage(response));
    try {
      return await response.json();
    } catch (_) {
      throw new ApiError("The service sent a reply that is not JSON.");
    }
  }

  function languageParams(params) {
    const lang = el.language.value;
    if (lang) params.append("language", lang);
    return params;
  }

  // -- rendering ----------------------------------------------------------------------------

  // At most SUMMARY_CHARS characters (code points, so Chinese text is cut cleanly), at a word
  // boundary where there is one near the end.
  function truncate(text, limit) {
    const chars = Array.from(text.trim());
    if (chars.length <= limit) return chars.join("");
    let cut = chars.slice(0, limit).join("");
    const space = cut.lastIndexOf(" ");
    if (space > limit * 0.6) cut = cut.slice(0, space);
    return `${cut.replace(/[\s,.;:!?，。；：！？、]+$/u, "")}…`;
  }

  function formatScore(score) {
    return typeof score === "number" && Number.isFinite(score) ? `score ${score.toFixed(2)}` : "";
  }

  function asText(value) {
    if (value === null || value === undefined) return "";
    return String(value);
  }

  function profileIndex(list, id) {
    return list.findIndex((b) => b.id === id);
  }

  function makeCard(book) {
    const node = el.template.content.firstElementChild.cloneNode(true);
    const id = asText(book.id);
    const title = asText(book.title) || id;
    node.dataset.bookId = id;
    if (typeof book.language === "string" && /^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$/.test(book.language)) {
      node.setAttribute("lang", book.language);
    }
    const field = (name) => node.querySelector(`[data-testid="${name}"]`);
    field("book-title").textContent = title;
    const authors = Array.isArray(book.authors) ? book.authors.map(asText).join(", ") : asText(book.authors);
    field("book-authors").textContent = authors;
    field("book-year").textContent = asText(book.year);
    if (!authors || !asText(book.year)) node.querySelector(".sep").hidden = true;
    const summary = asText(book.summary);
    field("book-summary").textContent = truncate(summary, SUMMARY_CHARS);
    field("book-score").textContent = formatScore(book.score);
    field("book-reason").textContent = asText(book.reason);
    for (const suffix of node.querySelectorAll('[data-role="title-suffix"]')) {
      suffix.textContent = `: ${title}`;
    }
    field("more-like-this").addEventListener("click", () => showSimilar(id, title));
    field("like-button").addEventListener("click", () => toggle("liked", id, title));
    field("dislike-button").addEventListener("click", () => toggle("disliked", id, title));
    return node;
  }

  // Every card on the page shows the profile's state of its book.
  function refreshCardStates() {
    for (const card of document.querySelectorAll('[data-testid="book-card"]')) {
      const id = card.dataset.bookId;
      const liked = profileIndex(state.profile.liked, id) >= 0;
      const disliked = profileIndex(state.profile.disliked, id) >= 0;
      card.querySelector('[data-testid="like-button"]').setAttribute("aria-pressed", String(liked));
      card.querySelector('[data-testid="dislike-button"]').setAttribute("aria-pressed", String(disliked));
      card.classList.toggle("is-liked", liked);
      card.classList.toggle("is-disliked", disliked);
    }
  }

  function renderCards(list, results) {
    list.replaceChildren(...results.map(makeCard));
    refreshCardStates();
  }

  function showError(node, message) {
    node.textContent = message || "";
    node.hidden = !message;
  }

  function renderBanner() {
    const degraded = state.degraded.results || state.degraded.forYou;
    const text = degraded ? DEGRADED_TEXT : "";
    if (el.banner.textContent !== text) el.banner.textContent = text;
    el.banner.hidden = !degraded;
  }

  function renderProfile() {
    const chips = (section, list) =>
      list.map((book) => {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "chip";
        button.dataset.testid = `${section}-chip`;
        button.dataset.bookId = book.id;
        button.textContent = book.title;
        const hint = document.createElement("span");
        hint.className = "visually-hidden";
        hint.textContent = section === "liked" ? " (remove from liked)" : " (remove from disliked)";
        const x = document.createElement("span");
        x.setAttribute("aria-hidden", "true");
        x.textContent = " ×";
        button.append(x, hint);
        button.addEventListener("click", () => toggle(section, book.id, book.title));
        return button;
      });
    const none = () => {
      const span = document.createElement("span");
      span.className = "muted";
      span.textContent = "none yet";
      return [span];
    };
    el.liked.replaceChildren(...(state.profile.liked.length ? chips("liked", state.profile.liked) : none()));
    el.disliked.replaceChildren(
      ...(state.profile.disliked.length ? chips("disliked", state.profile.disliked) : none())
    );
    el.clear.hidden = !(state.profile.liked.length || state.profile.disliked.length);
  }

  // -- actions ------------------------------------------------------------------------------

  async function runResults(heading, what, path) {
    const seq = ++state.seq.results;
    el.resultsHeading.textContent = heading;
    showError(el.resultsError, "");
    el.resultsNote.textContent = "Loading…";
    el.resultsNote.hidden = false;
    el.results.setAttribute("aria-busy", "true");
    try {
      const data = await api("results", path);
      if (seq !== state.seq.results) return;
      const results = Array.isArray(data.results) ? data.results : [];
      state.degraded.results = data.degraded === true;
      renderCards(el.results, results);
      el.resultsNote.textContent = results.length
        ? `${results.length} ${results.length === 1 ? "book" : "books"} ${what}`
        : "No books match. Try other words or another language.";
    } catch (err) {
      if (err && err.name === "AbortError") return;
      if (seq !== state.seq.results) return;
      state.degraded.results = false;
      el.results.replaceChildren();
      el.resultsNote.hidden = true;
      showError(el.resultsError, err.message);
    } finally {
      if (seq === state.seq.results) el.results.removeAttribute("aria-busy");
      renderBanner();
    }
  }

  function runSearch(q) {
    state.view = { kind: "search", q };
    state.lastSearch = q;
    el.back.hidden = true;
    const params = languageParams(new URLSearchParams({ q, k: String(K) }));
    return runResults(`Results for “${q}”`, `for “${q}”`, `v1/search?${params}`);
  }

  function showSimilar(id, title) {
    state.view = { kind: "similar", id, title };
    el.back.hidden = state.lastSearch === null;
    const params = languageParams(new URLSearchParams({ k: String(K) }));
    const path = `v1/books/${encodeURIComponent(id)}/similar?${params}`;
    const done = runResults(`More like “${title}”`, `like “${title}”`, path);
    el.resultsHeading.setAttribute("tabindex", "-1");
    el.resultsHeading.focus({ preventScroll: false });
    return done;
  }

  function rerunView() {
    if (!state.view) return;
    if (state.view.kind === "search") runSearch(state.view.q);
    else showSimilar(state.view.id, state.view.title);
  }

  async function refreshRecommendations() {
    const seq = ++state.seq.forYou;
    showError(el.forYouError, "");
    const liked = state.profile.liked.map((b) => b.id);
    const disliked = state.profile.disliked.map((b) => b.id);
    if (!liked.length) {
      if (state.controllers.forYou) state.controllers.forYou.abort();
      state.degraded.forYou = false;
      el.recommendations.replaceChildren();
      el.forYouNote.textContent = disliked.length
        ? "Dislikes alone are not enough: like a book to see recommendations here."
        : "Like a book to see recommendations here.";
      el.forYouNote.hidden = false;
      renderBanner();
      return;
    }
    const body = { liked, disliked, k: K };
    if (el.language.value) body.filters = { language: [el.language.value] };
    el.forYouNote.textContent = "Loading…";
    el.forYouNote.hidden = false;
    el.recommendations.setAttribute("aria-busy", "true");
    try {
      const data = await api("forYou", "v1/recommendations", { body });
      if (seq !== state.seq.forYou) return;
      const results = Array.isArray(data.results) ? data.results : [];
      state.degraded.forYou = data.degraded === true;
      renderCards(el.recommendations, results);
      el.forYouNote.textContent = results.length
        ? `Because you liked ${liked.length} ${liked.length === 1 ? "book" : "books"}`
        : "No recommendations match the filter.";
    } catch (err) {
      if (err && err.name === "AbortError") return;
      if (seq !== state.seq.forYou) return;
      state.degraded.forYou = false;
      el.recommendations.replaceChildren();
      el.forYouNote.hidden = true;
      showError(el.forYouError, err.message);
    } finally {
      if (seq === state.seq.forYou) el.recommendations.removeAttribute("aria-busy");
      renderBanner();
    }
  }

  function profileChanged() {
    save(window.localStorage, PROFILE_KEY, JSON.stringify(state.profile));
    renderProfile();
    refreshCardStates();
    refreshRecommendations();
  }

  // Like (or dislike) a book; a second press takes it back. A book is never in both lists.
  function toggle(section, id, title) {
    const other = section === "liked" ? "disliked" : "liked";
    const list = state.profile[section];
    const at = profileIndex(list, id);
    if (at >= 0) list.splice(at, 1);
    else {
      list.push({ id, title });
      const there = profileIndex(state.profile[other], id);
      if (there >= 0) state.profile[other].splice(there, 1);
    }
    profileChanged();
  }

  // -- wiring -------------------------------------------------------------------------------

  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = el.query.value.trim();
    if (!q) {
      showError(el.resultsError, "Type something to search for.");
      el.query.focus();
      return;
    }
    runSearch(q);
  });

  el.language.addEventListener("change", () => {
    rerunView();
    refreshRecommendations();
  });

  el.back.addEventListener("click", () => {
    if (state.lastSearch !== null) {
      runSearch(state.lastSearch);
      el.query.focus();
    }
  });

  el.clear.addEventListener("click", () => {
    state.profile = { liked: [], disliked: [] };
    profileChanged();
  });

  el.apiKey.value = load(window.sessionStorage, API_KEY_KEY) || "";
  el.apiKey.addEventListener("input", () => {
    save(window.sessionStorage, API_KEY_KEY, el.apiKey.value.trim());
  });
  el.apiKey.addEventListener("change", () => {
    rerunView();
    refreshRecommendations();
  });

  window.addEventListener("storage", (event) => {
    if (event.key === PROFILE_KEY) {
      state.profile = loadProfile();
      renderProfile();
      refreshCardStates();
      refreshRecommendations();
    }
  });

  renderProfile();
  renderBanner();
  if (state.profile.liked.length) refreshRecommendations();
  const initial = new URLSearchParams(window.location.search).get("q");
  if (initial) {
    el.query.value = initial;
    runSearch(initial.trim());
  }
  document.documentElement.dataset.ready = "true";
})();
