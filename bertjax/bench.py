r"""`python -m bertjax bench data|train`: figures printed side by side with a reference.

  python -m bertjax bench data --config=configs/pretrain.py:bert_base [--config.data.dir=DIR]

`bench data` times the input pipeline (dynamic masking) against transformers'
DataCollatorForLanguageModeling on the same pre-tokenized examples; its last line
is `ratio=R ours=X reference=Y unit=seq/s`. `bench train` arrives with the training
issue. Benchmarks print figures; they are never timed assertions in tests.
"""

from __future__ import annotations

from absl import flags

from bertjax import cli

_SECONDS = flags.DEFINE_float("seconds", 10.0, "How long to time each side.")


def main(argv: list[str]) -> None:
    what = argv[1:]
    if what == ["data"]:
        from bertjax.data import bench

        config = cli.required(cli.CONFIG)
        bench.bench_data(data_dir=config.data.dir or None, seq_len=config.max_seq_length,
                         strategy=config.data.mask_strategy, seconds=_SECONDS.value,
                         max_predictions_per_seq=config.max_predictions_per_seq)
    elif what == ["train"]:
        raise ValueError("bench train arrives with the training issue")
    else:
        raise ValueError("usage: python -m bertjax bench data|train --config=...")
