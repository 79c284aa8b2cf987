"""Tables of results/run_simtrans_ablations_cpu.sh: per seed and mean ± 95% t interval over seeds.

    python results/simtrans_ablations_summary.py --out results/runs/simtrans_ablations --seeds 0 1 2 \
        [--json_out results/simtrans_ablations_cub50.json]

Reads each run's history.json (the novel test accuracy after every epoch: the runs validate on the
test images, as the reference), the denoising.json of both SimNets and the CPU times the script
logged; prints markdown tables and writes everything to --json_out. Per run three numbers: the
last epoch's accuracy (no choice made on the test set), the best epoch's (the reference's model
selection on the test set: optimistic), the mean of the last 5 epochs.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_stats import excludes_zero, finish_summary, format_summary, seed_summary  # noqa: E402

#: (key, label, data folder suffix, run folder, history field of the novel accuracy)
ROWS: List[Tuple[str, str, str, str, str]] = [
    ("naive", "step 0: naive, web images as labelled", "", "Conv4_simtrans_naive", "val_acc"),
    ("weights", "step 3a: + SimNet sample weights (savg1)", "", "Conv4_simtrans_main_savg1", "val_acc"),
    ("graph", "step 3b: 3a + alternating graph regularisation (α 0.1)", "",
     "Conv4_simtrans_alternate_GCN_a0.1_avg1", "val_acc"),
    ("control", "control: 3a + the same epochs with α 0", "", "Conv4_simtrans_alternate_GCN_a0_avg1", "val_acc"),
    ("nf", "step 3a with the SimNet trained with --noisy_frac 0.2", "", "Conv4_simtrans_main_savg1_nf0.2",
     "val_acc"),
    ("cleanall", "oracle CleanAll: base + clean novel images, 40-way (novel test images)", "",
     "Conv4_simtrans_naive_CleanAll", "novel_acc"),
    ("oracle", "oracle: step 0 without the injected outliers (10-way)", "-oracle", "Conv4_simtrans_naive", "val_acc"),
]
#: paired differences reported (row minus row), per seed
DIFFERENCES = [("weights", "naive"), ("graph", "weights"), ("graph", "control"), ("nf", "weights"),
               ("oracle", "naive"), ("cleanall", "naive")]
#: denoising views: (key, label, SimNet folder suffix, view in denoising.json, weight type)
DENOISING = [
    ("simnet_savg1", "SimNet, savg1 (step 3a's weights)", "", "SimNet", "savg1"),
    ("simnet_avg1", "SimNet, avg1 (step 3b's weights)", "", "SimNet", "avg1"),
    ("nf_savg1", "SimNet with --noisy_frac 0.2, savg1", "_nf0.2", "SimNet", "savg1"),
    ("cosine_savg1", "control: step-0 feature cosine, savg1", "", "step-0 feature cosine (control)", "savg1"),
]


def run_numbers(history_file: Path, field: str) -> Dict[str, float]:
    """Last, best (and its epoch) and mean-of-last-5 accuracy of a run's history."""
    accs = [h[field] if field in h else h["extra"][field] for h in json.loads(history_file.read_text())]
    best = max(range(len(accs)), key=accs.__getitem__)
    return {"last": accs[-1], "best": accs[best], "best_epoch": best, "last5": sum(accs[-5:]) / len(accs[-5:]),
            "epochs": len(accs)}


def table(title: str, seeds: List[str], rows: List[Tuple[str, List[float], Dict[str, object]]], digits: int) -> str:
    """A markdown table: one row per entry, one column per seed, then mean ± interval."""
    lines = [f"| {title} | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± 95% t interval |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for label, values, summary in rows:
        lines.append(f"| {label} | " + " | ".join(f"{v:.{digits}f}" for v in values) +
                     f" | {format_summary(summary, digits)} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the script's OUT folder")
    parser.add_argument("--seeds", nargs="+", required=True)
    parser.add_argument("--dataset", default="cub_cropped")
    parser.add_argument("--weakshot", default="", help="the weak-shot folder's name (default: the one in --out)")
    parser.add_argument("--json_out", default="")
    args = parser.parse_args(argv)
    out = Path(args.out)
    ws = args.weakshot or next(p.name for p in sorted(out.glob("weakshot_*")) if not p.name.endswith("-oracle"))
    result: Dict[str, object] = {"seeds": args.seeds, "accuracy": {}, "differences": {}, "denoising": {}}
    per_row: Dict[str, Dict[str, List[float]]] = {}
    for key, label, suffix, run, field in ROWS:
        numbers = [run_numbers(out / f"seed{s}" / args.dataset / f"{ws}{suffix}" / run / "history.json", field)
                   for s in args.seeds]
        per_row[key] = {m: [n[m] for n in numbers] for m in ("last", "best", "last5", "best_epoch", "epochs")}
        summaries = {m: seed_summary(per_row[key][m]) for m in ("last", "best", "last5")}
        result["accuracy"][key] = {"label": label, **summaries,
                                   "best_epoch": per_row[key]["best_epoch"], "epochs": per_row[key]["epochs"]}
    for metric, title in (("last", "last epoch"), ("best", "best epoch (selected on the test set)"),
                          ("last5", "mean of the last 5 epochs")):
        print(table(f"novel test accuracy (%), {title}", args.seeds,
                    [(result["accuracy"][k]["label"], per_row[k][metric], result["accuracy"][k][metric])
                     for k, *_ in ROWS], 2), end="\n\n")
    diff_rows = []
    for a, b in DIFFERENCES:
        entry = {}
        for metric in ("last", "best"):
            values = [x - y for x, y in zip(per_row[a][metric], per_row[b][metric])]
            entry[metric] = seed_summary(values)
            entry[metric]["excludes_zero"] = excludes_zero(entry[metric])
        result["differences"][f"{a}-{b}"] = entry
        diff_rows.append((f"{a} − {b}", entry["last"]["values"], entry["last"]))
    print(table("paired difference, last epoch (points)", args.seeds, diff_rows, 2), end="\n\n")
    den_rows = []
    for key, label, suffix, view, weight_type in DENOISING:
        values = []
        for s in args.seeds:
            path = out / f"seed{s}" / args.dataset / ws / f"Conv4_simtrans_simnet_h4_b0.1{suffix}" / "denoising.json"
            values.append(json.loads(path.read_text())[view][weight_type]["all"])
        result["denoising"][key] = {"label": label, **seed_summary(values)}
        den_rows.append((label, values, result["denoising"][key]))
    print(table("denoising ROC-AUC, all web images", args.seeds, den_rows, 3), end="\n\n")
    finish_summary(result, out / "cpu_times.tsv", lambda row: row[0], args.json_out)


if __name__ == "__main__":
    main()
