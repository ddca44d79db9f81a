"""Turn a comparison's ``results.json`` into ``report.md``, ``curves.png`` and ``summary.png``.

Every number in the report is read from the results file written by
``jaxnets.compare``; nothing is typed in by hand. Literature values may appear,
but only from the results' ``extra["published"]`` entries, and they are labelled
as published references beside what was measured here.

``extra`` may hold:

* ``"published"``: a list of references, each either a value
  (``{"source", "claim", "value", "arm", "metric"}``: the paper's number for what
  arm ``arm`` measures as ``metric``) or a direction (``{"source", "claim", "pair":
  [a, b], "metric", "direction": ">" or "<"}``: the paper says a's metric is
  larger/smaller than b's);
* ``"notes"``: sentences printed under the tables (how this setup differs from
  the papers', say);
* ``"budget_note"``: a sentence on the compute budget.

Files are written atomically (``jaxnets.io``); matplotlib is imported only when
figures are drawn, with the non-interactive Agg backend.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from jaxnets import stats
from jaxnets.figures import pyplot, save_figure
from jaxnets.io import atomic_write_text

#: Quantities reported as percentages.
PERCENT_METRICS = ("final_test_accuracy", "best_test_accuracy", "final_train_accuracy", "final_val_accuracy",
                   "generalization_gap")

_LABELS = {
    "final_test_accuracy": "final test acc. (%)",
    "best_test_accuracy": "best test acc. (%)",
    "final_train_accuracy": "final train acc. (%)",
    "final_val_accuracy": "final val. acc. (%)",
    "final_train_loss": "final train loss",
    "final_test_loss": "final test loss",
    "best_test_loss": "best test loss",
    "final_val_loss": "final val. loss",
    "generalization_gap": "gap train−test (pts)",
    "epochs_to_target": "epochs to target loss",
}


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``results.json`` (a file, or the directory holding one).

    Raises:
      FileNotFoundError: one line naming the missing file.
    
    >>> import tempfile
    >>> from jaxnets.io import atomic_write_json
    >>> with tempfile.TemporaryDirectory() as out:
    ...     atomic_write_json(Path(out) / "results.json", demo_results())
    ...     load_results(out)["experiment"]
    'demo'
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"results: got {str(path)!r}; allowed: an existing results.json")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def demo_results() -> dict[str, Any]:
    """A small, hand-made results dict (two arms, three seeds) for examples and tests.

    The per-seed numbers are typed here; intervals and paired tests are computed by
    ``jaxnets.compare`` exactly as for a real run.

    >>> sorted(arm["label"] for arm in demo_results()["arms"])
    ['adam', 'sgd']
    """
    from jaxnets import compare

    arms = []
    curves_by_arm = {"sgd": ([0.9, 0.3, 0.1], [0.60, 0.66, 0.68], [0.62, 0.64, 0.66]),
                     "adam": ([0.5, 0.1, 0.01], [0.62, 0.63, 0.64], [0.60, 0.62, 0.61])}
    for label, (loss, test, other) in curves_by_arm.items():
        curves = {"epochs": [1, 2],
                  "train_loss": [[2 * v for v in loss], loss],
                  "train_accuracy": [[0.8, 0.8, 0.9], [1.0, 1.0, 1.0]],
                  "test_accuracy": [other, test], "test_loss": [[1.0] * 3, [0.9] * 3],
                  "val_accuracy": [other, test]}
        per_seed = compare.per_seed_metrics(curves, "multiclass", target_loss=0.2)
        grid = [{"learning_rate": lr, "score": score, "val_loss": 1.0, "final_train_loss": 0.1, "diverged": False}
                for lr, score in ((0.01, 0.5), (0.1, 0.66), (1.0, 0.6))]
        arms.append({"label": label, "optimizer": label, "note": "",
                     "selection": {"metric": "val_accuracy", "chosen": {"learning_rate": 0.1},
                                   "position": "interior", "searched": [], "grid": grid, "rounds": [{}]},
                     "runs": {"seeds": [0, 1, 2], "curves": curves, "per_seed": per_seed},
                     "summary": compare.summarize_seeds(per_seed)})
    return {"experiment": "demo", "dataset": {"name": "demo", "task": "multiclass", "num_classes": 3,
                                              "num_train": 90, "num_val": 10,
                                              "num_test": 30},
            "model": {"name": "mlp", "num_params": 100},
            "config": {"confidence": 0.95, "target_loss": 0.2, "eval_every": 1, "seeds": 3, "epochs": 2,
                       "batch_size": 30, "schedule": "constant", "selection_seeds": 1, "grid_points": 3,
                       "grid_step": 10.0, "extension_factor": 3.0, "max_extensions": 0, "pairs": [["sgd", "adam"]]},
            "budget": {"steps_per_run": 6, "runs_trained": 12}, "arms": arms,
            "primary": compare.primary_comparisons(arms, "multiclass"),
            "comparisons": compare.paired_comparisons(arms, [("sgd", "adam")], "multiclass"),
            "extra": {}, "wall_time_s": 1.0}


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def format_interval(interval: Mapping[str, Any] | None, metric: str, digits: int | None = None) -> str:
    """``"mean ± half"`` of an interval record, in percent for accuracy-like metrics.

    >>> format_interval({"mean": 0.6512, "half_width": 0.0123, "n": 5, "missing": 0}, "final_test_accuracy")
    '65.1 ± 1.2'
    >>> format_interval({"mean": 0.5, "half_width": None, "n": 1, "missing": 0}, "final_train_loss")
    '0.500'
    """
    if not interval or interval.get("mean") is None or not math.isfinite(_num(interval["mean"])):
        return "n/a"
    percent = metric in PERCENT_METRICS
    scale = 100.0 if percent else 1.0
    places = digits if digits is not None else (1 if percent or metric == "epochs_to_target" else 3)
    fixed = percent or metric == "epochs_to_target" or digits is not None
    text = _number(_num(interval["mean"]) * scale, places, fixed)
    half = _num(interval.get("half_width"))
    if math.isfinite(half):
        text += f" ± {_number(half * scale, places, fixed)}"
    if interval.get("missing"):
        text += f" ({interval['n']}/{interval['n'] + interval['missing']})"
    return text


def _number(value: float, places: int, fixed: bool) -> str:
    """Fixed decimals (percentages, epochs), or ``places`` significant digits (losses near 0)."""
    return f"{value:.{places}f}" if fixed else f"{value:#.{places}g}".rstrip(".")


def _arms_with_runs(results: Mapping[str, Any]) -> list[dict]:
    return [arm for arm in results["arms"] if arm.get("runs")]


def _classification(results: Mapping[str, Any]) -> bool:
    return results["dataset"]["task"] != "regression"


def _table_metrics(results: Mapping[str, Any]) -> list[str]:
    # No "best test" column: it peeks at test along the run (see peek_table, an appendix).
    if _classification(results):
        metrics = ["final_test_accuracy", "final_train_accuracy", "final_train_loss", "generalization_gap"]
    else:
        metrics = ["final_test_loss", "final_train_loss", "generalization_gap"]
    if results["config"].get("target_loss") is not None:
        metrics.append("epochs_to_target")
    return metrics


def _position_text(selection: Mapping[str, Any]) -> str:
    position = selection.get("position", "")
    text = {"interior": "interior", "low_edge": "LOW EDGE", "high_edge": "HIGH EDGE", "fixed": "fixed",
            "none": "none"}.get(position, position)
    if selection.get("upper_neighbour_diverged"):
        text += ", next diverges"
    return text


def _setting_text(setting: Mapping[str, Any] | None) -> str:
    if not setting:
        return "—"
    parts = [f"{_num(setting['learning_rate']):.3g}"]
    parts += [f"{name}={_num(value):.3g}" for name, value in setting.items() if name != "learning_rate"]
    return ", ".join(parts)


def summary_table(results: Mapping[str, Any]) -> str:
    """The main Markdown table: one row per arm, mean ± 95% half-width over seeds.

    Columns: arm, optimizer, chosen learning rate (and where it sits in its grid),
    seeds, then the task's quantities (see ``jaxnets.compare``). Accuracies and
    the gap are in percent / percentage points.

    Args:
      results: a results dict from ``jaxnets.compare.run_comparison`` (or read back from JSON).

    Returns:
      The table as Markdown text.
    
    >>> print(summary_table(demo_results()).splitlines()[2][:60])
    | `sgd` | sgd | 0.1 (interior) | 3 | 64.7 ± 10.3 | 100.0 ± 0
    """
    metrics = _table_metrics(results)
    level = int(round(100 * results["config"].get("confidence", 0.95)))
    header = ["arm", "optimizer", "learning rate (grid position)", "seeds", *(_LABELS[m] for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in results["arms"]:
        selection = arm["selection"]
        cells = [f"`{arm['label']}`", arm["optimizer"],
                 f"{_setting_text(selection.get('chosen'))} ({_position_text(selection)})"]
        if arm.get("runs"):
            flags = collapsed_seeds(results, arm)
            cells.append(str(len(arm["runs"]["seeds"])) + (f" ({sum(flags)} collapsed)" if any(flags) else ""))
            cells += [format_interval(arm["summary"].get(m), m) for m in metrics]
        else:
            cells += ["0", *("diverged" for _ in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    target = results["config"].get("target_loss")
    lines.append("")
    lines.append(f"Mean ± half-width of the {level}% Student-t interval over seeds."
                 + (f" Target training loss: {target:g} (evaluated every {results['config']['eval_every']} "
                    "epochs; (k/S) = reached by k of S seeds)." if target is not None else ""))
    return "\n".join(lines)


PEEK_HEADER = "Appendix: best test accuracy over epochs (peeks at test; not for comparison)"


def peek_table(results: Mapping[str, Any]) -> str:
    """The appendix table of the best test score over evaluated epochs, per arm; no paired tests.

    It is the maximum over epochs of test accuracy (minimum test loss for regression):
    choosing the epoch by test is optimistic by construction, so it is never compared.

    >>> print(peek_table(demo_results()).splitlines()[0])
    ### Appendix: best test accuracy over epochs (peeks at test; not for comparison)
    """
    metric = "best_test_accuracy" if _classification(results) else "best_test_loss"
    header = PEEK_HEADER if _classification(results) else PEEK_HEADER.replace("accuracy", "loss")
    lines = [f"### {header}", "", f"| arm | {_LABELS[metric]} (peeks at test; not for comparison) |", "|---|---|"]
    for arm in _arms_with_runs(results):
        lines.append(f"| `{arm['label']}` | {format_interval(arm['summary'].get(metric), metric)} |")
    lines += ["", "The maximum over evaluated epochs of the test score, i.e. the epoch is picked by looking at "
                  "test: optimistic by construction, reported only because papers often report it. Nothing is "
                  "chosen or tested by it."]
    return "\n".join(lines)


def comparison_table(results: Mapping[str, Any]) -> str:
    """Markdown table of the paired differences a − b (seeds paired by data order and initialization).
    >>> comparison_table(demo_results()).splitlines()[2]
    '| `sgd` − `adam` | final test acc. (%) | +1.7 | [-6.3, +9.7] | 0.90 | 0.46 | 3 |'
    """
    rows = results.get("comparisons") or []
    if not rows:
        return "No paired comparisons were requested."
    level = int(round(100 * results["config"].get("confidence", 0.95)))
    lines = [f"| a − b | quantity | mean difference | {level}% CI | t | p (paired t-test) | pairs |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        metric = row["metric"]
        percent = metric in PERCENT_METRICS
        scale = 100.0 if percent else 1.0
        form = "+.1f" if percent else "+.3g"
        diff = row["difference"]
        low, high = _num(diff.get("low")), _num(diff.get("high"))
        ci = f"[{low * scale:{form}}, {high * scale:{form}}]" if math.isfinite(low) else "n/a"
        # Identical arms have no t statistic (0/0): say so rather than print "nan" and p = 1.
        t_cell, p_cell = ("—", "identical") if stats.identical(row) else (_t_text(row), _p_text(_num(row.get("p_value"))))
        lines.append(f"| `{row['a']}` − `{row['b']}` | {_LABELS.get(metric, metric)} | "
                     f"{_num(diff['mean']) * scale:{form}} | {ci} | "
                     f"{t_cell} | {p_cell} | {row['n']} |")
    return "\n".join(lines)


def primary_table(results: Mapping[str, Any]) -> str:
    """The declared primary family: every arm minus SGD on the primary metric, raw and Holm-adjusted.

    Columns: the difference with its 95% interval and its Bonferroni (simultaneous)
    interval, then the paired t-test p and its Holm adjustment, and the exact sign-flip
    permutation p and its Holm adjustment. A line under the table gives the family size
    and the smallest permutation p the seed count allows.

    >>> print(primary_table(demo_results()).splitlines()[2])
    | `adam` − `sgd` | -1.7 | [-9.7, +6.3] | [-9.7, +6.3] | 0.46 | 0.46 | 0.5 | 0.5 | 3 |
    """
    family = results.get("primary")
    if not family or not family.get("rows"):
        return "No primary family (it needs an `sgd` arm with seed runs and at least one other arm)."
    metric = family["metric"]
    percent = metric in PERCENT_METRICS
    scale, form = (100.0, "+.1f") if percent else (1.0, "+.3g")
    level = int(round(100 * family["confidence"]))
    unit = " (pts)" if percent else ""
    lines = [f"| arm − `{family['reference']}` | mean difference{unit} | {level}% CI | simultaneous CI "
             f"(Bonferroni, {100 * family['adjusted_confidence']:.3g}%) | p (t-test) | Holm p (t-test) | "
             "p (permutation) | Holm p (permutation) | pairs |", "|---|---|---|---|---|---|---|---|---|"]
    for row in family["rows"]:
        diff, wide = row["difference"], row["adjusted_interval"]
        if stats.identical(row):
            cells = ["identical"] * 4
        else:
            cells = [_p_text(_num(row.get(k))) for k in ("p_value", "holm_p", "permutation_p", "holm_permutation_p")]
        lines.append(f"| `{row['a']}` − `{row['b']}` | {_num(diff['mean']) * scale:{form}} | "
                     f"{_interval_text(diff.get('low'), diff.get('high'), scale, form)} | "
                     f"{_interval_text(wide.get('low'), wide.get('high'), scale, form)} | "
                     + " | ".join(cells) + f" | {row['n']} |")
    smallest = family.get("min_permutation_p")
    lines += ["", f"Primary family, declared before the runs: each of the {family['family_size']} other arms minus "
                  f"`{family['reference']}` on {_LABELS.get(metric, metric)}; Holm adjusts the "
                  f"{family['family_size']} p-values of each test together. The permutation test flips the signs of "
                  "the paired per-seed differences (all 2^n patterns: exact, no normality assumed); with "
                  f"{min(row['n'] for row in family['rows'])} seeds its smallest possible p is "
                  + (f"{smallest:.3g}" if smallest is not None else "n/a") + "."]
    return "\n".join(lines)


def _interval_text(low: Any, high: Any, scale: float, form: str) -> str:
    low, high = _num(low), _num(high)
    return f"[{low * scale:{form}}, {high * scale:{form}}]" if math.isfinite(low) else "n/a"


def _t_text(row: Mapping[str, Any]) -> str:
    t = _num(row.get("t"))
    if math.isfinite(t):
        return f"{t:.2f}"
    mean = _num(row["difference"].get("mean"))
    if _num(row.get("p_value")) == 0.0 and math.isfinite(mean) and mean != 0.0:
        # A constant nonzero difference: zero spread, t = ±inf (stored as null in JSON).
        return "inf" if mean > 0 else "-inf"
    return "n/a"


def _p_text(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 0.001 else "< 0.001"


def _find(results: Mapping[str, Any], a: str, b: str, metric: str) -> dict | None:
    for row in results.get("comparisons") or []:
        if row["a"] == a and row["b"] == b and row["metric"] == metric:
            return row
    return None


def verdicts(results: Mapping[str, Any]) -> list[str]:
    """One sentence per compared pair, on the main test quantity, with training loss as context.

    The sentence says which arm is better only when the interval of the paired
    difference excludes 0; otherwise it says no difference was detected.

    Returns:
      The sentences, in the order of ``config["pairs"]``.
    
    >>> verdicts(demo_results())[0][:70]
    '**sgd vs adam**: no difference in final test accuracy is detected (mea'
    """
    classification = _classification(results)
    main = "final_test_accuracy" if classification else "final_test_loss"
    level = int(round(100 * results["config"].get("confidence", 0.95)))
    out = []
    for a, b in results["config"].get("pairs") or []:
        row = _find(results, a, b, main)
        if row is None:
            out.append(f"**{a} vs {b}**: not compared (an arm has no seed runs).")
            continue
        diff = row["difference"]
        mean, low, high = _num(diff["mean"]), _num(diff.get("low")), _num(diff.get("high"))
        scale, unit = (100.0, " points") if classification else (1.0, "")
        what = "test accuracy" if classification else "test loss"
        ci = (f"{level}% CI {low * scale:+.1f} to {high * scale:+.1f}{unit}" if classification
              else f"{level}% CI {low:+.3g} to {high:+.3g}") if math.isfinite(low) else "no interval"
        p_value = _p_text(_num(row["p_value"]))
        tail = f"paired t-test p {p_value if p_value.startswith('<') else '= ' + p_value}, {row['n']} seeds"
        if stats.identical(row):
            sentence = f"**{a} vs {b}**: identical final {what} on every seed ({row['n']} seeds)"
        elif math.isfinite(low) and (low > 0 or high < 0):
            better = a if (mean > 0) == classification else b
            worse = b if better == a else a
            size = f"{abs(mean) * scale:.1f}{unit}" if classification else f"{abs(mean):.3g}"
            # The interval of the size just stated (positive), not of a − b, whose sign may be the other way.
            lo, hi = (low, high) if mean > 0 else (-high, -low)
            ci = (f"{level}% CI {lo * scale:+.1f} to {hi * scale:+.1f}{unit}" if classification
                  else f"{level}% CI {lo:+.3g} to {hi:+.3g}")
            sentence = f"**{a} vs {b}**: {better} reaches a better final {what} than {worse} by {size} ({ci}; {tail})"
        else:
            sentence = (f"**{a} vs {b}**: no difference in final {what} is detected "
                        f"(mean {mean * scale:+.1f}{unit}, {ci}; {tail})" if classification else
                        f"**{a} vs {b}**: no difference in final {what} is detected (mean {mean:+.3g}, {ci}; {tail})")
        loss_row = _find(results, a, b, "final_train_loss")
        if loss_row is not None and stats.identical(loss_row):
            sentence += "; identical final training losses."
        elif loss_row is not None and math.isfinite(_num(loss_row["difference"]["mean"])):
            loss_diff = loss_row["difference"]
            l_low, l_high = _num(loss_diff.get("low")), _num(loss_diff.get("high"))
            if math.isfinite(l_low) and l_low > 0:
                relation = f"{a} ends at a higher training loss"
            elif math.isfinite(l_high) and l_high < 0:
                relation = f"{a} ends at a lower training loss"
            else:
                relation = "final training losses do not differ detectably"
            sentence += f"; {relation} (difference {_num(loss_diff['mean']):+.3g})."
        else:
            sentence += "."
        out.append(sentence)
    return out


#: Optimizers Wilson et al. call adaptive.
ADAPTIVE_OPTIMIZERS = ("adam", "adamw", "adagrad", "rmsprop")

#: Family-wise level at which a conclusion says "holds" or "fails".
ALPHA = 0.05


def _primary_rows(results: Mapping[str, Any]) -> dict[str, dict]:
    family = results.get("primary") or {}
    return {row["a"]: row for row in family.get("rows") or []}


def _decided(row: Mapping[str, Any] | None, alpha: float) -> int:
    """+1 / −1 when the Holm-adjusted t-test rejects "no difference" (sign of a − SGD), else 0."""
    if row is None or stats.identical(row) or not _num(row.get("holm_p")) < alpha:
        return 0
    return 1 if _num(row["difference"]["mean"]) > 0 else -1


def _effect(row: Mapping[str, Any], results: Mapping[str, Any]) -> str:
    """``adam − sgd = −2.5 pts, simultaneous CI [..], Holm p 0.03 (t) / 0.19 (permutation)``."""
    metric = row["metric"]
    scale, form, unit = (100.0, "+.1f", " pts") if metric in PERCENT_METRICS else (1.0, "+.3g", "")
    wide = row["adjusted_interval"]
    return (f"`{row['a']}` − `{row['b']}` = {_num(row['difference']['mean']) * scale:{form}}{unit}, simultaneous CI "
            f"{_interval_text(wide.get('low'), wide.get('high'), scale, form)}, Holm p {_p_text(_num(row['holm_p']))} "
            f"(t-test) / {_p_text(_num(row['holm_permutation_p']))} (permutation), {row['n']} seeds")


def _where(results: Mapping[str, Any]) -> str:
    return (f"{results['dataset']['name']} `{results['model'].get('name')}`, "
            f"{results['config'].get('schedule', 'constant')} schedule")


def _train_loss(results: Mapping[str, Any], label: str) -> float:
    arm = next((a for a in _arms_with_runs(results) if a["label"] == label), None)
    return _num(arm["summary"]["final_train_loss"]["mean"]) if arm else math.nan


def _wilson_line(results: Mapping[str, Any], rows: Mapping[str, dict], alpha: float) -> str | None:
    arms = [a for a in _arms_with_runs(results) if a["optimizer"] in ADAPTIVE_OPTIMIZERS
            and a["selection"].get("position") != "fixed" and "eps" not in (a.get("search") or {})
            and a["label"] in rows]
    if not arms:
        return None
    parts = []
    sgd_loss = _train_loss(results, "sgd")
    for arm in arms:
        row, loss = rows[arm["label"]], _train_loss(results, arm["label"])
        sign = _decided(row, alpha)
        loss_text = f"final training loss {loss:.3g} vs SGD {sgd_loss:.3g}"
        if sign < 0 and loss <= sgd_loss:
            verdict = "holds"
        elif sign < 0:
            verdict = "fails (worse, but at a higher training loss than SGD)"
        elif sign > 0:
            verdict = "fails (better than SGD)"
        else:
            verdict = "not detected"
        parts.append(f"{verdict} for `{arm['label']}` ({_effect(row, results)}; {loss_text})")
    return ("**Wilson et al. 2017** (adaptive methods generalize worse than SGD at an equal or lower training "
            f"loss), {_where(results)}: " + "; ".join(parts) + ".")


def _closes_gap_line(results: Mapping[str, Any], rows: Mapping[str, dict], label: str, source: str,
                     claim: str, alpha: float) -> str | None:
    """Choi et al. / Loshchilov & Hutter: does arm ``label`` close Adam's gap to SGD?"""
    if label not in rows:
        return None
    own, adam = rows[label], rows.get("adam")
    if _decided(own, alpha) < 0:
        verdict = "fails (the gap to SGD remains)"
    elif adam is not None and _decided(adam, alpha) < 0:
        verdict = "holds (Adam's gap to SGD is detected, this arm's is not)"
    else:
        verdict = "not detected (no gap between Adam and SGD to close here)"
    adam_text = f"; {_effect(adam, results)}" if adam is not None else ""
    return f"**{source}** ({claim}), {_where(results)}: {verdict} ({_effect(own, results)}{adam_text})."


