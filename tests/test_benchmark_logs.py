"""`--from-log`: the benchmark scripts rebuild their tables, claims and missing-row lists from saved stdout logs."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(method, nfe, fid, psnr, acc=0.9, model="/tmp/r/bridge-inpaint-x/final"):
    return {
        "method": method,
        "model": model,
        "nfe": nfe,
        "target_nfe": nfe,
        "s_per_image": 0.001,
        "psnr": psnr,
        "ssim": 0.9,
        "fid": fid,
        "kid_x1000": 1.0,
        "all_right": acc,
        "shape": 1.0,
    }


def _log(path, rows, noise=True):
    text = "Loading pipeline components...: 100%|#####| 5/5\r\n" if noise else ""
    path.write_text(text + "\n".join(json.dumps(r) for r in rows) + "\nwrote x.md\n")
    return str(path)


def test_restoration_from_log(tmp_path):
    ref = _row("degraded input", 0, 70.0, 19.0, 0.4, model="-")
    a = _log(tmp_path / "a.log", [ref, _row("I2SB", 10, 2.0, 31.0), _row("DBIM (I2SB bridge, eta 0)", 10, 2.5, 32.0)])
    b = _log(
        tmp_path / "b.log",
        [
            ref,
            _row("DDBM Heun (VP)", 11, 20.0, 24.0) | {"target_nfe": 10},
            _row("DBIM order 1 (VP)", 10, 12.0, 25.6),
            _row("DDBM Heun (VP)", 50, 13.0, 24.8),
            _row("DDBM Heun (VP)", 101, 11.0, 24.9),
        ],
    )
    c = _log(tmp_path / "c.log", [ref, _row("Palette (DDIM)", 10, 9.0, 24.7, 0.68)])
    mod = _script("restoration")
    res = mod.main(
        [
            "--from-log",
            a,
            b,
            c,
            "--task",
            "inpaint",
            "--n",
            "2",
            "--nfes",
            "10",
            "50",
            "--out",
            str(tmp_path),
            "--tag",
            "t",
        ]
    )
    assert [r["method"] for r in res["rows"]].count("degraded input") == 1
    assert len(res["rows"]) == 8
    md = (tmp_path / "t.md").read_text()
    # DBIM@10 beats Heun@50 on both, loses FID to Heun@101; I2SB beats Palette
    assert (
        "| DBIM order 1 (VP) @ 10 | DDBM Heun (VP) @ 50 | 12.00 vs 13.00 | 25.60 vs 24.80 | 0.900 vs 0.900 | holds |"
    ) in md
    assert "@ 101 | 12.00 vs 11.00 | 25.60 vs 24.90 | 0.900 vs 0.900 | PSNR only |" in md
    assert "(a) DBIM NFE 10 beats DDBM Heun NFE >= 50: holds only in part (1 of 2" in md
    assert "(b) I2SB NFE 10 beats Palette NFE 10: holds (1 of 1" in md
    # planned but absent: I2SB @ 50, DBIM orders 2-3, Palette @ 50 ...
    missing = "; ".join(res["missing"])
    assert "I2SB: NFE 50" in missing and "DBIM order 2 (VP): NFE 10, 50" in missing
    assert "Palette (DDIM): NFE 50" in missing
    assert "DDBM Heun (VP)" not in missing


def test_restoration_from_log_rejects_mixed_runs(tmp_path):
    a = _log(tmp_path / "a.log", [_row("degraded input", 0, 70.0, 19.0, model="-"), _row("I2SB", 10, 2.0, 31.0)])
    b = _log(tmp_path / "b.log", [_row("degraded input", 0, 3.0, 29.0, model="-"), _row("Palette (DDIM)", 10, 2, 30)])
    with pytest.raises(SystemExit, match="different tasks"):
        _script("restoration").main(["--from-log", a, b, "--task", "inpaint", "--out", str(tmp_path)])
    empty = tmp_path / "empty.log"
    empty.write_text("no rows here\n")
    with pytest.raises(SystemExit, match="no JSON result rows"):
        _script("restoration").main(["--from-log", str(empty), "--task", "inpaint", "--out", str(tmp_path)])


def test_ddm_claims_and_missing(tmp_path):
    def r(method, nfe, fid, acc):
        return {
            "method": method,
            "nfe": nfe,
            "fid": fid,
            "kid_x1000": 5.0,
            "kid_std_x1000": 50.0,
            "all_right": acc,
            "shape": 1.0,
            "colour": 1.0,
            "background": 1.0,
            "clean": 1.0,
            "s_per_image": 0.001,
        }

    floor = r("real (other scenes)", 0, 17.0, float("nan"))
    log = _log(
        tmp_path / "d.log",
        [
            floor,
            r("ddm", 10, 9.0, 0.89),
            r("ddpm+ddim", 10, 18.0, 0.63),
            r("ddpm+ddim", 20, 14.0, 0.63),
            r("ddpm+dpm++", 20, 8.0, 0.63),
        ],
    )
    mod = _script("ddm")
    res = mod.main(["--from-log", log, "--n", "4", "--nfe", "10", "20", "--out", str(tmp_path), "--tag", "d"])
    assert not res["floor_recomputed"]
    md = (tmp_path / "d.md").read_text()
    assert "| ddm @ 10 | ddpm+ddim @ 20 | 9.00 vs 14.00 | 0.890 vs 0.630 | holds |" in md
    assert "| ddm @ 10 | ddpm+dpm++ @ 20 | 9.00 vs 8.00 | 0.890 vs 0.630 | accuracy only |" in md
    assert "holds only in part (1 of 2" in md
    assert "ddm: NFE 20" in res["missing"] and "ddm-eta0: NFE 10, 20" in res["missing"]
    assert "ddpm+dpm++: NFE 10" in res["missing"]


def test_study_claims_call_equal_success_a_tie():
    """Two methods with the same number of successes (floats that differ in the last bit) tie; LSB only
    "holds both" when it leads alone on success and has the lowest FID."""
    study = _script("translation_study")

    def row(method, nfe, success, fid):
        return {"method": method, "nfe": nfe, "mean": {"success": success}, "fid": fid}

    rows = [
        row("lsb", 4, 130 / 180, 21.5),
        row("sdedit", 4, 0.7222222222222222, 39.0),
        row("ddib", 4, 0.01, 143.0),
        row("lsb", 8, 0.77, 26.9),
        row("sdedit", 8, 0.72, 33.9),
        row("ddib", 8, 0.31, 88.1),
    ]
    lines = study.claims(rows)
    assert lines[0].startswith("- NFE 4: highest success tie between lsb and sdedit (0.722)")
    assert lines[0].endswith("LSB ties on success and holds FID.")
    assert lines[1].endswith("LSB holds both.")
    rows[3] = row("lsb", 8, 0.70, 26.9)
    assert study.claims(rows)[1].endswith("LSB does not hold both.")


def test_lsb_failure_reasons_on_rendered_scenes():
    """benchmarks/lsb_failures.py files each output under the first thing the reader finds wrong."""
    import numpy as np

    from lsb.data import shapes
    from lsb.metrics import read_scene

    fail = _script("lsb_failures")
    src = shapes.scenes("val", 1, shape="circle")[0].replace(
        colour="red", background="white", size=28.0, cx=32.0, cy=32.0
    )

    def why(scene, target="square"):
        return fail.failure_reason(read_scene(shapes.render_array(scene)), src, target)

    assert why(src.replace(shape="square")) is None
    assert why(src.replace(shape="triangle")) == "shape: square read as triangle"
    assert why(src.replace(shape="square", colour="blue")) == "colour: red -> blue"
    assert why(src.replace(shape="square", cx=41.0)) == "centre off by > 6 px"
    blank = np.full((64, 64, 3), 240, dtype=np.uint8)
    assert fail.failure_reason(read_scene(blank), src, "square").startswith("unclean")


def test_lsb_failures_size_account():
    """The size account tells side-keeping from area-keeping outputs, and its ceiling matches the world's sizes."""
    import numpy as np

    from lsb.data import shapes
    from lsb.metrics import read_batch

    fail = _script("lsb_failures")
    assert fail.area_kept_size(20.0, "square", "triangle") == pytest.approx(20.0 * (4 / np.sqrt(3)) ** 0.5)
    assert fail.fits_share_world(1.0) == 1.0
    # square -> triangle keeping area: sides up to 41.4 / 1.52 = 27.2 px fit, i.e. (27.2 - 20) / 16 of the world
    assert fail.fits_share_world(fail.area_kept_size(1.0, "square", "triangle")) == pytest.approx(0.452, abs=1e-3)
    # squares small enough that their area-keeping triangle (side x 1.52) is still a world size (<= 36 px)
    scenes = [s.replace(cx=32.0, cy=32.0, size=20.0 + i) for i, s in enumerate(shapes.scenes("val", 4, shape="square"))]
    side_kept = [s.replace(shape="triangle") for s in scenes]
    area_kept = [s.replace(shape="triangle", size=fail.area_kept_size(s.size, "square", "triangle")) for s in scenes]
    for outs, side, area in ((side_kept, 1.0, np.sqrt(3) / 4), (area_kept, None, 1.0)):
        rs = read_batch([shapes.render_array(o) for o in outs])
        acc = fail.size_account(rs, scenes, "square", "triangle", np.ones(len(scenes), dtype=bool))
        if side is not None:
            assert acc["side_ratio"] == pytest.approx(side, abs=0.03)
        assert acc["area_ratio"] == pytest.approx(area, abs=0.03)
        fits = [fail.SIZE_OK[0] <= fail.area_kept_size(s.size, "square", "triangle") <= fail.SIZE_OK[1] for s in scenes]
        assert acc["area_keeping_fits"] == pytest.approx(np.mean(fits))


