"""Gotchas reproduced for real: each case makes the real component fail on this machine (Apptainer
as the unprivileged user, MPICH's Hydra and PMI, torch's gloo and shared memory, Go's registry
client through a proxy, the kernel's exec) and checks that the catalog's matcher names the gotcha
from the real output, in the stage where a user (or `contprobe explain`) would see it.

Each producer first asserts that the failure really happened (its exit status and the component's
own words), so a case cannot pass on output that shows no failure. Cases that today's patterns
name wrongly, or not at all, are xfail(strict=True) with the reason: they start passing, and must
then lose the mark, when the matcher learns the real wording.

Gotchas reproduced by other end-to-end tests are not repeated here (see REPRODUCED_ELSEWHERE).
"""
from __future__ import annotations

import os
import shutil
import socketserver
import subprocess
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from contprobe.inimage import catalog
from tests.conftest import clean_env
from tests.containers import as_user, chown_tree, home, image, user_dir

pytestmark = pytest.mark.slow

# gotcha -> the test that reproduces it for real elsewhere (through `contprobe run`/`doctor`/`build-check`).
REPRODUCED_ELSEWHERE = {
    "bind-missing": "tests/test_run_e2e.py::test_missing_bind_is_diagnosed_by_rerun",
    "env-not-passed": "tests/test_run_e2e.py::test_missing_variable_is_diagnosed_by_rerun",
    "user-site-shadow": "tests/test_run_e2e.py::test_user_site_leak_is_diagnosed_by_rerun",
    "nv-flag-missing": "tests/test_run_e2e.py::test_missing_gpu_blames_nv_only_when_nv_was_not_given",
    "no-gpu-visible": "tests/test_run_e2e.py::test_missing_gpu_blames_nv_only_when_nv_was_not_given",
    "subuid-range-small": "tests/test_build_e2e.py::test_no_subuid_range_is_named",
    "proxy-ca-missing": "tests/test_build_e2e.py::test_site_proxy_ca_missing_in_build_is_named",
    "mpi-singleton": "tests/test_mpi_probes.py::test_singleton_under_launcher_variables_is_every_rank_is_rank_0",
    "mpi4py-wheel-libmpi": "tests/test_mpi_wheel.py::test_binary_wheel_is_diagnosed",
    "ucx-cma-eperm": "tests/test_one_pipeline_e2e.py::test_lost_ranks_keep_their_cause",
}


def run(argv: List[str], env: Optional[Dict[str, str]] = None, timeout: float = 300,
        home_dir: Optional[str] = None) -> Tuple[int, str]:
    """argv as the unprivileged user, HOME its own unless given: (exit status, stdout and stderr together)."""
    env = dict(clean_env() if env is None else env)
    env.pop("HOME", None)
    p = subprocess.run(as_user(["env", f"HOME={home_dir or home()}", *argv]), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, env=env, timeout=timeout, cwd="/tmp")
    return p.returncode, p.stdout


class NotReproduced(RuntimeError):
    """The component did not fail as the case needs: an error of the test, never an expected failure."""


def failed(rc: int, text: str, *words: str) -> str:
    """The real failure, checked: a nonzero exit and the component's own words."""
    if rc == 0:
        raise NotReproduced(f"exit status 0:\n{text[-2000:]}")
    return shows(text, *words)


def shows(text: str, *words: str) -> str:
    missing = [w for w in words if w not in text]
    if missing:
        raise NotReproduced(f"{missing[0]!r} not in:\n{text[-2000:]}")
    return text


def apptainer(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 300,
              home_dir: Optional[str] = None) -> Tuple[int, str]:
    return run(["apptainer", *args], env=env, timeout=timeout, home_dir=home_dir)


