"""The pytest plugin, exercised through pytester: options, markers, ids, diagnoses and JUnit properties."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import junitparser
import pytest

from contprobe.inimage import catalog
from contprobe.inimage.options import MARKERS, parse_bind, parse_env, parse_gpus, parse_sizes

SECRET = "supersecret123"
PROXY_PW = "pw4proxy"

PLUGIN_CONFTEST = 'pytest_plugins = ["contprobe.inimage.plugin"]\n'
INI = "[pytest]\njunit_family = xunit1\njunit_suite_name = contprobe\n"


@pytest.fixture
def suite(pytester, monkeypatch):
    """A pytester dir that loads the plugin the way the probe suite's conftest does."""
    for var in [v for v in os.environ if v.startswith(("PMI_", "PALS_", "OMPI_", "SLURM_"))]:
        monkeypatch.delenv(var)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    pytester.makeconftest(PLUGIN_CONFTEST)
    pytester.makeini(INI)
    return pytester


def junit(path: Path):
    """(suite properties, {testcase name: (properties, [result elements])}) as junitparser reads them."""
    xml = junitparser.JUnitXml.fromfile(str(path))
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    assert len(suites) == 1
    s = suites[0]
    props = {p.name: p.value for p in s.properties()}
    cases = {}
    for case in s:
        cprops = {}
        el = case.child(junitparser.Properties)
        for p in (el if el is not None else ()):
            cprops[p.name] = p.value
        cases[case.name] = (cprops, list(case.result))
    return props, cases


def run(suite, *args, subprocess=True):
    xml = suite.path / "out.xml"
    result = (suite.runpytest_subprocess if subprocess else suite.runpytest)("--junitxml", str(xml), *args)
    return result, xml


# ---- parsers: the single source of truth for doctor, run and pytest ---------------------------
@pytest.mark.parametrize("text", ["-1", "many", "", "1.5"])
def test_parse_gpus_rejects(text):
    with pytest.raises(ValueError, match="--expect-gpus"):
        parse_gpus(text)


def test_parse_values():
    assert parse_gpus("0") == 0 and parse_gpus("4") == 4
    assert parse_bind("/lus/") == parse_bind("/lus") and not parse_bind("/lus").writable
    assert parse_bind("/lus:rw").writable and not parse_bind("/lus:ro").writable
    assert parse_bind("/").path == "/"
    assert parse_env("A") == parse_env("A").__class__("A", None)
    assert parse_env("A=") .value == "" and parse_env("A=b=c").value == "b=c"
    assert parse_sizes("8,1024") == [8, 1024]


@pytest.mark.parametrize("parse, text", [
    (parse_bind, "relative/path"), (parse_bind, "/x:bogus"), (parse_bind, ""),
    (parse_env, "=X"), (parse_env, "1A"), (parse_env, "A-B=1"),
    (parse_sizes, "8,x"), (parse_sizes, "2"), (parse_sizes, ","),
])
def test_parsers_reject(parse, text):
    with pytest.raises(ValueError):
        parse(text)


@pytest.mark.parametrize("args, word", [
    (["--expect-gpus", "-1"], "--expect-gpus"),
    (["--expect-gpus", "many"], "--expect-gpus"),
    (["--expect-bind", "relative/path"], "absolute"),
    (["--expect-bind", "/x:bogus"], "bogus"),
    (["--expect-env", "=X"], "--expect-env"),
])
def test_bad_expectations_are_usage_errors_in_pytest(suite, args, word):
    suite.makepyfile("def test_x(): pass")
    result = suite.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert word in result.stderr.str()
    assert "Traceback" not in result.stderr.str()


def test_markers_are_registered(suite):
    result = suite.runpytest_subprocess("--markers")
    out = result.stdout.str()
    for name in ("gpu", "torch", "nvcc", "mpi", "horovod", "binds", "env"):
        assert f"@pytest.mark.{name}:" in out
    assert set(MARKERS) >= {"gpu", "torch", "nvcc", "mpi", "horovod", "binds", "env"}


def test_options_reach_probes(suite):
    suite.makepyfile("""
        def test_opts(request):
            c = request.config
            assert c.getoption("--expect-gpus") == 4
            assert [b.path for b in c.getoption("--expect-bind")] == ["/a", "/b"]
            assert c.getoption("--expect-bind")[1].writable
            assert [(e.name, e.value) for e in c.getoption("--expect-env")] == [("X", None), ("Y", "1")]
            assert c.getoption("--expect-proxy") is True
    """)
    result = suite.runpytest_subprocess("--expect-gpus", "4", "--expect-bind", "/a", "--expect-bind", "/b:rw",
                                        "--expect-env", "X", "--expect-env", "Y=1", "--expect-proxy")
    result.assert_outcomes(passed=1)


# ---- diagnoses --------------------------------------------------------------------------------
PROBES_SRC = """
    import pytest
    from contprobe.inimage.diagnose import fail, skip

    def test_diagnosed():
        fail("bind-missing", "/lus does not exist here", "mounts: / /tmp")

    def test_matched():
        raise OSError("libmpi.so.40: cannot open shared object file: No such file or directory")

    def test_unknown():
        raise ValueError("the flux capacitor is misaligned")

    def test_skipped_with_gotcha():
        skip("no-gpu-visible", "nvidia-smi not found")

    def test_skipped_plain():
        pytest.skip("no --expect-gpus given")

    def test_passes():
        pass

    @pytest.fixture
    def broken():
        fail("mpi4py-missing", "mpi4py is not installed in this Python (launched as rank 1 of 2)")

    def test_setup_error(broken):
        pass
"""


