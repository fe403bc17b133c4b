"""The whole corpus of real error output (tests/corpus/) through the diagnosis engine, at each entry's stage.

Targets (issue 10): recall >= 90% on covered causes, precision >= 97%, and every entry whose cause the
catalog does not cover (near-misses included) answered 'unknown'. Figures per family: ci/bench/bench_corpus.py.
"""
from __future__ import annotations


import re
from pathlib import Path
from collections import Counter

import pytest

from contprobe.inimage import catalog
from corpus.evaluate import CORPUS, STAGES, CorpusError, entries, evaluate, parse, visible

MIN_ENTRIES = 250
RECALL_MIN, PRECISION_MIN = 0.90, 0.97


@pytest.fixture(scope="module")
def result():
    return evaluate()


def _listing(items) -> str:
    return "\n".join(f"  {e.path}: labels {', '.join(e.labels) or 'none'} -> {got}" for e, got in items)


def test_corpus_is_large_and_well_formed():
    items = entries()
    assert len(items) >= MIN_ENTRIES, f"{len(items)} corpus entries, want {MIN_ENTRIES}+"
    cat = catalog.load()
    for e in items:
        assert e.source.startswith("https://"), f"{e.path}: source {e.source!r}"
        assert e.text.strip(), f"{e.path}: no text"
        unknown = [x for x in e.labels if x not in cat]
        assert not unknown, f"{e.path}: labels {unknown} are not catalog ids"
        assert re.match(r"^[a-z0-9-]+/[0-9]{3}-[a-z0-9-]+\.txt$", e.path), e.path


def test_parse_rejects_a_malformed_entry(tmp_path):
    fam = tmp_path / "fam"
    fam.mkdir()
    bad = fam / "001-x.txt"
    bad.write_text("source: https://x\ncause: c\nlabels: none\nstage: exec\nno separator\n")
    with pytest.raises(CorpusError, match="---"):
        parse(bad)
    bad.write_text("source: https://x\ncause: c\nlabels: none\nstage: shell\n---\ntext\n")
    with pytest.raises(CorpusError, match="stage"):
        parse(bad)


def test_recall_on_covered_causes(result):
    t = result.total
    assert t.recall >= RECALL_MIN, (f"recall {t.recall:.3f} ({t.recalled}/{t.covered}) < {RECALL_MIN}; "
                                    f"missed:\n{_listing(result.misses)}")


def test_precision(result):
    t = result.total
    assert t.precision >= PRECISION_MIN, (f"precision {t.precision:.3f} ({t.correct}/{t.answered}) < "
                                          f"{PRECISION_MIN}; wrong:\n{_listing(result.wrong)}")


def test_uncovered_and_near_miss_entries_are_unknown(result):
    assert not result.guessed, "entries no gotcha covers must be 'unknown':\n" + _listing(result.guessed)


# Gotchas with text symptoms that no corpus entry names yet, and why. The list must stay true: an id that the
# corpus does name fails the test below (take it off), and so does a new gotcha missing from both.
PROBE_WORDING = "contprobe's own probe message (the probe prints it; probe tests check it), not a public text"
NOT_FOUND = "no public thread with a diagnosis was found (searched: issues and pages corpora)"
NO_PUBLIC_TEXT = {
    "mpi-singleton": PROBE_WORDING, "launcher-mismatch": PROBE_WORDING, "cvd-after-mpi-init": PROBE_WORDING,
    "nccl-tree-busbw": PROBE_WORDING, "gpu-compute-wrong": PROBE_WORDING, "horovod-size-mismatch": PROBE_WORDING,
    "allreduce-wrong": PROBE_WORDING, "rank-lost": PROBE_WORDING, "perf-regression": PROBE_WORDING,
    "runtime-flavour": PROBE_WORDING, "gpu-count-low": PROBE_WORDING + " (also nvidia-smi's 'No devices were found')",
    "gtl-not-linked": NOT_FOUND + " (Cray MPICH on Polaris only)",
    "bind-missing": NOT_FOUND + " (the pattern names Polaris' own file systems)",
    "bind-not-writable": NOT_FOUND + " (posts with ':ro' binds)", "env-not-passed": NOT_FOUND,
    "runtime-not-found": NOT_FOUND + " (threads without a diagnosis were skipped)",
    "horovod-missing": NOT_FOUND + " (threads found were remote-node horovod.runner cases)",
    "fakeroot-refused": NOT_FOUND, "proxy-missing": NOT_FOUND + " (DNS failures in posts had other causes)",
    "mpi-abi-openmpi": NOT_FOUND + " (libmpi.so.40 posts were conda installs, not an MPICH-ABI host)",
    "torch-mpi-not-cuda-aware": NOT_FOUND, "horovod-build-cxx17": NOT_FOUND + " (compile/006 is PyTorch's own check)",
    "gpu-ecc-errors": NOT_FOUND + " (GPU health family: issue 10 item 5)", "torch-missing": NOT_FOUND,
    "nvcc-missing": NOT_FOUND, "build-permission-denied": NOT_FOUND,
    "starter-suid": NOT_FOUND, "overlay-mkfs-missing": NOT_FOUND, "pytest-missing-in-image": PROBE_WORDING,
    "podman-storage-network-fs": NOT_FOUND + " (the wording is containers/storage's own format string; the threads "
                                             "found (podman#8521, #7091, #9416) show other errors)",
}

