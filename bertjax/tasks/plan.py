"""N-phase training plans (`config.phases`): a list of phases, each its share of
train.steps at its own sequence length, batch, masking, data and learning-rate segment.
It generalises phase2 (one more phase at another length) to the multi-phase recipes of
ModernBERT (1024 -> 8192 tokens), mmBERT (masking 30% -> 15% -> 5%, a new mixture per
phase), EuroBERT (an annealing phase on an adjusted mixture) and NeoBERT (1024 -> 4096).

config.phases is a tuple of dicts, or a dict of them named p1, p2, ... in the order they
run (so that one key can be overridden: --config.phases.p2.data_dir=DIR); recipes:
configs/plans.py. Each phase is a dict of these keys (0 / "": the run's value):

  name=""                   a label for the log and `describe`
  share=0.0                 its part of train.steps; the shares sum to 1
  max_seq_length=0          tokens per row (0: config.max_seq_length); its data is
                            prepared at this length
  max_predictions_per_seq=0 masked positions per row (0: config.max_predictions_per_seq
                            at the run's length and rate, else ceil(rate x length))
  batch_size=0              rows per train step (0: train.batch_size)
  tokens_per_step=0         instead of batch_size: rows = tokens_per_step / length
  data_dir=""               its prepared data ("": the previous phase's when it has the
                            same length, else data.dir)
  mixture=None              instead of data_dir: weighted sources (bertjax/data/mixture.py);
                            empty sources: the previous phase's, at the same length
  masking={}                dynamic masking: this phase's changes to config.masking, any
                            MaskingConfig field but max_predictions_per_seq (the key
                            above), e.g. {"masked_lm_prob": 0.05, "strategy": "span"}
  learning_rate=0.0         > 0: the rate in this phase (constant, or where its decay
                            starts); 0: the run's schedule (optim.*) goes on
  decay_shape=""            linear | cosine | 1-sqrt: the phase decays to
                            optim.end_learning_rate over its updates, from learning_rate
                            or from the run's schedule where the phase starts
  rope_theta=0.0            > 0: the rotary base of the global-attention layers in this
                            phase (ModernBERT and mmBERT: 10,000 at 1,024 tokens, then
                            160,000); the last phase's is model.rope_theta

Phase boundaries fall on optimizer-update boundaries (multiples of grad_accum_steps): phase
i ends at round(train.steps x the shares up to i) rounded down to one. The learning-rate
segments replace the run's schedule in their phases, but never inside the warmup
(bertjax/schedules.py `make_schedule`). Exact resume holds in every phase: a checkpoint
records the phase and the batches consumed in it (bertjax/train.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from bertjax.tasks.base import Phase

KEYS = {
    "name": "",
    "share": 0.0,
    "max_seq_length": 0,
    "max_predictions_per_seq": 0,
    "batch_size": 0,
    "tokens_per_step": 0,
    "data_dir": "",
    "mixture": None,
    "masking": None,
    "learning_rate": 0.0,
    "decay_shape": "",
    "rope_theta": 0.0,
}
SHAPES = ("linear", "cosine", "1-sqrt")
_SHARE_TOLERANCE = 1e-6


def phases_of(config: Any) -> list[dict[str, Any]]:
    """config.phases as plain dicts with every key (defaults filled), checked: unknown
    keys, shares, lengths and rates; ValueError naming `phases[i].key` (or, for named
    phases, `phases.pN.key`) otherwise. Each dict's "_key" is that prefix."""
    given = _ordered(config.get("phases") or ())
    if given and float(config.get("phase2", {}).get("fraction", 0) or 0) > 0:
        raise ValueError(
            f"phase2.fraction={config.phase2.fraction} and phases: give one "
            "(a plan's phases include the second length)"
        )
    out = []
    for key, phase in given:
        d = dict(phase.to_dict() if hasattr(phase, "to_dict") else phase)
        unknown = sorted(set(d) - set(KEYS))
        if unknown:
            raise ValueError(f"{key}.{unknown[0]}: unknown phase key (expected {', '.join(KEYS)})")
        out.append({**KEYS, **d, "_key": key})
    for p in out:
        _check(config, p)
    total = sum(float(p["share"]) for p in out)
    if out and abs(total - 1.0) > _SHARE_TOLERANCE:
        shares = ", ".join(f"{p['_key']}.share={p['share']}" for p in out)
        raise ValueError(f"phases: the shares sum to {total:g}, not 1 ({shares})")
    return out


