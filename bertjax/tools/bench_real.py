r"""`bench train` on a classification or tagging task's own train split: packed rows
against transformers' `*ForSequenceClassification` / `*ForTokenClassification` fed the
two ways its users feed it.

  python -m bertjax bench train --config=configs/finetune.py:demo_next,bert_mini \
      --config.tokenizer.path=/tmp/demo_data/tokenizer --vs_torch --seconds=20
  python -m bertjax bench train --config=configs/finetune.py:demo_boundary,bert_mini \
      --config.tokenizer.path=/tmp/demo_data/tokenizer --vs_torch --seconds=20

`bench train` runs this instead of its synthetic batches when the config fine-tunes a
sequence classifier (the glue task: GLUE, custom data, demo_next) or a tagger (the ner
task: CoNLL, demo_boundary) and names a tokenizer (config.init_from or
config.tokenizer.path), so the task's examples can be read. Every
side trains on the same first NUM_BATCHES train batches of the run, in the same order
(train.batch_size sequences each, as training draws them), fed as:

  ours  packed (finetune.packing; best_fit when off) into rows of max_seq_length, all
        batches filled to the same number of rows so one step compiles
  (a)   every row padded to max_seq_length: transformers' run_glue.py default
        (pad_to_max_length=True), as Google's run_classifier.py
  (b)   each batch padded to its longest row rounded up to 8: the Trainer's
        DataCollatorWithPadding(pad_to_multiple_of=8)

Throughput counts real tokens only (`attention_mask > 0`): the step's sequences hold the
same real tokens on every side, so the ratios are ratios of steps per second. MFU uses
the FLOPs per token at max_seq_length over real tokens. The last line is
`ratio=R ours=X reference=Y unit=tokens/s` against (a), the line before it against (b)
(`ours=X unit=tokens/s mfu=M` alone without --vs_torch). The first-step loss without
dropout is the same function on every side (the mean over the same sequences, or over
the same labelled tokens), checked.

A pretraining config with prepared data and data.packing on times our step on the
data's first batches packed against the same batches unpacked, in one run:

  python -m bertjax bench train --config=configs/pretrain.py:bert_mini \
      --config.data.dir=/tmp/demo_data --config.data.packing=best_fit
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from bertjax import allocator, experiment
from bertjax.metrics import mfu
from bertjax.peak_flops import resolve_peak_flops
from bertjax.tools import bench_train as bt

NUM_BATCHES = 8  # distinct batches cycled over: a sample of the length distribution


def available(config: Any) -> bool:
    """Whether `bench train` reads the config's data here: a classification task's
    examples (a tokenizer named), or prepared pretraining data with data.packing on."""
    if "data" in config:
        return bool(config.data.get("dir")) and config.data.get("packing", "off") != "off"
    return config.get("task") in ("glue", "ner") and bool(
        config.get("init_from") or config.tokenizer.get("path")
    )


def _fill(batch: dict[str, np.ndarray], rows: int, pad_id: int) -> dict[str, np.ndarray]:
    """`batch` with empty rows (no tokens, no sequences) up to `rows`."""
    out = {}
    for key, v in batch.items():
        fill = pad_id if key == "input_ids" else -1 if key == "pair_labels" else 0
        full = np.full((rows, *v.shape[1:]), fill, v.dtype)
        full[: len(v)] = v
        out[key] = full
    return out


def real_batches(task: Any, count: int) -> dict[str, Any]:
    """The first `count` train batches as ours, (a) and (b) take them, with the split's
    lengths and the real tokens per batch."""
    feats, seq_len = task.features("train"), int(task.config.max_seq_length)
    method = str(task.config.finetune.get("packing", "off"))
    method = "best_fit" if method == "off" else method
    out: dict[str, Any] = {"ours": [], "padded": [], "dynamic": [], "real": []}
    for step in range(count):
        rows = task.train_rows(step)
        longest = max(len(feats.ids[r]) for r in rows)
        out["padded"].append(task.pad(feats, rows, length=seq_len))
        out["dynamic"].append(task.pad(feats, rows, length=min(seq_len, -(-longest // 8) * 8)))
        out["ours"].append(task.packed(feats, rows, method))
        out["real"].append(int(sum(len(feats.ids[r]) for r in rows)))
    most = max(len(b["input_ids"]) for b in out["ours"])
    pad_id = task.tokenizer().pad_id
    out["ours"] = [_fill(b, most, pad_id) for b in out["ours"]]
    out["lengths"] = np.asarray([len(x) for x in feats.ids])
    out["method"] = method
    return out


def _rates(
    r: dict[str, Any], batch_size: int, real: float, flops: float, peak: float
) -> dict[str, float]:
    steps_per_s = r["steps"] / r["seconds"]
    tokens = steps_per_s * real
    return {
        "step_ms": 1e3 / steps_per_s,
        "seq_per_s": steps_per_s * batch_size,
        "tokens_per_s": tokens,
        "mfu": mfu(flops, tokens, peak, jax.device_count()),
    }


def _histogram(lengths: np.ndarray, seq_len: int) -> str:
    edges = list(range(0, seq_len, 16)) + [seq_len]
    counts = np.histogram(lengths, bins=np.asarray(edges) + 0.5)[0]
    return ", ".join(
        f"{a + 1}-{b}: {c}" for a, b, c in zip(edges, edges[1:], counts, strict=False) if c
    )


def _ratio_line(label: str, ours: dict[str, Any], ref: dict[str, Any]) -> str:
    return (
        f"{label}ratio={ours['tokens_per_s'] / ref['tokens_per_s']:.2f} "
        f"ours={ours['tokens_per_s']:.0f} reference={ref['tokens_per_s']:.0f} "
        "unit=tokens/s"
    )


def _pipeline_batches(
    config: Any, packing: str, count: int
) -> tuple[list[dict[str, np.ndarray]], int]:
    """The first `count` train batches of the config's prepared data, `packing` as
    given, and the data's pad id."""
    from bertjax import tasks

    config = config.copy_and_resolve_references()
    config.data.packing = packing
    task = tasks.get(config)
    task.cfg = experiment.build_setup(config).cfg
    pipe = task._pipeline(task.phases()[0], "train", 0, True)
    it = iter(pipe)
    batches = [next(it) for _ in range(count)]
    it.close()
    return batches, pipe.pad_id


