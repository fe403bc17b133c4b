"""podman, podman-hpc and charliecloud backends without running them: argument lists, where values
travel, image resolution from a SIF, host checks, and the catalog on their real messages."""
from __future__ import annotations

import hashlib
import os
import struct
import time
from pathlib import Path

import pytest

from contprobe import harness, image as images
from contprobe import runtimes as R
from contprobe.image import Image
from contprobe.inimage import catalog
from contprobe.launch import Plan
from contprobe.launchers import LaunchRequest
from contprobe.launchers.hydra import Hydra
from contprobe.runtimes import local
from contprobe.runtimes.charliecloud import Charliecloud, check_unprivileged
from contprobe.runtimes.podman import Podman, PodmanHPC, check_rootless, graphroot, volume
from contprobe.suite import Expectations

ROOT_CORPUS = Path(__file__).resolve().parent / "corpus"

SECRET = "s3cr3t-value-42"
COMMAND = ["python3", f"{harness.INIMAGE}/bootstrap.py", "--", harness.PROBES, "--results-dir", harness.RESULTS_MOUNT]
HARNESS_BINDS = [f"/out/.harness:{harness.MOUNT}:ro", f"/out/ranks:{harness.RESULTS_MOUNT}"]


def spec(**kw) -> R.ExecSpec:
    return R.ExecSpec(**{"image": "IMG", "command": list(COMMAND), "binds": ["/lus", *HARNESS_BINDS],
                         "env": {"CP_VAR": SECRET}, **kw})


def test_podman_values_travel_in_its_environment_and_binds_name_a_destination():
    argv, env = Podman("/usr/bin/podman", "4.3.1").exec_argv(spec())
    assert not any(SECRET in a for a in argv)
    assert env == {"CP_VAR": SECRET, "CONTPROBE_IMAGE": "IMG"}
    assert argv[:6] == ["/usr/bin/podman", "run", "--rm", "--init", "--pull=never", "--security-opt=label=disable"]
    assert argv[argv.index("CP_VAR") - 1] == "--env" and argv[argv.index("CONTPROBE_IMAGE") - 1] == "--env"
    vols = [argv[i + 1] for i, a in enumerate(argv) if a == "-v"]
    assert vols == ["/lus:/lus", f"/out/.harness:{harness.MOUNT}:ro", f"/out/ranks:{harness.RESULTS_MOUNT}"]
    assert argv[argv.index("IMG"):] == ["IMG", *COMMAND]          # the command is untouched
    assert "--device" not in argv and "--network=host" not in argv


def test_podman_gpus_by_cdi_podman_hpc_by_its_module_and_ranks_get_launcher_variables():
    argv, _ = Podman("/usr/bin/podman", "4.3.1").exec_argv(spec(gpus=True, launched=True))
    assert argv[argv.index("--device") + 1] == "nvidia.com/gpu=all"
    assert {"--network=host", "--pid=host", "--env=PMI_*", "--env=SLURM_*", "--env=PALS_*"} <= set(argv)
    assert "--ipc=host" not in argv and "/dev/shm:/dev/shm" in argv
    assert "--init" not in argv      # podman refuses an init in the host's PID namespace
    hpc, _ = PodmanHPC("/usr/bin/podman-hpc", "1.1.0").exec_argv(spec(gpus=True))
    assert "--gpu" in hpc and "--device" not in hpc and hpc[:2] == ["/usr/bin/podman-hpc", "run"]


@pytest.mark.parametrize("bind,expected", [("/a", "/a:/a"), ("/a:/b", "/a:/b"), ("/a:/b:ro", "/a:/b:ro"),
                                           ("/a::rw", "/a:/a:rw")])
def test_podman_volume(bind, expected):
    assert volume(bind) == expected


def test_charliecloud_moves_the_harness_onto_existing_directories_and_inherits_values():
    argv, env = Charliecloud("/usr/bin/ch-run", "0.31").exec_argv(spec(gpus=True))
    assert not any(SECRET in a for a in argv) and env["CP_VAR"] == SECRET
    assert argv == ["/usr/bin/ch-run", "-b", "/lus:/lus", "-b", "/out/.harness:/mnt", "-b", "/out/ranks:/media",
                    "IMG", "--", "python3", "/mnt/contprobe/inimage/bootstrap.py", "--",
                    "/mnt/contprobe/inimage/probes", "--results-dir", "/media"]