@contextmanager
def small_tmpfs(size: str) -> Iterator[str]:
    """A tmpfs of `size`, world-writable like /dev/shm (mounting needs root)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    d = user_dir("contprobe-tmpfs-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "tmpfs", d], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", d], check=False)
        os.rmdir(d)


@contextmanager
def refusing_proxy() -> Iterator[str]:
    """An HTTP proxy on loopback that answers every request, CONNECT included, 403 Forbidden."""
    class Refuse(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Refuse)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        t.join(10)


def in_image(img: str, code: str, *apptainer_args: str, env: Optional[Dict[str, str]] = None) -> Tuple[int, str]:
    return apptainer("exec", *apptainer_args, str(image(img)), "python3", "-c", code, env=env)


# ---- producers: each returns the real failure's output ----------------------------------------------
def touch_into_the_image() -> str:
    return failed(*apptainer("exec", str(image("base.sif")), "touch", "/usr/contprobe-was-here"),
                  "cannot touch '/usr/contprobe-was-here': Read-only file system")


def python_writes_into_the_image() -> str:
    return failed(*in_image("base.sif", "open('/opt/contprobe-was-here', 'w')"),
                  "[Errno 30] Read-only file system: '/opt/contprobe-was-here'")


def exec_missing_image() -> str:
    image("base.sif")
    return failed(*apptainer("exec", "/nonexistent/contprobe/missing.sif", "true"),
                  "FATAL", "no such file or directory")


def writable_sandbox_bind_destination_missing() -> str:
    rootfs = Path(str(image("base.sif"))).parent / "rootfs"
    if not (rootfs / "usr").is_dir():
        pytest.skip(f"{rootfs} not built (bash ci/provision/test-images.sh)")
    sandbox = user_dir("contprobe-sandbox-")
    subprocess.run(["cp", "-a", f"{rootfs}/.", sandbox], check=True)
    chown_tree(sandbox)
    src = user_dir("contprobe-bindsrc-")
    try:
        return failed(*apptainer("exec", "--writable", "-B", f"{src}:/contprobe-new-dir", sandbox, "true"),
                      "can't create /contprobe-new-dir destination automatically")
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)
        os.rmdir(src)


def hydra_given_pals_flags() -> str:
    exe = shutil.which("mpiexec.mpich") or pytest.skip("mpiexec.mpich not installed")
    return failed(*run([exe, "--depth", "8", "--cpu-bind", "depth", "-n", "1", "true"]), "unrecognized argument depth")


def hydra_given_open_mpi_flags() -> str:
    exe = shutil.which("mpiexec.mpich") or pytest.skip("mpiexec.mpich not installed")
    return failed(*run([exe, "-npernode", "1", "-n", "1", "true"]), "unrecognized argument npernode")


def pmi_fd_not_passed() -> str:
    # The launcher's PMI_FD reaches the rank but the descriptor does not (as when a runtime closes
    # inherited descriptors): MPICH's simple PMI cannot write its init command.
    return failed(*apptainer("exec", str(image("mpich.sif")), "env", "PMI_FD=77", "PMI_RANK=0", "PMI_SIZE=2",
                             "timeout", "60", "python3", "-c", "from mpi4py import MPI"),
                  "Unable to write to PMI_fd")


def pmi_server_unreachable() -> str:
    return failed(*apptainer("exec", str(image("mpich.sif")), "env", "PMI_PORT=127.0.0.1:9", "PMI_ID=0",
                             "PMI_RANK=0", "PMI_SIZE=2", "timeout", "60", "python3", "-c", "from mpi4py import MPI"),
                  "PMI_Init returned -1")


def srun_inside_the_image() -> str:
    return failed(*apptainer("exec", str(image("base.sif")), "sh", "-c", "srun -n 1 hostname"), "srun: not found")


def import_missing(module: str) -> str:
    return failed(*in_image("base.sif", f"import {module}"), f"No module named '{module}'")


def pytest_module_missing() -> str:
    return failed(*apptainer("exec", str(image("nopytest.sif")), "python3", "-m", "pytest", "--version"),
                  "No module named pytest")


def ld_preload_from_the_host() -> str:
    # ld.so ignores the object and the program runs: the line is a warning in every rank's output,
    # which is how users see it (and what explain must name), not an exit status.
    env = clean_env(LD_PRELOAD="/nonexistent/contprobe/libxalt_init.so")
    _, out = apptainer("exec", str(image("base.sif")), "true", env=env)
    return shows(out, "ERROR: ld.so: object '/nonexistent/contprobe/libxalt_init.so' from LD_PRELOAD cannot be "
                          "preloaded")


def runtime_not_on_path() -> str:
    image("base.sif")
    return failed(*run(["bash", "-c", "PATH=/nonexistent/bin; apptainer exec x.sif true"]),
                  "apptainer: command not found")


def nvcc_not_in_image() -> str:
    return failed(*apptainer("exec", str(image("base.sif")), "sh", "-c", "nvcc --version"), "nvcc: not found")


def nvidia_smi_without_nv() -> str:
    return failed(*apptainer("exec", str(image("base.sif")), "nvidia-smi"), "executable file not found")


def torch_shared_memory_full() -> str:
    with small_tmpfs("1m") as shm:
        return failed(*in_image("mpich.sif", "import torch; torch.ones(1 << 22).share_memory_()",
                                "-B", f"{shm}:/dev/shm"),
                      "unable to allocate shared memory(shm)", "No space left on device")


def mpi_shared_memory_full() -> str:
    with small_tmpfs("1m") as shm:
        rc, out = apptainer("exec", "-B", f"{shm}:/dev/shm", str(image("mpich.sif")), "timeout", "120",
                            "mpiexec", "-n", "2", "python3", "-c",
                            "from mpi4py import MPI; import numpy as np; a = np.ones(1 << 22); "
                            "MPI.COMM_WORLD.Allreduce(a, np.empty_like(a))", timeout=300)
        return failed(rc, out, "/dev/shm", "Not enough memory")


def build_temp_in_a_full_home() -> str:
    with small_tmpfs("2m") as tiny:
        env = clean_env(APPTAINER_TMPDIR=tiny, APPTAINER_CACHEDIR=f"{tiny}/cache")
        return failed(*apptainer("build", f"{tiny}/out.sif", str(image("base.sif")), env=env, home_dir=tiny),
                      "no space left on device")


def image_for_another_arch() -> str:
    """A real SIF whose root file system partition is marked arm64 (the same squashfs, re-labelled
    with apptainer's own `sif` tool): what a user gets from pulling the wrong platform."""
    base = str(image("base.sif"))
    d = user_dir("contprobe-arch-")
    try:
        sqfs, arm = f"{d}/rootfs.sqfs", f"{d}/arm64.sif"
        with open(sqfs, "wb") as fh:
            subprocess.run(["apptainer", "sif", "dump", "3", base], stdout=fh, check=True)
        subprocess.run(["apptainer", "sif", "new", arm], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apptainer", "sif", "add", arm, sqfs, "--datatype", "4", "--parttype", "2", "--partfs", "1",
                        "--partarch", "4", "--groupid", "1"], check=True, stdout=subprocess.DEVNULL)
        chown_tree(d)
        return failed(*apptainer("exec", arm, "true"), "image's architecture (arm64) could not run on the host's")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def foreign_binary_in_the_image() -> str:
    """An ELF for aarch64 (its header: what the kernel reads to refuse it) run inside the image."""
    image("base.sif")
    d = user_dir("contprobe-elf-")
    exe = Path(d) / "aarch64-tool"
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + (2).to_bytes(2, "little") + (183).to_bytes(2, "little") \
        + (1).to_bytes(4, "little")
    exe.write_bytes(header + bytes(64))
    exe.chmod(0o755)
    chown_tree(d)
    try:
        return failed(*apptainer("exec", str(image("base.sif")), "sh", "-c", str(exe)), "Exec format error")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def gloo_socket_ifname_wrong() -> str:
    port = 29500 + uuid.uuid4().int % 400
    code = ("import torch.distributed as dist; "
            f"dist.init_process_group('gloo', init_method='tcp://127.0.0.1:{port}', rank=0, world_size=1)")
    return failed(*in_image("mpich.sif", code, env=clean_env(GLOO_SOCKET_IFNAME="ib0")),
                  "Unable to find address for: ib0")


