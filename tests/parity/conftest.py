"""The PyTorch-parity tests: gpunn and torch given the same calls on the same data must agree.

They have no other reference, so each module of this folder is collected only where torch
imports, and skipped with the reason in the summary otherwise (a test elsewhere that also checks
a NumPy or hard-coded reference skips its torch comparison on its own). The check sits in the
collector, not at this file's top: a conftest that raises Skipped while pytest starts up (when
this folder is named on the command line) stops the run instead of skipping.
"""

import pytest


class _NeedsTorch(pytest.Module):
    def collect(self):
        pytest.importorskip("torch", reason="PyTorch is not installed: the parity tests compare gpunn against it")
        return super().collect()


def pytest_pycollect_makemodule(module_path, parent):
    return _NeedsTorch.from_parent(parent, path=module_path)