def _zhou_line(zhou: Mapping[str, Any], alpha: float) -> str:
    last = zhou["sgd_minus_adam"][-1]
    tests = [last["alpha"], last["top_eigenvalue"]]
    adjusted = stats.holm([_num(t.get("p_value")) for t in tests])
    signs = [0 if stats.identical(t) or not p < alpha else (1 if _num(t["difference"]["mean"]) > 0 else -1)
             for t, p in zip(tests, adjusted)]
    if signs == [-1, -1]:
        verdict = "holds"
    elif 1 in signs:
        verdict = "fails (" + " and ".join(w for w, s in zip(("Adam's noise heavier-tailed", "Adam flatter"), signs)
                                           if s > 0) + ")"
    else:
        verdict = "not detected"
    text = ", ".join(f"{name} SGD − Adam = {_num(t['difference']['mean']):+.3g} (Holm p {_p_text(p)})"
                     for name, t, p in zip(("tail index α", "top Hessian eigenvalue"), tests, adjusted))
    model = (zhou.get("model") or {}).get("name", "mlp")
    return (f"**Zhou et al. 2020** (SGD's gradient noise is heavier-tailed and SGD ends flatter), "
            f"{zhou.get('dataset', 'mnist1d')} `{model}` after {last['epochs']} epochs: {verdict} ({text}).")


