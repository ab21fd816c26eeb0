"""The launch script's dry run, checked argument by argument against SGLang 0.5.23's flags
(shared/notes/sglang-serving.md sections 1, 5, 9), with the reranker's chat template."""

from __future__ import annotations

import importlib.util
import json
import shlex
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tests.serving.conftest import CPU_SERVER_MODULE, LAUNCH_PY, clean_env, run_launch

DIMS_0_6B = [32, 64, 128, 256, 512, 768, 1024]
DIMS_4B = [*DIMS_0_6B, 1536, 2048, 2560]
DIMS_8B = [*DIMS_4B, 4096]
# Flags that take no value, from SGLang's argument definitions and the CPU server's.
BOOLEAN_FLAGS = {
    "--is-embedding",
    "--disable-radix-cache",
    "--enable-metrics",
    "--no-matryoshka",
    "--reranker",
}


@dataclass
class Command:
    env: dict[str, str]
    program: list[str]
    flags: dict[str, str | bool | list[str]]
    argv: list[str]


def parse_command(line: str, program_words: int) -> Command:
    """Split one printed command into env assignments, program and {flag: value}."""
    words = shlex.split(line)
    env: dict[str, str] = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    program, rest = words[:program_words], words[program_words:]
    flags: dict[str, str | bool | list[str]] = {}
    i = 0
    while i < len(rest):
        flag = rest[i]
        assert flag.startswith("--"), f"stray word {flag!r} in {line!r}"
        assert flag not in flags, f"{flag} given twice in {line!r}"
        values = []
        i += 1
        while i < len(rest) and not (rest[i].startswith("--") and rest[i] != "-1"):
            values.append(rest[i])
            i += 1
        if flag in BOOLEAN_FLAGS:
            assert not values, f"{flag} takes no value"
            flags[flag] = True
        elif flag == "--worker-urls":
            flags[flag] = values
        else:
            assert len(values) == 1, f"{flag} expects one value, got {values}"
            flags[flag] = values[0]
    return Command(env, program, flags, words)


