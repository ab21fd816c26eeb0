"""Fixtures for the serving tests: the launch script as a process, fake GPU tools, a tiny
Qwen3 model built on the spot, and one CPU server shared by the whole session."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookrec.client import DEFAULT_INSTRUCTION

REPO = Path(__file__).resolve().parents[2]
LAUNCH_SH = REPO / "scripts" / "launch_server.sh"
LAUNCH_PY = REPO / "scripts" / "launch_server.py"
CPU_SERVER_MODULE = "bookrec.cpu_server"
VENV_BIN = str(Path(sys.executable).parent)
# PATH for the launched processes: this interpreter, then the base system only, so that an
# `sglang`, `smg` or `nvidia-smi` installed on the machine never leaks into a test.
BASE_PATH = os.pathsep.join([VENV_BIN, "/usr/bin", "/bin"])
API_KEY = "test-key-5f1c"
CONTEXT_LENGTH = 128
EOT = "<|endoftext|>"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(process: subprocess.Popen[bytes], stderr: Path, what: str) -> Iterator[None]:
    """A CPU server process until the block ends: ready first, then it must exit 0 on
    SIGTERM."""
    try:
        wait_until(
            lambda: process.poll() is not None or "ready: " in stderr.read_text(),
            timeout=90,
            what=what,
        )
        assert process.poll() is None, stderr.read_text()
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=40)
    assert code == 0, f"exited with {code} on SIGTERM:\n{stderr.read_text()}"


def free_port_pair() -> int:
    """A free port whose successor is free too (worker ports are base + worker number)."""
    while True:
        base = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
        return base


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without keys or tool paths, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BOOKREC_API_KEY", "SGLANG_API_KEY", "CUDA_VISIBLE_DEVICES")
    }
    env["PATH"] = BASE_PATH
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


def run_launch(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run scripts/launch_server.sh to completion."""
    return subprocess.run(
        [str(LAUNCH_SH), *args],
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --------------------------------------------------------------------------- fake GPU tools

_FAKE_SERVER = '''\
#!{python}
"""Stand-in for `sglang serve` / `smg launch`: records its command and answers probes."""
import json, os, signal, sys, time, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

prog = os.path.basename(sys.argv[0])
argv = sys.argv[1:]
mode = os.environ.get("FAKE_MODE", "ready")
log_path = os.environ["FAKE_LOG"]

def record(event, **extra):
    with open(log_path, "a") as f:
        f.write(json.dumps(dict(prog=prog, event=event, pid=os.getpid(), **extra)) + "\\n")

record("start", argv=argv, cuda=os.environ.get("CUDA_VISIBLE_DEVICES"))
if mode == "crash":
    sys.exit(3)
if prog == "smg":
    # A gateway that finds a worker down at start-up refuses to start.
    urls = argv[argv.index("--worker-urls") + 1 : argv.index("--policy")]
    for url in urls:
        try:
            urllib.request.urlopen(url + "/ready", timeout=2)
        except OSError:
            record("worker-down", url=url)
            sys.exit(4)
ready_path = "/readiness" if prog == "smg" else "/ready"
started = time.monotonic()

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == ready_path and mode != "legacy":
            code = 503 if mode == "never" else 200
        elif self.path == "/health_generate" and mode == "legacy":
            code = 200
        else:
            code = 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

def stop(signum, frame):
    record("stop", signal=signum)
    os._exit(0)

signal.signal(signal.SIGTERM, stop)
host, port = argv[argv.index("--host") + 1], int(argv[argv.index("--port") + 1])
server = ThreadingHTTPServer((host, port), Handler)
if mode == "die":
    import threading
    threading.Timer(1.0, lambda: os._exit(5)).start()
server.serve_forever()
'''

_FAKE_NVIDIA_SMI = """\
#!/bin/sh
n="${FAKE_GPU_COUNT:-2}"
i=0
while [ "$i" -lt "$n" ]; do
    echo "GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-0000000$i)"
    i=$((i + 1))
done
"""


@dataclass
class FakeTools:
    """A bin directory with fake `sglang`, `smg` and `nvidia-smi`, and their event log."""

    bin_dir: Path
    log: Path

    def env(self, *, with_gpu: bool = True, **extra: str) -> dict[str, str]:
        env = clean_env(FAKE_LOG=str(self.log), **extra)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), BASE_PATH])
        if not with_gpu:
            (self.bin_dir / "nvidia-smi").unlink(missing_ok=True)
        return env

    def events(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def remove(self, name: str) -> None:
        (self.bin_dir / name).unlink()


@pytest.fixture
def fake_tools(tmp_path: Path) -> FakeTools:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    server = _FAKE_SERVER.replace("{python}", sys.executable)
    for name, text in (("sglang", server), ("smg", server), ("nvidia-smi", _FAKE_NVIDIA_SMI)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return FakeTools(bin_dir, tmp_path / "events.jsonl")


# --------------------------------------------------------------------------- tiny model

_CORPUS = [
    "A quiet detective story set in Kyoto, told by a retired bookseller.",
    f"Instruct: {DEFAULT_INSTRUCTION}\nQuery:",
    "a sweeping space opera about generation ships and the families aboard them",
    "一本关于江南园林与文人生活的散文集",
    "The history of the printing press and how cheap books changed Europe.",
    "Poems about rivers, mountains and the long road home.",
]


def _train_tokenizer(corpus: list[str]) -> Any:
    """A byte-level BPE tokenizer trained on ``corpus``, whose post-processor appends
    <|endoftext|> as Qwen3-Embedding's does."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    split = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=[EOT, "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus * 3, trainer)
    eot_id = tok.token_to_id(EOT)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A:0 {EOT}:0",
        pair=f"$A:0 $B:1 {EOT}:1",
        special_tokens=[(EOT, eot_id)],
    )
    return tok


def _save_tokenizer(tok: Any, directory: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token=EOT,
        padding_side="left",
    )
    wrapped.save_pretrained(directory)
    # Qwen3-Embedding's checkpoints name this class; loading through it is what SGLang does.
    config_path = directory / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["tokenizer_class"] = "Qwen2Tokenizer"
    config_path.write_text(json.dumps(tokenizer_config, indent=2))


def _tiny_config() -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )


def build_tiny_model(directory: Path) -> None:
    """A 2-layer Qwen3 with random weights and a byte-level BPE tokenizer whose
    post-processor appends <|endoftext|>, as Qwen3-Embedding's tokenizer does."""
    import torch
    from transformers import Qwen3Model

    _save_tokenizer(_train_tokenizer(_CORPUS), directory)
    torch.manual_seed(1234)
    Qwen3Model(_tiny_config()).save_pretrained(directory)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-qwen3-embedding")
    build_tiny_model(directory)
    return directory


@dataclass
class Reference:
    """Direct transformers computation: left padding, last token, L2 normalisation."""

    tokenizer: Any
    model: Any

    def embed(self, texts: list[str], dimensions: int | None = None) -> Any:
        import torch

        batch = self.tokenizer(texts, padding=True, return_tensors="pt")
        assert bool(batch["attention_mask"][:, -1].all()), "expected left padding"
        with torch.no_grad():
            hidden = self.model(**batch).last_hidden_state[:, -1]
        if dimensions is not None:
            hidden = hidden[:, :dimensions]
        return torch.nn.functional.normalize(hidden, p=2, dim=1).numpy()

    def token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])


