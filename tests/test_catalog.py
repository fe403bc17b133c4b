"""The gotcha catalog: complete, well-formed, and it knows every id the probes and the plugin emit."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

from contprobe.inimage import catalog
from conftest import NVSMI_FIXTURES, PROBES, ROOT, clean_env

ID_SHAPE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
EMITTING_CALLS = {"fail", "skip"}


class _Resolver:
    """Gotcha ids that can reach fail()/skip()/catalog.match()/catalog.get() in one module, statically."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.functions = {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        self.assignments: Dict[str, List[ast.expr]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        self.assignments.setdefault(t.id, []).append(node.value)

    def strings(self, expr: ast.expr, seen: Set[str]) -> Set[str]:
        """Every string the expression can evaluate to (constants, both arms of if/else, names, calls)."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return {expr.value}
        if isinstance(expr, ast.IfExp):
            return self.strings(expr.body, seen) | self.strings(expr.orelse, seen)
        if isinstance(expr, ast.BoolOp):
            return set().union(*(self.strings(v, seen) for v in expr.values))
        if isinstance(expr, (ast.List, ast.Tuple, ast.Set)):
            return set().union(set(), *(self.strings(e, seen) for e in expr.elts))
        if isinstance(expr, ast.Attribute) and expr.attr == "UNKNOWN":
            return {catalog.UNKNOWN}
        if isinstance(expr, ast.Name) and expr.id not in seen:
            seen = seen | {expr.id}
            return set().union(set(), *(self.strings(v, seen) for v in self.assignments.get(expr.id, [])))
        if isinstance(expr, ast.Call):
            name = _call_name(expr)
            among = [k.value for k in expr.keywords if k.arg == "among"]
            if name == "match" and among:                   # catalog.match(text, among=[...]) -> one of them
                return self.strings(among[0], seen) | {catalog.UNKNOWN}
            if name == "match":                             # any catalog entry: nothing to check
                return set()
            if name in self.functions and name not in seen:
                fn = self.functions[name]
                return set().union(set(), *(self.strings(r.value, seen | {name}) for r in ast.walk(fn)
                                             if isinstance(r, ast.Return) and r.value is not None))
        return set()

    def emitted(self) -> Set[str]:
        ids: Set[str] = set()
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = _call_name(node)
            # diagnose.fail/skip are imported by name; pytest.skip(reason) carries no gotcha.
            bare = isinstance(node.func, ast.Name) or (isinstance(node.func, ast.Attribute)
                                                       and getattr(node.func.value, "id", "") == "diagnose")
            if name in EMITTING_CALLS and bare or name == "get" and _is_catalog_attr(node):
                ids |= self.strings(node.args[0], set())
            elif name == "failed" and bare:                 # host checks: failed(gotcha, message)
                ids |= self.strings(node.args[0], set())
            elif name == "skipped" and bare and len(node.args) > 1:   # skipped(message, gotcha)
                ids |= self.strings(node.args[1], set())
            elif name == "match" and any(k.arg == "among" for k in node.keywords):
                ids |= self.strings(next(k.value for k in node.keywords if k.arg == "among"), set())
        for target, values in self.assignments.items():  # candidate lists: LAUNCH_GOTCHAS, BUILD_GOTCHAS, ...
            if target.endswith("_GOTCHAS"):
                ids |= set().union(set(), *(self.strings(v, set()) for v in values))
        return ids - {""}  # "" is "no gotcha" (a passed check), guarded before any lookup


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else (f.id if isinstance(f, ast.Name) else "")


def _is_catalog_attr(call: ast.Call) -> bool:
    return isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name) \
        and call.func.value.id == "catalog"


def emitted_ids() -> Dict[str, Set[str]]:
    files = sorted(p for p in (ROOT / "contprobe").rglob("*.py") if "_vendor" not in p.parts)
    return {str(p.relative_to(ROOT)): _Resolver(ast.parse(p.read_text())).emitted() for p in files}


def test_static_collection_finds_the_ids_it_should():
    """Guard against a resolver that silently finds nothing: known emitters must show up. Gotchas the
    host reads from launch, build and pull logs are chosen by the catalog's own seen_in field."""
    found = set().union(*emitted_ids().values()) | {g.id for g in catalog.load().values()
                                                    if set(g.seen_in) & {"launch", "build", "pull"}}
    for gid in ("no-gpu-visible", "nv-flag-missing", "torch-cpu-build", "mpi-singleton", "bind-missing",
                "bind-not-writable", "user-site-shadow", "ld-preload-leak", "proxy-missing",
                "nvidia-driver-not-loaded", "nvml-version-mismatch", "gpu-count-low", "horovod-missing",
                "allreduce-wrong", "cuda-driver-too-old", "nvcc-missing", "rank-lost", "mpi4py-missing",
                "ucx-shm-proc-link", "ucx-cma-eperm", "subuid-range-small", "proxy-ca-missing",
                "user-namespaces-disabled", "runtime-not-found", "cache-in-home", "build-permission-denied"):
        assert gid in found, gid


