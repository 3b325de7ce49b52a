"""rnncli against golden outputs made by the real PyTorch, Keras 3 and onnxruntime (see README.md here)."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rnncli.cli import main
from rnncli.weights import from_state_dict

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.npz"))
TOLERANCE = 1e-5


def load_case(path):
    with np.load(path, allow_pickle=False) as data:
        case = {key: data[key] for key in data.files}
    config = json.loads(str(case.pop("config")))
    return case, config


def model_of(case, config):
    tensors = {k: v for k, v in case.items() if k.startswith(("weight_", "bias_"))}
    settings = {
        "activation": config["activation"],
        "merge": config["merge"],
        "reverse": config["reverse"],
        "clip": config["clip"],
    }
    return from_state_dict(tensors, settings, "golden")


def test_the_golden_set_covers_what_the_issue_asks():
    configs = [load_case(path)[1] for path in GOLDEN]
    sources = {c["source"] for c in configs}
    assert sources == {"torch", "keras", "onnxruntime"}
    assert {c["layers"] for c in configs} >= {1, 2, 3}
    assert {c["merge"] for c in configs if c["bidirectional"]} == {"concat", "sum", "mul", "ave"}
    assert any(c["reverse"] for c in configs) and any(not c["bias"] for c in configs)
    assert {c["activation"] for c in configs} >= {"tanh", "relu", "sigmoid"}
    cases = [load_case(path)[0] for path in GOLDEN]
    assert any("initial_state" in c for c in cases) and any("lengths" in c for c in cases)
    assert any(c["x"].ndim == 2 for c in cases) and any(c["x"].ndim == 3 for c in cases)
    assert len(GOLDEN) >= 50


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_library_matches_the_framework(path):
    case, config = load_case(path)
    model = model_of(case, config)
    assert model.units == tuple(config["units"]) and model.directions == (2 if config["bidirectional"] else 1)
    out = model.forward(
        case["x"], initial_state=case.get("initial_state"), lengths=case.get("lengths"), time_major=config["time_major"]
    )
    np.testing.assert_allclose(out.sequence, case["sequence"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(out.final, case["final"], rtol=0, atol=TOLERANCE)
    if "state" in case:
        np.testing.assert_allclose(out.state_tensor(), case["state"], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_cli_options_match_the_framework(path, tmp_path):
    """The same cases through `rnncli run` with the options a user would type."""
    case, config = load_case(path)
    np.save(tmp_path / "x.npy", case["x"])
    np.savez(tmp_path / "w.npz", **{k: v for k, v in case.items() if k.startswith(("weight_", "bias_"))})
    args = [
        "run",
        str(tmp_path / "x.npy"),
        "--weights",
        str(tmp_path / "w.npz"),
        "--activation",
        config["activation"],
        "--return",
        "both",
        "-o",
        str(tmp_path / "out.npz"),
        "--save-state",
        str(tmp_path / "state.npz"),
        "-q",
    ]
    if config["bidirectional"]:
        args += ["--merge", config["merge"]]
    if config["reverse"]:
        args += ["--reverse"]
    if config["clip"] is not None:
        args += ["--clip", str(config["clip"])]
    if config["time_major"]:
        args += ["--time-major"]
    for name, option in (("initial_state", "--initial-state"), ("lengths", "--lengths")):
        if name in case:
            np.save(tmp_path / f"{name}.npy", case[name])
            args += [option, str(tmp_path / f"{name}.npy")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_allclose(out["sequence"], case["sequence"], rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(out["final"], case["final"], rtol=0, atol=TOLERANCE)
    if "state" in case:
        with np.load(tmp_path / "state.npz") as state:
            saved = np.stack([state[f"state_{i}"] for i in range(len(state.files))])
        np.testing.assert_allclose(saved, case["state"], rtol=0, atol=TOLERANCE)