def _best_line(results: Mapping[str, Any], rows: Mapping[str, dict], alpha: float) -> str | None:
    arms = _arms_with_runs(results)
    if not arms:
        return None
    metric = compare_metric = "final_test_accuracy" if _classification(results) else "final_test_loss"
    sign = 1.0 if _classification(results) else -1.0
    best = max(arms, key=lambda a: sign * _num(a["summary"][metric]["mean"])
               if math.isfinite(_num(a["summary"][metric]["mean"])) else -math.inf)
    value = _num(best["summary"][metric]["mean"])
    same = [a["label"] for a in arms if _num(a["summary"][metric]["mean"]) == value]
    names = " = ".join(f"`{label}`" for label in same)
    text = f"**Best arm overall** ({_where(results)}): {names}, {format_interval(best['summary'][compare_metric], metric)}"
    text += " %" if metric in PERCENT_METRICS else ""
    row = rows.get(best["label"])
    if best["label"] == "sgd" or "sgd" in same:
        return text + " (it is SGD)."
    if row is None:
        return text + "."
    word = {1: "better than", -1: "worse than", 0: "not detectably different from"}[_decided(row, alpha)]
    return text + f"; {word} SGD ({_effect(row, results)})."


def conclusions(results: Mapping[str, Any], *, zhou: Mapping[str, Any] | None = None,
                alpha: float = ALPHA) -> list[str]:
    """One generated sentence per published claim under test, and the best arm overall.

    A claim *holds* or *fails* only when the Holm-adjusted paired t-test of the primary
    family (``results["primary"]``, every arm vs SGD) rejects at family-wise level
    ``alpha``; otherwise the effect is *not detected*. The exact permutation p is printed
    beside it (with 5 seeds it cannot go below 0.0625). Claims:

    * Wilson et al. 2017, for every tuned adaptive arm (adam, adamw, adagrad, rmsprop):
      holds if the arm is worse than SGD at a mean final training loss <= SGD's;
    * Choi et al. 2019 (``adam_eps`` arm) and Loshchilov & Hutter 2019 (``adamw`` arm):
      holds if Adam's gap to SGD is detected and the arm's is not; fails if the arm's gap
      remains; not detected if Adam shows no gap;
    * Zhou et al. 2020 (only with ``zhou``, the ``--zhou`` results): holds if SGD's tail
      index and top Hessian eigenvalue are both smaller than Adam's (Holm over the two);
    * the best arm by mean primary metric, whatever it is, against SGD.

    Returns:
      The sentences (Markdown), claims without their arm left out.

    >>> conclusions(demo_results())[0][:62]
    '**Wilson et al. 2017** (adaptive methods generalize worse than'
    >>> "not detected for `adam`" in conclusions(demo_results())[0]
    True
    """
    rows = _primary_rows(results)
    lines = [_wilson_line(results, rows, alpha),
             _closes_gap_line(results, rows, "adam_eps", "Choi et al. 2019", "a tuned ε closes Adam's gap to SGD",
                              alpha),
             _closes_gap_line(results, rows, "adamw", "Loshchilov & Hutter 2019",
                              "decoupled weight decay closes Adam's gap to SGD", alpha),
             _zhou_line(zhou, alpha) if zhou else None,
             _best_line(results, rows, alpha)]
    return [line for line in lines if line]


