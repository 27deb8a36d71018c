"""What the fine-tuning tasks share: a pretrained encoder, labelled examples in memory,
batches by epoch with dynamic padding, evaluation over whole splits.

  the model     config.init_from (a bertjax model directory or a transformers
                directory of any form and family) gives the encoder, its architecture
                and its tokenizer (finetune.from_scratch: all but the weights);
                without it, config.model from scratch with config.tokenizer.path.
                The task adds its heads.
  the steps     finetune.epochs over the train split (train.steps > 0 overrides), a
                warmup of finetune.warmup_proportion of them, then the optimizer's
                schedule (linear decay by default)
  the batches   batch k is a function of (config.seed, k): epoch e = k // steps per
                epoch is a permutation of the train split seeded by (seed, e), cut into
                train.batch_size rows (a last partial batch of an epoch is left out);
                each batch is padded to its longest row rounded up to
                finetune.pad_multiple, not to max_seq_length, so short sentences do
                not pay for 128 tokens (one compiled step per length)
  evaluation    every dev split whole: rows sorted by length into batches, the last
                one filled with empty rows of weight 0, predictions put back in order;
                at the end of every epoch and every train.eval_every steps

Subclasses give the examples, features, heads, loss, predictions and scores.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from bertjax import flops as flops_lib
from bertjax import steps
from bertjax.models.config import ModelConfig
from bertjax.tasks.base import Batches, Context, Phase, Task, packing, random_batches

# ModelConfig fields that describe how a run computes, taken from the config; the rest
# of the architecture comes from the pretrained checkpoint.
RUN_FIELDS = ("dtype", "param_dtype", "scan_layers", "remat")


@dataclasses.dataclass
class Features:
    """Tokenized examples: `ids[i]` and `types[i]` int32 rows of varying length, and in
    `extra` per-example arrays ([examples, ...]) or per-token lists (a row each, as long
    as the example's ids)."""

    ids: list[np.ndarray]
    types: list[np.ndarray]
    extra: dict[str, Any]

    def __len__(self) -> int:
        return len(self.ids)


def read_source_config(path: str, key: str = "config.init_from") -> ModelConfig:
    """The model config of a checkpoint without reading its parameters."""
    from bertjax import modeldir, paths
    from bertjax.convert import hf, hfdir

    if not paths.isdir(path):
        raise FileNotFoundError(f"{key}={path}: no such directory")
    if hfdir.is_hf_dir(path):
        pair = {p: paths.join(path, p) for p in hfdir.PAIR}
        dirs = pair if all(paths.isdir(d) for d in pair.values()) else {"": path}
        configs = {p: hfdir.read_json(paths.join(d, "config.json")) for p, d in dirs.items()}
        return hf.config_from_hf(configs, source=paths.join(path, "config.json"), heads=())
    return modeldir.read_config(path)[0]


class FinetuneTask(Task):
    """Shared machinery; see the module docstring."""

    # Whether predict_fn gives one output per token ([batch, length, ...]: tags, span
    # logits) rather than one per example.
    per_token = False
    # The head whose logits the loss reads and predict_fn returns.
    head = ""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._tokenizer: Any = None
        self._features: dict[str, Features] = {}
        self.cfg: ModelConfig | None = None

    # -- the model -----------------------------------------------------------------

    def head_logits(
        self, model: Any, params: Any, batch: Mapping[str, Any], train: bool, rng: Any
    ) -> Any:
        """This task's head's logits on `batch` (dropout from `rng` when `train`)."""
        per_sequence = "labels" if self.head == "classifier" else None
        logits, _ = steps.apply(
            model, params, batch, train, rng, heads=(self.head,), **packing(batch, per_sequence)
        )
        return logits[self.head]

    def predict_fn(self, model: Any) -> Any:
        """(params, batch) -> what `predicted` collects per batch (the head's logits)."""
        return lambda params, batch: self.head_logits(model, params, batch, False, None)

    def model_config(self, cfg: ModelConfig) -> ModelConfig:
        """The encoder of config.init_from (when set) with this run's compute switches,
        and this task's heads and labels."""
        if self.config.init_from:
            source = read_source_config(self.config.init_from)
            cfg = source.replace(
                **{k: getattr(cfg, k) for k in RUN_FIELDS}, heads=(), num_labels=0, label_names=()
            )
        return cfg.replace(heads=self.heads(cfg), **self.label_fields())

    def label_fields(self) -> dict[str, Any]:
        """num_labels and label_names of the heads (none by default)."""
        return {}

    def weights_from(self) -> str:
        """config.init_from, unless finetune.from_scratch (its architecture and tokenizer
        with fresh weights: the baseline a pretrained start should beat)."""
        return "" if self.config.finetune.get("from_scratch", False) else super().weights_from()

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from bertjax import modeldir

            path = self.config.init_from or self.config.tokenizer.path
            if not path:
                raise ValueError(
                    "fine-tuning needs a tokenizer: set --config.init_from "
                    "(a pretrained model) or --config.tokenizer.path"
                )
            self._tokenizer = modeldir.any_tokenizer(path)
        return self._tokenizer

    # -- data ------------------------------------------------------------------------

    def features(self, split: str) -> Features:
        """The split's features, read and tokenized once."""
        if split not in self._features:
            self._features[split] = self.make_features(split)
        return self._features[split]

    def make_features(self, split: str) -> Features:
        raise NotImplementedError

    def dev_splits(self) -> tuple[str, ...]:
        return ("validation",)

    def _seq_len(self) -> int:
        return int(self.config.max_seq_length)

    def steps_per_epoch(self) -> int:
        n, batch = len(self.features("train")), int(self.config.train.batch_size)
        if n < batch:
            raise ValueError(
                f"train.batch_size={batch} is larger than the train split ({n} examples)"
            )
        return n // batch

    def train_steps(self) -> int:
        if int(self.config.train.steps) > 0:
            return int(self.config.train.steps)
        return max(1, math.ceil(float(self.config.finetune.epochs) * self.steps_per_epoch()))

    def warmup_steps(self, total: int) -> int | None:
        if int(self.config.finetune.get("warmup_steps", 0)) > 0:
            return int(self.config.finetune.warmup_steps)
        return int(round(float(self.config.finetune.warmup_proportion) * total))

    def eval_due(self, step: int) -> bool:
        every = int(self.config.train.eval_every)
        return (
            step % self.steps_per_epoch() == 0
            or step == self.train_steps()
            or (every > 0 and step % every == 0)
        )

    def phases(self) -> list[Phase]:
        return [
            Phase(
                0,
                0,
                self.train_steps(),
                int(self.config.train.batch_size),
                f"{self.name} train split ({len(self.features('train')):,} examples)",
            )
        ]

    def setup(self, ctx: Context) -> Any:
        self.cfg = ctx.cfg
        tok = self.tokenizer()
        if tok.vocab_size > ctx.cfg.vocab_size:
            raise ValueError(
                f"the tokenizer has {tok.vocab_size} tokens, more than "
                f"model.vocab_size={ctx.cfg.vocab_size}"
            )
        for split in ("train", *self.dev_splits()):
            self.features(split)  # bad data fails before the workdir is touched
        return None

    def pad(
        self,
        feats: Features,
        rows: np.ndarray,
        num_rows: int | None = None,
        length: int | None = None,
    ) -> dict[str, np.ndarray]:
        """A batch of `rows` padded to the pad multiple, or to `length` (and `num_rows`
        rows: the extra ones empty, weight 0)."""
        n = num_rows or len(rows)
        longest = max(len(feats.ids[r]) for r in rows)
        multiple = int(self.config.finetune.pad_multiple)
        if length is not None and longest > length:
            r = next(r for r in rows if len(feats.ids[r]) == longest)
            raise ValueError(
                f"{self.name} example {int(r)} has {longest} tokens, more than "
                f"a packed row's {length} (max_seq_length)"
            )
        length = length or min(self._seq_len(), -(-longest // multiple) * multiple)
        pad_id = self.tokenizer().pad_id
        ids = np.full((n, length), pad_id, np.int32)
        types = np.zeros((n, length), np.int32)
        mask = np.zeros((n, length), np.int32)
        for j, r in enumerate(rows):
            k = len(feats.ids[r])
            ids[j, :k], types[j, :k], mask[j, :k] = feats.ids[r], feats.types[r], 1
        batch = {
            "input_ids": ids,
            "token_type_ids": types,
            "attention_mask": mask,
            "weights": (np.arange(n) < len(rows)).astype(np.float32),
        }
        for key, values in feats.extra.items():
            if isinstance(values, list):  # one value per token, padded with 0
                col = np.zeros((n, length), values[0].dtype)
                for j, r in enumerate(rows):
                    col[j, : len(values[r])] = values[r]
            else:  # one value per example
                col = np.zeros((n, *values.shape[1:]), values.dtype)
                col[: len(rows)] = values[rows]
            batch[key] = col
        return batch

    def host_rows(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This host's rows of a global batch."""
        count, index = jax.process_count(), jax.process_index()
        b = len(batch["input_ids"]) // count
        return {k: v[index * b : (index + 1) * b] for k, v in batch.items()}

    def train_rows(self, step: int) -> np.ndarray:
        """The train examples of global batch `step` (0-based); see the module docstring."""
        feats, size = self.features("train"), int(self.config.train.batch_size)
        epoch, i = divmod(step, self.steps_per_epoch())
        order = np.random.default_rng([int(self.config.seed), epoch]).permutation(len(feats))
        return order[i * size : (i + 1) * size]

    def global_train_batch(self, step: int) -> dict[str, np.ndarray]:
        """Global batch `step` (0-based) of the run; see the module docstring."""
        feats, rows = self.features("train"), self.train_rows(step)
        method = str(self.config.finetune.get("packing", "off"))
        if method == "off":
            return self.pad(feats, rows)
        return self.packed(feats, rows, method)

    def packed(self, feats: Features, rows: np.ndarray, method: str) -> dict[str, np.ndarray]:
        """The same sequences as `pad(feats, rows)`, packed into rows of max_seq_length
        (docs/packing.md): as few as packer.pack finds, rounded up to a multiple of
        the devices, of a sixteenth of the batch and of 2, so a few shapes compile (a
        batch of 32 demo sequences: 12 to 14 rows, where an eighth wasted 2 of 16)."""
        from bertjax.data import packer

        token_keys = ("token_type_ids", *(k for k, v in feats.extra.items() if isinstance(v, list)))
        return packer.pack_batch(
            self.pad(feats, rows, length=self._seq_len()),
            self.tokenizer().pad_id,
            method,
            int(self.config.finetune.get("packing_max_sequences", 16)),
            row_multiple=max(2, jax.device_count(), len(rows) // 16),
            token_keys=token_keys,
        )

    def train_batches(self, phase: Phase, start_step: int) -> Batches:
        def batches():
            step = phase.start + start_step
            while True:
                yield self.host_rows(self.global_train_batch(step))
                step += 1

        return Batches(batches(), self._seq_len(), self.flops(self.cfg, self._seq_len()))

    def eval_batches(self, split: str) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
        """Global batches covering the split once, shortest rows first, and the row order
        they hold (to put predictions back)."""
        feats = self.features(split)
        size = int(self.config.train.batch_size)
        order = np.argsort([len(x) for x in feats.ids], kind="stable")
        return (
            [self.pad(feats, order[i : i + size], size) for i in range(0, len(order), size)],
            order,
        )

    def synthetic_batches(
        self, cfg: ModelConfig, batch_size: int, seq_len: int, seed: int, count: int
    ) -> list[dict[str, np.ndarray]]:
        """`count` batches of random rows for `bench train`, from a seeded numpy generator;
        no data and no tokenizer are read (ids come from model.vocab_size, as for
        pretraining configs).

        Every row is `seq_len` tokens, all attended: the padded worst case. Training pads
        a batch only to its longest row (rounded up to finetune.pad_multiple), so real
        batches of short sentences (SST-2's) are cheaper. Returns input_ids,
        token_type_ids (0) and attention_mask (1) [B, L] int32, weights [B] float32 (1),
        and the task's `synthetic_labels`.
        """
        return random_batches(
            cfg,
            batch_size,
            seq_len,
            seed,
            count,
            lambda rng, ids: {
                "input_ids": ids,
                "token_type_ids": np.zeros_like(ids),
                "attention_mask": np.ones_like(ids),
                "weights": np.ones(batch_size, np.float32),
                **self.synthetic_labels(rng, batch_size, seq_len),
            },
        )

    def synthetic_labels(
        self, rng: np.random.Generator, batch_size: int, seq_len: int
    ) -> dict[str, np.ndarray]:
        """Random labels, under the task's batch keys, for `synthetic_batches`."""
        del rng, batch_size, seq_len
        raise ValueError(
            f"bench train: the {self.name} task makes no synthetic labels "
            "(FinetuneTask.synthetic_labels)"
        )

    def flops(self, cfg: ModelConfig, seq_len: int) -> flops_lib.Flops:
        return flops_lib.train_flops_per_token(cfg, seq_len, 0.0)

    def predicted(self, ctx: Context, params: Any, split: str) -> np.ndarray:
        """The predict_fn outputs over a whole split, in its order; per-token outputs
        ([batch, length, ...]) are padded to max_seq_length first."""
        batches, order = self.eval_batches(split)
        outputs = []
        for b in batches:
            out = np.asarray(ctx.predict(params, self.host_rows(b)))
            if self.per_token:
                pad = [(0, 0)] * out.ndim
                pad[1] = (0, self._seq_len() - out.shape[1])
                out = np.pad(out, pad)
            outputs.append(out)
        return ordered(outputs, order)

    def scores(self, split: str, outputs: np.ndarray) -> dict[str, float]:
        """The task's metrics of the `predicted` outputs of a labelled split."""
        raise NotImplementedError

    def evaluators(self, ctx: Context, phase: Any) -> list[Any]:
        return [SplitScores(self, ctx, split) for split in self.dev_splits()]

    def test_files(self) -> dict[str, str]:
        """Test split -> the file `predict` writes."""
        return {"test": f"{self.name}.txt"}

    def write_predictions(self, ctx: Context, params: Any, split: str, path: str) -> None:
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        from bertjax import paths

        return {
            **super().meta(),
            "init_from": paths.absolute(self.config.init_from) if self.config.init_from else "",
        }


class SplitScores:
    """An evaluator: the task's scores over one whole dev split."""

    def __init__(self, task: FinetuneTask, ctx: Context, split: str) -> None:
        self.task, self.ctx, self.name = task, ctx, split

    def run(self, params: Any) -> dict[str, float]:
        return self.task.scores(self.name, self.task.predicted(self.ctx, params, self.name))


def ordered(predictions: Sequence[np.ndarray], order: np.ndarray) -> np.ndarray:
    """Predictions of sorted eval batches (padded rows included) in the split's order."""
    stacked = np.concatenate(list(predictions))[: len(order)]
    out = np.empty_like(stacked)
    out[order] = stacked
    return out
