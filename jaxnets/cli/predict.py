"""``jaxnets predict``: outputs of a saved model (``jaxnets train --out DIR`` writes DIR/model)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from jaxnets.cli import options as opt
from jaxnets.cli.options import UsageError
from jaxnets.inference import load_model, predict
from jaxnets.io import atomic_write_bytes

SUFFIXES = (".npy", ".csv")


def add_predict_parser(sub):
    parser = sub.add_parser("predict", help="predict with a saved model: --model-dir DIR/model --input X.npy --out P.npy")
    parser.add_argument("--model-dir", required=True, help="a directory written by `jaxnets train --out` (its model/)")
    parser.add_argument("--input", required=True, help="inputs, one row per example: .npy, or .csv of numbers")
    parser.add_argument("--out", required=True, help="where the predictions go: .npy or .csv")
    parser.add_argument("--batch-size", type=opt.int_at_least("--batch-size", 1), default=1024,
                        help="rows per compiled call")
    return parser


def read_inputs(path: Path) -> np.ndarray:
    if path.suffix not in SUFFIXES:
        raise UsageError(f"--input: got {str(path)!r}; allowed: a .npy or .csv file")
    if not path.is_file():
        raise UsageError(f"--input: got {str(path)!r}, which does not exist; allowed: an existing file")
    try:
        x = np.load(path, allow_pickle=False) if path.suffix == ".npy" else np.loadtxt(path, delimiter=",", ndmin=2)
    except (ValueError, OSError, EOFError) as error:
        raise UsageError(f"--input: got {str(path)!r}, which is not a numeric array ({type(error).__name__}); "
                         "allowed: a .npy array or a .csv of numbers") from None
    if not np.issubdtype(np.asarray(x).dtype, np.number):
        raise UsageError(f"--input: got dtype {x.dtype}; allowed: numbers")
    return np.asarray(x, np.float32)


def run_predict(args) -> int:
    out = Path(args.out)
    if out.suffix not in SUFFIXES:
        raise UsageError(f"--out: got {args.out!r}; allowed: a .npy or .csv file")
    if not out.parent.is_dir():
        raise UsageError(f"--out: got {args.out!r}, whose folder does not exist; allowed: a file in an existing folder")
    try:
        saved = load_model(args.model_dir)
    except ValueError as error:
        raise UsageError(f"--model-dir: {error}") from None
    x = read_inputs(Path(args.input))
    feature_shape = tuple(saved.spec["feature_shape"])
    if x.shape[1:] != feature_shape:
        raise UsageError(f"--input: got rows of shape {x.shape[1:]}; allowed: {feature_shape} (the model's "
                         "feature shape)")
    outputs = predict(saved, x, batch_size=args.batch_size)
    buffer = io.BytesIO()
    if out.suffix == ".npy":
        np.save(buffer, outputs)
    else:
        np.savetxt(buffer, outputs.reshape(len(outputs), -1), delimiter=",", fmt="%.9g")
    atomic_write_bytes(out, buffer.getvalue())
    print(f"wrote {len(outputs)} predictions of shape {outputs.shape[1:]} to {out}")
    return 0
