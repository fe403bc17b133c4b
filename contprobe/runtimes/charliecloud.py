"""Charliecloud (`ch-run`, LANL): unprivileged containers from a directory or a squashfs file.

What differs from Apptainer, each checked on the CI machine (ci/services/registry/RUNTIMES.md):
- ch-run passes the host environment through, so variables travel in ch-run's own environment and
  never in argv; `--cleanenv` becomes `--unset-env=NAME` for each host variable (names only);
- binds are `-b SRC:DST` and, in a read-only image, DST must already exist (ch-run cannot create a
  mount point: `can't mkdir: ...: Read-only file system`). The harness's own mounts therefore land on
  /mnt, /media and /srv, which every FHS image has, instead of /.contprobe, /.contprobe-out and the
  bytecode cache /.contprobe-pycache;
- GPUs are not a run-time flag: `ch-fromhost --nvidia IMG_DIR` copies the host's driver libraries into
  a writable directory image once (ch-run already binds the host's /dev);
- a SIF cannot run (`unknown image type`): its squashfs partition is copied once into the cache and
  run from there (ch-run mounts it with squashfuse under /var/tmp/$USER.ch);
- ch-run refuses to start with $USER unset; inside it sets CH_RUNNING (context.INSIDE_MARKERS).
"""
from __future__ import annotations

import os
import re
import shutil
from typing import Callable, Dict, List, Mapping, Tuple

from contprobe import harness, pycache
from contprobe import image as images
from contprobe.runtimes import ExecSpec, Runtime, local, register

# The harness's mount points, moved onto directories that exist in every FHS image (see above).
MOUNTS = ((harness.RESULTS_MOUNT, "/media"), (harness.MOUNT, "/mnt"), (pycache.MOUNT, "/srv"))
# Variables --cleanenv keeps: what a login gives and ch-run itself needs.
KEEP = ("USER", "HOME", "PATH", "LANG", "TERM", "LOGNAME")


def moved(path: str) -> str:
    """A path under one of the harness's mount points, as the container sees it under ch-run."""
    for old, new in MOUNTS:
        if path == old or path.startswith(old + "/"):
            return new + path[len(old):]
    return path


@register
class Charliecloud(Runtime):
    name = "charliecloud"
    executables = ("ch-run",)
    version_re = re.compile(r"^(\d+\.\d+(?:\.\d+)?\S*)$", re.M)
    gpu_flag = "ch-fromhost --nvidia IMAGE"     # a one-time change of a directory image, not a flag
    var_prefix = ""                             # no variables of its own for values
    cachedir_var = "CH_IMAGE_STORAGE"
    tmpdir_var = "TMPDIR"
    builds_recipes = False

    @classmethod
    def version_env(cls) -> Dict[str, str]:
        # ch-run exits at once when $USER is unset, --version included: it says nothing then
        return {**os.environ, "USER": _user()}

    def variables_note(self) -> str:
        return ("variables: inherited from the host (--set-env/--unset-env), "
                f"{self.cachedir_var} (default /var/tmp/$USER.ch), USER")

    def env_hint(self, name: str) -> str:
        return f"export {name}=... before ch-run (it passes the host environment)"

    def exec_argv(self, spec: ExecSpec) -> Tuple[List[str], Dict[str, str]]:
        argv = [self.executable]
        for b in spec.binds:
            src, _, rest = b.partition(":")
            dst = rest.partition(":")[0] or src
            # ch-run binds read-write; the harness is read-only through its files' modes (harness.stage)
            argv += ["-b", f"{src}:{moved(dst)}"]
        env = {**{k: moved(v) for k, v in spec.env.items()}, "CONTPROBE_IMAGE": spec.image}
        if spec.cleanenv:
            argv += [f"--unset-env={n}" for n in sorted(os.environ) if n not in KEEP and n not in env]
        return argv + [spec.image, "--", *(moved(a) for a in spec.command)], env

    def resolve(self, ref: str, cache_dir: str, timeout: float):
        if "://" in ref:
            raise images.ImageError(f"{ref}: pull it with `ch-image pull` (or run it with --runtime apptainer); "
                                    "the charliecloud backend runs directories, squashfs files and SIFs")
        if not os.path.exists(ref):
            raise images.ImageError(f"image {ref!r} does not exist")
        path = os.path.abspath(ref)
        if os.path.isdir(path):
            if not os.path.isdir(os.path.join(path, "usr")) and not os.path.isdir(os.path.join(path, "bin")):
                raise images.ImageError(f"{ref}: directory is not an image (no usr/ or bin/)")
            return local.LocalImage(ref, path, "directory")
        if local.is_squashfs(path):
            return local.LocalImage(ref, path, "squashfs", digest_of=path)
        offset, size = local.sif_rootfs(path)
        os.makedirs(cache_dir, exist_ok=True)
        target = os.path.join(cache_dir, f"{local.stem(path)}-{local.cache_key(path)}.sqfs")
        if not os.path.exists(target):
            local.copy_range(path, offset, size, target)
        return local.LocalImage(ref, target, "sif", digest_of=path)

    def host_checks(self) -> List[Tuple[str, Callable[[], object]]]:
        return [("host.charliecloud", lambda: check_unprivileged(os.environ))]


def _user() -> str:
    import getpass
    return os.environ.get("USER") or getpass.getuser()


def check_unprivileged(env: Mapping[str, str]):
    """host.charliecloud: $USER set (ch-run refuses to start without it), squashfuse for squashfs
    images and SIFs, and where ch-run and ch-image keep their storage (/var/tmp/$USER.ch)."""
    from contprobe.checks import failed, passed
    from contprobe.checks import storage
    if not env.get("USER"):
        return failed("chrun-user-unset", "$USER is not set (batch, cron and `env -i` shells)")
    store = env.get("CH_IMAGE_STORAGE") or f"/var/tmp/{env['USER']}.ch"
    where = store if os.path.exists(store) else os.path.dirname(store.rstrip("/")) or "/"
    kind = storage.fs_type(where)
    writable = "" if os.access(where, os.W_OK | os.X_OK) else ", not writable"
    fuse = "" if shutil.which("squashfuse") or shutil.which("squashfuse_ll") else \
        "; squashfuse not on PATH: squashfs images and SIFs cannot be mounted, only directories"
    return passed(f"USER={env['USER']}; storage {store} ({kind or '?'}{writable}){fuse}")
