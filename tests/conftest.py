"""Test-wide settings.

Several CPU devices are simulated so that every multi-device path runs in CI on a
CPU-only machine. The flag must be set before jax is imported anywhere.
"""
import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=4"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Note: strict dtype promotion is not switched on globally because optax's own
# bias correction (float ** int under inject_hyperparams) fails under it.
