"""Meshes, axis rules, parameter shardings and sharded state creation (bertjax.sharding).

The test process has one CPU device. Multi-device checks run this file as a script in
subprocesses, whose XLA_FLAGS are set before JAX starts: one process with 8 simulated
devices (`eight`), and two processes on 127.0.0.1 with 4 devices each (`process`).
Each writes its findings to a JSON file that the tests below assert on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import clilib
import flax.linen as nn
import jax
import jax.numpy as jnp
import modellib
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, AxisType, PartitionSpec

from bertjax import sharding as sh
from bertjax.models import ModelConfig, build

TINY = dict(
    vocab_size=64,
    hidden_size=16,
    num_layers=1,
    num_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
)
TOL = 1e-5


def tiny(**kw) -> ModelConfig:
    return modellib.tiny("bert", TINY, **kw)


def init_fn(model: nn.Module):
    """Zero-argument init returning boxed params, as train.py hands to create_sharded."""
    return lambda: model.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))["params"]


def forward(model: nn.Module):
    return lambda params, ids: model.apply({"params": params}, ids)[0]["mlm"]  # [b, l, vocab]


def abstract_mesh(data: int, fsdp: int, tensor: int) -> AbstractMesh:
    return AbstractMesh((data, fsdp, tensor), sh.MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def spec_of(tree, *path: str) -> PartitionSpec:
    for key in path:
        tree = tree[key]
    return tree.spec


# --- mesh shapes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,devices,want",
    [
        ({"data": -1, "fsdp": 1, "tensor": 1}, 8, (8, 1, 1)),
        ({"data": -1, "fsdp": 2, "tensor": 2}, 8, (2, 2, 2)),
        ({"data": 1, "fsdp": -1, "tensor": 2}, 8, (1, 4, 2)),
        ({"data": -1}, 1, (1, 1, 1)),
        ({"tensor": 4, "data": 2}, 8, (2, 1, 4)),
    ],
)
def test_mesh_shape_resolves_minus_one(shape, devices, want):
    assert sh.mesh_shape(shape, devices) == want


@pytest.mark.parametrize(
    "shape,devices,needle",
    [
        ({"data": -1, "fsdp": -1}, 8, "at most one axis may be -1"),
        ({"data": -1, "fsdp": 3}, 8, "mesh.data=-1"),
        ({"data": 2, "fsdp": 2, "tensor": 1}, 8, "mesh.fsdp=2"),
        ({"data": 1, "fsdp": 1, "tensor": 16}, 8, "mesh.tensor=16"),
        ({"data": 0}, 8, "mesh.data=0"),
        ({"data": 2.0}, 2, "mesh.data=2.0"),
        ({"model": 2}, 2, "unknown axis 'model'"),
    ],
)
def test_mesh_shape_errors_name_the_axis(shape, devices, needle):
    with pytest.raises(ValueError, match=needle) as err:
        sh.mesh_shape(shape, devices)
    assert "\n" not in str(err.value)


def test_make_mesh_on_one_device_and_config_dicts():
    ml_collections = pytest.importorskip("ml_collections")
    mesh = sh.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1}))
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    assert mesh.axis_types == (AxisType.Auto,) * 3
    with pytest.raises(ValueError, match="mesh.data=2"):
        sh.make_mesh({"data": 2})


# --- rules ---------------------------------------------------------------------------


def test_rules_default_and_config_lists():
    assert sh.rules() == sh.DEFAULT_RULES
    assert sh.rules(sh.DEFAULT_RULES) == sh.DEFAULT_RULES
    assert sh.rules([]) == sh.DEFAULT_RULES
    got = sh.rules(
        [
            ["batch", ["data", "fsdp"]],
            ["embed", ["fsdp"]],
            ["kv", None],
            ["mlp", []],
            ["vocab", "tensor"],
        ]
    )
    assert got == (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("kv", None),
        ("mlp", None),
        ("vocab", "tensor"),
    )


@pytest.mark.parametrize(
    "config_rules,needle",
    [
        ([["embedding", "fsdp"]], "unknown logical axis 'embedding'"),
        ([["embed", "model"]], "unknown mesh axis 'model'"),
        ([["batch", ["data", "pipe"]]], "unknown mesh axis 'pipe'"),
        ([["batch", ["data", "data"]]], "names a mesh axis twice"),
        ([["embed"]], "not a \\[logical axis, mesh axes\\] pair"),
    ],
)
def test_rules_reject_unknown_names(config_rules, needle):
    with pytest.raises(ValueError, match=needle):
        sh.rules(config_rules)


def test_logical_spec_priority_repeats_and_divisibility():
    mesh = abstract_mesh(2, 2, 4)
    # The batch rule takes fsdp first, so activations keep embed replicated.
    assert sh.logical_spec(("batch", "length", "embed")) == PartitionSpec(
        ("data", "fsdp"), None, None
    )
    # [embed, embed]: Flax's resolver rejects a repeated name; here the second is replicated,
    # or takes a later rule for the same name.
    assert sh.logical_spec(("embed", "embed")) == PartitionSpec("fsdp", None)
    two = (("embed", "fsdp"), ("embed", "tensor"))
    assert sh.logical_spec(("embed", "embed"), rules=two) == PartitionSpec("fsdp", "tensor")
    # Divisibility guard: 30522 rows over tensor=4 replicate; 30524 shard.
    assert sh.logical_spec(("vocab", "embed"), (30522, 768), mesh) == PartitionSpec(None, "fsdp")
    assert sh.logical_spec(("vocab", "embed"), (30524, 768), mesh) == PartitionSpec(
        "tensor", "fsdp"
    )
    # A tuple of mesh axes shrinks to its longest dividing prefix: 6 rows over data*fsdp=4.
    assert sh.logical_spec(("batch", None), (6, 3), mesh) == PartitionSpec("data", None)
    assert sh.logical_spec(("batch",), (3,), mesh) == PartitionSpec(None)


# --- parameter and state shardings (abstract: no devices needed) ---------------------


def test_bert_param_shardings_on_a_2x2x2_mesh():
    abstract = jax.eval_shape(init_fn(build(tiny())))
    s = sh.param_shardings(abstract, abstract_mesh(2, 2, 2))
    layer = s["encoder"]["layer_0"]
    assert spec_of(layer, "attention", "query", "kernel") == PartitionSpec("fsdp", "tensor", None)
    assert spec_of(layer, "attention", "query", "bias") == PartitionSpec("tensor", None)
    assert spec_of(layer, "attention", "out", "kernel") == PartitionSpec("tensor", None, "fsdp")
    assert spec_of(layer, "intermediate", "kernel") == PartitionSpec("fsdp", "tensor")
    assert spec_of(layer, "output", "kernel") == PartitionSpec("tensor", "fsdp")
    assert spec_of(layer, "output_norm", "scale") == PartitionSpec("fsdp")
    assert spec_of(s, "embeddings", "word", "embedding") == PartitionSpec("tensor", "fsdp")
    assert spec_of(s, "embeddings", "position", "embedding") == PartitionSpec(None, "fsdp")
    assert spec_of(s, "mlm", "bias") == PartitionSpec("tensor")
    assert spec_of(s, "mlm", "transform", "kernel") == PartitionSpec("fsdp", None)
    assert spec_of(s, "nsp", "dense", "kernel") == PartitionSpec("fsdp", None)
    # Every leaf got a sharding: the tree has the structure of the unboxed params.
    assert jax.tree.structure(s) == jax.tree.structure(nn.unbox(abstract))


def test_non_divisible_dimensions_fall_back_to_replicated():
    """BERT's 30522-row vocabulary (and a 2-way head count) on tensor=4 still get shardings."""
    cfg = tiny(vocab_size=30522, num_heads=2, hidden_size=16)
    s = sh.param_shardings(jax.eval_shape(init_fn(build(cfg))), abstract_mesh(1, 2, 4))
    assert spec_of(s, "embeddings", "word", "embedding") == PartitionSpec(None, "fsdp")
    assert spec_of(s, "mlm", "bias") == PartitionSpec(None)
    kernel = spec_of(s["encoder"]["layer_0"], "attention", "query", "kernel")
    assert kernel == PartitionSpec("fsdp", None, None)
    assert spec_of(s["encoder"]["layer_0"], "intermediate", "kernel") == PartitionSpec(
        "fsdp", "tensor"
    )


