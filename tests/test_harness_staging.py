"""Staging the harness: once per results directory, shared by every rank and re-run, and by every image
of a nightly; read-only, owned by the operator; a second staging of the same contents copies nothing."""
from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from contprobe import harness
from tests.containers import image, run_as_user, user_dir


def modes(root: str):
    for r, dirs, files in os.walk(root):
        for name in dirs + files:
            yield os.path.join(r, name), stat.S_IMODE(os.lstat(os.path.join(r, name)).st_mode)


def test_staged_once_read_only_and_owned(tmp_path: Path):
    d = str(tmp_path / "h")
    assert harness.stage(d) == d
    assert harness.staged_key(d) == harness.content_key()
    assert os.stat(d).st_uid == os.getuid() and stat.S_IMODE(os.stat(d).st_mode) == 0o555
    for path, mode in modes(d):
        assert mode == (0o555 if os.path.isdir(path) else 0o444), path
    assert Path(d, "contprobe/inimage/bootstrap.py").is_file() and Path(d, "pylib/pytest/__init__.py").is_file()
    assert not list(Path(d).rglob("__pycache__")) and not list(Path(d).rglob("*.whl"))
    # again: nothing is copied (same inodes, same dates), nothing left beside it
    before = {p: (os.lstat(p).st_ino, os.lstat(p).st_mtime_ns) for p, _ in modes(d)}
    harness.stage(d)
    assert {p: (os.lstat(p).st_ino, os.lstat(p).st_mtime_ns) for p, _ in modes(d)} == before
    assert sorted(os.listdir(tmp_path)) == ["h"]


def test_brought_pytest_keeps_its_wheels_dates(tmp_path: Path):
    """So bytecode compiled from one staging is still valid for the next (source mtime and size match)."""
    d = harness.stage(str(tmp_path / "h"))
    whl = next(harness.WHEELS_DIR.glob("pytest-*.whl"))
    with zipfile.ZipFile(whl) as zf:
        info = zf.getinfo("pytest/__init__.py")
    import time
    want = time.mktime(info.date_time + (0, 0, -1))
    assert os.stat(os.path.join(d, "pylib", "pytest", "__init__.py")).st_mtime == want


@pytest.mark.parametrize("spoil", ["other-key", "group-writable"])
def test_a_harness_that_cannot_be_trusted_is_staged_again(tmp_path: Path, spoil: str):
    d = harness.stage(str(tmp_path / "h"))
    key = os.path.join(d, harness.KEY_FILE)
    if spoil == "other-key":
        os.chmod(d, 0o755)
        os.chmod(key, 0o644)
        with open(key, "w") as fh:
            fh.write("0" * 64 + "\n")
        os.chmod(d, 0o555)
    else:
        os.chmod(d, 0o775)
    assert harness.staged_key(d) != harness.content_key()
    harness.stage(d)
    assert harness.staged_key(d) == harness.content_key()
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o555


def test_a_link_is_never_staged_through(tmp_path: Path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "x").write_text("x")
    os.symlink(target, tmp_path / "h")
    with pytest.raises(OSError):
        harness.stage(str(tmp_path / "h"))
    assert sorted(os.listdir(target)) == ["x"] and sorted(os.listdir(tmp_path)) == ["elsewhere", "h"]


def test_an_empty_directory_is_staged_into(tmp_path: Path):
    (tmp_path / "h").mkdir()
    harness.stage(str(tmp_path / "h"))
    assert harness.staged_key(str(tmp_path / "h")) == harness.content_key()


def test_where_a_launch_finds_its_harness(monkeypatch, tmp_path: Path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    monkeypatch.delenv(harness.SHARED_VAR, raising=False)
    # the operator's copy of these contents, shared by every run; a second run copies nothing
    first = harness.prepare(str(out), str(cache))
    assert first == str(cache / "harness" / harness.content_key()[:24])
    assert harness.prepare(str(tmp_path / "other"), str(cache)) == first
    assert stat.S_IMODE(os.stat(cache / "harness").st_mode) == 0o700
    # a nightly's, when it names one (only an absolute path)
    monkeypatch.setenv(harness.SHARED_VAR, str(tmp_path / "night" / ".harness"))
    (tmp_path / "night").mkdir()
    assert harness.prepare(str(out), str(cache)) == str(tmp_path / "night" / ".harness")
    monkeypatch.setenv(harness.SHARED_VAR, "relative/.harness")
    assert harness.prepare(str(out), str(cache)) == first
    os.symlink(tmp_path / "night", tmp_path / "link")          # one it must not stage through
    monkeypatch.setenv(harness.SHARED_VAR, str(tmp_path / "link" / ".." / "link"))
    assert harness.prepare(str(out), str(cache)) == first
    # the results directory's own, when the cache cannot be written
    monkeypatch.delenv(harness.SHARED_VAR)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache should be")
    assert harness.prepare(str(out), str(blocked)) == str(out / ".harness")
    assert harness.staged_key(str(out / ".harness")) == harness.content_key()


def test_the_cache_keeps_the_latest_harnesses(monkeypatch, tmp_path: Path):
    monkeypatch.delenv(harness.SHARED_VAR, raising=False)
    root = tmp_path / "cache" / "harness"
    old = []
    for i in range(harness.KEEP + 2):      # older versions' harnesses, oldest first
        d = harness.stage(str(root / f"old{i}"))
        os.utime(d, (1000 + i, 1000 + i))
        old.append(d)
    (root / "stray").mkdir()                 # not a harness: never touched
    current = harness.prepare(str(tmp_path / "out"), str(tmp_path / "cache"))
    kept = sorted(os.listdir(root))
    assert os.path.basename(current) in kept and "stray" in kept
    assert [os.path.basename(d) for d in old if os.path.basename(d) in kept] == \
        [os.path.basename(d) for d in old[-(harness.KEEP - 1):]]


@pytest.mark.slow
def test_a_nightly_stages_one_harness_for_all_its_images(request):
    base, nopytest = image("base.sif"), image("nopytest.sif")
    work = user_dir("contprobe-night-")
    request.addfinalizer(lambda: shutil.rmtree(work, ignore_errors=True))
    imgs = os.path.join(work, "images")
    os.mkdir(imgs)
    for img in (base, nopytest):
        os.symlink(img, os.path.join(imgs, img.name))
    os.chown(imgs, os.stat(work).st_uid, os.stat(work).st_gid)
    res = run_as_user(["nightly", imgs, "--out-root", os.path.join(work, "nights"), "--night", "n1",
                       "--command", "run", "--run-args", "-m 'env or binds' --no-rerun"], timeout=900)
    assert res.rc == 0, res
    night = Path(work, "nights", "n1")
    shared = night / ".harness"
    assert os.stat(shared).st_uid == os.stat(work).st_uid and stat.S_IMODE(os.stat(shared).st_mode) == 0o555
    assert (shared / harness.KEY_FILE).read_text().strip() == harness.content_key()
    for name in ("base", "nopytest"):
        out = night / "results" / name
        assert not (out / ".harness").exists(), f"{name} staged its own harness"
        with open(out / "launch.json") as fh:
            rec = json.load(fh)
        assert f"{shared}:{harness.MOUNT}:ro" in rec["argv"], rec["argv"]
        assert list((out / "ranks").glob("junit-r00000-*.xml"))
