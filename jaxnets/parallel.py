"""Where the training step runs: one device, ``pmap`` data parallelism, or a sharded ``jit``.

This is the only module that knows about devices. ``train.fit`` hands it the pure
step and gets back a runner that places the state and the data, runs one epoch
and returns the state to the host; models, losses and the step itself never
change with the mode.

Modes (``MODES``):

- ``"none"``: one device; the step is ``jit``-compiled (or scanned) as written.
- ``"pmap"``: the state is replicated with a leading device axis; every device
  takes ``B / D`` rows of each global batch of ``B``; inside the step the loss
  sums and counts are ``psum``-ed, gradients summed, batch statistics
  ``pmean``-ed, and each device folds its axis index into the dropout key, so
  the replicas stay identical after every step.
- ``"sharded"``: one program over a 1-D ``Mesh`` (axis ``"data"``, Auto axis
  type): the state is replicated (``PartitionSpec()``), each batch is sharded
  along its rows (``PartitionSpec("data")``), and XLA inserts the collectives.
  This is the path JAX recommends for new code, and the one that spans several
  processes (``jax.distributed``).

Populations (``jaxnets.population``) have their own placement, ``MemberPlacement``: the
member axis of a stacked state is split over a 1-D mesh (axis ``"members"``) and one
``shard_map``-ped program trains each device's members with no communication at all.

Both loops of ``fit`` run in every mode: ``"scan"`` (a whole epoch per compiled
call) and ``"python"`` (one compiled step per batch). The epoch's batch plan is
a pure function of (data key, epoch) computed inside the compiled code.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from jaxnets.epochs import Geometry, carry_run_keys, epoch_functions, reduce_step_sums

MODES = ("none", "pmap", "sharded")
AXIS = "data"
#: The mesh axis a population's members are split over.
MEMBERS = "members"


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"parallel: got {mode!r}; allowed: {', '.join(MODES)}")
    return mode


def check_batch_divisible(batch_size: int, num_devices: int, mode: str) -> None:
    """The global batch must split evenly over the devices (one line error otherwise)."""
    if batch_size % num_devices:
        raise ValueError(f"batch_size: got {batch_size}; allowed: a multiple of the {num_devices} devices "
                         f"used by parallel={mode!r}")


def data_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: all), with an Auto axis.

    Auto (not Explicit, the current ``make_mesh`` default) lets XLA propagate shardings
    through Flax Linen code such as dropout's random bits, which Explicit axes reject.
    """
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(AxisType.Auto,), devices=devices)


