"""cupy._core, faked: only what gpunn reaches for."""