def load_launcher() -> ModuleType:
    """scripts/launch_server.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("launch_server", LAUNCH_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("launch_server", module)
    spec.loader.exec_module(module)
    return module


def dry_run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    result = run_launch("--dry-run", *args, env=clean_env(**env))
    assert result.returncode == 0, result.stderr
    return result


def commands(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line and not line.startswith("#")]


def sglang(*args: str, **env: str) -> Command:
    lines = commands(dry_run(*args, **env))
    assert len(lines) == 1, lines
    return parse_command(lines[0], program_words=2)


def matryoshka(cmd: Command) -> object:
    value = cmd.flags.get("--json-model-override-args")
    return None if value is None else json.loads(str(value))


def test_default_command_is_sglang_serve_with_the_embedding_flags() -> None:
    cmd = sglang()
    assert cmd.program == ["sglang", "serve"]
    assert cmd.env == {}
    assert cmd.flags == {
        "--model-path": "Qwen/Qwen3-Embedding-0.6B",
        "--is-embedding": True,
        "--host": "127.0.0.1",
        "--port": "30000",
        "--disable-radix-cache": True,
        "--chunked-prefill-size": "-1",
        "--json-model-override-args": json.dumps(
            {"matryoshka_dimensions": DIMS_0_6B}, separators=(",", ":")
        ),
    }


@pytest.mark.parametrize(
    ("model", "path", "dims"),
    [
        ("0.6B", "Qwen/Qwen3-Embedding-0.6B", DIMS_0_6B),
        ("4B", "Qwen/Qwen3-Embedding-4B", DIMS_4B),
        ("8B", "Qwen/Qwen3-Embedding-8B", DIMS_8B),
        ("8b", "Qwen/Qwen3-Embedding-8B", DIMS_8B),
        ("Qwen/Qwen3-Embedding-4B", "Qwen/Qwen3-Embedding-4B", DIMS_4B),
    ],
)
def test_presets_map_to_hub_ids_and_their_matryoshka_widths(
    model: str, path: str, dims: list[int]
) -> None:
    cmd = sglang("--model", model)
    assert cmd.flags["--model-path"] == path
    assert matryoshka(cmd) == {"matryoshka_dimensions": dims}


def test_custom_model_gets_no_override_and_a_note() -> None:
    result = dry_run("--model", "/models/my-embedder")
    cmd = parse_command(commands(result)[0], 2)
    assert cmd.flags["--model-path"] == "/models/my-embedder"
    assert "--json-model-override-args" not in cmd.flags
    assert "--dimensions-list" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dimensions-list", "256,64,128"], {"matryoshka_dimensions": [64, 128, 256]}),
        (["--any-dimension"], {"is_matryoshka": True}),
        (["--model", "8B", "--no-matryoshka"], None),
    ],
)
def test_matryoshka_choices(args: list[str], expected: object) -> None:
    assert matryoshka(sglang("--model", "/models/x", *args)) == expected


def test_every_server_option_becomes_its_sglang_flag() -> None:
    cmd = sglang(
        "--model",
        "8B",
        "--revision",
        "abc123",
        "--context-length",
        "8192",
        "--mem-fraction-static",
        "0.5",
        "--served-model-name",
        "qwen3-embedding-8b",
        "--max-prefill-tokens",
        "32768",
        "--enable-metrics",
        "--port",
        "30123",
    )
    assert cmd.flags["--revision"] == "abc123"
    assert cmd.flags["--context-length"] == "8192"
    assert cmd.flags["--mem-fraction-static"] == "0.5"
    assert cmd.flags["--served-model-name"] == "qwen3-embedding-8b"
    assert cmd.flags["--max-prefill-tokens"] == "32768"
    assert cmd.flags["--enable-metrics"] is True
    assert cmd.flags["--port"] == "30123"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--served-model-name", "qwen3-embedding:0.6b"], "contains ':'"),
        (["--mem-fraction-static", "1.5"], "fraction"),
        (["--context-length", "0"], "positive"),
        (["--port", "70000"], "not a TCP port"),
        (["--cpu", "--gpus", "0,1"], "exclude each other"),
        (["--gpus", "0,1", "--port", "31001"], "collides"),
        (["--gpus", "0,0"], "duplicate"),
        (["--dimensions-list", "64,x"], "integers"),
        (["--any-dimension", "--no-matryoshka"], "not allowed with"),
        (["--cpu", "--workers-per-gpu", "2"], "exclude each other"),
        (["--workers-per-gpu", "0"], "positive"),
        (["--workers-per-gpu", "2", "--port", "31001"], "collides"),
        (["--workers-per-gpu", "2", "--gateway-metrics-port", "31000"], "is taken"),
    ],
)
def test_bad_options_exit_2_with_a_message(args: list[str], message: str) -> None:
    result = run_launch("--dry-run", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def config_placeholder() -> str:
    """The key file a dry run names (a real launch creates the directory)."""
    return str(Path(tempfile.gettempdir()) / "bookrec-launch-XXXXXXXX" / "sglang-config.yaml")


def test_api_key_goes_to_a_config_file_never_on_the_command_line() -> None:
    result = dry_run("--api-key", "s3cret-value")
    cmd = parse_command(commands(result)[0], 2)
    assert "--api-key" not in cmd.flags
    assert cmd.flags["--config"] == config_placeholder()
    assert "mode 0600" in result.stderr
    assert "s3cret-value" not in result.stdout + result.stderr


@pytest.mark.parametrize("var", ["BOOKREC_API_KEY", "SGLANG_API_KEY"])
def test_api_key_from_environment_goes_to_the_config_file(var: str) -> None:
    result = dry_run(**{var: "env-secret"})
    cmd = parse_command(commands(result)[0], 2)
    assert "--api-key" not in cmd.flags
    assert cmd.flags["--config"] == config_placeholder()
    assert "env-secret" not in result.stdout + result.stderr


def test_no_key_no_config_file() -> None:
    result = dry_run()
    assert "--config" not in parse_command(commands(result)[0], 2).flags
    assert "0600" not in result.stderr


@pytest.mark.parametrize(
    "extra", [["--api-key", "after-dash"], ["--api-key=after-dash"]], ids=["two-words", "equals"]
)
@pytest.mark.parametrize("mode", [[], ["--cpu"]], ids=["sglang", "cpu"])
def test_api_key_after_the_dashes_is_lifted_out_and_never_printed(
    extra: list[str], mode: list[str]
) -> None:
    result = dry_run(*mode, "--", "--dtype", "float16", *extra)
    (line,) = commands(result)
    assert "after-dash" not in result.stdout + result.stderr
    assert "--api-key" not in line
    words = shlex.split(line)
    assert words[-2:] == ["--dtype", "float16"]
    if mode:
        assert words[0] == "BOOKREC_API_KEY=***"
    else:
        assert words[words.index("--config") + 1] == config_placeholder()


def test_two_different_keys_are_refused() -> None:
    result = run_launch("--dry-run", "--api-key", "a", "--", "--api-key", "b")
    assert result.returncode == 2
    assert "two different API keys" in result.stderr


def test_a_config_file_after_the_dashes_is_merged_into_ours() -> None:
    result = dry_run("--api-key", "k", "--", "--config", "/etc/sglang/mine.yaml")
    words = shlex.split(commands(result)[0])
    assert words.count("--config") == 1
    assert words[words.index("--config") + 1] == config_placeholder()
    assert "/etc/sglang/mine.yaml: no such file" in result.stderr
    # Without a key there is nothing to merge: the user's file goes through as given.
    words = shlex.split(commands(dry_run("--", "--config", "/etc/sglang/mine.yaml"))[0])
    assert words[-2:] == ["--config", "/etc/sglang/mine.yaml"]


def test_display_masks_api_key_values_wherever_they_are() -> None:
    launcher = load_launcher()
    process = launcher.Process(
        "x", ("prog", "--api-key", "one", "--api-key=two", "--other", "three"), secret="three"
    )
    assert process.display() == "prog --api-key '***' '--api-key=***' --other '***'"


def test_exposed_host_without_key_warns() -> None:
    result = dry_run("--host", "0.0.0.0")
    assert "warning" in result.stderr
    assert "without an API key" in result.stderr
    assert "BOOKREC_API_KEY" in result.stderr
    assert parse_command(commands(result)[0], 2).flags["--host"] == "0.0.0.0"


@pytest.mark.parametrize(
    ("args", "env"),
    [
        ([], {}),
        (["--host", "0.0.0.0"], {"BOOKREC_API_KEY": "k-0123456789abcdef"}),
        (["--host", "::1"], {}),
    ],
)
def test_no_warning_on_loopback_or_with_a_key(args: list[str], env: dict[str, str]) -> None:
    assert "without an API key" not in dry_run(*args, **env).stderr


def test_pass_through_arguments_come_last_verbatim() -> None:
    extra = ["--dtype", "float16", "--log-level", "debug", "--attention-backend", "triton"]
    result = dry_run("--model", "4B", "--", *extra)
    words = shlex.split(commands(result)[0])
    assert words[-len(extra) :] == extra


def test_pass_through_model_override_replaces_ours() -> None:
    result = dry_run("--", "--json-model-override-args", '{"is_matryoshka":true}')
    words = shlex.split(commands(result)[0])
    assert words.count("--json-model-override-args") == 1
    assert words[-2:] == ["--json-model-override-args", '{"is_matryoshka":true}']
    assert "replaces the Matryoshka override" in result.stderr


def gateway_command(line: str) -> Command:
    """The gateway's line: with a key, smg runs through the bootstrap that hands it the key."""
    words = [w for w in shlex.split(line) if not ("=" in w and w.split("=")[0].isidentifier())]
    return parse_command(line, words.index("launch") + 1)


