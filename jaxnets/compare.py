r"""An honest optimizer comparison: tune every learning rate on validation data, then test over seeds.

The protocol, for each contender (an *arm*: an optimizer with its fixed
hyperparameters), with the same model, data, batch size, epoch budget and
schedule for every arm:

1. **Grid.** A log-spaced learning-rate grid, by default ``grid_points = 7``
   values a factor ``grid_step = √10`` apart (3 decades), centred on the
   optimizer's usual scale (:data:`DEFAULT_LR_CENTRES`); every other
   hyperparameter at its documented default (``jaxnets.optim.default_hyperparams``)
   unless the arm fixes it. An arm may also search other float hyperparameters
   jointly (``search={"eps": (...)}``: the product grid).
2. **Selection on validation only.** Every grid point is trained for the full
   budget on ``selection_seeds`` seeds (all of them members of ONE
   ``fit_population`` program) and scored by its final *validation* accuracy
   (validation loss for regression), averaged over those seeds; ties go to the
   lower validation loss. The test split is not even handed to this phase: its
   dataset's test split is replaced by the validation split, so no test number
   exists while the learning rate is chosen. A grid point *diverged* when, on
   any selection seed, its final training loss is not finite or is no lower than
   at initialization; it is never chosen.
3. **Bracketing.** If the chosen rate is the largest (smallest) of its grid row,
   ``extension_points`` new rates are added beyond that edge, each a factor
   ``extension_factor`` (3) further, and trained as one more population; this
   repeats until the optimum is interior or (upwards) the next value diverges,
   at most ``max_extensions`` times. Then (``refine``) rates a factor 2 apart are
   added between the optimum and its grid neighbours (one more population). The
   chosen rate is the best mean validation score among the points whose
   learning-rate neighbours did not *collapse* (:func:`collapsed`: diverged, or at
   chance on some selection seed): an optimum next to a cliff is not taken, because
   a rate that works on 3 selection seeds but whose 2x neighbour collapses is a
   lucky rate, not a robust one. The final grid and where the optimum sits
   (``interior``, ``low_edge``, ``high_edge``) are recorded.
4. **Seeds.** The chosen setting is retrained on ``seeds`` fresh seeds
   (``0 .. S−1``, disjoint from the selection seeds ``SELECTION_SEED_OFFSET + i``)
   as one population and evaluated on train, validation and test after every
   ``eval_every`` epochs; then at 0.5x and 2x the chosen rate (``sensitivity_factors``,
   one more population). Seed s gives the same initialization and the same
   data order (``jaxnets.state.run_keys``) in every arm, so arms are paired by seed.
5. **Statistics** (``jaxnets.stats``). Per arm, over seeds: final and best test
   accuracy, final training loss and accuracy, generalization gap (train minus
   test accuracy), epochs until the training loss first reaches ``target_loss``;
   each as a mean with a 95% Student-t interval. The **primary family**, declared
   before any number exists, is every arm minus the SGD arm on final test accuracy
   (:func:`primary_comparisons`): paired t-test and exact sign-flip permutation
   p-values, both Holm-adjusted over the family, with Bonferroni intervals. For each
   requested pair (a, b), exploratory paired differences a − b of the main and
   secondary quantities (unadjusted).

Everything is returned as one JSON-ready dict (:func:`run_comparison`), written
atomically by :func:`save_results`; ``jaxnets.report`` turns it into a report.
Same inputs and seeds give the same numbers (only the ``*time_s`` fields vary;
:func:`without_timings` drops them).

>>> lr_grid("adam")
(0.0001, 0.000316, 0.001, 0.00316, 0.01, 0.0316, 0.1)
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import platform
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np

from jaxnets import optim
from jaxnets import stats
from jaxnets.data import Dataset
from jaxnets.io import atomic_write_json
from jaxnets.objective import objective_for
from jaxnets.population import PopulationResult, create_population, fit_population
from jaxnets.config import TrainConfig
from jaxnets.epochs import steps_for
from jaxnets.evaluation import Evaluator
from jaxnets.train import check_arrays
from jaxnets.tree import params_sha256
from jaxnets.version import __version__

#: Version tag of the results layout written by :func:`run_comparison`.
SCHEMA = "jaxnets.compare/1"

#: Centre (geometric middle) of each optimizer's default learning-rate grid: the
#: scale at which the method usually works with batch sizes around 100. Adaptive
#: methods normalize the step per coordinate, so their rates are far smaller.
DEFAULT_LR_CENTRES: dict[str, float] = {
    "sgd": 10 ** -1.0,
    "momentum": 10 ** -1.5,
    "nesterov": 10 ** -1.5,
    "rmsprop": 10 ** -3.0,
    "adam": 10 ** -2.5,
    "adamw": 10 ** -2.5,
    "adagrad": 10 ** -1.0,
}

#: Selection seeds are ``SELECTION_SEED_OFFSET + i``: never one of the evaluation seeds ``0 .. S−1``.
SELECTION_SEED_OFFSET = 10_000

#: Where the chosen learning rate can sit in its final grid row.
POSITIONS = ("interior", "low_edge", "high_edge", "none")

#: Summary quantities per task (per seed, then mean and CI over seeds).
CLASSIFICATION_METRICS = ("final_test_accuracy", "best_test_accuracy", "final_train_accuracy",
                          "final_train_loss", "final_test_loss", "final_val_accuracy",
                          "generalization_gap", "epochs_to_target")
REGRESSION_METRICS = ("final_test_loss", "best_test_loss", "final_train_loss", "final_val_loss",
                      "generalization_gap", "epochs_to_target")

#: The per-seed quantities compared between paired arms.
#: "best test accuracy" is not among them: it peeks at test along the run (an appendix quantity).
PAIRED_METRICS_CLASSIFICATION = ("final_test_accuracy", "final_train_loss",
                                 "final_train_accuracy", "generalization_gap")
PAIRED_METRICS_REGRESSION = ("final_test_loss", "final_train_loss", "generalization_gap")


def _fail(field: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{field}: got {value!r}; allowed: {allowed}")


def _round_sig(value: float, digits: int = 3) -> float:
    """``value`` rounded to ``digits`` significant digits (grid values print cleanly)."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


def lr_grid(optimizer: str, points: int = 7, step: float = 10 ** 0.5, centre: float | None = None) -> tuple[float, ...]:
    """The default log-spaced learning-rate grid of an optimizer.

    η_k = c · step^(k − (points − 1)/2),  k = 0 .. points − 1, rounded to 3 significant
    digits, with c = ``centre`` or :data:`DEFAULT_LR_CENTRES` [optimizer].

    Args:
      optimizer: one of ``jaxnets.optim.OPTIMIZERS``.
      points: number of values, >= 1.
      step: factor between neighbours, > 1.
      centre: the geometric middle; None for the optimizer's default.

    Returns:
      The grid, increasing.

    >>> lr_grid("sgd", points=3, step=10.0)
    (0.01, 0.1, 1.0)
    """
    if optimizer not in optim.OPTIMIZERS:
        raise _fail("optimizer", optimizer, ", ".join(optim.OPTIMIZERS))
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise _fail("grid_points", points, "an integer >= 1")
    if not step > 1 or not math.isfinite(step):
        raise _fail("grid_step", step, "a finite number > 1")
    middle = DEFAULT_LR_CENTRES[optimizer] if centre is None else centre
    if not middle > 0 or not math.isfinite(middle):
        raise _fail("centre", centre, "a finite number > 0")
    half = (points - 1) / 2.0
    return tuple(_round_sig(middle * step ** (k - half)) for k in range(points))


