import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# The data mirror (data/mirror.py) is the papers' sample files beside the repository when they are there;
# tests that need it skip without it (the ``shared_data`` fixture).
_SHARED = Path(os.environ.get("TVACCINE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
if _SHARED.is_dir():
    os.environ.setdefault("TVACCINE_DATA", str(_SHARED))
# The tests run tiny models, whose matmuls are far too small to gain from a second thread: on
# the 2-core CI machine one thread is several times faster for them.
torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    """The sample files of the papers' datasets, kept outside the repository (``../shared/data``)."""
    if not _SHARED.is_dir():
        pytest.skip(f"shared data not found at {_SHARED}")
    return _SHARED