def test_gpus_start_one_worker_per_gpu_behind_the_smg_gateway() -> None:
    result = dry_run(
        "--gpus", "0,1,3", "--model", "4B", "--host", "0.0.0.0", "--api-key", "k9-0123456789abcdef"
    )
    lines = result.stdout.splitlines()
    assert lines[0::2] == [
        "# worker on GPU 0",
        "# worker on GPU 1",
        "# worker on GPU 3",
        "# gateway",
    ]
    workers = [parse_command(line, 2) for line in lines[1:6:2]]
    for gpu, worker in zip((0, 1, 3), workers, strict=True):
        assert worker.env == {"CUDA_VISIBLE_DEVICES": str(gpu)}
        assert worker.program == ["sglang", "serve"]
        assert worker.flags["--port"] == str(31000 + gpu)
        assert worker.flags["--host"] == "127.0.0.1"
        assert worker.flags["--is-embedding"] is True
        assert worker.flags["--config"] == config_placeholder()
        assert "--api-key" not in worker.flags
        assert "--mem-fraction-static" not in worker.flags
        assert matryoshka(worker) == {"matryoshka_dimensions": DIMS_4B}
    gateway = gateway_command(lines[7])
    # The key reaches the gateway through its environment and the bootstrap program.
    assert gateway.env == {"BOOKREC_API_KEY": "***"}
    # The interpreter is the one smg's script names (or python3 where no smg is installed).
    assert gateway.program[-4:-2] == ["-c", load_launcher().GATEWAY_BOOTSTRAP]
    assert Path(gateway.program[-2]).name == "smg"
    assert gateway.program[-1] == "launch"
    assert gateway.flags == {
        "--worker-urls": [f"http://127.0.0.1:{31000 + gpu}" for gpu in (0, 1, 3)],
        "--policy": "round_robin",
        "--host": "0.0.0.0",
        "--port": "30000",
        "--prometheus-host": "0.0.0.0",
        "--prometheus-port": "29000",
    }
    assert "k9-0123456789abcdef" not in result.stdout + result.stderr


def test_gpus_worker_ports_and_policy_are_configurable() -> None:
    result = dry_run(
        "--gpus",
        "0,1",
        "--worker-base-port",
        "32000",
        "--policy",
        "power_of_two",
        "--gateway-metrics-port",
        "29100",
    )
    gateway = gateway_command(result.stdout.splitlines()[-1])
    assert gateway.program == ["smg", "launch"]
    assert gateway.env == {}
    assert gateway.flags["--worker-urls"] == ["http://127.0.0.1:32000", "http://127.0.0.1:32001"]
    assert gateway.flags["--policy"] == "power_of_two"
    assert gateway.flags["--prometheus-port"] == "29100"
    assert "--api-key" not in gateway.flags


def test_served_name_and_model_path_both_route_through_the_gateway() -> None:
    result = dry_run("--gpus", "0,1", "--served-model-name", "qwen3-embedding-0.6b")
    gateway = gateway_command(result.stdout.splitlines()[-1])
    assert gateway.flags["--model-alias"] == "Qwen/Qwen3-Embedding-0.6B=qwen3-embedding-0.6b"


