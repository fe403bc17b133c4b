"""GPU health probes (row remapper, PCIe link, clocks, persistence, NVLink, MIG) against outputs
recorded on real GPUs (tests/fixtures/nvidia-smi/*/PROVENANCE), healthy and failing, through the
stand-in nvidia-smi."""
from __future__ import annotations

import pytest

from contprobe.inimage import catalog, gpuhealth
from conftest import NVSMI_FIXTURES, result_of, run_cli, standin_env

HEALTH_K = "row_remap or pcie_link or clocks or persistence or nvlink or mig"


def q(fixture: str):
    return gpuhealth.parse_q((NVSMI_FIXTURES / fixture / "q.txt").read_text())


def doctor(fixture: str, *args: str) -> dict:
    r = run_cli(["doctor", "-m", "gpu", "-k", HEALTH_K, "--json", "-", *args], env=standin_env(fixture))
    assert r.rc in (0, 1), r
    return r.json()


# ---- the parser on whole recordings ----------------------------------------------------------------
def test_parse_q_reads_every_gpu_and_nested_sections():
    gpus = q("h100x8-hw-slowdown")
    assert len(gpus) == 8 and gpus[0].bus_id == "00000000:19:00.0"
    g = gpus[0]
    assert g.get("Product Name") == "NVIDIA H100 80GB HBM3"
    assert g.get("PCI/GPU Link Info/PCIe Generation/Max") == "5"
    assert g.get("PCI/GPU Link Info/Link Width/Current") == "16x"
    assert g.get("Clocks Event Reasons/HW Power Brake Slowdown") == "Active"
    assert g.get("Remapped Rows/Pending") == "No"
    assert g.get("MIG Mode/Current") == "Disabled"
    assert g.get("Retired Pages/Pending Page Blacklist") == ""      # N/A reads as not reported


# ---- row remapper ---------------------------------------------------------------------------------
def test_row_remap_pending_on_recorded_a10():
    (g,) = q("a10-remap-pending")
    found = gpuhealth.row_remap(g)
    assert found.gotcha == "gpu-row-remap-pending" and "uncorrectable 4" in found.detail
    doc = doctor("a10-remap-pending")
    res = result_of(doc, "gpu.row_remap")
    assert res["outcome"] == "failed" and res["gotcha"] == "gpu-row-remap-pending", res
    assert res["fix"] == catalog.get("gpu-row-remap-pending").fix_line


def test_row_remap_healthy_and_pre_ampere():
    assert all(gpuhealth.row_remap(g) is None for g in q("h100x8-hw-slowdown"))
    assert result_of(doctor("rtx4090x8-mixed"), "gpu.row_remap")["outcome"] == "passed"
    # A TITAN V (Volta) retires pages, it has no row remapper: not judged, not failed.
    res = result_of(doctor("titanv-persistence-off"), "gpu.row_remap")
    assert res["outcome"] == "skipped" and "no row remapper" in res["message"], res


# ---- PCIe link -------------------------------------------------------------------------------------
def test_pcie_busy_links_at_max_pass_and_idle_downshift_is_not_judged():
    # The 4090 node: busy GPUs at Gen4 x16, idle ones at Gen1 x16 (the power-saving downshift).
    gpus = q("rtx4090x8-mixed")
    idle = [g for g in gpus if gpuhealth.is_idle(g)]
    assert len(idle) == 3 and all(g.get("PCI/GPU Link Info/PCIe Generation/Current") == "1" for g in idle)
    for g in idle:
        with pytest.raises(LookupError, match="idle"):
            gpuhealth.pcie_link(g)
    assert [gpuhealth.pcie_link(g) for g in gpus if g not in idle] == [None] * 5
    assert result_of(doctor("rtx4090x8-mixed"), "gpu.pcie_link")["outcome"] == "passed"
    assert result_of(doctor("h100x8-hw-slowdown"), "gpu.pcie_link")["outcome"] == "passed"
    # Every GPU idle at Gen1: a skip saying why, never a failure.
    res = result_of(doctor("rtx4090x8-idle"), "gpu.pcie_link")
    assert res["outcome"] == "skipped" and "idle" in res["message"], res


def test_pcie_link_below_max_on_recorded_a10g_is_degraded():
    # An A10G at P0 (Idle: Not Active, a server holding 8.7 GB on it) whose link trained x8 of x16.
    (g,) = q("a10g-pcie-x8-busy")
    found = gpuhealth.pcie_link(g)
    assert found.gotcha == "gpu-pcie-degraded" and "Gen4 x8 while not idle, maximum Gen4 x16" in found.detail
    res = result_of(doctor("a10g-pcie-x8-busy"), "gpu.pcie_link")
    assert res["outcome"] == "failed" and res["gotcha"] == "gpu-pcie-degraded", res
    assert res["fix"] == catalog.get("gpu-pcie-degraded").fix_line
    # The same report's persistence mode is Disabled: named by its own probe.
    assert result_of(doctor("a10g-pcie-x8-busy"), "gpu.persistence")["gotcha"] == "gpu-persistence-off"


