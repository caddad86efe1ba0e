"""``wildrayzer <command>``: one console script; each command lives in its own module and is imported lazily.

Every command module exposes ``main(argv: list[str]) -> int``. A :class:`~wildrayzer.errors.UserError` ends in one
line on stderr and exit code 2; ``--debug`` (anywhere on the command line) keeps the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import EXIT_USER_ERROR, UserError

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("wildrayzer.train.run", "train a stage: --config FILE [key=value ...]"),
    "infer": ("wildrayzer.infer.run", "run inference/evaluation: --config FILE [key=value ...]"),
    "data": ("wildrayzer.data.cli", "synthesise, import or check datasets (synth | import | check)"),
    "pseudolabel": ("wildrayzer.pseudolabel.cli", "export pseudo-motion masks to inspect: --config FILE [--out DIR]"),
    "demo": ("wildrayzer.commands.demo", "launch the Gradio demo"),
    "bench": ("wildrayzer.commands.bench",
              "benchmarks: speed | quality | synth | pseudolabel | headroom | poses | detail | amp"),
    "schedule": ("wildrayzer.commands.schedule",
                 "train the tiny CPU schedule, stages 1 -> 2 -> 3 (--out DIR --steps S1 S2 S3)"),
    "quickstart": ("wildrayzer.commands.quickstart", "generate the embedded data and run the main job on it"),
    "convert": ("wildrayzer.official.convert", "convert the authors' released checkpoint: official CKPT.pt --out DIR"),
    "parity": ("wildrayzer.official.parity", "numerical parity with the authors' code: official FIXTURE_DIR"),
}


def user_message(e: UserError) -> str:
    """The one line to show for ``e``. A DataLoader worker re-raises a worker's error with the worker traceback in
    its message ("Caught DataError in DataLoader worker process 0. Original Traceback ..."); the product's own message
    is the last line of it, after the exception's qualified name."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(e).__name__
    prefix = f"{type(e).__module__}.{type(e).__qualname__}: "
    last = lines[-1].strip()
    return last[len(prefix):] if last.startswith(prefix) else " ".join(ln.strip() for ln in lines)


def run_guarded(fn: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Run ``fn(argv)`` turning user errors into one line + exit code 2 (unless --debug)."""
    debug = "--debug" in argv or os.environ.get("WILDRAYZER_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    try:
        return int(fn(argv) or 0)
    except UserError as e:
        if debug:
            raise
        print(f"error: {user_message(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def config_arg_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Parser for ``--config FILE key=value ...`` commands (the published train/inference form)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", required=True, help="YAML config (may name a 'base:' file it extends)")
    p.add_argument("overrides", nargs="*", help="OmegaConf dotlist overrides, e.g. training.lr=2e-4")
    return p


def parse_config_args(argv: list[str], prog: str, description: str):
    """-> resolved config from ``--config FILE key=value ...``; argparse usage errors exit 2 by themselves."""
    from .config import load_config

    args = config_arg_parser(prog, description).parse_args(argv)
    return load_config(Path(args.config), args.overrides)


def _usage() -> str:
    lines = ["usage: wildrayzer <command> [args]  (add --debug for tracebacks)", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else EXIT_USER_ERROR
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        print(f"error: unknown command '{name}'{hint}\n\n{_usage()}", file=sys.stderr)
        return EXIT_USER_ERROR
    module = importlib.import_module(COMMANDS[name][0])
    return run_guarded(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