def _ordered(phases: Any) -> list[tuple[str, Any]]:
    """config.phases as a list of (the key naming the phase, the phase): a tuple as given
    (phases[0], ...); named phases p1, p2, ... (a dict, so that
    --config.phases.p2.data_dir=DIR overrides one key) in the order of their numbers."""
    if not (isinstance(phases, Mapping) or hasattr(phases, "keys")):
        return [(f"phases[{i}]", p) for i, p in enumerate(phases)]
    names = list(phases.keys())
    want = [f"p{i}" for i in range(1, len(names) + 1)]
    if sorted(names) != sorted(want):
        raise ValueError(
            f"phases: named {', '.join(sorted(names))}; name them "
            f"{', '.join(want)} (the order they run in)"
        )
    return [(f"phases.{n}", phases[n]) for n in want]


def _check(config: Any, p: Mapping[str, Any]) -> None:
    def bad(key: str, why: str) -> ValueError:
        return ValueError(f"{p['_key']}.{key}={p[key]!r}: {why}")

    if not float(p["share"]) > 0:
        raise bad("share", "must be positive")
    for key in ("max_seq_length", "max_predictions_per_seq", "batch_size", "tokens_per_step"):
        if int(p[key]) < 0:
            raise bad(key, "must be >= 0")
    if p["batch_size"] and p["tokens_per_step"]:
        raise bad("tokens_per_step", "give batch_size or tokens_per_step, not both")
    length = int(p["max_seq_length"] or config.max_seq_length)
    if p["tokens_per_step"] and int(p["tokens_per_step"]) % length:
        raise bad("tokens_per_step", f"not a whole number of rows of {length} tokens")
    _check_masking(config, p)
    if float(p["rope_theta"]) < 0:
        raise bad("rope_theta", "must be >= 0")
    if float(p["learning_rate"]) < 0:
        raise bad("learning_rate", "must be >= 0")
    if p["decay_shape"] and p["decay_shape"] not in SHAPES:
        raise bad("decay_shape", f"expected one of {', '.join(SHAPES)}")
    if p["data_dir"] and p["mixture"]:
        raise bad("mixture", "give data_dir or mixture, not both")
    mixture = p["mixture"]
    if mixture is not None and not (isinstance(mixture, Mapping) or hasattr(mixture, "to_dict")):
        raise bad("mixture", "expected a dict of sources and weights or temperature")


def _masking_of(p: Mapping[str, Any]) -> dict[str, Any]:
    """A phase's masking changes as a plain dict ({} when it has none)."""
    m = p["masking"] or {}
    return dict(m.to_dict() if hasattr(m, "to_dict") else m)


def _check_masking(config: Any, p: Mapping[str, Any]) -> None:
    """The phase's masking changes make a MaskingConfig with config.masking; otherwise a
    ValueError naming `phases[i].masking.FIELD`."""
    from bertjax.data.masking import MaskingConfig

    key, m = f"{p['_key']}.masking", p["masking"]
    if m is not None and not (isinstance(m, Mapping) or hasattr(m, "to_dict")):
        raise ValueError(f"{key}={m!r}: expected a dict of MaskingConfig fields")
    fields = [f.name for f in dataclasses.fields(MaskingConfig)]
    for name in _masking_of(p):
        if name == "max_predictions_per_seq":
            raise ValueError(f"{key}.{name}: give it as {p['_key']}.max_predictions_per_seq")
        if name not in fields:
            known = ", ".join(f for f in fields if f != "max_predictions_per_seq")
            raise ValueError(f"{key}.{name}: unknown masking key (expected {known})")
    base = config.masking.to_dict() if config.get("masking") is not None else {}
    for where, values in (("masking", base), (key, {**base, **_masking_of(p)})):
        try:  # config.masking first, so that its own mistake is not put on the phase
            MaskingConfig(**values)
        except ValueError as e:
            raise ValueError(str(e).replace("MaskingConfig.", f"{where}.", 1)) from None


