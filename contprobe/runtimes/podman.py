"""Rootless podman, and NERSC's podman-hpc wrapper of it: OCI images from podman's own storage.

What differs from Apptainer, each checked on the CI machine (ci/services/registry/RUNTIMES.md):
- the host environment is NOT passed in: each variable is named with `--env NAME` and podman copies
  its value from its own environment, so values stay out of argv (and out of `ps`);
- GPUs come through CDI (`--device nvidia.com/gpu=all`, podman >= 4.1, after root ran
  `nvidia-ctk cdi generate`); podman-hpc has its own `--gpu` module (NERSC's etc/modules.d/gpu.yaml);
- binds are `-v SRC:DST[:ro]` and a destination is required;
- images live in podman's storage: a registry name is pulled once, a SIF or a root file system
  directory is imported once (tagged by its path, size and mtime) and the image itself never changes;
- inside, podman writes /run/.containerenv (context.INSIDE_MARKERS) and sets container=podman;
- a rank of a launcher shares the host's network and PID namespaces and /dev/shm, and gets the
  launcher's variables (what podman-hpc's mpich module passes: SLURM_*, PALS_*, PMI_*). A PMI that
  hands each rank an inherited socket (Hydra's and Slurm pmi2's PMI_FD) cannot reach it: podman passes
  fds 0-2 only (gotcha pmi-fd-dropped); PMIx, PALS or podman-hpc's shared-run mode are the ways there.
"""
from __future__ import annotations

import getpass
import os
import re
import shutil
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from contprobe import image as images
from contprobe.runtimes import ExecSpec, Runtime, local, register

# Variables a launcher gives its ranks (the rows of inimage/rankvars.py, and what Hydra, PALS, Slurm
# and Open MPI's PMI need); podman passes every variable matching a NAME* glob from its environment.
RANK_VARS = ("PMI_*", "PMIX_*", "PALS_*", "SLURM_*", "OMPI_*", "MPI_LOCALRANKID", "MPI_LOCALNRANKS",
             "HYDI_CONTROL_FD", "CUDA_VISIBLE_DEVICES")
# Registry transports podman itself understands (containers-transports(5)).
TRANSPORTS = ("docker://", "docker-archive:", "oci-archive:", "oci:", "containers-storage:", "dir:")


def volume(bind: str) -> str:
    """contprobe's SRC[:DST[:ro|rw]] as podman's -v SRC:DST[:OPTS] (podman needs the destination)."""
    src, _, rest = bind.partition(":")
    dst, _, opts = rest.partition(":")
    return ":".join([src, dst or src] + ([opts] if opts else []))


