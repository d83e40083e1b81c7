"""What the tools of the `gpunn` command share: option types and a description of the machine.

`gpunn.cli` and `gpunn.cli.bench` both import this module, neither imports the other for it, and the
library never imports it (tests/test_import_rules.py).
"""

import argparse
import importlib.metadata
import os
import platform

# --- option types: each rejects an impossible value at parse time with a message naming it -------------


def _int_at_least(minimum, what):
    """An argparse type: an integer >= minimum, with a message naming the value it got."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")


def _number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text):
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def non_negative_float(text):
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


# --- the machine (`gpunn info` prints it, `gpunn bench` records it with its numbers) ------------------------


def version(dist):
    """The installed version of distribution `dist`, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model():
    """The CPU's marketing name where Linux gives it, else what `platform` knows (may be None)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def memory_bytes():
    """Total physical memory in bytes, or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None


def thread_pools():
    """threadpoolctl's view of the loaded native thread pools (BLAS, OpenMP), or None without it."""
    try:
        import threadpoolctl
    except ImportError:
        return None
    import numpy  # noqa: F401  (load NumPy's BLAS so threadpoolctl can see it)

    return threadpoolctl.threadpool_info()


def numpy_build_blas():
    """NumPy's build record of its BLAS and LAPACK ({name: {...}}), or a sentence saying why not."""
    import numpy

    try:
        deps = numpy.show_config(mode="dicts").get("Build Dependencies", {})
        return {k: deps[k] for k in ("blas", "lapack") if k in deps}
    except Exception as exc:  # older or unusual NumPy builds: no mode="dicts"
        return f"unavailable ({exc})"
