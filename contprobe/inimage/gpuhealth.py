"""GPU health as DCGM's quick diagnostic and NHC check a node, read from nvidia-smi's own reports.

`nvidia-smi -q` is parsed rather than `--query-gpu` columns because its layout is stable across
driver generations while column names are not (clocks_throttle_reasons.* became
clocks_event_reasons.* in driver 535, and an unknown column fails the whole query). Every check
is a plain function of the parsed report, so tests replay real recordings through it.

Imported inside images: Python 3.8, standard library only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

NOT_REPORTED = ("", "N/A", "[N/A]", "Not Supported", "[Not Supported]", "Unknown Error")

# Older drivers call the section "Clocks Throttle Reasons", 535+ "Clocks Event Reasons".
_SECTION_ALIASES = {"Clocks Throttle Reasons": "Clocks Event Reasons"}
_GPU_HEADER = re.compile(r"^GPU ([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])\s*$")


@dataclass
class GpuReport:
    """One GPU's block of `nvidia-smi -q`: "Section/Sub/Key" -> value."""
    bus_id: str
    fields: Dict[str, str] = field(default_factory=dict)

    def get(self, path: str) -> str:
        """The value at path, "" when this driver or GPU does not report it."""
        value = self.fields.get(path, "")
        return "" if value in NOT_REPORTED else value

    @property
    def label(self) -> str:
        name = self.fields.get("Product Name", "")
        return f"GPU {self.bus_id}" + (f" ({name})" if name else "")


