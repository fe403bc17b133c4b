"""`contprobe run --runtime podman|charliecloud` for real, as the unprivileged user, on the same test
images as Apptainer (ci/provision/test-images.sh; the runtimes from ci/provision/runtimes.sh)."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import OPT_PYTHON, ROOT, clean_env, result_of
from tests.containers import IMAGES, USER, home, image, run_as_user, user_dir

pytestmark = pytest.mark.slow

SECRET = f"v-{uuid.uuid4().hex[:12]}"
UCX_OK = ["--env", "UCX_POSIX_USE_PROC_LINK=n", "--env", "UCX_TLS=^cma"]   # as test_scale_e2e: both gotchas hit


def need(tool: str, setup: str = "bash ci/provision/runtimes.sh") -> None:
    if not shutil.which(tool):
        pytest.skip(f"{tool} not installed ({setup})")


def user_env(**extra: str) -> dict:
    """What a login gives the user: podman needs its runtime directory, ch-run needs $USER."""
    u = pwd.getpwnam(USER) if os.geteuid() == 0 else pwd.getpwuid(os.getuid())
    return clean_env(USER=u.pw_name, LOGNAME=u.pw_name, XDG_RUNTIME_DIR=f"/run/user/{u.pw_uid}", **extra)


def run_json(args, env=None, user_runner=run_as_user):
    out = user_dir()
    res = user_runner(["run", *args, "--out", os.path.join(out, "run"), "--json", os.path.join(out, "run.json")],
                      env=env or user_env())
    path = os.path.join(out, "run.json")
    doc = json.load(open(path)) if os.path.exists(path) else None
    return res, doc, os.path.join(out, "run")


def contprobe_as(user: str, user_home: str, args, env: dict, unset=(), cwd: str = "/tmp"):
    """`python -m contprobe ARGS` as USER with exactly env (runuser would set USER and LOGNAME itself)."""
    env = {**env, "PYTHONPATH": str(ROOT)}
    env.pop("HOME", None)
    argv = ["runuser", "-u", user, "--", "env", *(f"--unset={n}" for n in unset), f"HOME={user_home}",
            OPT_PYTHON, "-m", "contprobe", *args]
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                          timeout=600)


def stop_pause(user: str, rundir: str) -> None:
    """Rootless podman leaves a pause process (the holder of its user namespace) behind after its first
    call; end it once no container of the user runs, so a test leaves no process."""
    pid_file = Path(rundir, "libpod", "tmp", "pause.pid")
    if not pid_file.exists():
        return
    uid = pwd.getpwnam(user).pw_uid
    deadline = time.monotonic() + 15      # containers of a killed launch still exit through conmon
    while True:
        busy = subprocess.run(["pgrep", "-u", str(uid), "conmon"], stdout=subprocess.DEVNULL).returncode == 0
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    pid = int(pid_file.read_text().strip() or 0)
    if not busy and pid and os.path.exists(f"/proc/{pid}") and os.stat(f"/proc/{pid}").st_uid == uid:
        os.kill(pid, 9)   # it ignores SIGTERM
        pid_file.unlink()


@pytest.fixture
def podman_user():
    need("podman")
    yield
    if os.geteuid() == 0:
        stop_pause(USER, user_env()["XDG_RUNTIME_DIR"])


def assert_value_only_in_environment(out: str) -> None:
    launch = json.load(open(os.path.join(out, "launch.json")))
    assert not any(SECRET in a for a in launch["argv"]), launch["argv"]


# ---- podman ---------------------------------------------------------------------------------------
def test_podman_runs_the_suite_on_the_base_sif(podman_user, host_dir):
    img = image("base.sif")
    res, doc, out = run_json(["--runtime", "podman", str(img), "-B", host_dir, "--expect-bind", f"{host_dir}:rw",
                              "--env", f"CP_RT_VAR={SECRET}", "--expect-env", "CP_RT_VAR"])
    assert res.rc == 0, res
    assert doc["verdict"] == "passed"
    assert doc["context"]["runtime"] == "podman" and doc["context"]["image_digest"].startswith("sha256:")
    assert result_of(doc, f"binds.expected[{host_dir}:rw]")["outcome"] == "passed"
    assert result_of(doc, "env.expected[CP_RT_VAR]")["outcome"] == "passed"
    assert result_of(doc, "host.podman")["outcome"] == "passed"
    assert_value_only_in_environment(out)
    argv = json.load(open(os.path.join(out, "launch.json")))["argv"]
    assert argv[:2] == [shutil.which("podman"), "run"] and "CP_RT_VAR" in argv
    assert argv[argv.index("CP_RT_VAR") - 1] == "--env"


def marked_processes(marker: str) -> list:
    """Pids whose environment holds marker (read as root from /proc)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_podman_launch_ended_at_its_timeout_leaves_no_container(podman_user):
    """The suite is PID 1 of its container, which ignores SIGTERM: without an init the container of a
    timed-out launch runs on after contprobe has gone."""
    if os.geteuid() != 0:
        pytest.skip("reads other users' /proc/PID/environ")
    img = image("base.sif")
    hang = user_dir("contprobe-hang-")
    Path(hang, "sitecustomize.py").write_text("import time\ntime.sleep(600)\n")
    os.chmod(Path(hang, "sitecustomize.py"), 0o644)
    marker = f"CP_HANG_{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    res, doc, _ = run_json(["--runtime", "podman", str(img), "-B", f"{hang}:/opt:ro", "--env", "PYTHONPATH=/opt",
                            "--env", f"{marker}=1", "--timeout", "10", "--no-rerun"])
    assert res.rc == 1 and time.monotonic() - t0 < 120, res
    assert "timed out" in doc["lost"][0]["reason"], doc["lost"]
    deadline = time.monotonic() + 10
    while marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = marked_processes(marker)
    for pid in left:          # do not leave it behind even when the test fails
        os.kill(pid, 9)
    assert not left, "the timed-out launch's container kept running"