def test_box_rules_and_plain_partitioned_boxes():
    """A box's own rules win; nn.with_partitioning names mesh axes, still guarded."""
    tree = {
        "own_rules": nn.LogicallyPartitioned(
            jax.ShapeDtypeStruct((8, 4), jnp.float32), ("embed", "mlp"), rules=(("mlp", "data"),)
        ),
        "mesh_names": nn.Partitioned(
            jax.ShapeDtypeStruct((6, 4), jnp.float32), (("data", "fsdp"), "tensor")
        ),
        "odd": nn.Partitioned(jax.ShapeDtypeStruct((3, 4), jnp.float32), ("fsdp", None)),
    }
    s = sh.param_shardings(tree, abstract_mesh(2, 2, 2))
    assert s["own_rules"].spec == PartitionSpec(None, "data")
    assert s["mesh_names"].spec == PartitionSpec("data", "tensor")
    assert s["odd"].spec == PartitionSpec(None, None)


def test_scan_layout_keeps_layers_replicated():
    abstract = jax.eval_shape(init_fn(build(tiny(scan_layers=True, num_layers=2))))
    s = sh.param_shardings(abstract, abstract_mesh(2, 2, 2))
    unit = s["encoder"]["layers"]["unit"]
    assert spec_of(unit, "attention", "query", "kernel") == PartitionSpec(
        None, "fsdp", "tensor", None
    )
    assert spec_of(unit, "intermediate", "kernel") == PartitionSpec(None, "fsdp", "tensor")


