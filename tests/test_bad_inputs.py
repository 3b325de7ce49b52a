"""Hostile and broken inputs to `rnncli run`: every case fails with its exit code and one line, and loses nothing.

Each case runs with existing files at every output path it names; afterwards they must be byte-for-byte
what they were, and no temporary file may be left next to them.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from rnncli.cli import main

PRECIOUS = b"precious bytes that must survive"


def npy_bytes(array, allow_pickle=False):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def npy_with_header(header: str, body: bytes = b"") -> bytes:
    """A version 1.0 .npy file with this exact header text (padded the way numpy pads it)."""
    text = header.encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + body


def npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def encrypted(data: bytes) -> bytes:
    """Set the 'encrypted' flag of every member (local header and central directory)."""
    buffer = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = buffer.find(signature)
        while start != -1:
            buffer[start + offset] |= 1
            start = buffer.find(signature, start + 4)
    return bytes(buffer)


def renamed_member(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new)
    return data.replace(old, new)


GOOD = npy_bytes(np.ones((10, 3), np.float32))
HEADER_END = GOOD.index(b"\n") + 1


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_case(workdir, args, files=None, stdin=None, outputs=("out.npy",)):
    """Run `rnncli run ARGS` with `files` created first and a precious file at every output path."""
    for name, content in (files or {}).items():
        path = workdir / name
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content)
    for name in outputs:
        (workdir / name).write_bytes(PRECIOUS)
    result = CliRunner().invoke(main, ["run", *map(str, args)], input=stdin, prog_name="rnncli")
    for name in outputs:
        assert (workdir / name).read_bytes() == PRECIOUS, f"the failed run touched {name}"
    leftovers = [p.name for p in workdir.iterdir() if p.name.endswith(".part")]
    assert leftovers == [], f"temporary files left behind: {leftovers}"
    return result


def the_line(result):
    """The one line a failure prints on stderr (nothing on stdout, no traceback)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rnncli: error: "), lines[0]
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert lines[0].isprintable(), repr(lines[0])
    assert result.stdout_bytes == b""
    return lines[0]