@pytest.mark.parametrize(
    ("args", "gpus", "share"),
    [
        (["--workers-per-gpu", "2"], [0], "0.4"),
        (["--gpus", "1", "--workers-per-gpu", "3"], [1], "0.267"),
        (
            ["--gpus", "0,2", "--workers-per-gpu", "2", "--mem-fraction-static", "0.9"],
            [0, 2],
            "0.45",
        ),
    ],
)
def test_workers_per_gpu_share_the_gpu_memory_behind_the_gateway(
    args: list[str], gpus: list[int], share: str
) -> None:
    result = dry_run(*args, BOOKREC_API_KEY="wk-0123456789abcdef")
    lines = result.stdout.splitlines()
    per_gpu = int(args[args.index("--workers-per-gpu") + 1])
    names = [f"# worker {j} on GPU {gpu}" for gpu in gpus for j in range(per_gpu)]
    assert lines[0::2] == [*names, "# gateway"]
    workers = [parse_command(line, 2) for line in lines[1:-2:2]]
    ports = [31000 + gpu * per_gpu + j for gpu in gpus for j in range(per_gpu)]
    for (gpu, port), worker in zip(
        [(gpu, 31000 + gpu * per_gpu + j) for gpu in gpus for j in range(per_gpu)],
        workers,
        strict=True,
    ):
        assert worker.env == {"CUDA_VISIBLE_DEVICES": str(gpu)}
        assert worker.flags["--port"] == str(port)
        assert worker.flags["--host"] == "127.0.0.1"
        assert worker.flags["--mem-fraction-static"] == share
        assert worker.flags["--config"] == config_placeholder()
    gateway = gateway_command(lines[-1])
    assert gateway.flags["--worker-urls"] == [f"http://127.0.0.1:{port}" for port in ports]
    assert gateway.flags["--port"] == "30000"
    assert f"--mem-fraction-static {share}" in result.stderr
    assert "wk-0123456789abcdef" not in result.stdout


def test_one_worker_on_one_gpu_needs_no_gateway() -> None:
    cmd = sglang("--workers-per-gpu", "1")
    assert cmd.flags["--port"] == "30000"
    assert "--mem-fraction-static" not in cmd.flags


def test_a_single_gpu_runs_sglang_on_the_main_port_without_gateway() -> None:
    cmd = sglang("--gpus", "2")
    assert cmd.env == {"CUDA_VISIBLE_DEVICES": "2"}
    assert cmd.flags["--port"] == "30000"


def test_cpu_mode_runs_the_cpu_server_with_the_same_options() -> None:
    result = dry_run(
        "--cpu",
        "--model",
        "4B",
        "--port",
        "30500",
        "--served-model-name",
        "bookrec-embed",
        "--context-length",
        "2048",
        "--max-prefill-tokens",
        "4096",
        "--",
        "--threads",
        "2",
        BOOKREC_API_KEY="cpu-secret-0123456789",
    )
    lines = commands(result)
    assert len(lines) == 1
    cmd = parse_command(lines[0], program_words=3)
    # The interpreter that runs the launcher (python3 from PATH) runs the CPU server too.
    assert Path(cmd.program[0]).parent == Path(sys.executable).parent
    assert cmd.program[1:] == ["-m", CPU_SERVER_MODULE]
    # The key reaches the CPU server through its environment, never its command line.
    assert cmd.env == {"BOOKREC_API_KEY": "***"}
    assert cmd.flags == {
        "--model": "Qwen/Qwen3-Embedding-4B",
        "--host": "127.0.0.1",
        "--port": "30500",
        "--served-model-name": "bookrec-embed",
        "--context-length": "2048",
        "--max-batch-tokens": "4096",
        "--matryoshka-dimensions": ",".join(map(str, DIMS_4B)),
        "--threads": "2",
    }
    assert "cpu-secret-0123456789" not in result.stdout + result.stderr


def test_cpu_mode_notes_gpu_only_options() -> None:
    result = dry_run("--cpu", "--enable-metrics", "--mem-fraction-static", "0.4")
    assert "SGLang only" in result.stderr
    assert "--enable-metrics" not in result.stdout


def test_dry_run_reports_what_a_real_launch_would_hit_but_exits_0() -> None:
    # No sglang and no GPU on this machine (PATH holds neither).
    result = dry_run()
    assert "SGLang is not installed" in result.stderr
    assert "no NVIDIA GPU" in result.stderr