def test_optimizer_state_mirrors_params_and_scalars_replicate():
    model = build(tiny())
    tx = optax.MultiSteps(
        optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, weight_decay=0.01)), 2
    )

    def boxed():  # optax maps over the boxes, so moments carry the params' logical names
        params = init_fn(model)()
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt": tx.init(params)}

    def unboxed():  # moments built from plain arrays: matched to params by path and shape
        params = nn.unbox(init_fn(model)())
        return {"params": init_fn(model)(), "opt": tx.init(params)}

    mesh = abstract_mesh(2, 2, 2)
    want = PartitionSpec("fsdp", "tensor", None)
    for fn in (boxed, unboxed):
        target, s = sh.abstract_state(fn, mesh)
        adam = s["opt"].inner_opt_state[1][0]
        for tree in (s["params"], adam.mu, adam.nu, s["opt"].acc_grads):
            assert spec_of(tree["encoder"]["layer_0"], "attention", "key", "kernel") == want
        assert adam.count.spec == PartitionSpec()
        assert s["opt"].mini_step.spec == PartitionSpec()
        # The restore target: every leaf, scalars included, carries its NamedSharding.
        for leaf, sharding in zip(jax.tree.leaves(target), jax.tree.leaves(s), strict=True):
            assert leaf.sharding == sharding


def test_batch_and_replicated_shardings():
    mesh = abstract_mesh(2, 2, 2)
    assert sh.batch_sharding(mesh, 2).spec == PartitionSpec(("data", "fsdp"), None)
    assert sh.batch_sharding(mesh, 1).spec == PartitionSpec(("data", "fsdp"))
    assert sh.batch_sharding(mesh, 3, rules=[["batch", "data"]]).spec == PartitionSpec(
        "data", None, None
    )
    assert sh.replicated(mesh).spec == PartitionSpec()


# --- one device: creation, the activation context, and Flax's unbox ------------------


def test_create_sharded_and_activation_context_on_one_device():
    model = build(tiny())
    mesh = sh.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    params, shardings = sh.create_sharded(init_fn(model), None, mesh)
    assert params["mlm"]["bias"].sharding == shardings["mlm"]["bias"]
    ids = jax.random.randint(jax.random.key(1), (2, 8), 0, TINY["vocab_size"])
    unbox = nn.LogicallyPartitioned.unbox
    with sh.activation_rules_context(mesh):
        # Init and apply both run with rules active ([embed, embed] kernels, DenseGeneral).
        step = jax.jit(
            lambda p, x: (forward(model)(p, x), nn.unbox(init_fn(model)())),
            in_shardings=(shardings, sh.batch_sharding(mesh, 2)),
        )
        lowered = step.lower(params, ids)
        got, again = lowered.compile()(params, ids)
    assert nn.LogicallyPartitioned.unbox is unbox
    assert "sharding_constraint" in lowered.as_text()
    jax.tree.map(np.testing.assert_array_equal, again, params)
    np.testing.assert_allclose(got, jax.jit(forward(model))(params, ids), atol=TOL, rtol=0)