def test_charliecloud_cleanenv_unsets_host_variables_by_name_only(monkeypatch):
    monkeypatch.setenv("CP_HOST_ONLY", SECRET)
    argv, env = Charliecloud("/usr/bin/ch-run", "0.31").exec_argv(spec(cleanenv=True))
    assert "--unset-env=CP_HOST_ONLY" in argv and not any(SECRET in a for a in argv)
    assert "--unset-env=CP_VAR" not in argv and "--unset-env=PATH" not in argv and "--unset-env=USER" not in argv


@pytest.mark.parametrize("cls,text,version", [
    (Podman, "podman version 4.3.1", "4.3.1"),
    (PodmanHPC, "podman version 4.9.4-dev", "4.9.4-dev"),
    (Charliecloud, "0.31", "0.31"),
    (Charliecloud, "ch-run[1]: error: $USER not set (ch-run.c:122)", None),
])
def test_versions(cls, text, version):
    m = cls.version_re.search(text)
    assert (m.group(1) if m else None) == version


def test_charliecloud_version_is_asked_with_user_set(tmp_path, monkeypatch):
    """ch-run says nothing but an error when $USER is unset, --version included."""
    fake = tmp_path / "ch-run"
    fake.write_text('#!/bin/sh\n[ -n "$USER" ] || { echo "ch-run[1]: error: \\$USER not set" >&2; exit 1; }\n'
                    'echo 0.31\n')
    fake.chmod(0o755)
    monkeypatch.delenv("USER", raising=False)
    assert Charliecloud.version_text(str(fake)).strip() == "0.31"


def test_a_rank_of_a_launch_is_marked_launched_and_the_launcher_passes_names_only():
    plan = Plan(rt=Podman("/usr/bin/podman", "4.3.1"), image=Image("x.sif", "localhost/contprobe/x:1", "oci"),
                python="python3", binds=[], env={"CP_VAR": SECRET}, nv=False, cleanenv=False, exp=Expectations(),
                harness_dir="/h", results_dir="/r", ranks=2, launcher=Hydra("/usr/bin/mpiexec.hydra"),
                launch_req=LaunchRequest(ranks=2))
    argv, env = plan.argv()
    assert argv[:5] == ["/usr/bin/mpiexec.hydra", "-n", "2", "-genvlist", "CP_VAR,CONTPROBE_IMAGE"]
    assert "--env=PMI_*" in argv and not any(SECRET in a for a in argv) and env["CP_VAR"] == SECRET
    single, _ = plan.argv(single=True)
    assert single[0] == "/usr/bin/podman" and "--env=PMI_*" not in single


# ---- images --------------------------------------------------------------------------------------
def make_sif(path, payload: bytes = b"hsqs" + bytes(60), primary: bool = True) -> int:
    """A minimal SIF v1: a definition file and one squashfs system partition; returns the partition's offset."""
    descs = 2
    data_off = images.SIF_HEADER.size + descs * local.SIF_DESCRIPTOR.size
    deffile = b"Bootstrap: scratch\n"
    part_off = data_off + len(deffile)
    header = images.SIF_HEADER.pack(b"#!/usr/bin/env run-singularity\n", b"SIF_MAGIC\0", b"01\0", b"2\0\0",
                                    bytes(16), 0, 0, 0, descs, images.SIF_HEADER.size,
                                    descs * local.SIF_DESCRIPTOR.size, data_off, len(deffile) + len(payload))

    def desc(dtype, ident, off, size, extra):
        return local.SIF_DESCRIPTOR.pack(dtype, True, ident, 1, 0, off, size, size, 0, 0, 0, 0, b"", extra)
    extra = struct.pack("<ii3s", local.SIF_SQUASHFS, local.SIF_PRIMARY if primary else 3, b"2\0\0")
    path.write_bytes(header + desc(0x4001, 1, data_off, len(deffile), b"")
                     + desc(local.SIF_PARTITION, 2, part_off, len(payload), extra) + deffile + payload)
    return part_off


def test_sif_rootfs_finds_the_primary_squashfs_partition(tmp_path):
    sif = tmp_path / "x.sif"
    off = make_sif(sif)
    assert local.sif_rootfs(str(sif)) == (off, 64)
    make_sif(sif, primary=False)
    with pytest.raises(images.ImageError, match="no squashfs root file system"):
        local.sif_rootfs(str(sif))
    real = "/var/tmp/contprobe-images/base.sif"
    if os.path.exists(real):   # an apptainer-built SIF: the offset `apptainer sif list` shows
        offset, size = local.sif_rootfs(real)
        with open(real, "rb") as fh:
            fh.seek(offset)
            assert fh.read(4) == b"hsqs" and offset + size <= os.path.getsize(real)


