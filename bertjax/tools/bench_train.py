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
a transformers training reference, so `--vs_torch` refuses them, and for now the other
fine-tuning heads (token classification, spans) too.

No TensorFlow is imported here (DESIGN.md); torch and transformers only with
`--vs_torch`. Single host only.
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from bertjax import experiment, sharding
from bertjax.flops import train_flops_per_token
from bertjax.memory import size
from bertjax.metrics import mfu, resolve_peak_flops
from bertjax.models import ModelConfig, build, init_params
from bertjax.models.registry import family
from bertjax.optim import OptimConfig, make_schedule
from bertjax.tools import aot
from bertjax.train import train_step_fn

Batch = dict[str, np.ndarray]
NUM_BATCHES = 4  # distinct batches cycled over: more would only cost memory
# The schedule's length for a config whose length is epochs over data bench does not read.
STANDIN_STEPS = 1000
# Heads of the transformers classes that train with their own losses (the references):
# pretraining (MLM + NSP / SOP) and sequence classification.
PRETRAINING_HEADS = frozenset({"pooler", "mlm", "nsp", "sop"})
CLASSIFICATION_HEADS = frozenset({"pooler", "classifier"})


def reference_kind(cfg: ModelConfig, task: Any) -> str | None:
    """ "pretraining" or "classification": the transformers model `--vs_torch` trains for
    this model and task; None when transformers has no training reference."""
    heads = set(cfg.heads)
    if task.teacher is not None:
        return None
    if "mlm" in heads and heads <= PRETRAINING_HEADS:
        return "pretraining"
    if "classifier" in heads and heads <= CLASSIFICATION_HEADS:
        return "classification"
    return None


# --- timing --------------------------------------------------------------------------


def _timed(
    run_step: Callable[[int], Any], wait: Callable[[Any], None], seconds: float, warmup: int
) -> dict[str, Any]:
    """Runs `warmup` untimed steps, then about `seconds` of steps with one wait at the end.

    run_step(i) dispatches step i and returns its loss (a device value); wait(x) blocks
    until x is computed. The timed step count comes from the last two warm-up steps, so
    the loop itself never syncs with the host. Returns steps, seconds, first and last
    losses (the device values).
    """
    first = run_step(0)
    wait(first)
    for i in range(1, warmup - 2):
        wait(run_step(i))
    start = time.perf_counter()
    wait(run_step(warmup - 2))
    wait(run_step(warmup - 1))
    per_step = (time.perf_counter() - start) / 2
    count = max(3, math.ceil(seconds / max(per_step, 1e-9)))
    start = time.perf_counter()
    for i in range(warmup, warmup + count):
        last = run_step(i)
    wait(last)
    return {"steps": count, "seconds": time.perf_counter() - start, "first": first, "last": last}