def test_sweep_summary_round_trip_and_ranking(tmp_path):
    """gpu/sweep_summary.py: run folders -> jsonl -> the same map; settings ranked by the mean over setups."""
    spec = importlib.util.spec_from_file_location(
        "bench_sweep_summary", ROOT / "benchmarks" / "gpu" / "sweep_summary.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def result(t0, tau, g, success):
        return {
            "method": "lsb",
            "solver": "euler",
            "nfe": 8,
            "t0": t0,
            "tau": tau,
            "guidance": g,
            "n_per_direction": 5,
            "mean": {"success": success, "shape": 1.0, "colour_kept": 1.0, "clean": 1.0},
            "directions": [{"direction": "circle->square", "success": success}],
        }

    runs = tmp_path / "runs"
    runs.mkdir()
    # setup a is best at (0.02, 0.35, 3), setup b at (0.05, 1, 3); their mean favours (0.02, 0.35, 3)
    (runs / "translation-a-text-euler-t00.02.json").write_text(json.dumps([result(0.02, 0.35, 3.0, 0.8)]))
    (runs / "translation-a-text-euler-t00.05.json").write_text(json.dumps([result(0.05, 1.0, 3.0, 0.6)]))
    (runs / "translation-b-text-euler-t00.02.json").write_text(json.dumps([result(0.02, 0.35, 3.0, 0.7)]))
    (runs / "translation-b-text-euler-t00.05.json").write_text(json.dumps([result(0.05, 1.0, 3.0, 0.75)]))
    again = tmp_path / "again"  # a second run folder holding a copy of one file: its cell is counted once
    again.mkdir()
    (again / "translation-a-text-euler-t00.02.json").write_text(
        (runs / "translation-a-text-euler-t00.02.json").read_text()
    )
    raw, md1, md2 = tmp_path / "cells.jsonl", tmp_path / "a.md", tmp_path / "b.md"
    assert mod.main([str(runs), str(again), "--raw", str(raw), "--out", str(md1)]) == 0
    assert len(raw.read_text().splitlines()) == 4
    assert mod.main(["--from-raw", str(raw), "--out", str(md2)]) == 0
    text = md1.read_text()
    assert text == md2.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 0.0")]
    assert rows[0].startswith("| 0.02 | 0.35 | 3 |") and "**0.750**" in rows[0]
    assert rows[1].startswith("| 0.05 | 1 | 3 |") and "**0.675**" in rows[1]
    assert "- a-text-euler: 0.800 at t0 0.02, tau 0.35" in text and "- b-text-euler: 0.750 at t0 0.05, tau 1" in text
