"""Does SGD generalize better than Adam here? The README's main command.

    python -m experiments.optimizer_comparison            # quick default, MNIST-1D MLP
    python -m experiments.optimizer_comparison --full     # the long protocol, every study

Their wall times are not typed anywhere: each run records its own in results.json, and
``--update-docs`` writes it into docs/optimizer_comparison.md with the tables.

Both run the protocol of ``jaxnets.compare`` (learning rate tuned per optimizer on a
validation split carved from the training set, grid extended until the optimum is
bracketed, retrained over seeds, paired tests) and write ``results.json``,
``report.md``, ``curves.png`` and ``summary.png`` with ``jaxnets.report``.

MNIST-1D (Greydanus 2020) as the issue fixes it: the package's 4,000 training
signals split 3,500 train / 500 validation (stratified, split seed 0), the
official 1,000 test signals, batch 100, 6,000 steps (172 epochs of 35 steps:
6,020 steps). The paper's MLP has a residual middle layer; ours is the plain
``mlp`` with hidden (100, 100): the same 15,210 parameters without the skip
connection. The CNN is ``cnn1d`` (5,210 parameters, as the paper's).

Quick default (measured budget in docs/optimizer_comparison.md): the MLP, constant
schedule, the full 6,020-step budget, arms sgd / momentum / adam / adagrad plus the
authors' untuned recipe (Adam, lr 1e-2), and adam_eps (ε searched jointly), 3 selection
seeds per grid point, 5 evaluation seeds.

Full: MNIST-1D x {mlp, cnn1d} x {constant, cosine} with every optimizer
(sgd, momentum, nesterov, rmsprop, adam, adagrad, adamw, adam with a searched
epsilon, adamw with its decay searched) plus the recipe arm, 5 seeds, 3 selection seeds, 6,020 steps; and
digits x {mlp, cnn} as a pipeline check (ceiling-limited).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jaxnets import compare, optim, report, stats
from jaxnets.host_memory import retain_freed_memory

QUICK_OUT = Path("results/optimizer_comparison")
FULL_OUT = Path("results/optimizer_comparison_full")

#: MNIST-1D as in the issue: 500 of the 4,000 training signals become validation.
MNIST1D_VALIDATION = 500 / 4000
SPLIT_SEED = 0
BATCH_SIZE = 100
FULL_STEPS = 6000
QUICK_STEPS = 6000
QUICK_SELECTION_SEEDS = 3
QUICK_OPTIMIZERS = ("sgd", "momentum", "adam", "adagrad", "adam_eps")
TARGET_LOSS = 0.1

#: Adam with epsilon searched jointly with the learning rate (Choi et al. 2019): with a
#: large epsilon the update m̂/(√ŝ + ε) ≈ m̂/ε, i.e. momentum SGD with rate η/ε, so the
#: learning-rate grid must reach up to the SGD scale.
ADAM_EPS_SEARCH = (1e-8, 1e-4, 1e-2, 1.0)
ADAM_EPS_GRID = tuple(compare.lr_grid("adam", points=11, centre=10 ** -1.5))
#: The quick default's smaller product grid (the same span, a decade apart; refinement fills in).
QUICK_ADAM_EPS_SEARCH = (1e-8, 1e-3, 1.0)
QUICK_ADAM_EPS_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)

#: AdamW's decoupled decay λ searched jointly with the learning rate (Loshchilov & Hutter tune it):
#: optax applies θ ← θ − η·λ·θ per step, so with η ≈ 1e-2 these are 1e-4 .. 1e-2 per step.
ADAMW_DECAY_SEARCH = (1e-2, 1e-1, 1.0)

MODELS = {
    "mlp": {"hidden": (100, 100)},
    "cnn1d": {},
}

MNIST1D_NOTES = [
    "MLP: the MNIST-1D paper's MLP has a residual connection around its middle 100->100 layer; "
    "`mlp` with hidden (100, 100) is the same 15,210 parameters without the skip connection.",
    "Selection uses the final validation accuracy after the whole budget; 'best test accuracy' is the "
    "maximum over evaluated epochs and is optimistic by construction (it peeks at test along the run): "
    "it is reported because papers often report it, never used for any choice.",
    "The learning rate is the only tuned hyperparameter (plus epsilon for `adam_eps` and the decoupled "
    "decay for `adamw`); momentum 0.9, Adam's betas (0.9, 0.999), RMSProp decay 0.9, AdaGrad initial "
    "accumulator 0.1 are the documented defaults of jaxnets.optim.",
]


def published_mnist1d(model: str, labels: Sequence[str], schedule: str) -> list[dict[str, Any]]:
    """Literature references for MNIST-1D; each is labelled with its source in the report."""
    refs: list[dict[str, Any]] = []
    if "adam_recipe" in labels and schedule == "constant":
        value = {"mlp": 0.65, "cnn1d": 0.93}[model]
        refs.append({"source": "Greydanus 2020, MNIST-1D (as quoted in issue 6)",
                     "claim": f"{model}: Adam lr 1e-2, constant, 6,000 steps of batch 100 "
                              f"({'about 65%' if model == 'mlp' else '92-94%'} test accuracy)",
                     "value": value, "arm": "adam_recipe", "metric": "final_test_accuracy"})
    if model == "mlp" and schedule == "constant":
        for label, value in (("sgd", 0.69), ("adam", 0.64)):
            if label in labels:
                refs.append({"source": "earlier pilot run of this protocol (issue 6; not a paper)",
                             "claim": f"{label}, tuned learning rate, MLP", "value": value, "arm": label,
                             "metric": "final_test_accuracy"})
    for a in ("sgd", "momentum"):
        if a in labels and "adam" in labels:
            refs.append({"source": "Wilson et al. 2017 (CIFAR-10, char-level LM, parsing)",
                         "claim": f"{a} generalizes better than adam", "pair": [a, "adam"],
                         "metric": "final_test_accuracy", "direction": ">"})
    if "sgd" in labels and "adam" in labels:
        refs.append({"source": "Wilson et al. 2017",
                     "claim": "adaptive methods reach an equal or lower training loss",
                     "pair": ["sgd", "adam"], "metric": "final_train_loss", "direction": ">"})
    if "adamw" in labels and "adam" in labels:
        refs.append({"source": "Loshchilov & Hutter 2019 (AdamW)",
                     "claim": "decoupled weight decay improves Adam's test accuracy",
                     "pair": ["adamw", "adam"], "metric": "final_test_accuracy", "direction": ">"})
    if "adam_eps" in labels and "adam" in labels:
        refs.append({"source": "Choi et al. 2019",
                     "claim": "Adam with a tuned epsilon is at least as good as with the default",
                     "pair": ["adam_eps", "adam"], "metric": "final_test_accuracy", "direction": ">"})
    return refs


def arms_for(optimizers: Sequence[str], *, recipe: bool, quick: bool = False) -> list[compare.Arm]:
    """The arms by name: optimizers of jaxnets.optim, plus ``adam_eps`` and the fixed ``adam_recipe``.

    ``quick`` gives ``adam_eps`` the smaller product grid of the quick default.
    """
    arms = []
    for name in optimizers:
        if name == "adam_eps":
            grid, search = (QUICK_ADAM_EPS_GRID, QUICK_ADAM_EPS_SEARCH) if quick else (ADAM_EPS_GRID, ADAM_EPS_SEARCH)
            arms.append(compare.Arm("adam_eps", "adam", lr_grid=grid, search={"eps": search},
                                    note="Adam with epsilon searched jointly with the learning rate "
                                         "(Choi et al. 2019)."))
        elif name == "adamw":
            arms.append(compare.Arm("adamw", "adamw", search={"weight_decay": ADAMW_DECAY_SEARCH},
                                    note="decoupled weight decay searched jointly with the learning rate "
                                         "(Loshchilov & Hutter 2019)."))
        else:
            arms.append(compare.Arm(name, name))
    if recipe:
        arms.append(compare.Arm("adam_recipe", "adam", fixed_lr=1e-2,
                                note="the MNIST-1D authors' recipe: Adam, lr 1e-2, not tuned."))
    return arms


def _pairs(labels: Sequence[str]) -> tuple[tuple[str, str], ...]:
    wanted = [("sgd", "adam"), ("momentum", "adam"), ("sgd", "momentum"), ("adagrad", "adam"), ("adamw", "adam"),
              ("adam_eps", "adam"), ("adam_eps", "momentum")]
    return tuple(pair for pair in wanted if pair[0] in labels and pair[1] in labels)


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_study(name: str, dataset: str, model_name: str, model_options: dict[str, Any], arms: list[compare.Arm],
              config: compare.ComparisonConfig, out_dir: Path, *, validation: float, load_options: dict | None = None,
              extra: dict | None = None, reuse: bool = False) -> dict[str, Any]:
    """Load the data, build the model, run the comparison, write results.json and the report.

    With ``reuse``, a finished study in ``out_dir`` with the same dataset, model, arms and
    config is kept instead of retrained (see :func:`finished_study`).
    """
    import jaxnets as jn

    previous = finished_study(out_dir, dataset, model_name, model_options, arms, config) if reuse else None
    if previous is not None:
        # A study is written atomically, so a results.json that exists is complete: a long
        # protocol interrupted after it resumes here instead of retraining it.
        report.write_report(out_dir, previous)
        _say(f"{name}: kept the finished study in {out_dir} (same dataset, model, arms and config)")
        return previous
    data = jn.data.load(dataset, validation=validation, seed=SPLIT_SEED, **(load_options or {}))
    model = jn.models.get_model(model_name, output_dim=data.output_dim, **model_options)
    _say(f"{name}: {data.summary()}; model {model_name} {model_options}; {len(arms)} arms")
    results = compare.run_comparison(
        model, data, arms, config, experiment=name, on_event=lambda m: _say(f"{name}: {m}"),
        model_info={"name": model_name, "options": {k: list(v) if isinstance(v, tuple) else v
                                                    for k, v in model_options.items()},
                    "load_options": {"validation": validation, "split_seed": SPLIT_SEED, **(load_options or {})}},
        extra=extra)
    compare.save_results(results, out_dir)
    report.write_report(out_dir, results)
    _say(f"{name}: wrote {out_dir / 'report.md'} ({results['wall_time_s']:.0f} s)")
    return results


def finished_study(out_dir: Path, dataset: str, model_name: str, model_options: dict[str, Any],
                   arms: Sequence[compare.Arm], config: compare.ComparisonConfig) -> dict[str, Any] | None:
    """The results in ``out_dir`` if they were produced by this same study, else None."""
    import dataclasses
    import json

    path = out_dir / "results.json"
    if not path.is_file():
        return None
    try:
        previous = report.load_results(out_dir)
    except (OSError, ValueError):
        return None
    as_json = lambda value: json.loads(json.dumps(value))  # noqa: E731 - tuples become lists, as stored
    wanted_config = as_json(dataclasses.asdict(config))
    same = (previous.get("dataset", {}).get("name") == dataset
            and previous.get("model", {}).get("name") == model_name
            and previous.get("model", {}).get("options") == as_json(model_options)
            and [a.get("label") for a in previous.get("arms", [])] == [a.label for a in arms]
            and all(previous.get("config", {}).get(k) == v for k, v in wanted_config.items()))
    return previous if same else None


def _config(steps: int, seeds: int, selection_seeds: int, schedule: str, labels: Sequence[str],
            eval_every: int) -> compare.ComparisonConfig:
    steps_per_epoch = math.ceil(3500 / BATCH_SIZE)
    return compare.ComparisonConfig(epochs=math.ceil(steps / steps_per_epoch), batch_size=BATCH_SIZE,
                                    schedule=schedule, seeds=seeds, selection_seeds=selection_seeds,
                                    target_loss=TARGET_LOSS, eval_every=eval_every, pairs=_pairs(labels))


def quick(out: Path, *, seeds: int = 5, steps: int = QUICK_STEPS,
          optimizers: Sequence[str] = QUICK_OPTIMIZERS, model: str = "mlp",
          selection_seeds: int = QUICK_SELECTION_SEEDS) -> Path:
    """The quick default: one MNIST-1D study; returns the report's path."""
    arms = arms_for(optimizers, recipe=True, quick=True)
    labels = [a.label for a in arms]
    config = _config(steps, seeds, selection_seeds, "constant", labels, eval_every=4)
    extra = {"title": f"Optimizer comparison, quick default: MNIST-1D, {model}",
             "budget_note": f"quick default: {model} only, constant schedule only, {len(optimizers)} tuned optimizers "
                            f"({', '.join(optimizers)}) plus the untuned recipe, {selection_seeds} selection seeds per "
                            f"grid point, {seeds} evaluation seeds, {config.epochs} epochs "
                            f"({config.epochs * math.ceil(3500 / BATCH_SIZE)} steps); adam_eps on a {len(QUICK_ADAM_EPS_GRID)} x "
                            f"{len(QUICK_ADAM_EPS_SEARCH)} (learning rate x ε) grid. `--full` adds nesterov, rmsprop "
                            "and adamw (decay tuned jointly), the full ε grid, the cosine schedule, the CNN and digits.",
             "published": published_mnist1d(model, labels, "constant"), "notes": MNIST1D_NOTES}
    run_study(f"mnist1d_{model}_constant_quick", "mnist1d", model, MODELS[model], arms, config, out,
              validation=MNIST1D_VALIDATION, extra=extra)
    return out / "report.md"


