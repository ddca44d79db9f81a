"""``jaxnets list``: everything that can be named on the command line, with defaults."""
from __future__ import annotations

from jaxnets import data, losses, models, optim


def run_list() -> int:
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
