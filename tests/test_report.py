"""The comparison runner end to end through ``jaxnets compare``: results.json, report.md, figures,
reproducibility, intervals against a hand computation, seed pairing, and one-line CLI errors."""
import argparse
import contextlib
import doctest
import io
import json
import math

import matplotlib.image
import numpy as np
import pytest
from scipy import stats as scipy_stats

from jaxnets import compare, report
from jaxnets.cli import compare as compare_cli

T975_2 = 4.3027  # t_{0.975, 2} from a printed table


def parser():
    main = argparse.ArgumentParser(prog="jaxnets")
    compare_cli.add_compare_parser(main.add_subparsers(dest="command"))
    return main


COMMON = ["compare", "--dataset", "iris", "--model", "mlp", "--hidden", "8", "--seeds", "3", "--epochs", "4",
          "--batch-size", "32", "--eval-every", "2", "--max-extensions", "0", "--target-loss", "0.6",
          "--validation", "0.2", "--lr-grid", "sgd=0.03,0.3,3"]
FAST = COMMON + ["--optimizers", "sgd,adam", "--lr-grid", "adam=0.001,0.01,0.1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The CLI end to end; then again with the same arguments but only the sgd arm (arms are trained
    independently, so its records must come out identical)."""
    outs, printed = [], []
    for name, args in (("first", FAST), ("second", COMMON + ["--optimizers", "sgd"])):
        out = tmp_path_factory.mktemp(name) / "cmp"
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(io.StringIO()):
            status = compare_cli.run_compare(parser().parse_args(args + ["--out", str(out)]))
        assert status == 0
        outs.append(out)
        printed.append(buffer.getvalue())
    return outs, printed


def test_runner_writes_results_report_and_figures(tiny_run):
    (out, _), (stdout, _) = tiny_run
    assert {p.name for p in out.iterdir()} >= {"results.json", "report.md", "curves.png", "summary.png"}
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == compare.SCHEMA
    assert {"versions", "platform"} <= set(results["environment"])
    assert results["config"]["pairs"] == [["sgd", "adam"]]
    assert results["model"]["num_params"] == 4 * 8 + 8 + 8 * 3 + 3
    assert results["extra"]["cli_args"]["optimizers"] == ["sgd", "adam"]
    assert results["dataset"]["num_val"] == 24 and results["dataset"]["num_test"] == 30
    for arm in results["arms"]:
        assert arm["runs"]["seeds"] == [0, 1, 2]
        assert arm["runs"]["curves"]["epochs"] == [2, 4] and len(arm["runs"]["params_sha256"]) == 3
        # jaxnets compare takes the library's default of 3 selection seeds
        assert arm["selection"]["seeds"] == [compare.SELECTION_SEED_OFFSET + i for i in range(3)]
        assert len([p for p in arm["selection"]["grid"] if not p["refined"]]) == 3   # plus refined points
    for name in ("curves.png", "summary.png"):
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 100
    text = (out / "report.md").read_text()
    assert "| `sgd` | sgd |" in text and "| `adam` | adam |" in text
    assert "**sgd vs adam**" in text and "![summary](summary.png)" in text
    assert "| `sgd` | sgd |" in stdout and "report.md" in stdout


def test_same_seeds_give_identical_numbers(tiny_run):
    first, second = (json.loads((out / "results.json").read_text()) for out in tiny_run[0])
    strip = compare.without_timings
    assert strip(first["arms"][0]) == strip(second["arms"][0])      # every number of the sgd arm
    assert first["dataset"] == second["dataset"] and first["model"] == second["model"]
    assert {k: v for k, v in first["config"].items() if k != "pairs"} == \
        {k: v for k, v in second["config"].items() if k != "pairs"}
    assert first["wall_time_s"] > 0 and second["config"]["pairs"] == []


def test_summary_intervals_match_a_hand_computation(tiny_run):
    results = json.loads((tiny_run[0][0] / "results.json").read_text())
    for arm in results["arms"]:
        values = np.asarray(arm["runs"]["per_seed"]["final_test_accuracy"])
        curves = np.asarray(arm["runs"]["curves"]["test_accuracy"])
        np.testing.assert_allclose(values, curves[-1])
        summary = arm["summary"]["final_test_accuracy"]
        half = T975_2 * values.std(ddof=1) / math.sqrt(3)
        assert summary["mean"] == pytest.approx(values.mean(), abs=1e-12)
        assert summary["half_width"] == pytest.approx(half, rel=1e-4, abs=1e-9)
        gap = np.asarray(arm["runs"]["per_seed"]["generalization_gap"])
        train = np.asarray(arm["runs"]["curves"]["train_accuracy"])[-1]
        np.testing.assert_allclose(gap, train - values, atol=1e-12)
        loss = np.asarray(arm["runs"]["curves"]["train_loss"])
        reached = [2.0 if loss[0, s] <= 0.6 else 4.0 if loss[1, s] <= 0.6 else None for s in range(3)]
        assert arm["runs"]["per_seed"]["epochs_to_target"] == reached


def test_paired_differences_use_the_same_seed(tiny_run):
    results = json.loads((tiny_run[0][0] / "results.json").read_text())
    row = next(r for r in results["comparisons"] if r["metric"] == "final_test_accuracy")
    sgd, adam = (arm["runs"]["per_seed"]["final_test_accuracy"] for arm in results["arms"])
    diffs = np.asarray(sgd) - np.asarray(adam)
    assert row["n"] == 3 and row["seeds"] == [0, 1, 2]
    assert row["difference"]["mean"] == pytest.approx(diffs.mean(), abs=1e-12)
    # pairing survives a reordering of one arm's seeds
    arms = json.loads(json.dumps(results["arms"]))
    runs = arms[1]["runs"]
    runs["seeds"] = runs["seeds"][::-1]
    runs["per_seed"] = {k: v[::-1] for k, v in runs["per_seed"].items()}
    again = compare.paired_comparisons(arms, [("sgd", "adam")], "multiclass")
    assert next(r for r in again if r["metric"] == "final_test_accuracy")["difference"]["mean"] == \
        pytest.approx(diffs.mean(), abs=1e-12)


def test_report_renders_again_from_the_file_with_published_references(tiny_run):
    out = tiny_run[0][0]
    before = (out / "report.md").read_text()
    report.write_report(out)
    assert (out / "report.md").read_text() == before
    results = report.load_results(out)
    sgd = results["arms"][0]["summary"]["final_test_accuracy"]
    results["extra"]["published"] = [
        {"source": "paper A", "claim": "sgd > adam", "pair": ["sgd", "adam"], "metric": "final_test_accuracy",
         "direction": ">"},
        {"source": "paper B", "claim": "sgd value", "value": sgd["mean"], "arm": "sgd",
         "metric": "final_test_accuracy"},
        {"source": "paper C", "claim": "far above", "value": 2.0, "arm": "sgd", "metric": "final_test_accuracy"}]
    table = report.published_table(results)
    assert "| paper A | sgd > adam | sgd > adam |" in table
    lines = table.splitlines()
    assert "inside our CI" in lines[3] or math.isnan(sgd["half_width"] or float("nan"))
    assert "published is above our CI" in lines[4]


# ------------------------------------------------------------------ CLI


@pytest.mark.parametrize("extra, message", [
    (["--optimizers", "sgd,lion"], "--optimizers: got 'lion'; allowed: sgd, momentum"),
    (["--validation", "1.5"], "--validation: got 1.5; allowed: a fraction 0 < v < 1"),
    (["--pair", "sgd,rmsprop"], "--pair: got 'rmsprop'; allowed: one of --optimizers (sgd, adam)"),
    (["--model", "resnet"], "--model: got 'resnet'; allowed:"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    status = compare_cli.run_compare(parser().parse_args(FAST + extra + ["--out", str(out)]))
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith(f"jaxnets: error: {message}") and "\n" not in err
    assert not out.exists()


def test_cli_refuses_a_non_empty_output_directory(tiny_run, capsys):
    out = tiny_run[0][0]
    status = compare_cli.run_compare(parser().parse_args(FAST + ["--out", str(out)]))
    assert status == 2 and "which is not empty" in capsys.readouterr().err


def test_cli_is_wired_into_jaxnets_when_available(tmp_path, capsys):
    from jaxnets import cli

    try:
        args = cli.build_parser().parse_args(["compare"])
    except cli.UsageError:
        pytest.skip("`jaxnets compare` is not wired into jaxnets.cli yet")
    assert args.command == "compare"
    status = cli.main(FAST + ["--optimizers", "sgd,nope", "--out", str(tmp_path / "x")])
    assert status == 2 and "--optimizers" in capsys.readouterr().err


# ------------------------------------------------------------------ doctests


@pytest.mark.parametrize("module", [report, compare_cli])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


def test_identical_arms_print_identical_not_nan(tmp_path):
    """Two arms with the same value on every seed (e.g. adam and an Adam recipe at the same rate):
    no t statistic exists (0/0), so the table and the verdict say "identical", not "nan" and p = 1."""
    metrics = compare.PAIRED_METRICS_CLASSIFICATION
    same = {m: [0.75, 0.5, 0.625] for m in metrics}
    shifted = {m: [v + 0.125 for v in values] for m, values in same.items()}  # exactly constant difference
    arms = [{"label": label, "runs": {"seeds": [0, 1, 2], "per_seed": per_seed}}
            for label, per_seed in (("adam", same), ("adam_recipe", same), ("other", shifted))]
    results = report.demo_results()
    results["config"]["pairs"] = [["adam", "adam_recipe"], ["other", "adam"]]
    results["comparisons"] = compare.paired_comparisons(arms, results["config"]["pairs"], "multiclass")
    compare.save_results(results, tmp_path)  # through JSON, as a report is made: NaN is stored as null
    loaded = report.load_results(tmp_path)
    lines = report.comparison_table(loaded).splitlines()[2:]
    identical = [line for line in lines if line.startswith("| `adam` − `adam_recipe`")]
    assert len(identical) == len(metrics)
    for line in identical:
        assert line.endswith("| — | identical | 3 |"), line
    assert not any("nan" in line for line in lines)
    shifted_rows = [line for line in lines if line.startswith("| `other` − `adam`")]
    assert shifted_rows and all("| inf | < 0.001 |" in line for line in shifted_rows), shifted_rows
    sentence = report.verdicts(loaded)[0]
    assert sentence == ("**adam vs adam_recipe**: identical final test accuracy on every seed (3 seeds); "
                        "identical final training losses."), sentence


def test_verdict_interval_is_of_the_stated_size_when_the_second_arm_wins():
    """'b reaches a better accuracy than a by 2.5 points' carries the interval of b − a (positive), not of a − b."""
    metrics = compare.PAIRED_METRICS_CLASSIFICATION
    sgd = {m: [0.60, 0.62, 0.61, 0.63, 0.60] for m in metrics}
    adam = {m: [v + d for v, d in zip(values, (0.02, 0.03, 0.025, 0.02, 0.03))] for m, values in sgd.items()}
    arms = [{"label": label, "runs": {"seeds": [0, 1, 2, 3, 4], "per_seed": per_seed}}
            for label, per_seed in (("sgd", sgd), ("adam", adam))]
    results = report.demo_results()
    results["config"]["pairs"] = [["sgd", "adam"]]
    results["comparisons"] = compare.paired_comparisons(arms, results["config"]["pairs"], "multiclass")
    sentence = report.verdicts(results)[0]
    diffs = np.array([0.02, 0.03, 0.025, 0.02, 0.03]) * 100
    half = scipy_stats.t.ppf(0.975, 4) * diffs.std(ddof=1) / np.sqrt(5)
    expected = f"adam reaches a better final test accuracy than sgd by {diffs.mean():.1f} points " \
               f"(95% CI {diffs.mean() - half:+.1f} to {diffs.mean() + half:+.1f} points;"
    assert expected in sentence, sentence


# ------------------------------------------------------------------ conclusions from hand-made results


def claim_results(test_acc, train_loss=None, optimizers=None):
    """A results dict from per-seed values typed here: label -> 5 final test accuracies (and train losses)."""
    from jaxnets import stats

    results = report.demo_results()
    arms = []
    for label, values in test_acc.items():
        losses = (train_loss or {}).get(label, [0.01] * 5)
        per_seed = {"final_test_accuracy": values, "final_train_loss": losses}
        arms.append({"label": label, "optimizer": (optimizers or {}).get(label, label.split("_")[0]),
                     "selection": {"position": "interior", "chosen": {"learning_rate": 0.1}},
                     "search": {"eps": [1e-8, 1.0]} if label == "adam_eps" else {},
                     "runs": {"seeds": [0, 1, 2, 3, 4], "per_seed": per_seed},
                     "summary": {k: stats.mean_ci(v).as_dict() for k, v in per_seed.items()}})
    results["arms"] = arms
    results["primary"] = compare.primary_comparisons(arms, "multiclass")
    return results


SGD = [0.670, 0.660, 0.680, 0.675, 0.665]
WORSE = [v - 0.05 + 0.002 * i for i, v in enumerate(SGD)]      # 4-5 points below SGD on every seed
BETTER = [v + 0.05 - 0.002 * i for i, v in enumerate(SGD)]
NOISY = [v + d for v, d in zip(SGD, (0.03, -0.04, 0.02, -0.01, 0.0))]


def test_conclusion_wilson_holds_fails_and_not_detected():
    low, high = [1e-5] * 5, [1.0] * 5
    holds = report.conclusions(claim_results({"sgd": SGD, "adam": WORSE}, {"sgd": [1e-3] * 5, "adam": low}))
    assert holds[0].startswith("**Wilson et al. 2017**") and "holds for `adam`" in holds[0]
    assert "demo `mlp`, constant schedule" in holds[0] and "Holm p" in holds[0] and "(permutation)" in holds[0]
    higher = report.conclusions(claim_results({"sgd": SGD, "adam": WORSE}, {"sgd": [1e-3] * 5, "adam": high}))
    assert "fails (worse, but at a higher training loss than SGD) for `adam`" in higher[0]
    better = report.conclusions(claim_results({"sgd": SGD, "adagrad": BETTER}))
    assert "fails (better than SGD) for `adagrad`" in better[0]
    assert better[-1].startswith("**Best arm overall**") and "`adagrad`" in better[-1] and "better than SGD" in better[-1]
    unclear = report.conclusions(claim_results({"sgd": SGD, "adam": NOISY}))
    assert "not detected for `adam`" in unclear[0]


def test_conclusion_choi_and_loshchilov_only_when_their_arm_ran():
    without = report.conclusions(claim_results({"sgd": SGD, "adam": WORSE}))
    assert not any("Choi" in line or "Loshchilov" in line for line in without)
    closes = report.conclusions(claim_results({"sgd": SGD, "adam": WORSE, "adam_eps": NOISY, "adamw": WORSE},
                                              optimizers={"adam_eps": "adam"}))
    choi = next(line for line in closes if line.startswith("**Choi et al. 2019**"))
    loshchilov = next(line for line in closes if line.startswith("**Loshchilov & Hutter 2019**"))
    assert ": holds (" in choi and "fails (the gap to SGD remains)" in loshchilov
    assert not any("`adam_eps`" in part for part in closes[0].split(";")[:1])   # adam_eps is not a Wilson arm
    nothing = report.conclusions(claim_results({"sgd": SGD, "adam": NOISY, "adam_eps": NOISY}))
    assert any(line.startswith("**Choi et al. 2019**") and "not detected" in line for line in nothing)


def test_conclusion_zhou_only_with_its_results_and_best_arm_identical_names():
    from jaxnets import stats

    results = claim_results({"sgd": SGD, "adam": WORSE, "adam_recipe": WORSE})
    assert not any("Zhou" in line for line in report.conclusions(results))
    smaller = stats.paired_difference([1.5, 1.55, 1.52, 1.6, 1.51], [1.8, 1.82, 1.79, 1.85, 1.81]).as_dict()
    larger = stats.paired_difference([0.03, 0.031, 0.029, 0.032, 0.03], [0.01, 0.011, 0.009, 0.012, 0.01]).as_dict()
    zhou = {"sgd_minus_adam": [{"epochs": 172, "alpha": smaller, "top_eigenvalue": smaller}]}
    assert "holds" in next(line for line in report.conclusions(results, zhou=zhou) if "Zhou" in line)
    zhou["sgd_minus_adam"][0]["top_eigenvalue"] = larger
    assert "fails (Adam flatter)" in next(line for line in report.conclusions(results, zhou=zhou) if "Zhou" in line)
    tied = claim_results({"sgd": WORSE, "adam": SGD, "adam_recipe": SGD})
    assert "`adam` = `adam_recipe`" in report.conclusions(tied)[-1]


def test_conclusions_are_the_first_section_of_the_report():
    text = report.render_markdown(claim_results({"sgd": SGD, "adam": WORSE}))
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Conclusions" and "holds for `adam`" in text.split("## Setup")[0]


def test_best_test_accuracy_only_in_the_appendix_without_paired_tests():
    results = report.demo_results()
    assert "best" not in report.summary_table(results)
    assert not any(row["metric"].startswith("best") for row in results["comparisons"])
    assert "best" not in report.comparison_table(results)
    text = report.render_markdown(results)
    appendix = text.split("\n## Appendix\n")[1]
    assert appendix.splitlines()[1] == "### " + report.PEEK_HEADER
    assert "peeks at test; not for comparison" in report.PEEK_HEADER
    assert text.count("best test acc.") == 1 and "best test acc." in appendix


# ------------------------------------------------------------------ figures a reader trusts


def drawn(monkeypatch, plot, results, tmp_path):
    """The figure ``plot`` draws, captured before it is saved."""
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig))
    plot(results, tmp_path / "figure.png")
    return figures[0]


def with_recipe_and_a_collapsed_seed():
    """demo results plus ``adam_recipe``, the same runs as ``adam``; sgd's seed 2 ends at chance (1/3)."""
    results = json.loads(json.dumps(report.demo_results()))
    sgd, adam = results["arms"]
    for arm, tag in ((sgd, "s"), (adam, "a")):
        arm["runs"]["params_sha256"] = [f"{tag}{s}" for s in range(3)]
    results["arms"].append({**json.loads(json.dumps(adam)), "label": "adam_recipe"})
    for key in ("test_accuracy", "val_accuracy"):
        sgd["runs"]["curves"][key][-1][2] = 0.30      # <= 1/3 + CHANCE_MARGIN
    sgd["runs"]["per_seed"]["final_test_accuracy"][2] = 0.30
    return results


