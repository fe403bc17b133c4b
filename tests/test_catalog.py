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


def test_cli_gotchas_unknown_id_is_usage_error():
    p = _gotchas("no-such-gotcha")
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "no-such-gotcha" in p.stderr and "Traceback" not in p.stderr
