"""Finding the model (a local directory or a hub id) for loading it through ``transformers``."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["ModelLoadError", "load", "model_source"]

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The model cannot be loaded; the message says what to do."""


def model_source(name: str) -> str:
    """A local directory (expanded) or a hub id; a path that does not exist is an error."""
    local = Path(name).expanduser()
    if local.is_dir():
        return str(local)
    if name.startswith(("/", "./", "../", "~")):
        raise ModelLoadError(f"model directory {name} does not exist")
    return name


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    """Load model and tokenizer; raises ModelLoadError with a clear message when that fails."""
    import torch
    import transformers
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    name = args.model
    source = model_source(name)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    # transformers >= 4.56 calls it `dtype`; older releases only know `torch_dtype`.
    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    dtype_kwarg = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    # A reranker (Qwen3-Reranker) is a causal LM: its output head gives the "yes"/"no" logits.
    reranker = bool(getattr(args, "reranker", False))
    auto = AutoModelForCausalLM if reranker else AutoModel
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=args.revision)
        model = auto.from_pretrained(source, revision=args.revision, **{dtype_kwarg: dtype})
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        where = (
            "HF_HUB_OFFLINE is set, so nothing is downloaded"
            if offline
            else "it could not be downloaded from the Hugging Face Hub"
        )
        raise ModelLoadError(
            f"cannot load model {name!r}: it is not a local directory and {where}.\n"
            f"  Download it where there is network access, e.g. `hf download {name}` (it goes to "
            "the Hugging Face cache, HF_HOME), then start again with that cache, or pass "
            "--model /path/to/a/local/copy.\n"
            f"  ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc})"
        ) from None
    model.eval()
    architectures = getattr(model.config, "architectures", None) or []
    if reranker and not any(name.endswith("ForCausalLM") for name in architectures):
        log.warning(
            "architectures %s: a Qwen3-Reranker checkpoint is a Qwen3ForCausalLM; scores from "
            "another model's output head mean nothing",
            architectures,
        )
    if not reranker and getattr(model.config, "model_type", None) not in ("qwen3", "qwen2"):
        log.warning(
            "model type %r: last-token pooling is what Qwen3-Embedding needs; other embedding "
            "models may need another pooling",
            getattr(model.config, "model_type", None),
        )
    return model, tokenizer
