"""bertjax.paths on local paths and on gs:// (the local Cloud Storage emulator)."""

from __future__ import annotations

import os
import stat

import pytest

from bertjax import objectstore, paths


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("bucket") + "/root"


def test_write_read_list(root):
    paths.makedirs(root)
    paths.write_json(paths.join(root, "a.json"), {"x": [1, 2]})
    paths.write_bytes(
        paths.join(root, "sub", "b.bin")
        if paths.is_remote(root)
        else _mk(paths.join(root, "sub"), "b.bin"),
        b"\x00\x01",
    )
    assert paths.read_json(paths.join(root, "a.json")) == {"x": [1, 2]}
    assert paths.read_bytes(paths.join(root, "sub", "b.bin")) == b"\x00\x01"
    assert paths.listdir(root) == ["a.json", "sub"]
    assert paths.walk_files(root) == ["a.json", "sub/b.bin"]
    assert paths.isdir(paths.join(root, "sub")) and not paths.isdir(paths.join(root, "a.json"))
    assert paths.isfile(paths.join(root, "a.json"))
    assert paths.getsize(paths.join(root, "sub", "b.bin")) == 2
    assert paths.glob(paths.join(root, "*.json")) == [paths.join(root, "a.json")]
    with paths.open(paths.join(root, "a.json")) as f:
        assert '"x"' in f.read()
    import hashlib

    assert paths.sha256(paths.join(root, "sub", "b.bin")) == hashlib.sha256(b"\x00\x01").hexdigest()
    paths.remove(paths.join(root, "a.json"))
    paths.remove(paths.join(root, "a.json"))  # missing: no error
    assert not paths.exists(paths.join(root, "a.json"))
    paths.rmtree(root)
    assert not paths.exists(root)


def _mk(directory: str, name: str) -> str:
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, name)


def test_missing_file_is_one_line_naming_it(root):
    path = paths.join(root, "nothing.json")
    with pytest.raises(ValueError, match=f"^{path}: "):
        paths.read_json(path)
    with pytest.raises(FileNotFoundError) as e:
        paths.read_bytes(path)
    assert e.value.filename == path or path in str(e.value)


def test_atomic_directory_publishes_whole_or_nothing(root):
    out = paths.join(root, "model")
    with pytest.raises(RuntimeError, match="boom"):
        with paths.atomic_directory(out) as tmp:
            with open(os.path.join(tmp, "weights"), "wb") as f:
                f.write(b"w" * 1000)
            raise RuntimeError("boom")
    assert not paths.exists(out)
    with paths.atomic_directory(out) as tmp:
        os.makedirs(os.path.join(tmp, "params"))
        with open(os.path.join(tmp, "params", "w"), "wb") as f:
            f.write(b"1")
        with open(os.path.join(tmp, "config.json"), "w") as f:
            f.write("{}")
    assert paths.walk_files(out) == ["config.json", "params/w"]
    with pytest.raises(FileExistsError):
        with paths.atomic_directory(out):
            pass
    with paths.atomic_directory(out, overwrite=True) as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            f.write('{"v": 2}')
    assert paths.walk_files(out) == ["config.json"]  # the old files are gone
    assert paths.read_json(paths.join(out, "config.json")) == {"v": 2}


def test_interrupted_upload_leaves_no_marker(bucket, tmp_path, monkeypatch):
    """An upload that fails after some files leaves the directory without its marker:
    nothing reads as complete."""
    local = tmp_path / "build"
    (local / "params").mkdir(parents=True)
    for i in range(3):
        (local / "params" / f"f{i}").write_bytes(b"x" * 10)
    (local / "config.json").write_text("{}")
    fs, _ = objectstore.fs(bucket)
    real, calls = fs.put_file, []

    def failing(lpath, rpath, *a, **k):
        calls.append(rpath)
        if len(calls) == 3:
            raise ConnectionError("network down")
        return real(lpath, rpath, *a, **k)

    monkeypatch.setattr(fs, "put_file", failing)
    out = bucket + "/model"
    with pytest.raises(OSError) as e:
        objectstore.publish_directory(str(local), paths.walk_files(str(local)), out, "config.json")
    # What a command prints: "FILE: what went wrong".
    assert (e.value.filename, e.value.strerror) == (out, "publish failed (network down)")
    assert not paths.exists(out + "/config.json")
    assert all(not c.endswith("config.json") for c in calls)


