"""`compare`: the table, CSV and plots of runs, checked against the values the test logs.

The runs' logs are written with bertjax.metrics.MetricWriter (as training writes them)
under a fake clock, so every wall time is known; the expected figures are worked out
by hand here, not with compare's helpers. No training, no JAX compilation.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import types

import pytest
from clilib import bertjax
from PIL import Image

from bertjax import metrics
from bertjax.tools import compare
from bertjax.tools import report as report_lib

CONFIG = {
    "model": {"family": "bert", "hidden_size": 128},
    "seed": 0,
    "data": {"dir": "/data/demo", "mask_strategy": "token", "max_ngram": 3},
    "tokenizer": {"path": "/data/vocab.txt", "lowercase": True},
    "optim": {"learning_rate": 1e-3},
    "phase2": {"data_dir": ""},
    "init_from": "",
    "sharding": {"rules": []},
}

RESULTS = {
    "format": "bertjax-run-results",
    "version": 1,
    "downstream": {
        "demo_next": {
            "split": "validation",
            "metric": "accuracy",
            "seeds": [0, 1, 2],
            "scores": [0.625, 0.75, 0.5],
            "median": 0.625,
            "workdir": "/x/demo_next",
        },
        "demo_boundary": {
            "split": "validation",
            "metric": "f1",
            "seeds": [0],
            "scores": [0.25],
            "median": 0.25,
            "workdir": "/x/demo_boundary",
        },
    },
}


@pytest.fixture
def clock(monkeypatch):
    """The wall time MetricWriter and tensorboard's writer stamp on events: `clock.now`."""
    from tensorboard.summary.writer import event_file_writer

    fake = types.SimpleNamespace(now=0.0)
    fake.time = fake.monotonic = lambda: fake.now
    monkeypatch.setattr(metrics, "time", fake)
    monkeypatch.setattr(event_file_writer, "time", fake)
    return fake


def write_log(run: str, clock, opened: float, points) -> None:
    """One process start: an event file opened at `opened`, then (time, step, prefix,
    scalars) points."""
    clock.now = opened
    with metrics.MetricWriter(os.path.join(run, "logs"), stream=io.StringIO()) as writer:
        for t, step, prefix, scalars in points:
            clock.now = t
            writer.write_scalars(step, scalars, prefix)


def write_config(run: str, **data) -> None:
    config = json.loads(json.dumps(CONFIG))
    config["data"].update(data)
    os.makedirs(run, exist_ok=True)
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump(config, f)


def train(loss, tokens_per_s, mfu):
    return {"loss": loss, "learning_rate": 1e-4, "tokens_per_s": tokens_per_s, "mfu": mfu}


@pytest.fixture
def sweep(tmp_path, clock):
    """SWEEP/{base, short, whole_word} and SWEEP/data (not a run). Values are exact in
    float32, as TensorBoard stores them."""
    root = tmp_path / "sweep"
    base, short, whole = (str(root / n) for n in ("base", "short", "whole_word"))
    # base: one process, 30 s; eval at the end; downstream results.
    write_config(base, dir="/data/a")
    write_log(
        base,
        clock,
        1000.0,
        [
            (1010.0, 10, "train", train(4.0, 100.0, 0.0625)),  # first point: compilation
            (1020.0, 20, "train", train(3.5, 200.0, 0.25)),
            (1030.0, 30, "train", train(3.0, 300.0, 0.5)),
            (1030.0, 30, "eval", {"loss": 3.25, "mlm_accuracy": 0.5}),
        ],
    )
    with open(os.path.join(base, "results.json"), "w") as f:
        json.dump(RESULTS, f)
    # whole_word: killed after logging step 30 (no checkpoint there), resumed from step 10
    # 2985 s later; the resumed process logs steps 20 and 30 again.
    write_config(whole, dir="/data/b", mask_strategy="whole_word")
    write_log(
        whole,
        clock,
        2000.0,
        [
            (2005.0, 10, "train", train(5.0, 50.0, 0.125)),
            (2010.0, 20, "train", train(4.5, 400.0, 0.5)),
            (2015.0, 30, "train", train(9.0, 500.0, 0.625)),
        ],
    )
    write_log(
        whole,
        clock,
        5000.0,
        [
            (5004.0, 20, "train", train(4.25, 60.0, 0.0625)),  # first point of the resume
            (5008.0, 30, "train", train(2.5, 600.0, 0.75)),
            (5008.0, 30, "eval", {"loss": 2.75}),
        ],
    )
    # short: a single train point, no eval, no results.
    write_config(short, mask_strategy="span")
    write_log(short, clock, 3000.0, [(3007.0, 5, "train", train(6.0, 70.0, 0.125))])
    # Not a run: prepared data next to the runs.
    os.makedirs(root / "data")
    (root / "data" / "manifest.json").write_text("{}")
    return str(root)


