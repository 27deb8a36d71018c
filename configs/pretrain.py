r"""Pretraining configs for every preset of the six families.

  python -m bertjax describe --config=configs/pretrain.py:bert_base
  python -m bertjax prepare data --config=configs/pretrain.py:bert_tiny,runlocal \
      --config.data.dir=/tmp/demo_data
  python -m bertjax train --config=configs/pretrain.py:bert_tiny,runlocal \
      --config.data.dir=/tmp/demo_data --workdir=/tmp/bert_tiny_run

The part after the colon is `PRESET[,knob...]`. Knobs:
  runlocal   shrink sequence length, batch, steps and intervals to run on a laptop CPU.
Everything else is overridden with --config.KEY=VALUE; an unknown key is an error.
Presets: bert_{tiny,mini,small,medium,base,large}, bert_L{2..12}_H{128..768},
roberta_{base,large}, albert_{base,large,xlarge,xxlarge}, distilbert_base,
electra_{tiny,small,base,large}, modernbert_{tiny,mini,base,large}.
"""

import dataclasses
import os

import ml_collections

from bertjax import configfile
from bertjax.data.masking import MaskingConfig
from bertjax.models import registry
from bertjax.models.config import ModelConfig

# The families' published recipes (optimizer, batch, steps, masking), each number with its
# source: configs/recipes.py.
recipes = configfile.load_module(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes.py"), "configs/pretrain.py"
)

# Fields of config.model that the task decides (config.task), not the config.
TASK_FIELDS = ("heads", "num_labels", "label_names")


