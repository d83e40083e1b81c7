"""How many threads the CPU's BLAS (and OpenMP) may use: PyTorch's set_num_threads/get_num_threads.

Set through threadpoolctl, which reaches the BLAS NumPy loaded (OpenBLAS, MKL, BLIS) at run time,
unlike OPENBLAS_NUM_THREADS, which only counts before NumPy is imported. Why it matters: BLAS
threads that outnumber free cores spin against each other and against other processes; on a
loaded 2-core machine a small model trained 40 times slower with OpenBLAS's default threads than
with one (BENCHMARKS.md), and N ranks on one machine must share its cores.
"""

import os

__all__ = ["set_num_threads", "get_num_threads", "cores", "share"]

_limits = None  # the threadpoolctl limiter in force (kept so the limit stays set)


def set_num_threads(n):
    """Let BLAS and OpenMP use `n` threads from now on (a positive integer)."""
    global _limits
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, got {n!r}")
    from threadpoolctl import threadpool_limits

    _limits = threadpool_limits(limits=n)


def get_num_threads():
    """The threads BLAS may use now (the largest count of the BLAS libraries loaded; 1 if none is)."""
    from threadpoolctl import threadpool_info

    counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(counts) if counts else 1


def cores():
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def share(local_ranks=1):
    """The cores each of `local_ranks` processes on this machine may take (at least one)."""
    return max(1, cores() // max(1, local_ranks))