# ---- clocks ----------------------------------------------------------------------------------------
def test_clocks_hw_power_brake_on_recorded_h100_node():
    found = [gpuhealth.clocks(g) for g in q("h100x8-hw-slowdown")]
    assert all(f and f.gotcha == "gpu-clocks-throttled" for f in found)
    assert "HW Slowdown, HW Power Brake Slowdown" in found[0].detail
    res = result_of(doctor("h100x8-hw-slowdown"), "gpu.clocks")
    assert res["outcome"] == "failed" and res["gotcha"] == "gpu-clocks-throttled", res
    assert "8 GPU(s)" in res["message"]


def test_clocks_healthy_node_passes():
    assert result_of(doctor("rtx4090x8-mixed"), "gpu.clocks")["outcome"] == "passed"


# ---- persistence -----------------------------------------------------------------------------------
def test_persistence_off_on_recorded_titan_v_and_on_elsewhere():
    res = result_of(doctor("titanv-persistence-off"), "gpu.persistence")
    assert res["outcome"] == "failed" and res["gotcha"] == "gpu-persistence-off", res
    assert result_of(doctor("h100x8-hw-slowdown"), "gpu.persistence")["outcome"] == "passed"


# ---- NVLink ----------------------------------------------------------------------------------------
def test_nvlink_all_up_on_recorded_a100_node():
    gpus = gpuhealth.parse_nvlink_status((NVSMI_FIXTURES / "a100x8-nvlink" / "nvlink-s.txt").read_text())
    assert len(gpus) == 8 and all(len(g.active) == 12 and not g.inactive for g in gpus)
    assert result_of(doctor("a100x8-nvlink"), "gpu.nvlink")["outcome"] == "passed"


def test_nvlink_inactive_links_on_recorded_v100():
    doc = doctor("v100-nvlink-inactive")
    res = result_of(doc, "gpu.nvlink")
    assert res["outcome"] == "failed" and res["gotcha"] == "gpu-nvlink-down", res
    assert "GPU 3 (Tesla V100-SXM2-32GB): NVLink link(s) 3, 5 inactive, 4 active" in res["message"], res


def test_nvlink_pcie_only_node_is_not_judged():
    # A PCIe board with no bridge reports every link inactive (or nothing): no NVLink to judge.
    assert gpuhealth.nvlink_down(gpuhealth.parse_nvlink_status("")) == []
    no_bridge = gpuhealth.parse_nvlink_status((NVSMI_FIXTURES / "v100-nvlink-inactive" / "nvlink-s.txt")
                                              .read_text().replace("25.781 GB/s", "<inactive>"))
    assert gpuhealth.nvlink_down(no_bridge) == []


# ---- MIG -------------------------------------------------------------------------------------------
def test_mig_mode_against_the_site_expectation():
    res = result_of(doctor("mig-mixed", "--expect-mig", "disabled"), "gpu.mig")
    assert res["outcome"] == "failed" and res["gotcha"] == "gpu-mig-mode", res
    assert res["message"].startswith("1 GPU(s)"), res
    assert "GPU-ec845691-fb46-e16d-abfb-b135308cb39f: MIG mode Enabled (pending Enabled)" in res["message"]
    res = result_of(doctor("mig-mixed", "--expect-mig", "enabled"), "gpu.mig")
    assert res["outcome"] == "failed" and res["message"].startswith("3 GPU(s)"), res
    assert result_of(doctor("mig-mixed"), "gpu.mig")["outcome"] == "skipped"


def test_site_profiles_carry_the_mig_expectation_into_validate():
    from contprobe import site
    from contprobe.commands import validate
    from contprobe.commands.run import RunRequest
    from contprobe.reports import pipeline
    from contprobe.suite import Expectations
    polaris = site.load("polaris")
    assert polaris.gpu_mig == "disabled" and polaris.resolved()["gpus"]["mig"] == "disabled"
    req = validate.apply_site(RunRequest("x.sif", polaris, Expectations(), pipeline.Outputs()), polaris, env={})
    assert req.exp.mig == "disabled" and ["--expect-mig", "disabled"] == req.exp.pytest_args()[2:4]
    with pytest.raises(site.SiteError, match="gpus.mig must be enabled or disabled"):
        site.parse({"gpus": {"mig": "on"}}, site.SITES_DIR / "x.toml")


def test_dcgm_messages_name_the_health_gotchas():
    # DCGM's own failure messages (dcgmlib/dcgm_errors.h, formatted) reach the same gotchas in explain.
    for text, gotcha in [
        ("GPU 2 had memory errors and row remappings are pending", "gpu-row-remap-pending"),
        ("GPU 0 had uncorrectable memory errors and row remapping failed.", "gpu-row-remap-failed"),
        ("Detected clock throttling due to power violation in GPU 3.", "gpu-clocks-throttled"),
        ("Persistence mode for GPU 1 is disabled.", "gpu-persistence-off"),
        ("GPU 5's NvLink link 7 is currently down", "gpu-nvlink-down"),
        ("GPU 4 is running at PCI link width 8X, which is below the minimum allowed link generation of 16 "
         "(parameter 'pcie.min_pci_width')", "gpu-pcie-degraded"),
    ]:
        assert catalog.match(text, "rank") == gotcha, text