def test_every_outcome_is_diagnosed_in_junit(suite):
    suite.makepyfile(test_demo=PROBES_SRC)
    result, xml = run(suite)
    result.assert_outcomes(passed=1, failed=3, skipped=2, errors=1)
    _, cases = junit(xml)

    props, res = cases["test_diagnosed"]
    assert props["probe"] == "demo.diagnosed"
    assert props["gotcha"] == "bind-missing"
    assert props["fix"] == catalog.get("bind-missing").fix_line
    assert props["message"] == "/lus does not exist here"
    text = res[0].text
    # A diagnosed failure reads as what/why/fix, never as a traceback.
    assert text.startswith("[bind-missing] /lus does not exist here")
    assert "mounts: / /tmp" in text and "fix: " in text and "contprobe gotchas bind-missing" in text
    assert "Traceback" not in text and "def test_diagnosed" not in text

    props, _ = cases["test_matched"]
    assert props["gotcha"] == "mpi-abi-openmpi"
    assert props["fix"] == catalog.get("mpi-abi-openmpi").fix_line
    assert props["message"].startswith("OSError: libmpi.so.40")

    props, res = cases["test_unknown"]
    assert props["gotcha"] == "unknown"
    assert props["fix"] == catalog.get("unknown").fix_line
    assert props["message"] == "ValueError: the flux capacitor is misaligned"
    assert "the flux capacitor is misaligned" in res[0].text  # the raw evidence is kept

    props, res = cases["test_skipped_with_gotcha"]
    assert type(res[0]).__name__ == "Skipped"
    assert props["gotcha"] == "no-gpu-visible" and props["fix"] == catalog.get("no-gpu-visible").fix_line
    assert props["message"] == "nvidia-smi not found"

    props, _ = cases["test_skipped_plain"]
    assert "gotcha" not in props and props["message"] == "no --expect-gpus given"

    props, res = cases["test_passes"]
    assert props == {"probe": "demo.passes"} and res == []

    props, res = cases["test_setup_error"]
    assert type(res[0]).__name__ == "Error"
    assert props["gotcha"] == "mpi4py-missing" and props["probe"] == "demo.setup_error"


def test_probe_ids_of_the_real_suite(pytester, tmp_path):
    """Stable ids `<module>.<function>[<param>]` from the shipped probes (env and binds run anywhere)."""
    from conftest import PROBES, path_without_nvidia_smi
    xml = tmp_path / "j.xml"
    d = tmp_path / "bound"
    d.mkdir()
    result = pytester.runpytest_subprocess(
        str(PROBES), "-m", "env or binds or gpu", "--junitxml", str(xml),
        "--expect-bind", str(d), "--expect-env", "HOME", "-p", "no:cacheprovider")
    assert result.ret in (0, 1), result.stdout.str()
    _, cases = junit(xml)
    ids = {props["probe"] for props, _ in cases.values()}
    assert {f"binds.expected[{d}]", "env.expected[HOME]", "env.user_site", "env.ld_preload", "env.proxy",
            "gpu.nvidia_smi", "gpu.count", "gpu.ecc"} <= ids
    del path_without_nvidia_smi


# ---- JUnit suite properties ---------------------------------------------------------------------
def test_suite_properties_read_back(suite):
    suite.makepyfile("def test_ok(): pass")
    result, xml = run(suite, "--expect-gpus", "0")
    result.assert_outcomes(passed=1)
    props, _ = junit(xml)
    for name in ("hostname", "image", "runtime", "python", "pytest", "driver", "cuda", "mpi_library",
                 "rank", "size", "local_rank", "launcher", "command", "started_utc", "contprobe"):
        assert name in props, name
    assert props["hostname"] == socket.gethostname()
    assert props["image"] == "host" and props["runtime"] == "none"
    assert props["rank"] == "0" and props["size"] == "1" and props["launcher"] == "none"
    assert "--expect-gpus 0" in props["command"]


def test_results_dir_names_the_file_by_rank(suite, monkeypatch, tmp_path):
    suite.makepyfile("def test_ok(): pass")
    monkeypatch.setenv("PMI_RANK", "3")
    monkeypatch.setenv("PMI_SIZE", "4")
    out = tmp_path / "results"
    result = suite.runpytest_subprocess("--results-dir", str(out))
    result.assert_outcomes(passed=1)
    f = out / f"junit-r00003-{socket.gethostname()}.xml"
    assert f.exists(), list(out.iterdir())
    props, _ = junit(f)
    assert props["rank"] == "3" and props["size"] == "4" and props["launcher"] == "hydra"


# ---- redaction ------------------------------------------------------------------------------------
def test_secrets_never_reach_junit(suite, monkeypatch):
    monkeypatch.setenv("MY_API_TOKEN", SECRET)
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:{PROXY_PW}@proxy:3128")
    suite.makepyfile(test_leaky=f"""
        import os
        import pytest
        from contprobe.inimage.diagnose import fail, skip

        def test_fail_with_secret():
            fail("unknown", "token is " + os.environ["MY_API_TOKEN"], "proxy " + os.environ["HTTPS_PROXY"])

        def test_raise_with_secret():
            token = os.environ["MY_API_TOKEN"]
            raise RuntimeError("cannot log in with " + token + " via " + os.environ["HTTPS_PROXY"])

        def test_assert_with_secret():
            assert os.environ["MY_API_TOKEN"] == "x"

        def test_skip_with_secret():
            skip("proxy-missing", "proxy is " + os.environ["HTTPS_PROXY"])
    """)
    result, xml = run(suite, "--expect-env", "MY_API_TOKEN=" + SECRET)
    result.assert_outcomes(failed=3, skipped=1)
    text = xml.read_text()
    assert SECRET not in text
    assert PROXY_PW not in text
    assert "&lt;redacted&gt;" in text  # masked, not dropped
    props, cases = junit(xml)
    assert SECRET not in props["command"]
