"""One run of ``bookrec``: parse the command line, run its subcommand, return the exit status."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from .commands import COMMANDS
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, classify_error
from .parser import build_parser
from .stores import shown

__all__ = ["main"]


@contextmanager
def _logging(debug: bool) -> Iterator[None]:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    if not debug:
        # The SDK's transport logs every retry at INFO; our own warnings are enough.
        for noisy in ("httpx", "httpx2", "openai"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run ``bookrec`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Output is a table for people by default, JSON with ``--json``. Errors are one line on
    stderr with a non-zero exit status (see ``errors``), never a traceback (``--debug`` shows
    it).
    """
    out = sys.stdout if out is None else out
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    command = COMMANDS[args.command]
    with _logging(debug):
        try:
            return command(args, out)
        except KeyboardInterrupt:
            print("bookrec: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # The reader of our output went away (e.g. `| head`): not an error worth a message.
            _silence_stdout()
            return EXIT_OK
        except Exception as exc:
            code, message = classify_error(exc)
            if debug:
                traceback.print_exc(file=sys.stderr)
            # A message may quote a connection string: never with its password.
            print(f"bookrec: error: {shown(message)}", file=sys.stderr)
            return code


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