def test_every_emitted_id_is_in_the_catalog():
    cat = catalog.load()
    missing = {f: sorted(i for i in ids if i not in cat) for f, ids in emitted_ids().items()}
    missing = {f: ids for f, ids in missing.items() if ids}
    assert not missing, f"gotcha ids emitted but not in contprobe/inimage/data/gotchas/: {missing}"


def test_every_entry_is_complete():
    cat = catalog.load()
    assert catalog.UNKNOWN in cat
    for g in cat.values():
        assert ID_SHAPE.match(g.id), g.id
        for field in ("title", "cause", "fix", "source"):
            assert getattr(g, field).strip(), f"{g.id} has an empty {field}"
        assert g.fix_line and len(g.fix_line) < 400, g.id
        assert g.source.startswith(("https://", "contprobe/")), f"{g.id}: source {g.source!r} is not a reference"


def test_parse_rejects_bad_catalogs(tmp_path):
    def load(text):
        p = tmp_path / "c.toml"
        p.write_text(text)
        catalog._CACHE.pop(str(p), None)
        return catalog.load(p)

    entry = 'id = "{id}"\ntitle = "t"\ncause = "c"\nfix = "f"\nsource = "s"\nsymptoms = [{sym}]\nseen_in = ["rank"]\n'
    good = "[[gotcha]]\n" + entry.format(id="unknown", sym="")
    assert list(load(good)) == ["unknown"]
    with pytest.raises(catalog.CatalogError, match="twice"):
        load(good + "[[gotcha]]\n" + entry.format(id="unknown", sym=""))
    with pytest.raises(catalog.CatalogError, match="unknown"):
        load("[[gotcha]]\n" + entry.format(id="x", sym=""))
    with pytest.raises(catalog.CatalogError, match="bad symptom"):
        load(good + "[[gotcha]]\n" + entry.format(id="y", sym="'('"))
    with pytest.raises(catalog.CatalogError, match="lacks field"):
        load('[[gotcha]]\nid = "unknown"\n')
    with pytest.raises(catalog.CatalogError, match="unknown field 'seen'"):
        load(good + "[[gotcha]]\n" + entry.format(id="z", sym="'x'") + 'seen = ["rank"]\n')
    with pytest.raises(catalog.CatalogError, match="seen_in"):
        load(good + "[[gotcha]]\n" + entry.format(id="z", sym="'x'").replace('["rank"]', '["runtime"]'))
    with pytest.raises(catalog.CatalogError, match="rerun"):
        load(good + "[[gotcha]]\n" + entry.format(id="z", sym="'x'") + 'rerun = "reboot"\n')


@pytest.mark.parametrize("fixture, gotcha", [
    ("driver-not-loaded", "nvidia-driver-not-loaded"),
    ("version-mismatch", "nvml-version-mismatch"),
    ("no-devices", "gpu-count-low"),
])
def test_recorded_nvidia_smi_failures_match_their_gotcha(fixture, gotcha):
    text = (NVSMI_FIXTURES / fixture / "all.txt").read_text()
    assert catalog.match(text) == gotcha
    # The probe's own candidate list gives the same answer.
    tree = ast.parse((PROBES / "test_gpu.py").read_text())
    known = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
             and getattr(n.targets[0], "id", "") == "KNOWN_NVSMI_FAILURES"][0]
    assert catalog.match(text, among=known) == gotcha


