"""The layer benchmark: the JSON it writes (no assertion on any time; the timing itself: test_measure.py)."""

import json

from drconv_yolo import bench


def test_run_writes_rows_and_a_summary_computed_from_them(tmp_path):
    out = tmp_path / "layer.json"
    payload = bench.run(
        shapes=[(4, 8, 12, 3, 2), (4, 4, 10, 1, 1)], batches=(2,), repeats=1, out=out, log=lambda *a, **k: None
    )
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(payload))
    assert [(r["c1"], r["c2"], r["size"], r["k"], r["s"], r["batch"]) for r in written["rows"]] == [
        (4, 8, 12, 3, 2, 2),
        (4, 4, 10, 1, 1, 2),
    ]
    rows = written["rows"]
    summary = written["summary"]["batch2"]
    infer = sorted(r["fast_infer_ms"] / r["conv_infer_ms"] for r in rows)
    assert abs(summary["fast_vs_conv_infer_median"] - (infer[0] + infer[1]) / 2) < 1e-12
    assert abs(summary["fast_vs_conv_infer_max"] - infer[1]) < 1e-12
    assert summary["fast_vs_ref_train_peak_max"] == max(r["fast_train_peak_mb"] / r["ref_train_peak_mb"] for r in rows)
    assert all(r["fast_train_peak_mb"] > 0 and r["ref_train_peak_mb"] > 0 for r in rows)
    assert not list(tmp_path.glob("*.tmp"))  # written under a temporary name, then renamed