def read_csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]


def test_report_of_a_sweep(sweep, tmp_path):
    out = str(tmp_path / "report")
    table = compare.compare([sweep], out)
    assert sorted(os.listdir(out)) == ["downstream.png", "loss.png", "report.csv", "report.md"]

    header, rows = read_csv(os.path.join(out, "report.csv"))
    ds = [
        f"{k} {s}"
        for k in ("demo_next/accuracy", "demo_boundary/f1")
        for s in ("median", "min", "max", "n")
    ]
    assert header == [
        "run",
        "overrides",
        "steps",
        "final_train_loss",
        "final_eval_loss",
        *ds,
        "tokens_per_s",
        "mfu",
        "wall_time_s",
    ]
    assert [r["run"] for r in rows] == ["base", "short", "whole_word"]  # SWEEP/data skipped
    base, short, whole = rows
    # Only data.mask_strategy differs; data.dir and the other path keys do not count.
    assert base["overrides"] == "data.mask_strategy=token"
    assert short["overrides"] == "data.mask_strategy=span"
    assert whole["overrides"] == "data.mask_strategy=whole_word"

    def number(row, key):
        return float(row[key])

    # base: last step 30; tokens/s and MFU leave out the first point (compilation).
    assert int(base["steps"]) == 30
    assert number(base, "final_train_loss") == 3.0
    assert number(base, "final_eval_loss") == 3.25
    assert number(base, "tokens_per_s") == pytest.approx((200 + 300) / 2)
    assert number(base, "mfu") == pytest.approx((0.25 + 0.5) / 2)
    assert number(base, "wall_time_s") == pytest.approx(1030 - 1000)
    assert [number(base, k) for k in ds[:3]] == [0.625, 0.5, 0.75]
    assert int(base["demo_next/accuracy n"]) == 3
    assert [number(base, k) for k in ds[4:7]] == [0.25, 0.25, 0.25]
    assert int(base["demo_boundary/f1 n"]) == 1
    # short: the only point counts; no eval, no downstream: blanks.
    assert int(short["steps"]) == 5
    assert number(short, "final_train_loss") == 6.0
    assert short["final_eval_loss"] == ""
    assert number(short, "tokens_per_s") == pytest.approx(70)
    assert number(short, "mfu") == pytest.approx(0.125)
    assert number(short, "wall_time_s") == pytest.approx(3007 - 3000)
    assert all(short[k] == "" and whole[k] == "" for k in ds)
    # whole_word: the resumed process's step 30 (2.5), not the killed one's (9.0); each
    # process start's first point left out of the means; the 2985 s gap not counted.
    assert int(whole["steps"]) == 30
    assert number(whole, "final_train_loss") == 2.5
    assert number(whole, "final_eval_loss") == 2.75
    assert number(whole, "tokens_per_s") == pytest.approx((400 + 500 + 600) / 3)
    assert number(whole, "mfu") == pytest.approx((0.5 + 0.625 + 0.75) / 3)
    assert number(whole, "wall_time_s") == pytest.approx((2015 - 2000) + (5008 - 5000))

    expected = [
        "| run | overrides | steps | train loss | eval loss | demo_next/accuracy | "
        "demo_boundary/f1 | tokens/s | MFU | wall time |",
        "| base | data.mask_strategy=token | 30 | 3.0000 | 3.2500 | 0.625 (0.5-0.75, n=3) | "
        "0.25 (0.25-0.25, n=1) | 250 | 37.5% | 0:00:30 |",
        "| short | data.mask_strategy=span | 5 | 6.0000 |  |  |  | 70 | 12.5% | 0:00:07 |",
        "| whole_word | data.mask_strategy=whole_word | 30 | 2.5000 | 2.7500 |  |  | 500 | "
        "62.5% | 0:00:23 |",
    ]
    lines = table.splitlines()
    assert [lines[0], *lines[2:]] == expected
    with open(os.path.join(out, "report.md")) as f:
        report = f.read()
    assert table in report
    assert "![loss curves](loss.png)" in report and "![downstream scores](downstream.png)" in report
    for name in ("loss.png", "downstream.png"):
        with Image.open(os.path.join(out, name)) as image:
            assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0


