"""``jaxnets compare``: the optimizer-comparison protocol on any built-in model and dataset.

    jaxnets compare --dataset mnist1d --model mlp --hidden 100,100 --optimizers sgd,momentum,rmsprop,adam \\
        --seeds 5 --epochs 50 --out results/compare_mnist1d

Every learning rate is tuned on a validation split carved from the training set
(``--validation``), the grid is extended until the optimum is bracketed, the chosen
setting is retrained over ``--seeds`` seeds and evaluated on test; ``--out`` receives
``results.json``, ``report.md``, ``curves.png`` and ``summary.png`` (see
``jaxnets.compare`` and ``jaxnets.report``). Bad input exits with status 2 and one
line naming the option; nothing is written then.

"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from jaxnets import compare, models, optim, report
from jaxnets.cli import options as opt
from jaxnets.cli.options import UsageError
from jaxnets.epochs import steps_for


def _names(option: str):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(part.strip() for part in text.split(",") if part.strip())
        if not names:
            raise UsageError(f"{option}: got {text!r}; allowed: comma-separated names")
        return names
    return parse


def _lr_grid(text: str) -> tuple[str, tuple[float, ...]]:
    name, sep, values = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        grid = tuple(float(v) for v in values.split(","))
        if not grid or not all(v > 0 for v in grid):
            raise ValueError
    except ValueError:
        raise UsageError(f"--lr-grid: got {text!r}; allowed: OPTIMIZER=LR,LR,... with every LR > 0, "
                                "e.g. sgd=0.01,0.1,1") from None
    return name.strip(), grid


def _pair(text: str) -> tuple[str, str]:
    parts = tuple(part.strip() for part in text.split(","))
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise UsageError(f"--pair: got {text!r}; allowed: A,B with two different optimizer names")
    return parts  # type: ignore[return-value]


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``compare`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``).

    Args:
      subparsers: the sub-parsers action of the main parser.

    Returns:
      The new sub-parser.

    >>> parser = argparse.ArgumentParser(prog="jaxnets")
    >>> sub = add_compare_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["compare", "--optimizers", "sgd,adam", "--seeds", "3"])
    >>> args.optimizers, args.seeds, args.validation
    (('sgd', 'adam'), 3, 0.125)
    """
    parser = subparsers.add_parser(
        "compare", help="compare optimizers: learning rates tuned on validation, repeated over seeds, report")
    g = parser.add_argument_group("data")
    opt.add_data_options(g, default_dataset="mnist1d", validation=0.125,
                         validation_help="fraction of the training set held out for choosing learning rates "
                                         "(0 < v < 1)")
    g.add_argument("--split-seed", type=opt.seed("--split-seed"), default=0, help="seed of the validation split")
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="mlp", help="a model name (see `jaxnets list`)")
    g.add_argument("--hidden", type=opt.widths, default=None, help="hidden widths, e.g. 100,100")
    g.add_argument("--model-opt", type=opt.model_option, action="append", default=[],
                   help="any other model option, NAME=VALUE (repeatable)")
    g = parser.add_argument_group("protocol")
    g.add_argument("--optimizers", type=_names("--optimizers"), default=("sgd", "momentum", "adam"),
                   help="comma-separated optimizer names (default sgd,momentum,adam)")
    g.add_argument("--seeds", type=opt.int_at_least("--seeds", 2), default=5,
                   help="evaluation seeds per optimizer (>= 2, for an interval)")
    g.add_argument("--selection-seeds", type=opt.int_at_least("--selection-seeds", 1),
                   default=compare.ComparisonConfig.selection_seeds,
                   help="seeds per grid point while choosing the learning rate")
    g.add_argument("--refine", action=argparse.BooleanOptionalAction, default=compare.ComparisonConfig.refine,
                   help="after bracketing, try factor-2 steps between the optimum and its neighbours")
    g.add_argument("--epochs", type=opt.int_at_least("--epochs", 1), default=20)
    g.add_argument("--batch-size", type=opt.batch_size, default=100, help="examples per step, or 'full'")
    g.add_argument("--schedule", default="constant", help="constant, step, exponential, cosine")
    g.add_argument("--augment", default=None, help="augment training batches: crop_flip (4-pixel crop + flip)")
    g.add_argument("--grid-points", type=opt.int_at_least("--grid-points", 1), default=7,
                   help="learning rates in each default grid")
    g.add_argument("--grid-step", type=opt.positive_float("--grid-step"), default=10 ** 0.5,
                   help="factor between neighbouring learning rates (> 1)")
    g.add_argument("--lr-grid", type=_lr_grid, action="append", default=[],
                   help="an explicit grid for one optimizer, OPTIMIZER=LR,LR,... (repeatable)")
    g.add_argument("--max-extensions", type=opt.int_at_least("--max-extensions", 0), default=3,
                   help="how many times a grid may be extended past an edge")
    g.add_argument("--target-loss", type=opt.positive_float("--target-loss"), default=None,
                   help="report epochs until the training loss first reaches this value")
    g.add_argument("--eval-every", type=opt.int_at_least("--eval-every", 1), default=1)
    g.add_argument("--pair", type=_pair, action="append", default=[],
                   help="A,B: report paired differences A − B (repeatable; default sgd,adam when both run)")
    g = parser.add_argument_group("output")
    g.add_argument("--out", default=None, help="output directory (default results/compare_<dataset>_<model>)")
    g.add_argument("--overwrite", action="store_true", help="allow --out to hold earlier files")
    return parser


