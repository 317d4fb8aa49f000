"""`trnlab collective`: nccom-test's table and options, --json rows, one-line errors with exit code 2."""
import json

import pytest
from typer.testing import CliRunner

from trnlab.cli import app


def invoke(*args):
    return CliRunner().invoke(app, list(args))


def test_table_has_nccom_test_columns():
    r = invoke("collective", "allr", "--system", "trn1.32xlarge", "-N", "2", "-r", "64", "-b", "8", "-e", "1M",
               "-f", "8", "-d", "fp32")
    assert r.exit_code == 0, r.output
    for col in ("size(B)", "count(elems)", "type", "time(us)", "algbw(GB/s)", "busbw(GB/s)", "algorithm"):
        assert col in r.stdout
    # 8, 64, 512, 4K, 32K, 256K: six data rows
    assert sum(1 for line in r.stdout.splitlines() if " fp32 " in line) == 6
    assert "flat-ring" not in r.stdout and "hier(" in r.stdout


def test_json_rows():
    r = invoke("collective", "all-gather", "-r", "32", "-b", "1K", "-e", "1M", "-f", "4", "-d", "bf16", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["bytes"] for row in rows] == [1024, 4096, 16384, 65536, 262144, 1048576]
    for row in rows:
        assert set(row) >= {"bytes", "count", "type", "latency_us", "algbw_gbs", "busbw_gbs", "algorithm"}
        assert row["count"] == row["bytes"] // 2 and row["type"] == "bf16"
        algbw = row["bytes"] / (row["latency_us"] * 1e-6) / 2 ** 30
        assert row["algbw_gbs"] == pytest.approx(algbw, rel=1e-3, abs=1e-3)
        assert row["busbw_gbs"] == pytest.approx(algbw * 31 / 32, rel=1e-3, abs=1e-3)   # (n-1)/n
    assert rows[-1]["latency_us"] > rows[0]["latency_us"]


def test_sizes_round_down_to_whole_elements_per_rank():
    rows = json.loads(invoke("collective", "reduce-scatter", "-r", "8", "-b", "100", "-e", "100", "--json").stdout)
    assert rows[0]["bytes"] == 96    # 8 ranks x 4-byte fp32 elements


@pytest.mark.parametrize("args, needles", [
    (["allx"], ["OP", "'allx'", "all-reduce"]),
    (["allr", "--system", "trn9"], ["--system", "'trn9'", "trn2.48xlarge"]),
    (["allr", "-r", "1"], ["-r/--ranks", "'1'", "2..64"]),
    (["allr", "-r", "abc"], ["-r/--ranks", "'abc'"]),
    (["allr", "-N", "2", "-r", "63"], ["-r/--ranks", "'63'", "multiple of --nodes"]),
    (["allr", "-N", "0"], ["--nodes", "'0'"]),
    (["allr", "-b", "1X"], ["-b/--minbytes", "'1X'", "KB"]),
    (["allr", "-b", "1M", "-e", "1K"], ["-e/--maxbytes", "'1K'", ">="]),
    (["allr", "-f", "1"], ["-f/--stepfactor", "'1'"]),
    (["allr", "-d", "fp99"], ["-d/--datatype", "'fp99'", "bf16"]),
    (["allr", "--release", "2.99"], ["--release", "'2.99'", "2.32"]),
])
def test_bad_options_one_line_exit_2(args, needles):
    r = invoke("collective", *args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trnlab collective:"), r.stderr
    for needle in needles:
        assert needle in lines[0]


def test_nccom_test_defaults_and_aliases():
    """nccom-test -r 2 allr: one 32 MB uint8 row (its default example), through --nworkers / --nnodes."""
    rows = json.loads(invoke("collective", "allr", "--nworkers", "2", "--nnodes", "1", "--system", "trn1.32xlarge",
                             "--json").stdout)
    assert [(r["bytes"], r["count"], r["type"]) for r in rows] == [(33554432, 33554432, "uint8")]
    assert rows[0]["algbw_gbs"] == rows[0]["busbw_gbs"]          # 2 ranks: 2(n-1)/n = 1


def test_stepbytes():
    rows = json.loads(invoke("collective", "allr", "-r", "2", "-b", "8", "-e", "16", "-i", "4", "--json").stdout)
    assert [r["bytes"] for r in rows] == [8, 12, 16]
    r = invoke("collective", "allr", "-b", "8", "-e", "16", "-i", "4", "-f", "2")
    assert r.exit_code == 2 and "-i/--stepbytes" in r.stderr


def test_permute_pairs_file(tmp_path):
    """nccom-test's permute example: 0<->1, 2<->3 swap on one chip, 4..7 keep their data."""
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps({"src_target_pairs": [[[0, 1], [1, 0], [2, 3], [3, 2], [4, 4], [5, 5], [6, 6],
                                                       [7, 7]]]}))
    args = ["collective", "permute", "-r", "8", "--json"]
    on_chip = json.loads(invoke(*args, "--custom-src-target-pairs", str(pairs)).stdout)[0]
    ring = json.loads(invoke(*args).stdout)[0]
    assert on_chip["bytes"] == ring["bytes"] == 32 * 2 ** 20 and on_chip["algorithm"] == "direct"
    assert on_chip["latency_us"] == pytest.approx(ring["latency_us"])   # both limited by a core's DMA
    pairs.write_text(json.dumps({"src_target_pairs": [[[r, r] for r in range(8)]]}))
    stay = json.loads(invoke(*args, "--custom-src-target-pairs", str(pairs)).stdout)[0]
    assert stay["latency_us"] < on_chip["latency_us"] / 100               # nothing moves
    pairs.write_text('{"src_target_pairs": [[[0, 9]]]}')
    r = invoke(*args, "--custom-src-target-pairs", str(pairs))
    assert r.exit_code == 2 and "0..7" in r.stderr
    r = invoke("collective", "allr", "--custom-src-target-pairs", str(pairs))
    assert r.exit_code == 2 and "only with the permute" in r.stderr