FULL_OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adagrad", "adamw", "adam_eps")

# ----------------------------------------------------------------------------- CIFAR-10 (scale path)
CIFAR10_OUT = Path("results/optimizer_comparison_cifar10")
#: 5,000 of CIFAR-10's 50,000 training images become the validation split.
CIFAR10_VALIDATION = 5000 / 50000
CIFAR10_AUGMENT = "crop_flip"
CIFAR10_OPTIMIZERS = ("sgd", "momentum", "adam", "adagrad", "adam_eps")
#: The default run: the registry's small VGG, 30 epochs of batch 128, constant schedule.
CIFAR10_DEFAULT = {"model": {"channels": (64, 128, 256), "convs": 2, "dense": (256,)},
                   "protocol": {"epochs": 30, "batch_size": 128, "schedule": "constant"}}
#: Named GPU presets (docs/optimizer_comparison.md, "CIFAR-10 scale path", says where each value comes from).
CIFAR10_PRESETS = {
    "wilson_cifar10": {
        # cifar.torch's vgg_bn_drop layout (13 convs), as Wilson et al. 2017 used for CIFAR-10.
        "model": {"channels": (64, 128, 256, 512, 512), "convs": (2, 2, 3, 3, 3), "dense": (512,),
                  "dropout_rate": 0.5},
        "protocol": {"epochs": 250, "batch_size": 128, "schedule": "step", "decay_rate": 0.5, "decay_epochs": 25,
                     "l2": 5e-4},
    },
}
#: Grid settings of ComparisonConfig for the CIFAR-10 studies (empty: the library's defaults).
CIFAR10_PROTOCOL: dict[str, Any] = {}