def _max_rss() -> int:
    """Peak resident memory of this process in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rates(
    timing: Mapping[str, Any],
    batch_size: int,
    seq_len: int,
    flops: float,
    peak: float,
    num_devices: int,
) -> dict[str, float]:
    steps_per_s = timing["steps"] / timing["seconds"]
    tokens = steps_per_s * batch_size * seq_len
    return {
        "step_ms": 1e3 / steps_per_s,
        "seq_per_s": steps_per_s * batch_size,
        "tokens_per_s": tokens,
        "mfu": mfu(flops, tokens, peak, num_devices),
    }


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


# --- the reference -------------------------------------------------------------------


def _torch_model(cfg: ModelConfig, params: Any, device: str) -> Any:
    """transformers' PyTorch model of `cfg`'s heads (BertForPreTraining,
    BertForSequenceClassification, ...) holding `params` (numpy tree)."""
    import torch
    import transformers

    from bertjax.convert import hf

    d = dict(hf.hf_configs(cfg)[""])
    hf_config = transformers.AutoConfig.for_model(d.pop("model_type"), **d)
    cls = getattr(transformers, hf.architecture(hf.parts(cfg)[0]))
    model = cls._from_config(hf_config, attn_implementation="sdpa")
    state = {
        k: torch.from_numpy(np.array(v))
        for k, v in hf.to_state_dicts(cfg, params)[""].items()  # writable copies for torch
    }
    info = model.load_state_dict(state, strict=False)
    # Only tied output weights (they share the loaded tensors) and buffers may be absent.
    untied = [
        k
        for k in info.missing_keys
        if not k.endswith(
            (
                ".decoder.weight",
                ".decoder.bias",
                "vocab_projector.weight",
                ".position_ids",
                ".token_type_ids",
            )
        )
    ]
    if untied or info.unexpected_keys:
        raise ValueError(
            f"loading our parameters into {type(model).__name__}: missing "
            f"{untied}, unexpected {info.unexpected_keys}"
        )
    model.tie_weights()
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        raise ValueError(f"{type(model).__name__}: the decoder is not tied to the embeddings")
    return model.to(device)


def _torch_batches(
    cfg: ModelConfig, kind: str, batches: list[Batch], device: str
) -> list[dict[str, Any]]:
    """The same batches as transformers' inputs. Pretraining: MLM labels [B, L] are -100
    except at the masked positions; NSP / SOP labels under the family's argument name.
    Classification: the labels [B] as they are (int64 classes, float32 targets)."""
    import torch

    out = []
    for b in batches:
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        if cfg.type_vocab_size:
            inputs["token_type_ids"] = b["token_type_ids"]
        if kind == "classification":
            inputs["labels"] = b["labels"]
        else:
            labels = np.full(b["input_ids"].shape, -100, np.int64)
            np.put_along_axis(labels, b["masked_lm_positions"], b["masked_lm_ids"], axis=1)
            inputs["labels"] = labels
            for head, arg in family(cfg.family).hf.label_args.items():
                if head in cfg.heads:
                    inputs[arg] = b["pair_labels"]
        out.append(
            {
                k: torch.from_numpy(v.astype(np.float32 if v.dtype.kind == "f" else np.int64)).to(
                    device
                )
                for k, v in inputs.items()
            }
        )
    return out


def _adamw(model: Any, optim: OptimConfig) -> Any:
    """torch AdamW with our decay mask: no decay on biases and LayerNorm parameters.

    Fused, as transformers' Trainer defaults to with torch >= 2.8 (`adamw_torch_fused`):
    on a CPU the unfused per-tensor loop costs ~25x more (1.2 s against 47 ms a step for
    BERT-Small's 29M parameters on 2 cores), a handicap no user of the reference pays.
    """
    import torch

    norms = {
        id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()
    }
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # tied parameters come once
        if p.requires_grad:  # DistilBERT's sinusoidal table is frozen, as ours
            (no_decay if name.endswith("bias") or id(p) in norms else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=0.0, betas=(optim.b1, optim.b2), eps=optim.eps, fused=True)


def bench_torch(
    cfg: ModelConfig,
    kind: str,
    optim: OptimConfig,
    params: Any,
    batches: list[Batch],
    seconds: float,
) -> dict[str, Any]:
    """Times transformers' model of `cfg` (`kind`: reference_kind's), starting from
    `params`; keys as `bench_ours` plus device, dtype and model (the class name)."""
    import torch

    cuda = jax.default_backend() == "gpu" and torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    model = _torch_model(cfg, params, device)
    if kind == "classification":  # transformers would guess it from num_labels and dtypes
        regression = batches[0]["labels"].dtype.kind == "f"
        model.config.problem_type = "regression" if regression else "single_label_classification"
    inputs = _torch_batches(cfg, kind, batches, device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=cuda)
    out: dict[str, Any] = {
        "device": device,
        "dtype": "bfloat16 autocast" if cuda else "float32",
        "model": type(model).__name__,
    }
    model.eval()
    with torch.no_grad(), autocast:
        out["eval_loss"] = float(model(**inputs[0]).loss)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = _adamw(model, optim)
    schedule = make_schedule(optim)
    lrs: list[float] = []
    forward = torch.compile(model) if cuda else model
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def run_step(i: int) -> Any:
        if i >= len(lrs):  # our schedule, precomputed in blocks outside the step
            lrs.extend(np.asarray(schedule(np.arange(len(lrs), 2 * i + 64))).tolist())
        for group in opt.param_groups:
            group["lr"] = lrs[i]
        with autocast:
            loss = forward(**inputs[i % len(inputs)]).loss
        loss.backward()
        if optim.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, optim.clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def wait(loss: Any) -> None:
        if cuda:
            torch.cuda.synchronize()

    # torch.compile traces and compiles during the first steps: warm up longer on GPU.
    timing = _timed(run_step, wait, seconds, warmup=6 if cuda else 3)
    out.update(
        steps=timing["steps"],
        seconds=timing["seconds"],
        first_loss=float(timing["first"]),
        last_loss=float(timing["last"]),
    )
    if cuda:
        out["peak_memory"], out["memory_source"] = torch.cuda.max_memory_allocated(), "cuda peak"
    else:
        out["peak_memory"], out["memory_source"] = _max_rss(), "process max RSS, both sides"
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
