"""Tables of results/run_mtl_ht_cpu.sh: HT meta-batch vs plain, per seed and mean ± 95% t interval.

    python results/mtl_ht_summary.py --out results/runs/mtl_ht --seeds 0 1 2 [--json_out results/mtl_ht_cub50.json]

Reads each run's test record (results.json: accuracy and its 95% interval over the test tasks),
its meta-training history (tasks trained, validation accuracy) and the CPU times the script logged;
prints markdown tables and writes everything to --json_out.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_stats import excludes_zero, finish_summary, format_summary, seed_summary  # noqa: E402

ARMS = ("plain", "ht")


def run_record(out: Path, seed: str, arm: str) -> Dict[str, float]:
    """The last test record and the meta-training history's numbers of one run."""
    test = json.loads((out / f"seed{seed}" / arm / "results.json").read_text())[-1]
    history_file = next((out / f"seed{seed}" / arm).glob(f"*/*/metatrain_{arm}/history.json"))
    history = json.loads(history_file.read_text())
    return {"test_acc": float(test["accuracy"]), "test_interval": float(test["interval"]),
            "test_episodes": test.get("episodes"), "val_acc": float(history[-1]["val_acc"]),
            "train_acc": float(history[-1]["train_acc"]), "epochs": len(history)}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the script's OUT folder")
    parser.add_argument("--seeds", nargs="+", required=True)
    parser.add_argument("--json_out", default="")
    args = parser.parse_args(argv)
    out = Path(args.out)
    runs = {arm: [run_record(out, s, arm) for s in args.seeds] for arm in ARMS}
    result: Dict[str, object] = {"seeds": args.seeds, "runs": runs, "summary": {}}
    print("| meta-batch | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean ± 95% t interval over seeds |")
    print("|---|" + "---|" * (len(args.seeds) + 1))
    for arm in ARMS:
        summary = seed_summary([r["test_acc"] for r in runs[arm]])
        result["summary"][arm] = {"test_acc": summary, "val_acc": seed_summary([r["val_acc"] for r in runs[arm]])}
        cells = [f"{r['test_acc']:.2f} ± {r['test_interval']:.2f}" for r in runs[arm]]
        print(f"| {arm} | " + " | ".join(cells) + f" | {format_summary(summary)} |")
    diff = seed_summary([h["test_acc"] - p["test_acc"] for h, p in zip(runs["ht"], runs["plain"])])
    diff["excludes_zero"] = excludes_zero(diff)
    result["summary"]["ht-plain"] = diff
    print("| HT − plain (paired) | " + " | ".join(f"{v:+.2f}" for v in diff["values"]) +
          f" | {format_summary(diff)} |\n")
    for arm in ARMS:
        vals = result["summary"][arm]["val_acc"]
        print(f"validation accuracy after meta-training, {arm}: " + ", ".join(f"{v:.2f}" for v in vals["values"]) +
              f" ({format_summary(vals)})")
    finish_summary(result, out / "cpu_times.tsv", lambda row: row[0].rsplit("_seed", 1)[0], args.json_out)


if __name__ == "__main__":
    main()
