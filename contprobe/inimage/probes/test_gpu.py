"""gpu.*: the NVIDIA driver's view through nvidia-smi."""
from __future__ import annotations

from typing import Callable, List, Optional

import pytest

from contprobe.inimage import catalog, context, gpuhealth
from contprobe.inimage.diagnose import fail, skip

pytestmark = pytest.mark.gpu

KNOWN_NVSMI_FAILURES = ("nvidia-driver-not-loaded", "nvml-version-mismatch", "gpu-count-low")


def no_gpu(nv_missing: bool, expect_gpus, what: str):
    """A missing GPU is a skip unless an expectation demands one; in a container without --nv it is --nv."""
    gotcha = "nv-flag-missing" if nv_missing else "no-gpu-visible"
    reason = what + (" inside the container: was --nv given?" if nv_missing else "")
    if expect_gpus:
        fail(gotcha, f"{reason} (expected {expect_gpus} GPUs)")
    skip(gotcha, reason)


def test_nvidia_smi(nvsmi, nv_missing, expect_gpus, contprobe_state):
    if not nvsmi.found:
        no_gpu(nv_missing, expect_gpus, "nvidia-smi not found")
    if nvsmi.rc != 0:
        gotcha = catalog.match(nvsmi.text, among=KNOWN_NVSMI_FAILURES)
        if gotcha == "gpu-count-low" and not expect_gpus:  # "No devices were found"
            skip(gotcha, "nvidia-smi found no devices")
        fail(gotcha, f"nvidia-smi exited {nvsmi.rc}", nvsmi.text)
    if not nvsmi.rows:
        fail("unknown", "nvidia-smi printed no GPU rows", nvsmi.text)
    banner = nvsmi.banner()
    contprobe_state.record("driver", context.driver_version(banner))
    contprobe_state.record("cuda", context.driver_cuda_version(banner))
    contprobe_state.record("gpus", len(nvsmi.rows))
    contprobe_state.record("gpu_names", ";".join(sorted({r.name for r in nvsmi.rows})))
    contprobe_state.record("gpu_uuids", ";".join(r.uuid for r in nvsmi.rows))


def test_count(nvsmi, expect_gpus, nv_missing):
    if expect_gpus is None:
        pytest.skip("no --expect-gpus given")
    if not nvsmi.found:
        no_gpu(nv_missing, expect_gpus, "nvidia-smi not found")
    found = len(nvsmi.rows)
    if found != expect_gpus:
        fail("gpu-count-low" if found < expect_gpus else "unknown",
             f"expected {expect_gpus} GPUs, found {found}",
             "\n".join(f"{r.index}: {r.name} {r.uuid}" for r in nvsmi.rows))


def test_ecc(nvsmi, nv_missing, expect_gpus):
    if not nvsmi.rows:
        no_gpu(nv_missing, expect_gpus, "no GPU rows from nvidia-smi")
    rc, out, err = context.run_cmd(["nvidia-smi", "--query-gpu=index,uuid,ecc.errors.uncorrected.volatile.total,"
                                    "retired_pages.pending", "--format=csv,noheader"], 60)
    if rc != 0:
        fail(catalog.match(out + err, among=KNOWN_NVSMI_FAILURES), "ECC query failed", out + err)
    bad = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue
        errors, pending = parts[2], parts[3]
        if (errors.isdigit() and int(errors) > 0) or pending.lower() == "yes":
            bad.append(f"GPU {parts[0]} {parts[1]}: uncorrectable ECC {errors}, pending page retirement {pending}")
    if bad:
        fail("gpu-ecc-errors", f"{len(bad)} GPU(s) with uncorrectable ECC errors or pending retirement", "\n".join(bad))


# ---- health, as DCGM's quick diagnostic and NHC check a GPU node (contprobe/inimage/gpuhealth.py) ----
@pytest.fixture(scope="module")
def nvsmi_q(nv_missing, expect_gpus) -> List[gpuhealth.GpuReport]:
    """`nvidia-smi -q` parsed per GPU: one call shared by the health probes."""
    rc, out, err = context.run_cmd(["nvidia-smi", "-q"], 120)
    if rc == 127:
        no_gpu(nv_missing, expect_gpus, "nvidia-smi not found")
    if rc != 0:
        fail(catalog.match(out + err, among=KNOWN_NVSMI_FAILURES), f"nvidia-smi -q exited {rc}", out + err)
    gpus = gpuhealth.parse_q(out)
    if not gpus:
        no_gpu(nv_missing, expect_gpus, "nvidia-smi -q reported no GPU")
    return gpus


