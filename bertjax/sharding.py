"""Logical axis names, the rules that map them onto mesh axes, and sharded state creation.

Every parameter and every activation at a block boundary carries logical axis
names from the fixed vocabulary below. A config's `sharding.rules` maps them onto
the mesh axes `data`, `fsdp`, `tensor`, so data parallelism, FSDP and tensor
parallelism are config switches rather than code paths.

Config keys this module reads (wired by the training config):

  config.mesh = {"data": -1, "fsdp": 1, "tensor": 1}
      Mesh axis sizes; at most one is -1 (the remaining devices). Missing axes are 1.
  config.sharding.rules = [["batch", ["data", "fsdp"]], ["embed", "fsdp"], ...]
      Ordered [logical axis, mesh axes] pairs; mesh axes are a name, a list of names
      or None (replicated). Empty or None means DEFAULT_RULES.

Typical use (the resume order and the step live in train.py):

  mesh = make_mesh(config.mesh)
  axis_rules = rules(config.sharding.rules)
  state, state_shardings = create_sharded(init_fn, None, mesh, axis_rules)
  with activation_rules_context(mesh, axis_rules):
      step = jax.jit(train_step, in_shardings=(state_shardings, batch_sharding(mesh, 2)), ...)
      state, metrics = step(state, batch)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec

# The whole vocabulary of logical axes. Add a name only with a reason.
BATCH = "batch"  # examples in a batch
LENGTH = "length"  # token positions
EMBED = "embed"  # residual stream / embedding features
HEADS = "heads"  # attention heads
KV = "kv"  # features inside one head
MLP = "mlp"  # FFN intermediate features
VOCAB = "vocab"  # vocabulary rows (word embeddings, MLM bias)
LAYERS = "layers"  # stacked layers under nn.scan; never sharded
POSITIONS = "positions"  # rows of position / token-type tables; small, replicated

LOGICAL_AXES = (BATCH, LENGTH, EMBED, HEADS, KV, MLP, VOCAB, LAYERS, POSITIONS)
MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]
AnyMesh = Mesh | AbstractMesh  # shardings can be computed for an AbstractMesh, without devices

# Default rules: batch over data and fsdp; parameters' embed axis over fsdp; heads, mlp
# and vocab over tensor. With fsdp=tensor=1 this is plain data parallelism. Order is
# priority: a mesh axis already taken by an earlier rule is not used again in one array,
# so activations [batch, length, embed] keep embed replicated (batch holds fsdp).
DEFAULT_RULES: Rules = (
    (BATCH, ("data", "fsdp")),
    (LENGTH, None),
    (EMBED, "fsdp"),
    (HEADS, "tensor"),
    (KV, None),
    (MLP, "tensor"),
    (VOCAB, "tensor"),
    (LAYERS, None),
    (POSITIONS, None),
)


# --- mesh ----------------------------------------------------------------------------


def mesh_shape(shape: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """{"data": -1, "fsdp": 2, ...} -> sizes in MESH_AXES order, with -1 resolved.

    Raises a one-line ValueError naming the offending axis.
    """
    shape = dict(shape.to_dict() if hasattr(shape, "to_dict") else shape)
    unknown = sorted(set(shape) - set(MESH_AXES))
    if unknown:
        raise ValueError(
            f"mesh: unknown axis {', '.join(map(repr, unknown))}; known: {', '.join(MESH_AXES)}"
        )
    sizes = {}
    for name in MESH_AXES:
        size = shape.get(name, 1)
        if (
            isinstance(size, bool)
            or not isinstance(size, (int, np.integer))
            or (size < 1 and size != -1)
        ):
            raise ValueError(f"mesh.{name}={size!r}: must be a positive integer or -1")
        sizes[name] = int(size)
    free = [name for name, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ValueError(f"mesh: at most one axis may be -1, got {', '.join(free)}")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(
                f"mesh.{free[0]}=-1: {num_devices} devices are not divisible by "
                f"the other axes' product {fixed}"
            )
        sizes[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        name = next((n for n in reversed(MESH_AXES) if sizes[n] != 1), MESH_AXES[0])
        raise ValueError(
            f"mesh.{name}={sizes[name]}: the mesh {sizes} has {fixed} devices "
            f"but there are {num_devices}"
        )
    return tuple(sizes[name] for name in MESH_AXES)


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `Mesh` with axes ("data", "fsdp", "tensor") of the sizes in `shape`.

    shape: {"data": -1, "fsdp": 1, "tensor": 1}; at most one -1, missing axes are 1, and
      the product must equal the number of devices.
    devices: default all devices of all processes.

    Devices are ordered by (process, id) off TPU, so each process holds a contiguous
    block of the data axis (its share of the global batch) whenever its local devices
    cover whole fsdp x tensor blocks; on TPU `jax.make_mesh` follows the physical
    topology, and several slices are laid out along `data` over DCN. Axis types are
    Auto, so `with_sharding_constraint` hints and GSPMD propagation apply.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(shape, len(devices))
    auto = (AxisType.Auto,) * len(MESH_AXES)
    if devices[0].platform == "tpu":
        slices = len({getattr(d, "slice_index", 0) for d in devices})
        if slices > 1:
            if sizes[0] % slices:
                raise ValueError(
                    f"mesh.data={sizes[0]}: must be a multiple of the {slices} TPU slices"
                )
            ici = (sizes[0] // slices, *sizes[1:])
            dcn = (slices,) + (1,) * (len(sizes) - 1)
            grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
            return Mesh(grid, MESH_AXES, axis_types=auto)
        return jax.make_mesh(sizes, MESH_AXES, axis_types=auto, devices=devices)
    devices.sort(key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices, dtype=object).reshape(sizes), MESH_AXES, axis_types=auto)


# --- rules ---------------------------------------------------------------------------


def rules(config_rules: Sequence[Sequence[Any]] | None = None) -> Rules:
    """Validated rules as a tuple of (logical axis, mesh axes) pairs; None -> DEFAULT_RULES.

    config_rules: e.g. [["batch", ["data", "fsdp"]], ["embed", "fsdp"], ["kv", None]]
      (a config list). Unknown logical or mesh axis names raise a ValueError naming them.
    """
    if config_rules is None or len(config_rules) == 0:
        return DEFAULT_RULES
    out = []
    for pair in config_rules:
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"sharding.rules: {pair!r} is not a [logical axis, mesh axes] pair")
        logical, axes = pair
        if logical not in LOGICAL_AXES:
            raise ValueError(
                f"sharding.rules: unknown logical axis {logical!r}; "
                f"known: {', '.join(LOGICAL_AXES)}"
            )
        if isinstance(axes, str):
            axes = (axes,)
        elif axes is not None:
            axes = tuple(axes)
        for name in axes or ():
            if name not in MESH_AXES:
                raise ValueError(
                    f"sharding.rules: unknown mesh axis {name!r} for {logical!r}; "
                    f"known: {', '.join(MESH_AXES)}"
                )
        if axes and len(set(axes)) != len(axes):
            raise ValueError(f"sharding.rules: {logical!r} names a mesh axis twice: {axes}")
        if not axes:
            axes = None
        elif len(axes) == 1:
            axes = axes[0]
        out.append((logical, axes))
    return tuple(out)


def _axes_tuple(axes: MeshAxes) -> tuple[str, ...]:
    return () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)


def logical_spec(
    names: Sequence[str | None],
    shape: Sequence[int] | None = None,
    mesh: AnyMesh | None = None,
    rules: Rules | None = None,
) -> PartitionSpec:
    """Logical axis names of one array -> a PartitionSpec over mesh axes.

    Rules are applied in order (as in Flax): a rule assigns its mesh axes to the first
    still-unassigned dimension carrying its logical name, unless one of those mesh axes is
    already used by the array. Unlike Flax, a name may occur twice (e.g. [embed, embed]
    kernels): the first occurrence is sharded, the second stays replicated unless a later
    rule for the same name has free mesh axes.

    Divisibility guard (when `shape` and `mesh` are given): a dimension whose size is not
    divisible by its mesh axes' total size is sharded over the longest prefix of those
    axes that divides it, and replicated when none does (e.g. vocab 30522 over tensor=4).
    So any preset runs on any mesh, at the cost of replicating such dimensions.
    """
    return _resolve(names, shape, mesh, _checked(rules))


def _resolve(
    names: Sequence[str | None],
    shape: Sequence[int] | None,
    mesh: AnyMesh | None,
    axis_rules: Sequence[tuple[str, MeshAxes]],
) -> PartitionSpec:
    spec: list[MeshAxes] = [None] * len(names)
    assigned = [False] * len(names)
    used: set[str] = set()
    for logical, axes in axis_rules:
        for dim, name in enumerate(names):
            if name != logical or assigned[dim]:
                continue
            chosen = _axes_tuple(axes)
            if used & set(chosen):
                break  # this rule's mesh axes are taken; a later rule may still apply
            if shape is not None and mesh is not None:
                while chosen and shape[dim] % math.prod(mesh.shape[a] for a in chosen):
                    chosen = chosen[:-1]
                if axes is not None and not chosen:
                    continue  # nothing divides: try a repeat of the name, then later rules
            assigned[dim] = True
            used.update(chosen)
            spec[dim] = None if not chosen else chosen[0] if len(chosen) == 1 else chosen
            break
    return PartitionSpec(*spec)


def _checked(axis_rules: Sequence[Sequence[Any]] | None) -> Rules:
    return rules(axis_rules)


# --- shardings -----------------------------------------------------------------------


def _is_box(x: Any) -> bool:
    return isinstance(x, nn.Partitioned)


def _path_keys(path: tuple) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def param_shardings(abstract: Any, mesh: AnyMesh, rules: Rules | None = None) -> Any:
    """A pytree of boxed (`nn.Partitioned`) abstract values -> NamedShardings.

    abstract: e.g. `jax.eval_shape(init_fn)`; boxes may hold ShapeDtypeStructs or arrays.
    Returns the tree with every box replaced by a NamedSharding, i.e. the structure of
    `nn.unbox(abstract)`. Boxed leaves follow `logical_spec`, including its divisibility
    guard (non-divisible dimensions fall back to replicated). Unboxed leaves of rank >= 1
    whose key path ends with a boxed leaf's path and whose shape matches it mirror that
    leaf's sharding (optimizer moments created from unboxed params); all other unboxed
    leaves (step counters, scalars, RNG keys) are replicated. A box's own `rules` (Flax's
    LogicallyPartitioned.rules) take precedence; a plain `nn.Partitioned` (from
    `nn.with_partitioning`) names mesh axes directly and gets the same divisibility guard.
    """
    axis_rules = _checked(rules)
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract, is_leaf=_is_box)
    by_suffix: dict[tuple[str, ...], set[tuple[tuple[int, ...], PartitionSpec]]] = {}
    out = []
    for path, leaf in flat:
        if not _is_box(leaf):
            out.append(None)
            continue
        shape = tuple(leaf.value.shape)
        spec = _box_spec(leaf, shape, mesh, axis_rules)
        out.append(NamedSharding(mesh, spec))
        keys = _path_keys(path)
        for start in range(len(keys)):
            by_suffix.setdefault(keys[start:], set()).add((shape, spec))
    for i, (path, leaf) in enumerate(flat):
        if out[i] is None:
            out[i] = NamedSharding(mesh, _mirrored_spec(path, leaf, by_suffix))
    return jax.tree_util.tree_unflatten(treedef, out)


def _box_spec(
    box: nn.Partitioned, shape: tuple[int, ...], mesh: AnyMesh, axis_rules: Rules
) -> PartitionSpec:
    if isinstance(box, nn.LogicallyPartitioned):
        box_rules = axis_rules if box.rules is None else _checked(box.rules)
        return logical_spec(box.names, shape, mesh, box_rules)
    # Mesh axis names already: an identity rule per dimension, so the guard applies.
    identity = tuple((f"#{dim}", axes) for dim, axes in enumerate(box.names))
    return _resolve([f"#{dim}" for dim in range(len(shape))], shape, mesh, identity)


def _mirrored_spec(path: tuple, leaf: Any, by_suffix: Mapping) -> PartitionSpec:
    shape = tuple(getattr(leaf, "shape", ()))
    if not shape:
        return PartitionSpec()
    keys = _path_keys(path)
    for start in range(len(keys)):
        matches = {spec for s, spec in by_suffix.get(keys[start:], ()) if s == shape}
        if len(matches) == 1:
            return next(iter(matches))
        if len(matches) > 1:
            break  # ambiguous: a shorter suffix would only be more so
    return PartitionSpec()


def batch_sharding(mesh: AnyMesh, ndim: int, rules: Rules | None = None) -> NamedSharding:
    """Inputs [batch, ...] of rank `ndim`: batch over the rule for "batch" (default
    ("data", "fsdp")), the other dimensions replicated. The global batch must be divisible
    by the product of those axes' sizes."""
    return NamedSharding(mesh, logical_spec((BATCH,) + (None,) * (ndim - 1), rules=rules))


