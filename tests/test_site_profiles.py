"""Site profiles as data: performance references are validated, extra profile directories work."""
from __future__ import annotations

import pytest

from contprobe import site
from contprobe.inimage import bootstrap


def test_polaris_references_and_existing_facts():
    s = site.load("polaris")
    assert s.perf["torch.matmul"]["matmul_fp16_tflops"] == (200.0, 0.25)
    assert s.perf["allreduce.mpi4py[1048576]"]["busbw_gbps"] == (5.0, 0.5)
    assert "h2d_gbps" in s.perf["torch.h2d_bandwidth"]
    assert bootstrap.gpu_for(0, 4, s.gpu_order) == 3 and s.image_dir == "/soft/containers"
    assert site.detect(env={}, hostname="x3004c0s13b0n0.hsn.cm.polaris.alcf.anl.gov").name == "polaris"
    assert site.load("generic").perf == {}


def test_a_machine_is_a_profile_not_code(tmp_path, monkeypatch):
    (tmp_path / "sunspot.toml").write_text(
        'name = "sunspot"\n[detect]\nhostnames = ["^x1\\\\d+c"]\n[gpus]\nper_node = 6\n'
        '[perf."torch.matmul"]\nmatmul_fp16_tflops = [100, 0.3]\n')
    monkeypatch.setenv(site.SITES_PATH_ENV, str(tmp_path))
    assert "sunspot" in site.available() and "polaris" in site.available()
    s = site.load("sunspot")
    assert s.gpus_per_node == 6 and s.perf == {"torch.matmul": {"matmul_fp16_tflops": (100.0, 0.3)}}
    assert site.detect(env={}, hostname="x1921c0s0b0n0").name == "sunspot"


@pytest.mark.parametrize("perf, why", [
    ('[perf."p"]\nm = [10]', "must be [reference, tolerance]"),
    ('[perf."p"]\nm = ["fast", 0.1]', "must be [reference, tolerance]"),
    ('[perf."p"]\nm = [10, 1.5]', "tolerance a fraction"),
    ('[perf."p"]\nm = [0, 0.1]', "reference must be > 0"),
    ('[perf]\np = 3', "must be a table of metric"),
])
def test_bad_reference_fails_loudly(tmp_path, monkeypatch, perf, why):
    (tmp_path / "bad.toml").write_text(f'name = "bad"\n{perf}\n')
    monkeypatch.setenv(site.SITES_PATH_ENV, str(tmp_path))
    with pytest.raises(site.SiteError, match="bad.toml.*" + why.replace("[", r"\[").replace("]", r"\]")):
        site.load("bad")


def test_unknown_and_malformed(tmp_path, monkeypatch):
    with pytest.raises(site.SiteError, match="unknown site 'nowhere'"):
        site.load("nowhere")
    with pytest.raises(site.SiteError, match="unknown site"):
        site.load("../polaris")
    (tmp_path / "broken.toml").write_text('name = "broken\n')
    monkeypatch.setenv(site.SITES_PATH_ENV, str(tmp_path))
    with pytest.raises(site.SiteError, match="broken.toml"):
        site.load("broken")


@pytest.mark.parametrize("text, why", [
    ('name = "typo"\ngpus_per_node = 4\n', "unknown key 'gpus_per_node'"),
    ('name = "typo"\n[gpus]\nper_nod = 4\n', "unknown key gpus.per_nod"),
    ('name = "typo"\n[gpu]\nper_node = 4\n', r"unknown section \[gpu\]"),
    ('name = "typo"\n[launcher]\nkind = "aprun"\n', "launcher.kind 'aprun' is not one of"),
    ('name = "typo"\n[gpus]\nper_node = "four"\n', "gpus.per_node must be a int"),
    ('name = "typo"\n[notes]\nno-such-gotcha = "x"\n', "notes.no-such-gotcha: no such gotcha"),
])
def test_a_key_nothing_reads_is_a_load_error_naming_file_and_key(tmp_path, monkeypatch, text, why):
    (tmp_path / "typo.toml").write_text(text)
    monkeypatch.setenv(site.SITES_PATH_ENV, str(tmp_path))
    with pytest.raises(site.SiteError, match="typo.toml.*" + why):
        site.load("typo")


def test_every_shipped_profile_loads_and_perlmutter_is_slurm_and_srun():
    for name in site.available():
        site.load(name)
    p = site.load("perlmutter")
    assert (p.scheduler, p.launcher, p.gpus_per_node) == ("slurm", "srun", 4)