def bench_pretraining(
    config: Any, seconds: float, print_fn: Callable[[str], None] = print
) -> dict[str, Any]:
    """Our train step on the data's first NUM_BATCHES batches, packed (data.packing)
    against the same batches unpacked, in one run; real tokens/s. The last line is
    `ratio=R ours=X reference=Y unit=tokens/s` with the unpacked step as the reference."""
    setup = experiment.build_setup(config)
    cfg, batch_size = setup.cfg, int(config.train.batch_size)
    packed, pad_id = _pipeline_batches(config, str(config.data.packing), NUM_BATCHES)
    plain, _ = _pipeline_batches(config, "off", NUM_BATCHES)
    most = max(len(b["input_ids"]) for b in packed)
    packed = [_fill(b, most, pad_id) for b in packed]
    real = float(np.mean([(b["attention_mask"] > 0).sum() for b in plain]))
    seq_len = plain[0]["input_ids"].shape[1]
    print_fn(
        f"bench train: {cfg.family} L{cfg.num_layers} H{cfg.hidden_size}, task "
        f"{setup.task.name}, data {config.data.dir}: {batch_size} sequences a step, "
        f"{real:.0f} real tokens; unpacked {batch_size} x {seq_len} "
        f"({real / (batch_size * seq_len):.1%} real), packed ({config.data.packing}) "
        f"{most} x {seq_len} ({real / (most * seq_len):.1%} real); host allocator: "
        f"{allocator.describe()}"
    )
    flops = setup.task.flops(cfg, seq_len).total
    peak, _ = resolve_peak_flops(float(config.train.peak_flops), cfg.dtype)
    result = {}
    for name, batches in (("unpacked", plain), ("packed", packed)):
        r = bt.bench_ours(setup, batches, seconds, keep_initial=False)
        r.update(_rates(r, batch_size, real, flops, peak))
        result[name] = r
        print_fn(bt._side_line(f"{name} (jax {jax.__version__}, real tokens)", r))
    print_fn(_ratio_line("", result["packed"], result["unpacked"]))
    return result