def cifar10(out: Path, data_dir: Path, *, preset: str | None = None, seeds: int = 5, epochs: int | None = None,
            channels: Sequence[int] | None = None, optimizers: Sequence[str] = CIFAR10_OPTIMIZERS,
            selection_seeds: int = QUICK_SELECTION_SEEDS) -> Path:
    """The quick protocol's structure on CIFAR-10 from ``data_dir``, augmentation on; returns the report's path.

    ``preset`` (a key of ``CIFAR10_PRESETS``) replaces the default model and budget; ``epochs``
    and ``channels`` override them (e.g. for a small trial).
    """
    chosen = CIFAR10_PRESETS[preset] if preset else CIFAR10_DEFAULT
    model_options = dict(chosen["model"])
    if channels is not None:
        model_options["channels"] = tuple(channels)
        if isinstance(model_options["convs"], tuple):
            model_options["convs"] = model_options["convs"][0]
    protocol = {**chosen["protocol"], **({"epochs": epochs} if epochs else {})}
    arms = arms_for(optimizers, recipe=False, quick=True)
    labels = [a.label for a in arms]
    settings = {"eval_every": max(1, protocol["epochs"] // 10), "seeds": seeds, "selection_seeds": selection_seeds,
                **protocol, **CIFAR10_PROTOCOL}
    config = compare.ComparisonConfig(augment=CIFAR10_AUGMENT, pairs=_pairs(labels), **settings)
    selection_seeds = config.selection_seeds
    extra = {"title": f"Optimizer comparison: CIFAR-10, vgg{' (' + preset + ')' if preset else ''}",
             "budget_note": f"CIFAR-10 from {data_dir}: vgg {model_options}, {config.epochs} epochs of batch "
                            f"{config.batch_size}, schedule {config.schedule}, augmentation {CIFAR10_AUGMENT} "
                            f"(training batches only), {selection_seeds} selection seeds, {seeds} evaluation seeds.",
             # Only the literature claims that are not MNIST-1D's apply (Wilson et al.'s were made on CIFAR-10).
             "published": published_mnist1d("vgg", labels, "other"),
             "notes": ["Augmentation: 4-pixel random crop and horizontal flip inside the compiled train step; "
                       "validation and test images are never augmented.",
                       "5,000 of the 50,000 training images form the validation split the learning rate is chosen "
                       "on (stratified, split seed 0); the test batch is used only for the reported numbers."]}
    run_study(f"cifar10_vgg_{preset or 'default'}", "cifar10", "vgg", model_options, arms, config, out,
              validation=CIFAR10_VALIDATION, load_options={"data_dir": str(data_dir)}, extra=extra)
    return out / "report.md"


def check_cifar10_dir(data_dir: Path | None) -> str | None:
    """None if ``data_dir`` holds readable CIFAR-10 python batches, else the one-line reason."""
    import jaxnets as jn

    if data_dir is None:
        return "--data-dir: got nothing; allowed: the folder holding the CIFAR-10 python batches (with --dataset cifar10)"
    try:
        jn.data.load("cifar10", data_dir=data_dir)
    except (FileNotFoundError, ValueError) as error:
        return f"--data-dir: {' '.join(str(error).split())}"
    return None


def full(out: Path, *, seeds: int = 5, steps: int = FULL_STEPS, models: Sequence[str] = ("mlp", "cnn1d"),
         schedules: Sequence[str] = ("constant", "cosine"), digits: bool = True, recipe: bool = True,
         reuse: bool = True) -> Path:
    """The long protocol; one sub-directory per study and an index.md; returns the index path.

    With ``reuse`` (the default) a study already finished in ``out`` with the same settings is
    kept, so an interrupted run resumes at the first unfinished study. With ``recipe``, each
    model also gets :func:`recipe_study` (the authors' recipe on all 4,000 training signals),
    in its own directory after the comparisons.
    """
    studies: list[str] = []
    recipes: list[str] = []
    planned = full_study_names(models, schedules, digits, recipe)
    for model in models:
        for schedule in schedules:
            arms = arms_for(FULL_OPTIMIZERS, recipe=schedule == "constant")
            labels = [a.label for a in arms]
            name = f"mnist1d_{model}_{schedule}"
            config = _config(steps, seeds, 3, schedule, labels, eval_every=2)
            extra = {"title": f"Optimizer comparison: MNIST-1D, {model}, {schedule} schedule",
                     "published": published_mnist1d(model, labels, schedule), "notes": MNIST1D_NOTES}
            run_study(name, "mnist1d", model, MODELS[model], arms, config, out / name,
                      validation=MNIST1D_VALIDATION, extra=extra, reuse=reuse)
            studies.append(name)
            write_index(out, studies, planned=planned)
    if digits:
        for model, options, load in (("mlp", {"hidden": (100,)}, {}),
                                     ("cnn", {"channels": (16, 32), "dense": (64,)}, {"image": True})):
            arms = arms_for(("sgd", "momentum", "adam"), recipe=False)
            labels = [a.label for a in arms]
            name = f"digits_{model}"
            config = compare.ComparisonConfig(epochs=60, batch_size=64, seeds=seeds, selection_seeds=3,
                                              eval_every=2, target_loss=TARGET_LOSS, pairs=_pairs(labels))
            extra = {"title": f"Optimizer comparison: digits, {model} (pipeline check)",
                     "notes": ["digits is ceiling-limited (every reasonable model reaches 96-99%): this study "
                               "checks the pipeline and is not evidence for or against any optimizer."]}
            run_study(name, "digits", model, options, arms, config, out / name, validation=0.2,
                      load_options=load, extra=extra, reuse=reuse)
            studies.append(name)
            write_index(out, studies, planned=planned)
    for model in models if recipe else ():
        name = f"mnist1d_{model}_recipe4000"
        recipe_study(out / name, model, seeds=seeds, steps=steps, reuse=reuse)
        recipes.append(name)
        write_index(out, studies, recipes, planned=planned)
    return out / "index.md"


def full_study_names(models: Sequence[str] = ("mlp", "cnn1d"), schedules: Sequence[str] = ("constant", "cosine"),
                     digits: bool = True, recipe: bool = True) -> list[str]:
    """The directories ``full`` writes, in its order.

    >>> full_study_names(("mlp",), ("constant",), digits=False)
    ['mnist1d_mlp_constant', 'mnist1d_mlp_recipe4000']
    """
    return ([f"mnist1d_{m}_{s}" for m in models for s in schedules] + (["digits_mlp", "digits_cnn"] if digits else [])
            + ([f"mnist1d_{m}_recipe4000" for m in models] if recipe else []))


#: The MNIST-1D authors' recipe and what their paper reports for it (typed from the paper, labelled so).
RECIPE_LR = 1e-2
RECIPE_PUBLISHED = {"mlp": "about 65 %", "cnn1d": "92–94 %"}


def recipe_study(out: Path, model_name: str, *, seeds: int = 5, steps: int = FULL_STEPS,
                 reuse: bool = True) -> dict[str, Any]:
    """The authors' untuned recipe on all 4,000 MNIST-1D training signals, as the paper trains it.

    Adam at lr 1e-2, constant schedule, batch 100, ``ceil(steps / 40)`` epochs of 40 steps
    (6,000 steps for the default), evaluation seeds ``0 .. seeds−1``; no validation split and
    no selection (nothing is tuned). Writes ``out/results.json``; a finished one with the same
    dataset, model and configuration is kept with ``reuse``.

    Returns:
      The results dict: ``dataset``, ``model``, ``config``, ``runs`` (``compare.run_seeds``)
      and ``summary`` (mean and t-interval of every per-seed quantity).
    """
    import dataclasses

    import jaxnets as jn
    from jaxnets.io import atomic_write_json

    steps_per_epoch = math.ceil(4000 / BATCH_SIZE)
    config = compare.ComparisonConfig(epochs=math.ceil(steps / steps_per_epoch), batch_size=BATCH_SIZE,
                                      seeds=seeds, schedule="constant", target_loss=TARGET_LOSS,
                                      eval_every=10, pairs=())
    model_info = {"name": model_name, "options": json.loads(json.dumps(MODELS[model_name])),
                  "load_options": {"validation": 0.0}}
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))
    if reuse and (out / "results.json").is_file():
        previous = report.load_results(out)
        if (previous.get("model") == model_info and previous.get("config") == wanted
                and previous.get("dataset", {}).get("num_train") == 4000):
            _say(f"{out.name}: kept the finished study in {out}")
            return previous
    started = time.perf_counter()
    data = jn.data.load("mnist1d")
    model = jn.models.get_model(model_name, output_dim=data.output_dim, **MODELS[model_name])
    _say(f"{out.name}: {data.summary()}; the recipe on all {data.num_train} training signals, {seeds} seeds")
    arm = compare.Arm("adam_recipe", "adam", fixed_lr=RECIPE_LR)
    runs = compare.run_seeds(model, data, arm, {"learning_rate": RECIPE_LR}, config,
                             on_event=lambda m: _say(f"{out.name}: {m}"))
    results = {"experiment": out.name, "kind": "recipe", "dataset": compare.dataset_record(data),
               "model": model_info, "config": wanted, "optimizer": "adam", "learning_rate": RECIPE_LR,
               "steps_per_run": config.epochs * steps_per_epoch, "runs": runs,
               "summary": compare.summarize_seeds(runs["per_seed"], config.confidence),
               "environment": compare.environment(), "wall_time_s": time.perf_counter() - started}
    atomic_write_json(out / "results.json", results)
    return report.load_results(out)


