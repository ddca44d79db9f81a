"""experiments/optimizer_comparison.py beyond the comparison itself: the --full forest plot and index,
the recipe on all 4,000 training signals, and --zhou for every arm on any comparison's model."""
import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from experiments import optimizer_comparison as job
from jaxnets import compare, report
from jaxnets.io import atomic_write_json


def _copy(results):
    return json.loads(json.dumps(results))


def study_with_recipe():
    """demo results plus ``adam_recipe`` (the same runs as ``adam``); sgd's seed 2 collapsed (at chance)."""
    results = _copy(report.demo_results())
    sgd, adam = results["arms"]
    for arm, tag in ((sgd, "s"), (adam, "a")):
        arm["runs"]["params_sha256"] = [f"{tag}{s}" for s in range(3)]
    results["arms"].append({**_copy(adam), "label": "adam_recipe"})
    for key in ("test_accuracy", "val_accuracy"):
        sgd["runs"]["curves"][key][-1][2] = 0.30
    results["primary"] = compare.primary_comparisons(results["arms"], "multiclass")
    return results


def study_with_adagrad():
    """demo results plus ``adagrad`` with its own numbers; adagrad's seed 0 collapsed."""
    results = _copy(report.demo_results())
    adagrad = _copy(results["arms"][1])
    adagrad["label"] = adagrad["optimizer"] = "adagrad"
    adagrad["runs"]["per_seed"]["final_test_accuracy"] = [0.10, 0.75, 0.70]
    adagrad["runs"]["curves"]["test_accuracy"][-1] = [0.10, 0.75, 0.70]
    adagrad["runs"]["curves"]["val_accuracy"][-1] = [0.10, 0.75, 0.70]
    results["arms"].append(adagrad)
    results["primary"] = compare.primary_comparisons(results["arms"], "multiclass")
    return results


def drawn_forest(monkeypatch, studies, tmp_path):
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig))
    report.plot_forest(studies, tmp_path / "forest.png")
    return figures[0].axes[0]


def by_gid(ax, gid):
    return [line for line in ax.get_lines() if line.get_gid() == gid]


