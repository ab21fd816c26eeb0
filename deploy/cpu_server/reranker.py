"""Qwen3-Reranker on the worker thread: Qwen's prompt, then P("yes") at its last position.

The prompt is the model card's (Qwen/Qwen3-Reranker-0.6B, "Transformers usage"): a system turn
saying the answer can only be "yes" or "no", a user turn
``<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {document}`` and the assistant turn
opened with an empty think block. The model card tokenizes the fixed head and tail on their own
and the user text without special tokens, then concatenates the ids; so does this worker. The
score is the softmax over the "yes" and "no" logits at the last position, taken from the
final hidden state and those two rows of the output head (the other ~150k logits are never
computed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import RequestError
from .worker import Embedder, Job

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_INSTRUCTION",
    "PROMPT_HEAD",
    "PROMPT_TAIL",
    "RerankJob",
    "RerankWorker",
    "format_pair",
    "rerank_prompt",
]

log = logging.getLogger(__name__)

#: The model card's instruction when a request has none (SGLang renders its template without
#: ``instruct`` when the request's is empty or missing).
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)
#: Everything before the user text: the system turn and the opening of the user turn.
PROMPT_HEAD = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
#: Everything after it: the end of the user turn, the assistant turn with an empty think block.
PROMPT_TAIL = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
_PAIR = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
#: Characters of the user text that are neither instruction, query nor document.
PAIR_OVERHEAD = len(_PAIR.format(instruction="", query="", document=""))
YES, NO = "yes", "no"


def format_pair(instruction: str, query: str, document: str) -> str:
    """The user text of one prompt (the model card's ``format_instruction``)."""
    return _PAIR.format(instruction=instruction, query=query, document=document)


def rerank_prompt(instruction: str, query: str, document: str) -> str:
    """The whole prompt as text (what SGLang renders from a Qwen3 reranker chat template)."""
    return PROMPT_HEAD + format_pair(instruction, query, document) + PROMPT_TAIL


@dataclass
class RerankJob(Job):
    """One ``/v1/rerank`` request: ``texts`` are its documents (cut at the character cap)."""

    query: str = ""
    instruction: str = DEFAULT_INSTRUCTION


def label_id(tokenizer: Any, word: str) -> int:
    """The id of ``word`` as one token, or ValueError: the tokenizer is not a Qwen3-Reranker's."""
    token_id = tokenizer.convert_tokens_to_ids(word)
    unk = getattr(tokenizer, "unk_token_id", None)
    if not isinstance(token_id, int) or (unk is not None and token_id == unk):
        raise ValueError(
            f"the tokenizer has no {word!r} token: a Qwen3-Reranker scores with the 'yes' and "
            "'no' tokens (is this a reranker checkpoint?)"
        )
    return token_id


class RerankWorker(Embedder):
    """The model thread of a reranker: the same queue, batching, limits and statistics as
    :class:`Embedder`; each sequence's output is its P("yes") instead of a vector.

    ``model`` is a causal LM (``Qwen3ForCausalLM``); only its backbone runs, then the "yes" and
    "no" rows of its output head at the last position. Raises ValueError when the tokenizer
    has no "yes" or "no" token or the model no output head.
    """

    def __init__(self, model: Any, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.output_width = 1
        self.input_noun = "Document"
        self.append_eot = False  # the prompt ends with the think block, nothing after it
        self.yes_id = label_id(tokenizer, YES)
        self.no_id = label_id(tokenizer, NO)
        head = model.get_output_embeddings()
        if head is None:
            raise ValueError(
                "the model has no output head (load a Qwen3ForCausalLM checkpoint, not an "
                "embedding model)"
            )
        torch = self.torch
        rows = torch.tensor([self.yes_id, self.no_id], dtype=torch.long)
        self.label_weight = head.weight.detach()[rows].clone()
        bias = getattr(head, "bias", None)
        self.label_bias = None if bias is None else bias.detach()[rows].clone()
        self.backbone = model.base_model
        with self.tokenizer_lock:
            self.head_ids = list(tokenizer(PROMPT_HEAD, add_special_tokens=False)["input_ids"])
            self.tail_ids = list(tokenizer(PROMPT_TAIL, add_special_tokens=False)["input_ids"])
        # Characters of a user text the cap leaves: the head and tail are fixed token ids.
        room = max(1, self.context_length - len(self.head_ids) - len(self.tail_ids))
        self.max_chars = self.chars_per_token * room
        self.cap_basis = (
            f"the {room} tokens of the context length ({self.context_length}) that the "
            "prompt's fixed head and tail leave"
        )

    def _check_end_of_text(self) -> tuple[int | None, bool]:
        # Embeddings end with <|endoftext|>; a reranker's prompt does not (it is tokenized
        # without special tokens): what the tokenizer does is only reported, never warned of.
        return self._find_end_of_text()

    # -- called from the event loop ------------------------------------------------------------
    def pair_lengths(self, query: str, instruction: str, documents: list[str]) -> list[int]:
        """Characters of each document's user text (query and instruction included)."""
        fixed = PAIR_OVERHEAD + len(query) + len(instruction)
        return [fixed + len(doc) for doc in documents]

    def job(
        self,
        query: str,
        documents: list[str],
        instruction: str,
        *,
        max_total_chars: int,
    ) -> RerankJob:
        """A job for these texts, refused (400) when its prompts would tokenize more than
        ``max_total_chars`` characters in all: each document repeats the query and instruction.

        Query, instruction and documents are cut at the character cap first (cheap slices); the
        user texts longer than the cap are cut there on the worker and then refused, as
        embedding inputs are.
        """
        cap = self.max_chars
        lengths = self.pair_lengths(query, instruction, documents)
        total = sum(min(n, cap) for n in lengths)
        if total > max_total_chars:
            raise RequestError(
                f"The rerank prompts come to {total} characters ({len(documents)} documents, "
                f"each with the query and the instruction), more than the server's cap of "
                f"{max_total_chars} characters per request. Send fewer documents or a shorter "
                "query."
            )
        long = frozenset(i for i, n in enumerate(lengths) if n > cap)
        docs = [doc[:cap] for doc in documents]
        return RerankJob(
            docs,
            None,
            None,
            query=query[:cap],
            instruction=instruction[:cap],
            cut=long,  # refused on the worker once tokenized (which of two messages)
        )

    # -- worker thread -------------------------------------------------------------------------
    def _token_ids(self, job: Job) -> list[list[int]]:
        if not isinstance(job, RerankJob):  # a health probe's token ids
            return super()._token_ids(job)
        assert job.texts is not None
        cap = self.max_chars
        texts = [format_pair(job.instruction, job.query, doc)[:cap] for doc in job.texts]
        ids = self.tokenize(texts, add_special_tokens=False)
        return [[*self.head_ids, *seq, *self.tail_ids] for seq in ids]

    def _answer(self, job: Job, outputs: torch.Tensor) -> None:
        job.scores = [float(score) for score in outputs[:, 0].tolist()]

    def _forward(self, chunk: list[list[int]]) -> torch.Tensor:
        torch = self.torch
        with torch.inference_mode():
            hidden = self.backbone(**self._inputs(chunk)).last_hidden_state[:, -1, :]
            logits = torch.nn.functional.linear(hidden, self.label_weight, self.label_bias)
            probabilities = torch.softmax(logits.float(), dim=-1)  # columns: yes, no
        # `torch` here is the module held by the worker (typed Any), so is what it returns.
        return probabilities[:, :1]  # type: ignore[no-any-return]