def test_sizes_and_copy(root, tmp_path, bucket):
    """sizes lists a directory's files with their sizes, afresh; copy publishes a copy
    locally, between URLs (server-side) and across the two."""
    assert paths.sizes(paths.join(root, "nothing")) == {}
    paths.makedirs(paths.join(root, "sub"))
    paths.write_bytes(paths.join(root, "a.bin"), b"abc")
    paths.write_bytes(paths.join(root, "sub", "b.bin"), b"x")
    assert paths.sizes(root) == {"a.bin": 3}
    paths.copy(paths.join(root, "a.bin"), paths.join(root, "c.bin"))
    assert paths.read_bytes(paths.join(root, "c.bin")) == b"abc"
    assert paths.sizes(root) == {"a.bin": 3, "c.bin": 3}
    elsewhere = [str(tmp_path / "here.bin"), bucket + "/there.bin"]
    for other in elsewhere:  # to the other kind of place and back
        paths.copy(paths.join(root, "a.bin"), other)
        paths.copy(other, paths.join(root, "d.bin"))
        assert paths.read_bytes(other) == paths.read_bytes(paths.join(root, "d.bin")) == b"abc"


def test_missing_bucket_is_one_line(bucket):
    missing = bucket + "-missing/x.json"
    with pytest.raises(ValueError, match="^gs://.*-missing/x.json: "):
        paths.read_json(missing)
    with pytest.raises(FileNotFoundError) as e:
        paths.write_bytes(missing, b"{}")
    assert (e.value.filename, e.value.strerror) == (
        missing,
        f"write: no such bucket {bucket}-missing",
    )
    with pytest.raises(FileNotFoundError) as e:  # checked before a job's work
        paths.makedirs(bucket + "-missing/run")
    assert (e.value.filename, e.value.strerror) == (bucket + "-missing", "no such bucket")
    paths.makedirs(bucket + "/run")  # an existing bucket: nothing to do


def test_local_files_follow_the_umask(tmp_path):
    path = str(tmp_path / "f.json")
    old = os.umask(0o022)
    try:
        paths.write_json(path, {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~paths._UMASK


def test_local_copy_of_a_bucket_directory(bucket, tmp_path):
    paths.write_bytes(bucket + "/tok/vocab.txt", b"[PAD]\n")
    paths.write_bytes(bucket + "/tok/sub/x", b"1")
    with paths.local_copy(bucket + "/tok") as local:
        assert open(os.path.join(local, "vocab.txt"), "rb").read() == b"[PAD]\n"
        assert open(os.path.join(local, "sub", "x"), "rb").read() == b"1"
    assert not os.path.exists(local)
    with paths.local_copy(str(tmp_path)) as same:
        assert same == str(tmp_path)


def test_names():
    assert paths.join("gs://b/x", "y", "z") == "gs://b/x/y/z"
    assert paths.dirname("gs://b/x/y") == "gs://b/x"
    assert paths.basename("gs://b/x/y/") == "y"
    assert paths.relative("gs://b/x/y/z", "gs://b/x") == "y/z"
    assert paths.is_remote("gs://b") and not paths.is_remote("/tmp/x")
    assert not paths.is_remote("file:///tmp/x")


def test_checkpoints_listed_afresh_see_what_another_process_saved(bucket):
    """gcsfs caches listings per process and Orbax lists through it: a TrainCheckpoints
    opened after another process saved a step lists it (the pod test's resume once read
    a stale listing, step 4 of 4, 8, 12)."""
    import fsspec
    import jax.numpy as jnp

    from bertjax.checkpoint import TrainCheckpoints

    directory = f"{bucket}/run/checkpoints"
    ckpts = TrainCheckpoints(directory, async_save=False)
    ckpts.save(1, {"w": jnp.arange(4.0)}, data={"step": 1}, meta={})
    ckpts.close()
    assert TrainCheckpoints(directory, read_only=True).all_steps() == [1]  # listed
    # Another process's client (not this process's cached instance) saves step 2.
    other = fsspec.filesystem("gcs", skip_instance_cache=True, use_listings_cache=False)
    for name in other.find(f"{directory}/1"):
        other.pipe(name.replace("/checkpoints/1/", "/checkpoints/2/"), other.cat(name))
    assert TrainCheckpoints(directory, read_only=True).all_steps() == [1, 2]


@pytest.mark.parametrize("tail", [b"\r", b"\r\r", b"\n", b"\r\n", b"x"])
def test_every_byte_comes_back_from_a_bucket(bucket, tmp_path, tail):
    """An object is the bytes uploaded, whatever they end with. The emulator's multipart
    parsing once dropped a final carriage return (a model directory whose last data file
    ended in 0x0d read as damaged, one CI run in several); real Cloud Storage keeps it."""
    data = bytes(range(256)) + tail
    local = tmp_path / "f.bin"
    local.write_bytes(data)
    paths.write_bytes(bucket + "/a.bin", data)
    objectstore.publish_directory(str(tmp_path), ["f.bin"], bucket + "/dir", "f.bin")
    assert paths.read_bytes(bucket + "/a.bin") == data
    with paths.local_copy(bucket + "/dir") as copy:
        assert open(os.path.join(copy, "f.bin"), "rb").read() == data