def mpi4py_built_for_open_mpi_in_an_mpich_free_image() -> str:
    d = user_dir("contprobe-ompi-")
    try:
        rc, out = apptainer("exec", str(image("openmpi.sif")), "sh", "-c",
                            "cp -r \"$(python3 -c 'import mpi4py, os; print(os.path.dirname(mpi4py.__file__))')\" "
                            + d + "/")
        if rc != 0:
            raise NotReproduced(out)
        return failed(*in_image("base.sif", f"import sys; sys.path.insert(0, {d!r}); from mpi4py import MPI"),
                      "libmpi.so.40: cannot open shared object file")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def pull_through_a_refusing_proxy() -> str:
    image("base.sif")
    with refusing_proxy() as proxy:
        d = user_dir("contprobe-pull-")
        env = clean_env(HTTPS_PROXY=proxy, HTTP_PROXY=proxy, https_proxy=proxy, http_proxy=proxy,
                        APPTAINER_CACHEDIR=f"{d}/cache")
        try:
            return failed(*apptainer("pull", f"{d}/x.sif", "docker://registry-1.docker.io/library/busybox:1.36",
                                     env=env, timeout=120), "Forbidden")
        finally:
            shutil.rmtree(d, ignore_errors=True)


def pull_without_the_site_proxy() -> str:
    """A compute node whose only way out is the site proxy, without the proxy variables: here a
    network namespace of this test's own with no route (nothing leaves the machine)."""
    image("base.sif")
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a network namespace without a route needs root (unshare -n)")
    d = user_dir("contprobe-pull-")
    env = {k: v for k, v in clean_env(APPTAINER_CACHEDIR=f"{d}/cache").items() if "proxy" not in k.lower()}
    env.pop("HOME", None)
    try:
        p = subprocess.run(["unshare", "-n", *as_user(["env", f"HOME={home()}", "apptainer", "pull", f"{d}/x.sif",
                                                        "docker://registry-1.docker.io/library/busybox:1.36"])],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=120,
                           cwd="/tmp")
        return failed(p.returncode, p.stdout, "registry-1.docker.io", "network is unreachable")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bind_source_missing_on_the_host() -> str:
    return failed(*apptainer("exec", "-B", "/nonexistent/contprobe-data:/data", str(image("base.sif")), "true"),
                  "mount source /nonexistent/contprobe-data doesn't exist")