def parse_q(text: str) -> List[GpuReport]:
    """Per-GPU blocks of `nvidia-smi -q`; nesting is read from the indentation."""
    gpus: List[GpuReport] = []
    cur: Optional[GpuReport] = None
    stack: List[Tuple[int, str]] = []
    for line in text.splitlines():
        m = _GPU_HEADER.match(line)
        if m:
            cur, stack = GpuReport(m.group(1)), []
            gpus.append(cur)
            continue
        if cur is None or not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, sep, value = line.strip().partition(":")
        key = _SECTION_ALIASES.get(key.strip(), key.strip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if sep and value.strip():
            cur.fields["/".join([s for _, s in stack] + [key])] = value.strip()
        else:
            stack.append((indent, key))
    return gpus


@dataclass(frozen=True)
class Finding:
    gotcha: str
    detail: str


def _yes(value: str) -> bool:
    return value.lower() == "yes"


def row_remap(g: GpuReport) -> Optional[Finding]:
    """Row remapper (A100 and newer): a failure means replace the GPU, pending means reset it.

    None when healthy; raises LookupError when this GPU does not remap rows (pre-Ampere)."""
    pending, failed = g.get("Remapped Rows/Pending"), g.get("Remapped Rows/Remapping Failure Occurred")
    if not pending and not failed:
        raise LookupError(f"{g.label}: no row remapper reported")
    counts = (f"uncorrectable {g.get('Remapped Rows/Uncorrectable Error') or '?'}, "
              f"correctable {g.get('Remapped Rows/Correctable Error') or '?'}")
    if _yes(failed):
        return Finding("gpu-row-remap-failed", f"{g.label}: row remapping failure occurred ({counts} rows remapped)")
    if _yes(pending):
        return Finding("gpu-row-remap-pending", f"{g.label}: row remapping pending ({counts} rows remapped)")
    return None


def _int(value: str) -> Optional[int]:
    m = re.match(r"\s*([0-9]+)", value)
    return int(m.group(1)) if m else None


def is_idle(g: GpuReport) -> bool:
    return g.get("Clocks Event Reasons/Idle") == "Active"


def pcie_link(g: GpuReport) -> Optional[Finding]:
    """PCIe link trained below its maximum generation or width, judged only while the GPU is busy.

    An idle GPU lowers its link speed (and may lower its width) to save power: nvidia-smi's
    pcie.link.*.current "may be reduced when the GPU is not in use". Like DCGM's PCIe test, which
    reads the link under load, an idle GPU is not judged: raises LookupError."""
    base = "PCI/GPU Link Info/"
    gen = (_int(g.get(base + "PCIe Generation/Current")), _int(g.get(base + "PCIe Generation/Max")))
    width = (_int(g.get(base + "Link Width/Current")), _int(g.get(base + "Link Width/Max")))
    if None in gen + width:
        raise LookupError(f"{g.label}: PCIe link not reported")
    if is_idle(g):
        raise LookupError(f"{g.label}: idle (link Gen{gen[0]} x{width[0]} of Gen{gen[1]} x{width[1]}: "
                          "an idle link downshifts)")
    if gen[0] < gen[1] or width[0] < width[1]:
        return Finding("gpu-pcie-degraded", f"{g.label}: PCIe link Gen{gen[0]} x{width[0]} while not idle, "
                                            f"maximum Gen{gen[1]} x{width[1]}")
    return None


# Clock event reasons that mean the hardware, not the workload or an administrator, slowed the GPU.
HW_REASONS = ("HW Slowdown", "HW Thermal Slowdown", "HW Power Brake Slowdown", "SW Thermal Slowdown")


def clocks(g: GpuReport) -> Optional[Finding]:
    section = "Clocks Event Reasons/"
    if not any(g.get(section + r) for r in HW_REASONS):
        raise LookupError(f"{g.label}: clock event reasons not reported")
    active = [r for r in HW_REASONS if g.get(section + r) == "Active"]
    if active:
        sm = g.get("Clocks/SM")
        return Finding("gpu-clocks-throttled", f"{g.label}: clocks slowed by {', '.join(active)}"
                                               + (f" (SM clock {sm}, max {g.get('Max Clocks/SM')})" if sm else ""))
    return None


def persistence(g: GpuReport) -> Optional[Finding]:
    mode = g.get("Persistence Mode")
    if not mode:
        raise LookupError(f"{g.label}: persistence mode not reported")
    if mode == "Disabled":
        return Finding("gpu-persistence-off", f"{g.label}: persistence mode Disabled")
    return None


# ---- NVLink: `nvidia-smi nvlink -s` -----------------------------------------------------------
_NVLINK_GPU = re.compile(r"^GPU (\d+): (.*?)(?: \(UUID: [^)]*\))?\s*$")
_NVLINK_LINK = re.compile(r"^\s+Link (\d+): (.*?)\s*$")


@dataclass
class NvlinkGpu:
    label: str
    active: List[int] = field(default_factory=list)
    inactive: List[int] = field(default_factory=list)


def parse_nvlink_status(text: str) -> List[NvlinkGpu]:
    gpus: List[NvlinkGpu] = []
    for line in text.splitlines():
        m = _NVLINK_GPU.match(line)
        if m:
            gpus.append(NvlinkGpu(f"GPU {m.group(1)} ({m.group(2)})"))
            continue
        m = _NVLINK_LINK.match(line)
        if m and gpus:
            (gpus[-1].inactive if "inactive" in m.group(2).lower() else gpus[-1].active).append(int(m.group(1)))
    return gpus


def nvlink_down(gpus: List[NvlinkGpu]) -> List[Finding]:
    """Links down, as NHC's NVLink check sees them: a GPU with NVLink whose links are not all up.

    A node whose GPUs have no active link at all has no NVLink (PCIe boards without a bridge
    report every link inactive): nothing to judge there. Otherwise a GPU with an inactive link,
    or with no link while its peers have theirs, has lost NVLink bandwidth."""
    if not any(g.active for g in gpus):
        return []
    return [Finding("gpu-nvlink-down", f"{g.label}: NVLink link(s) {', '.join(map(str, g.inactive)) or 'all'} "
                                       f"inactive, {len(g.active)} active")
            for g in gpus if g.inactive or not g.active]


# ---- MIG: `nvidia-smi --query-gpu=uuid,mig.mode.current,mig.mode.pending --format=csv,noheader` --
MIG_QUERY = "uuid,mig.mode.current,mig.mode.pending"
MIG_CHOICES = ("enabled", "disabled")


def mig_mismatch(csv_text: str, expected: str) -> Tuple[List[Finding], int]:
    """GPUs whose MIG mode (current, or pending a reset) is not the site's; and how many GPUs
    could report a MIG mode at all ([N/A] is a GPU without MIG)."""
    findings, capable = [], 0
    for line in csv_text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[0].startswith(("GPU-", "MIG-")):
            continue
        uuid, current, pending = parts
        if current in NOT_REPORTED:
            continue
        capable += 1
        if current.lower() != expected or pending.lower() not in (expected, "n/a", "[n/a]"):
            findings.append(Finding("gpu-mig-mode", f"{uuid}: MIG mode {current} (pending {pending}), "
                                                    f"site expects {expected}"))
    return findings, capable