# A GPU with both a remap failure and a pending remap needs replacing: the graver gotcha is named.
SEVERITY = ("gpu-row-remap-failed", "gpu-row-remap-pending")


def judge(findings: List[gpuhealth.Finding], unjudged: List[str], what: str) -> None:
    """Fail on findings (the gravest gotcha first), skip when no GPU could be judged, else pass."""
    if findings:
        ids = sorted({f.gotcha for f in findings}, key=lambda g: SEVERITY.index(g) if g in SEVERITY else len(SEVERITY))
        first = next(f for f in findings if f.gotcha == ids[0])
        fail(ids[0], f"{len(findings)} GPU(s): {what}; {first.detail}", "\n".join(f.detail for f in findings) +
             ("\nnot judged:\n" + "\n".join(unjudged) if unjudged else ""))
    if unjudged:
        # Nothing wrong seen; a GPU that reported nothing (or was idle) is named, not failed.
        print("not judged:\n" + "\n".join(unjudged))


def each_gpu(gpus: List[gpuhealth.GpuReport], check: Callable, what: str) -> None:
    findings, unjudged = [], []
    for g in gpus:
        try:
            found = check(g)
        except LookupError as exc:
            unjudged.append(str(exc))
            continue
        if found:
            findings.append(found)
    if len(unjudged) == len(gpus):
        pytest.skip(f"{what}: not judged on any GPU: " + "; ".join(unjudged[:4]))
    judge(findings, unjudged, what)


def test_row_remap(nvsmi_q):
    each_gpu(nvsmi_q, gpuhealth.row_remap, "memory row remapping failed or pending")


def test_pcie_link(nvsmi_q):
    each_gpu(nvsmi_q, gpuhealth.pcie_link, "PCIe link below its maximum while busy")


def test_clocks(nvsmi_q):
    each_gpu(nvsmi_q, gpuhealth.clocks, "clocks slowed for a hardware reason")


def test_persistence(nvsmi_q):
    each_gpu(nvsmi_q, gpuhealth.persistence, "persistence mode off")


def test_nvlink(nv_missing, expect_gpus):
    rc, out, err = context.run_cmd(["nvidia-smi", "nvlink", "-s"], 60)
    if rc == 127:
        no_gpu(nv_missing, expect_gpus, "nvidia-smi not found")
    if rc != 0:
        pytest.skip(f"nvidia-smi nvlink -s exited {rc}: {(out + err).strip()[:200]}")
    gpus = gpuhealth.parse_nvlink_status(out)
    if not any(g.active for g in gpus):
        pytest.skip("no active NVLink on this node (PCIe-only GPUs): nothing to judge")
    judge(gpuhealth.nvlink_down(gpus), [], "NVLink link(s) inactive")


@pytest.fixture(scope="session")
def expect_mig(request) -> Optional[str]:
    return request.config.getoption("--expect-mig")


def test_mig(expect_mig, nv_missing, expect_gpus):
    if expect_mig is None:
        pytest.skip("no --expect-mig given (site profile [gpus] mig)")
    rc, out, err = context.run_cmd(["nvidia-smi", f"--query-gpu={gpuhealth.MIG_QUERY}", "--format=csv,noheader"], 60)
    if rc == 127:
        no_gpu(nv_missing, expect_gpus, "nvidia-smi not found")
    if rc != 0:
        fail(catalog.match(out + err, among=KNOWN_NVSMI_FAILURES), "MIG mode query failed", out + err)
    findings, capable = gpuhealth.mig_mismatch(out, expect_mig)
    if not capable:
        pytest.skip("no MIG-capable GPU (mig.mode.current is [N/A])")
    judge(findings, [], f"MIG mode not {expect_mig}")