def test_charliecloud_runs_a_copy_of_the_sifs_partition_made_once(tmp_path):
    sif = tmp_path / "Base.sif"
    payload = b"hsqs" + os.urandom(1000)
    make_sif(sif, payload)
    rt = Charliecloud("/usr/bin/ch-run", "0.31")
    img = rt.resolve(str(sif), str(tmp_path / "cache"), 60)
    assert img.kind == "sif" and img.path.endswith(".sqfs") and os.path.basename(img.path).startswith("base-")
    assert open(img.path, "rb").read() == payload
    assert img.digest() == "sha256:" + hashlib.sha256(sif.read_bytes()).hexdigest()   # of what the user gave
    before = os.stat(img.path).st_mtime_ns
    time.sleep(0.01)
    assert rt.resolve(str(sif), str(tmp_path / "cache"), 60).path == img.path
    assert os.stat(img.path).st_mtime_ns == before
    assert rt.resolve(img.path, str(tmp_path / "cache"), 60).kind == "squashfs"
    (tmp_path / "d" / "usr").mkdir(parents=True)
    assert rt.resolve(str(tmp_path / "d"), "/nonexistent", 60).kind == "directory"
    for bad in ("docker://x/y:1", str(tmp_path / "missing")):
        with pytest.raises(images.ImageError):
            rt.resolve(bad, str(tmp_path / "cache"), 60)


def test_podman_takes_names_for_its_storage_and_paths_for_import(tmp_path):
    rt = Podman("/usr/bin/podman", "4.3.1")
    assert rt.is_remote("localhost/contprobe/base:1") and rt.is_remote("docker://127.0.0.1:5443/base:1")
    assert not rt.is_remote(str(tmp_path)) and not rt.is_remote("./x.sif")


def test_pipeline_ends_at_its_timeout_and_reports_the_first_failure():
    t0 = time.monotonic()
    rc, _, timed_out = local.pipeline([["sleep", "30"], ["cat"]], 0.5)
    assert timed_out and rc == 124 and time.monotonic() - t0 < 10
    rc, out, timed_out = local.pipeline([["sh", "-c", "echo tar says no >&2; exit 2"], ["cat"]], 10)
    assert rc == 2 and "tar says no" in out and not timed_out
    assert local.pipeline([["/no/such/tool"]], 5)[0] == 127


# ---- host checks ---------------------------------------------------------------------------------
def test_podman_host_check_names_its_gotchas(tmp_path, monkeypatch):
    sub = tmp_path / "subuid"
    sub.write_text("someone:100000:65536\n")
    home = tmp_path / "home"
    env = {"USER": "cpuser", "XDG_RUNTIME_DIR": str(tmp_path)}
    monkeypatch.setattr("shutil.which", lambda t: f"/usr/bin/{t}")
    c = check_rootless(env, str(sub), str(sub), uid=1001, home=str(home))
    assert (c.outcome, c.gotcha) == ("failed", "podman-uidmap-setup") and "cpuser" in c.message
    sub.write_text("cpuser:100000:65536\n")
    assert check_rootless(env, str(sub), str(sub), uid=1001, home=str(home)).outcome == "passed"
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    if not os.access(str(ro), os.W_OK):   # root writes anywhere
        c = check_rootless({**env, "XDG_RUNTIME_DIR": str(ro)}, str(sub), str(sub), uid=1001, home=str(home))
        assert c.gotcha == "podman-runtime-dir"
    c = check_rootless({**env, "XDG_RUNTIME_DIR": str(tmp_path / "missing")}, str(sub), str(sub), uid=1001,
                       home=str(home))
    assert c.gotcha == "podman-runtime-dir"
    monkeypatch.setattr("shutil.which", lambda t: None)
    assert check_rootless(env, str(sub), str(sub), uid=1001, home=str(home)).gotcha == "podman-uidmap-setup"


def test_podman_graphroot_from_storage_conf(tmp_path):
    home = str(tmp_path)
    assert graphroot({}, home) == f"{home}/.local/share/containers/storage"
    conf = tmp_path / ".config" / "containers"
    conf.mkdir(parents=True)
    (conf / "storage.conf").write_text('[storage]\ndriver = "overlay"\nrootless_storage_path = "/local/$USER/st"\n')
    assert graphroot({"USER": "u"}, home) == "/local/u/st"


def test_charliecloud_host_check_needs_user():
    c = check_unprivileged({})
    assert (c.outcome, c.gotcha) == ("failed", "chrun-user-unset")
    assert check_unprivileged({"USER": "cpuser"}).outcome == "passed"