def test_launcher_uses_only_the_standard_library() -> None:
    # -S -I: no site-packages and no user paths, as in a bare python3 of another image.
    result = subprocess.run(
        [sys.executable, "-S", "-I", str(LAUNCH_PY), "--dry-run", "--gpus", "0,1"],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "smg launch" in result.stdout


def test_help_lists_every_mode() -> None:
    result = run_launch("--help")
    assert result.returncode == 0
    for flag in (
        "--model",
        "--cpu",
        "--gpus",
        "--reranker",
        "--dry-run",
        "--no-wait",
        "--api-key",
        "--",
    ):
        assert flag in result.stdout


# --------------------------------------------------------------------------- the reranker

TEMPLATE = LAUNCH_PY.parent / "qwen3_reranker.jinja"


def reranker_config_placeholder() -> str:
    return str(Path(config_placeholder()).parent / "sglang-reranker-config.yaml")


def named_commands(result: subprocess.CompletedProcess[str]) -> dict[str, Command]:
    """{name: command} of a dry run that starts several processes, the gateway left out."""
    lines = result.stdout.splitlines()
    assert [line.startswith("# ") for line in lines[0::2]] == [True] * (len(lines) // 2), lines
    return {
        name[2:]: parse_command(line, 2)
        for name, line in zip(lines[0::2], lines[1::2], strict=True)
        if name != "# gateway"
    }


@pytest.mark.parametrize(
    ("reranker", "path"),
    [
        ("0.6B", "Qwen/Qwen3-Reranker-0.6B"),
        ("4B", "Qwen/Qwen3-Reranker-4B"),
        ("8B", "Qwen/Qwen3-Reranker-8B"),
        ("8b", "Qwen/Qwen3-Reranker-8B"),
        ("Qwen/Qwen3-Reranker-4B", "Qwen/Qwen3-Reranker-4B"),
        ("/models/my-qwen3-reranker", "/models/my-qwen3-reranker"),
    ],
)
def test_reranker_is_sglang_in_generation_mode_with_our_chat_template(
    reranker: str, path: str
) -> None:
    cmds = named_commands(dry_run("--reranker", reranker))
    assert list(cmds) == ["sglang", "reranker"]
    cmd = cmds["reranker"]
    assert cmd.program == ["sglang", "serve"]
    assert cmd.env == {}
    # Flag by flag: no --is-embedding (SGLang scores Qwen3-Reranker on its yes/no logits only
    # in generation mode), no Matryoshka override, no chunked-prefill setting, no key.
    assert cmd.flags == {
        "--model-path": path,
        "--host": "127.0.0.1",
        "--port": "30001",
        "--disable-radix-cache": True,
        "--chat-template": str(TEMPLATE),
        "--mem-fraction-static": "0.4",
    }
    assert Path(str(cmd.flags["--chat-template"])).is_file()
    # The embedding server is unchanged but for its half of the shared GPU.
    embedding = cmds["sglang"]
    assert embedding.flags["--is-embedding"] is True
    assert embedding.flags["--port"] == "30000"
    assert embedding.flags["--mem-fraction-static"] == "0.4"


def test_reranker_options_become_its_flags() -> None:
    result = dry_run(
        "--reranker",
        "4B",
        "--reranker-port",
        "30444",
        "--reranker-revision",
        "rev9",
        "--host",
        "0.0.0.0",
        "--enable-metrics",
        "--mem-fraction-static",
        "0.9",
        "--reranker-mem-fraction-static",
        "0.3",
        "--revision",
        "emb1",
        "--served-model-name",
        "qwen3-embedding-0.6b",
        "--context-length",
        "8192",
        "--",
        "--dtype",
        "float16",
        BOOKREC_API_KEY="rr-secret-0123456789",
    )
    cmds = named_commands(result)
    reranker, embedding = cmds["reranker"], cmds["sglang"]
    assert reranker.flags == {
        "--model-path": "Qwen/Qwen3-Reranker-4B",
        "--host": "0.0.0.0",
        "--port": "30444",
        "--disable-radix-cache": True,
        "--chat-template": str(TEMPLATE),
        "--revision": "rev9",
        "--mem-fraction-static": "0.3",
        "--config": reranker_config_placeholder(),
        "--enable-metrics": True,
    }
    # The embedding model's options and the words after `--` stay with the embedding server.
    assert embedding.flags["--mem-fraction-static"] == "0.6"
    assert embedding.flags["--revision"] == "emb1"
    assert embedding.flags["--config"] == config_placeholder()
    assert embedding.flags["--dtype"] == "float16"
    assert "sglang-reranker-config.yaml" in result.stderr
    assert "rr-secret-0123456789" not in result.stdout + result.stderr


def test_reranker_on_a_gpu_of_its_own_keeps_sglangs_memory_default() -> None:
    cmds = named_commands(dry_run("--reranker", "8B", "--reranker-gpu", "1"))
    assert cmds["reranker"].env == {"CUDA_VISIBLE_DEVICES": "1"}
    assert "--mem-fraction-static" not in cmds["reranker"].flags
    assert "--mem-fraction-static" not in cmds["sglang"].flags
    assert cmds["sglang"].env == {}


def test_reranker_beside_the_gateway_shares_the_first_gpu() -> None:
    result = dry_run(
        "--gpus",
        "0,1",
        "--reranker",
        "0.6B",
        "--host",
        "0.0.0.0",
        "--api-key",
        "gk-0123456789abcdef",
    )
    lines = result.stdout.splitlines()
    assert lines[0::2] == ["# worker on GPU 0", "# worker on GPU 1", "# reranker", "# gateway"]
    cmds = named_commands(result)
    reranker = cmds["reranker"]
    assert reranker.env == {"CUDA_VISIBLE_DEVICES": "0"}
    # Clients reach it directly on --host (the gateway routes embeddings only).
    assert reranker.flags["--host"] == "0.0.0.0"
    assert reranker.flags["--port"] == "30001"
    assert reranker.flags["--config"] == reranker_config_placeholder()
    assert "--is-embedding" not in reranker.flags
    # GPU 0 holds a worker and the reranker; GPU 1 its worker alone.
    assert reranker.flags["--mem-fraction-static"] == "0.4"
    assert cmds["worker on GPU 0"].flags["--mem-fraction-static"] == "0.4"
    assert "--mem-fraction-static" not in cmds["worker on GPU 1"].flags
    gateway = gateway_command(lines[-1])
    assert gateway.flags["--worker-urls"] == ["http://127.0.0.1:31000", "http://127.0.0.1:31001"]
    assert "gk-0123456789abcdef" not in result.stdout + result.stderr


def test_reranker_with_several_workers_on_its_gpu_splits_the_memory_evenly() -> None:
    cmds = named_commands(dry_run("--workers-per-gpu", "3", "--reranker", "0.6B"))
    assert [cmd.flags["--mem-fraction-static"] for cmd in cmds.values()] == ["0.2"] * 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reranker", "0.6B", "--reranker-port", "30000"], "is taken"),
        (["--reranker", "0.6B", "--gpus", "0,1", "--reranker-port", "31001"], "is taken"),
        (["--reranker", "0.6B", "--gpus", "0,1", "--reranker-port", "29000"], "is taken"),
        (["--reranker-port", "30002"], "need(s) --reranker"),
        (["--reranker-gpu", "1"], "need(s) --reranker"),
        (["--reranker", "0.6B", "--reranker-gpu", "-1"], "must be >= 0"),
        (["--reranker", "0.6B", "--reranker-chat-template", "x.txt"], "*.jinja"),
        (["--reranker", "0.6B", "--reranker-mem-fraction-static", "0.8"], "leaves nothing"),
        (["--reranker", " "], "needs a preset"),
    ],
)
def test_bad_reranker_options_exit_2_with_a_message(args: list[str], message: str) -> None:
    result = run_launch("--dry-run", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_cpu_mode_runs_the_cpu_servers_reranker_with_the_key_in_its_environment() -> None:
    result = dry_run(
        "--cpu",
        "--reranker",
        "4B",
        "--reranker-port",
        "30555",
        "--reranker-revision",
        "r1",
        "--reranker-gpu",
        "1",
        "--",
        "--threads",
        "2",
        BOOKREC_API_KEY="cpu-rr-secret-0123456789",
    )
    lines = result.stdout.splitlines()
    assert lines[0::2] == ["# cpu server", "# reranker"]
    cmd = parse_command(lines[3], program_words=3)
    assert Path(cmd.program[0]).parent == Path(sys.executable).parent
    assert cmd.program[1:] == ["-m", CPU_SERVER_MODULE]
    assert cmd.env == {"BOOKREC_API_KEY": "***"}
    # `--reranker` is the CPU server's own flag: the prompt is its own, there is no template.
    assert cmd.flags == {
        "--reranker": True,
        "--model": "Qwen/Qwen3-Reranker-4B",
        "--host": "127.0.0.1",
        "--port": "30555",
        "--revision": "r1",
    }
    # The words after `--` stay with the embedding server.
    assert "--threads" in lines[1]
    assert "--reranker-gpu apply to SGLang only" in result.stderr
    assert "cpu-rr-secret-0123456789" not in result.stdout + result.stderr


def test_dry_run_notes_a_missing_chat_template(tmp_path: Path) -> None:
    missing = tmp_path / "gone.jinja"
    result = dry_run("--reranker", "0.6B", "--reranker-chat-template", str(missing))
    assert named_commands(result)["reranker"].flags["--chat-template"] == str(missing)
    assert f"chat template {missing} is missing" in result.stderr


# The prompt of the Qwen3-Reranker model cards' Transformers example (huggingface.co/Qwen/
# Qwen3-Reranker-0.6B): prefix + format_instruction(instruction, query, doc) + suffix.
CARD_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
CARD_DEFAULT_INSTRUCTION = (
    "Given a web search query, retrieve relevant passages that answer the query"
)


def card_prompt(instruction: str | None, query: str, doc: str) -> str:
    if instruction is None:
        instruction = CARD_DEFAULT_INSTRUCTION
    body = f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"
    return CARD_PREFIX + body + CARD_SUFFIX


def sglang_loaded_template() -> str:
    """The template's text as SGLang 0.5.23 keeps it (TemplateManager._load_jinja_template)."""
    with TEMPLATE.open() as f:
        text = "".join(f.readlines()).strip("\n")
    return text.replace("\\n", "\n")


def render(source: str, query: str, document: str, instruct: str | None) -> str:
    """Render as serving_rerank._render_jinja_chat_template does: a sandboxed environment,
    the query and the document as two user messages, `instruct` only when non-empty."""
    jinja2 = pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(), autoescape=False, undefined=jinja2.Undefined
    )
    kwargs: dict[str, object] = {
        "messages": [{"role": "user", "content": query}, {"role": "user", "content": document}]
    }
    if instruct:
        kwargs["instruct"] = instruct
    return str(env.from_string(source).render(**kwargs))


