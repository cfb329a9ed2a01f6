"""Print where a scene's mesh, evaluation and per-rule times are (the end of `make demo`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def main(scene: str) -> None:
    res = Path("results") / scene
    print(f"\nmesh (world units):        {res / 'mesh.ply'}")
    print(f"cleaned, mask-culled mesh: {res / 'mesh_clean.ply'}")
    ev = res / "eval.json"
    if ev.is_file():
        e = json.loads(ev.read_text())
        print(f"evaluation:                {ev}")
        if "chamfer_pct_diag" in e:
            print(f"  Chamfer: {e['chamfer_pct_diag']['overall']:.3f}% of the ground truth's bounding-box diagonal")
        print(f"  accuracy {e['accuracy']:.4g}, completeness {e['completeness']:.4g}, overall {e['overall']:.4g}")
    rows = []
    for tsv in sorted(Path("benchmarks").glob(f"*/{scene}.tsv")):
        t = pd.read_csv(tsv, sep="\t")
        rows.append({"rule": tsv.parent.name, "seconds": round(float(t["s"].iloc[-1]), 1)})
    if rows:
        print("\nrule times (benchmarks/):")
        print(pd.DataFrame(rows).to_string(index=False))
    report = res / "report.html"
    if report.is_file():
        print(f"\nreport (one self-contained page; open it in a browser): {report}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo")