def conclusions_section(results: Mapping[str, Any], *, zhou: Mapping[str, Any] | None = None) -> str:
    """The "Conclusions" bullets with the rule they follow, for the top of a report or docs block."""
    lines = [f"- {line}" for line in conclusions(results, zhou=zhou)] or ["- (nothing to conclude: no seed runs)"]
    lines += ["", f"Generated from the numbers: *holds* / *fails* only where the Holm-adjusted paired t-test of the "
                  f"primary family (each arm vs SGD, final test accuracy) rejects at family-wise level {ALPHA}; "
                  "*not detected* otherwise. Simultaneous intervals are Bonferroni intervals over the family."]
    return "\n".join(lines)


def selection_table(results: Mapping[str, Any]) -> str:
    """Every arm's final learning-rate grid with its validation scores; the chosen point in bold.
    >>> selection_table(demo_results()).splitlines()[2]
    '- `sgd` (1 population, position: interior): 0.01: 50.0; **0.1: 66.0**; 1: 60.0'
    """
    lines = []
    metric = None
    for arm in results["arms"]:
        selection = arm["selection"]
        metric = selection.get("metric", metric)
        grid = selection.get("grid") or []
        if not grid:
            lines.append(f"- `{arm['label']}`: learning rate fixed at {_setting_text(selection.get('chosen'))} "
                         "(not tuned).")
            continue
        chosen = selection.get("chosen") or {}
        names = ["learning_rate", *(selection.get("searched") or [])]
        cells = []
        for point in grid:
            text = _setting_text({k: point[k] for k in names}) + ": "
            text += "diverged" if point["diverged"] else f"{_format_score(point['score'], metric)}"
            text += " (collapsed)" if point.get("collapsed") and not point["diverged"] else ""
            text += " (refined)" if point.get("refined") else ""
            if chosen and all(math.isclose(_num(point[k]), _num(v)) for k, v in chosen.items()):
                text = f"**{text}**"
            cells.append(text)
        rounds = len(selection.get("rounds") or [])
        lines.append(f"- `{arm['label']}` ({rounds} population{'s' if rounds != 1 else ''}, position: "
                     f"{_position_text(selection)}): " + "; ".join(cells))
    what = "validation accuracy (%)" if metric == "val_accuracy" else "validation loss"
    unstable = [a["label"] for a in results["arms"] if a["selection"].get("stable") is False]
    rule = ("Rule: the best mean validation score among the points whose learning-rate neighbours did not collapse "
            "(after factor-2 refinement around the coarse optimum)."
            + (f" No such point for {', '.join(unstable)}: the best non-collapsed point was taken." if unstable else ""))
    return f"Final {what} of every grid point, mean over the selection seeds:\n\n" + "\n".join(lines) + "\n\n" + rule


