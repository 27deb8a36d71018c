r"""`python -m bertjax bench train`: our jitted train step, optionally against transformers.

  python -m bertjax bench train --config=configs/pretrain.py:bert_mini \
      --config.train.batch_size=32 --vs_torch --seconds=20
  python -m bertjax bench train --config=configs/finetune.py:sst2,bert_base \
      --config.train.batch_size=32 --vs_torch --seconds=60

Both sides train the config's model (size, dropout, optimizer hyperparameters) on the
same synthetic batches, made in numpy from `config.seed` by the task: ids in [5, vocab)
(model.vocab_size; no tokenizer is read), full-length attention masks, and
- pretraining: `max_predictions_per_seq` distinct masked positions per row (and NSP /
  SOP labels). Ours scores only the masked positions (sparse MLM head); the reference
  (`--vs_torch`) is transformers' pretraining model of the family (BertForPreTraining),
  scoring every position as transformers does.
- fine-tuning (a GLUE config): random labels (float targets for a regression), every
  row max_seq_length tokens: the padded worst case, since training pads a batch only to
  its longest row. No dataset is read: a length of "epochs over the train split"
  (train.steps=0) becomes STANDIN_STEPS for the schedule (warmup share and decay). The
  reference is `<Family>ForSequenceClassification` with its own loss (cross-entropy,
  mean over rows; MSE for a regression); both sides run the same FLOPs. With
  config.init_from the architecture is the checkpoint's; the weights are random anyway.
- tagging (an NER config): a random tag at every position;
  `<Family>ForTokenClassification` (cross-entropy, mean over the labelled tokens).
- extractive QA (a SQuAD config): a random span of up to 30 tokens per row;
  `<Family>ForQuestionAnswering` (the mean of the start and end cross-entropies, as
  ours on these full-length rows).
Ours is `steps.train_step` jitted with donation on the config's mesh; the reference is
loaded with OUR initial parameters (the export name map, bertjax/convert/hf.py) and
trained with torch.optim.AdamW (fused, as transformers' Trainer; same lr schedule,
betas, eps, weight decay and decay mask) and clip_grad_norm_. CPU: float32 on both
sides, torch on its default threads (one per core). GPU: bfloat16 compute on both (our
train.dtype, torch autocast), SDPA attention and torch.compile.

Each side: warm-up steps (compilation included) are not timed; then about `--seconds`
of steps, dispatched without a host sync and waited for once at the end. FLOPs/token
(bertjax/flops.py) differ between the sides in pretraining: f = P / L for our sparse head,
1 for transformers' dense one; each side's MFU uses its own figure. The last line is
`ratio=R ours=X reference=Y unit=tokens/s` (`ours=X unit=tokens/s mfu=M` alone).
A first-step loss without dropout on both sides cross-checks that the two models
compute the same function (float32: within ~1e-4).

The step is the config's task (bertjax/tasks): ELECTRA configs time the whole
objective (generator, sampling, discriminator); distillation configs
(configs/distill.py) time the student's step with a randomly initialised teacher of
config.teacher's architecture running forward in it, and count its FLOPs. Neither has
a transformers training reference, so `--vs_torch` refuses them.

No TensorFlow is imported here (DESIGN.md); torch and transformers only with
`--vs_torch`. Single host only.
The reference is bench_vs_torch.py's, the timing of both sides bench_timing.py's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from bertjax import allocator, experiment, sharding
from bertjax.flops import train_flops_per_token
from bertjax.memory import size
from bertjax.models import ModelConfig, build, init_params
from bertjax.peak_flops import resolve_peak_flops
from bertjax.tools import aot
from bertjax.tools.bench_timing import Batch, _max_rss, _rates, _timed
from bertjax.tools.bench_vs_torch import bench_torch
from bertjax.train import train_step_fn

NUM_BATCHES = 4  # distinct batches cycled over: more would only cost memory
# The schedule's length for a config whose length is epochs over data bench does not read.
STANDIN_STEPS = 1000
# Heads of the transformers classes that train with their own losses (the references):
# pretraining (MLM + NSP / SOP) and sequence classification.
PRETRAINING_HEADS = frozenset({"pooler", "mlm", "nsp", "sop"})
CLASSIFICATION_HEADS = frozenset({"pooler", "classifier"})


def reference_kind(cfg: ModelConfig, task: Any) -> str | None:
    """ "pretraining", "classification", "token_classification" or
    "question_answering": the transformers model `--vs_torch` trains for this model and
    task; None when transformers has no training reference."""
    heads = set(cfg.heads)
    if task.teacher is not None:
        return None
    if "mlm" in heads and heads <= PRETRAINING_HEADS:
        return "pretraining"
    if "classifier" in heads and heads <= CLASSIFICATION_HEADS:
        return "classification"
    if heads == {"token_classifier"}:
        return "token_classification"
    if heads == {"span"}:
        return "question_answering"
    return None


# --- ours ----------------------------------------------------------------------------


def bench_ours(
    setup: experiment.Setup, batches: list[Batch], seconds: float, keep_initial: bool
) -> dict[str, Any]:
    """Times our jitted, donated train step; see the module docstring.

    Returns compile_s, steps, seconds, first_loss / last_loss (training steps, dropout
    on), eval_loss (batch 0 at the initial parameters, dropout off), peak_memory and
    its source, and the initial parameters as numpy when `keep_initial`.
    """
    s = setup
    mesh, rules, task = s.mesh, s.rules, s.task
    out: dict[str, Any] = {}
    aux = None
    with sharding.activation_rules_context(mesh, rules):
        state, _ = sharding.create_sharded(s.init, s.abstract, mesh, rules)
        if task.teacher is not None:  # random weights: only its cost matters here
            teacher = build(task.teacher)
            aux, _ = sharding.create_sharded(
                lambda: init_params(teacher, s.seed + 1), None, mesh, rules
            )
            aux = jax.tree.map(lambda x: x.astype(task.teacher.dtype), aux)
        placed = [
            {
                k: jax.device_put(v, sharding.batch_sharding(mesh, v.ndim, rules))
                for k, v in b.items()
            }
            for b in batches
        ]
        if keep_initial:
            out["initial"] = jax.tree.map(np.asarray, jax.device_get(state["params"]))
        eval_loss = jax.jit(task.loss_fn(s.model, train=False))
        out["eval_loss"] = float(eval_loss(state["params"], placed[0], jax.random.key(0), aux)[0])
        step = train_step_fn(s)
        start = time.perf_counter()
        compiled = step.lower(state, placed[0], aux).compile()
        out["compile_s"] = time.perf_counter() - start
        holder = {"state": state}
        del state  # donated at the first step: only the holder may refer to it

        def run_step(i: int) -> jax.Array:
            holder["state"], metrics = compiled(holder["state"], placed[i % len(placed)], aux)
            return metrics["loss"].value

        # The outputs of one execution become ready together: waiting for a step's loss
        # waits for its update too.
        timing = _timed(run_step, jax.block_until_ready, seconds, warmup=3)
    out.update(
        steps=timing["steps"],
        seconds=timing["seconds"],
        first_loss=float(timing["first"]),
        last_loss=float(timing["last"]),
    )
    stats = jax.devices()[0].memory_stats() or {}
    if jax.default_backend() != "cpu" and "peak_bytes_in_use" in stats:
        out["peak_memory"], out["memory_source"] = stats["peak_bytes_in_use"], "device peak"
    else:
        out["peak_memory"], out["memory_source"] = _max_rss(), "process max RSS"
    return out


# --- the command ---------------------------------------------------------------------


def _side_line(name: str, r: Mapping[str, Any]) -> str:
    compile_s = f"compile {r['compile_s']:.1f} s; " if "compile_s" in r else ""
    return (
        f"{name}: {compile_s}{r['steps']} steps in {r['seconds']:.1f} s: "
        f"step {r['step_ms']:.1f} ms, {r['seq_per_s']:,.1f} seq/s, "
        f"{r['tokens_per_s']:,.0f} tokens/s, MFU {100 * r['mfu']:.2f}%, "
        f"peak memory {r['peak_memory'] / 2**30:.2f} GiB ({r['memory_source']}), "
        f"loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}"
    )


def _setup_lines(
    config: Any,
    setup: experiment.Setup,
    batch_size: int,
    seq_len: int,
    flops: Mapping[str, float],
    peak: float,
    source: str,
    standin: bool,
) -> list[str]:
    """The lines that say what is timed: model, task, batch, devices, FLOPs, schedule."""
    cfg, optim, task, teacher_cfg = setup.cfg, setup.optim, setup.task, setup.task.teacher
    masked = "max_predictions_per_seq" in config
    n = jax.device_count()
    xla_flags = os.environ.get("XLA_FLAGS", "")
    if masked:
        num_predictions = int(config.max_predictions_per_seq)
        rows = f"{num_predictions} masked positions per row"
    else:
        labels = "a regression" if cfg.num_labels == 1 else f"{cfg.num_labels} labels"
        rows = (
            f"{labels}, every row {seq_len} tokens (the padded worst case: training "
            f"pads a batch to its longest row)"
        )
    lines = [
        f"bench train: {cfg.family} L{cfg.num_layers} H{cfg.hidden_size} vocab "
        f"{cfg.vocab_size}, task {task.name}, batch {batch_size} x {seq_len}, {rows}; "
        f"{n} {jax.default_backend()} device(s), compute {cfg.dtype}"
        + (f"; XLA_FLAGS={xla_flags}" if xla_flags else "")
        + f"; host allocator: {allocator.describe()}"
    ]
    if masked:
        lines.append(
            f"train FLOPs/token: ours {flops['ours']:.4g} (sparse MLM head, f = "
            f"{num_predictions}/{seq_len}), reference {flops['reference']:.4g} "
            f"(dense MLM head, f = 1); peak {peak:.4g} FLOP/s/device ({source})"
        )
    else:
        lines.append(
            f"train FLOPs/token: {flops['ours']:.4g} on both sides (no MLM head); "
            f"peak {peak:.4g} FLOP/s/device ({source})"
        )
    if standin:
        lines.append(
            f"schedule: train.steps=0 (a length from the train split, not read "
            f"here) stands in as {STANDIN_STEPS} steps, warmup "
            f"{optim.warmup_steps}, then {optim.decay} decay"
        )
    if teacher_cfg is not None:
        lines.append(
            f"teacher (random weights, forward only): {teacher_cfg.family} "
            f"L{teacher_cfg.num_layers} H{teacher_cfg.hidden_size}, compute "
            f"{teacher_cfg.dtype}; its forward pass is in ours' FLOPs/token"
        )
    return lines


def _vs_torch(
    setup: experiment.Setup,
    kind: str,
    initial: Any,
    batches: list[Batch],
    seconds: float,
    print_fn: Callable[[str], None],
) -> tuple[dict[str, Any], str]:
    """The reference side, transformers' model from the same initial parameters: its
    figures and what ran it."""
    import torch
    import transformers

    optim = setup.optim
    if optim.name != "adamw":
        print_fn(f"note: ours runs {optim.name}; torch has none, the reference runs AdamW")
    ref = bench_torch(setup.cfg, kind, optim, initial, batches, seconds)
    return ref, (
        f"reference (torch {torch.__version__}, transformers "
        f"{transformers.__version__}, {ref['model']}, fused AdamW, "
        f"{ref['device']} {ref['dtype']}, {torch.get_num_threads()} threads)"
    )


def bench_train(
    config: Any, seconds: float, vs_torch: bool, print_fn: Callable[[str], None] = print
) -> dict[str, Any]:
    """Runs the benchmark the module docstring describes and prints its lines.

    Returns {"ours": figures, "reference": figures or None, "flops": {"ours", "reference"},
    "peak_flops"}, with step_ms, seq_per_s, tokens_per_s, mfu, first_loss, last_loss,
    eval_loss, peak_memory per side.
    """
    if not seconds > 0:
        raise ValueError(f"--seconds={seconds}: must be > 0")
    standin = int(config.train.steps) == 0  # fine-tuning: epochs over data not read here
    if standin:
        config = config.copy_and_resolve_references()
        config.train.steps = STANDIN_STEPS
    setup = experiment.build_setup(config)
    cfg, optim, task = setup.cfg, setup.optim, setup.task
    kind = reference_kind(cfg, task)
    if vs_torch and kind is None:
        raise ValueError(
            f"--vs_torch: transformers has no training reference for the "
            f"{task.name} task ({cfg.family} with heads {', '.join(cfg.heads)})"
        )
    if vs_torch and optim.grad_accum_steps != 1:
        raise ValueError(
            f"--vs_torch times single steps; optim.grad_accum_steps="
            f"{optim.grad_accum_steps} must be 1"
        )
    batch_size, seq_len = int(config.train.batch_size), int(config.max_seq_length)
    masked = "max_predictions_per_seq" in config  # pretraining objectives (MLM heads)
    # A batch that does not fit is halved until it does (a preset's batch is for a pod).
    fitted, memory = aot.fit_batch(setup, batch_size, seq_len, aot.abstract_teacher(task), print_fn)
    if fitted != batch_size:
        print_fn(
            f"memory: timing batch {fitted} instead of train.batch_size={batch_size}, "
            f"the largest halving that fits ({size(memory.total)} per device)"
        )
        batch_size = fitted
    batches = task.synthetic_batches(cfg, batch_size, seq_len, setup.seed, NUM_BATCHES)
    flops = {
        "ours": task.flops(cfg, seq_len).total,
        "reference": (
            train_flops_per_token(cfg, seq_len, 1.0) if masked else task.flops(cfg, seq_len)
        ).total,
    }
    peak, source = resolve_peak_flops(float(config.train.peak_flops), cfg.dtype)
    n = jax.device_count()
    for line in _setup_lines(config, setup, batch_size, seq_len, flops, peak, source, standin):
        print_fn(line)
    ours = bench_ours(setup, batches, seconds, keep_initial=vs_torch)
    ours.update(_rates(ours, batch_size, seq_len, flops["ours"], peak, n))
    initial = ours.pop("initial", None)
    print_fn(_side_line(f"ours (jax {jax.__version__}, jit, donated state)", ours))
    result = {"ours": ours, "reference": None, "flops": flops, "peak_flops": peak}
    if not vs_torch:
        print_fn(f"ours={ours['tokens_per_s']:.0f} unit=tokens/s mfu={ours['mfu']:.4f}")
        return result

    ref, versions = _vs_torch(setup, kind, initial, batches, seconds, print_fn)
    ref.update(_rates(ref, batch_size, seq_len, flops["reference"], peak, n))
    result["reference"] = ref
    print_fn(_side_line(versions, ref))
    diff = abs(ours["eval_loss"] - ref["eval_loss"])
    print_fn(
        f"check: first-step loss without dropout: ours={ours['eval_loss']:.6f} "
        f"reference={ref['eval_loss']:.6f} diff={diff:.2e}"
    )
    ratio = ours["tokens_per_s"] / ref["tokens_per_s"]
    print_fn(
        f"ratio={ratio:.2f} ours={ours['tokens_per_s']:.0f} "
        f"reference={ref['tokens_per_s']:.0f} unit=tokens/s"
    )
    return result