# Bad data files: exit 1, one line naming the file, the position where there is one, and the fix.
# (case id, files to create, extra arguments, stdin, pattern the line must match)
BAD_DATA = [
    ("missing file", {}, ["nope.npy"], None, r"nope\.npy: no such file; check the path"),
    ("directory", {"d.npy": None}, ["d.npy"], None, r"d\.npy: is a directory; give a \.npy"),
    ("empty npy", {"e.npy": b""}, ["e.npy"], None, r"e\.npy: not a valid \.npy file \(header: EOF"),
    ("empty csv", {"e.csv": b""}, ["e.csv"], None, r"e\.csv: no data rows"),
    ("empty npz", {"e.npz": b""}, ["e.npz"], None, r"e\.npz: not a valid \.npz \(zip\) archive"),
    ("truncated npy body", {"t.npy": GOOD[:-7]}, ["t.npy"], None,
     r"t\.npy: truncated \.npy: the header promises shape \(10, 3\) float32 \(120 bytes\) but only 113 bytes"),
    ("truncated npy header", {"t.npy": GOOD[:30]}, ["t.npy"], None,
     r"t\.npy: not a valid \.npy file \(header: EOF: reading array header"),
    ("absurd shape", {"a.npy": npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (10**12,), }")},
     ["a.npy"], None, r"a\.npy: not a valid \.npy file"),
    ("huge shape", {"h.npy": npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (999999999999, 3), }")},
     ["h.npy"], None, r"h\.npy: truncated \.npy: the header promises shape \(999999999999, 3\)"),
    ("impossible shape", {"i.npy": npy_with_header(f"{{'descr':'<f8','fortran_order':False,'shape':(0, {2**70})}}")},
     ["i.npy"], None, r"i\.npy: not a valid \.npy file \(header: shape .* is larger than any array can be\)"),
    ("negative shape", {"n.npy": npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 3), }")},
     ["n.npy"], None, r"n\.npy: not a valid \.npy file \(header: negative dimension in shape \(-1, 3\)\)"),
    ("65-D shape", {"m.npy": npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }"
                                              % ("1, " * 65))}, ["m.npy"], None, r"65 dimensions, more than"),
    ("malformed header", {"m.npy": npy_with_header("{'descr': <f4, 'fortran_order': False")}, ["m.npy"], None,
     r"m\.npy: not a valid \.npy file \(header: "),
    ("unbalanced header", {"u.npy": npy_with_header("{'descr': '<f4', 'shape': (3,")}, ["u.npy"], None,
     r"u\.npy: not a valid \.npy file"),
    ("header keys", {"k.npy": npy_with_header("{'descr': '<f4', 'shape': (3,), 'evil': 1}")}, ["k.npy"], None,
     r"k\.npy: not a valid \.npy file \(header: Header does not contain the correct keys"),
    ("expression in header",
     {"x.npy": npy_with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (10**15, 3), }")}, ["x.npy"], None,
     r"x\.npy: not a valid \.npy file \(header: \{'descr': '<f8', 'fortran_order': False, 'shape': \(10\*\*15, 3\), "
     r"\} is not a dict of plain values like \{'descr': '<f4', 'fortran_order': False, 'shape': \(500, 3\)\}\); "
     r"re-save it"),
    ("code in header", {"c.npy": npy_with_header("{'descr': __import__('os').system('touch pwned'), "
                                                 "'fortran_order': False, 'shape': (3,)}")}, ["c.npy"], None,
     r"c\.npy: not a valid \.npy file"),
    ("pickled object array", {"o.npy": npy_bytes(np.array([{"a": 1}], dtype=object), allow_pickle=True)},
     ["o.npy"], None, r"o\.npy: holds Python objects \(a pickled array\), which rnncli never loads"),
    ("pickled array in npz", {"o.npz": npz_bytes(x=np.array([None, 1], dtype=object))}, ["o.npz"], None,
     r"o\.npz\[x\]: holds Python objects"),
    ("complex", {"c.npy": npy_bytes(np.zeros((4, 2), np.complex64))}, ["c.npy"], None,
     r"c\.npy: dtype complex64 is not a real number type"),
    ("unicode strings", {"s.npy": npy_bytes(np.array([["a", "b"]]))}, ["s.npy"], None, r"dtype <U1 is not a real"),
    ("byte strings", {"s.npy": npy_bytes(np.array([[b"a"]]))}, ["s.npy"], None, r"dtype \|S1 is not a real"),
    ("structured", {"s.npy": npy_bytes(np.zeros(3, [("a", "<f4"), ("b", "<f4")]))}, ["s.npy"], None,
     r"s\.npy: dtype .* is not a real number type"),
    ("datetime", {"t.npy": npy_bytes(np.zeros(3, "M8[s]"))}, ["t.npy"], None, r"dtype datetime64\[s\] is not"),
    ("0-D", {"z.npy": npy_bytes(np.float32(3))}, ["z.npy"], None, r"z\.npy: a 0-D array of shape \(\); expected"),
    ("4-D", {"f.npy": npy_bytes(np.zeros((2, 2, 2, 2)))}, ["f.npy"], None, r"a 4-D array of shape \(2, 2, 2, 2\)"),
    ("5-D", {"f.npy": npy_bytes(np.zeros((1, 2, 1, 2, 1)))}, ["f.npy"], None, r"a 5-D array of shape"),
    ("no timesteps", {"e.npy": npy_bytes(np.zeros((0, 3)))}, ["e.npy"], None, r"shape \(0, 3\) has no timesteps"),
    ("ragged csv", {"r.csv": b"a,b\n1,2\n3,4,5\n"}, ["r.csv"], None,
     r"r\.csv: line 3 has 3 columns but line 2 has 2; every row needs the same number of values"),
    ("non-numeric cell", {"n.csv": b"a,b\n1,2\n3,oops\n"}, ["n.csv"], None,
     r"n\.csv: line 3, column 2: 'oops' is not a number; fix the cell"),
    ("bad cell in the first row", {"n.csv": b"1,x\n2,3\n"}, ["n.csv"], None, r"line 1, column 2: 'x' is not a number"),
    ("underscore number", {"n.csv": b"1,2\n1_000,3\n"}, ["n.csv"], None, r"line 2, column 1: '1_000' is not"),
    ("escape codes in a cell", {"x.csv": b"1,2\n3,\x1b[2J\x1b[31mred\n"}, ["x.csv"], None,
     r"line 2, column 2: '\\x1b\[2J\\x1b\[31mred' is not a number"),
    ("only a header", {"h.csv": b"a,b\n"}, ["h.csv"], None, r"h\.csv: only a header row, no data rows"),
    ("not utf-8", {"b.csv": b"1,2\n\xff\xfe,3\n"}, ["b.csv"], None, r"b\.csv: line 2 is not UTF-8 text \(byte 1\)"),
    ("junk .npy", {"j.npy": b"\x00junk" * 20}, ["j.npy"], None, r"j\.npy: not a valid \.npy file \(header: the magic"),
    ("junk .npz", {"j.npz": b"\x00junk" * 20}, ["j.npz"], None, r"j\.npz: not a valid \.npz \(zip\) archive"),
    ("npz without arrays", {"e.npz": npz_bytes()}, ["e.npz"], None, r"e\.npz: the \.npz archive holds no arrays"),
    ("npz needs a key", {"two.npz": npz_bytes(a=np.ones(3), b=np.ones(3))}, ["two.npz"], None,
     r"two\.npz: the archive holds 2 arrays \(a, b\); choose one with --key NAME"),
    ("npz missing key", {"two.npz": npz_bytes(a=np.ones(3), b=np.ones(3))}, ["two.npz", "--key", "c"], None,
     r"two\.npz: no array 'c' in the archive; it holds: a, b"),
    ("newline in a member name",
     {"n.npz": renamed_member(npz_bytes(ab=np.ones(3), b=np.ones(3)), b"ab.npy", b"a\n.npy")}, ["n.npz"], None,
     r"n\.npz: the archive holds 2 arrays \(a\\n, b\); choose one"),
    ("encrypted member", {"x.npz": encrypted(npz_bytes(x=np.ones(3)))}, ["x.npz"], None,
     r"x\.npz\[x\]: the member is encrypted"),
    ("corrupt member", {"c.npz": npz_bytes(x=np.ones(3)).replace(b"NUMPY", b"NUMPZ")}, ["c.npz"], None,
     r"c\.npz\[x\]: (not a valid \.npy|corrupt archive member)"),
    ("unknown extension", {"d.parquet": b"PAR1"}, ["d.parquet"], None,
     r"d\.parquet: unknown extension '\.parquet'; use \.npy, \.npz, \.csv, \.tsv or \.txt, or say the format with"),
    ("no extension", {"data": b"1,2\n"}, ["data"], None, r"data: unknown extension ''"),
    ("empty stdin", {}, ["-"], b"", r"<stdin>: no data \(the input is empty\)"),
    ("garbage stdin", {}, ["-"], b"\x00\x01\xff\xfe garbage", r"<stdin>: byte 2 is not UTF-8 text"),
    ("truncated npy on stdin", {}, ["-"], GOOD[:-1], r"<stdin>: truncated \.npy"),
    ("text on stdin", {}, ["-"], b"hello world\n", r"<stdin>: only a header row"),
    ("npy header only on stdin", {}, ["-"], GOOD[:HEADER_END], r"<stdin>: truncated \.npy"),
]  # fmt: skip


