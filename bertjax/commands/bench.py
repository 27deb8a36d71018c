r"""`python -m bertjax bench data|train`: figures printed side by side with a reference.

  python -m bertjax bench data --config=configs/pretrain.py:bert_base [--config.data.dir=DIR]
  python -m bertjax bench prepare --config=configs/pretrain.py:bert_base [--workers=1,2]
  python -m bertjax bench train --config=configs/pretrain.py:bert_mini \
      --config.train.batch_size=32 [--vs_torch] [--seconds=20]
  python -m bertjax bench train --config=configs/finetune.py:sst2,bert_mini [--vs_torch]

`bench data` times the input pipeline (dynamic masking) against transformers'
DataCollatorForLanguageModeling on the same pre-tokenized examples; its last line
is `ratio=R ours=X reference=Y unit=seq/s`. `bench prepare` times `prepare data` with
the config's settings on `config.data.source` (the demo corpus by default), statically
and dynamically masked, for each worker count: MB of text/s and instances written/s,
in all and per worker. `bench train` (bertjax/tools/bench_train.py)
times our jitted train step on synthetic batches (no dataset is read, fine-tuning
configs included) and, with --vs_torch, transformers' PyTorch model of the same family,
size and heads (BertForPreTraining, BertForSequenceClassification, ...) from the same
initial weights; its last line is `ratio=R ours=X reference=Y unit=tokens/s`
(`ours=X unit=tokens/s mfu=M` alone). A classification or tagging config that names a
tokenizer (config.init_from or config.tokenizer.path) is timed on its own train
examples instead, packed, against transformers fed padded to max_seq_length and with
dynamic padding, counting real tokens (bertjax/tools/bench_real.py).
Benchmarks print figures; they are never timed assertions in tests.
"""

from __future__ import annotations

from absl import flags

from bertjax.commands import flags as common

_SECONDS = flags.DEFINE_float("seconds", 10.0, "How long to time each side.")
_VS_TORCH = flags.DEFINE_bool(
    "vs_torch",
    False,
    "bench train: also time transformers' "
    "PyTorch model of the same family, size and heads, from our "
    "weights.",
)

_WORKERS = flags.DEFINE_list("workers", ["1", "2"], "bench prepare: the worker counts to time.")

HELP = {
    "bench data": common.Usage((common.CONFIG, _SECONDS), "data.md"),
    "bench prepare": common.Usage((common.CONFIG, _WORKERS), "benchmarks.md"),
    "bench train": common.Usage((common.CONFIG, _SECONDS, _VS_TORCH), "benchmarks.md"),
}


def main(argv: list[str]) -> None:
    what = argv[1:]
    if what == ["data"]:
        from bertjax.data import bench

        config = common.required(common.CONFIG)
        bench.bench_data(
            data_dir=config.data.dir or None,
            seq_len=config.max_seq_length,
            strategy=config.masking.strategy,
            seconds=_SECONDS.value,
            max_predictions_per_seq=config.max_predictions_per_seq,
        )
    elif what == ["prepare"]:
        from bertjax.data.bench_prepare import bench_prepare

        bench_prepare(common.required(common.CONFIG), workers=[int(w) for w in _WORKERS.value])
    elif what == ["train"]:
        from bertjax.tools import bench_real, bench_train

        config = common.required(common.CONFIG)
        if bench_real.available(config):  # a classification or tagging task's own examples
            bench_real.bench_real(config, _SECONDS.value, _VS_TORCH.value)
        else:
            bench_train.bench_train(config, _SECONDS.value, _VS_TORCH.value)
    else:
        raise ValueError("usage: python -m bertjax bench data|prepare|train --config=...")
