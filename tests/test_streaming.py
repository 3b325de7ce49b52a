"""Block-by-block processing of long .npy inputs: same numbers as a whole-array run, valid files, nothing partial."""

import io

import numpy as np
import pytest
from click.testing import CliRunner

from rnncli.cli import main
from rnncli.errors import InputError, OutputError
from rnncli.io import NpyWriter, atomic_output, load_array, write_array
from rnncli.pipeline import ModelOptions, RunSettings, build_model, run_loaded, run_streamed, streamable_shape


@pytest.fixture
def long_input(tmp_path):
    x = np.random.default_rng(0).normal(size=(1000, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return tmp_path / "x.npy"


@pytest.mark.parametrize("block_steps", [1, 7, 256, 5000])
@pytest.mark.parametrize("return_mode, fmt", [("sequence", "npy"), ("sequence", "csv"), ("final", "npy")])
@pytest.mark.parametrize("layers, dtype", [(1, "float32"), (2, "float64")])
def test_streamed_equals_whole_bit_for_bit(long_input, block_steps, return_mode, fmt, layers, dtype, monkeypatch):
    monkeypatch.setattr("rnncli.model.BLOCK_STEPS", block_steps)
    built = build_model(ModelOptions(units=(8,), layers=layers, dtype=dtype, init="torch"), 3)
    settings = RunSettings(return_mode=return_mode)
    streamed = io.BytesIO()
    result = run_streamed(built, str(long_input), streamed, settings, fmt)
    whole = run_loaded(built, load_array(long_input), settings)

    expected = io.BytesIO()
    write_array(expected, whole.items[return_mode], fmt)
    if fmt == "csv":
        assert streamed.getvalue() == expected.getvalue()
    else:
        np.testing.assert_array_equal(np.load(io.BytesIO(streamed.getvalue())), whole.items[return_mode])
    for a, b in zip(result.state, whole.state):
        np.testing.assert_array_equal(a, b)
    assert result.facts.output["items"] == whole.facts.output["items"]


def test_streamed_statistics_match_whole(long_input, monkeypatch):
    monkeypatch.setattr("rnncli.model.BLOCK_STEPS", 64)
    built = build_model(ModelOptions(units=(5,)), 3)
    streamed = run_streamed(built, str(long_input), io.BytesIO(), RunSettings(), "npy")
    whole = run_loaded(built, load_array(long_input), RunSettings())
    a, b = streamed.facts.output["stats"], whole.facts.output["stats"]
    assert a["min"] == b["min"] and a["max"] == b["max"] and a["saturated"] == b["saturated"]
    assert a["mean"] == pytest.approx(b["mean"], rel=1e-9)


def test_npy_writer_with_unknown_rows_patches_the_header(tmp_path):
    blocks = [np.ones((3, 4)), np.zeros((5, 4)), np.full((1, 4), 2.0)]
    with atomic_output(tmp_path / "o.npy") as fp:
        writer = NpyWriter(fp, np.float64, 4)
        for block in blocks:
            writer.write(block)
        writer.close()
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), np.concatenate(blocks))


def test_npy_writer_refuses_a_wrong_row_count():
    writer = NpyWriter(io.BytesIO(), np.float32, 2, rows=5)
    writer.write(np.ones((3, 2)))
    with pytest.raises(OutputError, match=r"wrote 3 rows but the \.npy header promised 5"):
        writer.close()


def test_streamable_shapes(tmp_path):
    np.save(tmp_path / "one.npy", np.arange(10.0))
    np.save(tmp_path / "f.npy", np.asfortranarray(np.ones((4, 3))))
    np.save(tmp_path / "b.npy", np.ones((2, 4, 3)))
    assert streamable_shape(str(tmp_path / "one.npy")) == (10, 1)
    assert streamable_shape(str(tmp_path / "f.npy")) is None
    assert streamable_shape(str(tmp_path / "b.npy")) is None
    assert streamable_shape("-") is None