def test_run_directories_names_and_an_old_report(sweep, tmp_path):
    # Two runs with the same basename are named by as much of their path as tells them
    # apart; a run named twice (directly and in its sweep) is shown once.
    a, b = tmp_path / "a" / "x" / "base", tmp_path / "b" / "x" / "base"
    shutil.copytree(os.path.join(sweep, "base"), a)
    shutil.copytree(os.path.join(sweep, "whole_word"), b)
    os.remove(a / "results.json")
    out = tmp_path / "report"
    out.mkdir()
    for name in ("report.md", "downstream.png"):  # a previous report, with downstream
        (out / name).write_text("old")
    table = compare.compare([str(a), str(b), str(a)], str(out))
    _, rows = read_csv(str(out / "report.csv"))
    assert [r["run"] for r in rows] == ["a/x/base", "b/x/base"]
    assert [r["overrides"] for r in rows] == [
        "data.mask_strategy=token",
        "data.mask_strategy=whole_word",
    ]
    assert "| a/x/base |" in table and "| b/x/base |" in table
    # Replaced as a whole: no results now, so no downstream.png.
    assert sorted(os.listdir(out)) == ["loss.png", "report.csv", "report.md"]
    assert "downstream" not in (out / "report.md").read_text()
    # One run: no overrides.
    compare.compare([str(b)], str(out))
    _, rows = read_csv(str(out / "report.csv"))
    assert [(r["run"], r["overrides"]) for r in rows] == [("base", "")]


def _no_train_loss(tmp_path, clock, sweep):
    run = os.path.join(sweep, "broken")
    write_config(run)
    write_log(run, clock, 10.0, [(11.0, 5, "eval", {"loss": 1.0})])
    return [sweep], os.path.join(run, "logs")


def _results(text):
    def make(tmp_path, clock, sweep):
        path = os.path.join(sweep, "short", "results.json")
        with open(path, "w") as f:
            f.write(text)
        return [sweep], path

    return make


def _config_only(tmp_path, clock, sweep):
    write_config(str(tmp_path / "model"))
    return [str(tmp_path / "model")], str(tmp_path / "model")


def _empty_logs(tmp_path, clock, sweep):
    write_config(str(tmp_path / "run"))
    os.makedirs(tmp_path / "run" / "logs")
    return [sweep, str(tmp_path / "run")], str(tmp_path / "run" / "logs")


def _no_config(tmp_path, clock, sweep):
    os.remove(os.path.join(sweep, "short", "config.json"))
    return [sweep], os.path.join(sweep, "short", "config.json")


def _no_runs(tmp_path, clock, sweep):
    return [sweep, os.path.join(sweep, "data")], os.path.join(sweep, "data")


def _missing(tmp_path, clock, sweep):
    return [sweep, str(tmp_path / "nope")], str(tmp_path / "nope")


BAD_RESULTS = dict(
    RESULTS, downstream={"demo_next": dict(RESULTS["downstream"]["demo_next"], scores=["0.5"])}
)


@pytest.mark.parametrize(
    "make",
    [
        _missing,
        _no_runs,
        _config_only,
        _empty_logs,
        _no_config,
        _no_train_loss,
        _results("{not json"),
        _results(json.dumps({"format": "other", "version": 1})),
        _results(json.dumps(BAD_RESULTS)),
    ],
    ids=[
        "missing",
        "no_runs",
        "config_only",
        "empty_logs",
        "no_config",
        "no_train_loss",
        "results_not_json",
        "results_format",
        "results_scores",
    ],
)
def test_errors_name_the_path_and_write_nothing(make, sweep, tmp_path, clock):
    dirs, path = make(tmp_path, clock, sweep)
    old = tmp_path / "old"
    old.mkdir()
    (old / "report.md").write_text("old report")
    before = sorted(os.listdir(tmp_path))
    for out in (str(old), str(tmp_path / "new")):
        with pytest.raises(ValueError) as e:
            compare.compare(dirs, out)
        message = str(e.value)
        assert path in message and "\n" not in message, message
    assert sorted(os.listdir(tmp_path)) == before  # no report, no temporary directory
    assert os.listdir(old) == ["report.md"] and (old / "report.md").read_text() == "old report"


