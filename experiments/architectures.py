"""Learning and speed runs of the architectures, too long for the test suite.

Each function runs one study and prints one JSON object (and returns it). Run one by name:

    .venv/bin/python experiments/architectures.py cnn_digits
    .venv/bin/python experiments/architectures.py cnn1d_mnist1d
    .venv/bin/python experiments/architectures.py cnn_speed
    .venv/bin/python experiments/architectures.py rnn_adding
    .venv/bin/python experiments/architectures.py rnn_parity
    .venv/bin/python experiments/architectures.py transformer_lm_grammar
    .venv/bin/python experiments/architectures.py transformer_reviews

Numbers quoted in docs and reports come from these outputs, never typed by hand.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import jaxnets as jn
from jaxnets.models import CNN, CNN1D
from jaxnets.profiling import round_robin_medians


def _emit(result: dict) -> dict:
    result = {"jax": jax.__version__, "backend": jax.default_backend(),
              "machine": platform.processor() or platform.machine(), **result}
    print(json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------- CNN / LeNet / CNN1D


def cnn_digits(epochs: int = 30, lr: float = 3e-3, batch_size: int = 64, seed: int = 0) -> dict:
    """A small CNN on the 8x8 digits as images: conv3x3-16, pool, conv3x3-32, pool, dense 64.

    Same configuration as the learning test in tests/test_cnn.py, run longer.
    """
    data = jn.data.load("digits", image=True)
    model = CNN(output_dim=10, channels=(16, 32), dense=(64,))
    result = jn.fit(model, data, jn.optim.create("adam", lr),
                    jn.TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed,
                                   eval_train=False, eval_every=epochs))
    return _emit({"study": "cnn_digits", "epochs": epochs, "lr": lr, "batch_size": batch_size,
                  "num_params": result.num_params,
                  "test_accuracy": result.final["test_accuracy"],
                  "wall_time_s": round(result.wall_time_s, 2)})


def cnn1d_mnist1d(epochs: int = 150, lr: float = 1e-2, batch_size: int = 100,
                  seed: int = 0) -> dict:
    """The MNIST-1D paper's CNN with the dataset's recipe: Adam 1e-2, batch 100, 6,000 steps.

    4,000 training signals / 100 = 40 steps per epoch, so 150 epochs = 6,000 steps.
    The same run from the command line:
    ``jaxnets train --dataset mnist1d --model cnn1d --optimizer adam --lr 1e-2
    --batch-size 100 --epochs 150``. The paper's MLP (two hidden layers of 100, ReLU)
    is run with the same recipe for comparison.
    """
    data = jn.data.load("mnist1d")
    rows = {}
    for name, model in (("cnn1d", CNN1D(output_dim=10)),
                        ("mlp_100_100", jn.models.MLP(hidden=(100, 100), output_dim=10))):
        result = jn.fit(model, data, jn.optim.create("adam", lr),
                        jn.TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed,
                                       eval_train=False, eval_every=10))
        rows[name] = {"num_params": result.num_params, "steps": int(result.state.step),
                      "test_accuracy": result.history[-1]["test_accuracy"],
                      "best_test_accuracy": max(h["test_accuracy"] for h in result.history),
                      "wall_time_s": round(result.wall_time_s, 2),
                      "steps_per_s": round(result.steps_per_s, 1)}
    return _emit({"study": "cnn1d_mnist1d", "epochs": epochs, "lr": lr,
                  "batch_size": batch_size, "runs": rows})


def _jax_step(model, x: np.ndarray, y: np.ndarray) -> Callable[[], object]:
    """One compiled jaxnets training step (Adam), always from the same state."""
    state = jn.create_state(model, jn.optim.create("adam", 1e-3), x)
    step = jax.jit(jn.make_train_step(jn.objective_for("multiclass")))
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "mask": jnp.ones(len(x), jnp.float32)}
    return lambda: jax.block_until_ready(step(state, batch))


def cnn_speed(repeats: int = 15, warmup: int = 3, batch: int = 256) -> dict:
    """Median time of one training step of the benchmark CNN, per implementation, in one run.

    Benchmark CNN: 28x28x1 input, conv3x3-32, ReLU, max pool 2, conv3x3-64, ReLU,
    max pool 2, dense 256, dense 10, softmax cross-entropy, Adam. Every
    configuration is compiled and warmed up first, then timed round-robin
    (``jaxnets.profiling.round_robin_medians``). ``conv_impl="xla"`` is what Flax runs
    (``lax.conv_general_dilated``, ``reduce_window``); "patches" the hand-written kernels
    of ``jaxnets.kernels`` (fused convolution + pooling); "auto" the default. Also times
    CNN1D (MNIST-1D, batch 100) per implementation.
    PyTorch is compared in ``python -m experiments.benchmarks`` (in a worker process,
    so the two runtimes' thread pools do not compete).
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, size=batch).astype(np.int32)
    steps: dict[str, Callable[[], object]] = {}
    for conv_impl in ("xla", "patches", "auto"):
        model = CNN(output_dim=10, channels=(32, 64), kernel_size=3, pool="max",
                    dense=(256,), conv_impl=conv_impl)
        steps[f"jax conv={conv_impl}"] = _jax_step(model, x, y)
    x1 = rng.normal(size=(100, 40)).astype(np.float32)
    y1 = rng.integers(0, 10, size=100).astype(np.int32)
    for conv_impl in ("xla", "patches", "auto"):
        steps[f"cnn1d conv={conv_impl}"] = _jax_step(CNN1D(output_dim=10, conv_impl=conv_impl),
                                                    x1, y1)
    median = round_robin_medians(steps, repeats=repeats, warmup=warmup)
    median_ms = {name: round(1e3 * t, 2) for name, t in median.items()}

    def ratio(a: str, b: str) -> float:
        return round(median_ms[a] / median_ms[b], 2)

    result = {"study": "cnn_speed", "batch": batch, "repeats": repeats,
              "median_step_ms": median_ms,
              "ratio_patches_over_xla": ratio("jax conv=patches", "jax conv=xla"),
              "ratio_flax_default_over_auto": ratio("jax conv=xla", "jax conv=auto"),
              "ratio_cnn1d_patches_over_xla": ratio("cnn1d conv=patches", "cnn1d conv=xla"),
              "ratio_cnn1d_auto_over_xla": ratio("cnn1d conv=auto", "cnn1d conv=xla"),
              "load_average_1min": os.getloadavg()[0]}  # other processes share the CPU
    return _emit(result)


