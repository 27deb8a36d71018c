"""What a config trains (`describe`): the resolved training values (`training`: task,
batch, steps, optimizer, schedule, masking; the numbers configs/recipes.py gives, after
the overrides), then the parameter table and FLOPs per token of the model (`describe`,
also `init`'s table).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import jax

from bertjax import flops
from bertjax.models import ModelConfig, build, init_params


def param_shapes(cfg: ModelConfig) -> Any:
    """Abstract parameter tree of `cfg` (ShapeDtypeStructs; nothing is allocated)."""
    import flax.linen as nn

    return jax.eval_shape(lambda: nn.unbox(init_params(build(cfg))))


def count(tree: Any) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))


def param_table(params: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """Rows (module, copies, params per copy) at depth two; numbered layers are folded."""
    rows: OrderedDict[tuple[str, int], list[int]] = OrderedDict()
    for top, sub in params.items():
        children = sub.items() if isinstance(sub, Mapping) else [("", sub)]
        for name, leaf in children:
            folded = re.sub(r"_\d+$", "_*", name)
            n = count(leaf)
            key = (f"{top}/{folded}".rstrip("/"), n)
            rows.setdefault(key, []).append(n)
    return [(name, len(ns), n) for (name, n), ns in rows.items()]


def _summary(cfg: ModelConfig) -> str:
    return (
        f"{cfg.family} L={cfg.num_layers} H={cfg.hidden_size} A={cfg.num_heads} "
        f"I={cfg.intermediate_size} E={cfg.embed_dim} V={cfg.vocab_size}, heads "
        f"{', '.join(cfg.heads) or 'none'}"
    )


def describe(
    cfg: ModelConfig, seq_len: int, predictions: int, teacher: ModelConfig | None = None
) -> str:
    """The parameter table and FLOPs lines; with `teacher` (distillation) the FLOPs count
    its forward pass too."""
    params = param_shapes(cfg)
    lines = [_summary(cfg)]
    if "generator" in cfg.heads:
        g = cfg.generator_config()
        lines[0] += (
            f"; generator L={g.num_layers} H={g.hidden_size} A={g.num_heads} "
            f"I={g.intermediate_size} ({g.hidden_size / cfg.hidden_size:.3g} of the "
            "discriminator's width)"
        )
    width = max(len(r[0]) for r in param_table(params)) + 8
    lines.append(f"{'module':<{width}}{'params':>14}")
    for name, copies, n in param_table(params):
        label = f"{name} x{copies}" if copies > 1 else name
        lines.append(f"{label:<{width}}{n * copies:>14,}")
    lines.append(f"{'total':<{width}}{count(params):>14,}")
    if teacher is not None:
        lines.append(
            f"teacher (frozen, not in checkpoints): {_summary(teacher)}, "
            f"{count(param_shapes(teacher)):,} parameters, compute {teacher.dtype}"
        )
    mlm = any(h in cfg.heads for h in ("mlm", "generator"))
    heads = (
        (("dense MLM head", 1.0), ("sparse MLM head", predictions / seq_len))
        if mlm
        else (("no MLM head", 0.0),)
    )
    for label, f in heads:
        fl = flops.train_flops_per_token(cfg, seq_len, f, teacher)
        extra = f", teacher forward {fl.teacher:,.0f}" if teacher is not None else ""
        lines.append(
            f"training FLOPs/token at S={seq_len}, {label} (f={f:.3g}): "
            f"{fl.total:,.0f} (layers {fl.layers:,.0f}, attention "
            f"{fl.attention:,.0f}, head {fl.head:,.0f}{extra}); forward = 1/3"
        )
    return "\n".join(lines)


def _steps_line(config: Any, task: Any) -> str:
    """Steps, and the schedule over them: decay, warmup (fine-tuning without train.steps:
    epochs over a train split that describe does not read)."""
    from bertjax import experiment

    o = config.optim
    decay = f"{o.decay} decay to {o.end_learning_rate:g}" + (
        f" (power {o.power:g})" if o.decay == "polynomial" else ""
    )
    if "finetune" in config and int(config.train.steps) == 0 and not int(o.total_steps):
        f = config.finetune
        warmup = (
            f"{int(f.warmup_steps):,} warmup steps"
            if int(f.get("warmup_steps", 0))
            else f"warmup {float(f.warmup_proportion):.0%} of the steps"
        )
        return (
            f"steps: finetune.epochs={float(f.epochs):g} over the train split; "
            f"{warmup}, then {decay}"
        )
    optim = experiment.optim_config(config, task)
    updates = (
        f", {optim.total_steps:,} updates of {optim.grad_accum_steps} micro-batches"
        if optim.grad_accum_steps > 1
        else ""
    )
    if optim.decay == "wsd":  # bertjax/schedules.py; updates, as resolved from the config
        stable = optim.total_steps - optim.decay_steps
        decay = (
            f"{optim.learning_rate:g} to update {stable:,}, then a {optim.decay_shape} "
            f"decay to {optim.end_learning_rate:g} over {optim.decay_steps:,} updates"
            if optim.decay_steps
            else f"{optim.learning_rate:g} (stable, no decay)"
        )
        return (
            f"steps: {int(config.train.steps):,}{updates}; warmup-stable-decay: "
            f"{optim.warmup_steps:,} warmup updates, {decay}"
            + ("; the plan's phases set their own rates (below)" if optim.segments else "")
        )
    return (
        f"steps: {int(config.train.steps):,}{updates}; {optim.warmup_steps:,} warmup "
        f"steps, then {decay} at step {optim.total_steps:,}"
    )


def _packing_lines(config: Any) -> list[str]:
    """With packing on (data.packing or finetune.packing): how the FLOPs per token above
    become FLOPs per real token (docs/packing.md). The efficiency is the data's: describe
    does not read it."""
    for section in ("data", "finetune"):
        method = str(config.get(section, {}).get("packing", "off"))
        if method != "off":
            return [
                f"packing: {section}.packing={method}, at most "
                f"{int(config[section].packing_max_sequences)} sequences a row; FLOPs per "
                "real token = the training FLOPs/token above / the packing efficiency (the "
                "share of positions holding real tokens: `bench data` prints it for "
                "prepared data, `bench train` for a task's, training logs it as "
                "packing_efficiency): at 90% real, 1.11 x the figure"
            ]
    return []


def training(config: Any, task: Any) -> str:
    """The lines saying what trains, resolved: task, batch, steps and schedule, optimizer,
    masking (pretraining data) or the fine-tuning dataset."""
    t, o = config.train, config.optim
    phase2 = config.get("phase2")
    second = (
        f"; phase 2: the last {float(phase2.fraction):.0%} at "
        f"{int(phase2.max_seq_length)} tokens, batch "
        f"{int(phase2.batch_size) or int(t.batch_size):,}"
        if phase2 is not None and float(phase2.fraction) > 0
        else ""
    )
    lines = [
        f"task {task.name}: batch {int(t.batch_size):,} x {int(config.max_seq_length)} "
        f"tokens{second}",
        _steps_line(config, task),
        f"optimizer: {o.name} lr {o.learning_rate:g}, weight decay {o.weight_decay:g}, "
        f"b1 {o.b1:g} b2 {o.b2:g} eps {o.eps:g}, clip {o.clip_norm:g}"
        + (
            f", layer-wise lr decay {o.layer_decay:g} ({o.layer_decay_depth})"
            if float(o.layer_decay) != 1
            else ""
        ),
    ]
    data = config.get("data")
    if data is not None and "masking" in config and "max_predictions_per_seq" in config:
        copies = (
            f", {int(data.dupe_factor)} copies ({data.dupe_mode})"
            if data.masking == "static"
            else ""
        )
        lines.append(
            f"masking: {data.masking}{copies}, {config.masking.strategy}, "
            f"{float(config.masking.masked_lm_prob):.0%} ({config.masking.budget} budget), at most "
            f"{int(config.max_predictions_per_seq)} per sequence; instances "
            f"{data.instances}"
        )
    lines += _packing_lines(config)
    if config.get("phases"):  # an N-phase plan, phase by phase
        from bertjax import experiment

        lines += experiment.plan_lines(config, task, experiment.model_config(config, task))
    if "electra" in config:
        e = config.electra
        lines.append(
            f"electra: gen_weight {e.gen_weight:g}, disc_weight {e.disc_weight:g}, "
            f"temperature {e.temperature:g}"
        )
    if "finetune" in config:
        lines.append(
            f"fine-tuning: {config.finetune.dataset} from "
            f"{config.finetune.data or '(finetune.data unset)'}"
        )
    return "\n".join(lines)