def plan_phases(config: Any) -> list[Phase]:
    """The Phases config.phases describes (module docstring)."""
    total, accum = int(config.train.steps), int(config.optim.grad_accum_steps)
    data = config.get("data")
    masking = config.get("masking")
    rate = float(masking.masked_lm_prob) if masking is not None else 0.15
    out, start, cumulative = [], 0, 0.0
    specs = phases_of(config)
    for i, p in enumerate(specs):
        cumulative += float(p["share"])
        end = total if i == len(specs) - 1 else int(round(total * cumulative)) // accum * accum
        if not start < end:
            raise ValueError(
                f"{p['_key']}.share={p['share']} leaves an empty phase of train.steps={total}"
            )
        length = int(p["max_seq_length"] or config.max_seq_length)
        batch = (
            int(p["tokens_per_step"]) // length
            if p["tokens_per_step"]
            else int(p["batch_size"] or config.train.batch_size)
        )
        phase_rate = float(_masking_of(p).get("masked_lm_prob", rate))
        predictions = int(p["max_predictions_per_seq"]) or (
            int(config.max_predictions_per_seq)
            if length == int(config.max_seq_length) and phase_rate == rate
            else math.ceil(phase_rate * length)
        )
        options = {
            "max_seq_length": length,
            "max_predictions_per_seq": predictions,
            "mask_rate": phase_rate,  # what trains, for `describe`
            "key": p["_key"],
            "keys": (
                f"{p['_key']}.max_seq_length",
                p["_key"] + (".mixture.sources" if p["mixture"] else ".data_dir"),
            ),
            "batch_key": f"{p['_key']}.batch_size",
            "name": p["name"] or f"phase {i + 1}",
            "masking": _masking_of(p),  # changes to config.masking
            "learning_rate": float(p["learning_rate"]),
            "decay_shape": p["decay_shape"],
            "rope_theta": float(p["rope_theta"]),
            "mixture": _mixture(p["mixture"]),
        }
        source = p["data_dir"] or (config.data.dir if data is not None else "")
        prev = out[-1] if out else None
        same = prev is not None and prev.options["max_seq_length"] == length
        if same and not p["data_dir"] and not options["mixture"]:
            source = prev.source
        mix = options["mixture"]
        if mix is not None and not mix.get("sources") and same and prev.options["mixture"]:
            mix["sources"] = prev.options["mixture"]["sources"]
        if mix:  # checked, logged and evaluated on: its first source
            source = (mix.get("sources") or ("",))[0]
        out.append(Phase(i, start, end, batch, source, options))
        start = end
    return out


def segments(phases: list[Phase], accum: int) -> tuple[tuple[int, int, float, str], ...]:
    """Per phase with a learning-rate segment: (first update, end update, learning_rate,
    decay_shape) for bertjax/schedules.py."""
    return tuple(
        (
            p.start // accum,
            p.end // accum,
            float(p.options["learning_rate"]),
            str(p.options["decay_shape"]),
        )
        for p in phases
        if p.options.get("learning_rate") or p.options.get("decay_shape")
    )


def masking(config: Any, phase: Phase, predictions: int) -> Any:
    """The MaskingConfig of `phase` (dynamic masking): config.masking's, with the fields
    the phase's `masking` sets."""
    from bertjax.data.from_config import masking_config

    return dataclasses.replace(
        masking_config(config, predictions), **(phase.options.get("masking") or {})
    )


def _mixture(mixture: Any) -> dict[str, Any] | None:
    if not mixture:
        return None
    d = dict(mixture.to_dict() if hasattr(mixture, "to_dict") else mixture)
    return {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in d.items()}


def check_data(task: Any, phase: Phase, manifest: Any) -> None:
    """Before any work: a phase that sets its masking has dynamically masked data; a
    mixture's weights and sources are sound (bertjax/data/mixture.py)."""
    changes = phase.options.get("masking") or {}
    if manifest["masking"] != "dynamic" and changes:
        key, value = next(iter(changes.items()))
        raise ValueError(
            f"{phase.options['key']}.masking.{key}={value!r}: "
            f"{manifest.path} holds static masks (prepare it with "
            "--config.data.masking=dynamic)"
        )
    if phase.options.get("mixture"):
        _mixture_sources(task, phase)


