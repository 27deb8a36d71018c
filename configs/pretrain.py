r"""Pretraining configs for every preset of the five families.

  python -m bertjax describe --config=configs/pretrain.py:bert_base
  python -m bertjax describe --config=configs/pretrain.py:albert_base,runlocal \
      --config.model.num_layers=4

The part after the colon is `PRESET[,knob...]`. Knobs:
  runlocal   shrink sequence length (and later batch and steps) to run on a laptop CPU.
Everything else is overridden with --config.KEY=VALUE; an unknown key is an error.
Presets: bert_{tiny,mini,small,medium,base,large}, bert_L{2..12}_H{128..768},
roberta_{base,large}, albert_{base,large,xlarge,xxlarge}, distilbert_base,
electra_{small,base,large}.
"""

import ml_collections

from bertjax import presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name, *knobs = (arg or "bert_tiny").split(",")
    unknown = sorted(set(knobs) - {"runlocal"})
    if unknown:
        raise ValueError(f"unknown config knob(s) {unknown} in {arg!r}; known: runlocal")
    config = ml_collections.ConfigDict()
    config.preset = name
    # Every ModelConfig field is present, so any can be overridden and typos fail.
    config.model = presets.model_config(name).to_dict()
    config.tokenizer = ml_collections.ConfigDict(dict(
        # Directory with tokenizer.json, or vocab.txt / vocab.json + merges.txt / spiece.model.
        path="",
    ))
    config.max_seq_length = 128  # sequence length for FLOPs figures and training
    config.max_predictions_per_seq = 20  # masked positions per sequence (sparse MLM head)
    config.seed = 0
    if "runlocal" in knobs:
        config.max_seq_length = 64
        config.max_predictions_per_seq = 10
    return config