@pytest.mark.parametrize("files, args, stdin, pattern", [case[1:] for case in BAD_DATA], ids=[c[0] for c in BAD_DATA])
def test_bad_data_fails_with_one_line(workdir, files, args, stdin, pattern):
    result = run_case(workdir, [*args, "-o", "out.npy"], files, stdin)
    assert result.exit_code == 1, result.stderr
    assert re.search(pattern, the_line(result)), the_line(result)
    assert not (workdir / "pwned").exists()


# Bad or contradictory options: exit 2, one line, before any work.
BAD_OPTIONS = [
    ("units 0", ["--units", "0"],
     r"Invalid value for '--units': units must be positive, got 0 \(see 'rnncli run --help'\)"),
    ("units negative", ["--units", "8,-1"], r"units must be positive, got 8,-1"),
    ("units not a number", ["--units", "many"], r"'many' is not a size"),
    ("layers 0", ["--layers", "0"], r"Invalid value for '--layers'"),
    ("units and layers disagree", ["--units", "3,4", "--layers", "3"], r"--units gives 2 sizes but --layers is 3"),
    ("unknown activation", ["--activation", "swish"], r"Invalid value for '--activation': 'swish' is not one of"),
    ("unknown option", ["--unitz", "3"], r"No such option '--unitz'"),
    ("leak out of range", ["--leak", "2"], r"Invalid value for '--leak'"),
    ("on-nan unknown", ["--on-nan", "panic"], r"Invalid value for '--on-nan'"),
    ("both to csv", ["--return", "both", "--to", "csv"], r"--return both writes two arrays, which needs \.npz"),
    ("both into .csv", ["--return", "both", "-o", "x.csv"], r"--return both writes two arrays"),
    ("summary and data on stdout", ["--summary-json", "-", "-o", "-"], r"--summary-json - needs stdout, but the data"),
    ("bidirectional and reverse", ["--bidirectional", "--reverse"], r"reverse applies to one direction"),
    ("merge without bidirectional", ["--merge", "sum"], r"--merge sum combines the two directions of --bidirectional"),
    ("key with npy input", ["--key", "x"], r"--key x only applies to \.npz input"),
    ("output format unknown", ["-o", "out.parquet"], r"cannot tell the format of -o out\.parquet"),
    ("two outputs, one file", ["--save-state", "out.npy"], r"-o and --save-state both write out\.npy"),
    ("weights too big", ["--units", "2000000000"], r"need about [\d,.]+ GiB for the weights alone"),
    ("random options with weights", ["--weights", "w.npz", "--seed", "3"], r"--seed shape random weights"),
]  # fmt: skip