@pytest.mark.parametrize("loaded_by", ["sglang", "raw-file"])
@pytest.mark.parametrize(
    ("instruction", "query", "document"),
    [
        (
            "Given a reader's interests, retrieve descriptions of books the reader would enjoy",
            "a cozy mystery set in a bookshop",
            "A retired bookseller solves a murder among the shelves.\nSecond paragraph.",
        ),
        (None, "What is the capital of China?", "The capital of China is Beijing."),
        ("", "深夜の図書館", "一本关于江南园林的散文集 <b>&amp;</b> {{ not a template }}"),
    ],
    ids=["books", "card-default", "empty-instruct-unicode"],
)
def test_chat_template_renders_the_model_cards_prompt(
    loaded_by: str, instruction: str | None, query: str, document: str
) -> None:
    source = sglang_loaded_template() if loaded_by == "sglang" else TEMPLATE.read_text()
    expected = card_prompt(instruction or None, query, document)
    assert render(source, query, document, instruction) == expected


def test_sglang_recognises_the_template_as_a_qwen3_rerankers() -> None:
    """serving_rerank._is_qwen3_reranker_template, and its VL variant that must not match."""
    text = sglang_loaded_template().lower()
    assert 'answer can only be "yes" or "no"' in text
    assert "<|vision_start|>" not in text and "<|image_pad|>" not in text
    # The sentence ends the system turn, as in the model card.
    system = render(sglang_loaded_template(), "q", "d", None).split("<|im_end|>")[0]
    assert system.endswith('Note that the answer can only be "yes" or "no".')