class Runner:
    """Runs epochs of a pure step on some devices. Subclasses set the placement."""

    mode = "none"
    num_devices = 1

    def __init__(self, train_step_for: Callable[[str | None], Callable], geometry: Geometry,
                 loop: str, traces: dict[str, int]):
        self.geometry = geometry
        self.loop = loop
        self.traces = traces
        plan, indexed_step, scan_epochs = epoch_functions(
            train_step_for(self.axis_name), geometry, traces, **self.placement())

        def planned_step(state, xs, ys, idx, mask, i):
            # Row i of the epoch's plan is taken inside the compiled step: indexing the
            # plan from Python would dispatch two more computations per step.
            return indexed_step(state, xs, ys, idx[i], mask[i])

        self._plan = self.compile(plan, state_arg=False)
        self._step = self.compile(planned_step)
        self._scan_epochs = self.compile(scan_epochs)

        def sum_steps(step_sums):
            # The per-step sums of an epoch, added up in one call (not one call per key and
            # step); per device under pmap, hence the steps' axis only.
            traces["step_sums"] = traces.get("step_sums", 0) + 1
            return reduce_step_sums({key: jnp.stack([s[key] for s in step_sums]) for key in step_sums[0]}, axis=0)

        self._sum_steps = self.compile(sum_steps, state_arg=False)
        self._step_numbers: list | None = None

    # --- placement hooks (overridden per mode) ---------------------------------------
    axis_name: str | None = None

    def placement(self) -> dict[str, Callable | None]:
        """``epoch_functions``' ``part`` and ``constrain`` for this mode (None: not needed).

        They are plain functions, not bound methods: the compiled functions hold them,
        and the runner holds the compiled functions, so a method would make a reference
        cycle that keeps every finished run's runner alive until the garbage collector runs.
        """
        return {"part": None, "constrain": None}

    def compile(self, fn: Callable, *, state_arg: bool = True) -> Callable:
        return jax.jit(fn, donate_argnums=0 if state_arg else ())

    def put_state(self, state):
        return state

    def put_data(self, array: np.ndarray):
        return jax.device_put(array)

    def get_state(self, state):
        """One copy of the state (for evaluation, checkpoints and the caller)."""
        return state

    def host_sums(self, sums) -> dict[str, Any]:
        """Sums as Python floats (``step_loss``: a list, one per step)."""
        return {key: _to_host(value) for key, value in jax.device_get(sums).items()}

    def compiled_step_text(self, state, xs, ys, data_key) -> str:
        """The compiled program of one training step (epoch 0's first), as XLA's HLO text.

        For reading what a mode compiles to (its collectives, gathers, copies); nothing runs.
        """
        idx, mask = self._plan(self.put_data(data_key), self.put_data(np.int32(0)))
        return self._step.lower(state, xs, ys, idx, mask, self.put_data(np.int32(0))).compile().as_text()

    # --- running ------------------------------------------------------------------------
    def run_epochs(self, state, xs, ys, data_key, first_epoch: int, num_epochs: int | None = None):
        """Epochs first_epoch .. first_epoch + num_epochs − 1; returns the new (placed) state
        and the metric sums of the last of them. The scan loop runs them all in one call.

        ``num_epochs=None`` runs one epoch with a program that has no epoch loop; an int
        (even 1) uses the looped program, whose trip count is a traced value. Keep to one
        of the two within a run and the step compiles once.
        """
        data_key, first = self.put_data(data_key), self.put_data(np.int32(first_epoch))
        if self.loop == "scan":
            count = None if num_epochs is None else self.put_data(np.int32(num_epochs))
            state, sums = self._scan_epochs(state, xs, ys, data_key, first, count)
            return state, self.host_sums(sums)
        if self._step_numbers is None:  # placed once, on first use
            self._step_numbers = [self.put_data(np.int32(i)) for i in range(self.geometry.steps_per_epoch)]
        run_totals = None
        for epoch in range(first_epoch, first_epoch + (num_epochs or 1)):
            idx, mask = self._plan(data_key, self.put_data(np.int32(epoch)))
            step_sums = []
            for i in self._step_numbers:
                state, sums = self._step(state, xs, ys, idx, mask, i)
                step_sums.append(sums)
            totals = self._sum_steps(step_sums)
            run_totals = totals if run_totals is None else carry_run_keys(run_totals, totals)
        return state, self.host_sums(run_totals)


def _to_host(value) -> float | list[float]:
    value = np.asarray(value)
    return float(value) if value.ndim == 0 else value.tolist()


def _device_rows(idx, mask, *, num_devices: int):
    """Under pmap: this device's share of a global batch's rows (its axis index picks them)."""
    rows = idx.shape[-1] // num_devices
    start = jax.lax.axis_index(AXIS) * rows
    return (jax.lax.dynamic_slice_in_dim(idx, start, rows, axis=-1),
            jax.lax.dynamic_slice_in_dim(mask, start, rows, axis=-1))