# ---------------------------------------------------------------- RNN / LSTM / GRU


def _bag_of_means(data: jn.data.Dataset) -> jn.data.Dataset:
    """The order-free view of a sequence dataset: each channel's mean over time."""
    return dataclasses.replace(data, x_train=data.x_train.mean(axis=1),
                               x_val=data.x_val.mean(axis=1), x_test=data.x_test.mean(axis=1))


def _gradient_by_lag(model, variables, x: np.ndarray, lags: tuple[int, ...]) -> dict:
    """mean_b ‖∂ŷ_b/∂x_{b,t}‖ at t = T − 1 − lag: how strongly step t still moves the output."""
    def total(inputs):
        return jnp.sum(model.apply(variables, inputs))

    grads = jax.jit(jax.grad(total))(jnp.asarray(x))            # (batch, T, features)
    norms = np.asarray(jnp.linalg.norm(grads, axis=-1).mean(axis=0))
    steps = x.shape[1]
    return {str(lag): float(norms[steps - 1 - lag]) for lag in lags}


def rnn_adding(length: int = 100, epochs: int = 30, lr: float = 3e-3, batch_size: int = 100,
               hidden_size: int = 64, n_train: int = 10000, clip_norm: float = 1.0,
               seed: int = 0) -> dict:
    """The adding problem at T = ``length`` for the three cells and for a bag-of-means MLP.

    Baselines: predicting the mean has MSE 1/6; no function of the per-channel means
    beats 1/6 − 1/(3T). Also reports, at initialization and after training,
    mean_b ‖∂ŷ_b/∂x_{b,t}‖ at several lags T − 1 − t (vanishing gradients). The command
    line has no dataset options, so its closest run uses the default data (T = 30,
    4,000 rows): ``jaxnets train --dataset adding --model lstm --lr 3e-3 --batch-size 100
    --clip-norm 1``.
    """
    from jaxnets.data import sequences

    data = jn.data.load("adding", length=length, n_train=n_train, n_test=2000)
    lags = tuple(sorted({0, 1, 5, 10, length // 2, length - 1}))
    probe = data.x_test[:256]
    config = jn.TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, eval_train=False,
                            eval_every=1)
    rows = {}
    for cell in ("rnn", "lstm", "gru"):
        model = jn.models.get_model(cell, output_dim=1, hidden_size=hidden_size)
        initial = jn.create_state(model, jn.optim.create("adam", lr), data.x_train[:1], seed)
        result = jn.fit(model, data, jn.optim.create("adam", lr, clip_norm=clip_norm), config)
        curve = [h["test_loss"] for h in result.history]
        below = [h["epoch"] for h in result.history if h["test_loss"] < 0.05]
        rows[cell] = {"num_params": result.num_params, "steps": int(result.state.step),
                      "test_mse": curve[-1], "best_test_mse": min(curve),
                      "first_epoch_below_0.05": below[0] if below else None,
                      "grad_by_lag_init": _gradient_by_lag(model, initial.variables(), probe, lags),
                      "grad_by_lag_trained": _gradient_by_lag(model, result.state.variables(),
                                                              probe, lags),
                      "wall_time_s": round(result.wall_time_s, 2),
                      "steps_per_s": round(result.steps_per_s, 1)}
    bag = jn.fit(jn.models.get_model("mlp", output_dim=1, hidden=(64,)), _bag_of_means(data),
                 jn.optim.create("adam", lr), dataclasses.replace(config, eval_every=epochs))
    rows["mlp_bag_of_means"] = {"num_params": bag.num_params, "test_mse": bag.final["test_loss"]}
    return _emit({"study": "rnn_adding", "length": length, "epochs": epochs, "lr": lr,
                  "batch_size": batch_size, "hidden_size": hidden_size, "clip_norm": clip_norm,
                  "n_train": n_train, "baseline_mean_mse": sequences.ADDING_BASELINE_MSE,
                  "bag_of_means_floor_mse": 1 / 6 - 1 / (3 * length), "runs": rows})


def rnn_parity(length: int = 20, min_length: int = 5, epochs: int = 40, lr: float = 3e-3,
               batch_size: int = 100, hidden_size: int = 32, seed: int = 0) -> dict:
    """Parity of ``length`` bits (fixed length) and of ``min_length``..``length`` bits (padded).

    Three variants per cell: fixed length read as floats (one scalar token per step),
    fixed length read through an 8-wide embedding, and variable length through the
    embedding with ``pad_id=0`` (the state after the last valid bit is read; the short
    sequences among them act as a curriculum). Chance accuracy is 0.5. Command-line
    equivalent of the first variant (default data options: 12 bits):
    ``jaxnets train --dataset parity --model gru --lr 3e-3 --batch-size 100``.
    """
    from jaxnets.data import sequences

    config = jn.TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, eval_train=False,
                            eval_every=5)
    tokens = {"embedding": 8, "pad_id": sequences.PAD_ID, "vocab_size": sequences.VOCAB_SIZE}
    rows = {}
    for variant, min_len, options in (("fixed_float", None, {}), ("fixed_embed", None, tokens),
                                      ("variable_embed", min_length, tokens)):
        data = jn.data.load("parity", length=length, min_length=min_len)
        for cell in ("rnn", "lstm", "gru"):
            model = jn.models.get_model(cell, output_dim=1, hidden_size=hidden_size, **options)
            result = jn.fit(model, data, jn.optim.create("adam", lr), config)
            rows[f"{cell}_{variant}"] = {
                "num_params": result.num_params, "steps": int(result.state.step),
                "test_accuracy": result.final["test_accuracy"],
                "best_test_accuracy": max(h["test_accuracy"] for h in result.history),
                "wall_time_s": round(result.wall_time_s, 2)}
    return _emit({"study": "rnn_parity", "length": length, "min_length": min_length,
                  "epochs": epochs, "lr": lr, "batch_size": batch_size,
                  "hidden_size": hidden_size, "runs": rows})


# ---------------------------------------------------------------- Transformer


def _bigram_cross_entropy(train_stream: np.ndarray, test_stream: np.ndarray, vocab_size: int,
                          alpha: float = 0.1) -> float:
    """Test cross-entropy (nats/token) of an add-alpha bigram model fitted on the training stream."""
    counts = np.full((vocab_size, vocab_size), alpha)
    np.add.at(counts, (train_stream[:-1], train_stream[1:]), 1.0)
    log_p = np.log(counts / counts.sum(axis=1, keepdims=True))
    return float(-log_p[test_stream[:-1], test_stream[1:]].mean())


def transformer_lm_grammar(epochs: int = 20, lr: float = 3e-3, batch_size: int = 128,
                           seed: int = 0) -> dict:
    """The registered ``transformer_lm`` (defaults) on ``grammar_lm``, against two baselines.

    Baselines, in nats per token on the test windows: the unigram entropy of the training
    targets (the best context-free model) and an add-0.1 bigram model fitted on the training
    stream (sees one word back, so it cannot carry number agreement across an adjective).
    The same run from the command line, per positional encoding:
    ``jaxnets train --dataset grammar_lm --model transformer_lm --epochs 20 --lr 3e-3
    --model-opt positions=learned``.
    """
    from jaxnets.data import text

    data = jn.data.load("grammar_lm")
    # Windows do not overlap (stride = seq_len): the stream is the rows of x, then the last target.
    train_stream = np.concatenate([data.x_train.ravel().astype(np.int64), data.y_train[-1, -1:]])
    test_stream = np.concatenate([data.x_test.ravel().astype(np.int64), data.y_test[-1, -1:]])
    runs = {}
    for positions in ("learned", "sinusoidal"):
        model = jn.models.get_model("transformer_lm", output_dim=data.output_dim,
                                    positions=positions)
        result = jn.fit(model, data, jn.optim.create("adam", lr),
                        jn.TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed,
                                       eval_every=epochs))
        runs[positions] = {"num_params": result.num_params,
                           "train_loss": round(result.final["train_loss"], 4),
                           "test_loss": round(result.final["test_loss"], 4),
                           "test_accuracy": round(result.final["test_accuracy"], 4),
                           "wall_time_s": round(result.wall_time_s, 2)}
    return _emit({"study": "transformer_lm_grammar", "epochs": epochs, "lr": lr,
                  "batch_size": batch_size, "train_windows": data.num_train,
                  "test_windows": data.num_test, "vocab_size": data.num_classes,
                  "unigram_entropy_train": round(text.unigram_entropy(data.y_train), 4),
                  "bigram_test_cross_entropy": round(
                      _bigram_cross_entropy(train_stream, test_stream, data.num_classes), 4),
                  "runs": runs})


