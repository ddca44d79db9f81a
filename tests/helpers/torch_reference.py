"""PyTorch's documented AdamW algorithm in NumPy float64 (no jax, no torch imported).

Written from the algorithm box of ``torch.optim.AdamW`` (amsgrad=False,
maximize=False), with t = 1, 2, ... counting steps:

    θ ← θ − γ·λ·θ                       (decoupled decay, before the Adam step)
    m ← β₁·m + (1 − β₁)·g ;  v ← β₂·v + (1 − β₂)·g²
    m̂ = m/(1 − β₁ᵗ) ;  v̂ = v/(1 − β₂ᵗ)
    θ ← θ − γ·m̂/(√v̂ + ε)                (ε outside the root)

g is the gradient at the θ the step started from. Used by tests/test_optim.py and,
in a separate environment that has torch, to check this reference against torch
itself.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

#: torch.optim.AdamW's defaults (lr is always given here).
TORCH_ADAMW_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}


def torch_adamw_trajectory(
    theta0: list[np.ndarray],
    grad: Callable[[list[np.ndarray]], list[np.ndarray]],
    lr: float,
    steps: int,
    *,
    betas: tuple[float, float] = TORCH_ADAMW_DEFAULTS["betas"],
    eps: float = TORCH_ADAMW_DEFAULTS["eps"],
    weight_decay: float = TORCH_ADAMW_DEFAULTS["weight_decay"],
) -> list[list[np.ndarray]]:
    """The parameters after each of ``steps`` AdamW steps.

    Args:
      theta0: the starting parameters, a list of float64 arrays (one per leaf).
      grad: ``theta -> list of gradients`` (same shapes), evaluated at the θ the
        step starts from.
      lr, betas, eps, weight_decay: γ, (β₁, β₂), ε, λ as in torch.optim.AdamW.
      steps: the number of steps.

    Returns:
      ``steps`` lists of arrays: θ after step 1, 2, ...
    """
    b1, b2 = betas
    theta = [np.array(p, dtype=np.float64) for p in theta0]
    m = [np.zeros_like(p) for p in theta]
    v = [np.zeros_like(p) for p in theta]
    out = []
    for t in range(1, steps + 1):
        g = [np.asarray(x, dtype=np.float64) for x in grad(theta)]
        for i in range(len(theta)):
            theta[i] = theta[i] - lr * weight_decay * theta[i]
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            m_hat = m[i] / (1 - b1**t)
            v_hat = v[i] / (1 - b2**t)
            theta[i] = theta[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append([p.copy() for p in theta])
    return out


def max_relative_deviation(got: list[list[np.ndarray]], want: list[list[np.ndarray]]) -> float:
    """max over steps and entries of |got − want| / max(|want|, 1e-12)."""
    worst = 0.0
    for step_got, step_want in zip(got, want, strict=True):
        for a, b in zip(step_got, step_want, strict=True):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12))))
    return worst