FOREST_TEXT = ("One row per (study, arm other than SGD): the paired difference in final test accuracy from "
               "SGD over the evaluation seeds (●), its 95% t-interval (thin line) and its simultaneous "
               "Bonferroni interval over the study's primary family (thick pale bar), with the Holm-adjusted "
               "p-values (t-test and sign-flip permutation) in the row label. Arms with the same runs share "
               "one row under both names; × marks an arm with a collapsed seed.")


def write_index(out: Path, studies: Sequence[str], recipes: Sequence[str] = (),
                planned: Sequence[str] = ()) -> Path:
    """``out/index.md``: each study's summary table and verdicts, regenerated from its results.json,
    with ``forest.png`` (:func:`jaxnets.report.plot_forest` over every study) and the recipe
    studies (:func:`recipe_study`) beside the comparisons' recipe arms. Studies of ``planned``
    that are not (yet) among them are named at the top."""
    from jaxnets.io import atomic_write_text

    lines = ["# Optimizer comparison, full protocol", "",
             "Generated from each study's results.json; each study has its own report.", ""]
    missing = [name for name in planned if name not in (*studies, *recipes)]
    if missing:
        lines += ["Not finished in this directory (a later `--full` run trains them and keeps the rest): "
                  + ", ".join(missing) + ".", ""]
    loaded = {name: report.load_results(out / name) for name in studies}
    extra = {name: report.load_results(out / name) for name in recipes}
    walls = {name: results["wall_time_s"] for name, results in {**loaded, **extra}.items()}
    lines += ["Wall time of each study (backend " + next(iter(loaded.values()))["environment"]["platform"]["backend"]
              + "): " + ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in walls.items())
              + f"; {sum(walls.values()) / 60:.0f} min in all.", ""] if loaded else []
    if report.forest_rows(loaded):
        report.plot_forest(loaded, out / "forest.png")
        lines += ["## Every arm against SGD", "", FOREST_TEXT, "",
                  "![forest plot of every arm's difference from SGD](forest.png)", ""]
    if extra:
        lines += recipe_section(loaded, extra)
    for name, results in loaded.items():
        lines += [f"## [{name}]({name}/report.md)", "", "**Conclusions**", "", report.conclusions_section(results), "",
                  report.summary_table(results), "", report.primary_table(results), ""]
        lines += [f"- {sentence}" for sentence in report.verdicts(results)] + [""]
    atomic_write_text(out / "index.md", "\n".join(lines))
    return out / "index.md"


