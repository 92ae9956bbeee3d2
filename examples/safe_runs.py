"""Interrupt a translation and continue it: a run is a transaction (docs/guides/safe-runs.md).

Starts ``lsb translate`` on a few shapes-world pictures, presses Ctrl-C (SIGINT) once the first output is finished,
shows what the folder's manifest recorded, then runs the same command again, which continues the run and skips
what is done.

    python examples/safe_runs.py --images 8 --nfe 4 --out runs/safe
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8, help="pictures to translate")
    ap.add_argument("--nfe", type=int, default=4)
    ap.add_argument("--out", default="runs/safe", help="working folder (pictures in <out>/in, outputs in <out>/out)")
    args = ap.parse_args()

    from lsb.data import shapes

    root = Path(args.out)
    inputs, out = root / "in", root / "out"
    inputs.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(shapes.scenes("test", args.images, shape="circle")):
        shapes.render(scene).save(inputs / f"c{i:02d}.png")
    command = [sys.executable, "-m", "lsb", "translate", str(inputs), "--source", "a circle", "--target", "a square"]
    command += ["--nfe", str(args.nfe), "--batch-size", "1", "-o", str(out)]

    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    manifest = out / "settings.json"
    while run.poll() is None and not (manifest.is_file() and json.loads(manifest.read_text()).get("inputs")):
        time.sleep(0.02)  # until the first output is finished and recorded
    run.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = run.communicate()
    print(f"exit status {run.returncode}:", next((ln for ln in err.splitlines() if "lsb: " in ln), "(finished)"))
    record = json.loads(manifest.read_text())
    print(f"manifest: status {record['status']}, {len(record['inputs'])} of {len(record['planned'])} outputs recorded")

    again = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    print(next((ln for ln in again.stderr.splitlines() if ln.startswith("resuming")), "(nothing to resume)"))
    print(again.stdout.strip().splitlines()[-1])
    print(f"manifest: status {json.loads(manifest.read_text())['status']}")


if __name__ == "__main__":
    main()