def replicated(mesh: AnyMesh) -> NamedSharding:
    """Every device holds the whole value (scalars, step counters, RNG keys)."""
    return NamedSharding(mesh, PartitionSpec())


# --- sharded state creation ----------------------------------------------------------


def abstract_state(
    init_fn: Callable[..., Any],
    mesh: AnyMesh,
    rules: Rules | None = None,
    *,
    abstract: Any = None,
    args: tuple = (),
) -> tuple[Any, Any]:
    """-> (unboxed ShapeDtypeStructs carrying their shardings, the NamedSharding tree).

    The first is a restore target in which every leaf, scalars included, has an explicit
    NamedSharding (Orbax restores onto any mesh from it). Nothing is computed on devices.
    """
    if abstract is None:
        abstract = jax.eval_shape(init_fn, *args)
    shardings = param_shardings(abstract, mesh, rules)
    target = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        nn.unbox(abstract),
        shardings,
    )
    return target, shardings


def create_sharded(
    init_fn: Callable[..., Any],
    abstract: Any,
    mesh: Mesh,
    rules: Rules | None = None,
    *,
    args: tuple = (),
) -> tuple[Any, Any]:
    """Builds the pytree `init_fn(*args)` returns directly in its sharded layout.

    "State is never built on one device": `jax.eval_shape(init_fn)` gives the boxed
    abstract tree (pass it as `abstract` if you already have it, else None), its logical
    names give NamedShardings (`param_shardings`), and `jax.jit(init_fn,
    out_shardings=...)` materialises every leaf only as its shards.

    init_fn may return any pytree: model params boxed by `nn.with_logical_partitioning`,
    optax states built from those boxed params (their moments inherit the boxes, as optax
    maps over the tree), counters. Returns (state with plain arrays, matching shardings).
    Nothing is replicated onto one device first: each device computes only its shards,
    and the values do not depend on the mesh (JAX's partitionable threefry).
    """
    if abstract is None:
        abstract = jax.eval_shape(init_fn, *args)
    shardings = param_shardings(abstract, mesh, rules)
    init = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)
    return init(*args), shardings


