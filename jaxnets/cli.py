"""The ``jaxnets`` command line: parse, validate, call the library, write files.

``jaxnets train`` trains one model and writes ``metrics.jsonl`` (one JSON object
per evaluated epoch) and ``summary.json`` into ``--out``; ``jaxnets list`` shows
what can be named. Bad input exits with status 2 and one line naming the option,
the value given and what is allowed; nothing is written in that case.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import platform
import sys
from pathlib import Path
from typing import Sequence

from jaxnets.host_memory import retain_freed_memory

USAGE_ERROR = 2


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise UsageError(message)


def _positive_float(option: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{option}: got {text!r}; allowed: a number > 0") from None
        if not value > 0 or value != value or value == float("inf"):
            raise UsageError(f"{option}: got {text!r}; allowed: a finite number > 0")
        return value
    return parse


def _nonnegative_float(option: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{option}: got {text!r}; allowed: a number >= 0") from None
        if not value >= 0 or value == float("inf"):
            raise UsageError(f"{option}: got {text!r}; allowed: a finite number >= 0")
        return value
    return parse


def _int_at_least(option: str, minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"{option}: got {text!r}; allowed: an integer >= {minimum}") from None
        if value < minimum:
            raise UsageError(f"{option}: got {text!r}; allowed: an integer >= {minimum}")
        return value
    return parse


def _batch_size(text: str) -> int | None:
    if text.lower() == "full":
        return None
    return _int_at_least("--batch-size", 1)(text)


def _widths(text: str) -> tuple[int, ...]:
    if text.strip() in ("", "none"):
        return ()
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        widths = ()
        bad = True
    else:
        bad = any(w < 1 for w in widths)
    if bad:
        raise UsageError(f"--hidden: got {text!r}; allowed: comma-separated positive integers, e.g. 128,64 (or 'none')")
    return widths


def _hparam(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise UsageError(f"--hparam: got {text!r}; allowed: NAME=NUMBER, e.g. momentum=0.9") from None


def _model_option(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` with VALUE a Python literal (``3``, ``0.1``, ``25,25``) or a bare word."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise UsageError(f"--model-opt: got {text!r}; allowed: NAME=VALUE, e.g. channels=32,64 or dropout_rate=0.1")
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()
    return name.strip(), parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxnets", description="Train neural networks with JAX, Flax and Optax.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train one model and write metrics.jsonl and summary.json")
    g = train.add_argument_group("data")
    g.add_argument("--dataset", default="digits", help="a built-in dataset (see `jaxnets list`)")
    g.add_argument("--data-dir", default=None, help="directory with files for file-based datasets (mnist, cifar10)")
    g.add_argument("--validation", type=_nonnegative_float("--validation"), default=0.0,
                   help="fraction of the training set held out for validation (0 = none)")
    g.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None,
                   help="standardize features with training-set mean and std (default: per dataset)")
    g = train.add_argument_group("model")
    g.add_argument("--model", default="mlp", help="a model name (see `jaxnets list`)")
    g.add_argument("--hidden", type=_widths, default=None, help="hidden widths, e.g. 128,128")
    g.add_argument("--activation", default=None, help="hidden activation, e.g. relu, tanh, sigmoid")
    g.add_argument("--init", dest="kernel_init", default=None, help="weight initializer: normal, lecun, glorot, he")
    g.add_argument("--init-scale", type=_positive_float("--init-scale"), default=None,
                   help="standard deviation for --init normal")
    g.add_argument("--compute-dtype", default=None,
                   help="float32 (default), bfloat16 or float16 computation; parameters stay float32")
    g.add_argument("--model-opt", type=_model_option, action="append", default=[],
                   help="any other option of the model, NAME=VALUE (repeatable; see `jaxnets list`)")
    g = train.add_argument_group("optimization")
    g.add_argument("--optimizer", default="adam", help="sgd, momentum, nesterov, rmsprop, adam, adamw, adagrad")
    g.add_argument("--lr", type=_positive_float("--lr"), default=1e-3, help="base learning rate η")
    g.add_argument("--hparam", type=_hparam, action="append", default=[],
                   help="optimizer hyperparameter NAME=VALUE (repeatable), e.g. momentum=0.9")
    g.add_argument("--schedule", default="constant", help="constant, step, exponential, cosine")
    g.add_argument("--warmup-steps", type=_int_at_least("--warmup-steps", 0), default=0)
    g.add_argument("--clip-norm", type=_positive_float("--clip-norm"), default=None, help="clip gradients to this global norm")
    g.add_argument("--weight-decay", type=_nonnegative_float("--weight-decay"), default=None,
                   help="decoupled weight decay (multiplied by the learning rate)")
    g.add_argument("--loss", default=None, help="loss name (default: the task's)")
    g.add_argument("--l1", type=_nonnegative_float("--l1"), default=0.0, help="L1 penalty on weights")
    g.add_argument("--l2", type=_nonnegative_float("--l2"), default=0.0, help="L2 penalty ½·l2·Σw² on weights")
    g.add_argument("--epochs", type=_int_at_least("--epochs", 1), default=20)
    g.add_argument("--batch-size", type=_batch_size, default=128, help="examples per step, or 'full' for full-batch GD")
    g.add_argument("--drop-remainder", action="store_true", help="drop a last partial batch instead of masking it")
    g.add_argument("--early-stopping", type=_int_at_least("--early-stopping", 1), default=None,
                   help="stop after N evaluations without improvement of --monitor (needs --validation)")
    g.add_argument("--monitor", default="val_loss")
    g.add_argument("--loop", default="scan", help="scan (one compiled call per epoch) or python (one per step)")
    g.add_argument("--parallel", default="none",
                   help="none (one device), pmap (replicated state, batch split over devices) or sharded (jit over a mesh)")
    g.add_argument("--seed", type=_int_at_least("--seed", 0), default=0)
    g.add_argument("--nonfinite", default="halt",
                   help="on a non-finite loss/gradient: halt (exit 3), skip (skip the step), ignore")
    g = train.add_argument_group("output")
    g.add_argument("--out", default=None, help="directory for metrics.jsonl and summary.json")
    g.add_argument("--overwrite", action="store_true", help="allow --out to hold an earlier run's files")
    g.add_argument("--checkpoint-every", type=_int_at_least("--checkpoint-every", 1), default=None,
                   help="save the whole state to OUT/checkpoints every N epochs")
    g.add_argument("--keep-checkpoints", type=_int_at_least("--keep-checkpoints", 1), default=3)
    g.add_argument("--resume", action="store_true",
                   help="continue from the newest intact checkpoint in OUT/checkpoints (same options as before)")
    g.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files to OUT/tensorboard")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar")

    sub.add_parser("list", help="list models, datasets, optimizers, activations, losses and schedules")
    from jaxnets.compare_cli import add_compare_parser
    add_compare_parser(sub)
    return parser


def _check_choice(option: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise UsageError(f"{option}: got {value!r}; allowed: {', '.join(allowed)}")


def load_dataset(args, *, seed: int):
    """The dataset named by ``--dataset`` with the shared data options; bad input -> UsageError."""
    from jaxnets import data as data_lib

    options = {"seed": seed, "validation": args.validation}
    if args.standardize is not None:
        options["standardize"] = args.standardize
    if args.data_dir is not None:
        options["data_dir"] = args.data_dir
    try:
        return data_lib.load(args.dataset, **options)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(f"--dataset {args.dataset}: {err}") from None


def _prepare_train(args):
    """Validate every option and build data, model and optimizer before anything is written."""
    from jaxnets import data as data_lib
    from jaxnets import losses, models, optim
    from jaxnets.parallel import MODES
    from jaxnets.train import LOOPS, MONITORS, NONFINITE_POLICIES, TrainConfig

    _check_choice("--dataset", args.dataset, data_lib.DATASETS)
    _check_choice("--model", args.model, models.MODELS)
    _check_choice("--optimizer", args.optimizer, optim.OPTIMIZERS)
    _check_choice("--schedule", args.schedule, optim.SCHEDULES)
    _check_choice("--loop", args.loop, LOOPS)
    _check_choice("--parallel", args.parallel, MODES)
    _check_choice("--monitor", args.monitor, MONITORS)
    if args.activation is not None:
        _check_choice("--activation", args.activation, tuple(models.ACTIVATIONS))
    if args.kernel_init is not None:
        _check_choice("--init", args.kernel_init, tuple(models.INITIALIZERS))
    if args.compute_dtype is not None:
        _check_choice("--compute-dtype", args.compute_dtype, tuple(models.COMPUTE_DTYPES))
    if args.loss is not None:
        _check_choice("--loss", args.loss, tuple(losses.LOSSES))
    if args.validation >= 1:
        raise UsageError(f"--validation: got {args.validation}; allowed: a fraction in [0, 1)")
    _check_choice("--nonfinite", args.nonfinite, NONFINITE_POLICIES)
    if (args.checkpoint_every is not None or args.resume) and args.out is None:
        raise UsageError("--checkpoint-every/--resume: need --out; allowed: with --out DIR")
    if args.early_stopping is not None and args.validation == 0:
        raise UsageError("--early-stopping: needs a validation split; allowed: with --validation > 0")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir: got {args.data_dir!r}; allowed: an existing directory")
    if args.out is not None:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out: got {args.out!r}, which is a file; allowed: a directory")
        if args.resume and not (out / "checkpoints").is_dir():
            raise UsageError(f"--resume: got --out {args.out!r} with no checkpoints; allowed: the --out of a run "
                             "started with --checkpoint-every")
        if out.is_dir() and any(out.iterdir()) and not (args.overwrite or args.resume):
            raise UsageError(f"--out: got {args.out!r}, which is not empty; allowed: a new or empty "
                             "directory (or pass --overwrite)")

    dataset = load_dataset(args, seed=args.seed)

    model_options = {name: value for name, value in (
        ("hidden", args.hidden), ("activation", args.activation),
        ("kernel_init", args.kernel_init), ("init_scale", args.init_scale),
        ("dtype", args.compute_dtype)) if value is not None}
    for name, value in args.model_opt:
        if name in model_options:
            raise UsageError(f"--model-opt: got {name!r} twice; allowed: each option once")
        model_options[name] = value
    try:
        model = models.get_model(args.model, output_dim=dataset.output_dim, **model_options)
    except ValueError as err:
        raise UsageError(f"--model {args.model}: {err}") from None

    hyperparams = dict(args.hparam)
    if args.weight_decay is not None:
        hyperparams["weight_decay"] = args.weight_decay
    try:
        tx = optim.create(args.optimizer, args.lr, schedule=args.schedule, warmup_steps=args.warmup_steps,
                          total_steps=_total_steps(dataset, args), clip_norm=args.clip_norm, **hyperparams)
    except ValueError as err:
        raise UsageError(f"--optimizer {args.optimizer}: {err}") from None

    try:
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, loss=args.loss, l1=args.l1,
                             l2=args.l2, seed=args.seed, drop_remainder=args.drop_remainder, loop=args.loop,
                             parallel=args.parallel, nonfinite=args.nonfinite,
                             early_stopping_patience=args.early_stopping, monitor=args.monitor,
                             progress=args.progress and sys.stderr.isatty())
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.parallel != "none" and args.batch_size is not None and args.batch_size <= dataset.num_train:
        import jax
        devices = jax.local_device_count() if args.parallel == "pmap" else jax.device_count()
        if args.batch_size % devices:
            raise UsageError(f"--batch-size: got {args.batch_size}; allowed: a multiple of the {devices} "
                             f"devices used by --parallel {args.parallel}")
    if args.drop_remainder and args.batch_size is not None and args.batch_size > dataset.num_train:
        raise UsageError(f"--batch-size: got {args.batch_size}; allowed: <= {dataset.num_train} "
                         "(training examples) with --drop-remainder")
    return dataset, model, tx, config


def _total_steps(dataset, args) -> int:
    from jaxnets.train import steps_for
    return steps_for(dataset.num_train, args.batch_size, args.epochs, args.drop_remainder)


def _versions() -> dict[str, str]:
    import flax
    import jax
    import optax

    import jaxnets
    return {"jaxnets": jaxnets.__version__, "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "python": platform.python_version()}


#: Exit statuses of ``jaxnets train`` besides 0 (done) and 2 (bad input).
EXIT_NONFINITE = 3  # a non-finite loss/gradient/update under --nonfinite halt
EXIT_PREEMPTED = 75  # SIGTERM/SIGINT: checkpoint saved, rerun with --resume (EX_TEMPFAIL)


def run_train(args) -> int:
    from jaxnets.io import atomic_write_json, atomic_write_jsonl
    from jaxnets.train import CheckpointConfig, NonFiniteError, Preempted, fit

    dataset, model, tx, config = _prepare_train(args)
    out = Path(args.out) if args.out else None
    run_config = {key: value for key, value in vars(args).items() if key not in ("command", "hparam", "model_opt")}
    run_config["hparams"] = dict(args.hparam)
    run_config["model_options"] = dict(args.model_opt)
    run_config["train_config"] = dataclasses.asdict(config)

    checkpoint = None
    if out is not None and (args.checkpoint_every is not None or args.resume):
        checkpoint = CheckpointConfig(str(out / "checkpoints"), every_epochs=args.checkpoint_every or 1,
                                      keep=args.keep_checkpoints, resume=args.resume)
    writer = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if args.tensorboard:
            from tensorboardX import SummaryWriter
            writer = SummaryWriter(str(out / "tensorboard"), purge_step=None)
    written = {"epochs": 0}

    def on_epoch_end(history: list[dict]) -> None:
        if out is not None:
            atomic_write_jsonl(out / "metrics.jsonl", history)
        if writer is not None:
            for entry in history[written["epochs"]:]:
                for key, value in entry.items():
                    if key not in ("epoch", "step"):
                        writer.add_scalar(key, value, entry["step"])
            writer.flush()
        written["epochs"] = len(history)

    def write_summary(summary: dict) -> None:
        if out is not None:
            atomic_write_json(out / "summary.json", summary)

    try:
        result = fit(model, dataset, tx, config, checkpoint=checkpoint, on_epoch_end=on_epoch_end)
    except NonFiniteError as err:
        write_summary({"config": run_config, "status": "nonfinite", "error": str(err), "step": err.step})
        print(f"jaxnets: error: {err}", file=sys.stderr)
        return EXIT_NONFINITE
    except Preempted as err:
        write_summary({"config": run_config, "status": "preempted", "step": err.step,
                       "checkpoint": err.checkpoint, "epochs_run": len(err.history)})
        print(f"jaxnets: {err}; rerun the same command with --resume to continue", file=sys.stderr)
        return EXIT_PREEMPTED
    finally:
        if writer is not None:
            writer.close()
    summary = _summary(result, dataset, run_config)
    write_summary(summary)
    _print_table(summary, out)
    return 0


def _summary(result, dataset, run_config: dict) -> dict:
    from jaxnets.parallel import device_summary
    from jaxnets.tree import params_sha256

    final = result.final
    return {
        "config": run_config,
        "status": "done",
        "dataset": {"name": dataset.name, "task": dataset.task, "num_train": dataset.num_train,
                    "num_val": dataset.num_val, "num_test": dataset.num_test},
        **{key: value for key, value in final.items() if key not in ("time_s",)},
        "epochs_run": result.history[-1]["epoch"] + 1 if result.history else 0,
        "best_epoch": result.best_epoch,
        "wall_time_s": result.wall_time_s,
        "train_time_s": result.train_time_s,
        "steps_per_s": result.steps_per_s,
        "num_params": result.num_params,
        "params_sha256": params_sha256(result.state.params),
        "traces": result.traces,
        "devices": device_summary(),
        "versions": _versions(),
    }


def _print_table(summary: dict, out: Path | None) -> None:
    rows = [(key, summary[key]) for key in (
        "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
        "train_rmse", "test_rmse", "test_r2", "num_params", "steps_per_s", "wall_time_s") if key in summary]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {text}")
    if out is not None:
        print(f"wrote {out / 'metrics.jsonl'} and {out / 'summary.json'}")


def run_list() -> int:
    from jaxnets import data, losses, models, optim

    sections = [
        ("models", [(name, models.describe(name)) for name in models.MODELS]),
        ("datasets", [(name, data.describe(name)) for name in data.DATASETS]),
        ("optimizers", [(name, optim.describe(name)) for name in optim.OPTIMIZERS]),
        ("schedules", [(name, "") for name in optim.SCHEDULES]),
        ("activations", [(name, "") for name in models.ACTIVATIONS]),
        ("initializers", [(name, "") for name in models.INITIALIZERS]),
        ("losses", [(name, "") for name in losses.LOSSES]),
    ]
    for title, entries in sections:
        print(f"{title}:")
        width = max(len(name) for name, _ in entries)
        for name, text in entries:
            first, *rest = (text.removeprefix(f"{name}: ") or " ").splitlines()
            print(f"  {name:<{width}}  {first}".rstrip())
            for line in rest:
                print(f"  {'':<{width}}  {line.strip()}")
    return 0


def _join_negative_numbers(argv: Sequence[str]) -> list[str]:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxnets`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(_join_negative_numbers(argv))
        if args.command == "list":
            return run_list()
        # This process trains: keep freed host memory for reuse (jaxnets.host_memory).
        retain_freed_memory()
        if args.command == "compare":
            from jaxnets.compare_cli import run_compare
            return run_compare(args)
        return run_train(args)
    except UsageError as err:
        print(f"jaxnets: error: {err}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