def bench_real(
    config: Any, seconds: float, vs_torch: bool, print_fn: Callable[[str], None] = print
) -> dict[str, Any]:
    """Runs the benchmark the module docstring describes and prints its lines."""
    if "data" in config:  # pretraining: packed against unpacked, ours only
        return bench_pretraining(config, seconds, print_fn)
    if int(config.train.steps) == 0:  # the schedule's length: as bench_train's
        config = config.copy_and_resolve_references()
        config.train.steps = bt.STANDIN_STEPS
    setup = experiment.build_setup(config)
    cfg, task = setup.cfg, setup.task
    task.cfg = cfg
    kind = bt.reference_kind(cfg, task)
    batch_size, seq_len = int(config.train.batch_size), int(config.max_seq_length)
    data = real_batches(task, NUM_BATCHES)
    real = float(np.mean(data["real"]))
    lengths = data["lengths"]
    ours_shape = data["ours"][0]["input_ids"].shape
    dynamic = np.mean([b["input_ids"].shape[1] for b in data["dynamic"]])
    print_fn(
        f"bench train: {cfg.family} L{cfg.num_layers} H{cfg.hidden_size}, task "
        f"{task.name}, {batch_size} sequences a step from its train split "
        f"({len(lengths):,} examples: {lengths.mean():.1f} tokens on average, at most "
        f"{lengths.max()}; {_histogram(lengths, seq_len)}); {jax.device_count()} "
        f"{jax.default_backend()} device(s), compute {cfg.dtype}; host allocator: "
        f"{allocator.describe()}"
    )
    print_fn(
        f"rows a step: ours {ours_shape[0]} x {ours_shape[1]} packed ({data['method']}), "
        f"(a) {batch_size} x {seq_len} padded to max_seq_length, (b) {batch_size} x "
        f"{dynamic:.0f} on average (dynamic padding, multiple of 8); {real:.0f} real "
        f"tokens a step on every side: {real / (batch_size * seq_len):.1%} of (a)'s "
        f"positions, {real / (batch_size * dynamic):.1%} of (b)'s, "
        f"{real / (ours_shape[0] * ours_shape[1]):.1%} of ours"
    )
    flops = task.flops(cfg, seq_len).total
    peak, _ = resolve_peak_flops(float(config.train.peak_flops), cfg.dtype)
    ours = bt.bench_ours(setup, data["ours"], seconds, keep_initial=vs_torch)
    ours.update(_rates(ours, batch_size, real, flops, peak))
    initial = ours.pop("initial", None)
    print_fn(bt._side_line(f"ours (jax {jax.__version__}, packed, real tokens)", ours))
    result = {"ours": ours, "padded": None, "dynamic": None}
    if not vs_torch or kind not in ("classification", "token_classification"):
        print_fn(f"ours={ours['tokens_per_s']:.0f} unit=tokens/s mfu={ours['mfu']:.4f}")
        return result
    for name, label in (("dynamic", "(b) dynamic padding"), ("padded", f"(a) padded to {seq_len}")):
        ref, versions = bt._vs_torch(setup, kind, initial, data[name], seconds, print_fn)
        ref.update(_rates(ref, batch_size, real, flops, peak))
        result[name] = ref
        print_fn(bt._side_line(f"{label}: {versions}", ref))
    diff = abs(ours["eval_loss"] - result["padded"]["eval_loss"])
    print_fn(
        f"check: first-step loss without dropout: ours={ours['eval_loss']:.6f} "
        f"reference={result['padded']['eval_loss']:.6f} diff={diff:.2e}"
    )
    print_fn(_ratio_line("against (b) dynamic padding: ", ours, result["dynamic"]))
    print_fn(_ratio_line("", ours, result["padded"]))
    return result
