"""Mistakes a new user makes, through the command line: each is one line on stderr
starting with `error:` that names the flag or file to fix, exit status 1, and nothing
left behind; a command that goes well prints nothing on stderr; and what the commands
write has the modes the umask gives, so a team's shared storage stays readable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from clilib import bertjax, python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A 2-layer, 32-wide BERT: `init` writes it in seconds.
TINY = [
    "--config=configs/pretrain.py:bert_tiny,runlocal",
    "--config.model.hidden_size=32",
    "--config.model.num_heads=2",
    "--config.model.intermediate_size=64",
    "--config.model.vocab_size=64",
    "--config.model.max_position_embeddings=64",
    "--config.max_seq_length=32",
    "--config.max_predictions_per_seq=5",
]
WORDS = (
    "the a cat dog sees likes river stone light garden window music in at near "
    "morning night bridge village winter"
).split()


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The error line of a run that failed as a user error should: exit 1, one line."""
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    return lines[0]


def write_vocab(directory) -> str:
    """A hand-written WordPiece vocab.txt (no tokenizer to train)."""
    directory.mkdir()
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz"]
    (directory / "vocab.txt").write_text("".join(t + "\n" for t in tokens))
    return str(directory)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A model directory written by `init`."""
    d = tmp_path_factory.mktemp("tiny")
    out = str(d / "model")
    r = bertjax(
        "init", *TINY, f"--config.tokenizer.path={write_vocab(d / 'vocab')}", f"--out={out}"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out


# -- config files --------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--config.train.steps=5"],  # ml_collections loads the file while parsing: traceback
        ["--print_config"],  # printed `<_ErrorConfig object at ...>`, exit 0
    ],
)
def test_a_missing_config_file_is_named(extra):
    r = bertjax("describe", "--config=configs/pretrain2.py:bert_tiny", *extra)
    assert one_line_error(r) == "error: --config: configs/pretrain2.py: no such config file"


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.py"
    path.write_bytes(b"# r\xe9sum\xe9\ndef get_config(arg=None):\n    return None\n")
    line = one_line_error(bertjax("describe", f"--config={path}", "--config.seed=1"))
    assert line == (
        f"error: --config: {path} is not utf-8 text (byte 0xe9 on line 1); a "
        "config file is Python source in UTF-8"
    )


def test_a_config_file_that_is_not_python_is_named_with_its_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("def get_config(arg=None):\n    return dict(\n")
    line = one_line_error(bertjax("describe", f"--config={path}"))
    assert line.startswith(f"error: --config: {path}:2: "), line


def test_configs_are_found_from_another_directory(tmp_path):
    """configs/... names the repository's file from anywhere (as `sweep` does)."""
    r = bertjax(
        "describe",
        "--config=configs/pretrain.py:bert_tiny",
        "--config.seed=3",
        cwd=str(tmp_path),
        ok=True,
    )
    assert r.stdout.startswith("bert L=2 H=128 A=2 ")


def test_a_misspelt_preset_suggests_the_close_name():
    line = one_line_error(bertjax("describe", "--config=configs/pretrain.py:bert_tiniest"))
    assert line.startswith("error: unknown preset 'bert_tiniest'; did you mean 'bert_tiny'")
    line = one_line_error(bertjax("describe", "--config=configs/finetune.py:sst2,robertta_base"))
    assert "did you mean 'roberta_base'" in line


def test_a_model_config_json_that_is_not_utf8_is_named(tiny_model, tmp_path):
    import shutil

    bad = shutil.copytree(tiny_model, str(tmp_path / "bad"))
    with open(os.path.join(bad, "config.json"), "ab") as f:
        f.write(b"\xff")
    out = str(tmp_path / "hf")
    line = one_line_error(bertjax("export", f"--checkpoint={bad}", f"--out={out}"))
    assert line.startswith(f"error: {bad}/config.json: not UTF-8"), line
    assert not os.path.exists(out)


# -- directories ------------------------------------------------------------------


def test_evaluate_names_the_missing_checkpoint_flag(tmp_path):
    missing = str(tmp_path / "nothere")
    line = one_line_error(
        bertjax("evaluate", "--config=configs/finetune.py:sst2", f"--checkpoint={missing}")
    )
    assert line == f"error: --checkpoint={missing}: no such directory"