def _prepare(args) -> tuple[Any, Any, list, Any, Path, dict]:
    """Check every option and build data, model, arms and config before anything is written."""
    if not 0 < args.validation < 1:
        raise UsageError(f"--validation: got {args.validation}; allowed: a fraction 0 < v < 1 (learning rates "
                         "are chosen on it)")
    opt.check_data_options(args)
    opt.check_choice("--model", args.model, tuple(models.MODELS))
    opt.check_choice("--schedule", args.schedule, optim.SCHEDULES)
    for name in args.optimizers:
        opt.check_choice("--optimizers", name, optim.OPTIMIZERS)
    if len(set(args.optimizers)) != len(args.optimizers):
        raise UsageError(f"--optimizers: got {','.join(args.optimizers)!r}; allowed: each name once")
    if not args.grid_step > 1:
        raise UsageError(f"--grid-step: got {args.grid_step}; allowed: a number > 1")
    grids = dict(args.lr_grid)
    for name in grids:
        if name not in args.optimizers:
            raise UsageError(f"--lr-grid: got {name!r}; allowed: one of --optimizers "
                                 f"({', '.join(args.optimizers)})")
    for pair in args.pair:
        for name in pair:
            if name not in args.optimizers:
                raise UsageError(f"--pair: got {name!r}; allowed: one of --optimizers "
                                     f"({', '.join(args.optimizers)})")
    out = Path(args.out) if args.out else Path("results") / f"compare_{args.dataset}_{args.model}"
    opt.check_out_dir("--out", out, may_hold_files=args.overwrite)

    dataset = opt.load_dataset(args, seed=args.split_seed)
    model, model_options = opt.build_model(args, dataset, {} if args.hidden is None else {"hidden": args.hidden})
    total = steps_for(dataset.num_train, args.batch_size, args.epochs)
    for name in args.optimizers:  # the schedule's own options are checked before any training
        try:
            optim.create(name, 1.0, schedule=args.schedule, total_steps=total)
        except ValueError as err:
            raise UsageError(f"--schedule {args.schedule}: {err}") from None

    try:
        arms = [compare.Arm(name, name, lr_grid=grids.get(name)) for name in args.optimizers]
        config = compare.ComparisonConfig(
            epochs=args.epochs, batch_size=args.batch_size, schedule=args.schedule, seeds=args.seeds,
            selection_seeds=args.selection_seeds, refine=args.refine, grid_points=args.grid_points, grid_step=args.grid_step,
            max_extensions=args.max_extensions, target_loss=args.target_loss, eval_every=args.eval_every,
            pairs=tuple(args.pair) if args.pair else None, augment=args.augment)
    except ValueError as err:
        raise UsageError(str(err)) from None
    info = {"name": args.model, "options": {k: list(v) if isinstance(v, tuple) else v
                                            for k, v in model_options.items()},
            "load_options": {"seed": args.split_seed, "validation": args.validation,
                             **({} if args.standardize is None else {"standardize": args.standardize})}}
    return dataset, model, arms, config, out, info


def _recorded_args(args) -> dict[str, Any]:
    """The parsed options, JSON-ready, without where the files go."""
    skip = ("out", "overwrite", "command", "func")
    return {key: [list(v) if isinstance(v, tuple) else v for v in value] if isinstance(value, (list, tuple))
            else value for key, value in vars(args).items() if key not in skip and not callable(value)}


def run_compare(args) -> int:
    """Run ``jaxnets compare`` for parsed ``args``; returns the exit status (0, or 2 on bad input).

    Prints progress to stderr, then the summary table, the verdicts and the report's path.
    """
    try:
        dataset, model, arms, config, out, info = _prepare(args)
    except UsageError as err:
        return opt.report_usage_error(err)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    say(dataset.summary())
    results = compare.run_comparison(model, dataset, arms, config,
                                     experiment=f"compare_{args.dataset}_{args.model}", model_info=info,
                                     extra={"cli_args": _recorded_args(args)}, on_event=say)
    compare.save_results(results, out)
    paths = report.write_report(out, results)
    print(report.summary_table(results))
    print()
    for sentence in report.verdicts(results):
        print(f"- {sentence}")
    print(f"wrote {out / 'results.json'}, {paths['report']}, {paths['curves']} and {paths['summary']}")
    return 0


__all__ = ["add_compare_parser", "run_compare"]