def test_a_failure_mid_stream_leaves_no_file(long_input, tmp_path, monkeypatch):
    out = tmp_path / "out.npy"
    out.write_bytes(b"precious")
    calls = {"n": 0}
    from rnncli import model as model_module

    original = model_module.RNN.forward

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise InputError("simulated failure in the third block")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(model_module.RNN, "forward", failing)
    monkeypatch.setattr("rnncli.model.BLOCK_STEPS", 100)
    result = CliRunner().invoke(main, ["run", str(long_input), "--units", "4", "-o", str(out)])
    assert result.exit_code == 1 and "simulated failure" in result.stderr
    assert calls["n"] == 3
    assert out.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_truncated_input_is_refused_before_writing(tmp_path):
    data = io.BytesIO()
    np.save(data, np.ones((1000, 3), np.float32))
    (tmp_path / "cut.npy").write_bytes(data.getvalue()[:-100])
    result = CliRunner().invoke(main, ["run", str(tmp_path / "cut.npy"), "-o", str(tmp_path / "o.npy")])
    assert result.exit_code == 1 and "truncated" in result.stderr
    assert not (tmp_path / "o.npy").exists()


@pytest.fixture
def long_csv(tmp_path):
    x = np.random.default_rng(1).normal(size=(1000, 3)).astype(np.float32)
    lines = ["# a comment before the header", "a,b,c"]
    for i, row in enumerate(x):
        lines.append(",".join(f"{v:.9g}" for v in row) + ("  # note" if i == 500 else ""))
        if i == 300:
            lines.append("")
    (tmp_path / "x.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "x.csv"


@pytest.mark.parametrize("block_steps", [7, 64, 5000])
@pytest.mark.parametrize("return_mode, fmt", [("sequence", "npy"), ("sequence", "csv"), ("final", "npy")])
def test_csv_streams_in_blocks_bit_for_bit(long_csv, block_steps, return_mode, fmt, monkeypatch, tmp_path):
    monkeypatch.setattr("rnncli.model.BLOCK_STEPS", block_steps)
    built = build_model(ModelOptions(units=(6,), layers=2, init="torch"), 3)
    settings = RunSettings(return_mode=return_mode)
    with atomic_output(tmp_path / f"streamed.{fmt}") as fp:  # a seekable file: the .npy header comes last
        result = run_streamed(built, str(long_csv), fp, settings, fmt)
    whole = run_loaded(built, load_array(long_csv), settings)
    expected = whole.items[return_mode]
    if fmt == "csv":
        expected_bytes = io.BytesIO()
        write_array(expected_bytes, expected, "csv")
        assert (tmp_path / "streamed.csv").read_bytes() == expected_bytes.getvalue()
    else:
        np.testing.assert_array_equal(np.load(tmp_path / f"streamed.{fmt}"), expected)
    assert result.facts.input["shape"] == [1000, 3] and result.facts.input["format"] == "csv"


def test_csv_stream_names_a_ragged_row_in_a_later_block(tmp_path, monkeypatch):
    monkeypatch.setattr("rnncli.model.BLOCK_STEPS", 10)
    rows = ["1,2,3"] * 25 + ["1,2"] + ["1,2,3"] * 5
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "out.npy").write_bytes(b"precious")
    result = CliRunner().invoke(main, ["run", str(tmp_path / "r.csv"), "-o", str(tmp_path / "out.npy")])
    assert result.exit_code == 1
    assert "r.csv: line 26 has 2 columns but line 21 has 3" in result.stderr
    assert (tmp_path / "out.npy").read_bytes() == b"precious"


def test_csv_to_stdout_npy_is_read_whole_and_still_right(long_csv):
    streamed_file = CliRunner().invoke(main, ["run", str(long_csv), "--units", "4", "-q", "--to", "csv"])
    whole_stdout = CliRunner().invoke(main, ["run", str(long_csv), "--units", "4", "-q"])
    assert whole_stdout.exit_code == 0 and streamed_file.exit_code == 0
    from_npy = np.load(io.BytesIO(whole_stdout.stdout_bytes))
    np.testing.assert_array_equal(np.loadtxt(io.StringIO(streamed_file.stdout), delimiter=",", dtype=np.float32),
                                  from_npy)
