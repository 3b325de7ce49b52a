import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# `python -m rnncli` in a subprocess must import the installed rnncli (with its compiled kernel), as
# this process does, not the source tree in the working directory (Python >= 3.11 honours this).
os.environ["PYTHONSAFEPATH"] = "1"

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_NPY = ROOT / "sample_data" / "sines.npy"
SAMPLE_CSV = ROOT / "sample_data" / "sines.csv"


@pytest.fixture
def sample_npy() -> Path:
    return SAMPLE_NPY


@pytest.fixture
def sample_csv() -> Path:
    return SAMPLE_CSV