def _mixture_sources(task: Any, phase: Phase) -> tuple[list[str], list[Any], Any]:
    """(sources, their manifests, weights) of a mixture phase, checked."""
    from bertjax import paths
    from bertjax.data.mixture import check_sources, mixture_weights

    key, mix = f"{phase.options['key']}.mixture", phase.options["mixture"]
    sources = list(mix.get("sources") or ())
    weights = mixture_weights(key, mix, [0] * len(sources)) if mix.get("weights") else None
    manifests = []
    for i, source in enumerate(sources):
        if not paths.exists(paths.join(source, "manifest.json")):
            raise FileNotFoundError(
                2, "no prepared data (manifest.json) there", f"{key}.sources[{i}]: {source}"
            )
        manifests.append(task.manifest(dataclasses.replace(phase, source=source)))
    check_sources(key, sources, manifests)
    if weights is None:
        weights = mixture_weights(
            key, mix, [sum(s["examples"] for s in m.shards("train")) for m in manifests]
        )
    return sources, manifests, weights


def mixture_digest(task: Any, phase: Phase) -> str:
    """sha256 of a mixture phase's sources' manifest digests and weights, in content
    order: what a resumed run checks (the paths may change)."""
    import hashlib

    _, manifests, weights = _mixture_sources(task, phase)
    pairs = sorted((m.digest(), float(w)) for m, w in zip(manifests, weights, strict=True))
    return hashlib.sha256(repr(pairs).encode()).hexdigest()


def mixture_batches(task: Any, phase: Phase, start_step: int) -> Any:
    """The task's train Batches of a mixture phase from `start_step` (bertjax/data/
    mixture.py): one pipeline per source, rows mixed by weight."""
    import jax

    from bertjax.data.mixture import Mixture
    from bertjax.tasks.base import Batches

    sources, manifests, weights = _mixture_sources(task, phase)
    pipes: list[Any] = []

    def open_source(i: int, start: int) -> Any:
        pipe = task._pipeline(
            dataclasses.replace(phase, source=sources[i]), "train", start, True
        )  # the task's own reader, one per source
        pipes.append(pipe)
        return iter(pipe)

    names = list(
        phase.options["mixture"].get("names") or [s.rstrip("/").rsplit("/", 1)[-1] for s in sources]
    )
    if len(set(names)) < len(names):  # one metric per source: number the names
        names = [f"{i}_{n}" for i, n in enumerate(names)]
    mix = Mixture(
        names,
        [m.digest() for m in manifests],
        weights,
        phase.batch_size // jax.process_count(),
        int(task.config.seed),
        jax.process_index(),
        open_source,
        start_step,
    )
    seq_len = pipes[0].max_seq_length
    return Batches(
        mix, seq_len, task.flops(task.cfg, seq_len, pipes[0].max_predictions_per_seq), mix.close
    )


def describe(phases: list[Phase], flops_per_token: Any, accum: int = 1) -> list[str]:
    """One line per phase: steps, batch, tokens, FLOPs, masking, learning rate, data.
    `flops_per_token(phase)`: training FLOPs per token of the phase."""
    lines = []
    for p in phases:
        o, steps = p.options, p.end - p.start
        tokens = steps * p.batch_size * int(o["max_seq_length"])
        flops = tokens * float(flops_per_token(p))
        mask = f"mask {o['mask_rate']:.0%}"
        if (o.get("masking") or {}).get("strategy"):
            mask += f" {o['masking']['strategy']}"
        lr = f"lr {o['learning_rate']:g}" if o.get("learning_rate") else "lr: schedule"
        if o.get("decay_shape"):
            lr += f", {o['decay_shape']} decay"
        if o.get("rope_theta"):
            lr += f"; rope theta {o['rope_theta']:g}"
        data = "mixture" if o.get("mixture") else p.source or "(unset)"
        lines.append(
            f"  {o.get('name') or f'phase {p.index + 1}'}: steps {p.start:,}.."
            f"{p.end:,} ({steps // accum:,} updates), batch {p.batch_size:,} x "
            f"{o['max_seq_length']}, {tokens:,} tokens, {flops:.3e} FLOPs; {mask} "
            f"(<= {o['max_predictions_per_seq']}/row); {lr}; data {data}"
        )
    return lines