# --- subprocesses: 8 simulated devices, and two processes ----------------------------


def _run_script(mode: str, result: str, *args: str, devices: int) -> subprocess.Popen:
    """Runs this file as `python test_sharding.py MODE RESULT_JSON [ARGS]`."""
    return clilib.start(
        [sys.executable, os.path.abspath(__file__), mode, result, *args],
        devices=devices,
        stderr=subprocess.STDOUT,
    )


def _result(proc: subprocess.Popen) -> dict:
    # A file, not stdout: Gloo's C++ logging interleaves with Python's output.
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    with open(proc.args[3]) as f:
        return json.load(f)


@pytest.fixture(scope="module", autouse=True)
def eight_process(tmp_path_factory):
    """Starts the 8-device run at once, so it overlaps the single-device tests."""
    proc = _run_script("eight", str(tmp_path_factory.mktemp("eight") / "result.json"), devices=8)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def eight(eight_process) -> dict:
    return _result(eight_process)


@pytest.mark.parametrize("mesh", ["8,1,1", "2,2,2", "1,4,2"])
def test_sharded_init_and_forward_match_one_device(eight, mesh):
    got = eight["meshes"][mesh]
    assert got["param_diff"] == 0.0  # the same numbers, whatever the layout
    assert got["logits_diff"] < TOL
    assert got["constrained"]  # the activation rules were live in the jitted forward
    assert got["placed_as_declared"]
    assert got["devices"] == 8


def test_sharded_state_on_2x2x2(eight):
    got = eight["meshes"]["2,2,2"]
    assert got["query_kernel"] == str(PartitionSpec("fsdp", "tensor", None))
    assert got["word_embedding"] == str(PartitionSpec("tensor", "fsdp"))
    assert got["mu_query_kernel"] == got["query_kernel"]
    assert got["count"] == str(PartitionSpec())
    # Each device holds a quarter of the query kernel ([16, 2, 8] over fsdp x tensor).
    assert got["query_kernel_shard"] == [8, 1, 8]


def test_gradient_on_2x2x2_matches_one_device(eight):
    assert eight["grad_diff"] < TOL
    assert eight["grad_placed_as_declared"]


def test_scan_layout_shards_and_matches(eight):
    assert eight["scan"]["query_kernel"] == str(PartitionSpec(None, "fsdp", "tensor", None))
    assert eight["scan"]["logits_diff"] < TOL


