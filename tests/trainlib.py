"""Helpers for the training tests: tiny prepared corpora and tiny train configs.

The corpus is a made-up language (a few dozen words, sentences with a simple word
order), so a 2-layer model's MLM loss falls visibly within a hundred steps.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import Any

import clilib
import numpy as np

from bertjax import paths

ROOT = clilib.ROOT
sys.path.insert(0, os.path.join(ROOT, "configs"))

PRESETS = {
    "bert": "bert_tiny",
    "roberta": "roberta_base",
    "albert": "albert_base",
    "distilbert": "distilbert_base",
    "electra": "electra_small",
}
SUBJECTS = "the cat|a dog|my friend|the teacher|our neighbour|the old man|a child".split("|")
VERBS = "sees|likes|finds|takes|paints|buys|follows".split("|")
OBJECTS = "the river|a stone|the light|some paper|the garden|a window|the music".split("|")
PLACES = "in the morning|at night|near the bridge|in the village|after winter".split("|")

# A 2-layer, 32-wide model: a train step compiles in seconds on a CPU.
TINY_MODEL = dict(
    hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=64
)
VOCAB = {"bert": 400, "roberta": 400, "albert": 300, "distilbert": 400, "electra": 400}


def write_corpus(path: str, n_docs: int = 120, seed: int = 0) -> str:
    """A BERT-format corpus (one sentence a line, blank lines between documents)."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.integers(3, 8)):
            s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
            if rng.random() < 0.5:
                s += f" {rng.choice(PLACES)}"
            sentences.append(s.capitalize() + ".")
        docs.append("\n".join(sentences))
    with open(path, "w") as f:
        f.write("\n\n".join(docs) + "\n")
    return path


def config(family: str, data_dir: str = "", **overrides: Any) -> Any:
    """configs/pretrain.py for `family`, shrunk to TINY_MODEL and a small, fast run."""
    import pretrain

    return _shrink(pretrain.get_config(f"{PRESETS[family]},runlocal"), family, data_dir, overrides)


def distill_config(
    data_dir: str = "", teacher_path: str = "", teacher_layers: int = 4, **overrides: Any
) -> Any:
    """configs/distill.py: a TINY_MODEL DistilBERT student of a `teacher_layers`-layer
    TINY_MODEL BERT teacher (same width: the student starts from teacher layers)."""
    import distill

    c = distill.get_config(f"{PRESETS['bert']}_to_{PRESETS['distilbert']},runlocal")
    c.teacher.update(TINY_MODEL, num_layers=teacher_layers, vocab_size=VOCAB["distilbert"])
    c.distill.update(teacher_path=teacher_path, init="teacher", alpha_cos=1.0)
    return _shrink(c, "distilbert", data_dir, overrides)


def _shrink(c: Any, family: str, data_dir: str, overrides: dict[str, Any]) -> Any:
    c.model.update(TINY_MODEL)
    if family == "albert":
        c.model.embedding_size = 16
    if family == "electra":
        c.model.update(
            embedding_size=32,
            generator_hidden_size=16,
            generator_num_heads=1,
            generator_intermediate_size=32,
        )
    c.model.vocab_size = VOCAB[family]
    c.tokenizer.vocab_size = VOCAB[family]
    c.max_seq_length = 32
    c.max_predictions_per_seq = 5
    c.data.update(
        dir=data_dir,
        docs_per_shard=20,
        validation_every=4,
        num_workers=0,
        dupe_factor=2,
        shuffle_buffer=64,
    )
    c.train.update(
        batch_size=8,
        steps=12,
        log_every=1,
        eval_every=0,
        eval_steps=2,
        checkpoint_every=4,
        max_to_keep=10,
        peak_flops=1e12,
        export_model=False,
    )
    c.optim.update(learning_rate=2e-3, warmup_steps=2)
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:  # a typo must not pass as a new key
            raise KeyError(f"config has no key {key!r}")
        node[leaf] = value
    return c


def prepare(family: str, directory: str, corpus: str, **overrides: Any) -> str:
    """Prepares `corpus` for `family` into `directory` (tokenizer trained on it)."""
    from bertjax.data.from_config import prepare_data

    c = config(family, directory, **{"data.source": f"bert:{corpus}", **overrides})
    prepare_data(c)
    return directory


def flags(c: Any, prefix: str = "config") -> list[str]:
    """--config.KEY=VALUE flags that rebuild config `c` from its preset on the command line."""
    out = []
    for key, value in c.items():
        if hasattr(value, "items"):
            out += flags(value, f"{prefix}.{key}")
        elif isinstance(value, (tuple, list)):
            continue  # sharding.rules: the tests use the defaults
        else:
            out.append(f"--{prefix}.{key}={value}")
    return out


def train_cmd(c: Any, workdir: str, *extra: str, fault: str = "") -> list[str]:
    """The `python -m bertjax train` command line for config `c` (`config` or
    `distill_config`); with `fault` (tests/faults.py), the same command with that fault
    injected."""
    if "distill" in c:
        file, preset = "distill", f"{PRESETS['bert']}_to_{PRESETS['distilbert']}"
    else:
        file, preset = "pretrain", PRESETS[c.model.family]
    start = [os.path.join(ROOT, "tests", "faults.py"), fault] if fault else ["-m", "bertjax"]
    return [
        sys.executable,
        *start,
        "train",
        f"--config=configs/{file}.py:{preset},runlocal",
        f"--workdir={workdir}",
        *flags(c),
        *extra,
    ]


def env(devices: int = 1, **extra: str) -> dict[str, str]:
    """clilib.environ() on `devices` simulated CPU devices (one by default)."""
    return clilib.environ(devices, **extra)


def run(
    cmd: list[str], devices: int = 1, timeout: float = 300, **extra_env: str
) -> subprocess.CompletedProcess:
    """clilib.run() on `devices` simulated CPU devices, `extra_env` added."""
    return clilib.run(cmd, env=env(devices, **extra_env), timeout=timeout)


def restore_host(workdir: str, step: int | None = None) -> tuple[int, Any]:
    """(step, the train state as numpy arrays) of a checkpoint (latest by default), read
    on this process's first device whatever mesh or process count wrote it."""
    import jax
    import orbax.checkpoint as ocp

    from bertjax.checkpoint import TrainCheckpoints

    ckpts = TrainCheckpoints(paths.join(workdir, "checkpoints"), async_save=False)
    try:
        step = ckpts.latest_step() if step is None else step
        # The array metadata alone: the saved shardings name devices this process lacks.
        meta = (
            ocp.StandardCheckpointer()
            .metadata(paths.join(ckpts.directory, str(step), "state"))
            .item_metadata
        )
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta
        )
        state = ckpts._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        )["state"]
    finally:
        ckpts.close()
    return step, jax.tree.map(np.asarray, state)


def state_hash(workdir: str, step: int | None = None) -> dict[str, str]:
    """sha256 of every leaf of a checkpoint's train state (params, optimizer state,
    counters), for bit-for-bit comparisons across runs."""
    import jax

    step, state = restore_host(workdir, step)
    out = {"step": str(step)}
    for path, arr in jax.tree_util.tree_leaves_with_path(state):
        out[jax.tree_util.keystr(path)] = hashlib.sha256(
            arr.tobytes() + str(arr.dtype).encode() + str(arr.shape).encode()
        ).hexdigest()
    return out
