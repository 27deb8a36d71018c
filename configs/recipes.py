"""The numbers that train: each family's published pretraining and fine-tuning recipes.

configs/pretrain.py, configs/finetune.py and configs/distill.py read them from here and
nothing under bertjax/ changes them, so a config file shows what trains
(`python -m bertjax describe` prints the resolved values). Each number cites its source.
The architectures (sizes, presets) are the family records' (bertjax/models/<family>.py).
"""

# --- pretraining --------------------------------------------------------------------
# Per family: optim (config.optim keys), batch_size (global), steps, and optionally data
# (config.data keys: static or dynamic masks, copies), masking (config.masking keys, the
# fields of bertjax/data/masking.py's MaskingConfig: the rate, strategy and budget the
# paper's data had), max_seq_length (128 otherwise),
# max_predictions_per_seq (20 otherwise), runlocal_learning_rate (the `runlocal` knob's
# rate; 1e-3 otherwise), runlocal_max_predictions (10 otherwise) and runlocal_optim /
# runlocal_model (config.optim / config.model keys the knob also changes).
PRETRAIN = {
    # Devlin et al.: AdamW 1e-4, batch 256, 1M steps, 10k warmup, linear decay.
    "bert": dict(
        optim=dict(name="adamw", learning_rate=1e-4, warmup_steps=10_000),
        batch_size=256,
        steps=1_000_000,
        # create_pretraining_data.py: static masks, 10 copies each built anew,
        # round(0.15 x len(tokens)) predictions.
        data=dict(masking="static", dupe_factor=10),
        masking=dict(budget="google"),
    ),
    # Liu et al., Table 9: AdamW 6e-4 (large 4e-4), b2 0.98, batch 8k, 500k steps,
    # 24k warmup (large 30k).
    "roberta": dict(
        optim=dict(name="adamw", learning_rate=6e-4, warmup_steps=24_000, b2=0.98),
        batch_size=8192,
        steps=500_000,
    ),
    # Lan et al.: LAMB 0.00176, batch 4096, 125k steps, 3125 warmup.
    "albert": dict(
        optim=dict(name="lamb", learning_rate=0.00176, warmup_steps=3125),
        batch_size=4096,
        steps=125_000,
        # Static masks as BERT's, n-gram masking (lengths 1..3, p ~ 1/n).
        # ALBERT's create_pretraining_data.py takes BERT's round(0.15 x len).
        data=dict(masking="static", dupe_factor=10),
        masking=dict(strategy="ngram", budget="google"),
        runlocal_learning_rate=2e-3,
    ),
    # Sanh et al.: AdamW 5e-4, batch 4k (accumulated), 5% warmup.
    "distilbert": dict(
        optim=dict(name="adamw", learning_rate=5e-4, warmup_steps=5_000),
        batch_size=4096,
        steps=100_000,
    ),
    # Clark et al.: small AdamW 5e-4 batch 128 1M steps; base 2e-4, batch 256, 766k
    # steps; large 2e-4, batch 2048, 400k steps; 10k warmup.
    "electra": dict(
        optim=dict(name="adamw", learning_rate=2e-4, warmup_steps=10_000),
        batch_size=256,
        steps=766_000,
    ),
    # Warner et al. 2024 (arXiv 2412.13663) as its pretraining config writes it
    # (AnswerDotAI/ModernBERT yamls/modernbert/modernbert-base-pretrain.yaml): StableAdamW at
    # 8e-4 (here AdamW: no per-parameter update clipping; no gradient clipping, as the
    # yaml), betas (0.9, 0.98), eps 1e-6, decoupled weight decay 1e-5 off biases and
    # norms; warmup-stable-decay with 3B tokens of warmup; 4,608 sequences of 1,024
    # tokens for 1.719T tokens (364,306 steps); 30% masking. The paper's final decay,
    # 1-sqrt over 50B tokens, ends this one phase (it follows a 250B-token context
    # extension to 8,192 tokens there: config.phases). Not expressed: its batch-size
    # warmup (768 -> 4,608 over 50B tokens) and the yaml's dropout of 0.1 on attention
    # outputs alone (bertjax's dropout_rate also covers embeddings and MLP, 0 there).
    "modernbert": dict(
        optim=dict(
            name="adamw",
            learning_rate=8e-4,
            b2=0.98,
            eps=1e-6,
            weight_decay=1e-5,
            clip_norm=0.0,
            warmup_steps=0,
            warmup_tokens=3_000_000_000,
            decay="wsd",
            decay_shape="1-sqrt",
            decay_tokens=50_000_000_000,
        ),
        batch_size=4608,
        steps=364_306,
        max_seq_length=1024,
        max_predictions_per_seq=320,
        runlocal_max_predictions=20,  # 30% of 1024, 64
        masking=dict(masked_lm_prob=0.3),
        # `runlocal`: a run of minutes; the tokenizer trained on the demo
        # (bertjax/data/train_tokenizer.py, kind bpe-modernbert) has [PAD]
        # at id 3, and its 64-token rows need a window narrower than them.
        runlocal_optim=dict(warmup_tokens=0, decay_tokens=0, decay_fraction=0.2),
        runlocal_model=dict(pad_token_id=3, local_window=16),
    ),
}