def test_two_processes_build_one_sharded_state(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    procs = [
        _run_script("process", str(tmp_path / f"{i}.json"), str(i), port, devices=4)
        for i in range(2)
    ]
    try:
        results = [_result(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, got in enumerate(results):
        # The data axis is process-contiguous: process i owns row i of the (2, 2, 2) mesh.
        assert got["mesh_processes"] == [[[0, 0], [0, 0]], [[1, 1], [1, 1]]]
        assert got["local_batch_rows"] == [4 * i, 4 * i + 4]
        assert got["param_diff"] == 0.0
        assert got["sum_diff"] < TOL


# --- the subprocess side -------------------------------------------------------------


def _max_diff(a, b) -> float:
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
    return max(jax.tree.leaves(diffs))


def _placed(arrays, shardings) -> bool:
    return all(
        a.sharding.is_equivalent_to(s, a.ndim)
        for a, s in zip(jax.tree.leaves(arrays), jax.tree.leaves(shardings), strict=True)
    )


def _eight_devices() -> dict:
    assert jax.device_count() == 8
    out: dict = {"meshes": {}}
    model = build(tiny())
    fwd, init = forward(model), init_fn(model)
    ids = jax.random.randint(jax.random.key(1), (8, 8), 0, TINY["vocab_size"])
    ref = jax.jit(lambda: nn.unbox(init()))()
    want = jax.jit(fwd)(ref, ids)
    tx = optax.adamw(1e-3, weight_decay=0.01)

    def state_init():
        params = init()
        return {"params": params, "opt": tx.init(params)}

    for shape in ((8, 1, 1), (2, 2, 2), (1, 4, 2)):
        mesh = sh.make_mesh(dict(zip(sh.MESH_AXES, shape, strict=True)))
        # A train state (params + AdamW) on one mesh, params alone on the others.
        with_opt = shape == (2, 2, 2)
        state, s = sh.create_sharded(state_init if with_opt else init, None, mesh)
        params, ps = (state["params"], s["params"]) if with_opt else (state, s)
        batch = sh.batch_sharding(mesh, 2)
        with sh.activation_rules_context(mesh):
            lowered = jax.jit(fwd, in_shardings=(ps, batch)).lower(params, ids)
            logits = lowered.compile()(params, jax.device_put(ids, batch))
        query = lambda t: t["encoder"]["layer_0"]["attention"]["query"]["kernel"]
        out["meshes"][",".join(map(str, shape))] = got = {
            "param_diff": _max_diff(params, ref),
            "logits_diff": _max_diff(logits, want),
            "constrained": "sharding_constraint" in lowered.as_text(),
            "placed_as_declared": _placed(state, s),
            "devices": len(query(params).sharding.device_set),
            "query_kernel": str(query(ps).spec),
            "word_embedding": str(ps["embeddings"]["word"]["embedding"].spec),
            "query_kernel_shard": list(query(params).addressable_shards[0].data.shape),
        }
        if with_opt:
            got["mu_query_kernel"] = str(query(s["opt"][0].mu).spec)
            got["count"] = str(s["opt"][0].count.spec)
            grad = lambda p, x: jax.grad(lambda q: jnp.mean(fwd(q, x)))(p)
            want_grad = jax.jit(grad)(ref, ids)
            with sh.activation_rules_context(mesh):
                got_grad = jax.jit(grad, in_shardings=(ps, batch), out_shardings=ps)(params, ids)
            out["grad_diff"] = _max_diff(got_grad, want_grad)
            out["grad_placed_as_declared"] = _placed(got_grad, ps)

    # Scan layout: the reference runs on one device with the same numbers, gathered.
    scan_model = build(tiny(scan_layers=True, num_layers=2))
    mesh = sh.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    params, s = sh.create_sharded(init_fn(scan_model), None, mesh)
    with sh.activation_rules_context(mesh):
        logits = jax.jit(forward(scan_model), in_shardings=(s, sh.batch_sharding(mesh, 2)))(
            params, ids
        )
    gathered = jax.device_put(jax.device_get(params), jax.devices()[0])
    out["scan"] = {
        "query_kernel": str(s["encoder"]["layers"]["unit"]["attention"]["query"]["kernel"].spec),
        "logits_diff": _max_diff(logits, jax.jit(forward(scan_model))(gathered, ids)),
    }
    return out


def _one_of_two_processes(process_id: int, port: str) -> dict:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"127.0.0.1:{port}", num_processes=2, process_id=process_id, initialization_timeout=60
    )
    model = build(tiny())
    mesh = sh.make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
    params, s = sh.create_sharded(init_fn(model), None, mesh)
    local = jax.jit(lambda: nn.unbox(init_fn(model)()))()  # on this process's first device
    param_diff = 0.0
    for got, ref in zip(jax.tree.leaves(params), jax.tree.leaves(local), strict=True):
        for shard in got.addressable_shards:
            param_diff = max(
                param_diff,
                float(np.max(np.abs(np.asarray(shard.data) - np.asarray(ref)[shard.index]))),
            )
    # A global batch from per-process rows; a jitted reduction over all of it (gloo).
    rows = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    batch = jax.make_array_from_process_local_data(
        sh.batch_sharding(mesh, 2), rows[4 * process_id : 4 * process_id + 4]
    )
    total = jax.jit(jnp.sum, out_shardings=sh.replicated(mesh))(batch)
    starts = sorted({shard.index[0].start for shard in batch.addressable_shards})
    return {
        "mesh_processes": [
            [[d.process_index for d in row] for row in plane] for plane in mesh.devices.tolist()
        ],
        "local_batch_rows": [starts[0], starts[-1] + 2],
        "param_diff": param_diff,
        "sum_diff": abs(float(np.asarray(total.addressable_data(0))) - float(rows.sum())),
    }


if __name__ == "__main__":
    mode, path, *args = sys.argv[1:]
    result = _eight_devices() if mode == "eight" else _one_of_two_processes(int(args[0]), args[1])
    with open(path, "w") as f:
        json.dump(result, f)