def transformer_reviews(epochs: int = 10, lr: float = 3e-3, batch_size: int = 64,
                        seed: int = 0) -> dict:
    """The registered ``transformer`` (defaults) on ``reviews`` against bag-of-words models.

    Bag-of-words and TF-IDF rows (``jaxnets.data.text``, vocabulary ``REVIEW_VOCAB``, idf of
    the training texts) feed logistic regression (the registered ``logistic``, standardized
    inputs). Test accuracy is reported on all reviews and on those with "but", where the
    label is the polarity of the second clause and the bag of words can be identical for
    both labels. Command line for the Transformer:
    ``jaxnets train --dataset reviews --model transformer --epochs 10 --lr 3e-3 --batch-size 64``.
    """
    from jaxnets.data import text

    data = jn.data.load("reviews")
    vocab = text.REVIEW_VOCAB
    texts = [" ".join(vocab.decode(row[row > 0])) for row in
             np.concatenate([data.x_train, data.x_test])]
    train_texts, test_texts = texts[:data.num_train], texts[data.num_train:]
    but_test = np.array(["but" in t.split() for t in test_texts])
    config = jn.TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, eval_every=epochs)
    objective = jn.objective_for("binary")

    def report(result, x_test) -> dict:
        acc_but = jn.evaluate(result.state, x_test[but_test], data.y_test[but_test], objective)
        acc_one = jn.evaluate(result.state, x_test[~but_test], data.y_test[~but_test], objective)
        return {"num_params": result.num_params,
                "train_accuracy": round(result.final["train_accuracy"], 4),
                "test_accuracy": round(result.final["test_accuracy"], 4),
                "test_accuracy_with_but": round(acc_but["accuracy"], 4),
                "test_accuracy_one_clause": round(acc_one["accuracy"], 4),
                "wall_time_s": round(result.wall_time_s, 2)}

    runs = {}
    model = jn.models.get_model("transformer", output_dim=1)
    runs["transformer"] = report(jn.fit(model, data, jn.optim.create("adam", lr), config),
                                 data.x_test)
    counts_train = text.bag_of_words(train_texts, vocab)
    idf = text.idf_weights(counts_train)
    for name, x_train, x_test in (
            ("bag_of_words_logistic", counts_train, text.bag_of_words(test_texts, vocab)),
            ("tf_idf_logistic", text.tf_idf(train_texts, vocab, idf=idf),
             text.tf_idf(test_texts, vocab, idf=idf))):
        features = dataclasses.replace(data, x_train=x_train, x_test=x_test,
                                       x_val=np.zeros((0, x_train.shape[1]), np.float32))
        features = features.standardize()
        logistic = jn.models.get_model("logistic", output_dim=1)
        runs[name] = report(jn.fit(logistic, features, jn.optim.create("adam", 1e-2),
                                   dataclasses.replace(config, epochs=50, eval_every=50)),
                            features.x_test)
    return _emit({"study": "transformer_reviews", "epochs": epochs, "lr": lr,
                  "batch_size": batch_size, "num_train": data.num_train,
                  "num_test": data.num_test, "test_reviews_with_but": int(but_test.sum()),
                  "runs": runs})


STUDIES: dict[str, Callable[[], dict]] = {
    "cnn_digits": cnn_digits,
    "cnn1d_mnist1d": cnn1d_mnist1d,
    "cnn_speed": cnn_speed,
    "rnn_adding": rnn_adding,
    "rnn_parity": rnn_parity,
    "transformer_lm_grammar": transformer_lm_grammar,
    "transformer_reviews": transformer_reviews,
}


if __name__ == "__main__":
    names = sys.argv[1:]
    unknown = [name for name in names if name not in STUDIES]
    if not names or unknown:
        sys.exit(f"study: got {unknown or names!r}; allowed: {', '.join(STUDIES)}")
    for name in names:
        STUDIES[name]()
