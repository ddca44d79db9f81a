"""``jaxnets train``: train one model and write its metrics, summary, curves and model.

Every option is checked, the data loaded and the model built before anything is
written. ``--out DIR`` receives ``metrics.jsonl`` (one JSON object per evaluated
epoch), ``summary.json``, ``curves.png`` and ``model/`` (for ``jaxnets predict``),
each written atomically.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import sys
import uuid
import warnings
from pathlib import Path

import jax

from jaxnets import losses, models, optim
from jaxnets.checkpoint import CorruptCheckpointError
from jaxnets.cli import options as opt
from jaxnets.cli.options import UsageError
from jaxnets.config import LOOPS, MONITORS, CheckpointConfig, TrainConfig
from jaxnets.epochs import steps_for
from jaxnets.inference import save_model
from jaxnets.io import atomic_write_json, atomic_write_jsonl
from jaxnets.parallel import MODES, device_summary, initialize_distributed
from jaxnets.figures import plot_run_curves
from jaxnets.resume import ResumeMismatch
from jaxnets.steps import NONFINITE_POLICIES
from jaxnets.train import NonFiniteError, Preempted, fit, prepare, devices_for
from jaxnets.tree import params_sha256
from jaxnets.version import __version__

#: Exit statuses of ``jaxnets train`` besides 0 (done) and 2 (bad input).
EXIT_NONFINITE = 3  # a non-finite loss/gradient/update under --nonfinite halt
EXIT_PREEMPTED = 75  # SIGTERM/SIGINT with checkpoints: one saved, rerun with --resume (EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # Ctrl-C without checkpoints: metrics.jsonl so far is kept (128 + SIGINT)
EXIT_STATUSES = """exit statuses: 0 done; 2 bad input (one line, nothing written); 3 non-finite loss, gradient or
update under --nonfinite halt; 75 stopped by SIGTERM/SIGINT after saving a checkpoint (rerun with
--resume); 130 interrupted by Ctrl-C without checkpoints (metrics.jsonl so far kept)"""
#: What a run writes into --out (all of it is replaced by --overwrite).
OUTPUTS = ("metrics.jsonl", "summary.json", "curves.png", "model", "checkpoints", "tensorboard")


def add_train_parser(sub) -> argparse.ArgumentParser:
    train = sub.add_parser("train", help="train one model and write metrics.jsonl, summary.json, curves.png, model/",
                           epilog=EXIT_STATUSES)
    g = train.add_argument_group("data")
    opt.add_data_options(g, default_dataset="digits", validation=0.0,
                         validation_help="fraction of the training set held out for validation (0 = none)")
    g = train.add_argument_group("model")
    g.add_argument("--model", default="mlp", help="a model name (see `jaxnets list`)")
    g.add_argument("--hidden", type=opt.widths, default=None, help="hidden widths, e.g. 128,128")
    g.add_argument("--activation", default=None, help="hidden activation, e.g. relu, tanh, sigmoid")
    g.add_argument("--init", dest="kernel_init", default=None, help="weight initializer: normal, lecun, glorot, he")
    g.add_argument("--init-scale", type=opt.positive_float("--init-scale"), default=None,
                   help="standard deviation for --init normal")
    g.add_argument("--compute-dtype", default=None,
                   help="float32 (default), bfloat16 or float16 computation; parameters stay float32")
    g.add_argument("--model-opt", type=opt.model_option, action="append", default=[],
                   help="any other option of the model, NAME=VALUE (repeatable; see `jaxnets list`)")
    _add_optimization(train.add_argument_group("optimization"))
    _add_output(train.add_argument_group("output"))
    _add_distributed(train.add_argument_group("several processes or hosts"))
    return train


def _add_optimization(g) -> None:
    g.add_argument("--optimizer", default="adam", help=", ".join(optim.OPTIMIZERS))
    g.add_argument("--lr", type=opt.positive_float("--lr"), default=1e-3, help="base learning rate η")
    g.add_argument("--hparam", type=opt.hparam, action="append", default=[],
                   help="optimizer or schedule hyperparameter NAME=VALUE (repeatable), e.g. momentum=0.9, "
                        "step_size=10, eps_in_sqrt=false")
    g.add_argument("--schedule", default="constant", help=", ".join(optim.SCHEDULES))
    g.add_argument("--warmup-steps", type=opt.int_at_least("--warmup-steps", 0), default=0,
                   help="linear learning-rate warm-up over this many steps")
    g.add_argument("--clip-norm", type=opt.positive_float("--clip-norm"), default=None,
                   help="clip gradients to this global norm")
    g.add_argument("--weight-decay", type=opt.nonnegative_float("--weight-decay"), default=None,
                   help="decoupled weight decay (multiplied by the learning rate; default: the optimizer's)")
    g.add_argument("--loss", default=None, help="loss name (default: the task's): " + ", ".join(losses.LOSSES))
    g.add_argument("--l1", type=opt.nonnegative_float("--l1"), default=0.0, help="L1 penalty on weights")
    g.add_argument("--l2", type=opt.nonnegative_float("--l2"), default=0.0, help="L2 penalty ½·l2·Σw² on weights")
    g.add_argument("--epochs", type=opt.int_at_least("--epochs", 1), default=20, help="passes over the training set")
    g.add_argument("--batch-size", type=opt.batch_size, default=128, help="examples per step, or 'full' for full-batch GD")
    g.add_argument("--drop-remainder", action="store_true", help="drop a last partial batch instead of masking it")
    g.add_argument("--augment", default=None, help="augment training batches: crop_flip (4-pixel crop + flip)")
    g.add_argument("--log-every-steps", type=opt.int_at_least("--log-every-steps", 1), default=None,
                   help="record every K-th step's training loss (in metrics.jsonl as step_losses, and TensorBoard)")
    g.add_argument("--early-stopping", type=opt.int_at_least("--early-stopping", 1), default=None,
                   help="stop after N evaluations without improvement of --monitor (needs --validation)")
    g.add_argument("--monitor", default="val_loss", help="what early stopping watches: " + ", ".join(MONITORS))
    g.add_argument("--loop", default="scan", help="scan (one compiled call per epoch) or python (one per step)")
    g.add_argument("--parallel", default="none",
                   help="none (one device), pmap (replicated state, batch split over devices) or sharded (jit over a mesh)")
    g.add_argument("--seed", type=opt.seed("--seed"), default=0,
                   help="seed of initialization, dropout and data order (0 .. 2^32-1)")
    g.add_argument("--nonfinite", default="halt",
                   help="on a non-finite loss/gradient: halt (exit 3), skip (skip the step), ignore")


def _add_distributed(g) -> None:
    g.add_argument("--coordinator", default=None,
                   help="HOST:PORT of process 0 for a run over several processes or hosts (jax.distributed; "
                        "needs --parallel sharded); 'auto' lets JAX read a cluster's settings (e.g. SLURM)")
    g.add_argument("--num-processes", type=opt.int_at_least("--num-processes", 1), default=None,
                   help="how many processes take part (with --coordinator HOST:PORT)")
    g.add_argument("--process-id", type=opt.int_at_least("--process-id", 0), default=None,
                   help="this process's index, 0 .. N-1 (process 0 writes --out)")


def _add_output(g) -> None:
    g.add_argument("--out", default=None, help="directory for metrics.jsonl, summary.json, curves.png and model/")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in --out (its files and every checkpoint are removed first)")
    g.add_argument("--checkpoint-every", type=opt.int_at_least("--checkpoint-every", 1), default=None,
                   help="save the whole state to OUT/checkpoints every N epochs")
    g.add_argument("--keep-checkpoints", type=opt.int_at_least("--keep-checkpoints", 1), default=3,
                   help="how many complete checkpoints to keep")
    g.add_argument("--resume", action="store_true",
                   help="continue from the newest intact checkpoint in OUT/checkpoints (same options as before; "
                        "starts fresh if there is none yet)")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files to OUT/tensorboard (needs the 'tensorboard' extra: "
                        "pip install 'jaxnets[tensorboard]')")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar (a plain line per evaluation when stderr is not a terminal)")


def check_options(args) -> None:
    """Everything that can be checked from the options alone."""
    opt.check_data_options(args)
    opt.check_choice("--model", args.model, tuple(models.MODELS))
    opt.check_choice("--optimizer", args.optimizer, optim.OPTIMIZERS)
    opt.check_choice("--schedule", args.schedule, optim.SCHEDULES)
    opt.check_choice("--loop", args.loop, LOOPS)
    opt.check_choice("--parallel", args.parallel, MODES)
    opt.check_choice("--monitor", args.monitor, MONITORS)
    opt.check_choice("--nonfinite", args.nonfinite, NONFINITE_POLICIES)
    for option, value, allowed in (("--activation", args.activation, models.ACTIVATIONS),
                                   ("--init", args.kernel_init, models.INITIALIZERS),
                                   ("--compute-dtype", args.compute_dtype, models.COMPUTE_DTYPES),
                                   ("--loss", args.loss, losses.LOSSES)):
        if value is not None:
            opt.check_choice(option, value, tuple(allowed))
    if (args.checkpoint_every is not None or args.resume) and args.out is None:
        raise UsageError("--checkpoint-every/--resume: need --out; allowed: with --out DIR")
    if args.overwrite and args.resume:
        raise UsageError("--overwrite: got it with --resume; allowed: one of them (--overwrite starts over, "
                         "--resume continues)")
    check_distributed_options(args)
    if args.early_stopping is not None and args.validation == 0:
        raise UsageError("--early-stopping: needs a validation split; allowed: with --validation > 0")
    if args.out is not None:
        if not args.out.strip():
            raise UsageError("--out: got ''; allowed: a directory path")
        out = Path(args.out)
        opt.check_out_dir("--out", out, may_hold_files=args.overwrite or args.resume)
        earlier = [name for name in OUTPUTS if name != "checkpoints" and (out / name).exists()]
        if args.resume and earlier and not any((out / "checkpoints").glob("step_*/manifest.json")):
            raise UsageError(f"--resume: got --out {args.out!r}, which holds a run without checkpoints "
                             f"({earlier[0]}); allowed: --overwrite to start that run over, or a new --out")
    if args.tensorboard:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise UsageError("--tensorboard: needs the tensorboardX package; allowed: after "
                             "pip install 'jaxnets[tensorboard]'") from None


def check_distributed_options(args) -> None:
    """--coordinator HOST:PORT needs --num-processes and --process-id; all three need --parallel sharded."""
    given = [name for name in ("coordinator", "num_processes", "process_id") if getattr(args, name) is not None]
    if not given:
        return
    if args.coordinator is None:
        raise UsageError(f"--{given[0].replace('_', '-')}: got it without --coordinator; allowed: with "
                         "--coordinator HOST:PORT (or 'auto')")
    if args.checkpoint_every is not None or args.resume:
        raise UsageError("--checkpoint-every/--resume: got them with --coordinator; allowed: one process only "
                         "(checkpoints of a run over several processes are not written yet)")
    if args.parallel != "sharded":
        raise UsageError(f"--parallel: got {args.parallel!r} with --coordinator; allowed: 'sharded' (one program "
                         "over every process's devices)")
    if args.coordinator != "auto":
        host, _, port = args.coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--coordinator: got {args.coordinator!r}; allowed: HOST:PORT, e.g. 10.0.0.1:1234, "
                             "or 'auto'")
        if args.num_processes is None or args.process_id is None:
            raise UsageError("--coordinator: got HOST:PORT without --num-processes and --process-id; allowed: "
                             "all three together")
        if args.process_id >= args.num_processes:
            raise UsageError(f"--process-id: got {args.process_id}; allowed: 0 .. {args.num_processes - 1}")


def join_processes(args) -> None:
    """Join the other processes before any JAX computation (jax.distributed needs that)."""
    if args.coordinator == "auto":
        import jax
        jax.distributed.initialize()
    elif args.coordinator is not None:
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)


def build_run(args):
    """Data, model, optimizer and config, all checked; nothing written yet."""
    check_options(args)
    dataset = opt.load_dataset(args, seed=args.seed)
    given = {name: value for name, value in (
        ("hidden", args.hidden), ("activation", args.activation), ("kernel_init", args.kernel_init),
        ("init_scale", args.init_scale), ("dtype", args.compute_dtype)) if value is not None}
    model, model_options = opt.build_model(args, dataset, given)
    try:
        tx = optim.create(args.optimizer, args.lr, schedule=args.schedule, warmup_steps=args.warmup_steps,
                          total_steps=steps_for(dataset.num_train, args.batch_size, args.epochs, args.drop_remainder),
                          clip_norm=args.clip_norm, **_optimizer_hyperparams(args))
    except ValueError as err:
        field = str(err).split(":", 1)[0]
        if field in _SCHEDULE_FIELDS:
            raise UsageError(f"--schedule {args.schedule}: {err} (set it with --hparam {field}=VALUE)") from None
        raise UsageError(f"--optimizer {args.optimizer}: {err}") from None
    try:
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, loss=args.loss, l1=args.l1,
                             l2=args.l2, seed=args.seed, drop_remainder=args.drop_remainder, loop=args.loop,
                             parallel=args.parallel, nonfinite=args.nonfinite,
                             early_stopping_patience=args.early_stopping, monitor=args.monitor,
                             log_every_steps=args.log_every_steps, augment=args.augment,
                             progress=args.progress and sys.stderr.isatty())
        run = prepare(model, dataset, tx, config, num_devices=devices_for(args.parallel))
    except ValueError as err:
        raise UsageError(_option_named(str(err))) from None
    if args.parallel != "none" and run.geometry.batch_size % devices_for(args.parallel):
        raise UsageError(f"--batch-size: got {args.batch_size}; allowed: a multiple of the "
                         f"{devices_for(args.parallel)} devices used by --parallel {args.parallel}")
    return dataset, model, model_options, tx, config


#: Schedule arguments a user sets with --hparam.
_SCHEDULE_FIELDS = ("step_size", "decay_rate", "total_steps", "alpha", "warmup_steps")
#: Config fields and the options that set them, for one-line errors that name the option.
_OPTION_OF = {"loss": "--loss", "head": "--loss", "monitor": "--monitor", "model": "--model",
              "batch_size": "--batch-size", "early_stopping_patience": "--early-stopping"}


def _option_named(message: str) -> str:
    """``loss: got ...`` -> ``--loss: got ...`` (the option the user typed)."""
    field, _, rest = message.partition(":")
    return f"{_OPTION_OF[field]}:{rest}" if field in _OPTION_OF else message


def _optimizer_hyperparams(args) -> dict:
    hyperparams = dict(args.hparam)
    if "total_steps" in hyperparams:
        raise UsageError("--hparam: got total_steps; allowed: other names (total_steps is --epochs × steps per epoch)")
    if args.weight_decay is not None:
        hyperparams["weight_decay"] = args.weight_decay
    return hyperparams


def run_train(args) -> int:
    check_distributed_options(args)
    join_processes(args)
    dataset, model, model_options, tx, config = build_run(args)
    # Every process trains; process 0 alone writes (the others hold the same replicated state).
    out = Path(args.out) if args.out and jax.process_index() == 0 else None
    run_config = _run_config(args, model_options, config)
    checkpoint = None
    if args.out:
        if args.overwrite and out is not None:
            remove_earlier_run(out)
        if args.checkpoint_every is not None or args.resume:
            checkpoint = CheckpointConfig(str(Path(args.out) / "checkpoints"), every_epochs=args.checkpoint_every or 1,
                                          keep=args.keep_checkpoints, resume=args.resume)
    recorder = EpochRecorder(out, args.tensorboard, args.progress and not sys.stderr.isatty())
    try:
        result = fit(model, dataset, tx, config, checkpoint=checkpoint, on_epoch_end=recorder)
    except (ResumeMismatch, CorruptCheckpointError) as err:
        raise UsageError(f"--resume: {err}") from None
    except NonFiniteError as err:
        _write_summary(out, {"config": run_config, "status": "nonfinite", "error": str(err), "step": err.step})
        print(f"jaxnets: error: {err}", file=sys.stderr)
        return EXIT_NONFINITE
    except Preempted as err:
        _write_summary(out, {"config": run_config, "status": "preempted", "step": err.step,
                             "checkpoint": err.checkpoint, "epochs_run": len(err.history)})
        print(f"jaxnets: {err}; rerun the same command with --resume to continue", file=sys.stderr)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        last = recorder.history[-1] if recorder.history else {"epoch": -1, "step": 0}
        kept = f"; {out / 'metrics.jsonl'} holds the epochs so far" if out is not None and recorder.history else ""
        print(f"jaxnets: interrupted after epoch {last['epoch']}, step {last['step']}{kept} (no checkpoint: "
              "use --checkpoint-every to be able to resume)", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        recorder.close()
    summary = _summary(result, dataset, run_config)
    if out is not None:
        plot_run_curves(result.history, out / "curves.png", title=f"{args.model} on {args.dataset}")
        save_model(out / "model", result.state, model, feature_shape=dataset.input_shape, task=dataset.task,
                   registry={"name": args.model, "options": _jsonable(model_options)})
    _write_summary(out, summary)
    _print_table(summary, out)
    return 0


def remove_earlier_run(out: Path) -> None:
    """Move every output of an earlier run aside in one rename, then delete it.

    A crash mid-way leaves the earlier run whole (before the rename) or none of it
    in place (after): never old checkpoints beside new ones.
    """
    present = [name for name in OUTPUTS if (out / name).exists()]
    if not present:
        return
    trash = out / f".jaxnets-removed-{uuid.uuid4().hex[:8]}"
    trash.mkdir()
    for name in present:
        os.replace(out / name, trash / name)
    shutil.rmtree(trash, ignore_errors=True)


class EpochRecorder:
    """After each evaluation: metrics.jsonl (atomically), TensorBoard, and a plain progress line."""

    def __init__(self, out: Path | None, tensorboard: bool, plain_progress: bool):
        self.out, self.tensorboard, self.plain_progress = out, tensorboard, plain_progress
        self.writer = None
        self.history: list[dict] = []
        self.written = 0

    def __call__(self, history: list[dict]) -> None:
        self.history = history
        if self.out is not None:
            atomic_write_jsonl(self.out / "metrics.jsonl", history)
        if self.tensorboard and self.out is not None:
            self._tensorboard(history)
        if self.plain_progress and history:
            entry = history[-1]
            shown = ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if k.startswith(("epoch_loss", "train_")))
            print(f"epoch {entry['epoch']} step {entry['step']}: {shown}", file=sys.stderr, flush=True)
        self.written = len(history)

    def _tensorboard(self, history: list[dict]) -> None:
        if self.writer is None:  # created at the first epoch: a refused run leaves no event file
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=None)
        for entry in history[self.written:]:
            for key, value in entry.items():
                if key == "step_losses":
                    for step, loss in value:
                        self.writer.add_scalar("step_loss", loss, step)
                elif key not in ("epoch", "step"):
                    self.writer.add_scalar(key, value, entry["step"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _run_config(args, model_options: dict, config: TrainConfig) -> dict:
    run_config = {key: value for key, value in vars(args).items()
                  if key not in ("command", "hparam", "model_opt", "func")}
    run_config["hparams"] = dict(args.hparam)
    run_config["model_options"] = _jsonable(dict(args.model_opt))
    run_config["train_config"] = config.to_json()
    return run_config


def _jsonable(options: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def _write_summary(out: Path | None, summary: dict) -> None:
    if out is not None:
        atomic_write_json(out / "summary.json", summary)


def _versions() -> dict[str, str]:
    import flax
    import jax
    import optax
    return {"jaxnets": __version__, "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "python": platform.python_version()}


def _summary(result, dataset, run_config: dict) -> dict:
    final = result.final
    return {
        "config": run_config,
        "status": "done",
        "dataset": {"name": dataset.name, "task": dataset.task, "num_train": dataset.num_train,
                    "num_val": dataset.num_val, "num_test": dataset.num_test},
        **{key: value for key, value in final.items() if key not in ("time_s",)},
        "epochs_run": result.history[-1]["epoch"] + 1 if result.history else 0,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason,
        "wall_time_s": result.wall_time_s,
        "train_time_s": result.train_time_s,
        "steps_per_s": result.steps_per_s,
        "flops_per_step": result.flops_per_step,
        "gflops_per_s": result.gflops_per_s,
        "num_params": result.num_params,
        "params_sha256": params_sha256(result.state.params),
        "traces": result.traces,
        "devices": device_summary(),
        "versions": _versions(),
    }


def _print_table(summary: dict, out: Path | None) -> None:
    rows = [(key, summary[key]) for key in (
        "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
        "train_rmse", "test_rmse", "test_r2", "num_params", "steps_per_s", "flops_per_step", "gflops_per_s",
        "wall_time_s") if key in summary]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        text = f"{value:.4g}" if key in ("flops_per_step", "gflops_per_s") else (
            f"{value:.4f}" if isinstance(value, float) else str(value))
        print(f"{key:<{width}}  {text}")
    if summary.get("stop_reason"):
        print(f"stopped early: {summary['stop_reason']}")
    if out is not None:
        print(f"wrote {out / 'metrics.jsonl'}, {out / 'summary.json'}, {out / 'curves.png'} and {out / 'model'}")