@register
class Podman(Runtime):
    name = "podman"
    executables = ("podman",)
    version_re = re.compile(r"podman(?:-hpc)? version\s+(\S+)", re.I)
    gpu_flag = "--device nvidia.com/gpu=all"
    var_prefix = ""
    cachedir_var = "CONTAINERS_STORAGE_CONF"
    tmpdir_var = "TMPDIR"
    remote_schemes = ("docker",)
    builds_recipes = False

    def variables_note(self) -> str:
        return ("variables: --env NAME (value from podman's environment), graphroot in "
                f"{self.cachedir_var} or ~/.config/containers/storage.conf, XDG_RUNTIME_DIR, TMPDIR")

    def env_hint(self, name: str) -> str:
        return f"{self.name} run --env {name}"

    def is_remote(self, ref: str) -> bool:
        """Anything that is not a local path is an image name for podman's storage or a registry."""
        return ref.startswith(TRANSPORTS) or not (ref.startswith(("/", "./", "../")) or os.path.exists(ref))

    def exec_argv(self, spec: ExecSpec) -> Tuple[List[str], Dict[str, str]]:
        # --pull=never: the image was resolved (pulled or imported) before; a rank must not pull.
        # label=disable: on SELinux hosts a bind is otherwise unreadable, and :z would relabel host files.
        argv = [self.executable, "run", "--rm", "--pull=never", "--security-opt=label=disable"]
        if spec.gpus:
            argv += self.gpu_flag.split()
        if not spec.launched:
            # In its own PID namespace the probe suite would be PID 1, which ignores SIGTERM: a launch
            # ended at its timeout would leave its container running (seen on the CI machine). podman's
            # init forwards the signal. A rank shares the host's PID namespace and needs none.
            argv.insert(3, "--init")
        else:
            # Ranks talk over the host's network and see each other's processes; they share the host's
            # /dev/shm by a bind rather than --ipc=host, which also needs the host's /dev/mqueue
            # (`statfs /dev/mqueue: no such file or directory` on this CI machine).
            argv += ["--network=host", "--pid=host", "-v", "/dev/shm:/dev/shm", *(f"--env={v}" for v in RANK_VARS)]
        for b in spec.binds:
            argv += ["-v", volume(b)]
        # The host environment never enters a podman container, so --cleanenv changes nothing here.
        env = {**spec.env, "CONTPROBE_IMAGE": spec.image}
        for name in env:
            argv += ["--env", name]
        return argv + [spec.image, *spec.command], env

    # ---- images -------------------------------------------------------------------------------
    def _podman(self, args: List[str], timeout: float = 60.0) -> Tuple[int, str]:
        from contprobe.inimage.context import run_cmd
        rc, out, err = run_cmd([self.executable, *args], timeout)
        return rc, (out + err)

    def _digest(self, name: str) -> str:
        rc, out = self._podman(["image", "inspect", "--format", "{{.Digest}} {{.Id}}", name])
        fields = out.split() if rc == 0 else []
        digest = next((f for f in fields if f.startswith("sha256:")), "")
        return digest or (f"sha256:{fields[-1]}" if fields and re.fullmatch(r"[0-9a-f]{64}", fields[-1]) else "")

    def resolve(self, ref: str, cache_dir: str, timeout: float):
        if ref.startswith(TRANSPORTS[1:]) or not self.is_remote(ref):
            name = self._import(ref, cache_dir, timeout)
        else:
            name = ref[len("docker://"):] if ref.startswith("docker://") else ref
            if self._podman(["image", "exists", name])[0] != 0:
                local.convert(ref, [[self.executable, "pull", "-q", ref]], timeout)
        return local.LocalImage(ref, name, "oci", digest_value=self._digest(name))

    def _import(self, ref: str, cache_dir: str, timeout: float) -> str:
        """A SIF, a squashfs file or a root file system directory, imported once into podman's
        storage as localhost/contprobe/STEM:KEY (KEY changes when the file does)."""
        if ref.startswith(TRANSPORTS[1:]):
            raise images.ImageError(f"{ref}: load archives with `podman load -i FILE` and give the image name")
        path = os.path.abspath(ref)
        name = f"localhost/contprobe/{local.stem(path)}:{local.cache_key(path)}"
        if self._podman(["image", "exists", name])[0] == 0:
            return name
        import_ = [self.executable, "import", "-q", "-", name]
        if os.path.isdir(path):
            # the directory's owners travel as they are: an image's uids need the user's subuid range
            local.convert(ref, [["tar", "-C", path, "--numeric-owner", "-cf", "-", "."], import_], timeout)
        else:
            offset = 0 if local.is_squashfs(path) else local.sif_rootfs(path)[0]
            if not shutil.which("unsquashfs"):
                raise images.ImageError(f"{ref}: podman imports a SIF with unsquashfs (squashfs-tools), "
                                        "which is not on PATH")
            os.makedirs(cache_dir, exist_ok=True)
            tree = os.path.join(cache_dir, f"podman-import-{local.cache_key(path)}")
            shutil.rmtree(tree, ignore_errors=True)
            try:
                # unsquashfs as a user cannot keep the owners: everything becomes root's in the image
                local.convert(ref, [["unsquashfs", "-no-xattrs", "-no-progress", "-quiet", "-o", str(offset),
                                     "-d", tree, path]], timeout)
                local.convert(ref, [["tar", "-C", tree, "--owner=0", "--group=0", "--numeric-owner", "-cf", "-", "."],
                                    import_], timeout)
            finally:
                _rmtree_writable(tree)
        return name

    # ---- host checks --------------------------------------------------------------------------
    def host_checks(self) -> List[Tuple[str, Callable[[], object]]]:
        return [("host.podman", lambda: check_rootless(os.environ))]