def _workdir(path) -> str:
    """What `train` leaves in a WORKDIR: the run's config.json (no model-directory
    format), checkpoints/ and the final model/."""
    for d in ("checkpoints/4", "logs", "model"):
        (path / d).mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model": {"family": "bert"}, "train": {}}))
    return str(path)


@pytest.mark.parametrize(
    "command",
    [
        ["export", "--out={tmp}/hf"],
        ["fill_mask", "the [MASK] sees"],
        ["evaluate", "--config=configs/finetune.py:sst2"],
    ],
)
def test_a_training_workdir_given_as_model_directory_points_at_its_model(command, tmp_path):
    """It has a config.json (the run's), so the model directory's "config.json missing"
    hint never showed: "format is None, not 'bertjax-model'" did."""
    work = _workdir(tmp_path / "run")
    args = [a.format(tmp=tmp_path) for a in command]
    line = one_line_error(bertjax(*args, f"--checkpoint={work}"))
    assert line == (
        f"error: --checkpoint={work} is a training workdir, not a model "
        f"directory: did you mean --checkpoint={work}/model?"
    )
    assert not os.path.exists(tmp_path / "hf")


def test_init_refuses_an_existing_out_before_any_work(tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = bertjax("init", "--config=configs/pretrain.py:bert_tiny", f"--out={out}")
    assert one_line_error(r) == (f"error: {out}: already exists (pass --overwrite to replace it)")
    assert "vocabulary" not in r.stdout and "params" not in r.stdout, r.stdout  # no work
    assert os.listdir(out) == ["keep.txt"]


# -- a full disk -------------------------------------------------------------------


def _mount_tmpfs(path: str, size: str) -> bool:
    os.makedirs(path)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True
    )
    return r.returncode == 0


def test_export_onto_a_full_disk_is_one_line(tiny_model, tmp_path):
    """A 64 KiB file system: model.safetensors does not fit. safetensors reports it as
    its own error type, which printed a 21-line traceback."""
    disk = str(tmp_path / "disk")
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "64k"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        out = os.path.join(disk, "hf")
        line = one_line_error(bertjax("export", f"--checkpoint={tiny_model}", f"--out={out}"))
        assert line == f"error: {out}: No space left on device"
        assert os.listdir(disk) == []  # the temporary directory went too
    finally:
        subprocess.run(["umount", disk], check=True)


def test_export_onto_a_full_disk_is_one_line_without_root(
    tiny_model, tmp_path, monkeypatch, capsys
):
    """The same through `main` in this process, safetensors' writer failing as it does on
    a full disk (for machines where a tmpfs cannot be mounted)."""
    import safetensors.numpy
    from absl import flags

    from bertjax import __main__ as cli

    def full(*args, **kwargs):
        raise safetensors.SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(safetensors.numpy, "save_file", full)
    out = str(tmp_path / "hf")
    monkeypatch.setattr(
        sys, "argv", ["bertjax", "export", f"--checkpoint={tiny_model}", f"--out={out}"]
    )
    try:
        assert cli.main() == 1
    finally:
        flags.FLAGS.unparse_flags()
    assert capsys.readouterr().err == f"error: {out}: No space left on device\n"
    assert os.listdir(tmp_path) == []


# -- benchmarks/demo_tasks.py --------------------------------------------------------


def _demo_tasks(*args: str) -> subprocess.CompletedProcess:
    return python(os.path.join(ROOT, "benchmarks", "demo_tasks.py"), *args)


def test_demo_tasks_stops_with_the_runs_one_line_error(tmp_path):
    """A run that fails printed its error, then the script's CalledProcessError traceback."""
    work = str(tmp_path / "work")
    missing = str(tmp_path / "nothere")
    r = _demo_tasks(f"--init_from={missing}", f"--workdir={work}", "--tasks=demo_next")
    assert one_line_error(r) == f"error: --init_from={missing}: no such directory"
    run = _workdir(tmp_path / "run")  # the child `train` refuses it
    r = _demo_tasks(f"--init_from={run}", f"--workdir={work}", "--tasks=demo_next")
    assert one_line_error(r) == (
        f"error: config.init_from={run} is a training workdir, not "
        f"a model directory: did you mean config.init_from="
        f"{run}/model?"
    )
    assert not os.path.exists(work)


