"""Regenerate the sample series: python sample_data/make_sample_data.py (numpy only, seeded)."""

from pathlib import Path

import numpy as np

here = Path(__file__).parent
rng = np.random.default_rng(2024)
t = np.arange(500) * 0.05
series = np.stack([np.sin(t), 0.5 * np.sin(2.3 * t + 1.0), np.cos(0.7 * t) * np.exp(-t / 40)], axis=1) + rng.normal(
    0, 0.05, size=(500, 3)
)
np.save(here / "sines.npy", series.astype(np.float32))
np.savetxt(here / "sines.csv", series.astype(np.float32), delimiter=",", fmt="%.9g", header="a,b,c", comments="")
