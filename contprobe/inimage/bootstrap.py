"""Start the probe suite inside a container: python3 /.contprobe/contprobe/inimage/bootstrap.py [opts] -- [pytest args].

Runs on the image's own Python (3.8+), standard library only, before anything else is imported:
- puts the harness directory (the parent of the staged contprobe package) on sys.path;
- uses the image's pytest when it is >= 7.0, else the pytest the harness brought along;
- binds this rank to its GPU (CUDA_VISIBLE_DEVICES from the local rank) before MPI or CUDA start,
  because setting it after `from mpi4py import MPI` or `hvd.init()` has no effect.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS = os.path.dirname(os.path.dirname(HERE))


def local_rank(env):
    from contprobe.inimage import rankvars  # importable once HARNESS is on sys.path
    return rankvars.local_rank(env)


def gpu_for(local, gpus, order):
    r = local % gpus
    return gpus - 1 - r if order == "reversed" else r


def pytest_usable():
    try:
        import pytest
    except ImportError:
        return False
    try:
        return int(pytest.__version__.split(".")[0]) >= 7
    except ValueError:
        return False


def main(argv):
    opts, sep, pytest_args = [], False, []
    for a in argv:
        if sep:
            pytest_args.append(a)
        elif a == "--":
            sep = True
        else:
            opts.append(a)
    settings = dict(o.split("=", 1) for o in opts if o.startswith("--") and "=" in o)
    # The script's own directory must not shadow stdlib or user modules (catalog, plugin, ...).
    if sys.path and os.path.abspath(sys.path[0]) == HERE:
        sys.path.pop(0)
    sys.path.insert(0, HARNESS)
    gpus = int(settings.get("--gpus-per-node", "0") or 0)
    if gpus > 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_for(local_rank(os.environ), gpus,
                                                         settings.get("--gpu-order", "natural")))
    brought = os.path.join(HARNESS, "pylib")
    source = "image"
    if not pytest_usable():
        if not os.path.isdir(brought):
            sys.stderr.write("contprobe: this image's Python has no pytest >= 7.0 and none was brought along\n")
            return 4
        sys.path.insert(1, brought)
        for name in [m for m in sys.modules if m == "pytest" or m.startswith(("_pytest", "pluggy"))]:
            del sys.modules[name]
        source = "brought by contprobe"
    import pytest
    os.environ["CONTPROBE_PYTEST_SOURCE"] = source
    sys.argv = [sys.argv[0]] + pytest_args  # what the report's command line shows
    rc = int(pytest.main(pytest_args))
    leave_mpi(rc)
    return rc


FINALIZE_S = 10     # how long a one-node MPI_Finalize may take before the rank leaves without it


def pmi_finalize(env):
    """PMI-1's finalize on the PMI socket Hydra gave this rank ("cmd=finalize" answered by
    "cmd=finalize_ack"): the proxy then forgets the socket instead of taking its close for a death.
    Hydra only: other process managers speak other wire protocols on their PMI_FD."""
    from contprobe.inimage import rankvars
    fd = env.get("PMI_FD", "")
    if rankvars.identify(env)[0] != "hydra" or not fd.isdigit():
        return
    import select
    try:
        os.write(int(fd), b"cmd=finalize\n")
        if select.select([int(fd)], [], [], 5.0)[0]:
            os.read(int(fd), 256)
    except (OSError, ValueError):
        pass


def leave_mpi(rc):
    """After the results are written, leave MPI through a barrier; finalize when every rank is on
    this node, else os._exit. Everything this rank reports is already on disk.

    One node: a rank that exits without MPI_Finalize closes its PMI socket unannounced, and Hydra's
    proxy then kills the other ranks' process groups (pmip_cb.c: "A process died; kill the remaining
    processes"). Killed mid-exit, Apptainer's starter cannot stop its FUSE image driver, which lives
    on holding the proxy's output pipes: the launch never ends (7 of 10 two-rank launches on a loaded
    2-core machine; 0 of 10 with MPI_Finalize). A watchdog in C (faulthandler, which needs no GIL
    while MPI_Finalize holds it) leaves after FINALIZE_S should finalize ever hang.
    Several nodes: MPICH 4.0.x over UCX's TCP transport hangs in MPI_Finalize (openucx/ucx#2254;
    5-6 of 6 runs on the 4-node cluster, ci/services/cluster/README.md); there the barrier and
    os._exit stay (0 of 12). Under Hydra the rank first sends PMI's own finalize, which is all the
    proxy needs to let it go (pmip_pmi_v1.c fn_finalize), without MPI's UCX teardown.
    """
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None:
        return
    one_node = False
    try:
        if not mpi.Is_initialized() or mpi.Is_finalized():
            return
        world = mpi.COMM_WORLD
        node = world.Split_type(mpi.COMM_TYPE_SHARED)
        one_node = node.Get_size() == world.Get_size()
        node.Free()
        world.Barrier()
    except Exception:  # noqa: BLE001  (a broken MPI still must not keep the rank alive)
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if not one_node:
        pmi_finalize(os.environ)
    else:
        import faulthandler
        try:
            faulthandler.dump_traceback_later(FINALIZE_S, exit=True, file=open(os.devnull, "w"))
            mpi.Finalize()
        except Exception:  # noqa: BLE001
            pass
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