def test_a_failure_while_writing_leaves_the_old_report(sweep, tmp_path, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("old report")

    def fail(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_lib, "plot_loss", fail)
    with pytest.raises(RuntimeError):
        compare.compare([sweep], str(out))
    assert sorted(os.listdir(tmp_path)) == ["report", "sweep"]
    assert os.listdir(out) == ["report.md"] and (out / "report.md").read_text() == "old report"


def test_out_that_is_not_a_report_is_never_replaced(sweep, tmp_path):
    with pytest.raises(ValueError, match="not a compare report"):
        compare.compare([sweep], sweep)
    assert sorted(os.listdir(sweep)) == ["base", "data", "short", "whole_word"]


def test_command_usage_errors(monkeypatch, capsys, sweep):
    from absl import flags

    from bertjax import __main__

    for args, message in (
        (["compare", sweep], "error: --out is required"),
        (["compare", "--out=/tmp/x"], "error: no run directories"),
    ):
        flags.FLAGS.unparse_flags()  # a flag parsed before keeps its value otherwise
        monkeypatch.setattr(sys, "argv", ["bertjax", *args])
        assert __main__.main() == 1
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err
    flags.FLAGS.unparse_flags()


def test_command_line(sweep, tmp_path):
    out = str(tmp_path / "report")
    r = bertjax("compare", sweep, f"--out={out}", timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("| run | overrides | steps |")
    assert "| whole_word | data.mask_strategy=whole_word | 30 | 2.5000 |" in r.stdout
    with open(os.path.join(out, "report.md")) as f:
        assert r.stdout.strip() in f.read()


def test_a_sweep_in_a_bucket_and_its_report_there(sweep, tmp_path, bucket):
    """The same sweep uploaded to a bucket (the local Cloud Storage emulator), its report
    written there: the same table and CSV as from and to local disk."""
    from bertjax import paths

    for name in paths.walk_files(sweep):
        paths.upload(os.path.join(sweep, name), f"{bucket}/sweep/{name}")
    local_out = str(tmp_path / "report")
    want = compare.compare([sweep], local_out)
    out = f"{bucket}/report"
    assert compare.compare([f"{bucket}/sweep"], out) == want
    assert paths.listdir(out) == ["downstream.png", "loss.png", "report.csv", "report.md"]
    with open(os.path.join(local_out, "report.csv"), "rb") as f:
        assert paths.read_bytes(f"{out}/report.csv") == f.read()


def _run_of(name, overrides, train, eval_, next_scores=None):
    down = {}
    if next_scores is not None:  # a fine-tuning per seed: its median is the run's figure
        scores = tuple(next_scores)
        down[("demo_next", "accuracy")] = compare.Downstream(scores, sorted(scores)[1])
    return compare.Run(
        path=f"/runs/{name}",
        name=name,
        config={},
        train_loss=[(10, train + 1.0), (20, train)],
        eval_loss=[(20, eval_)] if eval_ is not None else [],
        tokens_per_s=None,
        mfu=None,
        wall_time_s=1.0,
        downstream=down,
        overrides=overrides,
    )


def test_runs_that_differ_only_by_seed_are_summarised_per_setting():
    runs = [
        _run_of("a0", {"model.mlp": "dense", "seed": 0}, 5.0, 4.0, [0.1, 0.6, 0.9]),
        _run_of("a1", {"model.mlp": "dense", "seed": 1}, 5.5, 4.4, [0.2, 0.5, 0.7]),
        _run_of("a2", {"model.mlp": "dense", "seed": 2}, 4.0, 4.2, [0.3, 0.4, 0.8]),
        _run_of("b0", {"model.mlp": "glu", "seed": 0}, 3.0, None),
        _run_of("b1", {"model.mlp": "glu", "seed": 1}, 2.0, None),
    ]
    rows = report_lib.seeds_table(runs).splitlines()
    assert rows[0] == "| setting | seeds | train loss | eval loss | demo_next/accuracy |"
    # by hand: train 5.0, 5.5, 4.0 -> median 5; eval 4.0, 4.4, 4.2 -> 4.2; the downstream
    # medians 0.6, 0.5, 0.4 -> 0.5; two seeds: the mean of the middle two
    assert rows[2] == (
        "| model.mlp=dense | 0, 1, 2 | 5 [4-5.5] (n=3) | 4.2 [4-4.4] (n=3) | 0.5 [0.4-0.6] (n=3) |"
    )
    assert rows[3] == "| model.mlp=glu | 0, 1 | 2.5 [2-3] (n=2) |  |  |"
    assert report_lib.seeds_table(runs[:1] + runs[3:4]) is None  # one seed a setting
    assert "Over seeds" in report_lib.markdown_report(runs)
    assert "Over seeds" not in report_lib.markdown_report(runs[:1])


LONG = {f"model.switch_{k}": "x" * 12 for k in range(8)}  # a 170-character setting


def _outside(fig, ax) -> bool:
    """Whether the figure's legend lies wholly below the axes (its labels and ticks too)."""
    fig.canvas.draw()  # lays the figure out (constrained layout)
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    return legend.y1 <= ax.get_tightbbox(renderer).y0


def test_plots_colour_a_setting_alike_and_keep_long_names_out_of_the_axes():
    runs = [
        _run_of("a0", {**LONG, "model.mlp": "dense", "seed": 0}, 5.0, 4.0, [0.1, 0.6, 0.9]),
        _run_of("b0", {**LONG, "model.mlp": "glu", "seed": 0}, 3.0, 2.0, [0.2, 0.3, 0.4]),
        _run_of("a1", {**LONG, "model.mlp": "dense", "seed": 1}, 5.5, 4.4, [0.2, 0.5, 0.7]),
        _run_of("b1", {**LONG, "model.mlp": "glu", "seed": 1}, 2.0, 1.0, [0.3, 0.5, 0.6]),
    ]
    fig = report_lib.loss_figure(runs)
    (ax,) = fig.axes
    # a train and an eval line per run, drawn setting by setting (a0, a1, b0, b1): the
    # a runs in one colour, the b runs in another
    colours = [line.get_color() for line in ax.get_lines()]
    assert len(set(colours[:4])) == len(set(colours[4:])) == 1 and colours[0] != colours[4]
    texts = [t.get_text().replace("\n    ", " ") for t in fig.legends[0].get_texts()]
    setting = " ".join(f"{k}={v}" for k, v in LONG.items())
    assert texts == [f"1: {setting} model.mlp=dense", f"2: {setting} model.mlp=glu"]
    assert _outside(fig, ax)
    assert ax.get_position().width > 0.8  # the axes keep the figure's width
    fig = report_lib.downstream_figure(runs)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]
    assert _outside(fig, ax)
    dots, bars = ax.collections[0::2], ax.collections[1::2]
    # every fine-tuning score of a setting in its column; the bar at the median of the
    # runs' medians (by hand: a: 0.6 and 0.5 -> 0.55; b: 0.3 and 0.5 -> 0.4)
    assert sorted(dots[0].get_offsets()[:, 1].tolist()) == [0.1, 0.2, 0.5, 0.6, 0.7, 0.9]
    assert set(dots[1].get_offsets()[:, 0].tolist()) == {1.0}
    assert [b.get_offsets()[0].tolist() for b in bars] == [
        pytest.approx([0.0, 0.55]),
        pytest.approx([1.0, 0.4]),
    ]


def test_plots_of_runs_without_seeds_name_each_run():
    runs = [_run_of("base", {}, 3.0, 2.5, [0.5, 0.6, 0.7]), _run_of("short", {}, 4.0, None)]
    fig = report_lib.loss_figure(runs)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["base", "short"]
    assert len({line.get_color() for line in fig.axes[0].get_lines()}) == 2
    (ax,) = report_lib.downstream_figure(runs).axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["base", "short"]
    # long names: numbered columns, the legend numbered alike (only runs with scores)
    runs[0].name = "x" * 30
    fig = report_lib.downstream_figure(runs)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "2"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [f"1: {'x' * 30}"]