# -- quiet start-up -----------------------------------------------------------------


def _no_tf_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "GRPC_VERBOSITY")
    }


def test_describe_prints_nothing_on_stderr():
    r = bertjax("describe", "--config=configs/pretrain.py:bert_tiny", env=_no_tf_env())
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_tensorflow_start_up_chatter_is_off_and_errors_stay_visible():
    """What `python -m bertjax` sets before anything imports TensorFlow (the input
    pipeline): its absl "WARNING: All log messages before absl::InitializeLog()" and
    oneDNN lines (twice per process) are gone; an error it logs still shows."""
    code = (
        "from bertjax.__main__ import _quiet_native_logs\n"
        "_quiet_native_logs()\n"
        "import tensorflow as tf\n"
        "tf.constant([1, 2]) + 1\n"
        "tf.get_logger().error('a genuine error %s', " + repr(uuid.uuid4().hex) + ")\n"
    )
    r = python("-c", code, env=_no_tf_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "a genuine error" in lines[0], r.stderr


# -- file modes -----------------------------------------------------------------------


def test_every_file_written_has_the_umask_mode(tmp_path):
    """Under umask 022 every file `init`, `export`, `import` and `prepare data` write is
    0644 and every directory 0755, as `open` and `mkdir` would make them: libraries
    that create files 0600 (safetensors) or directories 0700 (tempfile) would lock the
    rest of a team out of shared storage."""
    vocab = write_vocab(tmp_path / "vocab")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n\n".join(
            "\n".join(f"the {a} sees a {b} near the river." for b in WORDS[5:12])
            for a in WORDS[2:6]
        )
    )
    outs = [str(tmp_path / d) for d in ("model", "hf", "imported", "data")]
    model, hf, imported, data = outs
    for args in (
        ["init", *TINY, f"--config.tokenizer.path={vocab}", f"--out={model}"],
        ["export", f"--checkpoint={model}", f"--out={hf}"],
        ["import", f"--from={hf}", f"--out={imported}"],
        [
            "prepare",
            "data",
            *TINY,
            f"--config.tokenizer.path={vocab}",
            f"--config.data.source=bert:{corpus}",
            f"--config.data.dir={data}",
            "--config.data.num_workers=0",
        ],
    ):
        r = bertjax(*args, umask=0o022)
        assert r.returncode == 0, (args[0], r.stderr[-3000:])
    modes = {}
    for out in outs:
        modes[out] = oct(os.stat(out).st_mode & 0o777)
        for root, dirs, files in os.walk(out):
            for name in dirs + files:
                path = os.path.join(root, name)
                modes[path] = oct(os.stat(path).st_mode & 0o777)
    assert len(modes) > 30 and any(p.endswith("model.safetensors") for p in modes)
    wrong = {
        p: m for p, m in modes.items() if m != (oct(0o755) if os.path.isdir(p) else oct(0o644))
    }
    assert not wrong, wrong


def test_a_tfds_dataset_that_cannot_be_downloaded_fails_in_seconds(tmp_path):
    """No route to the dataset's server (a proxy on a closed local port stands for a TPU
    VM without egress): one line naming the dataset and where its files belong, in well
    under tensorflow-datasets' minutes of retries."""
    import time

    from bertjax.data.tokenizers import train_wordpiece

    tok = str(tmp_path / "tok")
    train_wordpiece(["the cat sat on the mat with a hat"] * 20, vocab_size=60).save(tok)
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TFDS_DATA_DIR": str(tmp_path / "tfds"),
        "HTTPS_PROXY": closed,
        "HTTP_PROXY": closed,
    }
    start = time.monotonic()
    r = bertjax(
        "train",
        "--config=configs/finetune.py:sst2,bert_tiny,runlocal",
        f"--workdir={tmp_path / 'run'}",
        f"--config.tokenizer.path={tok}",
        "--config.finetune.from_scratch=True",
        env=env,
    )
    line = one_line_error(r)
    assert time.monotonic() - start < 30 * 4  # the process start included, on a busy CI
    assert line.startswith(
        f"error: TFDS dataset 'glue/sst2' is not prepared in {tmp_path / 'tfds'}/glue/sst2/"
    ), line
    assert "cannot be downloaded here" in line and "TFDS_DATA_DIR" in line
    assert not (tmp_path / "run").exists()