# A preset's changes to its family's recipe (optim merged key by key).
PRETRAIN_PRESETS = {
    "roberta_large": dict(optim=dict(learning_rate=4e-4, warmup_steps=30_000)),  # Liu et al.
    "electra_small": dict(
        optim=dict(learning_rate=5e-4),
        batch_size=128,  # Clark et al.
        steps=1_000_000,
    ),
    "electra_large": dict(optim=dict(learning_rate=2e-4), batch_size=2048, steps=400_000),
    # Warner et al. 2024, section 2.2: ModernBERT-large at 5e-4 after 2B tokens of warmup
    # (for 900B tokens; restarted at 5e-5 after a plateau, which one run does not express).
    "modernbert_large": dict(optim=dict(learning_rate=5e-4, warmup_tokens=2_000_000_000)),
}


def pretrain(family: str, preset: str) -> dict:
    """The pretraining recipe of `preset` (of `family`): the family's, then the preset's."""
    base, own = PRETRAIN[family], PRETRAIN_PRESETS.get(preset, {})
    return {**base, **own, "optim": {**base["optim"], **own.get("optim", {})}}


# --- fine-tuning --------------------------------------------------------------------
# Per family: learning_rate, batch_size, epochs, warmup_proportion, and optionally optim
# (other config.optim keys), long_tasks / long_epochs, presets (preset -> overrides; their
# optim merged into the family's) and tasks (DATASET -> overrides: learning_rate,
# batch_size, epochs, steps, warmup_steps, optim).

# Lan et al., Table 14 ("Hyperparameters for ALBERT in downstream tasks"): learning rate,
# batch size, train steps, warmup steps. The GLUE rows are also google-research/albert's
# run_glue.sh (its README points there for "good default flag values"); WNLI and SQuAD
# are the paper's only (the README's SQuAD commands instead run 2 epochs at 5e-5 with 10%
# warmup, batch 48, for both versions). Not expressible here: the table's max sequence
# length (512; SQuAD v1.1 384) and encoder dropout 0.1 for QQP, RTE and WNLI.
ALBERT_TASKS = {
    name: dict(learning_rate=lr, batch_size=batch, steps=steps, warmup_steps=warmup)
    for name, lr, batch, steps, warmup in (
        ("cola", 1e-5, 16, 5336, 320),
        ("stsb", 2e-5, 16, 3598, 214),
        ("sst2", 1e-5, 32, 20935, 1256),
        ("mnli", 3e-5, 128, 10000, 1000),
        ("qnli", 1e-5, 32, 33112, 1986),
        ("qqp", 5e-5, 128, 14000, 1000),
        ("rte", 3e-5, 32, 800, 200),
        ("mrpc", 2e-5, 32, 800, 200),
        ("wnli", 2e-5, 16, 2000, 250),
        ("squad_v1", 5e-5, 48, 3649, 365),
        ("squad_v2", 3e-5, 48, 8144, 814),
    )
}

