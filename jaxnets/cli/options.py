"""What every ``jaxnets`` command shares: the one-line usage error, value parsers and
the data and model options that ``train`` and ``compare`` both take."""
from __future__ import annotations

import argparse
import ast
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from jaxnets import data as data_lib
from jaxnets import models

USAGE_ERROR = 2


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump) and whose help shows defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(message)


def positive_float(option: str):
    """A parser of finite numbers > 0 (that float32 can hold, so the run uses the value given)."""
    def parse(text: str) -> float:
        value = _float(option, text, "a number > 0")
        if not value > 0 or not math.isfinite(value):
            raise UsageError(f"{option}: got {text!r}; allowed: a finite number > 0")
        if value < 1.1754944e-38:  # below float32's smallest normal number: it would train as 0 or imprecisely
            raise UsageError(f"{option}: got {text!r}; allowed: a number >= 1.2e-38 (float32 holds no smaller "
                             "normal number)")
        return value
    return parse


def nonnegative_float(option: str):
    def parse(text: str) -> float:
        value = _float(option, text, "a number >= 0")
        if not value >= 0 or not math.isfinite(value):
            raise UsageError(f"{option}: got {text!r}; allowed: a finite number >= 0")
        return value
    return parse


def _float(option: str, text: str, allowed: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{option}: got {text!r}; allowed: {allowed}") from None


def int_at_least(option: str, minimum: int, maximum: int | None = None):
    allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"{option}: got {text!r}; allowed: {allowed}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise UsageError(f"{option}: got {text!r}; allowed: {allowed}")
        return value
    return parse


def seed(option: str):
    """Seeds are 32-bit here (``jax.random.key``): anything larger would be cut silently."""
    return int_at_least(option, 0, 2**32 - 1)


def batch_size(text: str) -> int | None:
    if text.lower() == "full":
        return None
    return int_at_least("--batch-size", 1)(text)


def widths(text: str) -> tuple[int, ...]:
    if text.strip() in ("", "none"):
        return ()
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values, bad = (), True
    else:
        bad = any(w < 1 for w in values)
    if bad:
        raise UsageError(f"--hidden: got {text!r}; allowed: comma-separated positive integers, e.g. 128,64 (or 'none')")
    return values


def hparam(text: str) -> tuple[str, float | bool]:
    """``NAME=NUMBER`` or ``NAME=true/false`` (e.g. ``eps_in_sqrt=False``)."""
    name, sep, value = text.partition("=")
    if sep and name.strip() and value.strip().lower() in ("true", "false"):
        return name.strip(), value.strip().lower() == "true"
    try:
        if not sep or not name.strip():
            raise ValueError
        number = float(value)
    except ValueError:
        raise UsageError(f"--hparam: got {text!r}; allowed: NAME=NUMBER or NAME=true/false, "
                         "e.g. momentum=0.9") from None
    if not math.isfinite(number):
        raise UsageError(f"--hparam: got {text!r}; allowed: a finite number")
    return name.strip(), number


def model_option(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` with VALUE a Python literal (``3``, ``0.1``, ``25,25``) or a bare word."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise UsageError(f"--model-opt: got {text!r}; allowed: NAME=VALUE, e.g. channels=32,64 or dropout_rate=0.1")
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()
    return name.strip(), parsed


def check_choice(option: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise UsageError(f"{option}: got {value!r}; allowed: {', '.join(allowed)}")


def add_data_options(group, *, default_dataset: str, validation: float, validation_help: str) -> None:
    group.add_argument("--dataset", default=default_dataset, help="a built-in dataset (see `jaxnets list`)")
    group.add_argument("--data-dir", default=None,
                       help="directory with files for file-based datasets (mnist, fashion_mnist, cifar10); "
                            "default: $JAXNETS_DATA_DIR")
    group.add_argument("--validation", type=nonnegative_float("--validation"), default=validation,
                       help=validation_help)
    group.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None,
                       help="standardize features with training-set mean and std (default: per dataset)")


def check_data_options(args) -> None:
    check_choice("--dataset", args.dataset, data_lib.DATASETS)
    if not args.validation < 1:
        raise UsageError(f"--validation: got {args.validation}; allowed: a fraction in [0, 1)")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir: got {args.data_dir!r}; allowed: an existing directory")


def load_dataset(args, *, seed: int):
    """The dataset named by ``--dataset`` with the shared data options; bad input -> UsageError."""
    options: dict[str, Any] = {"seed": seed, "validation": args.validation}
    if args.standardize is not None:
        options["standardize"] = args.standardize
    if args.data_dir is not None:
        options["data_dir"] = args.data_dir
    try:
        return data_lib.load(args.dataset, **options)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(f"--dataset {args.dataset}: {err}") from None


def build_model(args, dataset, options: dict[str, Any]):
    """The registry model ``--model`` with ``options`` and the ``--model-opt`` pairs."""
    check_choice("--model", args.model, tuple(models.MODELS))
    options = dict(options)
    for name, value in args.model_opt:
        if name in options:
            raise UsageError(f"--model-opt: got {name!r} twice; allowed: each option once")
        options[name] = value
    try:
        return models.get_model(args.model, output_dim=dataset.output_dim, **options), options
    except ValueError as err:
        raise UsageError(f"--model {args.model}: {err}") from None


def check_out_dir(option: str, out: Path, *, may_hold_files: bool) -> None:
    """``out`` can be created and written, and holds no earlier run unless allowed."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option}: got {str(out)!r}, which is a file; allowed: a directory")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir():
        raise UsageError(f"{option}: got {str(out)!r}, under the file {str(parent)!r}; allowed: a directory path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option}: got {str(out)!r}, but {str(parent)!r} is not writable; allowed: a "
                         "directory you can write to")
    if out.is_dir() and any(out.iterdir()) and not may_hold_files:
        raise UsageError(f"{option}: got {str(out)!r}, which is not empty; allowed: a new or empty "
                         "directory (or pass --overwrite)")


def join_negative_numbers(argv: Sequence[str]) -> list[str]:
    """``--lr -1e-3`` -> ``--lr=-1e-3``: argparse would read ``-1e-3`` as an option and
    report "expected one argument" instead of the value's real problem."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and token.startswith("-"):
            try:
                float(token)
            except ValueError:
                pass
            else:
                out[-1] = f"{out[-1]}={token}"
                continue
        out.append(token)
    return out


def report_usage_error(error: UsageError) -> int:
    print(f"jaxnets: error: {error}", file=sys.stderr)
    return USAGE_ERROR