def test_release_reproduces_both_examples_of_the_16_rank_all_reduce():
    """nccom-test.rst: `-r 16 allr -d fp32` (release 2.28) prints 299.91 us at 4 B; the multi-stream example
    (release 2.32) prints 101.14 us for the same 16-rank all-reduce at 1 KB bf16. Oracle: the published rows,
    within the issue's 50% for floors."""
    args = ["collective", "allr", "--system", "trn2.48xlarge", "-r", "16", "--json"]
    early = json.loads(invoke(*args, "-b", "4", "-e", "4", "-d", "fp32").stdout)[0]["latency_us"]
    late = json.loads(invoke(*args, "-b", "1K", "-e", "1K", "-d", "bf16", "--release", "2.32").stdout)
    assert abs(early / 299.91 - 1) <= 0.5
    assert abs(late[0]["latency_us"] / 101.14 - 1) <= 0.5 and late[0]["count"] == 512


def _metadata(tmp_path, entries):
    path = tmp_path / "alltoallv_metadata.json"
    path.write_text(json.dumps({"metadata": entries}))
    return str(path)


def test_alltoallv_metadata_file(tmp_path):
    """nccom-test.rst's AlltoAllV example: `-r 2 -N 2 -d fp32 alltoallv -b 1MB -e 1MB
    --variable-size-op-metadata` with one entry (send_counts [512, 1024]) prints size 1048608, count 262152."""
    meta = _metadata(tmp_path, [{"send_counts": [512, 1024], "send_displs": [0, 512], "recv_counts": [],
                                 "recv_displs": []}])
    args = ["collective", "alltoallv", "-r", "2", "-N", "2", "-d", "fp32", "-b", "1MB", "-e", "1MB", "--json"]
    row = json.loads(invoke(*args, "--variable-size-op-metadata", meta).stdout)[0]
    assert (row["bytes"], row["count"], row["type"]) == (1048608, 262152, "fp32")
    assert row["busbw_gbs"] == pytest.approx(row["algbw_gbs"] / 2, abs=2e-3)      # (r-1)/r
    even = json.loads(invoke(*args).stdout)[0]                                    # no file: even parts
    alltoall = json.loads(invoke(*[a if a != "alltoallv" else "alltoall" for a in args]).stdout)[0]
    assert even["bytes"] == 1048608 and alltoall["bytes"] == 2 ** 20
    assert even["latency_us"] == pytest.approx(alltoall["latency_us"], rel=1e-4)
    # 6 KiB moved instead of half a MiB each way: faster than the even split
    assert row["latency_us"] < even["latency_us"]
    # one entry per rank, receive counts matching; the table form
    per_rank = _metadata(tmp_path, [{"send_counts": [512, 1024], "recv_counts": [512, 2048]},
                                    {"send_counts": [2048, 0], "recv_counts": [1024, 0]}])
    r = invoke(*args[:-1], "--variable-size-op-metadata", per_rank)
    assert r.exit_code == 0 and "all-to-allv" in r.stdout and "1048608" in r.stdout, r.output


@pytest.mark.parametrize("entries, extra, needles", [
    ([{"send_counts": [1, 2, 3]}], [], ["send_counts must be 2 integers"]),
    ([{"send_counts": [1, 2]}] * 3, [], ["1 entry for every rank or 2"]),
    ([{"send_counts": [1, 2]}, {"send_counts": [3, 4], "recv_counts": [2, 5]}], [],
     ["recv_counts[1] = 5 but rank 1 sends 4 to rank 1"]),
    ([{"send_counts": [1, -2]}], [], ["integers >= 0"]),
    ([{"send_counts": [200, 100]}], ["-b", "1K"], ["256-element send buffer", "rank 0's part for rank 1"]),
    ("not a list", [], ["--variable-size-op-metadata", "send_counts"]),
])
def test_alltoallv_bad_metadata_one_line_exit_2(tmp_path, entries, extra, needles):
    meta = _metadata(tmp_path, entries)
    r = invoke("collective", "alltoallv", "-r", "2", "-d", "fp32", *extra, "--variable-size-op-metadata", meta)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trnlab collective: --variable-size-op-metadata"), r.stderr
    for needle in needles:
        assert needle in lines[0]
    r = invoke("collective", "allr", "--variable-size-op-metadata", meta)
    assert r.exit_code == 2 and "only with the alltoallv" in r.stderr
