"""The reference of `bench train --vs_torch` (bench_train.py's docstring): transformers'
PyTorch model of the config's family and heads, loaded with OUR initial parameters
(the export name map, bertjax/convert/hf.py), trained on the same synthetic batches
with torch.optim.AdamW (fused; the same schedule, betas, eps, weight decay and decay
mask) and clip_grad_norm_, timed as ours (bench_timing.py).

torch and transformers are imported only inside these functions.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from bertjax.models import ModelConfig
from bertjax.models.registry import family
from bertjax.optim import OptimConfig, make_schedule
from bertjax.tools.bench_timing import Batch, _max_rss, _timed

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
        if not f".{k}".endswith(
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
    Classification: the labels [B] as they are (int64 classes, float32 targets). Token
    classification: the tags [B, L], -100 where label_weights is 0 (transformers' loss
    is the mean over the others, as ours over the weighted tokens). Question answering:
    the spans' start and end token indices [B]."""
    import torch

    out = []
    for b in batches:
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        if cfg.type_vocab_size:
            inputs["token_type_ids"] = b["token_type_ids"]
        if kind == "classification":
            inputs["labels"] = b["labels"]
        elif kind == "token_classification":  # unlabelled pieces and padding: -100
            inputs["labels"] = np.where(b["label_weights"] > 0, b["labels"], -100)
        elif kind == "question_answering":
            inputs["start_positions"], inputs["end_positions"] = b["start"], b["end"]
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