@pytest.fixture(scope="session")
def reference(tiny_model: Path) -> Reference:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.padding_side = "left"
    model = AutoModel.from_pretrained(tiny_model, dtype=torch.float32).eval()
    return Reference(tokenizer, model)


# --------------------------------------------------------------------------- CPU server


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    api_key: str
    model_path: str
    stdout: Path
    stderr: Path

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def post(self, body: Any, *, key: str | None = "default", **kwargs: Any) -> httpx.Response:
        headers = {} if key is None else {"Authorization": f"Bearer {self.api_key}"}
        if key not in (None, "default"):
            headers = {"Authorization": f"Bearer {key}"}
        return httpx.post(
            f"{self.base_url}/embeddings", json=body, headers=headers, timeout=30, **kwargs
        )

    def batching(self) -> dict[str, Any]:
        info = httpx.get(f"{self.root_url}/model_info", headers=self.headers(), timeout=10)
        info.raise_for_status()
        return dict(info.json()["batching"])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def cpu_server(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One CPU server for the session, started through `launch_server.sh --cpu`."""
    logs = tmp_path_factory.mktemp("cpu-server-logs")
    port = free_port()
    stdout, stderr = logs / "stdout.txt", logs / "stderr.txt"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [
                str(LAUNCH_SH),
                "--cpu",
                "--model",
                str(tiny_model),
                "--port",
                str(port),
                "--context-length",
                str(CONTEXT_LENGTH),
                "--",
                "--threads",
                "1",
                "--batch-wait-ms",
                "30",
            ],
            env=clean_env(BOOKREC_API_KEY=API_KEY),
            stdout=out,
            stderr=err,
        )
    server = RunningServer(process, port, API_KEY, str(tiny_model), stdout, stderr)
    try:
        wait_until(
            lambda: process.poll() is not None or "ready" in stdout.read_text(),
            timeout=90,
            what="the CPU server",
        )
        if process.poll() is not None:
            raise AssertionError(f"launcher exited early:\n{stderr.read_text()}")
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0, f"launcher exited with {code} on SIGTERM:\n{stderr.read_text()}"


@pytest.fixture
def server_log(cpu_server: RunningServer) -> Callable[[], str]:
    return lambda: cpu_server.stderr.read_text()


def wrap(text: str) -> str:
    return textwrap.dedent(text).strip()


# --------------------------------------------------------------------------- tiny reranker

#: Qwen3-Reranker's prompt, written out here from the model card (not imported from the
#: server) so that the tests check the server's format too.
RERANK_HEAD = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
RERANK_TAIL = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
RERANK_DEFAULT_INSTRUCTION = (
    "Given a web search query, retrieve relevant passages that answer the query"
)

_RERANK_CORPUS = [
    *_CORPUS,
    RERANK_HEAD + "<Instruct>: judge\n<Query>: a book\n<Document>: a story" + RERANK_TAIL,
    "yes",
    "no",
    "yes\n",
    "no\n",
]


def build_tiny_reranker(directory: Path) -> None:
    """A 2-layer ``Qwen3ForCausalLM`` with random weights, and a byte-level BPE tokenizer
    (built as in :func:`build_tiny_model`) in which "yes" and "no" are single tokens, as they
    are in Qwen3-Reranker's (ids 9693 and 2152 there)."""
    import torch
    from transformers import Qwen3ForCausalLM

    # Appends <|endoftext|> as Qwen3-Embedding's does: a reranker's prompt must not get it.
    tok = _train_tokenizer(_RERANK_CORPUS)
    for word in ("yes", "no"):
        assert tok.encode(word, add_special_tokens=False).ids == [tok.token_to_id(word)], (
            f"{word!r} is not one token"
        )
    _save_tokenizer(tok, directory)
    torch.manual_seed(4321)
    model = Qwen3ForCausalLM(_tiny_config())
    with torch.no_grad():
        # Random weights put P(yes) near 0.5 for everything; spread the two rows apart so
        # that scores differ visibly between documents.
        head = model.get_output_embeddings().weight
        head[tok.token_to_id("yes")] *= 8.0
    model.save_pretrained(directory)


@pytest.fixture(scope="session")
def tiny_reranker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny-qwen3-reranker")
    build_tiny_reranker(directory)
    return directory


@dataclass
class RerankReference:
    """Direct transformers computation of the model card's Qwen3-Reranker scores."""

    tokenizer: Any
    model: Any

    def prompt_ids(self, query: str, document: str, instruction: str | None = None) -> list[int]:
        task = RERANK_DEFAULT_INSTRUCTION if instruction is None else instruction
        pair = f"<Instruct>: {task}\n<Query>: {query}\n<Document>: {document}"
        encode = self.tokenizer.encode
        return [
            *encode(RERANK_HEAD, add_special_tokens=False),
            *encode(pair, add_special_tokens=False),
            *encode(RERANK_TAIL, add_special_tokens=False),
        ]

    def scores(
        self, query: str, documents: list[str], instruction: str | None = None
    ) -> list[float]:
        import torch

        yes = self.tokenizer.convert_tokens_to_ids("yes")
        no = self.tokenizer.convert_tokens_to_ids("no")
        out = []
        for document in documents:  # one at a time: no padding in the reference
            ids = torch.tensor([self.prompt_ids(query, document, instruction)])
            with torch.no_grad():
                logits = self.model(input_ids=ids).logits[:, -1, :]
            pair = torch.stack([logits[:, yes], logits[:, no]], dim=1).float()
            out.append(float(torch.softmax(pair, dim=1)[0, 0]))
        return out


@pytest.fixture(scope="session")
def rerank_reference(tiny_reranker: Path) -> RerankReference:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_reranker)
    model = AutoModelForCausalLM.from_pretrained(tiny_reranker, dtype=torch.float32).eval()
    return RerankReference(tokenizer, model)