def test_match_and_get_fall_back_to_unknown():
    assert catalog.match("something nobody has seen before") == catalog.UNKNOWN
    assert catalog.get("no-such-id").id == catalog.UNKNOWN
    assert catalog.match("libmpi.so.40: cannot open shared object file", among=["mpi-abi-openmpi"]) == "mpi-abi-openmpi"
    assert catalog.match("libmpi.so.40: cannot open shared object file", among=["bind-missing"]) == catalog.UNKNOWN
    # A stage sees only the entries that say they can be seen there.
    assert catalog.match("libmpi.so.40: cannot open shared object file", "build") == catalog.UNKNOWN


def _gotchas(*args):
    return subprocess.run([sys.executable, "-m", "contprobe", "gotchas", *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=clean_env(), cwd=str(ROOT))


def test_cli_gotchas_lists_the_catalog_as_a_table():
    p = _gotchas()
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["id", "title", "fix"]
    for gid in catalog.ids():
        assert any(line.startswith(gid + " ") for line in lines), gid


def test_cli_gotchas_shows_one_entry_in_full():
    g = catalog.get("mpi-singleton")
    p = _gotchas("mpi-singleton")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"mpi-singleton: {g.title}")
    for part in (g.cause, g.source, *g.fix.strip().splitlines()):
        assert part.strip() in p.stdout


def test_cli_gotchas_shows_what_makes_the_engine_name_it():
    """A broad symptom is shown with the context it needs and the veto: a user reading the entry sees
    why 'No space left on device' alone did not name it."""
    g = catalog.get("cache-in-home")
    out = _gotchas("cache-in-home").stdout
    assert f"broad (only with context): {'; '.join(g.broad)}" in out
    assert f"context: {'; '.join(g.context)}" in out and f"unless: {'; '.join(g.unless)}" in out


def test_cli_gotchas_unknown_id_is_usage_error():
    p = _gotchas("no-such-gotcha")
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "no-such-gotcha" in p.stderr and "Traceback" not in p.stderr


# ---- the diagnosis engine (contprobe/inimage/scan.py) ------------------------------------------------------
from contprobe.inimage import scan  # noqa: E402

NCCL_SHM = "include/shm.h:28 NCCL WARN Call to posix_fallocate failed : No space left on device"


def test_loader_checks_the_engine_fields(tmp_path):
    def load(extra):
        p = tmp_path / "c.toml"
        p.write_text('[[gotcha]]\nid = "unknown"\ntitle = "t"\ncause = "c"\nfix = "f"\nsource = "s"\n'
                     '[[gotcha]]\nid = "x"\ntitle = "t"\ncause = "c"\nfix = "f"\nsource = "s"\nseen_in = ["rank"]\n'
                     + extra)
        catalog._CACHE.pop(str(p), None)
        return catalog.load(p)

    assert load("broad = ['permission denied']\ncontext = ['apptainer build']\n")["x"].broad == ("permission denied",)
    with pytest.raises(catalog.CatalogError, match="context"):
        load("broad = ['permission denied']\n")
    with pytest.raises(catalog.CatalogError, match="explains 'nope'"):
        load("symptoms = ['abc def']\nexplains = ['nope']\n")
    with pytest.raises(catalog.CatalogError, match="no literal"):
        load("symptoms = ['[0-9]+ .* [a-z]+']\n")


@pytest.mark.parametrize("pattern, literals", [
    (r"nvidia-smi:? (command )?not found", {"nvidia-smi"}),
    (r"(srun|sbatch): (command )?not found", {"not found"}),
    (r"unrecognized (?:argument|option) '?-{0,2}(?:mca|bind-to)\b", {"unrecognized "}),
    (r"libcuda\.so(\.1)?: cannot open", {": cannot open"}),
    (r"[0-9]+ .*", None),
])
def test_needed_literals_are_contained_in_every_match(pattern, literals):
    assert scan.needed_literals(pattern) == literals


def test_every_catalog_pattern_has_a_literal_every_match_contains():
    rules = catalog.rules(None)                 # raises on a pattern the prefilter could not see
    assert len(rules.literals) > 100
    assert all(lit == lit.lower() and len(lit) >= scan.NEEDED_LITERAL_MIN for lit in rules.literals)


