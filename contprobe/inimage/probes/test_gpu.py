"""gpu.*: the NVIDIA driver's view through nvidia-smi."""
from __future__ import annotations

import pytest

from contprobe.inimage import catalog, context
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