FINETUNE = {
    # Devlin et al., GLUE: lr from {5e-5, 3e-5, 2e-5}, batch 32, 3 epochs, 10% warmup.
    # SQuAD as google-research/bert's README runs it (v1.1 and v2.0): lr 3e-5, 2 epochs,
    # batch 24 (12 only where BERT-Base must fit a 12 GB GPU), run_squad.py's 10% warmup.
    "bert": dict(
        learning_rate=2e-5,
        batch_size=32,
        epochs=3.0,
        warmup_proportion=0.1,
        tasks={
            name: dict(learning_rate=3e-5, epochs=2.0, batch_size=24)
            for name in ("squad_v1", "squad_v2")
        },
    ),
    # Liu et al., Table 10: lr from {1e-5, 2e-5, 3e-5}, batch {16, 32}, 10 epochs, 6%
    # warmup, weight decay 0.1, Adam beta2 0.98 and eps 1e-6.
    "roberta": dict(
        learning_rate=2e-5,
        batch_size=32,
        epochs=10.0,
        warmup_proportion=0.06,
        optim=dict(b2=0.98, eps=1e-6, weight_decay=0.1),
    ),
    # Lan et al. tune lr, batch, steps and warmup steps per task (appendix A.4, Table 14),
    # AdamW, no dropout but 0.1 on the classifier; the defaults here are for other data.
    "albert": dict(
        learning_rate=2e-5, batch_size=32, epochs=3.0, warmup_proportion=0.1, tasks=ALBERT_TASKS
    ),
    # Sanh et al. fine-tune as BERT does.
    "distilbert": dict(learning_rate=2e-5, batch_size=32, epochs=3.0, warmup_proportion=0.1),
    # Clark et al., Table 7: lr 1e-4 (small 3e-4, large 5e-5), batch 32, 3 epochs (10 for
    # RTE and STS-B, 2 for SQuAD), 10% warmup, weight decay 0, Adam eps 1e-6, layer-wise
    # lr decay 0.8 (large 0.9), counted as google-research/electra's
    # model/optimization.py counts it (the top layer gets 0.8^2; bertjax.optim), which
    # produced the paper's numbers. Its configure_finetuning.py differs from the table in
    # two defaults: weight_decay_rate 0.01, and lr 1e-4 for small too.
    "electra": dict(
        learning_rate=1e-4,
        batch_size=32,
        epochs=3.0,
        warmup_proportion=0.1,
        long_tasks=("rte", "stsb"),
        long_epochs=10.0,
        optim=dict(weight_decay=0.0, eps=1e-6, layer_decay=0.8, layer_decay_depth="google"),
        presets=dict(
            electra_small=dict(learning_rate=3e-4),
            electra_large=dict(learning_rate=5e-5, optim=dict(layer_decay=0.9)),
        ),
        tasks=dict(squad_v1=dict(epochs=2.0), squad_v2=dict(epochs=2.0)),
    ),
    # AnswerDotAI/ModernBERT examples/finetune_modernbert_on_glue.ipynb (its GLUE run):
    # AdamW 8e-5, batch 32, 2 epochs, linear decay without warmup; Adam b2 and eps as its
    # pretraining (0.98, 1e-6). The paper sweeps lr, weight decay and epochs per task.
    "modernbert": dict(
        learning_rate=8e-5,
        batch_size=32,
        epochs=2.0,
        warmup_proportion=0.0,
        optim=dict(b2=0.98, eps=1e-6),
    ),
}


def finetune(family: str, preset: str, dataset: str) -> tuple[dict, dict]:
    """(the recipe, its optim keys) for `dataset` on `preset` of `family`: the family's,
    then the preset's entry, then the dataset's (optim key by key)."""
    recipe = dict(FINETUNE[family])
    optim = dict(recipe.get("optim", {}))
    for override in (
        recipe.pop("presets", {}).get(preset, {}),
        recipe.pop("tasks", {}).get(dataset, {}),
    ):
        override = dict(override)
        optim.update(override.pop("optim", {}))
        recipe.update(override)
    return recipe, optim