def test_info_lines_never_name_a_gotcha():
    # NCCL's socket fallback and its interface choice are INFO lines of a working job.
    info = ("x3004c0s1b0n0:12345:12400 [0] NCCL INFO NET/Socket : Using [0]hsn0:10.201.0.1<0>\n"
            "x3004c0s1b0n0:12345:12400 [0] NCCL INFO NCCL_SOCKET_IFNAME set by environment to hsn0\n"
            "INFO:    fakeroot command not found\n")
    d = catalog.diagnose(info, None)
    assert d.top == catalog.UNKNOWN and not d.unrecognised
    # ...but an info line may pin a broad failure as its context.
    d = catalog.diagnose(info + "FATAL:   While performing build: conveyor failed to get: while creating "
                                "/tmp/build-temp-1/rootfs/dev/null: operation not permitted\n", "build")
    assert d.ids == ["fakeroot-cmd-missing"]
    assert [e.line for e in d.findings[0].evidence] == [4, 3]


def test_broad_symptoms_need_context_and_specific_ones_win():
    assert catalog.match("write /x/y: no space left on device", "pull") == catalog.UNKNOWN
    home = "FATAL:   unable to Download Image: write /home/u/.apptainer/cache/library/sha256.1: no space left on device"
    assert catalog.match(home, "pull") == "cache-in-home"
    # The same words on NCCL's shared-memory line are /dev/shm, whatever cache path the log also shows.
    d = catalog.diagnose(home + "\n" + NCCL_SHM, None)
    assert d.top == "shm-too-small" and "cache-in-home" not in d.ids
    assert catalog.match("Permission denied", "build") == catalog.UNKNOWN
    assert catalog.match("apptainer build x.sif x.def\n/usr/bin/cp: Permission denied", "build") \
        == "build-permission-denied"


def test_unless_vetoes_the_near_miss():
    text = "touch: cannot touch '/var/bla': Read-only file system"
    assert catalog.match(text, "rank") == "image-read-only"
    assert catalog.match("apptainer exec --writable-tmpfs x.sif touch /var/bla\n" + text, "rank") == catalog.UNKNOWN


def test_root_cause_first_and_evidence_line_numbers():
    text = ("starting job\n"
            "[WARN] Kernel module nvidia_uvm is not loaded. Make sure the NVIDIA device driver is installed\n"
            "nvidia-container-cli: initialization error: nvml error: driver not loaded\n")
    d = catalog.diagnose(text, "launch")
    assert d.ids == ["nvidia-driver-not-loaded", "nvidia-uvm-not-loaded"]
    assert d.findings[1].explained_by == "nvidia-driver-not-loaded"
    assert [e.line for e in d.findings[0].evidence] == [3]
    assert catalog.match(text, "launch") == "nvidia-driver-not-loaded"


def test_unrecognised_error_lines_are_reported_and_bounded():
    text = "\n".join(["ok"] + [f"Error: something new {i}" for i in range(50)])
    d = catalog.diagnose(text, None)
    assert d.top == catalog.UNKNOWN
    assert [e.line for e in d.unrecognised] == [2, 3, 4, 5, 6][:scan.UNRECOGNISED_MAX]


def test_stream_scanner_is_bounded_and_independent_of_chunking():
    body = ("epoch 1 loss 0.1\n" * 1000 + NCCL_SHM + "\r\n" + "x" * (scan.BLOCK + 7) + "\n") * 5 + "tail " + NCCL_SHM
    data = body.encode()
    rules = catalog.rules(None)
    whole = scan.scan_stream([data], rules)
    for size in (1 << 20, 4099, 977):
        parts = [data[i:i + size] for i in range(0, len(data), size)]
        d = scan.scan_stream(parts, rules)
        assert d.ids == whole.ids == ["shm-too-small"]
        assert d.findings[0].evidence == whole.findings[0].evidence
        assert d.lines == whole.lines == body.count("\n") + 1
    ev = whole.findings[0].evidence
    # 1002 lines a round; capped at EVIDENCE_PER_GOTCHA; the CR of a CRLF line is not part of the text.
    assert [e.line for e in ev] == [1001 + 1002 * i for i in range(scan.EVIDENCE_PER_GOTCHA)]
    assert all(not e.text.endswith("\r") for e in ev)