def sensitivity_table(results: Mapping[str, Any]) -> str:
    """Test score of every arm's seed runs at the chosen rate and at each sensitivity factor (0.5x, 2x).

    >>> sensitivity_table(demo_results())
    ''
    """
    arms = [a for a in _arms_with_runs(results) if a["runs"].get("sensitivity")]
    if not arms:
        return ""
    metric = primary_metric_of(results)
    factors = arms[0]["runs"]["sensitivity"]["factors"]
    columns = sorted([*factors, 1.0])
    lines = ["| arm | " + " | ".join(f"{_LABELS[metric]} at {f:g}x" + (" (chosen)" if f == 1.0 else "")
                                     for f in columns) + " |", "|---|" + "---|" * len(columns)]
    for arm in arms:
        points = {p["factor"]: p for p in arm["runs"]["sensitivity"]["points"]}
        cells = []
        for factor in columns:
            if factor == 1.0:
                summary, flags = arm["summary"][metric], collapsed_seeds(results, arm)
                rate = arm["selection"]["chosen"]["learning_rate"]
            else:
                point = points.get(factor)
                if point is None:
                    cells.append("—")
                    continue
                summary, flags, rate = point["summary"][metric], point.get("collapsed") or [], point["learning_rate"]
            cells.append(f"{format_interval(summary, metric)} @ {_num(rate):.3g}"
                         + (f" ({sum(flags)} collapsed)" if any(flags) else ""))
        lines.append(f"| `{arm['label']}` | " + " | ".join(cells) + " |")
    lines += ["", "The chosen setting retrained on the evaluation seeds at other learning rates (one population): "
                  "a result that rides on an edge-of-stability rate drops sharply at 2x."]
    return "\n".join(lines)


def _format_score(score: Any, metric: str | None) -> str:
    value = _num(score)
    if not math.isfinite(value):
        return "n/a"
    return f"{value * 100:.1f}" if metric == "val_accuracy" else f"{value:.4g}"


def published_table(results: Mapping[str, Any]) -> str:
    """The "published vs here" table from ``extra["published"]`` (literature) and the measured summaries.

    A value reference is compared with this arm's mean and interval ("inside",
    "above" or "below" our interval); a direction reference with the sign of the
    paired difference's interval ("agrees", "opposite", or "inconclusive" when the
    interval contains 0).
    
    >>> results = demo_results()
    >>> results["extra"]["published"] = [{"source": "a paper", "claim": "sgd wins", "pair": ["sgd", "adam"],
    ...                                   "metric": "final_test_accuracy", "direction": ">"}]
    >>> published_table(results).splitlines()[2]
    '| a paper | sgd wins | sgd > adam | sgd − adam = +1.7 [-6.3, +9.7] | inconclusive (CI contains 0) |'
    """
    references = (results.get("extra") or {}).get("published") or []
    if not references:
        return ""
    by_label = {arm["label"]: arm for arm in _arms_with_runs(results)}
    lines = ["| source (published, at its scale) | claim | published | here (measured) | agreement |",
             "|---|---|---|---|---|"]
    for ref in references:
        metric = ref["metric"]
        if "pair" in ref:
            a, b = ref["pair"]
            row = _find(results, a, b, metric)
            published = f"{a} {ref['direction']} {b}"
            if row is None:
                here, verdict = "not measured", "—"
            else:
                diff = row["difference"]
                scale = 100.0 if metric in PERCENT_METRICS else 1.0
                form = "+.1f" if metric in PERCENT_METRICS else "+.3g"
                low, high = _num(diff.get("low")), _num(diff.get("high"))
                here = (f"{a} − {b} = {_num(diff['mean']) * scale:{form}} "
                        f"[{low * scale:{form}}, {high * scale:{form}}]" if math.isfinite(low) else "n/a")
                if not math.isfinite(low) or low <= 0 <= high:
                    verdict = "inconclusive (CI contains 0)"
                elif (low > 0) == (ref["direction"] == ">"):
                    verdict = "agrees"
                else:
                    verdict = "opposite"
        else:
            arm = by_label.get(ref["arm"])
            scale = 100.0 if metric in PERCENT_METRICS else 1.0
            published = f"{_num(ref['value']) * scale:.1f}" if metric in PERCENT_METRICS else f"{ref['value']}"
            if arm is None:
                here, verdict = "not measured", "—"
            else:
                interval = arm["summary"][metric]
                here = f"`{ref['arm']}`: {format_interval(interval, metric)}"
                low, high = _num(interval.get("low")), _num(interval.get("high"))
                value = _num(ref["value"])
                if not math.isfinite(low):
                    verdict = "n/a"
                elif low <= value <= high:
                    verdict = "inside our CI"
                else:
                    verdict = f"published is {'above' if value > high else 'below'} our CI " \
                              f"by {abs(value - (high if value > high else low)) * scale:.1f}"
        lines.append(f"| {ref['source']} | {ref['claim']} | {published} | {here} | {verdict} |")
    lines.append("")
    lines.append("Published columns are literature references typed from the papers (their models, data "
                 "sizes and budgets); every 'here' number is read from results.json.")
    return "\n".join(lines)