def test_collapsed_definition():
    # at chance, loss not finite, loss no lower than at the start: collapsed; a trained run is not
    assert compare.collapsed(0.1, 2.3, [0.10], 10) and compare.collapsed(0.1, 2.3, [0.15], 10)
    assert not compare.collapsed(0.1, 2.3, [0.151, 0.7], 10)
    assert compare.collapsed(float("nan"), 2.3, [0.9], 10) and compare.collapsed(2.3, 2.3, [0.9], 10)
    assert compare.collapsed(0.5, None, [None], 3) and not compare.collapsed(0.5, 1.0, [], None)   # regression
    assert report.collapsed_seeds(with_recipe_and_a_collapsed_seed(),
                                  with_recipe_and_a_collapsed_seed()["arms"][0]) == [False, False, True]


def test_identical_arms_are_drawn_once_under_both_names(monkeypatch, tmp_path):
    results = with_recipe_and_a_collapsed_seed()
    assert [name for name, _ in report.arm_groups(results)] == ["sgd", "adam = adam_recipe"]
    fig = drawn(monkeypatch, report.plot_curves, results, tmp_path)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["sgd (1 collapsed)", "adam = adam_recipe"]
    fig = drawn(monkeypatch, report.plot_summary, results, tmp_path)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["sgd", "adam = adam_recipe"]


