import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_NPY = ROOT / "sample_data" / "sines.npy"
SAMPLE_CSV = ROOT / "sample_data" / "sines.csv"


@pytest.fixture
def sample_npy() -> Path:
    return SAMPLE_NPY


@pytest.fixture
def sample_csv() -> Path:
    return SAMPLE_CSV
