r"""`python -m bertjax init`: a freshly initialised model directory from a config.

  python -m bertjax init --config=configs/pretrain.py:bert_tiny --out=/tmp/bertjax_tiny

Prints the parameter table and writes a model directory (bertjax/modeldir.py)
that `fill_mask` and `export` read: the model `train` would start from (config.model
with the heads of the config's task). The tokenizer comes from
`--config.tokenizer.path`; when that is empty, a WordPiece vocabulary is trained on
the built-in demo corpus (WordPiece families only).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from bertjax.commands import flags as common

if TYPE_CHECKING:
    from bertjax.models import ModelConfig

_DEMO_VOCAB = 8000  # vocabulary trained on the demo corpus; small enough to learn fast

HELP = {"init": common.Usage((common.CONFIG, common.OUT, common.OVERWRITE), "training.md")}


def init_params(cfg: ModelConfig, seed: int) -> dict:
    """Random parameters of `cfg` (plain arrays), created by a jitted init."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from bertjax.models import build

    ids = jnp.zeros((1, 8), jnp.int32)
    init = jax.jit(lambda key: nn.unbox(build(cfg).init(key, ids))["params"])
    return init(jax.random.key(seed))


def main(argv: list[str]) -> None:
    del argv
    from bertjax import experiment, modeldir
    from bertjax.data import tokenizers
    from bertjax.models.registry import family
    from bertjax.tools.describe import describe

    config, out = common.required(common.CONFIG), common.required(common.OUT)
    common.check_out(out)  # before a minute of training a vocabulary
    cfg = experiment.model_config(config).replace(
        dtype=experiment.stored_model_config(config).dtype
    )
    if config.tokenizer.path:
        tok = tokenizers.load_tokenizer(config.tokenizer.path)
    elif family(cfg.family).tokenizer_kind == "wordpiece":
        from bertjax.data.sources import demo_corpus

        print(f"training a {_DEMO_VOCAB}-token WordPiece vocabulary on the demo corpus...")
        tok = tokenizers.train_wordpiece(demo_corpus(), min(_DEMO_VOCAB, cfg.vocab_size))
    else:
        raise ValueError(f"{cfg.family} needs its own tokenizer: set --config.tokenizer.path")
    if tok.vocab_size > cfg.vocab_size:
        raise ValueError(
            f"tokenizer has {tok.vocab_size} tokens, more than model.vocab_size={cfg.vocab_size}"
        )
    tok.tokenizer_class = family(cfg.family).tokenizer_class
    print(describe(cfg, config.max_seq_length, config.max_predictions_per_seq))
    params = init_params(cfg, config.seed)
    modeldir.save(out, cfg, params, tok, overwrite=common.OVERWRITE.value)
    print(f"wrote {os.path.abspath(out)}")
