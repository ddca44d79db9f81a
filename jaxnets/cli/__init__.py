"""The ``jaxnets`` command line: parse, validate, call the library, write files.

One module per command (``train``, ``compare``, ``predict``, ``list``) and their
shared option parsing (``options``). Bad input exits with status 2 and one line
naming the option, the value given and what is allowed; nothing is written then.
"""
from __future__ import annotations

import sys
import warnings
from typing import Sequence

from jaxnets.cli.compare import add_compare_parser, run_compare
from jaxnets.cli.listing import run_list
from jaxnets.cli.options import USAGE_ERROR, Parser, UsageError, join_negative_numbers, report_usage_error
from jaxnets.cli.predict import add_predict_parser, run_predict
from jaxnets.cli.train import EXIT_INTERRUPTED, EXIT_NONFINITE, EXIT_PREEMPTED, add_train_parser, run_train
from jaxnets.host_memory import retain_freed_memory
from jaxnets.version import __version__


def build_parser() -> Parser:
    parser = Parser(prog="jaxnets", description="Train neural networks with JAX, Flax and Optax.")
    parser.add_argument("--version", action="version", version=f"jaxnets {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_train_parser(sub)
    add_compare_parser(sub)
    add_predict_parser(sub)
    sub.add_parser("list", help="list models, datasets, optimizers, activations, losses and schedules")
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"jaxnets: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxnets`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": run_train, "compare": run_compare, "predict": run_predict}
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning  # library notices (e.g. a resume fallback) as one line
    try:
        args = build_parser().parse_args(join_negative_numbers(argv))
        if args.command == "list":
            return run_list()
        if args.command != "predict":
            retain_freed_memory()  # this process trains: keep freed host memory for reuse (jaxnets.host_memory)
        return commands[args.command](args)
    except UsageError as err:
        return report_usage_error(err)
    finally:
        warnings.showwarning = previous


__all__ = ["main", "build_parser", "UsageError", "USAGE_ERROR", "EXIT_NONFINITE", "EXIT_PREEMPTED",
           "EXIT_INTERRUPTED"]