def _stack_over_devices(tree: Any, num_devices: int, sharding: NamedSharding) -> Any:
    """One copy of each leaf per device, committed the way pmap's own outputs are laid out,
    so the first call and every later one see the same input type (one trace)."""
    def place(leaf):
        if jax.dtypes.issubdtype(jnp.result_type(leaf), jax.dtypes.prng_key):
            data = _stack_over_devices(jax.random.key_data(leaf), num_devices, sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        stacked = np.broadcast_to(np.asarray(jax.device_get(leaf)), (num_devices, *np.shape(leaf)))
        return jax.device_put(stacked, sharding)

    return jax.tree_util.tree_map(place, tree)


class PmapRunner(Runner):
    """``jax.pmap`` over the local devices; state carries a leading device axis."""

    mode = "pmap"
    axis_name = AXIS

    def __init__(self, *args, devices: Sequence[jax.Device] | None = None, **kwargs):
        self.devices = list(jax.local_devices() if devices is None else devices)
        self.num_devices = len(self.devices)
        # pmap (built on shard_map) lays out its per-device values like this.
        self.stacked = NamedSharding(data_mesh(self.devices), PartitionSpec(AXIS))
        super().__init__(*args, **kwargs)

    def placement(self) -> dict[str, Callable | None]:
        return {"part": functools.partial(_device_rows, num_devices=self.num_devices), "constrain": None}

    def compile(self, fn: Callable, *, state_arg: bool = True) -> Callable:
        if not state_arg:  # the batch plan is the same everywhere: compute it once
            return jax.jit(fn)
        # state is per-device (axis 0); data, key, epoch and plan rows are shared.
        others = fn.__code__.co_argcount - 1
        return jax.pmap(fn, axis_name=AXIS, in_axes=(0,) + (None,) * others, devices=self.devices,
                        donate_argnums=0)

    def put_state(self, state):
        return _stack_over_devices(state, self.num_devices, self.stacked)

    def put_data(self, array):
        mesh = data_mesh(self.devices)
        return jax.device_put(array, NamedSharding(mesh, PartitionSpec()))

    def get_state(self, state):
        return jax.tree_util.tree_map(lambda leaf: leaf[0], state)

    def host_sums(self, sums) -> dict[str, Any]:
        # Sums were psum-ed inside the step: every device holds the global value.
        return {key: _to_host(value[0]) for key, value in jax.device_get(sums).items()}


class ShardedRunner(Runner):
    """``jax.jit`` with the batch sharded over a 1-D mesh and the state replicated."""

    mode = "sharded"

    def __init__(self, *args, devices: Sequence[jax.Device] | None = None, **kwargs):
        self.mesh = data_mesh(devices)
        self.num_devices = self.mesh.size
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.rows = NamedSharding(self.mesh, PartitionSpec(AXIS))
        super().__init__(*args, **kwargs)

    def placement(self) -> dict[str, Callable | None]:
        return {"part": None, "constrain": functools.partial(jax.lax.with_sharding_constraint, shardings=self.rows)}

    def compile(self, fn: Callable, *, state_arg: bool = True) -> Callable:
        if not state_arg:
            return jax.jit(fn, out_shardings=self.replicated)
        return jax.jit(fn, donate_argnums=0, out_shardings=self.replicated)

    def put_state(self, state):
        return replicate_global(state, self.replicated)

    def put_data(self, array):
        return replicate_global(array, self.replicated)

    def get_state(self, state):
        return local_copy(state)

    def host_sums(self, sums) -> dict[str, float]:
        return super().host_sums(local_copy(sums))


def local_copy(tree: Any) -> Any:
    """A replicated global array's copy on this process's first device.

    Under several processes a replicated array is not fully addressable, so it
    cannot be fetched or fed to a process-local computation; any one local shard
    holds the whole value.
    """
    def one(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return leaf.addressable_data(0)
        return leaf

    return jax.tree_util.tree_map(one, tree)


def replicate_global(tree: Any, sharding: NamedSharding) -> Any:
    """Place identical host values on every device of ``sharding``'s mesh.

    Works across processes: each process supplies its own (identical) copy for its
    local devices, which is what ``jax.make_array_from_callback`` expects.
    """
    def place(leaf):
        if jax.dtypes.issubdtype(jnp.result_type(leaf), jax.dtypes.prng_key):
            impl = jax.random.key_impl(leaf)
            data = replicate_global(jax.random.key_data(leaf), sharding)
            return jax.random.wrap_key_data(data, impl=impl)
        host = np.asarray(jax.device_get(leaf))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(place, tree)


class MemberPlacement:
    """A population's members split evenly over ``devices`` (a 1-D mesh, axis ``"members"``).

    P members on D devices take ⌈P/D⌉ each: ``padded(P)`` members are trained (the
    caller pads with copies of real members and drops them from its results). Every
    per-member argument is split along its leading axis, the shared ones (data, epoch)
    replicated, and ``compile`` wraps a function of one device's members in
    ``shard_map``: one program, each device training its own members, no collectives.

    >>> placement = MemberPlacement(jax.devices()[:1])
    >>> placement.num_devices, placement.padded(3)
    (1, 3)
    """

    def __init__(self, devices: Sequence[jax.Device]):
        self.devices = list(devices)
        self.num_devices = len(self.devices)
        self.mesh = jax.make_mesh((self.num_devices,), (MEMBERS,), axis_types=(AxisType.Auto,),
                                  devices=self.devices)
        self.split = NamedSharding(self.mesh, PartitionSpec(MEMBERS))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    def padded(self, num_members: int) -> int:
        """The member count rounded up to a multiple of the devices."""
        return -(-num_members // self.num_devices) * self.num_devices

    def put_members(self, tree: Any) -> Any:
        """Split every leaf's leading (member) axis over the devices."""
        return jax.device_put(tree, self.split)

    def put_shared(self, tree: Any) -> Any:
        """One copy on every device."""
        return jax.device_put(tree, self.replicated)

    def compile(self, fn: Callable, per_member: Sequence[bool], *, donate_first: bool = True) -> Callable:
        """``jit(shard_map(fn))``: argument i is split by member if ``per_member[i]``, else
        replicated; every output is split by member. The first argument (the state) is
        donated: its buffers are reused for the new state."""
        specs = tuple(PartitionSpec(MEMBERS) if split else PartitionSpec() for split in per_member)
        # check_vma=False: the per-member body has no collectives to check, and Flax's
        # random bits would otherwise need explicit varying-axis annotations.
        mapped = jax.shard_map(fn, mesh=self.mesh, in_specs=specs, out_specs=PartitionSpec(MEMBERS),
                               check_vma=False)
        return jax.jit(mapped, donate_argnums=0 if donate_first else ())


def make_runner(mode: str, train_step_for: Callable[[str | None], Callable], geometry: Geometry, *,
                loop: str, traces: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Runner:
    """The runner for ``mode`` (see ``MODES``), after checking the batch splits over the devices.

    Args:
      mode: "none", "pmap" or "sharded".
      train_step_for: ``axis_name -> train_step``; pmap needs the step's collectives
        over its axis, the other modes a step without any.
      geometry: the epoch's batch layout.
      loop: "scan" or "python".
      traces: a dict the compiled functions count their traces in.
      devices: the devices to use (default: all local ones for pmap, all for sharded).
    """
    check_mode(mode)
    if mode == "none":
        return Runner(train_step_for, geometry, loop, traces)
    cls = PmapRunner if mode == "pmap" else ShardedRunner
    num_devices = len(devices) if devices is not None else (
        jax.local_device_count() if mode == "pmap" else jax.device_count())
    check_batch_divisible(geometry.batch_size, num_devices, mode)
    return cls(train_step_for, geometry, loop, traces, devices=devices)


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int, *,
                           timeout_s: int = 120) -> None:
    """Join a multi-process run (one process per host, or several on one machine).

    Call before any other JAX call in the process. Afterwards ``jax.devices()``
    lists every process's devices and ``TrainConfig(parallel="sharded")`` trains
    one model over all of them; each process must load the same data and config.
    On CPUs the collectives go through gloo (JAX's default).
    """
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id: got {process_id}; allowed: 0..{num_processes - 1}")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=timeout_s)


def device_summary() -> dict[str, Any]:
    """Backend, device kinds and counts, and process layout (for run summaries)."""
    devices = jax.devices()
    return {"backend": jax.default_backend(), "device_kind": devices[0].device_kind,
            "device_count": len(devices), "local_device_count": jax.local_device_count(),
            "process_count": jax.process_count(), "process_index": jax.process_index()}


__all__ = ["MODES", "AXIS", "MEMBERS", "MemberPlacement", "Runner", "PmapRunner", "ShardedRunner", "make_runner",
           "data_mesh", "replicate_global", "local_copy", "initialize_distributed", "check_batch_divisible", "check_mode", "device_summary"]