def test_a_collapsed_run_is_marked_in_every_figure(monkeypatch, tmp_path):
    results = with_recipe_and_a_collapsed_seed()
    results["arms"][0]["selection"]["grid"][2]["collapsed"] = True   # lr 1.0 collapsed during selection
    for plot in (report.plot_curves, report.plot_summary, report.plot_sensitivity):
        fig = drawn(monkeypatch, plot, results, tmp_path)
        marks = [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == report.COLLAPSED_GID]
        assert marks, plot.__name__
    clean = json.loads(json.dumps(report.demo_results()))
    for plot in (report.plot_curves, report.plot_summary, report.plot_sensitivity):
        fig = drawn(monkeypatch, plot, clean, tmp_path)
        assert not [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == report.COLLAPSED_GID]
    assert "| 3 (1 collapsed) |" in report.summary_table(results)


def test_curve_band_is_the_interquartile_range_of_the_seeds_that_did_not_collapse(monkeypatch, tmp_path):
    results = with_recipe_and_a_collapsed_seed()
    fig = drawn(monkeypatch, report.plot_curves, results, tmp_path)
    median = fig.axes[1].get_lines()[0]                    # sgd's test accuracy, seeds 0 and 1 only
    values = np.asarray(results["arms"][0]["runs"]["curves"]["test_accuracy"])[:, :2] * 100
    np.testing.assert_allclose(median.get_ydata(), np.median(values, axis=1))


def test_the_main_job_prints_the_reports_conclusions(tmp_path, capsys):
    """The README main job prints its verdict (the report's generated conclusions), not only the path."""
    from experiments import optimizer_comparison

    results = report.demo_results()
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    optimizer_comparison.print_conclusions(path)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("Conclusions")
    assert printed[1:] == [f"- {sentence}" for sentence in report.conclusions(json.loads(path.read_text()))]
    assert len(printed) >= 2