@pytest.mark.parametrize("args, pattern", [case[1:] for case in BAD_OPTIONS], ids=[c[0] for c in BAD_OPTIONS])
def test_bad_options_exit_2_with_one_line(workdir, sample_npy, args, pattern):
    files = {"w.npz": npz_bytes(weight_ih_l0=np.zeros((4, 3), np.float32), weight_hh_l0=np.eye(4, dtype=np.float32))}
    args = [*args, "-o", "out.npy"] if "-o" not in args else args
    result = run_case(workdir, [sample_npy, *args], files)
    assert result.exit_code == 2, result.stderr
    assert re.search(pattern, the_line(result)), the_line(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "rnncli: error: No such option '--bogus'. (see 'rnncli --help')\n"),
        (["bogus"], "rnncli: error: No such command 'bogus'. (see 'rnncli --help')\n"),
    ],
)
def test_bad_top_level_usage_is_one_line_too(args, message):
    result = CliRunner().invoke(main, args, prog_name="rnncli")
    assert result.exit_code == 2 and result.stderr == message and result.stdout == ""


def test_memory_guard_refuses_the_working_set_with_its_estimate(workdir, sample_npy, monkeypatch):
    """A model that fits but whose forward pass would not: refused before allocating (exit 2), with numbers."""
    monkeypatch.setattr("rnncli.pipeline.memory_budget", lambda: 1 << 20)
    for extra in ([], ["--reverse"], ["--bidirectional"]):  # read in blocks, read whole, two directions
        result = run_case(workdir, [sample_npy, "--units", "512", *extra, "-o", "out.npy"])
        assert result.exit_code == 2
        line = the_line(result)
        assert "512 units over 500 timesteps × 1 sequences need about" in line
        assert "GiB of working memory, more than the 0.0 GiB available; use fewer --units, or split" in line


def test_a_member_needing_more_than_the_memory_is_refused_with_its_estimate(workdir, monkeypatch):
    """Inflating a member takes about twice its size: more than half the memory budget is refused."""
    monkeypatch.setattr("rnncli.io.memory_budget", lambda: 1 << 20)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", npy_bytes(np.zeros(80_000)))  # 640 KB: less than the budget, more than half
    result = run_case(workdir, ["big.npz", "-o", "out.npy"], {"big.npz": buffer.getvalue()})
    assert result.exit_code == 1
    assert the_line(result) == (
        "rnncli: error: big.npz[x]: the member inflates to 625.1 KiB and reading it needs about 1.2 MiB, more than "
        "the 1.0 MiB of memory available (a zip bomb?); refusing to read it; free some memory or use a smaller file"
    )


