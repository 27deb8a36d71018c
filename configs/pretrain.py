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

# Instances per family: BERT pairs with NSP, ALBERT pairs with SOP, RoBERTa packs
# FULL-SENTENCES, ELECTRA and DistilBERT train MLM-only on single segments.
_INSTANCES = {"bert": "nsp", "albert": "sop", "roberta": "full_sentences", "electra": "mlm",
              "distilbert": "mlm"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name, *knobs = (arg or "bert_tiny").split(",")
    unknown = sorted(set(knobs) - {"runlocal"})
    if unknown:
        raise ValueError(f"unknown config knob(s) {unknown} in {arg!r}; known: runlocal")
    config = ml_collections.ConfigDict()
    config.preset = name
    # Every ModelConfig field is present, so any can be overridden and typos fail.
    config.model = presets.model_config(name).to_dict()
    family = config.model.family
    config.tokenizer = ml_collections.ConfigDict(dict(
        # Directory with tokenizer.json, or vocab.txt / vocab.json + merges.txt / spiece.model.
        # Empty: `prepare data` trains one of the family's kind on data.source.
        path="",
        vocab_size=8000,  # when trained by `prepare data` (tiny; real runs bring their own)
        lowercase=family != "roberta",  # byte-level BPE (RoBERTa) is always cased
    ))
    # Data preparation and input pipeline; defaults follow each family's paper.
    config.data = ml_collections.ConfigDict(dict(
        source="demo",  # demo | bert:GLOB | text:GLOB | jsonl:GLOB#FIELD | tfds:NAME[:SPLIT][#FEAT]
        dir="",  # prepared data directory (written by `prepare data`, read by training)
        instances=_INSTANCES[family],  # nsp | sop | full_sentences | doc_sentences | mlm
        short_seq_prob=0.1,  # share of shorter segments (BERT/ALBERT pairs)
        masking="static" if family in ("bert", "albert") else "dynamic",
        dupe_factor=10 if family in ("bert", "albert") else 1,  # static: masked copies
        masked_lm_prob=0.15,
        mask_strategy="ngram" if family == "albert" else "token",  # token|whole_word|ngram|span
        max_ngram=3,  # ngram masking: lengths 1..3, p(n) proportional to 1/n (ALBERT)
        span_geometric_p=0.2,  # span masking: Geometric(p) lengths (SpanBERT)
        span_max_length=10,
        docs_per_shard=2000,  # documents per prepared shard; bounds preparation memory
        validation_every=10,  # every Nth shard goes to the validation split (0: none)
        num_workers=2,  # preparation processes; output is identical for any number
        max_inflight_mb=256,  # text read but not yet written during preparation
        shuffle_buffer=10_000,  # examples in the pipeline's shuffle buffer
    ))
    config.max_seq_length = 128  # sequence length for FLOPs figures and training
    config.max_predictions_per_seq = 20  # masked positions per sequence (sparse MLM head)
    config.seed = 0
    if "runlocal" in knobs:
        config.max_seq_length = 64
        config.max_predictions_per_seq = 10
        config.data.dupe_factor = min(config.data.dupe_factor, 2)
    return config