def wrong(reason: str):
    # Only the matcher's verdict may fail here: a case that did not reproduce raises NotReproduced.
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


BROAD_READ_ONLY = ("bind-not-writable's broad 'Read-only file system' (00-core) decides before image-read-only; "
                   "the path is in the image and was never bound")
BROAD_NO_SPACE = "cache-in-home's broad 'no space left on device' (00-core) decides before shm-too-small"

# (case id, producer, stage the text is read in, the gotcha a user needs, marks)
CASES = [
    ("touch-into-image", touch_into_the_image, "rank", "image-read-only", wrong(BROAD_READ_ONLY)),
    ("python-writes-into-image", python_writes_into_the_image, "rank", "image-read-only", wrong(BROAD_READ_ONLY)),
    ("exec-missing-image", exec_missing_image, "launch", "image-unreadable", ()),
    ("writable-bind-dest-missing", writable_sandbox_bind_destination_missing, "launch", "writable-bind-dest-missing",
     ()),
    ("hydra-given-pals-flags", hydra_given_pals_flags, "launch", "launcher-mismatch", ()),
    ("hydra-given-open-mpi-flags", hydra_given_open_mpi_flags, "launch", "pals-openmpi-flags", ()),
    ("pmi-fd-not-passed", pmi_fd_not_passed, "rank", "pmi-fd-dropped", ()),
    ("pmi-server-unreachable", pmi_server_unreachable, "rank", "pmi-startup-failure", ()),
    ("srun-inside-image", srun_inside_the_image, "rank", "scheduler-missing-in-image", ()),
    ("mpi4py-missing", lambda: import_missing("mpi4py"), "rank", "mpi4py-missing", ()),
    ("torch-missing", lambda: import_missing("torch"), "rank", "torch-missing", ()),
    ("horovod-missing", lambda: import_missing("horovod"), "rank", "horovod-missing", ()),
    ("python-m-pytest-missing", pytest_module_missing, "rank", "pytest-missing-in-image",
     wrong("`python3 -m pytest` prints \"No module named pytest\" (no quotes); the pattern wants 'pytest' quoted")),
    ("ld-preload-from-host", ld_preload_from_the_host, "launch", "ld-preload-leak", ()),
    ("runtime-not-on-path", runtime_not_on_path, "rank", "runtime-not-found", ()),
    ("nvcc-not-in-image", nvcc_not_in_image, "rank", "nvcc-missing", ()),
    ("nvidia-smi-without-nv", nvidia_smi_without_nv, "launch", "nv-flag-missing",
     wrong("Apptainer says '\"nvidia-smi\": executable file not found in $PATH'; the patterns know only the "
           "shell's 'nvidia-smi: not found'")),
    ("torch-shm-full", torch_shared_memory_full, "rank", "shm-too-small", wrong(BROAD_NO_SPACE)),
    ("mpi-shm-full", mpi_shared_memory_full, "rank", "shm-too-small",
     wrong("UCX's 'Not enough memory to write total of N bytes. Please check that /dev/shm ... has more available "
           "memory' has no pattern")),
    ("build-temp-in-full-home", build_temp_in_a_full_home, "build", "cache-in-home", ()),
    ("image-for-another-arch", image_for_another_arch, "launch", "image-arch-mismatch",
     wrong("Apptainer 1.4's \"the image's architecture (arm64) could not run on the host's (amd64)\" is preceded by "
           "'could not open image', which image-unreadable (00-core) matches first")),
    ("foreign-binary-in-image", foreign_binary_in_the_image, "rank", "image-arch-mismatch", ()),
    ("gloo-socket-ifname-wrong", gloo_socket_ifname_wrong, "rank", "nccl-socket-ifname",
     wrong("gloo's 'Unable to find address for: ib0' (GLOO_SOCKET_IFNAME) has no pattern; the entry knows NCCL's "
           "wording only")),
    ("mpi4py-open-mpi-build", mpi4py_built_for_open_mpi_in_an_mpich_free_image, "rank", "mpi-abi-openmpi", ()),
    ("pull-through-refusing-proxy", pull_through_a_refusing_proxy, "pull", "proxy-forbidden",
     wrong("Go's registry client reports a refused CONNECT as 'Get \"https://.../v2/\": Forbidden', without "
           "'proxyconnect' or '403'")),
    ("pull-without-site-proxy", pull_without_the_site_proxy, "pull", "proxy-missing", ()),
]


@pytest.mark.parametrize("produce, stage, gotcha", [pytest.param(p, s, g, id=i, marks=m) for i, p, s, g, m in CASES])
def test_real_failure_is_named(produce, stage, gotcha):
    text = produce()
    named = catalog.match(text, stage)
    assert named == gotcha, f"named {named!r}:\n{text[-3000:]}"


def test_bind_source_missing_on_host_is_not_guessed():
    """No gotcha covers a bind whose source is missing on the host (contprobe run refuses it as bad
    input before starting): the real message must stay unknown, not become a bind gotcha."""
    text = bind_source_missing_on_the_host()
    assert catalog.match(text, "launch") == catalog.UNKNOWN, text


def test_every_case_names_a_catalog_entry():
    ids = catalog.ids()
    named = {g for _, _, _, g, _ in CASES} | set(REPRODUCED_ELSEWHERE)
    assert named <= set(ids), named - set(ids)
    assert len(named) >= 20