def test_sglang_accepts_the_printed_command() -> None:
    """Parse the dry run with SGLang's own argument parser (only where SGLang is installed)."""
    pytest.importorskip("sglang", reason="SGLang is not installed here (GPU hosts only)")
    from sglang.srt.server_args import prepare_server_args

    words = shlex.split(commands(dry_run("--model", "8B", "--context-length", "8192"))[0])
    server_args = prepare_server_args(words[2:])
    assert server_args.is_embedding
    assert server_args.disable_radix_cache
    assert server_args.chunked_prefill_size == -1
    assert server_args.port == 30000
    assert json.loads(server_args.json_model_override_args) == {"matryoshka_dimensions": DIMS_8B}


def test_sglang_accepts_the_printed_reranker_command() -> None:
    """The reranker's line, parsed by SGLang's own parser (only where SGLang is installed)."""
    pytest.importorskip("sglang", reason="SGLang is not installed here (GPU hosts only)")
    from sglang.srt.server_args import prepare_server_args

    lines = dry_run("--reranker", "0.6B", "--reranker-mem-fraction-static", "0.3").stdout
    words = shlex.split(lines.splitlines()[-1])
    server_args = prepare_server_args(words[2:])
    assert server_args.model_path == "Qwen/Qwen3-Reranker-0.6B"
    assert not server_args.is_embedding
    assert server_args.disable_radix_cache
    assert server_args.chat_template == str(TEMPLATE)
    assert server_args.port == 30001
    assert server_args.mem_fraction_static == 0.3


def test_sglang_reads_the_key_from_the_config_file(tmp_path: Path) -> None:
    """SGLang's own parser merges the key file the launcher writes (only where SGLang is)."""
    pytest.importorskip("sglang", reason="SGLang is not installed here (GPU hosts only)")
    from sglang.srt.server_args import prepare_server_args

    key = 'k"ey\\with: yaml-ish # chars'
    config = tmp_path / "sglang-config.yaml"
    config.write_text(load_launcher().sglang_config_text(key, None))
    words = shlex.split(commands(dry_run("--api-key", key))[0])
    words[words.index("--config") + 1] = str(config)
    server_args = prepare_server_args(words[2:])
    assert server_args.api_key == key
    assert server_args.is_embedding


# --------------------------------------------------------------------------- weak keys off loopback

DEPLOY_ENV_EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "embedding.env.example"