def model_fields(name: str) -> dict:
    """Every ModelConfig field of preset `name` but the task's, so any can be overridden
    and typos fail."""
    return {
        k: v for k, v in ModelConfig.from_preset(name).to_dict().items() if k not in TASK_FIELDS
    }


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    name, *knobs = (arg or "bert_tiny").split(",")
    unknown = sorted(set(knobs) - {"runlocal"})
    if unknown:
        raise ValueError(f"unknown config knob(s) {unknown} in {arg!r}; known: runlocal")
    config = ml_collections.ConfigDict()
    # The architecture; the heads come from the task (bertjax/tasks).
    config.model = model_fields(name)
    family = config.model.family
    record = registry.family(family)
    recipe = recipes.pretrain(family, name)  # configs/recipes.py
    config.tokenizer = ml_collections.ConfigDict(
        dict(
            # Directory with tokenizer.json, or vocab.txt / vocab.json + merges.txt / spiece.model.
            # Empty: `prepare data` trains one of the family's kind on data.source.
            path="",
            vocab_size=8000,  # when trained by `prepare data` (tiny; real runs bring their own)
            # Byte-level BPE (RoBERTa's bpe, ModernBERT's bpe-modernbert) is always cased.
            lowercase=not record.tokenizer_kind.startswith("bpe"),
        )
    )
    # Data preparation and input pipeline; defaults follow each family's paper.
    config.data = ml_collections.ConfigDict(
        dict(
            # demo | bert:GLOB | text:GLOB | jsonl:GLOB#FIELD | tfds:NAME[:SPLIT][#FEAT]
            source="demo",
            dir="",  # prepared data directory (written by `prepare data`, read by training)
            instances=record.instances,  # nsp | sop | full_sentences | doc_sentences | mlm
            short_seq_prob=0.1,  # share of shorter segments (BERT/ALBERT pairs)
            masking="dynamic",  # static (BERT, ALBERT: the family's recipe) | dynamic
            dupe_factor=1,  # static: masked copies (BERT, ALBERT: 10)
            dupe_mode="rebuild",  # static: each copy from new instances (Google) | remask: one set
            format="bertjax",  # shards: bertjax (what train reads) | google: fixed-length records
            # as create_pretraining_data.py writes, for Google's and NVIDIA's run_pretraining.py
            nsp_single_sentence="split",  # a one-sentence chunk: split it, B = its rest ("actual
            # next"), 50/50 labels | random_next: always a random B, as Google (~75% random)
            docs_per_shard=2000,  # documents per prepared shard (fewer past 8 MB of text)
            validation_every=10,  # every Nth shard goes to the validation split (0: none)
            num_workers=2,  # preparation processes; output is identical for any number
            # Preparation's memory beyond its processes at rest: peak <= idle + max(this, the
            # largest chunk's charge) + one chunk waiting. A chunk is charged 2x its text +
            # (8 + 1400 / max_seq_length + 7 x passes) bytes per byte of text + 1.4 KB per
            # sentence + 32 MB (passes: dupe_factor if static); see docs/data.md#memory.
            max_inflight_mb=256,
            # A file with more undecodable bytes, control characters and U+FFFD than this
            # share of its characters is refused (over 0.01: a warning); 1 accepts anything.
            max_bad_fraction=0.1,
            shuffle_buffer=10_000,  # examples in the pipeline's shuffle buffer
            # off | best_fit | first_fit: each batch's sequences packed into fewer rows, each
            # attending only to itself (docs/packing.md); at most this many per row
            packing="off",
            packing_max_sequences=16,
            # gs:// data: shards are read from local copies in a bounded cache (docs/data.md).
            cache_dir="",  # where ("": a temporary directory per process, removed at exit)
            cache_gb=0.0,  # most GB of copies; 0: half the free disk. Must hold 16 shards
        )
    )
    config.data.update(recipe.get("data", {}))
    # What to mask and how (static and dynamic masking alike): exactly the fields of
    # bertjax/data/masking.py's MaskingConfig, their defaults taken from it, so a new field
    # is a key here with nothing to edit; then the family's recipe (configs/recipes.py).
    #   masked_lm_prob   share of a row's tokens to predict
    #   budget           candidates: round(p x non-special tokens); google: round(p x all
    #                    tokens, [CLS]/[SEP] included), as create_pretraining_data.py (BERT,
    #                    ALBERT)
    #   strategy         token | whole_word | ngram (ALBERT) | span (SpanBERT)
    #   max_ngram        ngram: lengths 1..max_ngram words, p(n) proportional to 1/n (ALBERT)
    #   span_geometric_p, span_max_length   span: Geometric(p) lengths in words, at most this
    #   mask_token_prob, random_token_prob  of the chosen tokens: [MASK], a random token
    # max_predictions_per_seq is not here but config.max_predictions_per_seq below: a shape
    # the model's heads, the static data and the input pipeline share.
    config.masking = ml_collections.ConfigDict(
        {
            f.name: f.default
            for f in dataclasses.fields(MaskingConfig)
            if f.name != "max_predictions_per_seq"
        }
    )
    config.masking.update(recipe.get("masking", {}))
    config.max_seq_length = recipe.get("max_seq_length", 128)  # for FLOPs figures and training
    # masked positions per sequence (sparse MLM head)
    config.max_predictions_per_seq = recipe.get("max_predictions_per_seq", 20)
    config.seed = 0  # parameters, data order, masks and dropout all derive from it

    # Optimizer: every key of bertjax.optim.OptimConfig (documented there).
    config.optim = ml_collections.ConfigDict(
        dict(
            name="adamw",
            learning_rate=1e-4,
            warmup_steps=10_000,
            total_steps=0,  # updates in the whole run; 0: train.steps / grad_accum_steps
            decay="linear",
            power=1.0,
            end_learning_rate=0.0,
            weight_decay=0.01,
            # decay=wsd (warmup-stable-decay, bertjax/schedules.py): the peak held until the
            # last decay_steps updates, which decay by decay_shape (linear | cosine | 1-sqrt).
            decay_shape="linear",
            decay_steps=0,  # 0: no decay (a stable run)
            # > 0: the warmup / the wsd decay as a share of total_steps or in tokens (rows x
            # sequence length over the run's phases), instead of warmup_steps / decay_steps.
            warmup_fraction=0.0,
            warmup_tokens=0,
            decay_fraction=0.0,
            decay_tokens=0,
            b1=0.9,
            b2=0.999,
            eps=1e-6,
            clip_norm=1.0,
            grad_accum_steps=1,
            layer_adaptation="all",
            layer_decay=1.0,
            layer_decay_depth="google",  # layer-wise lr decay: 1 = off
            # > 0: an EMA of the parameters, checkpointed; WORKDIR/model_ema at the end.
            ema_decay=0.0,
        )
    )
    config.optim.update(recipe["optim"])
    # What to train (bertjax/tasks): "" = the family's pretraining task (mlm_nsp for BERT,
    # mlm for RoBERTa and DistilBERT, mlm_sop for ALBERT, electra); the task sets the heads.
    config.task = ""
    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=recipe["batch_size"],  # global, all hosts
            steps=recipe["steps"],  # train steps (micro-batches), all phases
            dtype="auto",  # compute dtype: auto = bfloat16 on TPU/GPU, model.dtype on CPU
            log_every=100,  # steps between metric lines / TensorBoard points
            eval_every=10_000,  # steps between evaluations on data.dir's validation split; 0: off
            eval_steps=50,  # batches per evaluation; 0: the whole split
            checkpoint_every=5_000,  # steps between checkpoints (always one at the end)
            max_to_keep=3,  # checkpoints kept in WORKDIR/checkpoints
            # Also saved and kept whatever max_to_keep says (a stable run's branch points):
            keep_every=0,  # every N steps; 0: none
            keep_every_tokens=0,  # at every N tokens (rows x sequence length); 0: none
            async_checkpoints=True,  # write checkpoints in the background
            # Compile every phase's step before the first and refuse one that does not fit
            # in device memory (bertjax/memory.py).
            memory_check=True,
            max_consecutive_skips=20,  # non-finite steps in a row before the run stops
            peak_flops=0.0,  # FLOP/s per device for MFU; 0: a table by device, or measured
            export_model=True,  # write WORKDIR/model (a model directory) at the end
            # Resume even when the prepared data's manifest differs from the checkpoint's
            # (a moved copy of the same data always resumes).
            allow_data_change=False,
        )
    )
    # Two-phase training: the last `fraction` of train.steps at another length, from
    # another prepared data directory, continuing the same optimizer and schedule.
    config.phase2 = ml_collections.ConfigDict(
        dict(
            fraction=0.0,  # 0: one phase. BERT: 0.1 (90% at 128, then 512)
            max_seq_length=512,
            max_predictions_per_seq=80,
            batch_size=0,  # 0: train.batch_size
            data_dir="",  # prepared at phase2.max_seq_length
        )
    )
    # An N-phase plan instead of phase2 (bertjax/tasks/plan.py; recipes in configs/plans.py):
    # a tuple of dicts, each a phase's share of train.steps, length, batch, masking, data
    # (or mixture) and learning-rate segment. (): one phase (and phase2) as above.
    config.phases = ()
    if record.task == "electra":
        # ELECTRA (Clark et al.): generator MLM + replaced-token detection on its samples.
        config.electra = ml_collections.ConfigDict(
            dict(
                # Generator width / discriminator width; 0: the preset's generator (the
                # released models: 1/4 small and large, 1/3 base, as in the paper's table).
                generator_fraction=0.0,
                gen_weight=1.0,  # generator MLM loss weight
                disc_weight=50.0,  # replaced-token detection loss weight (lambda in the paper)
                temperature=1.0,  # sampling temperature of the generator's softmax
            )
        )
    # A model directory (import / init / train) or a transformers directory of any form to
    # start from; its heads are fitted to the task's (bertjax/pretrained.py).
    config.init_from = ""
    # WORKDIR@STEP: start from that saved checkpoint of another run, whole (parameters,
    # optimizer state, step, data position), e.g. a decay branched from a stable run
    # (docs/training.md#branching-a-decay); that run is only read.
    config.init_from_checkpoint = ""
    # Fine-tuning evaluations run after pretraining, from WORKDIR/model (bertjax/downstream.py):
    # each task's scores (median over seeds) go to WORKDIR/results.json, which `compare` reads.
    config.downstream = ml_collections.ConfigDict(
        dict(
            tasks="",  # comma-separated configs/finetune.py datasets, e.g. demo_next,sst2; "": none
            config="configs/finetune.py:{task}",  # each task's fine-tuning config ({task} filled)
            seeds=1,  # fine-tuning runs per task (finetune.seeds); the median is reported
            overrides="",  # "KEY=VALUE KEY=VALUE" for every fine-tuning config
        )
    )
    # Device mesh and logical axis rules (bertjax/sharding.py). One axis may be -1.
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    config.sharding = ml_collections.ConfigDict(
        dict(
            rules=(),  # ((logical axis, mesh axes), ...); empty: sharding.DEFAULT_RULES
        )
    )
    if "runlocal" in knobs:
        config.max_seq_length = 64
        config.max_predictions_per_seq = recipe.get("runlocal_max_predictions", 10)
        config.model.vocab_size = config.tokenizer.vocab_size  # the demo's trained vocabulary
        config.data.dupe_factor = min(config.data.dupe_factor, 2)
        config.train.update(
            batch_size=32,
            steps=600,
            log_every=50,
            eval_every=300,
            eval_steps=10,
            checkpoint_every=200,
        )
        config.optim.update(
            learning_rate=recipe.get("runlocal_learning_rate", 1e-3),
            warmup_steps=60,
            **recipe.get("runlocal_optim", {}),
        )
        config.model.update(recipe.get("runlocal_model", {}))
        if "electra" in config:
            # A few hundred steps teach the generator little more than word frequencies,
            # and samples at temperature 1 then look like real text to a discriminator
            # that has not learnt context yet: it stays at the all-"original" baseline
            # for thousands of steps on a CPU (benchmarks/RESULTS.md). Flatter samples
            # give it something to find within minutes; full configs keep the paper's 1.
            config.electra.temperature = 2.0
    return config