def t_interval(differences, confidence):
    d = np.asarray(differences, np.float64)
    half = scipy_stats.t.ppf(0.5 + confidence / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return d.mean() - half, d.mean() + half


def test_forest_has_one_row_per_study_and_arm_with_identical_arms_merged(monkeypatch, tmp_path):
    studies = {"one": study_with_recipe(), "two": study_with_adagrad()}
    ax = drawn_forest(monkeypatch, studies, tmp_path)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 3                                        # one: adam = adam_recipe; two: adam, adagrad
    assert labels[0].startswith("adam = adam_recipe  [Holm p ") and "(perm.)" in labels[0]
    assert labels[1].startswith("adam  [") and labels[2].startswith("adagrad  [") and "× 1 collapsed" in labels[2]
    headings = [t.get_text() for t in ax.texts if t.get_gid() == "study"]
    assert headings == ["one (reference: × 1 collapsed)", "two"]
    rows = [(studies["one"]["arms"][1], studies["one"]["arms"][0], 2),
            (studies["two"]["arms"][1], studies["two"]["arms"][0], 2),
            (studies["two"]["arms"][2], studies["two"]["arms"][0], 2)]
    points, thin, thick = (by_gid(ax, report.FOREST_GIDS[k]) for k in ("point", "interval", "adjusted"))
    assert len(points) == len(thin) == len(thick) == 3
    for k, (arm, ref, family) in enumerate(rows):
        d = (np.asarray(arm["runs"]["per_seed"]["final_test_accuracy"])
             - np.asarray(ref["runs"]["per_seed"]["final_test_accuracy"])) * 100
        y = ax.get_yticks()[k]
        np.testing.assert_allclose(points[k].get_xdata(), [d.mean()])
        np.testing.assert_allclose(thin[k].get_xdata(), t_interval(d, 0.95), rtol=1e-9)
        np.testing.assert_allclose(thick[k].get_xdata(), t_interval(d, 1 - 0.05 / family), rtol=1e-9)  # Bonferroni
        assert list(thin[k].get_ydata()) == [y, y] and list(thick[k].get_ydata()) == [y, y]
    marks = by_gid(ax, report.COLLAPSED_GID)
    assert len(marks) == 1 and marks[0].get_ydata()[0] == ax.get_yticks()[2]
    assert any(line.get_xdata()[0] == 0 == line.get_xdata()[1] for line in ax.get_lines())   # the line at 0


def recipe_results(model, accuracies):
    per_seed = {"final_test_accuracy": accuracies}
    return {"experiment": f"mnist1d_{model}_recipe4000", "kind": "recipe", "model": {"name": model},
            "steps_per_run": 6000, "summary": compare.summarize_seeds(per_seed), "wall_time_s": 60.0}


def test_index_links_the_forest_plot_and_shows_the_recipe_on_all_training_signals(tmp_path, monkeypatch):
    study = study_with_recipe()
    study["model"]["name"] = "mlp"
    study["environment"] = {"platform": {"backend": "cpu"}}
    atomic_write_json(tmp_path / "mnist1d_mlp_constant" / "results.json", study)
    atomic_write_json(tmp_path / "mnist1d_mlp_recipe4000" / "results.json", recipe_results("mlp", [0.7, 0.72, 0.74]))
    planned = job.full_study_names(("mlp",), ("constant", "cosine"), digits=False)
    text = job.write_index(tmp_path, ["mnist1d_mlp_constant"], ["mnist1d_mlp_recipe4000"], planned=planned).read_text()
    assert "Not finished in this directory (a later `--full` run trains them and keeps the rest): " \
           "mnist1d_mlp_cosine." in text.splitlines()
    assert "Not finished" not in job.write_index(tmp_path, ["mnist1d_mlp_constant"], ["mnist1d_mlp_recipe4000"],
                                                 planned=planned[:1] + planned[2:]).read_text()
    text = job.write_index(tmp_path, ["mnist1d_mlp_constant"], ["mnist1d_mlp_recipe4000"], planned=planned).read_text()
    assert "![forest plot of every arm's difference from SGD](forest.png)" in text
    assert (tmp_path / "forest.png").stat().st_size > 1000
    row = next(line for line in text.splitlines() if line.startswith("| `mlp`"))
    # 4,000 signals: mean 72.0, t-interval half-width 4.303 * 2 / sqrt(3) = 4.97; 3,500: adam's runs
    adam = np.asarray(study["arms"][1]["runs"]["per_seed"]["final_test_accuracy"]) * 100
    half = scipy_stats.t.ppf(0.975, 2) * adam.std(ddof=1) / math.sqrt(3)
    assert row == f"| `mlp` (3 seeds, 6,000 steps) | 72.0 ± 5.0 | {adam.mean():.1f} ± {half:.1f} | about 65 % |"

    page, forest = tmp_path / "page.md", tmp_path / "docs_figures" / "optimizer_comparison" / "full_forest.png"
    page.write_text("before\n<!-- generated-full:start -->\nPLACEHOLDER\n<!-- generated-full:end -->\nafter\n")
    monkeypatch.setattr(job, "DOCS_PAGE", page)
    monkeypatch.setattr(job, "FULL_FOREST", forest)
    job.update_docs(tmp_path, block="full")
    block = page.read_text()
    assert "(docs_figures/optimizer_comparison/full_forest.png)" in block and forest.is_file()
    assert "| `mlp` (3 seeds, 6,000 steps) |" in block and "PLACEHOLDER" not in block


def test_recipe_study_trains_on_all_4000_signals_without_validation(tmp_path):
    results = job.recipe_study(tmp_path / "r", "mlp", seeds=2, steps=40)
    assert results["dataset"]["num_train"] == 4000 and results["dataset"]["num_val"] == 0
    assert results["runs"]["setting"] == {"learning_rate": 0.01} and results["runs"]["seeds"] == [0, 1]
    assert results["steps_per_run"] == 40 and results["config"]["epochs"] == 1
    assert results["summary"]["final_test_accuracy"]["n"] == 2
    again = job.recipe_study(tmp_path / "r", "mlp", seeds=2, steps=40)          # kept, not retrained
    assert again["wall_time_s"] == results["wall_time_s"]


def test_recipe_study_default_is_6000_steps_of_batch_100_over_150_epochs(tmp_path, monkeypatch):
    seen = []

    def stop(model, data, arm, setting, config, **kw):
        seen.append((data.num_train, data.num_val, config.epochs, config.batch_size, config.schedule, setting))
        raise RuntimeError("stop")

    monkeypatch.setattr(compare, "run_seeds", stop)
    with pytest.raises(RuntimeError, match="stop"):
        job.recipe_study(tmp_path / "r", "cnn1d")
    assert seen == [(4000, 0, 150, 100, "constant", {"learning_rate": 0.01})]


def test_full_runs_the_recipe_studies_after_the_unchanged_comparisons(monkeypatch, tmp_path):
    """The recipe studies are extra directories: the comparisons keep their names, arms and configuration."""
    calls = []
    monkeypatch.setattr(job, "run_study", lambda name, dataset, model, options, arms, config, out, **kw:
                        calls.append((name, [a.label for a in arms], config.epochs, config.eval_every,
                                      config.selection_seeds)))
    monkeypatch.setattr(job, "recipe_study", lambda out, model, **kw: calls.append((out.name, model, kw)))
    monkeypatch.setattr(job, "write_index", lambda *args, **kwargs: None)
    job.full(tmp_path)
    tuned = ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adagrad", "adamw", "adam_eps"]
    assert calls[:4] == [("mnist1d_mlp_constant", tuned + ["adam_recipe"], 172, 2, 3),
                         ("mnist1d_mlp_cosine", tuned, 172, 2, 3),
                         ("mnist1d_cnn1d_constant", tuned + ["adam_recipe"], 172, 2, 3),
                         ("mnist1d_cnn1d_cosine", tuned, 172, 2, 3)]
    assert [c[0] for c in calls[4:6]] == ["digits_mlp", "digits_cnn"]
    assert calls[6:] == [("mnist1d_mlp_recipe4000", "mlp", {"seeds": 5, "steps": 6000, "reuse": True}),
                         ("mnist1d_cnn1d_recipe4000", "cnn1d", {"seeds": 5, "steps": 6000, "reuse": True})]


def comparison_fixture(tmp_path):
    """A finished comparison's results.json as --zhou reads it: a small MLP on MNIST-1D, 1 epoch (the model
    and its options come from the file: a small MLP keeps compilation short; the CNN reads the same way)."""
    def arm(label, optimizer, setting, fixed_lr=None):
        return {"label": label, "optimizer": optimizer, "fixed": {}, "hyperparams": {}, "fixed_lr": fixed_lr,
                "selection": {"chosen": setting}, "runs": {"seeds": [0, 1], "setting": setting}}

    source = {"dataset": {"name": "mnist1d"},
              "model": {"name": "mlp", "options": {"hidden": [8]},
                        "load_options": {"validation": 0.125, "split_seed": 0}},
              "config": {"epochs": 1, "batch_size": 100, "schedule": "constant"},
              "arms": [arm("sgd", "sgd", {"learning_rate": 0.1}), arm("adam", "adam", {"learning_rate": 0.01}),
                       arm("adamw", "adamw", {"learning_rate": 0.01, "weight_decay": 0.1}),
                       arm("adam_recipe", "adam", {"learning_rate": 0.01}, fixed_lr=0.01)]}
    atomic_write_json(tmp_path / "cmp" / "results.json", source)
    return tmp_path / "cmp"


def test_zhou_measures_every_arm_on_the_comparisons_model(tmp_path, monkeypatch):
    import jaxnets.population as population

    trained = []
    real_fit = population.fit_population

    def recording_fit(model, data, tx, config, *, seeds, hyperparams):
        trained.append((type(model).__name__, model.hidden, data.num_train, config.epochs, hyperparams))
        return real_fit(model, data, tx, config, seeds=seeds, hyperparams=hyperparams)

    monkeypatch.setattr(population, "fit_population", recording_fit)
    comparison = comparison_fixture(tmp_path)
    path = job.zhou(tmp_path / "zhou", comparison=comparison, seeds=2, checkpoints=(0, 5), iterations=3,
                    directions=2)
    results = json.loads((path.parent / "results.json").read_text())
    # the comparison's split (3,500 of 4,000), model and options; one population per distinct arm
    assert results["model"] == {"name": "mlp", "options": {"hidden": [8]}}
    assert results["minibatches"] == 35 and results["checkpoints"] == [0, 1]
    assert [(t[0], t[1], t[2], t[3]) for t in trained] == [("MLP", (8,), 3500, 1)] * 3
    assert trained[2][4] == {"learning_rate": [0.01, 0.01], "weight_decay": [0.1, 0.1]}    # adamw's chosen decay
    assert [e["epochs"] for e in results["optimizers"]["sgd"]["checkpoints"]] == [0, 1]
    arms = {a["label"]: a for a in results["arms"]}
    assert list(arms) == ["sgd", "adam", "adamw", "adam_recipe"] and arms["adam_recipe"]["same_as"] == "adam"
    for key in ("alpha", "alpha_released", "top_eigenvalue", "random_rise", "train_loss"):
        assert all(len(a[key]) == 2 and all(math.isfinite(v) for v in a[key]) for a in arms.values()), key
        assert arms["adam_recipe"][key] == arms["adam"][key]
        assert arms["sgd"][key] == results["optimizers"]["sgd"]["checkpoints"][-1][key]
    text = path.read_text()
    assert "mnist1d `mlp`, constant schedule" in text.splitlines()[0]
    assert "| `adamw` | adamw, lr 0.01, weight_decay 0.1 |" in text
    assert "| `adam_recipe` (same runs as `adam`) |" in text
    zhou_line = report.conclusions(report.demo_results(), zhou=results)
    assert any(line.startswith("**Zhou et al. 2020**") and "mnist1d `mlp` after 1 epochs" in line
               for line in zhou_line)
    assert job.zhou_block(path.parent) == "zhou" and job.zhou_out(comparison) == job.ZHOU_OUT.with_name("zhou_mlp")
    results["model"]["name"] = "cnn1d"
    atomic_write_json(path.parent / "results.json", results)
    assert job.zhou_block(path.parent) == "zhou-cnn1d"


def test_zhou_refuses_a_comparison_without_sgd_and_adam():
    with pytest.raises(ValueError, match=r"^comparison: got arms \['sgd'\]; allowed: "):
        job.zhou_arms({"arms": [{"label": "sgd", "optimizer": "sgd", "selection": {"chosen": {"learning_rate": 1}},
                                 "runs": {"seeds": [0]}}]})