def test_a_stream_larger_than_memory_is_refused(workdir):
    """A real pipe on stdin (not seekable), on a machine with 1 MiB to spare."""
    (workdir / "out.npy").write_bytes(PRECIOUS)
    script = "import rnncli.io, rnncli.cli; rnncli.io.memory_budget = lambda: 1 << 20; rnncli.cli.main()"
    command = [sys.executable, "-c", script, "run", "-", "-o", "out.npy"]
    proc = subprocess.run(command, input=b"1,2\n" * (1 << 19), capture_output=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (
        "rnncli: error: <stdin>: the stream holds more than the 0.0 GiB of memory available; "
        "save it to a .npy file and pass its path (long .npy files are read block by block)\n"
    )
    assert (workdir / "out.npy").read_bytes() == PRECIOUS


def test_huge_csv_is_refused_before_parsing(workdir, monkeypatch):
    """Text that must be read whole (stdin) is refused when parsing it would not fit; a CSV file streams."""
    monkeypatch.setattr("rnncli.io.memory_budget", lambda: 1 << 20)
    result = run_case(workdir, ["-", "--from", "csv", "-o", "out.npy"], stdin=b"1,2\n" * (1 << 17))
    assert result.exit_code == 1
    assert "<stdin>: 0 MiB of text needs about 0.0 GiB to parse, more than the 0.0 GiB available" in the_line(result)


# Weights that disagree with the input or with themselves: exit 1, both shapes named.
W_IH, W_HH = np.zeros((4, 3), np.float32), np.zeros((4, 4), np.float32)
BAD_WEIGHTS = [
    ("features", dict(weight_ih_l0=np.zeros((4, 5), np.float32), weight_hh_l0=W_HH), [],
     r"w\.npz take 5 input features but the data has 3; give data with 5 features or other weights"),
    ("units", dict(weight_ih_l0=W_IH, weight_hh_l0=np.zeros((5, 5), np.float32)), [],
     r"W_hh has shape \(5, 5\) but W_ih \(4, 3\) implies 4 units, so W_hh must be \(4, 4\)"),
    ("bias", dict(weight_ih_l0=W_IH, weight_hh_l0=W_HH, bias_ih_l0=np.zeros(3, np.float32),
                  bias_hh_l0=np.zeros(4, np.float32)), [],
     r"b_ih has shape \(3,\), expected \(4,\) to match W_ih \(4, 3\)"),
    ("layers", dict(weight_ih_l0=W_IH, weight_hh_l0=W_HH, weight_ih_l1=np.zeros((2, 5), np.float32),
                    weight_hh_l1=np.zeros((2, 2), np.float32)), [], r"layer 1: W_ih has shape \(2, 5\), so it takes 5"),
    ("options", dict(weight_ih_l0=W_IH, weight_hh_l0=W_HH), ["--units", "8"], r"--units 8 but the file has 4"),
    ("integer weights", dict(weight_ih_l0=W_IH.astype(np.int32), weight_hh_l0=W_HH), [],
     r"weight_ih_l0 has dtype int32; weights must be float32 or float64"),
    ("unknown names", dict(weight_ih_l0=W_IH, weight_hh_l0=W_HH, kernel=W_IH), [], r"unexpected tensor names kernel"),
    ("not json settings", dict(weight_ih_l0=W_IH, weight_hh_l0=W_HH, __rnncli__=np.array("{oops")), [],
     r"the __rnncli__ entry is not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize("tensors, args, pattern", [c[1:] for c in BAD_WEIGHTS], ids=[c[0] for c in BAD_WEIGHTS])
def test_weights_that_disagree_name_both_shapes(workdir, sample_npy, tensors, args, pattern):
    result = run_case(
        workdir, [sample_npy, "--weights", "w.npz", *args, "-o", "out.npy"], {"w.npz": npz_bytes(**tensors)}
    )
    assert result.exit_code == 1, result.stderr
    assert re.search(pattern, the_line(result)), the_line(result)


# Outputs that cannot be written are refused before the run, and never half-written.


def test_missing_output_directory_is_refused_before_the_run(workdir, sample_npy, monkeypatch):
    def forward_must_not_run(*args, **kwargs):
        raise AssertionError("the run started although an output cannot be written")

    monkeypatch.setattr("rnncli.pipeline.timed_forward", forward_must_not_run)
    for flag in ("--save-weights", "--save-state", "--summary-json"):
        result = run_case(workdir, [sample_npy, "-o", "out.npy", flag, "nowhere/x.npz"])
        assert result.exit_code == 1
        assert "nowhere/x.npz: directory" in the_line(result) and "does not exist; create it first" in the_line(result)


def test_output_that_is_a_directory(workdir, sample_npy):
    result = run_case(workdir, [sample_npy, "-o", "d.npy", "--save-weights", "out.npy"], {"d.npy": None})
    assert result.exit_code == 1
    assert "d.npy: is a directory; give a file name for the output" in the_line(result)
    result = run_case(workdir, [sample_npy, "-o", "out.npy", "--save-weights", "d.npy"])
    assert result.exit_code == 2
    assert "Invalid value for '--save-weights': File 'd.npy' is a directory" in the_line(result)


# NaN and Inf: reported; --on-nan decides.


@pytest.fixture
def nan_input(workdir):
    x = np.ones((20, 2), np.float32)
    x[7, 1] = np.nan
    x[9, 0] = np.inf
    np.save(workdir / "nan.npy", x)
    (workdir / "nan.csv").write_text("a,b\n" + "\n".join(",".join(map(str, row)) for row in x) + "\n")
    return workdir


@pytest.mark.parametrize("source", ["nan.npy", "nan.csv"])
def test_on_nan_error_stops_before_anything_is_written(nan_input, source):
    result = run_case(nan_input, [source, "--on-nan", "error", "-o", "out.npy", "--summary-json", "s.json"],
                      outputs=("out.npy", "s.json"))  # fmt: skip
    assert result.exit_code == 1
    assert (
        f"{source}: holds 1 NaN and 1 Inf values (the first at index (7, 1)) and --on-nan error stops there; "
        "clean the data, or use --on-nan warn" in the_line(result)
    )


@pytest.mark.parametrize("extra", [[], ["--reverse"]], ids=["read in blocks", "read whole"])
def test_on_nan_error_also_stops_on_a_non_finite_output(workdir, extra):
    # h_t = 10 x_t + 10 h_{t-1}, linear: past float32's range after ~38 steps
    np.save(workdir / "ones.npy", np.ones((50, 1), np.float32))
    ten = np.full((1, 1), 10, np.float32)
    np.savez(workdir / "w.npz", weight_ih_l0=ten, weight_hh_l0=ten)
    args = ["ones.npy", "--weights", "w.npz", "--activation", "linear", "--on-nan", "error", *extra]
    result = run_case(workdir, [*args, "-o", "out.npy"])
    assert result.exit_code == 1
    assert "the output holds 0 NaN and" in the_line(result) and "--on-nan error stops there" in the_line(result)


@pytest.mark.parametrize("policy, warned", [(None, True), ("warn", True), ("ignore", False)])
def test_on_nan_warn_and_ignore(nan_input, policy, warned):
    args = ["run", "nan.npy", "--units", "3", "-q", "-o", "new.npy", "--summary-json", "s.json"]
    result = CliRunner().invoke(main, args + (["--on-nan", policy] if policy else []))
    assert result.exit_code == 0, result.stderr
    assert ("warning: nan.npy holds 1 NaN and 1 Inf values" in result.stderr) is warned
    assert ("the output holds" in result.stderr) is warned
    assert np.isnan(np.load(nan_input / "new.npy")).any()
    summary = json.loads((nan_input / "s.json").read_text())
    assert (summary["input"]["nan"], summary["input"]["inf"]) == (1, 1)  # reported whatever the policy


def test_on_nan_error_with_a_clean_input_runs(workdir, sample_npy):
    result = CliRunner().invoke(main, ["run", str(sample_npy), "--on-nan", "error", "-q", "-o", "new.npy"])
    assert result.exit_code == 0 and np.load(workdir / "new.npy").shape == (500, 64)


# The same failures as a real process: one line, no warnings, no "Exception ignored".


@pytest.mark.parametrize(
    "files, args",
    [
        ({"u.npy": npy_with_header("{'descr': '<f4', 'shape': (3,")}, ["u.npy"]),
        ({"p2.npy": npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3L,)}", bytes(12))},
         ["p2.npy"]),
        ({}, ["-", "--units", "0"]),
    ],
    ids=["unbalanced header", "python 2 header", "bad option"],
)
def test_a_real_process_prints_one_line(tmp_path, files, args):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    proc = subprocess.run(
        [sys.executable, "-m", "rnncli", "run", *args, "-q"], cwd=tmp_path, input=b"", capture_output=True, check=False
    )
    stderr = proc.stderr.decode()
    if args[0] == "p2.npy":  # numpy reads Python 2 headers, with a warning rnncli keeps off the terminal
        assert proc.returncode == 0 and stderr == ""
        return
    assert proc.returncode in (1, 2)
    assert len(stderr.splitlines()) == 1 and stderr.startswith("rnncli: error: "), stderr


# Paths: rnncli writes only where the command line says.


def test_member_names_are_never_paths(tmp_path, monkeypatch):
    """Members named like paths are keys: reading them creates nothing, anywhere."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member in ("../../escape.npy", f"{tmp_path}/absolute.npy", "sub/dir.npy"):
            archive.writestr(member, npy_bytes(np.ones((4, 2), np.float32)))
    (work / "evil.npz").write_bytes(buffer.getvalue())
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    for key in ("../../escape", f"{tmp_path}/absolute", "sub/dir"):
        result = CliRunner().invoke(main, ["run", "evil.npz", "--key", key, "--units", "2", "-q", "-o", "out.npy"])
        assert result.exit_code == 0, result.stderr
        assert np.load(work / "out.npy").shape == (4, 2)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == sorted([*before, str(work / "out.npy")])


def test_an_output_symlink_is_replaced_not_followed(workdir, sample_npy):
    elsewhere = workdir / "elsewhere.npy"
    elsewhere.write_bytes(PRECIOUS)
    (workdir / "out.npy").symlink_to(elsewhere)
    result = CliRunner().invoke(main, ["run", str(sample_npy), "--units", "2", "-q", "-o", "out.npy"])
    assert result.exit_code == 0, result.stderr
    assert elsewhere.read_bytes() == PRECIOUS
    assert not (workdir / "out.npy").is_symlink()
    assert np.load(workdir / "out.npy").shape == (500, 2)


@pytest.mark.parametrize("extra", [[], ["--reverse"]], ids=["read in blocks", "read whole"])
def test_values_beyond_float32_are_reported_and_stop_an_on_nan_error_run(workdir, extra):
    """1e300 is finite in the float64 file but Inf in the float32 model: never silently."""
    x = np.ones((40_000, 2))
    x[33_000, 1] = 1e300
    np.save(workdir / "wide.npy", x)
    result = run_case(workdir, ["wide.npy", *extra, "--on-nan", "error", "-o", "out.npy"])
    assert result.exit_code == 1
    assert "wide.npy: holds 1 values beyond float32's range (the first at index (33000, 1))" in the_line(result)
    allowed = CliRunner().invoke(main, ["run", "wide.npy", *extra, "--dtype", "float64", "--on-nan", "error", "-q"])
    assert allowed.exit_code == 0, allowed.stderr


def test_overflow_is_one_warning_not_numpy_noise(tmp_path):
    """In a real process: rnncli's own warning, and none of numpy's RuntimeWarnings."""
    (tmp_path / "big.csv").write_text("1e39,2\n3,4\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rnncli", "run", "big.csv", "--units", "3", "-q", "-o", "out.npy"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    stderr = proc.stderr.decode()
    assert proc.returncode == 0
    assert "warning: big.csv holds 1 values beyond float32's range, which became ±Inf" in " ".join(stderr.split())
    assert "RuntimeWarning" not in stderr and "Traceback" not in stderr


# .npy headers: a message shows what the header holds, never the repr of a Python object.


@pytest.mark.parametrize(
    "shape, shown",
    [
        ("(10**15, 3)", "(10**15, 3)"),
        ("(rows, 3)", "(rows, 3)"),
        ("(int('3'),)", "(int('3'),)"),
        ("(lambda: 3,)", "(lambda: 3,)"),
        ("(f('\x1b[2J'),)", "(f('\\x1b[2J'),)"),
    ],
    ids=["operator", "name", "call", "lambda", "escape codes"],
)
def test_a_header_that_is_not_a_literal_is_shown_as_text(workdir, shape, shown):
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    result = run_case(workdir, ["h.npy", "-o", "out.npy"], {"h.npy": npy_with_header(header)})
    assert result.exit_code == 1
    line = the_line(result)
    assert "object at 0x" not in line and "<ast." not in line, line
    assert f"'shape': {shown}, }} is not a dict of plain values like {{'descr': '<f4'," in line, line


def test_a_header_longer_than_numpy_reads_is_refused_unread(workdir):
    data = b"\x93NUMPY\x02\x00" + (1 << 30).to_bytes(4, "little") + b"{" * 100
    result = run_case(workdir, ["long.npy", "-o", "out.npy"], {"long.npy": data})
    assert result.exit_code == 1
    assert "long.npy: not a valid .npy file (header: 1,073,741,824 bytes long, more than the 10,000" in the_line(result)


# Zip bombs: a member is refused before it is inflated when it would not fit in half the memory, when it inflates
# more than 200-fold to over 64 MiB, or when it is compressed with bzip2/LZMA, whose inflation zipfile cannot bound.


def zipped(members, compression=zipfile.ZIP_DEFLATED):
    """An archive of `members` (name -> bytes, or an int: that many zero bytes written in 1 MiB pieces)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in members.items():
            with archive.open(name, "w", force_zip64=True) as member:
                if isinstance(content, int):
                    header = io.BytesIO()
                    np.lib.format.write_array_header_1_0(
                        header, {"descr": "|u1", "fortran_order": False, "shape": (content,)}
                    )
                    member.write(header.getvalue())
                    for start in range(0, content, 1 << 20):
                        member.write(bytes(min(1 << 20, content - start)))
                else:
                    member.write(content)
    return buffer.getvalue()


def declaring(data: bytes, size: int) -> bytes:
    """The archive with every member's uncompressed size (local header and central directory) set to `size`."""
    buffer = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = buffer.find(signature)
        while start != -1:
            buffer[start + offset : start + offset + 4] = size.to_bytes(4, "little")
            start = buffer.find(signature, start + 4)
    return bytes(buffer)


def keras_archive(weights, compression=zipfile.ZIP_DEFLATED):
    return zipped({"config.json": b"{}", "model.weights.h5": weights}, compression)


BOMB_LINE = (
    r"the member inflates [\d,]+× \(2\.0 MiB from [\d.]+ KiB\), which looks like a zip bomb; refusing to read it; "
)


def test_a_zip_bomb_is_refused_by_its_compression_ratio(workdir, monkeypatch):
    monkeypatch.setattr("rnncli.io.ZIP_BOMB_SIZE", 1 << 20)  # the ratio rule without 64 MiB test files
    result = run_case(workdir, ["bomb.npz", "-o", "out.npy"], {"bomb.npz": zipped({"x.npy": 2 << 20})})
    assert result.exit_code == 1
    pattern = r"rnncli: error: bomb\.npz\[x\]: " + BOMB_LINE + r"if the data is genuine, re-save it with numpy\.savez"
    assert re.fullmatch(pattern + r" \(uncompressed\)", the_line(result)), the_line(result)


def test_the_same_data_stored_uncompressed_is_read(monkeypatch):
    from rnncli.io import load_array

    monkeypatch.setattr("rnncli.io.ZIP_BOMB_SIZE", 1 << 20)
    data = zipped({"x.npy": 2 << 20}, zipfile.ZIP_STORED)
    assert load_array(io.BytesIO(data), "npz", name="genuine.npz").array.shape == (2 << 20,)


def test_a_keras_zip_bomb_is_refused_as_a_weights_error(monkeypatch):
    pytest.importorskip("h5py")
    from rnncli.errors import WeightsError
    from rnncli.weights import load_weights

    monkeypatch.setattr("rnncli.io.ZIP_BOMB_SIZE", 1 << 20)
    with pytest.raises(WeightsError) as caught:
        load_weights(io.BytesIO(keras_archive(bytes(2 << 20))), name="bomb.keras")
    assert re.fullmatch(
        r"bomb\.keras\[model\.weights\.h5\]: " + BOMB_LINE + r"if the model is genuine, save its weights with "
        r"model\.save_weights\('model\.weights\.h5'\) and pass that",
        str(caught.value),
    ), str(caught.value)


@pytest.fixture(scope="module")
def real_bomb():
    """70 MiB of zeros deflated to about 70 KiB: over the 64 MiB threshold, about 1,000-fold."""
    return zipped({"x.npy": 70 << 20})


def test_a_real_zip_bomb_is_refused_without_changing_the_thresholds(real_bomb, monkeypatch):
    from rnncli.errors import InputError
    from rnncli.io import load_array

    monkeypatch.setattr("rnncli.io.memory_budget", lambda: 1 << 40)  # a machine with room: the ratio alone refuses
    assert len(real_bomb) < (70 << 20) / 200
    with pytest.raises(InputError, match=r"bomb\.npz\[x\]: the member inflates [\d,]+× \(70\.0 MiB from [\d.]+ KiB\)"):
        load_array(io.BytesIO(real_bomb), "npz", name="bomb.npz")


def inflating_peak(load, *args, **kwargs):
    """The most memory Python allocated while `load` ran, and what it raised."""
    import tracemalloc

    tracemalloc.start()
    try:
        load(*args, **kwargs)
    except Exception as exc:  # the caller checks what was raised
        raised = exc
    else:
        raised = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


def test_a_member_lying_about_its_size_inflates_no_further_than_it_says(real_bomb):
    """Its 70 MiB of zeros are cut off at the 1,000 bytes it declares, and the CRC then tells the lie."""
    pytest.importorskip("h5py")
    from rnncli.errors import InputError, WeightsError
    from rnncli.io import load_array
    from rnncli.weights import load_weights

    lying = declaring(real_bomb, 1000)
    peak, raised = inflating_peak(load_array, io.BytesIO(lying), "npz", name="lie.npz")
    assert isinstance(raised, InputError) and "corrupt archive member (Bad CRC-32" in str(raised), raised
    assert peak < 8 << 20
    lying = declaring(zipped({"config.json": b"{}".ljust(1000), "model.weights.h5": bytes(70 << 20)}), 1000)
    peak, raised = inflating_peak(load_weights, io.BytesIO(lying), name="lie.keras")
    assert isinstance(raised, WeightsError) and "corrupt archive member (Bad CRC-32" in str(raised), raised
    assert peak < 8 << 20


@pytest.mark.parametrize(
    "compression, name", [(zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "LZMA")], ids=["bzip2", "LZMA"]
)
def test_bzip2_and_lzma_members_are_refused_unread(compression, name):
    """zipfile inflates a whole read of these at once: 600 bytes of bzip2 can take a gigabyte, whatever the
    member declares."""
    pytest.importorskip("h5py")
    from rnncli.errors import InputError, WeightsError
    from rnncli.io import load_array
    from rnncli.weights import load_weights

    lying = declaring(zipped({"x.npy": 16 << 20}, compression), 1000)
    peak, raised = inflating_peak(load_array, io.BytesIO(lying), "npz", name="x.npz")
    assert isinstance(raised, InputError), raised
    assert str(raised) == (
        f"x.npz[x]: the member is compressed with {name}, which rnncli does not inflate (its memory use cannot be "
        "bounded); if the data is genuine, re-save it with numpy.savez (uncompressed)"
    )
    assert peak < 8 << 20
    peak, raised = inflating_peak(load_weights, io.BytesIO(keras_archive(b"{}", compression)), name="m.keras")
    assert isinstance(raised, WeightsError) and f"compressed with {name}" in str(raised), raised


def test_info_refuses_bzip2_and_lzma_members_too(tmp_path):
    from rnncli.errors import InputError
    from rnncli.info import describe_data

    path = tmp_path / "x.npz"
    path.write_bytes(zipped({"x.npy": 1 << 20}, zipfile.ZIP_LZMA))
    with pytest.raises(InputError, match=r"x\.npz\[x\]: the member is compressed with LZMA"):
        describe_data(str(path))