def test_podman_without_subordinate_ids_names_its_gotcha(podman_user):
    """`nobody` has no /etc/subuid range: an image with a file of another group cannot be stored."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run as nobody")
    nobody = pwd.getpwnam("nobody")
    work = tempfile.mkdtemp(prefix="contprobe-nosubid-", dir="/tmp")
    try:
        rootfs = Path(work, "rootfs")
        (rootfs / "usr" / "bin").mkdir(parents=True)
        (rootfs / "etc").mkdir()
        gshadow = rootfs / "etc" / "gshadow"
        gshadow.write_text("root:*::\n")
        os.chmod(gshadow, 0o644)
        os.chown(gshadow, 0, 42)                 # group shadow, as in every Debian image
        for d in ("home", "run", "out"):
            Path(work, d).mkdir(mode=0o700)
            os.chown(Path(work, d), nobody.pw_uid, nobody.pw_gid)
        os.chmod(work, 0o755)
        env = clean_env(USER="nobody", LOGNAME="nobody", XDG_RUNTIME_DIR=f"{work}/run")
        proc = contprobe_as("nobody", f"{work}/home", ["run", "--runtime", "podman", str(rootfs), "--out",
                                                        f"{work}/out/run", "--json", f"{work}/out/run.json"],
                            env, cwd=work)
        assert proc.returncode == 1, proc.stderr[-3000:]
        doc = json.load(open(f"{work}/out/run.json"))
        assert result_of(doc, "host.podman")["gotcha"] == "podman-uidmap-setup"
        pull = result_of(doc, "pull.convert")
        assert pull["outcome"] == "failed" and pull["gotcha"] == "podman-uidmap-setup", pull
        assert "podman system migrate" in [g for g in doc["gotchas"] if g["id"] == "podman-uidmap-setup"][0]["fix"]
    finally:
        stop_pause("nobody", f"{work}/run")
        shutil.rmtree(work, ignore_errors=True)


def test_podman_ranks_under_hydra_lose_the_pmi_socket(podman_user):
    """Hydra hands each rank its PMI connection as an inherited fd; podman passes fds 0-2 only."""
    need("mpiexec.hydra", "apt-get install mpich")
    img = image("mpich.sif")
    res, doc, _ = run_json(["--runtime", "podman", str(img), "--ranks", "2", "--launcher", "hydra", "-m", "mpi",
                            "--grace", "10", "--timeout", "600", *UCX_OK])
    assert res.rc == 1, res
    named = {r["gotcha"] for r in doc["results"] if r["outcome"] in ("error", "lost", "failed")}
    assert "pmi-fd-dropped" in named, doc["results"]


# ---- charliecloud ---------------------------------------------------------------------------------
def test_charliecloud_runs_the_suite_on_the_base_sif(host_dir):
    need("ch-run")
    img = image("base.sif")
    # a read-only image takes binds only onto directories it has: /home is empty in the base image
    res, doc, out = run_json(["--runtime", "charliecloud", str(img), "-B", f"{host_dir}:/home",
                              "--expect-bind", "/home:rw", "--env", f"CP_RT_VAR={SECRET}",
                              "--expect-env", "CP_RT_VAR"])
    assert res.rc == 0, res
    assert doc["verdict"] == "passed" and doc["context"]["runtime"] == "charliecloud"
    assert doc["context"]["image_digest"].startswith("sha256:")       # the SIF's, as with apptainer
    assert result_of(doc, "binds.expected[/home:rw]")["outcome"] == "passed"
    assert result_of(doc, "env.expected[CP_RT_VAR]")["outcome"] == "passed"
    assert_value_only_in_environment(out)
    # the directory image the CI made from the same SIF runs too
    ch_dir = IMAGES / "ch" / "base"
    if ch_dir.is_dir():
        res, doc, _ = run_json(["--runtime", "charliecloud", str(ch_dir), "-m", "env"])
        assert res.rc == 0 and doc["verdict"] == "passed", res


def test_charliecloud_bind_onto_a_missing_target_names_its_gotcha(host_dir):
    need("ch-run")
    res, doc, _ = run_json(["--runtime", "charliecloud", str(image("base.sif")), "-B", host_dir,
                            "--expect-bind", host_dir])
    assert res.rc == 1, res
    r = result_of(doc, "launch.container")
    assert r["gotcha"] == "chrun-bind-target-missing", r
    assert "Read-only file system" in r["message"]


def test_charliecloud_with_user_unset_is_named_by_the_host_check_and_the_launch():
    need("ch-run")
    img = image("base.sif")
    out = user_dir()
    proc = contprobe_as(USER, home(), ["run", "--runtime", "charliecloud", str(img), "-m", "env", "--out",
                                       f"{out}/run", "--json", f"{out}/run.json"], user_env(),
                        unset=("USER", "LOGNAME"))
    assert proc.returncode == 1, proc.stderr[-3000:]
    doc = json.load(open(f"{out}/run.json"))
    assert result_of(doc, "host.charliecloud")["gotcha"] == "chrun-user-unset"
    assert result_of(doc, "launch.container")["gotcha"] == "chrun-user-unset"


def test_charliecloud_two_ranks_under_hydra():
    need("ch-run")
    need("mpiexec.hydra", "apt-get install mpich")
    res, doc, _ = run_json(["--runtime", "charliecloud", str(image("mpich.sif")), "--ranks", "2",
                            "--launcher", "hydra", "-m", "mpi", "--expect-ranks", "2", *UCX_OK])
    assert res.rc == 0, res
    for probe in ("mpi.import", "mpi.world_matches_launcher"):
        r = result_of(doc, probe)
        assert r["outcome"] == "passed", r