# Gotchas whose real text was captured for real on this machine (a real podman, ch-run, registry, Slurm) or
# recorded on real GPUs (public recordings with provenance), and is asserted in the named test module.
REAL_TEXT_IN_TESTS = {
    **dict.fromkeys(["chfromhost-image-not-writable", "chimage-git-identity", "chrun-bind-source-missing",
                     "chrun-unknown-image-type", "chrun-user-unset", "podman-init-missing", "podman-ipc-mqueue",
                     "podman-runtime-dir", "podman-slirp-missing"], "test_runtimes.py"),
    **dict.fromkeys(["gpu-clocks-throttled", "gpu-nvlink-down", "gpu-pcie-degraded", "gpu-persistence-off",
                     "gpu-row-remap-failed", "gpu-row-remap-pending"], "test_probes_gpu_health.py"),
    **dict.fromkeys(["node-failure", "node-launch-failed"], "test_nodelog.py"),
    **dict.fromkeys(["registry-proxy-forbidden", "registry-tls-handshake-timeout", "registry-unreachable"],
                    "test_catalog_registry.py"),
}


def test_every_gotcha_is_tested_both_ways_by_real_text(result):
    """Each gotcha with text symptoms is named by at least one real text labelled with it, and every pattern
    runs over every near-miss, which must all be 'unknown' (test_uncovered_and_near_miss_entries_are_unknown)."""
    near = [e for e in entries() if not e.labels]
    assert len(near) >= 50, f"only {len(near)} near-miss/uncovered entries"
    named = Counter(got for e in entries() for got in [catalog.match(e.text, STAGES[e.stage])] if got in e.labels)
    textual = [g.id for g in catalog.load().values() if g.symptoms or g.broad]
    silent = sorted(g for g in textual if not named[g] and g not in NO_PUBLIC_TEXT and g not in REAL_TEXT_IN_TESTS)
    assert not silent, f"gotchas with text symptoms that no corpus entry names (add real text): {silent}"
    here = Path(__file__).parent
    unasserted = sorted(g for g, module in REAL_TEXT_IN_TESTS.items() if f'"{g}"' not in (here / module).read_text())
    assert not unasserted, f"REAL_TEXT_IN_TESTS names modules that do not assert these gotchas: {unasserted}"
    stale = sorted(g for g in NO_PUBLIC_TEXT if named[g] or g not in textual)
    assert not stale, f"NO_PUBLIC_TEXT lists gotchas the corpus does name, or without text symptoms: {stale}"


def test_corpus_figures_do_not_depend_on_the_reader(tmp_path):
    """`explain` reads files through grep's prefilter, `run` through match(): the same answers."""
    from contprobe.commands import explain
    for e in entries():
        rules = catalog.rules(STAGES[e.stage])
        # The text alone: the entry's header (its cause in our words) is not part of what was posted.
        log = tmp_path / "log"
        log.write_text(e.text)
        with open(log, "rb") as fh:
            via_grep = explain.explain_stream(fh, rules, use_grep=True)
        with open(log, "rb") as fh:
            via_python = explain.explain_stream(fh, rules, use_grep=False)
        assert via_grep.ids == via_python.ids, e.path
        assert [f.evidence for f in via_grep.findings] == [f.evidence for f in via_python.findings], e.path
        assert via_python.top == catalog.match(e.text, STAGES[e.stage]), e.path
