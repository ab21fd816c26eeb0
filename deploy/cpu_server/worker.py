"""The thread that owns the model, batching concurrent requests into its forward passes."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bookrec.client import SGLANG_INPUT_ERRORS

from .errors import RequestError

if TYPE_CHECKING:  # imported lazily at start-up: the module loads without torch
    import numpy as np
    import torch

__all__ = ["CONTEXT_MARGIN", "END_OF_TEXT", "Embedder", "Job", "Stats"]

log = logging.getLogger(__name__)

END_OF_TEXT = "<|endoftext|>"
# SGLang refuses inputs of context_length - 6 tokens or more (EOS included).
CONTEXT_MARGIN = 6


@dataclass
class Job:
    """One request (or health probe) waiting for the worker thread."""

    texts: list[str] | None
    token_ids: list[list[int]] | None
    dimensions: int | None
    done: threading.Event = field(default_factory=threading.Event)
    vectors: list[np.ndarray] | None = None
    prompt_tokens: int = 0
    error: BaseException | None = None
    counted: bool = True  # health probes stay out of the statistics
    # Indexes of texts the server cut at its character cap (``Embedder.max_chars``).
    cut: frozenset[int] = frozenset()
    # Called on the worker thread once the job is answered (the event loop's wake-up).
    on_done: Callable[[], None] | None = None
    # A reranker's answer: P("yes") of each sequence (``reranker.RerankWorker``).
    scores: list[float] | None = None

    @property
    def ntokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids or ())

    def finish(self) -> None:
        self.done.set()
        if self.on_done is not None:
            self.on_done()


@dataclass
class Stats:
    """What the worker has served, for ``/model_info``."""

    requests: int = 0
    texts: int = 0
    tokens: int = 0
    batches: int = 0
    forward_passes: int = 0
    max_requests_per_batch: int = 0
    max_texts_per_forward: int = 0


class Embedder:
    """Owns the model (used only on its worker thread) and the tokenizer (shared under a lock).

    Embeddings are Qwen3-Embedding's: the tokenizer appends ``<|endoftext|>`` itself (checked
    at start-up; when an old tokenizer does not, its id is appended, never the text), sequences
    are left-padded, the hidden state of the last token is taken and L2-normalised in float32.

    Concurrent requests are batched: the worker thread takes a request from the queue, keeps
    collecting for ``batch_wait`` seconds up to ``max_batch_tokens`` tokens, runs one forward
    pass and answers every request in it. Like SGLang, one bad input fails its whole request.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        context_length: int,
        max_batch_tokens: int,
        batch_wait: float,
        max_queued: int,
        chars_per_token: int = 8,
    ) -> None:
        import torch

        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.max_batch_tokens = max_batch_tokens
        self.batch_wait = batch_wait
        self.chars_per_token = chars_per_token
        # Texts are cut to this many characters before tokenizing: no input that could fit the
        # context is longer, so tokenizing a huge one costs no more than a fitting one.
        self.max_chars = chars_per_token * context_length
        self.hidden_size = int(model.config.hidden_size)
        # Floats per sequence the forward pass gives back: the last hidden state here.
        self.output_width = self.hidden_size
        # What the length errors call one sequence of a request, and what the cap is made of.
        self.input_noun = "Input"
        self.cap_basis = f"the context length, {context_length} tokens"
        self.vocab_size = int(model.config.vocab_size)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.tokenizer_lock = threading.Lock()
        self.eot_id, self.tokenizer_appends_eot = self._check_end_of_text()
        # Append the end-of-text id by hand (an old tokenizer that does not append it itself).
        self.append_eot = not self.tokenizer_appends_eot and self.eot_id is not None
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queued)
        self.stats = Stats()
        self.stats_lock = threading.Lock()
        self.torch = torch
        self.thread = threading.Thread(target=self._run, name="embedder", daemon=True)

    def _find_end_of_text(self) -> tuple[int | None, bool]:
        """Qwen3-Embedding's end-of-text id and whether the tokenizer appends it."""
        tok = self.tokenizer
        eot = tok.convert_tokens_to_ids(END_OF_TEXT) if END_OF_TEXT in tok.get_vocab() else None
        if eot is None:
            eot = tok.eos_token_id
        with_special = tok("a", add_special_tokens=True)["input_ids"]
        plain = tok("a", add_special_tokens=False)["input_ids"]
        appends = eot is not None and len(with_special) > len(plain) and with_special[-1] == eot
        return eot, appends

    def _check_end_of_text(self) -> tuple[int | None, bool]:
        """:meth:`_find_end_of_text`, saying what the embedding inputs get."""
        eot, appends = self._find_end_of_text()
        if appends:
            log.info("tokenizer appends the end-of-text token (id %s) itself", eot)
        elif eot is not None:
            log.warning(
                "this tokenizer does not append %s; appending its id %d to every text input "
                "(update the model's tokenizer files to match SGLang)",
                END_OF_TEXT,
                eot,
            )
        else:
            log.warning("no end-of-text token found: inputs are embedded as tokenized")
        return eot, appends

    # -- called from HTTP threads --------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass

    def alive(self) -> bool:
        return self.thread.is_alive()

    def tokenize(self, texts: list[str], *, add_special_tokens: bool) -> list[list[int]]:
        """Token ids of each text, ending in the end-of-text id when special tokens are on."""
        # One tokenizer object serves the worker and /v1/tokenize: fast tokenizers must not
        # be entered from two threads at once.
        with self.tokenizer_lock:
            ids = self.tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
        if add_special_tokens and self.append_eot and self.eot_id is not None:
            return [[*seq, self.eot_id] for seq in ids]
        return [list(seq) for seq in ids]

    def cut(self, texts: list[str]) -> tuple[list[str], frozenset[int]]:
        """The texts cut to ``max_chars`` characters, with the indexes of those that were."""
        cap = self.max_chars
        cut = frozenset(i for i, text in enumerate(texts) if len(text) > cap)
        if not cut:
            return texts, cut
        return [text[:cap] if i in cut else text for i, text in enumerate(texts)], cut

    def enqueue(self, job: Job) -> None:
        """Queue a job for the worker thread; 503 when the queue is full (never blocks)."""
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise RequestError("The server is overloaded: too many queued requests", 503) from None

    def submit(self, job: Job, timeout: float) -> Job:
        """Queue a job and wait for it on this (non-event-loop) thread."""
        self.enqueue(job)
        if not job.done.wait(timeout):
            raise RequestError(f"The request was not served within {timeout:.0f} s", 503)
        if job.error is not None:
            raise job.error
        return job

    def snapshot(self) -> dict[str, int]:
        with self.stats_lock:
            return dict(vars(self.stats))

    # -- worker thread -------------------------------------------------------------------------
    def _run(self) -> None:
        carry: Job | None = None
        while True:
            job = carry if carry is not None else self.queue.get()
            carry = None
            if job is None:
                return
            batch: list[Job] = []
            tokens = 0
            if self._prepare(job):
                batch.append(job)
                tokens = job.ntokens
            deadline = time.monotonic() + self.batch_wait
            stop = False
            while tokens < self.max_batch_tokens:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    nxt = self.queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if nxt is None:  # shut down once this batch is answered
                    stop = True
                    break
                if not self._prepare(nxt):
                    continue
                if batch and tokens + nxt.ntokens > self.max_batch_tokens:
                    carry = nxt
                    break
                batch.append(nxt)
                tokens += nxt.ntokens
            if batch:
                self._serve(batch)
            if stop:
                return

    def _prepare(self, job: Job) -> bool:
        """Tokenize and validate a job; answer it at once when it is invalid."""
        try:
            job.token_ids = self._token_ids(job)
            for index, seq in enumerate(job.token_ids):
                self._check_length(len(seq))
                if index in job.cut:
                    # The text was longer than the character cap, yet its head fits: it is
                    # refused rather than embedded cut (SGLang does not truncate either).
                    raise RequestError(
                        f"{self.input_noun} at index {index} is longer than the server's cap of "
                        f"{self.max_chars} characters ({self.chars_per_token} per token of "
                        f"{self.cap_basis}). Use a shorter input."
                    )
            job.prompt_tokens = job.ntokens
            return True
        except RequestError as exc:
            job.error = exc
        except Exception as exc:
            log.exception("tokenization failed")
            job.error = RequestError(f"Internal server error: {exc}", 500)
        job.finish()
        return False

    def _token_ids(self, job: Job) -> list[list[int]]:
        """The sequences a job runs through the model: its texts tokenized, or its token ids."""
        if job.texts is not None:
            return self.tokenize(job.texts, add_special_tokens=True)
        assert job.token_ids is not None
        return job.token_ids

    def _check_length(self, n: int) -> None:
        if n >= self.context_length:
            message = SGLANG_INPUT_ERRORS["longer_than_context"]
            raise RequestError(message.format(tokens=n, limit=self.context_length))
        limit = self.context_length - CONTEXT_MARGIN
        if n >= limit:
            # SGLang's wording (SGLANG_INPUT_ERRORS["input_too_long"]) ends by suggesting
            # --allow-auto-truncate, which this server does not have.
            raise RequestError(
                f"Input length ({n} tokens) exceeds the maximum allowed length ({limit} tokens). "
                "Use a shorter input."
            )

    def _serve(self, batch: list[Job]) -> None:
        try:
            sequences = [seq for job in batch for seq in job.token_ids or ()]
            outputs, passes = self._embed(sequences)
            offset = 0
            for job in batch:
                count = len(job.token_ids or ())
                self._answer(job, outputs[offset : offset + count])
                offset += count
        except Exception as exc:
            log.exception("forward pass failed")
            for job in batch:
                job.error = RequestError(f"Internal server error: {exc}", 500)
            passes = 0
        counted = [job for job in batch if job.counted]
        with self.stats_lock:
            stats = self.stats
            stats.batches += 1
            stats.forward_passes += passes
            stats.requests += len(counted)
            stats.texts += sum(len(job.token_ids or ()) for job in counted)
            stats.tokens += sum(job.prompt_tokens for job in counted)
            stats.max_requests_per_batch = max(stats.max_requests_per_batch, len(counted))
        for job in batch:
            job.finish()

    def _answer(self, job: Job, outputs: torch.Tensor) -> None:
        """Put the forward passes' outputs for one job's sequences into the job."""
        job.vectors = self._finish(outputs, job.dimensions)

    def _embed(self, sequences: list[list[int]]) -> tuple[torch.Tensor, int]:
        """``_forward``'s outputs (float32) for every sequence, in order, and the passes run.

        For embeddings, the last-token hidden states (not normalised)."""
        torch = self.torch
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out = torch.empty((len(sequences), self.output_width), dtype=torch.float32)
        passes = 0
        start = 0
        while start < len(order):
            # Group similar lengths so that padding stays small; stay under the token budget.
            end = start + 1
            while end < len(order):
                longest = len(sequences[order[end]])
                if longest * (end + 1 - start) > self.max_batch_tokens:
                    break
                end += 1
            chunk = [sequences[i] for i in order[start:end]]
            out[order[start:end]] = self._forward(chunk)
            passes += 1
            with self.stats_lock:
                self.stats.max_texts_per_forward = max(self.stats.max_texts_per_forward, len(chunk))
            start = end
        return out, passes

    def _inputs(self, chunk: list[list[int]]) -> dict[str, torch.Tensor]:
        """Left-padded ``input_ids``, ``attention_mask`` and ``position_ids`` of a chunk."""
        torch = self.torch
        width = max(len(seq) for seq in chunk)
        input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):  # left padding: the last column is every last token
            input_ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        # Positions count from each sequence's first real token, as SGLang's unpadded batches do.
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions}

    def _forward(self, chunk: list[list[int]]) -> torch.Tensor:
        with self.torch.inference_mode():
            hidden = self.model(**self._inputs(chunk)).last_hidden_state
        # `torch` here is the module held by the worker (typed Any), so is what it returns.
        return hidden[:, -1, :].float()  # type: ignore[no-any-return]

    def _finish(self, pooled: torch.Tensor, dimensions: int | None) -> list[np.ndarray]:
        torch = self.torch
        if dimensions is not None:
            pooled = pooled[:, :dimensions]
        normed = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return list(normed.numpy().astype("<f4", copy=False))
