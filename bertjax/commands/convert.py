r"""`python -m bertjax import` and `python -m bertjax export`.

  python -m bertjax import --from=HF_OR_GOOGLE_DIR --out=CKPT
  python -m bertjax export --checkpoint=CKPT --out=HF_DIR

`import` reads a transformers model directory of any form a family has (the bare
encoder, *ForMaskedLM, *ForPreTraining, *ForSequenceClassification / Token
Classification / QuestionAnswering, an ELECTRA discriminator or generator alone, or
ELECTRA's DIR/discriminator + DIR/generator pair) or an original Google TF checkpoint
directory, and writes a bertjax model directory (bertjax/modeldir.py) recording the
heads it holds. `export` writes the transformers class that holds those heads
(bertjax/convert/hfdir.py). Both write to a temporary name and rename at the end (on
gs://: upload with config.json last), so a failure leaves no partial output. Every path
may be a gs:// URL; a source in a bucket is downloaded to a temporary directory first.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from absl import flags

from bertjax.commands import flags as common

_SCAN = flags.DEFINE_bool("scan_layers", False, "import: store params in the scan layout.")

HELP = {
    "import": common.Usage(
        (common.FROM, common.OUT, common.OVERWRITE, common.LOWERCASE, _SCAN), "conversion.md"
    ),
    "export": common.Usage((common.CHECKPOINT, common.OUT, common.OVERWRITE), "conversion.md"),
}


def main_import(argv: list[str]) -> None:
    del argv
    from bertjax import paths

    src, out = paths.absolute(common.required(common.FROM)), common.required(common.OUT)
    if not paths.isdir(src):
        raise FileNotFoundError(f"{src}: no such directory")
    if paths.exists(out) and not common.OVERWRITE.value:
        raise FileExistsError(17, "already exists (pass --overwrite to replace it)", out)
    with paths.local_copy(src) as local:
        _import(src, local, out)


def _import(src: str, local: str, out: str) -> None:
    """Imports the checkpoint `src` (a local copy at `local`) into model directory `out`."""
    import jax

    from bertjax import modeldir, paths
    from bertjax.convert import google, google_checkpoint, hf, hfdir

    if google_checkpoint.is_google_checkpoint(local):
        cfg, params, files = google.load(local)
        if _SCAN.value:
            from bertjax.models.scan_layout import stack_layers

            cfg, params = cfg.replace(scan_layers=True), stack_layers(params)
        lowercase = common.LOWERCASE.value
        if lowercase is None and "vocab.txt" in files:
            lowercase = "uncased" in paths.basename(src).lower()
        with tempfile.TemporaryDirectory() as tmp:
            for name, path in files.items():
                shutil.copy(path, os.path.join(tmp, name))
            tok = hfdir.checked_tokenizer(tmp, cfg, lowercase)
    else:
        cfg, params, tok_dir = hfdir.read_hf_dir(local, _SCAN.value)
        tok = hfdir.checked_tokenizer(tok_dir, cfg, common.LOWERCASE.value)
    modeldir.save(out, cfg, params, tok, overwrite=common.OVERWRITE.value, extra={"source": src})
    n = sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
    forms = " + ".join(hf.architecture(p) for p in hf.parts(cfg))
    print(
        f"imported {cfg.family} ({n:,} parameters; heads {', '.join(cfg.heads) or 'none'}: "
        f"{forms}) from {src} to {paths.absolute(out)}"
    )


def _os_error(e: Exception, out: str) -> OSError | None:
    """safetensors' writer fails with its own error type, an OSError's words inside
    ("I/O error: No space left on device (os error 28)"): that OSError, naming --out."""
    m = re.search(r"\(os error (\d+)\)", str(e))
    if type(e).__name__ != "SafetensorError" or not m:
        return None
    code = int(m.group(1))
    return OSError(code, os.strerror(code), out)


def main_export(argv: list[str]) -> None:
    del argv
    from bertjax.convert import hfdir

    ckpt, out = common.model_dir(common.CHECKPOINT), common.required(common.OUT)
    common.check_out(out)
    try:
        dirs = hfdir.export_hf(ckpt, out, common.OVERWRITE.value)
    except Exception as e:
        error = _os_error(e, out)
        if error is None:
            raise
        raise error from e
    for d in dirs:
        print(f"wrote {d}")