# --- activations ---------------------------------------------------------------------


@contextlib.contextmanager
def activation_rules_context(mesh: Mesh, rules: Rules | None = None) -> Iterator[None]:
    """Makes `nn.with_logical_constraint` in the models bind to `mesh` under `rules`.

    Trace (first call of) the jitted step inside it; outside it the constraints are no-ops.
    Activations at block boundaries ([batch, length, embed]) then get sharding constraints
    (by DEFAULT_RULES: batch over data x fsdp, the rest replicated).

    Inside the context, unboxing a parameter (`nn.LogicallyPartitioned.unbox`) applies no
    constraint by default. Parameters are placed by the step's in_shardings already, and
    Flax's constraint at unbox breaks two things here: DenseGeneral unboxes its kernel
    before reshaping it to [embed, heads, kv] (rank mismatch, flax issue #3676; it runs
    even in `apply`, through Flax's parameter shape check), and [embed, embed] kernels
    repeat a logical name, which Flax's rule resolution rejects at init. The switch is a
    class attribute, process-wide while the context is open (hence not thread-safe), and
    is undone on exit.
    """
    previous = nn.LogicallyPartitioned.unbox
    original = _FLAX_UNBOX

    def unbox(self: Any, apply_constraint: bool = False) -> Any:
        return original(self, apply_constraint)

    nn.LogicallyPartitioned.unbox = unbox
    try:
        with jax.set_mesh(mesh), nn.logical_axis_rules(_checked(rules)):
            yield
    finally:
        nn.LogicallyPartitioned.unbox = previous


_FLAX_UNBOX = nn.LogicallyPartitioned.unbox
