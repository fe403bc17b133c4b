"""The per-image bytecode cache: private, per image identity, bounded, and never someone else's."""
import os
import stat

from contprobe import pycache


def test_directory_is_private_and_per_image(tmp_path):
    a, b = tmp_path / "a.sif", tmp_path / "b.sif"
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    da = pycache.prepare(str(tmp_path / "cache"), str(a))
    db = pycache.prepare(str(tmp_path / "cache"), str(b))
    assert da and db and da != db
    assert stat.S_IMODE(os.stat(da).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "cache" / "pycache").st_mode) == 0o700
    assert pycache.prepare(str(tmp_path / "cache"), str(a)) == da      # stable while the image is unchanged


def test_rebuilt_image_gets_a_fresh_cache(tmp_path):
    img = tmp_path / "a.sif"
    img.write_bytes(b"x")
    before = pycache.image_key(str(img))
    img.write_bytes(b"xy")
    assert pycache.image_key(str(img)) != before


def test_only_the_most_recent_are_kept(tmp_path):
    root = tmp_path / "cache"
    made = []
    for i in range(5):
        img = tmp_path / f"{i}.sif"
        img.write_bytes(b"x")
        d = pycache.prepare(str(root), str(img), keep=3)
        os.utime(d, (1000 + i, 1000 + i))       # distinct, increasing last use
        made.append(d)
    pycache.prepare(str(root), str(tmp_path / "4.sif"), keep=3)
    assert sorted(os.listdir(root / "pycache")) == sorted(os.path.basename(d) for d in made[-3:])


def test_a_planted_link_is_not_used(tmp_path):
    img = tmp_path / "a.sif"
    img.write_bytes(b"x")
    (tmp_path / "cache" / "pycache").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "cache" / "pycache" / pycache.image_key(str(img)))
    assert pycache.prepare(str(tmp_path / "cache"), str(img)) is None


def test_an_unwritable_cache_costs_nothing_but_speed(tmp_path):
    img = tmp_path / "a.sif"
    img.write_bytes(b"x")
    (tmp_path / "file").write_text("")
    assert pycache.prepare(str(tmp_path / "file" / "cache"), str(img)) is None