# ---- the catalog on the runtimes' own messages (ci/services/registry/RUNTIMES.md, this machine) ----
@pytest.mark.parametrize("text,stage,gotcha", [
    ("ch-run[28189]: error: $USER not set (ch-run.c:122)", "launch", "chrun-user-unset"),
    ("ch-run[28195]: error: can't mkdir: /var/tmp/contprobe-images/ch/base/no: Read-only file system "
     "(ch_misc.c:409 30)", "launch", "chrun-bind-target-missing"),
    ("ch-run[28208]: error: can't bind: source not found: /no/such/src (ch_core.c:104)", "launch",
     "chrun-bind-source-missing"),
    ("ch-run[28214]: error: unknown image type: /var/tmp/contprobe-images/base.sif (ch_core.c:278)", "launch",
     "chrun-unknown-image-type"),
    ("the path in $XDG_RUNTIME_DIR must be writable by the user\nError: runc: ... OCI permission denied", "launch",
     "podman-runtime-dir"),
    ('level=error msg="cannot find UID/GID for user nobody: no subuid ranges found for user \\"nobody\\" in '
     '/etc/subuid - check rootless mode in man pages."', "pull", "podman-uidmap-setup"),
    ("Error: writing blob: adding layer with blob \"sha256:8f48\": ApplyLayer stdout:  stderr: potentially "
     "insufficient UIDs or GIDs available in user namespace (requested 0:42 for /etc/gshadow)", "pull",
     "podman-uidmap-setup"),
    ("[cli_1]: write_line error; fd=8 buf=:cmd=init pmi_version=1 pmi_subversion=1\n:\nsystem msg for "
     "write_line failure : Bad file descriptor\n[cli_1]: Unable to write to PMI_fd", "launch", "pmi-fd-dropped"),
    ("Error: statfs /dev/mqueue: no such file or directory", "launch", "podman-ipc-mqueue"),
    ("Error: container-init binary not found on the host: stat /usr/libexec/podman/catatonit: no such file or "
     "directory", "launch", "podman-init-missing"),
    ("Error: could not find slirp4netns, the network namespace can't be configured: exec: \"slirp4netns\": "
     "executable file not found in $PATH", "launch", "podman-slirp-missing"),
    ("ch-fromhost: can't chmod u+w: /var/tmp/contprobe-images/rootfs/usr/local/lib", "build",
     "chfromhost-image-not-writable"),
    ("ch-fromhost: image not a directory: /var/tmp/contprobe-images/ch/base.sqfs", "build",
     "chfromhost-image-not-writable"),
    ("error: command failed with code 128: git commit -m 'ROOT'\nAuthor identity unknown", "pull",
     "chimage-git-identity"),
])
def test_runtime_messages_name_their_gotcha(text, stage, gotcha):
    assert catalog.match(text, stage) == gotcha


def test_every_runtime_has_an_inside_marker():
    from contprobe.inimage.context import INSIDE_MARKERS, container_info
    marked = {name for name, _, _ in INSIDE_MARKERS}
    assert {n.split("-")[0] for n in R.names()} <= marked
    assert container_info({"CH_RUNNING": "Weird Al Yankovic", "CONTPROBE_IMAGE": "/i.sqfs"}) == \
        ("/i.sqfs", "charliecloud")


def test_only_apptainer_and_singularity_build_definition_files():
    from contprobe.suite import UsageError
    for cls in (Podman, PodmanHPC, Charliecloud):
        with pytest.raises(UsageError, match="--runtime apptainer"):
            cls("/x", "1").build_argv("/t.sif", "/r.def", fakeroot=True)
    assert R.REGISTRY["apptainer"]("/usr/bin/apptainer", "1").build_argv("/t.sif", "/r.def")[1] == "build"


def test_a_failed_conversion_is_named_from_what_it_printed():
    """Every conversion (a registry pull, podman's import, Charliecloud's copy) fails the same way;
    a merge once left image.convert importing a name that no longer existed."""
    text = (ROOT_CORPUS / "registry" / "001-x509-no-ca-certificates-node.txt").read_text().split("---\n", 1)[1]
    exc = images.conversion_failed("docker://python", text)
    assert isinstance(exc, images.ConversionFailed) and exc.gotcha == "registry-ca-untrusted"
    assert str(exc).startswith("could not convert docker://python: FATAL:")
    assert images.conversion_failed("oras://x/y:1", "", timed_out=True).gotcha == "pull-stalled"
    assert images.conversion_failed("oras://x/y:1", "no idea\n").gotcha == catalog.UNKNOWN