def arm_groups(results: Mapping[str, Any]) -> list[tuple[str, list[dict]]]:
    """Arms with seed runs, grouped when their runs are identical; each group is drawn once under all its names.

    Two arms are identical when every seed's final parameters have the same SHA-256
    (``runs.params_sha256``) or, for records without hashes, the same curves.

    Returns:
      ``[(name, arms)]`` in the arms' order, ``name`` like ``"adam = adam_recipe"``.

    >>> results = demo_results()
    >>> results["arms"].append({**results["arms"][1], "label": "adam_recipe"})
    >>> [name for name, _ in arm_groups(results)]
    ['sgd', 'adam = adam_recipe']
    """
    groups: list[tuple[str, list[dict]]] = []
    for arm in _arms_with_runs(results):
        key = arm["runs"].get("params_sha256") or json.dumps(arm["runs"]["curves"], sort_keys=True)
        for index, (name, members) in enumerate(groups):
            first = members[0]["runs"]
            if (first.get("params_sha256") or json.dumps(first["curves"], sort_keys=True)) == key:
                members.append(arm)
                groups[index] = (f"{name} = {arm['label']}", members)
                break
        else:
            groups.append((arm["label"], [arm]))
    return groups


def collapsed_seeds(results: Mapping[str, Any], arm: Mapping[str, Any]) -> list[bool]:
    """Which seeds of an arm collapsed (``jaxnets.compare.collapsed``): stored flags, else from the curves.

    >>> collapsed_seeds(demo_results(), demo_results()["arms"][0])
    [False, False, False]
    """
    from jaxnets import compare

    runs = arm["runs"]
    if runs.get("collapsed") is not None:
        return [bool(v) for v in runs["collapsed"]]
    if "curves" not in runs:
        return [False] * len(runs["seeds"])
    last = {k: v[-1] for k, v in runs["curves"].items() if k != "epochs"}
    initial = runs.get("initial_train_loss") or [None] * len(runs["seeds"])
    keys = [k for k in ("val_accuracy", "test_accuracy") if k in last]
    classes = results["dataset"].get("num_classes") if _classification(results) else None
    return [compare.collapsed(last["train_loss"][s], initial[s], [last[k][s] for k in keys], classes)
            for s in range(len(runs["seeds"]))]


def _quartiles(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise median and interquartile range over seeds of an (E, S) array (NaN-aware)."""
    if values.shape[1] == 0 or not np.isfinite(values).any():
        nan = np.full(values.shape[0], np.nan)
        return nan, nan, nan
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an epoch where every seed is NaN
            low, mid, high = np.nanpercentile(values, [25, 50, 75], axis=1)
    return mid, low, high


def _column(curves: Mapping[str, Any], key: str) -> np.ndarray:
    return np.asarray([[_num(v) for v in row] for row in curves[key]], np.float64)


#: ``gid`` of every artist that marks a collapsed run (tests look for it).
COLLAPSED_GID = "collapsed"


def plot_curves(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """``curves.png``: training loss (log scale) and test accuracy (or loss) against epochs.

    One colour per group of identical arms (:func:`arm_groups`, drawn once under all
    its names): the median over the seeds that did not collapse and their interquartile
    band; every collapsed seed (:func:`collapsed_seeds`) as its own dashed line ending in ×.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as out:
    ...     plot_curves(demo_results(), Path(out) / "curves.png").name
    'curves.png'
    """
    plt = pyplot()
    classification = _classification(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    right_key = "test_accuracy" if classification else "test_loss"
    any_collapsed = False
    for index, (name, members) in enumerate(arm_groups(results)):
        curves = members[0]["runs"]["curves"]
        epochs = np.asarray(curves["epochs"], np.float64)
        color = f"C{index % 10}"
        bad = np.asarray(collapsed_seeds(results, members[0]), bool)
        any_collapsed |= bool(bad.any())
        for ax, key in ((axes[0], "train_loss"), (axes[1], right_key)):
            values = _column(curves, key) * (100.0 if key == "test_accuracy" else 1.0)
            mid, low, high = _quartiles(values[:, ~bad])
            label = name + (f" ({int(bad.sum())} collapsed)" if bad.any() else "")
            ax.plot(epochs, mid, color=color, label=label, lw=1.5)
            ax.fill_between(epochs, low, high, color=color, alpha=0.2, lw=0)
            for s in np.flatnonzero(bad):
                ax.plot(epochs, values[:, s], color=color, lw=0.8, ls="--", gid=COLLAPSED_GID)
                finite = np.flatnonzero(np.isfinite(values[:, s]))
                if finite.size:
                    ax.plot(epochs[finite[-1]], values[finite[-1], s], "x", color=color, ms=8, mew=2,
                            gid=COLLAPSED_GID)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("training loss, whole training split")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("test accuracy (%)" if classification else "test loss")
    axes[0].legend(fontsize=8)
    seeds = results["config"]["seeds"]
    fig.suptitle(f"{results['experiment']}: median over {seeds} seeds, band = interquartile range"
                 + ("; collapsed seeds dashed, ending in ×" if any_collapsed else ""), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path)  # closes the figure
    return path


def _chosen_row(selection: Mapping[str, Any]) -> list[dict]:
    """The grid points that share the chosen values of the searched hyperparameters, by learning rate."""
    grid = selection.get("grid") or []
    chosen = selection.get("chosen") or {}
    names = selection.get("searched") or []
    row = [p for p in grid if all(math.isclose(_num(p[k]), _num(chosen.get(k, p[k]))) for k in names)]
    return sorted(row, key=lambda p: p["learning_rate"])


def _draw_sensitivity(ax, results: Mapping[str, Any], *, with_test: bool) -> str | None:
    """Validation score against learning rate per arm (★ chosen, × collapsed), test at 0.5x/1x/2x if asked."""
    metric = None
    for index, arm in enumerate(results["arms"]):
        selection = arm["selection"]
        row = _chosen_row(selection)
        if not row:
            continue
        metric = selection["metric"]
        scale = 100.0 if metric == "val_accuracy" else 1.0
        lrs = np.asarray([p["learning_rate"] for p in row], np.float64)
        score = np.asarray([_num(p["score"]) for p in row]) * scale
        color = f"C{index % 10}"
        ax.plot(lrs, score, "-o", color=color, ms=3, label=arm["label"])
        bad = np.asarray([bool(p.get("collapsed", p["diverged"])) for p in row])
        if bad.any():
            bottom = np.nanmin(score) if np.isfinite(score).any() else 0.0
            shown = np.where(np.isfinite(score), score, bottom)
            ax.plot(lrs[bad], shown[bad], "x", color=color, ms=8, mew=2, gid=COLLAPSED_GID)
        chosen = selection.get("chosen") or {}
        at = np.flatnonzero(np.isclose(lrs, chosen.get("learning_rate", np.nan)))
        if at.size:
            ax.plot(lrs[at], score[at], "*", color=color, ms=12)
        sensitivity = (arm.get("runs") or {}).get("sensitivity") if with_test else None
        if sensitivity:
            key = primary_metric_of(results)
            points = [(p["learning_rate"], p["summary"][key]["mean"], p.get("collapsed") or [])
                      for p in sensitivity["points"]]
            points.append((chosen["learning_rate"], arm["summary"][key]["mean"], collapsed_seeds(results, arm)))
            points.sort()
            ax.plot([p[0] for p in points], [_num(p[1]) * scale for p in points], ":s", color=color, mfc="none", ms=5)
            for lr, mean, flags in points:
                if any(flags):
                    ax.plot(lr, _num(mean) * scale, "x", color=color, ms=8, mew=2, gid=COLLAPSED_GID)
    ax.set_xscale("log")
    return metric


def primary_metric_of(results: Mapping[str, Any]) -> str:
    """``final_test_accuracy``, or ``final_test_loss`` for regression."""
    return "final_test_accuracy" if _classification(results) else "final_test_loss"


def plot_summary(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """``summary.png``: final test accuracy per group of identical arms (median, quartiles, every seed; ×
    collapsed seeds; train accuracy □), and the learning-rate sensitivity of every arm (× collapsed points).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as out:
    ...     plot_summary(demo_results(), Path(out) / "summary.png").stat().st_size > 1000
    True
    """
    plt = pyplot()
    classification = _classification(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    key_test = primary_metric_of(results)
    key_train = "final_train_accuracy" if classification else "final_train_loss"
    scale = 100.0 if classification else 1.0
    groups = arm_groups(results)
    for y, (name, members) in enumerate(groups):
        arm, color = members[0], f"C{y % 10}"
        values = np.asarray([_num(v) for v in arm["runs"]["per_seed"][key_test]]) * scale
        bad = np.asarray(collapsed_seeds(results, arm), bool)
        mid, low, high = (np.nanpercentile(values, q) if np.isfinite(values).any() else np.nan for q in (50, 25, 75))
        axes[0].plot([low, high], [y, y], color=color, lw=3, alpha=0.5)
        axes[0].plot(mid, y, "o", color=color)
        axes[0].plot(values[~bad], np.full((~bad).sum(), y + 0.15), ".", color=color, alpha=0.6, ms=4)
        if bad.any():
            axes[0].plot(np.nan_to_num(values[bad]), np.full(bad.sum(), y + 0.15), "x", color=color, ms=8, mew=2,
                         gid=COLLAPSED_GID)
        axes[0].plot(_num(arm["summary"][key_train]["mean"]) * scale, y, marker="s", mfc="none", color=color, ms=7)
    axes[0].set_yticks(range(len(groups)), [name for name, _ in groups])
    axes[0].invert_yaxis()
    axes[0].set_xlabel(("final accuracy (%)" if classification else "final loss")
                       + ": test ● median, bar quartiles, · seeds, × collapsed; train □ mean")
    metric = _draw_sensitivity(axes[1], results, with_test=False)
    axes[1].set_xlabel("learning rate (★ chosen, × collapsed)")
    axes[1].set_ylabel("validation accuracy (%)" if metric == "val_accuracy" else "validation loss")
    if metric is not None:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path)  # closes the figure
    return path


def plot_sensitivity(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """``sensitivity.png``: per arm, validation score against learning rate over the final grid (refined
    points included; ★ chosen, × collapsed) and the test score of the seed runs at 0.5x, 1x and 2x the
    chosen rate (□ dotted, × where a seed collapsed).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as out:
    ...     plot_sensitivity(demo_results(), Path(out) / "sensitivity.png").name
    'sensitivity.png'
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    metric = _draw_sensitivity(ax, results, with_test=True)
    ax.set_xlabel("learning rate (★ chosen, × collapsed; □ test of the seed runs at 0.5x, 1x, 2x)")
    ax.set_ylabel(("accuracy (%)" if metric == "val_accuracy" else "loss") + ": validation (selection) ● / test □")
    if metric is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path)  # closes the figure
    return path



