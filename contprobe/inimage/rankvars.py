"""What each launcher tells its ranks through the environment: one table, read inside images and by
the host's launcher backends alike. Python 3.8, standard library only.

A new launcher adds one row here and one module in contprobe/launchers/.
"""
from typing import Dict, NamedTuple, Optional, Tuple


class RankVars(NamedTuple):
    launcher: str          # the launcher backend's name (contprobe/launchers/<name>.py)
    rank: str
    size: str
    local_rank: str
    size_fallback: str = ""
    local_fallback: str = "PMI_LOCAL_RANK"


# First match wins. PALS sets PMI_* too, so its own variables are checked before plain PMI. Hydra
# started through Slurm (-launcher slurm) leaves its proxies' SLURM_PROCID (a node index) in every
# rank, so PMI_RANK is read before SLURM_PROCID; `identify` then tells srun's PMI from Hydra's.
TABLE: Tuple[RankVars, ...] = (
    RankVars("pals", "PALS_RANKID", "PMI_SIZE", "PALS_LOCAL_RANKID", "PALS_SIZE"),
    RankVars("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    RankVars("hydra", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    RankVars("srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NPROCS"),
)
BY_NAME: Dict[str, RankVars] = {v.launcher: v for v in TABLE}


def _int(env, name: str) -> Optional[int]:
    try:
        return int(env.get(name, "")) if name else None
    except ValueError:
        return None


def identify(env) -> Tuple[str, int, int, int]:
    """(launcher, rank, size, local rank) from a process's environment; ("none", 0, 1, 0) alone."""
    for v in TABLE:
        if v.rank in env:
            rank = _int(env, v.rank) or 0
            size = _int(env, v.size)
            size = size if size is not None else (_int(env, v.size_fallback) or 1)
            local = _int(env, v.local_rank)
            local = local if local is not None else _int(env, v.local_fallback)
            name = v.launcher
            if name == "hydra" and env.get("SLURM_PROCID") == env.get("PMI_RANK") \
                    and env.get("SLURM_NTASKS") == env.get("PMI_SIZE"):
                name = "srun"   # srun --mpi=pmi2 sets PMI_RANK for the MPI library too
                local = local if local is not None else _int(env, "SLURM_LOCALID")
            return name, rank, size, local if local is not None else rank
    return "none", 0, 1, 0


def local_rank(env) -> int:
    return identify(env)[3]