def env_example_value(name: str) -> str:
    for line in DEPLOY_ENV_EXAMPLE.read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"{name} is not in {DEPLOY_ENV_EXAMPLE}")


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])
@pytest.mark.parametrize("cpu", [[], ["--cpu"]], ids=["sglang", "cpu"])
def test_a_placeholder_or_short_key_is_refused_off_loopback(host: str, cpu: list[str]) -> None:
    placeholder = env_example_value("BOOKREC_API_KEY")
    for env, why in (({"BOOKREC_API_KEY": placeholder}, "placeholder"), ({}, "16")):
        args = ["--dry-run", *cpu, "--host", host]
        if not env:
            args += ["--api-key", "fifteen-chars-k"]
        result = run_launch(*args, env=clean_env(**env))
        assert result.returncode == 2, result.stderr
        assert f"refusing to listen on {host}" in result.stderr
        assert why in result.stderr
        assert "openssl rand -hex 24" in result.stderr
        assert result.stdout == ""  # nothing planned
        assert "fifteen-chars-k" not in result.stderr


def test_the_env_example_cannot_go_live_as_is() -> None:
    """The env example's host and key, as systemd passes them: refused, exit 2."""
    host = env_example_value("BOOKREC_SERVE_HOST")
    key = env_example_value("BOOKREC_API_KEY")
    result = run_launch("--dry-run", "--host", host, env=clean_env(BOOKREC_API_KEY=key))
    assert result.returncode == 2
    assert "placeholder" in result.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_takes_any_key(host: str) -> None:
    for key in ("k", env_example_value("BOOKREC_API_KEY")):
        result = dry_run("--host", host, BOOKREC_API_KEY=key)
        assert "refusing" not in result.stderr


def test_a_long_random_key_is_accepted_off_loopback() -> None:
    result = dry_run("--host", "0.0.0.0", BOOKREC_API_KEY="0123456789abcdef")
    assert "refusing" not in result.stderr


# --------------------------------------------------------------------------- --cpu first run

REPO_ROOT = LAUNCH_PY.resolve().parents[1]


def test_cpu_without_the_extra_names_an_install_that_works_in_a_clone() -> None:
    """-S hides site-packages: no torch, no bookrec. The hint installs this clone, not PyPI."""
    import tomllib

    result = subprocess.run(
        [sys.executable, "-S", str(LAUNCH_PY), "--cpu", "--port", "30999"],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    assert result.returncode == 1
    assert "pip install 'bookrec[cpu]'" not in result.stderr
    assert f"-m pip install -e {shlex.quote(f'{REPO_ROOT}[cpu]')}" in result.stderr
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert "torch" in " ".join(extras["optional-dependencies"]["cpu"])


def _hub_env(result: subprocess.CompletedProcess[str]) -> list[dict[str, str]]:
    """The HF_* / TRANSFORMERS_* variables of every printed command."""
    found = []
    for line in commands(result):
        env = parse_command(line, 3).env
        found.append({k: v for k, v in env.items() if k.startswith(("HF_", "TRANSFORMERS_"))})
    return found


def _online_env(**extra: str) -> dict[str, str]:
    """clean_env() without its HF_HUB_OFFLINE=1, plus `extra`."""
    env = clean_env()
    env.pop("HF_HUB_OFFLINE")
    return {**env, **extra}


OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_cpu_servers_of_local_models_run_offline(tmp_path: Path) -> None:
    """A local directory needs no Hub: its errors come at once, not after the Hub's retries."""
    (tmp_path / "emb").mkdir()
    (tmp_path / "rr").mkdir()
    args = [
        "--dry-run",
        "--cpu",
        "--model",
        str(tmp_path / "emb"),
        "--reranker",
        str(tmp_path / "rr"),
    ]
    # An endpoint that answers: only the local directories make the servers offline.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        hub = f"http://127.0.0.1:{listener.getsockname()[1]}"
        result = run_launch(*args, env=_online_env(HF_ENDPOINT=hub))
    assert result.returncode == 0, result.stderr
    assert _hub_env(result) == [OFFLINE, OFFLINE]
    assert "cannot be reached" not in result.stderr


def test_cpu_server_runs_offline_when_the_hub_cannot_be_reached() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    result = run_launch(
        "--dry-run", "--cpu", env=_online_env(HF_ENDPOINT=f"http://127.0.0.1:{port}")
    )
    assert result.returncode == 0, result.stderr
    assert _hub_env(result) == [OFFLINE]
    assert "cannot be reached" in result.stderr
    assert "HF_HUB_OFFLINE=1" in result.stderr


def test_cpu_server_may_download_when_the_hub_answers() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        hub = f"http://127.0.0.1:{listener.getsockname()[1]}"
        result = run_launch("--dry-run", "--cpu", env=_online_env(HF_ENDPOINT=hub))
    assert result.returncode == 0, result.stderr
    assert _hub_env(result) == [{}]


@pytest.mark.parametrize("name", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_the_users_offline_setting_stands(tmp_path: Path, name: str) -> None:
    result = run_launch(
        "--dry-run", "--cpu", "--model", str(tmp_path), env=_online_env(**{name: "0"})
    )
    assert result.returncode == 0, result.stderr
    assert _hub_env(result) == [{}]  # inherited as set, nothing added
