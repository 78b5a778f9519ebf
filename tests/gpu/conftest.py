"""Slow tier: needs a CUDA GPU (full-size random-weight models). Skipped, with the reason, everywhere else."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device here: the gpu tier runs on an H100 (see bench/RESULTS.md)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