@dataclasses.dataclass(frozen=True)
class Arm:
    """One contender: an optimizer, its fixed hyperparameters and how its learning rate is set.

    Attributes:
      label: a unique name for reports, e.g. ``"adam"`` or ``"adam_eps"``.
      optimizer: a name from ``jaxnets.optim.OPTIMIZERS``.
      hyperparams: fixed keyword hyperparameters passed to ``optim.create``
        (the rest keep their defaults), e.g. ``{"eps": 1e-3}``.
      lr_grid: the initial learning-rate grid; None for :func:`lr_grid` of the optimizer
        with the comparison's ``grid_points`` and ``grid_step``.
      search: other float hyperparameters searched jointly with the learning rate,
        name -> values (the product grid is trained), e.g. ``{"eps": (1e-8, 1e-3, 1.0)}``.
        Each name must be a traced hyperparameter of the optimizer.
      fixed_lr: skip selection and use this learning rate (a published recipe, say);
        ``lr_grid`` and ``search`` must then be unset.
      note: a sentence for the report (what the arm tests).

    >>> Arm("adam", "adam").label, Arm("recipe", "adam", fixed_lr=1e-2).fixed_lr
    ('adam', 0.01)
    """

    label: str
    optimizer: str
    hyperparams: Mapping[str, float] = dataclasses.field(default_factory=dict)
    lr_grid: tuple[float, ...] | None = None
    search: Mapping[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    fixed_lr: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise _fail("label", self.label, "a non-empty string")
        if self.optimizer not in optim.OPTIMIZERS:
            raise _fail("optimizer", self.optimizer, ", ".join(optim.OPTIMIZERS))
        if self.lr_grid is not None:
            grid = tuple(float(v) for v in self.lr_grid)
            if not grid or not all(v > 0 and math.isfinite(v) for v in grid) or len(set(grid)) != len(grid):
                raise _fail("lr_grid", self.lr_grid, "distinct finite numbers > 0")
            object.__setattr__(self, "lr_grid", tuple(sorted(grid)))
        if self.fixed_lr is not None:
            if not isinstance(self.fixed_lr, (int, float)) or not self.fixed_lr > 0:
                raise _fail("fixed_lr", self.fixed_lr, "a number > 0 or None")
            if self.lr_grid is not None or self.search:
                raise _fail("fixed_lr", self.fixed_lr, "None when lr_grid or search is given")
        search = {}
        for name, values in dict(self.search).items():
            if name == "learning_rate" or name in self.hyperparams:
                raise _fail("search", name, "a hyperparameter other than learning_rate and the fixed ones")
            values = tuple(float(v) for v in values)
            if not values or len(set(values)) != len(values):
                raise _fail(f"search[{name!r}]", values, "distinct numbers")
            search[name] = values
        object.__setattr__(self, "search", search)
        object.__setattr__(self, "hyperparams", dict(self.hyperparams))
        # Fails here, with optim's one-line message, on unknown names or bad values.
        optim.create(self.optimizer, 1.0, **self.hyperparams)

    def resolved_hyperparams(self) -> dict[str, Any]:
        """The optimizer's defaults updated with this arm's fixed values."""
        return {**optim.default_hyperparams(self.optimizer), **self.hyperparams}


@dataclasses.dataclass(frozen=True)
class ComparisonConfig:
    """The shared training budget and the protocol's knobs.

    Attributes:
      epochs: passes over the training split, the same for every arm.
      batch_size: examples per step (None: full batch).
      schedule: learning-rate schedule name (``jaxnets.optim.SCHEDULES``); "cosine"
        decays over the whole run.
      seeds: S, evaluation seeds ``0 .. S−1``.
      selection_seeds: seeds per grid point during selection.
      grid_points, grid_step: the default grid (see :func:`lr_grid`).
      extension_factor, extension_points, max_extensions: grid bracketing (module docstring).
      target_loss: training loss for "epochs to reach"; None skips it.
      eval_every: evaluate every k epochs (and after the last); also the
        resolution of "epochs to reach" and of the curves.
      confidence: level of every interval.
      loss: loss name (None: the task's default); l2: L2 penalty on weights.
      pairs: (a, b) arm labels to compare with paired tests; None compares
        ("sgd", "adam") when both are present.
      refine: after bracketing, add rates a factor 2 apart between the optimum and
        its grid neighbours (one more population).
      sensitivity_factors: the chosen rate times each factor is also trained on the
        evaluation seeds (one more population) and tested; () skips it.
      decay_rate, decay_epochs: the "step" and "exponential" schedules' factor and
        period in epochs (the rate is multiplied by ``decay_rate`` every
        ``decay_epochs`` epochs); None for the other schedules.
      augment: the training batches' augmentation (``TrainConfig.augment``: None,
        "crop_flip" or a callable), the same for every arm and never at evaluation.
    """

    epochs: int = 20
    batch_size: int | None = 100
    schedule: str = "constant"
    seeds: int = 5
    selection_seeds: int = 3
    grid_points: int = 7
    grid_step: float = 10 ** 0.5
    extension_factor: float = 3.0
    extension_points: int = 2
    max_extensions: int = 3
    target_loss: float | None = None
    eval_every: int = 1
    confidence: float = stats.DEFAULT_CONFIDENCE
    loss: str | None = None
    l2: float = 0.0
    pairs: tuple[tuple[str, str], ...] | None = None
    refine: bool = True
    sensitivity_factors: tuple[float, ...] = (0.5, 2.0)
    # None by default: results stored before these fields existed compare equal to a new config.
    decay_rate: float | None = None
    decay_epochs: int | None = None
    augment: Any = None

    def __post_init__(self) -> None:
        for name, minimum in (("seeds", 1), ("selection_seeds", 1), ("grid_points", 1),
                              ("extension_points", 1), ("max_extensions", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise _fail(name, value, f"an integer >= {minimum}")
        if self.schedule not in optim.SCHEDULES:
            raise _fail("schedule", self.schedule, ", ".join(optim.SCHEDULES))
        for name in ("grid_step", "extension_factor"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 1 or not math.isfinite(value):
                raise _fail(name, value, "a finite number > 1")
        if self.target_loss is not None and not (isinstance(self.target_loss, (int, float))
                                                 and self.target_loss > 0):
            raise _fail("target_loss", self.target_loss, "a number > 0 or None")
        if self.pairs is not None:
            pairs = tuple(tuple(pair) for pair in self.pairs)
            if not all(len(pair) == 2 and pair[0] != pair[1] for pair in pairs):
                raise _fail("pairs", self.pairs, "(label_a, label_b) tuples of two different labels")
            object.__setattr__(self, "pairs", pairs)
        factors = tuple(self.sensitivity_factors)
        if not all(isinstance(f, (int, float)) and f > 0 and f != 1 and math.isfinite(f) for f in factors):
            raise _fail("sensitivity_factors", self.sensitivity_factors, "finite numbers > 0 other than 1")
        object.__setattr__(self, "sensitivity_factors", tuple(float(f) for f in factors))
        decays = self.schedule in ("step", "exponential")
        if decays != (self.decay_epochs is not None) or decays != (self.decay_rate is not None):
            raise _fail("decay_epochs", self.decay_epochs, "an int >= 1 with decay_rate in (0, 1] for the step "
                        "and exponential schedules, None (both) for the others")
        if decays and (isinstance(self.decay_epochs, bool) or not isinstance(self.decay_epochs, int)
                       or self.decay_epochs < 1):
            raise _fail("decay_epochs", self.decay_epochs, "an int >= 1")
        self.train_config()  # TrainConfig checks epochs, batch_size, eval_every, l2, augment

    def train_config(self) -> TrainConfig:
        """The ``TrainConfig`` every population of the comparison uses."""
        # A diverging member runs on with NaN metrics (and is flagged); it must never stop the others.
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, loss=self.loss, l2=self.l2,
                           eval_every=self.eval_every, eval_train=True, nonfinite="ignore", augment=self.augment)


# ----------------------------------------------------------------- helpers


def _is_classification(data: Dataset) -> bool:
    return data.task != "regression"


def selection_metric(data: Dataset) -> str:
    """The validation quantity the learning rate is chosen by: accuracy, or loss for regression.

    >>> from jaxnets.data import load
    >>> selection_metric(load("iris", validation=0.2))
    'val_accuracy'
    """
    return "val_accuracy" if _is_classification(data) else "val_loss"


def _make_tx(arm: Arm, learning_rate: float, config: ComparisonConfig, num_train: int):
    total = steps_for(num_train, config.batch_size, config.epochs)
    decay = {} if config.decay_epochs is None else {
        "decay_rate": config.decay_rate, "step_size": config.decay_epochs * steps_for(num_train, config.batch_size, 1)}
    return optim.create(arm.optimizer, learning_rate, schedule=config.schedule, total_steps=total,
                        **decay, **arm.hyperparams)


def _check_search_names(arm: Arm, tx) -> None:
    state = tx.init({"kernel": np.zeros((1,), np.float32)})
    traced = state.hyperparams
    for name in arm.search:
        if name not in traced:
            raise _fail(f"search ({arm.label})", name, ", ".join(sorted(k for k in traced if k != "learning_rate")))


def _curves(result: PopulationResult) -> dict[str, list]:
    """History as columns: ``epochs`` (completed, 1-based) and one (E, P) list per metric."""
    keys = [k for k in result.history[0] if k not in ("epoch", "step", "time_s")]
    curves: dict[str, list] = {"epochs": [int(entry["epoch"]) + 1 for entry in result.history]}
    for key in keys:
        curves[key] = [[float(v) for v in entry[key]] for entry in result.history]
    return curves


def _initial_train_loss(model: nn.Module, data: Dataset, seeds: Sequence[int], config: ComparisonConfig) -> list[float]:
    """Training loss of each seed's freshly initialized model (eval mode, whole training split).

    The initialization depends on the seed only, not on the optimizer, so this is
    the common starting point of every arm; a run "diverged" if it ends no lower.

    Args:
      model: the Flax module.
      data: the dataset (its training split is used).
      seeds: the seeds.
      config: supplies the loss.

    Returns:
      One loss per seed.
    """
    objective = objective_for(data.task, loss=config.loss, l2=0.0)
    x, y = check_arrays(data.x_train, data.y_train, "train")
    state = create_population(model, optim.create("sgd", 1.0), x, seeds)
    evaluator = Evaluator(objective, max(1, min(1024, len(x))), {}, members=True)
    return [float(m["loss"]) for m in evaluator(state, x, y)]


def _diverged(final_train_loss: float, start_loss: float) -> bool:
    return not math.isfinite(final_train_loss) or final_train_loss >= start_loss


#: A final accuracy at most this far above chance (1/K) counts as "at chance level".
CHANCE_MARGIN = 0.05


def collapsed(final_train_loss: float | None, initial_train_loss: float | None,
              final_accuracies: Sequence[float | None] = (), num_classes: int | None = None) -> bool:
    """Whether a run collapsed: its loss is non-finite or >= the initial loss, or an accuracy is at chance.

    "At chance" is a final validation or test accuracy <= 1/K + :data:`CHANCE_MARGIN`
    (K classes): a network that predicts one class everywhere scores about 1/K on
    balanced data. A missing (None/NaN) accuracy counts as collapsed too; regression
    runs (``num_classes`` None) are judged by the loss alone.

    Args:
      final_train_loss: the run's last training loss.
      initial_train_loss: the same seed's loss at initialization (None: not checked).
      final_accuracies: final validation and/or test accuracies.
      num_classes: K, or None for regression.

    Returns:
      True for a collapsed run.

    >>> collapsed(0.01, 2.3, [0.11, 0.12], 10), collapsed(0.01, 2.3, [0.66], 10), collapsed(2.5, 2.3, [0.6], 10)
    (True, False, True)
    """
    loss = math.nan if final_train_loss is None else float(final_train_loss)
    if not math.isfinite(loss) or (initial_train_loss is not None and loss >= float(initial_train_loss)):
        return True
    if num_classes:
        chance = 1.0 / num_classes + CHANCE_MARGIN
        return any(a is None or not math.isfinite(a) or a <= chance for a in final_accuracies)
    return False


def _score_key(score: float, val_loss: float, higher_is_better: bool) -> tuple[float, float]:
    """Sort key, larger is better: the primary score, then the lower validation loss."""
    primary = score if higher_is_better else -score
    secondary = -val_loss if math.isfinite(val_loss) else -math.inf
    return (primary if math.isfinite(primary) else -math.inf, secondary)


def _candidate_key(candidate: Mapping[str, float], search_names: Sequence[str]) -> tuple[float, ...]:
    return tuple(candidate[name] for name in search_names)


# ----------------------------------------------------------------- selection


def select_learning_rate(model: nn.Module, data: Dataset, arm: Arm, config: ComparisonConfig, *,
                         start_losses: Sequence[float] | None = None,
                         on_event: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Steps 1-3 of the protocol for one arm: grid, validation-only selection, bracketing.

    Args:
      model: the Flax module (the same for every arm).
      data: a dataset with a validation split (``Dataset.with_validation``). Its
        test split is never used here.
      arm: the contender; an arm with ``fixed_lr`` is not searched.
      config: the comparison's settings.
      start_losses: initial training loss per selection seed (computed if None).
      on_event: called with a one-line progress message.

    Returns:
      A JSON-ready dict: ``chosen`` (learning_rate and searched values), ``position``
      (one of :data:`POSITIONS`), ``upper_neighbour_diverged``, ``metric``, ``seeds``,
      ``rounds`` (one record per population trained, with every member's final
      metrics and curves), ``grid`` (every candidate's score, sorted), ``wall_time_s``.
    
    >>> import jaxnets as jn
    >>> data = jn.data.load("iris", validation=0.2)
    >>> model = jn.models.get_model("mlp", output_dim=3, hidden=(8,))
    >>> config = ComparisonConfig(epochs=2, batch_size=32, max_extensions=0)
    >>> selection = select_learning_rate(model, data, Arm("sgd", "sgd", lr_grid=(0.01, 0.1, 1.0)), config)
    >>> [p["learning_rate"] for p in selection["grid"] if not p["refined"]], selection["position"] in POSITIONS
    ([0.01, 0.1, 1.0], True)
    """
    if data.num_val == 0:
        raise _fail("data.num_val", 0, "> 0 (carve a validation split with Dataset.with_validation)")
    say = on_event or (lambda message: None)
    started = time.perf_counter()
    metric = selection_metric(data)
    higher = metric == "val_accuracy"
    seeds = [SELECTION_SEED_OFFSET + i for i in range(config.selection_seeds)]
    if start_losses is None:
        start_losses = _initial_train_loss(model, data, seeds, config)
    # The selection phase never receives the test split: it is replaced by validation.
    blind = dataclasses.replace(data, x_test=data.x_val, y_test=data.y_val)
    names = list(arm.search)
    tx = _make_tx(arm, 1.0, config, data.num_train)
    _check_search_names(arm, tx)

    base_grid = arm.lr_grid or lr_grid(arm.optimizer, config.grid_points, config.grid_step)
    combos = [dict(zip(names, values)) for values in _product([arm.search[n] for n in names])]
    pending = [{"learning_rate": lr, **combo} for combo in combos for lr in base_grid]

    def train(candidates: list[dict], label: str, **marks) -> dict:
        record = _train_candidates(model, blind, tx, config, candidates, seeds, start_losses, metric)
        record.update(round=len(rounds), **marks)
        rounds.append(record)
        scored.extend({**c, **({"refined": True} if marks.get("refine") else {})} for c in record["candidates"])
        say(f"{arm.label}: {label} ({record['wall_time_s']:.1f} s)")
        return record

    scored: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    best = _bracket(train, pending, combos, scored, names, higher, config, say, arm.label, len(seeds))
    if config.refine and best is not None:
        refined = _refinement(best, scored, names)
        if refined:
            train(refined, f"refined around {best['learning_rate']:.3g} with "
                  + ", ".join(f"{c['learning_rate']:.3g}" for c in refined), refine=True)
    for record in rounds:  # the rounds' own candidate lists carry the refined mark too
        if record.get("refine"):
            for candidate in record["candidates"]:
                candidate["refined"] = True
    stable, position, upper_diverged = False, "none", False
    if best is not None:
        best, stable = _choose_stable(scored, names, higher)
        position, upper_diverged = _position(best, scored, names)
    return {
        "metric": metric,
        "seeds": seeds,
        "start_train_loss": [float(v) for v in start_losses],
        "chosen": None if best is None else {"learning_rate": best["learning_rate"],
                                             **{n: best[n] for n in names}},
        "chosen_score": None if best is None else best["score"],
        "position": position,
        "upper_neighbour_diverged": bool(upper_diverged),
        "rule": "best mean validation score whose learning-rate neighbours did not collapse",
        "stable": bool(stable),
        "searched": names,
        "grid": _grid_record(scored, names),
        "rounds": rounds,
        "wall_time_s": time.perf_counter() - started,
    }


def _bracket(train: Callable, pending: list[dict], combos: list[dict], scored: list[dict], names: list[str],
             higher: bool, config: ComparisonConfig, say: Callable[[str], None], label: str,
             num_seeds: int) -> dict | None:
    """Steps 2-3: train the grid, then extend it past an edge optimum until it is bracketed."""
    best = None
    for round_index in range(config.max_extensions + 1):
        train(pending, f"selection round {round_index}: {len(pending)} settings x {num_seeds} seeds")
        valid = [c for c in scored if not c["diverged"]]
        if valid:
            best = max(valid, key=lambda c: _score_key(c["score"], c["val_loss"], higher))
            position, _ = _position(best, scored, names)
            if position == "interior":
                break
            factors = [config.extension_factor ** k for k in range(1, config.extension_points + 1)]
            edge = best["learning_rate"]
            new = [edge * f for f in factors] if position == "high_edge" else [edge / f for f in factors]
            pending = [{"learning_rate": _round_sig(lr), **{n: best[n] for n in names}} for lr in new]
        else:
            best, position = None, "none"
            lowest = min(c["learning_rate"] for c in scored)
            pending = [{"learning_rate": _round_sig(lowest / config.extension_factor ** k), **combo}
                       for combo in combos for k in range(1, config.extension_points + 1)]
        if round_index == config.max_extensions:
            break
        known = {(_candidate_key(c, names), c["learning_rate"]) for c in scored}
        pending = [c for c in pending if (_candidate_key(c, names), c["learning_rate"]) not in known]
        if not pending:
            break
        new_rates = ", ".join(f"{c['learning_rate']:.3g}" for c in pending)
        say(f"{label}: optimum on the {position.replace('_', ' ')} of the grid; extending to {new_rates}")
    return best


def _position(best: Mapping[str, Any], scored: Sequence[Mapping[str, Any]], names: Sequence[str]) -> tuple[str, bool]:
    """Where ``best`` sits in its row of learning rates, and whether the next larger rate diverged.

    A one-point row counts as a high edge: larger rates are tried first (they may diverge).
    """
    row = _row_of(best, scored, names)
    index = [c["learning_rate"] for c in row].index(best["learning_rate"])
    upper_diverged = index + 1 < len(row) and row[index + 1]["diverged"]
    if 0 < index < len(row) - 1:
        return "interior", upper_diverged
    return ("low_edge" if index == 0 and len(row) > 1 else "high_edge"), upper_diverged


def _grid_record(scored: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[dict]:
    keys = ("learning_rate", *names, "score", "val_loss", "final_train_loss", "diverged", "collapsed")
    return sorted(({**{k: c[k] for k in keys}, "refined": bool(c.get("refined"))} for c in scored),
                  key=lambda c: (_candidate_key(c, names), c["learning_rate"]))


def _row_of(candidate: Mapping[str, Any], scored: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list:
    """The candidates sharing ``candidate``'s searched values, by learning rate."""
    key = _candidate_key(candidate, names)
    return sorted((c for c in scored if _candidate_key(c, names) == key), key=lambda c: c["learning_rate"])


def _refinement(best: Mapping[str, Any], scored: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[dict]:
    """Rates η·2^k (k = ±1, ±2, ...) strictly between the optimum η and its neighbours in its grid row.

    >>> row = [{"learning_rate": lr} for lr in (0.1, 1.0, 3.16)]
    >>> [c["learning_rate"] for c in _refinement(row[1], row, [])]
    [0.5, 0.25, 0.125, 2.0]
    """
    row = _row_of(best, scored, names)
    lrs = [c["learning_rate"] for c in row]
    index = lrs.index(best["learning_rate"])
    combo = {n: best[n] for n in names}
    out = []
    for neighbour, factor in ((lrs[index - 1] if index > 0 else None, 0.5),
                              (lrs[index + 1] if index + 1 < len(lrs) else None, 2.0)):
        if neighbour is None:
            continue
        rate = best["learning_rate"] * factor
        # Stop short of the neighbour (5% margin) so no point duplicates it.
        while min(rate, neighbour) / max(rate, neighbour) < 1 / 1.05 and (rate - neighbour) * (factor - 1) < 0:
            out.append({"learning_rate": _round_sig(rate), **combo})
            rate *= factor
    return out


def _choose_stable(scored: Sequence[Mapping[str, Any]], names: Sequence[str], higher: bool) -> tuple[dict, bool]:
    """The best-scoring candidate whose neighbours in its learning-rate row did not collapse.

    A neighbour is the next smaller or larger rate trained with the same searched values;
    collapsed means diverged or at chance on some selection seed. Returns ``(candidate,
    True)``, or the best non-collapsed candidate and False when no candidate qualifies.
    """
    bad = lambda c: c["diverged"] or c.get("collapsed", False)  # noqa: E731
    valid = sorted((c for c in scored if not bad(c)), key=lambda c: _score_key(c["score"], c["val_loss"], higher),
                   reverse=True)
    if not valid:
        valid = sorted((c for c in scored if not c["diverged"]),
                       key=lambda c: _score_key(c["score"], c["val_loss"], higher), reverse=True)
    for candidate in valid:
        row = _row_of(candidate, scored, names)
        index = row.index(candidate)
        neighbours = row[max(index - 1, 0):index] + row[index + 1:index + 2]
        if not any(bad(n) for n in neighbours):
            return candidate, True
    return valid[0], False


def _product(lists: Sequence[Sequence[float]]) -> list[tuple[float, ...]]:
    combos: list[tuple[float, ...]] = [()]
    for values in lists:
        combos = [combo + (v,) for combo in combos for v in values]
    return combos


def _train_candidates(model: nn.Module, blind: Dataset, tx, config: ComparisonConfig,
                      candidates: Sequence[Mapping[str, float]], seeds: Sequence[int],
                      start_losses: Sequence[float], metric: str) -> dict[str, Any]:
    """Train candidates x seeds as one population; score each candidate on validation."""
    members = [(c, s) for c in candidates for s in range(len(seeds))]
    names = list(candidates[0])
    hyperparams = {name: [c[name] for c, _ in members] for name in names}
    result = fit_population(model, blind, tx, config.train_config(), seeds=[seeds[s] for _, s in members],
                            hyperparams=hyperparams)
    final = result.history[-1]
    out = []
    for index, candidate in enumerate(candidates):
        rows = [i for i, (c, _) in enumerate(members) if c is candidate]
        finals = {key: [float(final[key][i]) for i in rows] for key in ("train_loss", metric, "val_loss")}
        diverged = any(_diverged(finals["train_loss"][k], start_losses[members[i][1]]) for k, i in enumerate(rows))
        flat = [collapsed(finals["train_loss"][k], start_losses[members[i][1]],
                          [finals[metric][k]] if metric == "val_accuracy" else [], blind.num_classes)
                for k, i in enumerate(rows)]
        score = float(np.mean(finals[metric])) if not diverged else math.nan
        val_loss = float(np.mean(finals["val_loss"])) if not diverged else math.nan
        out.append({**{k: float(v) for k, v in candidate.items()}, "score": score, "val_loss": val_loss,
                    "final_train_loss": float(np.mean(finals["train_loss"])), "diverged": bool(diverged),
                    "collapsed": bool(any(flat)),
                    "per_seed": {key: values for key, values in finals.items()}, "members": rows})
    curves = _curves(result)
    # The blind dataset's "test" split is the validation split: drop the duplicate columns.
    curves = {k: v for k, v in curves.items() if not k.startswith("test_")}
    return {"candidates": out, "member_seeds": [seeds[s] for _, s in members], "curves": curves,
            "traces": dict(result.traces), "wall_time_s": result.wall_time_s}


# ----------------------------------------------------------------- seeds


def per_seed_metrics(curves: Mapping[str, Any], task: str, target_loss: float | None) -> dict[str, list[float]]:
    """The summary quantities of every seed from its curves.

    classification: final/best test accuracy, final train accuracy and loss, final
    test loss, final validation accuracy, generalization gap = final train accuracy −
    final test accuracy; regression: final/best (lowest) test loss, final train and
    validation loss, gap = final test loss − final train loss. ``epochs_to_target``
    is the first evaluated epoch count whose training loss is <= ``target_loss``
    (NaN if never, or no target).

    Args:
      curves: columns as in a results record: ``epochs`` and (E, S) lists.
      task: the dataset's task.
      target_loss: the target, or None.

    Returns:
      metric -> S floats.

    >>> curves = {"epochs": [1, 2], "train_loss": [[0.9, 0.5], [0.4, 0.3]],
    ...           "train_accuracy": [[0.6, 0.7], [0.9, 1.0]], "test_accuracy": [[0.5, 0.6], [0.55, 0.58]],
    ...           "test_loss": [[1.0, 0.9], [0.8, 0.85]], "val_accuracy": [[0.5, 0.5], [0.6, 0.6]]}
    >>> m = per_seed_metrics(curves, "multiclass", target_loss=0.5)
    >>> m["best_test_accuracy"], m["epochs_to_target"], [round(g, 2) for g in m["generalization_gap"]]
    ([0.55, 0.6], [2.0, 1.0], [0.35, 0.42])
    """
    def column(key: str) -> np.ndarray:
        return np.asarray([[np.nan if v is None else v for v in row] for row in curves[key]], np.float64)

    train_loss = column("train_loss")
    epochs = np.asarray(curves["epochs"], np.float64)
    out: dict[str, np.ndarray] = {"final_train_loss": train_loss[-1]}
    if task != "regression":
        test_acc, train_acc = column("test_accuracy"), column("train_accuracy")
        out.update(final_test_accuracy=test_acc[-1], best_test_accuracy=np.nanmax(test_acc, axis=0)
                   if np.isfinite(test_acc).any() else test_acc[-1],
                   final_train_accuracy=train_acc[-1], final_test_loss=column("test_loss")[-1],
                   generalization_gap=train_acc[-1] - test_acc[-1])
        if "val_accuracy" in curves:
            out["final_val_accuracy"] = column("val_accuracy")[-1]
    else:
        test_loss = column("test_loss")
        out.update(final_test_loss=test_loss[-1], best_test_loss=np.nanmin(test_loss, axis=0)
                   if np.isfinite(test_loss).any() else test_loss[-1],
                   generalization_gap=test_loss[-1] - train_loss[-1])
        if "val_loss" in curves:
            out["final_val_loss"] = column("val_loss")[-1]
    reached = np.full(train_loss.shape[1], np.nan)
    if target_loss is not None:
        for s in range(train_loss.shape[1]):
            hits = np.flatnonzero(train_loss[:, s] <= target_loss)
            if hits.size:
                reached[s] = epochs[hits[0]]
    out["epochs_to_target"] = reached
    return {key: [float(v) for v in values] for key, values in out.items()}


def run_seeds(model: nn.Module, data: Dataset, arm: Arm, setting: Mapping[str, float], config: ComparisonConfig,
              *, on_event: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Step 4: train the chosen setting on seeds ``0 .. S−1`` as one population and evaluate on test.

    Args:
      model, data, arm, config: as for :func:`select_learning_rate`.
      setting: ``{"learning_rate": η, **searched values}``.
      on_event: progress messages.

    Returns:
      A JSON-ready dict: ``seeds``, ``setting``, ``curves`` (``epochs`` and (E, S)
      columns of every metric), ``per_seed`` (see :func:`per_seed_metrics`),
      ``params_sha256`` (final parameters of each seed), ``traces``, ``wall_time_s``.
    
    >>> import jaxnets as jn
    >>> data = jn.data.load("iris", validation=0.2)
    >>> model = jn.models.get_model("mlp", output_dim=3, hidden=(8,))
    >>> runs = run_seeds(model, data, Arm("sgd", "sgd"), {"learning_rate": 0.1},
    ...                  ComparisonConfig(epochs=2, batch_size=32, seeds=3))
    >>> runs["seeds"], len(runs["per_seed"]["final_test_accuracy"]), runs["curves"]["epochs"]
    ([0, 1, 2], 3, [1, 2])
    """
    seeds = list(range(config.seeds))
    tx = _make_tx(arm, float(setting["learning_rate"]), config, data.num_train)
    hyperparams = {name: [float(value)] * len(seeds) for name, value in setting.items()}
    result = fit_population(model, data, tx, config.train_config(), seeds=seeds, hyperparams=hyperparams)
    curves = _curves(result)
    initial = _initial_train_loss(model, data, seeds, config)
    say = on_event or (lambda message: None)
    say(f"{arm.label}: {len(seeds)} seeds at learning rate {setting['learning_rate']:.3g} "
        f"({result.wall_time_s:.1f} s)")
    return {
        "seeds": seeds,
        "setting": {k: float(v) for k, v in setting.items()},
        "curves": curves,
        "per_seed": per_seed_metrics(curves, data.task, config.target_loss),
        "initial_train_loss": initial,
        "collapsed": _collapsed_seeds(curves, initial, data.num_classes if _is_classification(data) else None),
        "params_sha256": [params_sha256(result.member_state(i).params) for i in range(len(seeds))],
        "num_params": result.num_params,
        "traces": dict(result.traces),
        "wall_time_s": result.wall_time_s,
    }


def _collapsed_seeds(curves: Mapping[str, Any], initial: Sequence[float], num_classes: int | None) -> list[bool]:
    """:func:`collapsed` for every seed of a runs record's curves."""
    last = {k: v[-1] for k, v in curves.items() if k != "epochs"}
    keys = [k for k in ("val_accuracy", "test_accuracy") if k in last]
    return [collapsed(last["train_loss"][s], initial[s], [last[k][s] for k in keys], num_classes)
            for s in range(len(initial))]


def run_sensitivity(model: nn.Module, data: Dataset, arm: Arm, setting: Mapping[str, float],
                    config: ComparisonConfig, *, on_event: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The chosen setting with the learning rate times each of ``config.sensitivity_factors``, on the
    evaluation seeds, as one population: how much the result rides on the exact rate.

    Returns:
      ``{"factors", "points": [{"factor", "learning_rate", "per_seed", "summary", "collapsed"}],
      "wall_time_s"}``.
    """
    seeds = list(range(config.seeds))
    factors = list(config.sensitivity_factors)
    members = [(f, s) for f in factors for s in seeds]
    base = float(setting["learning_rate"])
    tx = _make_tx(arm, base, config, data.num_train)
    hyperparams = {name: [float(value)] * len(members) for name, value in setting.items()}
    hyperparams["learning_rate"] = [base * f for f, _ in members]
    result = fit_population(model, data, tx, config.train_config(), seeds=[s for _, s in members],
                            hyperparams=hyperparams)
    curves = _curves(result)
    initial = _initial_train_loss(model, data, seeds, config)
    points = []
    for k, factor in enumerate(factors):
        columns = slice(k * len(seeds), (k + 1) * len(seeds))
        part = {key: value if key == "epochs" else [row[columns] for row in value] for key, value in curves.items()}
        per_seed = per_seed_metrics(part, data.task, config.target_loss)
        points.append({"factor": factor, "learning_rate": _round_sig(base * factor, 6), "per_seed": per_seed,
                       "summary": summarize_seeds(per_seed, config.confidence),
                       "collapsed": _collapsed_seeds(part, initial, data.num_classes if _is_classification(data)
                                                     else None)})
    (on_event or (lambda message: None))(
        f"{arm.label}: sensitivity at x{', x'.join(f'{f:g}' for f in factors)} ({result.wall_time_s:.1f} s)")
    return {"factors": factors, "points": points, "wall_time_s": result.wall_time_s}


def summarize_seeds(per_seed: Mapping[str, Sequence[float]], confidence: float = stats.DEFAULT_CONFIDENCE
                    ) -> dict[str, dict]:
    """Mean and t-interval of every per-seed quantity (``jaxnets.stats.mean_ci``).

    >>> out = summarize_seeds({"final_test_accuracy": [0.6, 0.7, 0.8]})
    >>> round(out["final_test_accuracy"]["mean"], 3), out["final_test_accuracy"]["n"]
    (0.7, 3)
    """
    return {key: stats.mean_ci(values, confidence).as_dict() for key, values in per_seed.items()}


def paired_comparisons(arms: Sequence[Mapping[str, Any]], pairs: Sequence[tuple[str, str]], task: str,
                       confidence: float = stats.DEFAULT_CONFIDENCE) -> list[dict[str, Any]]:
    """Paired differences a − b per seed for each pair of arm labels, with CI and p-value.

    Seeds are matched by value (seed s of a with seed s of b: same initialization
    and data order), so the pairing survives any order.

    Args:
      arms: arm records as in :func:`run_comparison`'s output (``label``, ``runs``).
      pairs: (label_a, label_b) tuples; pairs naming a missing or failed arm are skipped.
      task: the dataset's task (picks the compared quantities).
      confidence: interval level.

    Returns:
      One dict per (pair, quantity): ``a``, ``b``, ``metric``, ``seeds`` and the
      ``jaxnets.stats.PairedTest`` fields.
    
    >>> metrics = PAIRED_METRICS_CLASSIFICATION
    >>> a = {"label": "a", "runs": {"seeds": [0, 1, 2], "per_seed": {m: [0.7, 0.8, 0.9] for m in metrics}}}
    >>> b = {"label": "b", "runs": {"seeds": [2, 1, 0], "per_seed": {m: [0.6, 0.7, 0.8] for m in metrics}}}
    >>> row = paired_comparisons([a, b], [("a", "b")], "multiclass")[0]   # d = 0.7−0.8, 0.8−0.7, 0.9−0.6
    >>> row["metric"], row["seeds"], round(row["difference"]["mean"], 3)
    ('final_test_accuracy', [0, 1, 2], 0.1)
    """
    by_label = {arm["label"]: arm for arm in arms if arm.get("runs")}
    metrics = PAIRED_METRICS_CLASSIFICATION if task != "regression" else PAIRED_METRICS_REGRESSION
    out = []
    for a, b in pairs:
        if a not in by_label or b not in by_label:
            continue
        for metric in metrics:
            row = _paired_row(by_label[a]["runs"], by_label[b]["runs"], metric, confidence)
            out.append({"a": a, "b": b, "metric": metric, **row})
    return out


def primary_metric(task: str) -> str:
    """The quantity of the declared primary family: final test accuracy (final test loss for regression).

    >>> primary_metric("multiclass"), primary_metric("regression")
    ('final_test_accuracy', 'final_test_loss')
    """
    return "final_test_loss" if task == "regression" else "final_test_accuracy"


def primary_comparisons(arms: Sequence[Mapping[str, Any]], task: str, reference: str = "sgd",
                        confidence: float = stats.DEFAULT_CONFIDENCE) -> dict[str, Any] | None:
    """The declared family of primary comparisons: every arm minus the ``reference`` arm on the primary metric.

    The family is fixed before looking at any number (every arm with seed runs, against
    SGD), so its m tests are adjusted together: Holm-adjusted p-values of both the paired
    t-test and the exact sign-flip permutation test, and Bonferroni intervals at level
    1 − (1 − c)/m (simultaneous: all m cover together with probability >= c; Holm has no
    matching interval, Bonferroni is the usual conservative companion).

    Args:
      arms: arm records (``label``, ``runs``) as in :func:`run_comparison`'s output.
      task: the dataset's task.
      reference: the label every other arm is compared with.
      confidence: the family-wise level c.

    Returns:
      None when the reference arm has no runs; else ``{"reference", "metric", "family_size",
      "confidence", "adjusted_confidence", "min_permutation_p", "rows"}``, each row an ``a``
      (the arm), ``b`` (the reference), ``seeds``, the ``jaxnets.stats.PairedTest`` fields,
      ``holm_p`` (t-test), ``holm_permutation_p`` and ``adjusted_interval`` (low, high).

    >>> arm = lambda label, v: {"label": label, "runs": {"seeds": [0, 1, 2, 3, 4],
    ...                                                  "per_seed": {"final_test_accuracy": v}}}
    >>> family = primary_comparisons([arm("sgd", [0.60, 0.62, 0.61, 0.63, 0.60]),
    ...                               arm("adam", [0.55, 0.58, 0.57, 0.56, 0.55])], "multiclass")
    >>> row = family["rows"][0]
    >>> family["family_size"], row["a"], row["permutation_p"], family["min_permutation_p"]
    (1, 'adam', 0.0625, 0.0625)
    """
    by_label = {arm["label"]: arm for arm in arms if arm.get("runs")}
    if reference not in by_label:
        return None
    metric = primary_metric(task)
    others = [label for label in by_label if label != reference]
    m = len(others)
    adjusted_confidence = 1.0 - (1.0 - confidence) / max(m, 1)
    rows = []
    for label in others:
        row = _paired_row(by_label[label]["runs"], by_label[reference]["runs"], metric, confidence)
        wide = _paired_row(by_label[label]["runs"], by_label[reference]["runs"], metric, adjusted_confidence)
        rows.append({"a": label, "b": reference, "metric": metric, **row,
                     "adjusted_interval": {"low": wide["difference"]["low"], "high": wide["difference"]["high"],
                                           "confidence": adjusted_confidence}})
    for key, source in (("holm_p", "p_value"), ("holm_permutation_p", "permutation_p")):
        for row, value in zip(rows, stats.holm([row[source] for row in rows]) if rows else []):
            row[key] = value
    n_min = min((row["n"] for row in rows), default=0)
    return {"reference": reference, "metric": metric, "family_size": m, "confidence": confidence,
            "adjusted_confidence": adjusted_confidence,
            "min_permutation_p": stats.min_permutation_p(n_min) if n_min >= 1 else None, "rows": rows}


def _paired_row(runs_a: Mapping[str, Any], runs_b: Mapping[str, Any], metric: str,
                confidence: float) -> dict[str, Any]:
    """The paired test of one metric between two runs records, seeds matched by value."""
    common = [s for s in runs_a["seeds"] if s in runs_b["seeds"]]
    values_a = [runs_a["per_seed"][metric][runs_a["seeds"].index(s)] for s in common]
    values_b = [runs_b["per_seed"][metric][runs_b["seeds"].index(s)] for s in common]
    values_a = [math.nan if v is None else v for v in values_a]
    values_b = [math.nan if v is None else v for v in values_b]
    return {"seeds": common, **stats.paired_difference(values_a, values_b, confidence).as_dict()}


# ----------------------------------------------------------------- the runner


def environment() -> dict[str, Any]:
    """Library versions and the machine, for the record.

    >>> sorted(environment()["versions"])[:3]
    ['flax', 'jax', 'jaxlib']
    """
    import flax
    import jaxlib
    import optax
    import scipy

    devices = jax.devices()
    return {
        "versions": {"jaxnets": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                     "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__,
                     "scipy": scipy.__version__, "python": platform.python_version()},
        "platform": {"system": platform.system(), "machine": platform.machine(),
                     "backend": jax.default_backend(), "devices": [str(d) for d in devices]},
    }


def dataset_record(data: Dataset) -> dict[str, Any]:
    """Sizes, shapes and a SHA-256 of the exact arrays of every split.

    >>> from jaxnets.data import load
    >>> record = dataset_record(load("iris", validation=0.2))
    >>> record["num_train"], record["num_val"], record["num_test"], len(record["sha256"])
    (96, 24, 30, 64)
    """
    digest = hashlib.sha256()
    for split in ("train", "val", "test"):
        for part in ("x", "y"):
            array = np.ascontiguousarray(getattr(data, f"{part}_{split}"))
            digest.update(f"{part}_{split}{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
    return {"name": data.name, "task": data.task, "num_classes": data.num_classes,
            "input_shape": list(data.input_shape), "num_train": data.num_train, "num_val": data.num_val,
            "num_test": data.num_test, "standardized": data.standardized, "sha256": digest.hexdigest()}


def default_pairs(labels: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """("sgd", "adam") when both labels are present, else nothing.

    >>> default_pairs(["sgd", "momentum", "adam"])
    (('sgd', 'adam'),)
    """
    return (("sgd", "adam"),) if "sgd" in labels and "adam" in labels else ()


def run_comparison(model: nn.Module, data: Dataset, arms: Sequence[Arm], config: ComparisonConfig, *,
                   experiment: str = "comparison", model_info: Mapping[str, Any] | None = None,
                   extra: Mapping[str, Any] | None = None,
                   on_event: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole protocol (module docstring) for several arms on one model and dataset.

    Args:
      model: a Flax module (``jaxnets.models.get_model``), the same for every arm.
      data: a dataset with a validation split carved from its training data.
      arms: the contenders, with unique labels.
      config: the shared budget and protocol settings.
      experiment: a name for the results.
      model_info: how the model was built (e.g. ``{"name": "mlp", "options": {...}}``), recorded.
      extra: more JSON-ready fields stored under ``"extra"`` (e.g. literature references).
      on_event: called with one-line progress messages.

    Returns:
      The results dict: ``schema``, ``experiment``, ``environment``, ``dataset``, ``model``,
      ``config``, ``budget`` (steps per run, runs, total examples processed), ``arms`` (each
      with its ``selection``, ``runs`` and ``summary``), ``comparisons``, ``extra`` and
      ``wall_time_s``. Non-finite numbers are stored as null by :func:`save_results`.

    >>> import jaxnets as jn
    >>> data = jn.data.load("iris", validation=0.2)
    >>> model = jn.models.get_model("mlp", output_dim=3, hidden=(8,))
    >>> config = ComparisonConfig(epochs=2, batch_size=32, seeds=2)
    >>> out = run_comparison(model, data, [Arm("recipe", "sgd", fixed_lr=0.1)], config)
    >>> out["arms"][0]["runs"]["seeds"], out["arms"][0]["summary"]["final_test_accuracy"]["n"]
    ([0, 1], 2)
    """
    started = time.perf_counter()
    labels = [arm.label for arm in arms]
    if not arms or len(set(labels)) != len(labels):
        raise _fail("arms", labels, "a non-empty list with unique labels")
    if data.num_val == 0:
        raise _fail("data.num_val", 0, "> 0 (carve a validation split with Dataset.with_validation)")
    pairs = config.pairs if config.pairs is not None else default_pairs(labels)
    for pair in pairs:
        for label in pair:
            if label not in labels:
                raise _fail("pairs", label, ", ".join(labels))
    say = on_event or (lambda message: None)
    selection_seeds = [SELECTION_SEED_OFFSET + i for i in range(config.selection_seeds)]
    start_losses = _initial_train_loss(model, data, selection_seeds, config)

    records: list[dict[str, Any]] = []
    for arm in arms:
        records.append(_run_arm(model, data, arm, config, records, arms, start_losses, say))

    num_params = next((r["runs"]["num_params"] for r in records if r["runs"]), None)
    steps = steps_for(data.num_train, config.batch_size, config.epochs)
    runs = sum(len(rnd["member_seeds"]) for r in records for rnd in r["selection"]["rounds"])
    runs += sum(len(r["runs"]["seeds"]) * (1 + len(config.sensitivity_factors)) for r in records
                if r["runs"] and "shared_with" not in r["runs"])
    config_record = dataclasses.asdict(config)
    config_record["pairs"] = [list(p) for p in pairs]
    config_record["train_config"] = config.train_config().to_json()
    if callable(config.augment):
        config_record["augment"] = config_record["train_config"]["augment"]
    config_record["steps_per_run"] = steps
    config_record["selection_seeds_list"] = selection_seeds
    config_record["evaluation_seeds"] = list(range(config.seeds))
    return {
        "schema": SCHEMA,
        "experiment": experiment,
        "environment": environment(),
        "dataset": dataset_record(data),
        "model": {**dict(model_info or {"name": type(model).__name__}), "num_params": num_params},
        "config": config_record,
        "budget": {"steps_per_run": steps, "runs_trained": runs,
                   "examples_per_run": steps * (config.batch_size or data.num_train)},
        "arms": records,
        "primary": primary_comparisons(records, data.task, confidence=config.confidence),
        "comparisons": paired_comparisons(records, pairs, data.task, config.confidence),
        "extra": dict(extra or {}),
        "wall_time_s": time.perf_counter() - started,
    }


def _run_arm(model: nn.Module, data: Dataset, arm: Arm, config: ComparisonConfig, earlier: list[dict],
             arms: Sequence[Arm], start_losses: Sequence[float], say: Callable[[str], None]) -> dict[str, Any]:
    """One arm's record: its learning-rate selection, then its seed runs (or an earlier twin's)."""
    record: dict[str, Any] = {"label": arm.label, "optimizer": arm.optimizer, "note": arm.note,
                              "hyperparams": arm.resolved_hyperparams(), "fixed": dict(arm.hyperparams),
                              "search": {k: list(v) for k, v in arm.search.items()},
                              "fixed_lr": arm.fixed_lr, "description": optim.describe(arm.optimizer)}
    if arm.fixed_lr is not None:
        record["selection"] = {"metric": selection_metric(data), "chosen": {"learning_rate": arm.fixed_lr},
                               "position": "fixed", "grid": [], "rounds": [], "wall_time_s": 0.0}
    else:
        record["selection"] = select_learning_rate(model, data, arm, config, start_losses=start_losses,
                                                   on_event=say)
    chosen = record["selection"]["chosen"]
    twin = next((r for r, a in zip(earlier, arms) if r["runs"] and a.optimizer == arm.optimizer
                 and a.hyperparams == arm.hyperparams and r["selection"]["chosen"] == chosen), None)
    if chosen is None:
        say(f"{arm.label}: every learning rate diverged; no seed runs")
        record["runs"], record["summary"] = None, None
    elif twin is not None:
        # Same optimizer, hyperparameters and setting: seed s gives the same run bit for bit,
        # so it is not trained twice; the record says whose runs these are.
        say(f"{arm.label}: same setting as {twin['label']}; its seed runs are reused")
        record["runs"] = {**twin["runs"], "shared_with": twin["label"]}
        record["summary"] = twin["summary"]
    else:
        record["runs"] = run_seeds(model, data, arm, chosen, config, on_event=say)
        record["summary"] = summarize_seeds(record["runs"]["per_seed"], config.confidence)
        if config.sensitivity_factors:
            record["runs"]["sensitivity"] = run_sensitivity(model, data, arm, chosen, config, on_event=say)
    return record


def save_results(results: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write ``results.json`` into ``out_dir`` atomically (NaN and inf become null).

    Returns:
      The file's path.
    
    >>> import json, tempfile
    >>> with tempfile.TemporaryDirectory() as out:
    ...     json.loads(save_results({"score": float("nan")}, out).read_text())
    {'score': None}
    """
    path = Path(out_dir) / "results.json"
    atomic_write_json(path, results)
    return path


def without_timings(results: Any) -> Any:
    """A copy without the fields that measure time (keys ending in ``time_s``) or name the machine.

    Two runs with the same inputs must agree on everything that remains.

    >>> without_timings({"a": 1, "wall_time_s": 2.0, "b": [{"time_s": 1, "c": 3}]})
    {'a': 1, 'b': [{'c': 3}]}
    """
    if isinstance(results, Mapping):
        return {k: without_timings(v) for k, v in results.items()
                if not str(k).endswith("time_s") and k != "environment"}
    if isinstance(results, list):
        return [without_timings(v) for v in results]
    return results


__all__ = [
    "Arm", "CHANCE_MARGIN", "ComparisonConfig", "DEFAULT_LR_CENTRES", "collapsed", "POSITIONS", "SCHEMA", "SELECTION_SEED_OFFSET",
    "dataset_record", "default_pairs", "environment", "lr_grid", "paired_comparisons",
    "per_seed_metrics", "primary_comparisons", "run_sensitivity", "primary_metric", "run_comparison", "run_seeds", "save_results", "select_learning_rate",
    "selection_metric", "summarize_seeds", "without_timings",
]