def _rmtree_writable(tree: str) -> None:
    """unsquashfs keeps the image's modes: read-only directories must be opened up to be removed."""
    for root, dirs, _ in os.walk(tree):
        for d in dirs:
            p = os.path.join(root, d)
            if not os.path.islink(p):
                try:
                    os.chmod(p, 0o700)
                except OSError:
                    pass
    shutil.rmtree(tree, ignore_errors=True)


def graphroot(env: Mapping[str, str], home: str) -> str:
    """Where rootless podman keeps images: storage.conf's rootless_storage_path/graphroot, else the default."""
    from contprobe.inimage.catalog import _toml
    conf = env.get("CONTAINERS_STORAGE_CONF") or os.path.join(
        env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"), "containers", "storage.conf")
    try:
        with open(conf, "rb") as fh:
            storage = _toml.load(fh).get("storage", {})
        root = storage.get("rootless_storage_path") or storage.get("graphroot")
        if root:  # containers/storage expands $HOME, $UID and $USER in these paths
            for var, value in (("$HOME", home), ("$UID", str(os.getuid())), ("$USER", env.get("USER", ""))):
                root = root.replace(var, value)
            return root
    except (OSError, ValueError):
        pass
    data = env.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
    return os.path.join(data, "containers", "storage")


def check_rootless(env: Mapping[str, str], subuid: str = "/etc/subuid", subgid: str = "/etc/subgid",
                   uid: Optional[int] = None, home: Optional[str] = None):
    """host.podman: what rootless podman needs before its first call. Each failure names its gotcha."""
    from contprobe.checks import failed, passed, skipped
    from contprobe.checks import storage, userns
    uid = os.getuid() if uid is None else uid
    if uid == 0:
        return skipped("running as root: rootful podman needs none of this")
    user = env.get("USER") or getpass.getuser()
    rundir = env.get("XDG_RUNTIME_DIR", "")
    if rundir and not os.access(rundir, os.W_OK | os.X_OK):
        return failed("podman-runtime-dir", f"XDG_RUNTIME_DIR={rundir} is not a directory this user can write")
    missing = [t for t in ("newuidmap", "newgidmap") if not shutil.which(t)]
    if missing:
        return failed("podman-uidmap-setup", f"{' and '.join(missing)} not on PATH (package uidmap/shadow-utils)")
    for path in (subuid, subgid):
        if not userns.ranges(path, user, uid):
            return failed("podman-uidmap-setup", f"no range for {user} in {path}")
    root = graphroot(env, home or os.path.expanduser("~"))
    kind = storage.fs_type(os.path.dirname(root) if not os.path.exists(root) else root)
    if kind in storage.NETWORK_FS:
        return failed("podman-storage-network-fs", f"graphroot {root} is on {kind}")
    note = "" if rundir else "; XDG_RUNTIME_DIR unset (podman falls back to /tmp/podman-run-UID and remembers it)"
    return passed(f"subuid/subgid ranges for {user}; graphroot {root} ({kind or '?'}){note}")


@register
class PodmanHPC(Podman):
    """NERSC's podman-hpc: podman with site modules (--gpu, --mpi) and squashed images (`migrate`)."""
    name = "podman-hpc"
    executables = ("podman-hpc",)
    gpu_flag = "--gpu"
