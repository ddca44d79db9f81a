"""FLOP counts from XLA's cost analysis, against the closed form of a dense layer."""
import jax.numpy as jnp

import jaxnets as jn
from jaxnets.profiling import compiled_flops, matmul_peak_gflops, median_time


def test_matmul_flops_are_2mnk():
    assert compiled_flops(lambda a, b: a @ b, jnp.ones((16, 8)), jnp.ones((8, 4))) == 2 * 16 * 8 * 4


def test_mlp_forward_flops_cover_the_dense_products():
    model = jn.models.MLP(hidden=(32,), output_dim=10)
    x = jnp.ones((64, 20))
    variables = model.init({"params": jn.train.run_keys(0).init}, x)
    flops = compiled_flops(lambda v, x: model.apply(v, x), variables, x)
    dense = 2 * 64 * (20 * 32 + 32 * 10)
    assert dense <= flops <= 1.2 * dense  # plus bias adds and the ReLU


def test_median_time_and_peak_are_positive():
    assert median_time(lambda: None, repeats=3) >= 0
    assert matmul_peak_gflops(size=128, repeats=3) > 0