def forest_rows(studies: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the forest plot: one per (study, group of identical arms other than the reference).

    Each row comes from the study's primary family (``results["primary"]``: arm − SGD on the
    primary metric); arms with the same runs (:func:`arm_groups`) share one row under all their
    names; a group that holds the reference itself has no row.

    Args:
      studies: study name -> results dict, in the order the rows are drawn.

    Returns:
      Dicts with ``study``, ``name`` (``"adam = adam_recipe"``), ``row`` (the primary row of
      the group's first arm), ``scale`` (100 for percentages), ``collapsed`` (seeds of the arm
      that collapsed) and ``reference_collapsed`` (seeds of the reference that collapsed).

    >>> [(r["study"], r["name"]) for r in forest_rows({"demo": demo_results()})]
    [('demo', 'adam')]
    """
    out = []
    for study, results in studies.items():
        family = results.get("primary") or {}
        rows = _primary_rows(results)
        reference = family.get("reference", "sgd")
        groups = arm_groups(results)
        ref_arm = next((m for _, members in groups for m in members if m["label"] == reference), None)
        ref_bad = sum(collapsed_seeds(results, ref_arm)) if ref_arm else 0
        for name, members in groups:
            labels = [m["label"] for m in members]
            row = next((rows[label] for label in labels if label in rows), None)
            if reference in labels or row is None:
                continue
            out.append({"study": study, "name": name, "row": row,
                        "scale": 100.0 if row["metric"] in PERCENT_METRICS else 1.0,
                        "collapsed": int(sum(collapsed_seeds(results, members[0]))), "reference_collapsed": ref_bad})
    return out


#: ``gid`` of the forest plot's artists: point, 95% interval, simultaneous interval.
FOREST_GIDS = {"point": "difference", "interval": "interval", "adjusted": "adjusted_interval"}


def _forest_label(entry: Mapping[str, Any]) -> str:
    row = entry["row"]
    p = "identical" if stats.identical(row) else f"Holm p {_p_text(_num(row.get('holm_p')))} (t), " \
                                                   f"{_p_text(_num(row.get('holm_permutation_p')))} (perm.)"
    marks = f"; × {entry['collapsed']} collapsed" if entry["collapsed"] else ""
    return f"{entry['name']}  [{p}{marks}]"


def plot_forest(studies: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """``forest.png``: every arm's paired difference from SGD in every study, on one axis.

    One row per :func:`forest_rows` entry, grouped by study (top to bottom in ``studies``'
    order): ● the mean difference (× when a seed of the arm collapsed), a thin line for its
    95% t-interval, a thick pale bar for its simultaneous (Bonferroni) interval, a vertical
    line at 0; the Holm-adjusted p-values (t-test and permutation) in the row label. A study
    whose reference (SGD) had collapsed seeds says so in its heading.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as out:
    ...     plot_forest({"demo": demo_results()}, Path(out) / "forest.png").name
    'forest.png'
    """
    plt = pyplot()
    entries = forest_rows(studies)
    names = list(dict.fromkeys(e["study"] for e in entries))
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.34 * (len(entries) + len(names))))
    y, ticks, labels = 0.0, [], []
    for index, study in enumerate(names):
        mine = [e for e in entries if e["study"] == study]
        bad = mine[0]["reference_collapsed"]
        ax.text(0.0, y - 0.2, study + (f" (reference: × {bad} collapsed)" if bad else ""), transform=ax.get_yaxis_transform(),
                ha="right", va="center", fontweight="bold", fontsize=9, gid="study")
        y += 1.0
        for entry in mine:
            row, scale, color = entry["row"], entry["scale"], f"C{index % 10}"
            diff, wide = row["difference"], row["adjusted_interval"]
            if math.isfinite(_num(wide.get("low"))):
                ax.plot([_num(wide["low"]) * scale, _num(wide["high"]) * scale], [y, y], color=color, lw=6,
                        alpha=0.3, solid_capstyle="butt", gid=FOREST_GIDS["adjusted"])
            if math.isfinite(_num(diff.get("low"))):
                ax.plot([_num(diff["low"]) * scale, _num(diff["high"]) * scale], [y, y], color=color, lw=1.2,
                        gid=FOREST_GIDS["interval"])
            ax.plot(_num(diff["mean"]) * scale, y, "o", color=color, ms=5, gid=FOREST_GIDS["point"])
            if entry["collapsed"]:
                ax.plot(_num(diff["mean"]) * scale, y, "x", color="k", ms=9, mew=2, gid=COLLAPSED_GID)
            ticks.append(y)
            labels.append(_forest_label(entry))
            y += 1.0
        y += 0.3
    ax.axvline(0.0, color="0.3", lw=0.8, ls="--")
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_ylim(y - 0.5, -1.0)
    percent = not entries or entries[0]["scale"] == 100.0
    ax.set_xlabel(("difference from SGD, final test accuracy (points)" if percent else "difference from SGD")
                  + ": ● mean, thin 95% CI, thick simultaneous (Bonferroni) CI, × collapsed seed")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path)  # closes the figure
    return path


def render_markdown(results: Mapping[str, Any], *, curves: str = "curves.png", summary: str = "summary.png") -> str:
    """The report's Markdown text (figures referenced by relative file names).
    >>> text = render_markdown(demo_results())
    >>> text.splitlines()[0], "## Verdicts" in text
    ('# demo', True)
    """
    config = results["config"]
    data = results["dataset"]
    model = results["model"]
    env = results.get("environment", {})
    extra = results.get("extra") or {}
    options = model.get("options")
    model_text = f"`{model.get('name')}`" + (f" {options}" if options else "") + \
        (f", {model['num_params']:,} parameters" if model.get("num_params") else "")
    batch = config["batch_size"] if config["batch_size"] is not None else "full"
    criterion = "validation loss" if data["task"] == "regression" else "validation accuracy"
    lines = [
        f"# {results.get('title') or extra.get('title') or results['experiment']}",
        "",
        "Generated by `jaxnets.report` from `results.json`; every measured number below comes from that file.",
        "",
        "## Setup",
        "",
        f"- data: `{data['name']}` ({data['task']}), train {data['num_train']} / validation {data['num_val']} "
        f"(carved from the training set) / test {data['num_test']}",
        f"- model: {model_text}",
        f"- budget per run: {config['epochs']} epochs = {results['budget']['steps_per_run']} steps of batch "
        f"{batch}, schedule `{config['schedule']}`; evaluated every {config['eval_every']} epoch(s)",
        f"- learning rate chosen by final {criterion}"
        f" over {config['selection_seeds']} selection seed(s) on a {config['grid_points']}-point grid "
        f"(factor {config['grid_step']:.3g}), extended by x{config['extension_factor']:g} steps while the "
        f"optimum sits on an edge (at most {config['max_extensions']} times); test data never seen during selection",
        f"- then {config['seeds']} evaluation seeds per arm (seed s: same initialization and data order in every arm)",
        f"- {results['budget']['runs_trained']} training runs in all; wall time "
        f"{_num(results.get('wall_time_s')):.0f} s on {env.get('platform', {}).get('backend', '?')} "
        f"({len(env.get('platform', {}).get('devices', []))} device(s)); versions "
        + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()),
    ]
    if extra.get("budget_note"):
        lines.append(f"- {extra['budget_note']}")
    lines[4:4] = ["## Conclusions", "", conclusions_section(results, zhou=extra.get("zhou")), ""]
    lines += ["", "## Results", "", summary_table(results), "", "## Verdicts", ""]
    lines += [f"- {sentence}" for sentence in verdicts(results)] or ["- (no pairs compared)"]
    lines += ["", "## Primary comparisons (each arm vs SGD, multiplicity-adjusted)", "", primary_table(results), "",
              "## Exploratory paired differences", "",
              "Pairs chosen for context and secondary quantities (training loss, accuracy, gap): unadjusted "
              "p-values, not part of the primary family; read them as descriptive.", "",
              comparison_table(results), "",
              f"![training curves]({curves})", "", f"![summary]({summary})", "",
              "![learning-rate sensitivity](sensitivity.png)", "",
              "## Learning-rate selection", "", selection_table(results)]
    sensitivity = sensitivity_table(results)
    if sensitivity:
        lines += ["", "### Sensitivity to the learning rate", "", sensitivity]
    edges = [arm["label"] for arm in results["arms"] if arm["selection"].get("position") in ("low_edge", "high_edge")]
    if edges:
        lines += ["", f"**Warning**: the chosen learning rate is still on the edge of its grid for "
                      f"{', '.join(edges)} after {config['max_extensions']} extensions."]
    published = published_table(results)
    if published:
        lines += ["", "## Published vs here", "", published]
    notes = extra.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    lines += ["", "## Appendix", "", peek_table(results)]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | os.PathLike, results: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write ``report.md``, ``curves.png`` and ``summary.png`` next to ``results.json``.

    Args:
      out_dir: the directory holding ``results.json`` (and receiving the report).
      results: the results dict; None reads ``out_dir/results.json``.

    Returns:
      ``{"report": ..., "curves": ..., "summary": ..., "sensitivity": ...}`` paths.
    
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as out:
    ...     sorted(path.name for path in write_report(out, demo_results()).values())
    ['curves.png', 'report.md', 'sensitivity.png', 'summary.png']
    """
    out = Path(out_dir)
    if results is None:
        results = load_results(out)
    else:
        # Render from the JSON form (NaN -> null), exactly as a later re-render would.
        from jaxnets.io import to_jsonable

        results = json.loads(json.dumps(to_jsonable(results)))
    paths = {"curves": plot_curves(results, out / "curves.png"),
             "summary": plot_summary(results, out / "summary.png"),
             "sensitivity": plot_sensitivity(results, out / "sensitivity.png"),
             "report": out / "report.md"}
    atomic_write_text(paths["report"], render_markdown(results))
    return paths


__all__ = [
    "PERCENT_METRICS", "comparison_table", "demo_results", "format_interval", "load_results", "plot_curves",
    "plot_summary", "plot_sensitivity", "plot_forest", "forest_rows", "sensitivity_table", "arm_groups", "collapsed_seeds", "primary_table", "peek_table", "conclusions", "conclusions_section",
    "published_table", "render_markdown", "selection_table", "summary_table", "verdicts", "write_report",
]