def recipe_section(studies: Mapping[str, Mapping[str, Any]], recipes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """index.md lines: the recipe on all 4,000 signals beside the constant study's ``adam_recipe`` arm (3,500)."""
    lines = ["## The authors' recipe on all 4,000 training signals", "",
             "Adam, lr 1e-2, constant, batch 100, no tuning; final test accuracy (%), mean ± half-width of the "
             "95% t-interval over the evaluation seeds. The comparisons train on 3,500 signals (500 are their "
             "validation split); the paper trains on all 4,000.", "",
             "| model | 4,000 training signals | 3,500 (the study's `adam_recipe` arm) | paper |", "|---|---|---|---|"]
    for name, results in recipes.items():
        model = results["model"]["name"]
        study = studies.get(f"mnist1d_{model}_constant") or {}
        arm = next((a for a in study.get("arms", []) if a["label"] == "adam_recipe" and a.get("summary")), None)
        ours = report.format_interval(results["summary"]["final_test_accuracy"], "final_test_accuracy")
        split = report.format_interval(arm["summary"]["final_test_accuracy"], "final_test_accuracy") if arm else "n/a"
        lines.append(f"| `{model}` ({results['summary']['final_test_accuracy']['n']} seeds, "
                     f"{results['steps_per_run']:,} steps) | {ours} | {split} | {RECIPE_PUBLISHED.get(model, 'n/a')} |")
    return lines + ["", "The paper column is typed from Greydanus (2020) and labelled so; the other columns are read "
                        "from each study's results.json.", ""]


ZHOU_OUT = Path("results/zhou")
ZHOU_CHECKPOINTS = (0, 5, 20, 172)


def _member_loss(state, data, index: int, cache: dict | None = None):
    """Mean training cross-entropy of population member ``index`` as a function of its parameters.

    With ``cache`` (a dict kept across calls on one model and dataset), members without model
    state (no batch statistics) share one pair of loss functions, so ``jaxnets.analysis``
    compiles each measurement once instead of once per member.
    """
    import jax
    import jax.numpy as jnp

    from jaxnets.objective import objective_for

    member = jax.tree_util.tree_map(lambda leaf: leaf[index], state)
    shared = cache is not None and not jax.tree_util.tree_leaves(member.model_state)
    if shared and "losses" in cache:
        return (member.params, *cache["losses"])
    objective = objective_for(data.task)
    x_all, y_all = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

    def batch_loss(params, x, y):
        outputs = member.apply_fn({"params": params, **member.model_state}, x, train=False)
        sums = objective.sums(outputs, y, jnp.ones(x.shape[0]))
        return sums["loss"] / sums["count"]

    losses = (batch_loss, lambda params: batch_loss(params, x_all, y_all))
    if shared:
        cache["losses"] = losses
    return (member.params, *losses)


#: The pair measured along training (the paper's); every other arm is measured at the end only.
ZHOU_PAIR = ("sgd", "adam")


def zhou_arms(source: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every arm of a comparison with seed runs, at the setting it was evaluated with.

    The setting is ``runs.setting`` (``selection.chosen`` in older records): the learning rate and
    any searched hyperparameter (eps, weight decay); ``fixed`` holds the arm's fixed ones. An arm
    (other than SGD and Adam) whose runs are an earlier arm's (the same final parameters on every
    seed, or else the same optimizer and hyperparameters; e.g. ``adam_recipe`` at Adam's chosen
    rate) gets ``same_as`` and is not trained again.

    Raises:
      ValueError: one line when the comparison lacks an ``sgd`` or ``adam`` arm.
    """
    arms, seen = [], {}
    for arm in source["arms"]:
        if not arm.get("runs"):
            continue
        setting = {k: float(v) for k, v in (arm["runs"].get("setting") or arm["selection"]["chosen"]).items()}
        fixed = dict(arm.get("fixed") or {})
        key = json.dumps(arm["runs"].get("params_sha256")
                         or [arm["optimizer"], {**(arm.get("hyperparams") or fixed), **setting}], sort_keys=True)
        twin = key in seen and arm["label"] not in ZHOU_PAIR
        arms.append({"label": arm["label"], "optimizer": arm["optimizer"], "fixed": fixed, "setting": setting,
                     **({"same_as": seen[key]} if twin else {})})
        seen.setdefault(key, arm["label"])
    labels = [a["label"] for a in arms]
    if not set(ZHOU_PAIR) <= set(labels):
        raise ValueError(f"comparison: got arms {labels}; allowed: results with 'sgd' and 'adam' arms")
    return arms


def _zhou_setup(source: Mapping[str, Any]):
    """The comparison's data split, model and minibatch plan, from what its results.json records."""
    import jax

    import jaxnets as jn

    info = source["model"]
    load = dict(info.get("load_options") or {"validation": MNIST1D_VALIDATION, "split_seed": SPLIT_SEED})
    validation, split_seed = load.pop("validation", 0.0), load.pop("split_seed", SPLIT_SEED)
    data = jn.data.load(source["dataset"]["name"], validation=validation, seed=split_seed, **load)
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in (info.get("options") or {}).items()}
    model = jn.models.get_model(info["name"], output_dim=data.output_dim, **options)
    batch = int(source["config"]["batch_size"])
    order = np.asarray(jax.random.permutation(jax.random.key(12345), data.num_train))
    batches = order[: (data.num_train // batch) * batch].reshape(-1, batch)
    return data, model, options, batches


def _zhou_train(model, data, arm: Mapping[str, Any], epochs: int, final: int, schedule: str, batch: int,
                seeds: Sequence[int]):
    """The population state of ``arm`` after ``epochs`` of a ``final``-epoch run (the schedule spans ``final``,
    so a shorter run is exactly the start of the longer one, same seeds)."""
    import jaxnets as jn
    from jaxnets.epochs import steps_for
    from jaxnets.population import create_population, fit_population

    setting = arm["setting"]
    tx = jn.optim.create(arm["optimizer"], setting["learning_rate"], schedule=schedule,
                         total_steps=steps_for(data.num_train, batch, final), **arm["fixed"])
    if epochs == 0:
        return create_population(model, tx, data.x_train, list(seeds))
    config = jn.TrainConfig(epochs=epochs, batch_size=batch, eval_every=epochs, nonfinite="ignore")
    return fit_population(model, data, tx, config, seeds=list(seeds),
                          hyperparams={k: [v] * len(seeds) for k, v in setting.items()}).state


def _zhou_measure(state, data, batches, seeds: Sequence[int], *, end: bool, radius: float, iterations: int,
                  directions: int, cache: dict) -> dict[str, Any]:
    """Tail index (both variants) and training loss per seed; at the ``end`` also sharpness."""
    import jax

    from jaxnets import analysis

    xs, ys = data.x_train[batches], data.y_train[batches]
    keys = ("alpha", "alpha_released", "train_loss") + (("top_eigenvalue", "random_rise") if end else ())
    values: dict[str, list] = {k: [] for k in keys}
    for i in range(len(seeds)):
        params, batch_loss, full_loss = _member_loss(state, data, i, cache)
        noise = analysis.gradient_noise(analysis.minibatch_gradients(batch_loss, params, xs, ys))
        values["alpha"].append(analysis.tail_index(noise))
        values["alpha_released"].append(analysis.tail_index(noise, variant="released"))
        values["train_loss"].append(float(jax.jit(full_loss)(params)))
        if end:
            key = jax.random.key(i)
            values["top_eigenvalue"].append(analysis.top_hessian_eigenvalue(
                full_loss, params, key, iterations=iterations, tolerance=1e-4)["eigenvalue"])
            values["random_rise"].append(analysis.random_direction_sharpness(
                full_loss, params, key, radius=radius, directions=directions)["mean"])
    out: dict[str, Any] = dict(values)
    for k in keys:
        out[f"{k}_summary"] = stats.mean_ci(values[k]).as_dict()
    return out


def zhou(out: Path | None = None, *, comparison: Path = QUICK_OUT, seeds: int = 5,
         checkpoints: Sequence[int] = ZHOU_CHECKPOINTS, radius: float = 1.0, epochs: int | None = None,
         iterations: int = 200, directions: int = 20) -> Path:
    """Zhou et al. (2020)'s measurements for every arm of a comparison, at the settings it chose.

    The comparison's results.json gives the dataset and split, the model (name and options), the
    batch size, the schedule and the number of epochs (``epochs`` overrides it, for a short
    run), and each arm's evaluated setting (:func:`zhou_arms`). For every arm, one population of
    ``seeds`` seeds trained to the final epoch; at the end, per seed, the tail index of the
    minibatch-gradient noise (one pass over the training split in fixed minibatches of the
    comparison's batch size, ``jaxnets.analysis.tail_index``, both variants), the largest Hessian
    eigenvalue of the training loss (power iteration, at most ``iterations`` products) and its mean
    rise along ``directions`` random directions of length ``radius``. SGD and Adam are also measured
    along training, after each of ``checkpoints`` below the final epoch. Writes results.json and
    report.md into ``out`` (default :func:`zhou_out`); returns the report's path.
    """
    from jaxnets.io import atomic_write_json, atomic_write_text

    source = report.load_results(comparison)
    arms = zhou_arms(source)
    out = Path(out) if out is not None else zhou_out(comparison, source)
    started = time.perf_counter()
    data, model, options, batches = _zhou_setup(source)
    final = int(epochs if epochs is not None else source["config"]["epochs"])
    points = sorted({int(c) for c in checkpoints if c < final} | {final})
    schedule, batch, seed_list = source["config"].get("schedule", "constant"), int(source["config"]["batch_size"]), \
        list(range(seeds))
    records: dict[str, Any] = {}
    measured: dict[str, dict] = {}
    cache: dict = {}
    for arm in arms:
        if "same_as" in arm:
            measured[arm["label"]] = {**measured[arm["same_as"]], "same_as": arm["same_as"]}
            continue
        tic = time.perf_counter()
        per_checkpoint = []
        for e in points if arm["label"] in ZHOU_PAIR else [final]:
            state = _zhou_train(model, data, arm, e, final, schedule, batch, seed_list)
            entry = {"epochs": e, **_zhou_measure(state, data, batches, seed_list, end=e == final, radius=radius,
                                                   iterations=iterations, directions=directions,
                                                   cache=cache)}
            per_checkpoint.append(entry)
            _say(f"zhou: {arm['label']} after {e} epochs: alpha {stats.mean_ci(entry['alpha']).format(2)}")
        measured[arm["label"]] = {**per_checkpoint[-1], "wall_time_s": time.perf_counter() - tic}
        if arm["label"] in ZHOU_PAIR:
            records[arm["label"]] = {"learning_rate": arm["setting"]["learning_rate"], "checkpoints": per_checkpoint}
    results = {"experiment": "zhou", "comparison": str(comparison), "dataset": source["dataset"]["name"],
               "model": {"name": source["model"]["name"], "options": json.loads(json.dumps(options))},
               "schedule": schedule, "epochs": final, "seeds": seed_list, "checkpoints": points, "radius": radius,
               "minibatches": int(len(batches)), "batch_size": batch, "optimizers": records,
               "sgd_minus_adam": _zhou_paired(records, points),
               "arms": [{**arm, **measured[arm["label"]]} for arm in arms],
               "environment": compare.environment(), "wall_time_s": time.perf_counter() - started}
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", render_zhou(report.load_results(out)))
    return out / "report.md"


def zhou_out(comparison: Path, source: Mapping[str, Any] | None = None) -> Path:
    """Where ``--zhou`` writes: results/zhou for the quick default, else results/zhou_MODEL."""
    if Path(comparison) == QUICK_OUT:
        return ZHOU_OUT
    source = source if source is not None else report.load_results(comparison)
    return ZHOU_OUT.with_name(f"zhou_{source['model']['name']}")


def _zhou_paired(records: Mapping[str, Any], points: Sequence[int]) -> list[dict[str, Any]]:
    """SGD − Adam, paired over seeds, at every checkpoint (sharpness at the end)."""
    paired = []
    for k, e in enumerate(points):
        a, b = records["sgd"]["checkpoints"][k], records["adam"]["checkpoints"][k]
        row = {"epochs": e}
        for key in ("alpha", "alpha_released", "top_eigenvalue", "random_rise"):
            if key in a:
                row[key] = stats.paired_difference(a[key], b[key]).as_dict()
        paired.append(row)
    return paired


def render_zhou(results: dict[str, Any]) -> str:
    """report.md of the Zhou et al. measurements, from their results dict."""
    def cell(summary: dict) -> str:
        half = summary.get("half_width")
        return f"{summary['mean']:.3g}" + (f" ± {half:.2g}" if half is not None and math.isfinite(half) else "")

    def diff(test: dict) -> str:
        if stats.identical(test):  # no t statistic when every pair is equal
            return "identical"
        d = test["difference"]
        p = test["p_value"]
        return (f"{d['mean']:+.3g} [{d['low']:+.3g}, {d['high']:+.3g}], p = {p:.2g}"
                if d.get("low") is not None and math.isfinite(d["low"]) else "n/a")

    sgd, adam = results["optimizers"]["sgd"], results["optimizers"]["adam"]
    where = (f"{results['dataset']} `{results['model']['name']}`, {results['schedule']} schedule"
             if "model" in results else "MNIST-1D MLP")  # older results measured only the quick MLP
    lines = [f"# Gradient-noise tail index and sharpness (Zhou et al. 2020), {where}", "",
             f"Generated from `results.json`. SGD at lr {sgd['learning_rate']:g} and Adam at lr "
             f"{adam['learning_rate']:g} (the rates chosen on validation by the comparison in "
             f"`{results['comparison']}`), {len(results['seeds'])} seeds, mean ± 95% t-interval; "
             f"noise from {results['minibatches']} minibatches of {results['batch_size']} at each point.", "",
             "| epochs | α SGD | α Adam | α SGD − Adam (95% CI), paired p | train loss SGD | train loss Adam |",
             "|---|---|---|---|---|---|"]
    for k, row in enumerate(results["sgd_minus_adam"]):
        a, b = sgd["checkpoints"][k], adam["checkpoints"][k]
        lines.append(f"| {row['epochs']} | {cell(a['alpha_summary'])} | {cell(b['alpha_summary'])} | "
                     f"{diff(row['alpha'])} | {np.mean(a['train_loss']):.3g} | {np.mean(b['train_loss']):.3g} |")
    if "alpha_released" in results["sgd_minus_adam"][0]:  # older results lack the second estimator
        lines += ["", "The same noise with the released code's estimator (`tail_index(..., variant=\"released\")`: "
                  "exact zeros kept inside log(|x| + 2.2e-16), m the largest divisor of N at most √N):", "",
                  "| epochs | α SGD (released) | α Adam (released) | SGD − Adam (95% CI), paired p |", "|---|---|---|---|"]
        for k, row in enumerate(results["sgd_minus_adam"]):
            a, b = sgd["checkpoints"][k], adam["checkpoints"][k]
            lines.append(f"| {row['epochs']} | {cell(a['alpha_released_summary'])} | "
                         f"{cell(b['alpha_released_summary'])} | {diff(row['alpha_released'])} |")
    last = results["sgd_minus_adam"][-1]
    a, b = sgd["checkpoints"][-1], adam["checkpoints"][-1]
    lines += ["", "| at the end | SGD | Adam | SGD − Adam (95% CI), paired p |", "|---|---|---|---|",
              f"| largest Hessian eigenvalue | {cell(a['top_eigenvalue_summary'])} | "
              f"{cell(b['top_eigenvalue_summary'])} | {diff(last['top_eigenvalue'])} |",
              f"| mean loss rise along random directions, radius {results['radius']:g} | "
              f"{cell(a['random_rise_summary'])} | {cell(b['random_rise_summary'])} | {diff(last['random_rise'])} |"]
    alpha_end = last["alpha"]["difference"]
    eig = last["top_eigenvalue"]["difference"]

    def direction(d: dict, smaller: str, larger: str) -> str:
        if d.get("low") is None or not math.isfinite(d["low"]) or d["low"] <= 0 <= d["high"]:
            return "no detectable difference"
        return smaller if d["high"] < 0 else larger

    lines += ["", "Paper's qualitative claim (Zhou et al. 2020): SGD's gradient noise is heavier-tailed "
              "(smaller α) than Adam's, and SGD ends in flatter minima (smaller top eigenvalue).", "",
              "- tail index at the end: "
              f"{direction(alpha_end, 'SGD heavier-tailed (agrees)', 'Adam heavier-tailed (opposite)')}.",
              f"- sharpness at the end: {direction(eig, 'SGD flatter (agrees)', 'Adam flatter (opposite)')}.",
              "", "Descriptive statistics of these runs, not a test of the paper's theory: the tail index "
              "estimator assumes a symmetric α-stable law for the pooled coordinates (here every layer's "
              "coordinates pooled together), and sharpness is not invariant to reparametrization. Near zero "
              "training loss the cross-entropy Hessian shrinks with the loss, so the optimizer that ends at the "
              "lower training loss (see the first table) also tends to show the smaller eigenvalue.", ""]
    lines += _zhou_arm_table(results, cell)
    lines += [f"Wall time: {results['wall_time_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def _zhou_arm_table(results: Mapping[str, Any], cell) -> list[str]:
    """The per-arm table of ``--zhou`` (every arm of the comparison, at the end of training)."""
    if not results.get("arms"):
        return []
    lines = [f"Every arm of the comparison at the end of training ({results['epochs']} epochs), at the setting the "
             "comparison evaluated (chosen on validation; the recipe's fixed rate), mean ± 95% t-interval over "
             f"{len(results['seeds'])} seeds:", "",
             "| arm | optimizer, setting | α (ours) | α (released) | largest Hessian eigenvalue | "
             f"mean rise, radius {results['radius']:g} | final train loss |", "|---|---|---|---|---|---|---|"]
    for arm in results["arms"]:
        setting = ", ".join(f"{'lr' if k == 'learning_rate' else k} {v:g}" for k, v in arm["setting"].items())
        name = f"`{arm['label']}`" + (f" (same runs as `{arm['same_as']}`)" if arm.get("same_as") else "")
        lines.append(f"| {name} | {arm['optimizer']}, {setting} | " + " | ".join(
            cell(arm[f"{k}_summary"]) for k in ("alpha", "alpha_released", "top_eigenvalue", "random_rise",
                                                  "train_loss")) + " |")
    return lines + [""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.optimizer_comparison",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the long protocol (every study; finished studies are kept)")
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--seeds", type=int, default=5, help="evaluation seeds per arm (>= 2)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    parser.add_argument("--model", default="mlp", choices=sorted(MODELS), help="quick default's model")
    parser.add_argument("--rerun", action="store_true",
                        help="--full: retrain studies already finished in --out (default: keep them)")
    parser.add_argument("--update-docs", action="store_true",
                        help="write the measured tables into docs/optimizer_comparison.md (between its markers)")
    parser.add_argument("--zhou", action="store_true",
                        help="tail index and sharpness (Zhou et al. 2020) of every arm at the settings a finished "
                             "comparison chose (--comparison; default the quick one: run it first)")
    parser.add_argument("--comparison", type=Path, default=QUICK_OUT,
                        help="--zhou: the comparison's results directory, e.g. "
                             "results/optimizer_comparison_full/mnist1d_cnn1d_constant (its data, model and arms)")
    parser.add_argument("--dataset", default="mnist1d", choices=("mnist1d", "cifar10"),
                        help="cifar10: the scale path (VGG, crop+flip augmentation) on files in --data-dir")
    parser.add_argument("--data-dir", type=Path, default=None, help="--dataset cifar10: the CIFAR-10 python batches")
    parser.add_argument("--preset", default=None, choices=sorted(CIFAR10_PRESETS),
                        help="--dataset cifar10: a named GPU configuration (wilson_cifar10: Wilson et al. 2017)")
    parser.add_argument("--epochs", type=int, default=None, help="--dataset cifar10: epochs per run")
    parser.add_argument("--channels", default=None, help="--dataset cifar10: VGG stage widths, e.g. 32,64")
    parser.add_argument("--optimizers", default=None, help="--dataset cifar10: arms, e.g. sgd,adam")
    args = parser.parse_args(argv)
    if args.dataset == "cifar10":
        return _main_cifar10(args)
    retain_freed_memory()  # an experiment owns its process (jaxnets.host_memory)
    if args.seeds < 2:
        print(f"optimizer_comparison: error: --seeds: got {args.seeds}; allowed: an integer >= 2", file=sys.stderr)
        return 2
    if args.steps is not None and args.steps < 1:
        print(f"optimizer_comparison: error: --steps: got {args.steps}; allowed: an integer >= 1", file=sys.stderr)
        return 2
    started = time.perf_counter()
    if args.zhou:
        if not (args.comparison / "results.json").is_file():
            print(f"optimizer_comparison: error: --comparison: got no {args.comparison / 'results.json'}; allowed: "
                  "a finished comparison's directory (run `python -m experiments.optimizer_comparison` first)",
                  file=sys.stderr)
            return 2
        path = zhou(args.out, comparison=args.comparison, seeds=args.seeds)
    elif args.full:
        path = full(args.out or FULL_OUT, seeds=args.seeds, steps=args.steps or FULL_STEPS, reuse=not args.rerun)
    else:
        path = quick(args.out or QUICK_OUT, seeds=args.seeds, steps=args.steps or QUICK_STEPS, model=args.model)
        print_conclusions(path.parent / "results.json")
    print(f"report: {path}  ({time.perf_counter() - started:.0f} s)")
    if args.update_docs:
        update_docs(path.parent, block=zhou_block(path.parent) if args.zhou else "full" if args.full else "quick")
    return 0


def _main_cifar10(args: argparse.Namespace) -> int:
    """``--dataset cifar10``: every argument and the data are checked before any training."""
    def refuse(message: str) -> int:
        print(f"optimizer_comparison: error: {message}", file=sys.stderr)
        return 2

    if args.full or args.zhou or args.update_docs or args.steps is not None:
        return refuse("--dataset cifar10: got --full/--zhou/--update-docs/--steps; allowed: --preset, --epochs, "
                      "--channels, --optimizers, --seeds, --out")
    if args.seeds < 2:
        return refuse(f"--seeds: got {args.seeds}; allowed: an integer >= 2")
    if args.epochs is not None and args.epochs < 1:
        return refuse(f"--epochs: got {args.epochs}; allowed: an integer >= 1")
    channels = optimizers = None
    try:
        channels = tuple(int(c) for c in args.channels.split(",")) if args.channels else None
    except ValueError:
        return refuse(f"--channels: got {args.channels!r}; allowed: comma-separated integers >= 1, e.g. 32,64")
    if channels is not None and min(channels) < 1:
        return refuse(f"--channels: got {args.channels!r}; allowed: comma-separated integers >= 1, e.g. 32,64")
    if args.optimizers:
        optimizers = tuple(args.optimizers.split(","))
        known = set(optim.OPTIMIZERS) | {"adam_eps"}
        if not set(optimizers) <= known:
            return refuse(f"--optimizers: got {args.optimizers!r}; allowed: names from {', '.join(sorted(known))}")
    reason = check_cifar10_dir(args.data_dir)
    if reason:
        return refuse(reason)
    retain_freed_memory()
    started = time.perf_counter()
    path = cifar10(args.out or CIFAR10_OUT, args.data_dir, preset=args.preset, seeds=args.seeds, epochs=args.epochs,
                   channels=channels, optimizers=optimizers or CIFAR10_OPTIMIZERS)
    print_conclusions(path.parent / "results.json")
    print(f"report: {path}  ({time.perf_counter() - started:.0f} s)")
    return 0


def print_conclusions(results_path: Path) -> None:
    """The report's generated conclusions, so the verdict is on the screen, not only in the file."""
    results = json.loads(results_path.read_text())
    print("Conclusions (from report.md):")
    for sentence in report.conclusions(results):
        print(f"- {sentence}")


DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "optimizer_comparison.md"
#: The ``--full`` forest plot as the docs page shows it (beside the quick default's figures).
FULL_FOREST = DOCS_PAGE.parent / "figures" / "optimizer_comparison" / "full_forest.png"


def zhou_results(comparison: Path, zhou_out: Path = ZHOU_OUT) -> dict[str, Any] | None:
    """The ``--zhou`` results if they were measured on this comparison's chosen rates, else None."""
    path = zhou_out / "results.json"
    if not path.is_file():
        return None
    results = report.load_results(path)
    return results if Path(results.get("comparison", "")) == Path(comparison) else None


def zhou_block(zhou_dir: Path) -> str:
    """The docs block of a ``--zhou`` run: ``zhou`` for the MLP, ``zhou-MODEL`` for another model."""
    name = report.load_results(zhou_dir).get("model", {}).get("name", "mlp")
    return "zhou" if name == "mlp" else f"zhou-{name}"


def _publish_forest(source: Path) -> None:
    """Copy the forest plot to :data:`FULL_FOREST`, shrunk like every published figure."""
    import shutil
    import tempfile

    from experiments.common import publish_figures
    from jaxnets.io import atomic_write_bytes

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(source, Path(tmp) / "forest.png")
        published = publish_figures(Path(tmp), "forest", figures=Path(tmp) / "figures")
        atomic_write_bytes(FULL_FOREST, published[0].read_bytes())


def update_docs(out: Path, *, block: str) -> None:
    """Copy a run's generated numbers into the docs page, between ``<!-- block:start/end -->``.

    The quick default's figures (curves.png, summary.png) go to docs/figures/optimizer_comparison/.
    """
    from jaxnets.io import atomic_write_bytes, replace_marked_block

    if block == "quick":
        from experiments.common import publish_figures

        # publish_figures empties the page's figure folder; the full block's forest plot lives there too.
        forest = FULL_FOREST.read_bytes() if FULL_FOREST.is_file() else None
        for path in publish_figures(out, "optimizer_comparison"):
            print(f"published {path} ({path.stat().st_size // 1000} kB)")
        if forest is not None:
            atomic_write_bytes(FULL_FOREST, forest)
        results = report.load_results(out)
        zhou = zhou_results(out)
        text = (f"Generated by `python -m experiments.optimizer_comparison --update-docs`: "
                f"{results['wall_time_s']:.0f} s wall on a machine with {os.cpu_count()} CPU cores "
                f"({results['environment']['platform']['backend']}). {results['extra']['budget_note']}"
                + (" The Zhou et al. line comes from `--zhou` run on this comparison (its block below)."
                   if zhou else "") + "\n\n"
                "**Conclusions**\n\n" + report.conclusions_section(results, zhou=zhou) + "\n\n"
                + report.summary_table(results)
                + "\n\nPrimary comparisons (each arm vs SGD, multiplicity-adjusted):\n\n" + report.primary_table(results)
                + "\n\nExploratory paired comparisons (unadjusted; context, not evidence):\n\n"
                + report.comparison_table(results)
                + "\n\n" + "\n".join(f"- {v}" for v in report.verdicts(results))
                + "\n\n" + report.peek_table(results).replace("### ", "**", 1).replace("\n", "**\n", 1))
    else:
        text = (out / ("report.md" if block.startswith("zhou") else "index.md")).read_text()
        text = "\n".join(line for line in text.splitlines() if not line.startswith("# "))
        # The index links each study's report relative to the results directory, which
        # is not part of the docs site: name the file instead.
        text = re.sub(r"\[(\w+)\]\(\1/report\.md\)", lambda m: f"{m.group(1)} (report: `{out}/{m.group(1)}/report.md`)",
                      text)
        text = re.sub(r"^## ", "### ", text, flags=re.M)  # sections of the page's own "long protocol" section
        if block == "full" and "(forest.png)" in text:
            _publish_forest(out / "forest.png")
            text = text.replace("(forest.png)", f"({FULL_FOREST.relative_to(DOCS_PAGE.parent).as_posix()})")
            print(f"published {FULL_FOREST}")
    replace_marked_block(DOCS_PAGE, f"generated-{block}", text)
    print(f"updated {DOCS_PAGE} ({block})")


if __name__ == "__main__":
    sys.exit(main())
