"""What a model family is, declared once per family in bertjax/models/<family>.py.

A `Family` record holds everything that differs between BERT, RoBERTa, ALBERT,
DistilBERT, ELECTRA and ModernBERT outside the shared layers: its config defaults (the
architecture switches included) and presets, the heads it can carry, its pretraining
task and training instances, its tokenizer,
its transformers names (config keys, architectures, parameter map) and its Google
TF variable names. `bertjax.models.registry` collects the records; nothing else in
bertjax keeps a per-family table. Its published training recipes (learning rate, batch,
optimizer, schedule, masking) are configs' numbers: configs/recipes.py. Adding a seventh
family is one new file with a `FAMILY` record (plus its presets), one line in the
registry and its recipe in configs/recipes.py.

Heads (bertjax/models/heads.py): a model is a family's encoder plus named heads.

  pooler            tanh(dense([CLS])): the sentence vector NSP / SOP / BERT's classifier use
  mlm               masked-LM head tied to the word embeddings
  nsp, sop          two-way sentence-pair classifiers on the pooled vector
  discriminator     ELECTRA's replaced-token detector, one logit per token
  generator         ELECTRA's generator: a smaller encoder tower + MLM head on the shared
                    embeddings (exported as its own transformers model)
  classifier        sequence classification / regression (`num_labels`)
  token_classifier  a label per token (`num_labels`)
  span              start and end logits per token (extractive QA)

Nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bertjax.convert.names import Entry
    from bertjax.models.config import ModelConfig

HEADS = (
    "pooler",
    "mlm",
    "nsp",
    "sop",
    "discriminator",
    "generator",
    "classifier",
    "token_classifier",
    "span",
)
# Heads that read the pooled vector (the pooler must be present).
POOLED_HEADS = ("nsp", "sop")
# Heads whose width is config.num_labels.
LABELLED_HEADS = ("classifier", "token_classifier")
# Classification head styles, as transformers builds them per family.
CLASSIFIERS = {
    "pooled": "dropout(pooled) -> dense (BERT, ALBERT)",
    "cls_tanh": "[CLS] -> dropout -> dense -> tanh -> dropout -> dense (RoBERTa)",
    "cls_gelu": "[CLS] -> dropout -> dense -> GELU -> dropout -> dense (ELECTRA)",
    "pre_relu": "[CLS] -> dense -> ReLU -> dropout -> dense (DistilBERT)",
    # ModernBERT's token and span heads take the same transform, per token.
    "prediction": "[CLS] or mean (classifier_pooling) -> dense -> GELU -> norm -> dropout "
    "-> dense (ModernBERT)",
}

Need = Callable[[bool, str, str], None]  # need(ok, key, why): raises ConfigError naming key
NameMap = Callable[["ModelConfig", str], "list[Entry]"]


@dataclasses.dataclass(frozen=True)
class HFNames:
    """How transformers spells the family (bertjax/convert/hf.py applies it).

    `prefix` is the attribute holding the base model in transformers' task classes
    ("bert" in `bert.encoder.layer.0...`); a bare base model (BertModel) saves its
    tensors without it. Name-map functions take (cfg, prefix), prefix being "bert." or
    "" for a bare base model; head maps only see "" for heads inside the base model
    (the pooler).
    """

    model_type: str
    prefix: str
    # transformers class -> the heads it holds. The pooler may be present in any
    # class whose base model has one (released checkpoints often carry it) even when
    # the class does not list it; a class that lists it needs it.
    architectures: Mapping[str, tuple[str, ...]]
    encoder: NameMap  # embeddings (+ projection) and every encoder layer
    heads: Mapping[str, NameMap]  # head -> its tensors
    # head -> {tensor that transformers may also store: the tensor it is tied to};
    # "{p}" stands for the prefix.
    tied: Mapping[str, Mapping[str, str]]
    to_config: Callable[[ModelConfig], dict[str, Any]]  # config.json minus architectures
    # config.json -> ModelConfig fields (family and heads excluded); errors name `source`.
    from_config: Callable[[Mapping[str, Any], str], dict[str, Any]]
    # head -> the keyword transformers' forward() takes its labels under (bench reference)
    label_args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Tokenizer ids written into config.json on export (RoBERTa's bos / eos; ModernBERT's
    # also cls / sep).
    token_ids: tuple[str, ...] = ()
    # Architecture switches (config.SWITCHES) its classes represent: switch -> the values
    # they take (None: any). A switch not listed must keep ModelConfig's default; export
    # refuses others in one line naming the key.
    switches: Mapping[str, tuple[Any, ...] | None] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class GoogleNames:
    """How the original TF checkpoints spell the family (bertjax/convert/google.py)."""

    marker: str  # a variable-name prefix only this family's checkpoints have
    config_files: tuple[str, ...]  # looked for in this order
    # Rewrites (re.sub, in order) of an HF module name into the Google one, per HF part
    # ("" for a single model; ELECTRA: "discriminator", "generator").
    rules: Mapping[str, tuple[tuple[str, str], ...]]
    special: Mapping[str, str]  # HF key -> Google name, for names outside the pattern
    # Its config file: keys beyond BERT's (same names as transformers'), keys of research
    # variants that must keep these values, and what its "gelu" means (bertjax name).
    config_keys: tuple[str, ...] = ()
    inert_keys: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    gelu: str = "gelu"
    sizes_from_tensors: bool = False  # no config file: sizes from the variables' shapes
    vocab_files: tuple[str, ...] = ("vocab.txt",)  # WordPiece vocab.txt or SentencePiece
    # Google omits the E -> H projection when E == H; bertjax always applies it.
    identity_projection: str = ""  # its variable prefix, or "" when never omitted


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    defaults: Mapping[str, Any]  # ModelConfig fields shared by the family's presets
    presets: Mapping[str, Mapping[str, Any]]  # preset name -> fields over `defaults`
    heads: tuple[str, ...]  # heads this family can carry (HEADS)
    pretrain_heads: tuple[str, ...]  # the pretraining model's heads (the default)
    task: str  # default task (bertjax/tasks)
    instances: str  # default training instances (bertjax/data/instances.py)
    tokenizer_kind: str  # train_tokenizer's kind: wordpiece | bpe | bpe-modernbert | ...
    tokenizer_class: str  # transformers tokenizer class written to tokenizer_config.json
    classifier: str  # CLASSIFIERS key
    hf: HFNames
    validate: Callable[[ModelConfig, Need], None]  # family rules on top of the shared ones
    google: GoogleNames | None = None
    mlm_activation: str = ""  # MLM transform activation; "": the config's hidden_act
    always_projects_embeddings: bool = False  # ALBERT keeps E -> H even when E == H
    # Dropout before the token classifier: the classifier rate or the hidden rate.
    token_dropout: str = "classifier"  # classifier | hidden
    span_dropout: bool = False  # DistilBERT drops out before its QA output layer
