"""The default command with only the data path and a time budget, on several photo sets:
``rcnn-zoo train --data DIR --time-budget 20m`` (from scratch, the recipe choosing everything
else), then ``rcnn-zoo evaluate`` of its ``last.keras`` on the test split.

    python benchmarks/bench_recipe.py [--budget 20m] [--detector faster_rcnn] [--backbone tiny]
        [--data raccoon=../shared/datasets/raccoon small_raccoons=/tmp/rz/small_raccoons]
        [--runs /tmp/rz/recipe] [--output benchmarks/results/recipe.json]

No validation split is given (as in the default command), so nothing about the test split is
seen before the evaluation: the last model is the one evaluated. Prints the table (dataset,
recipe chosen, minutes, VOC mAP@0.5, COCO AP) and writes the JSON, each dataset's row with the
recipe's choices from its config.json. ``small_raccoons`` is made by
``benchmarks/make_small_objects.py``.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_DATA = (f"raccoon={os.path.join(REPO, '..', 'shared', 'datasets', 'raccoon')}",
                "small_raccoons=/tmp/rz/small_raccoons")


def cli(*args):
    """``python -m rcnn_zoo.cli ARGS`` (the ``rcnn-zoo`` entry point) from the repository root;
    raises when it fails."""
    command = [sys.executable, "-m", "rcnn_zoo.cli", *map(str, args)]
    print("$ rcnn-zoo " + " ".join(map(str, args)), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def recipe_summary(choices):
    """The recipe in a few words: image size, batch, epochs, augmentation."""
    named = {c["choice"]: c.get("value") for c in choices}
    size = named.get("image size")
    epochs = named.get("epochs re-planned", named.get("epochs"))
    parts = [named.get("backbone"), f"{size[0]}/{size[1]} px" if size else None,
             f"batch {named['batch size']}" if "batch size" in named else None,
             f"{epochs} epochs" if epochs else None,
             f"zoom-out {named['zoom out']:g}" if "zoom out" in named else None]
    return ", ".join(p for p in parts if p)


def run_dataset(name, path, args):
    """Train and evaluate on one dataset; its row of the table."""
    out = os.path.join(args.runs, name)
    if os.path.exists(os.path.join(out, "last.keras")):
        raise SystemExit(f"{out} holds an earlier run: remove it (the benchmark trains from scratch)")
    backbone = ("--backbone", args.backbone) if args.backbone else ()
    cli("train", "--data", path, "--detector", args.detector, *backbone, "--time-budget", args.budget,
        "--output-dir", out, "--verbose", 2)
    scores = os.path.join(out, "test_scores.json")
    cli("evaluate", "--model", os.path.join(out, "last.keras"), "--data", path, "--split", "test",
        "--metric", "voc", "coco", "--output", scores, "--verbose", 0)
    with open(os.path.join(out, "config.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    with open(scores, encoding="utf-8") as handle:
        evaluation = json.load(handle)
    return {
        "dataset": name, "path": path, "backbone": record["arguments"].get("backbone"),
        "train_images": record["num_train_images"],
        "classes": record["class_names"], "recipe": recipe_summary(record["choices"]),
        "choices": record["choices"], "time_budget": record.get("time_budget"),
        "minutes": round(record["time_budget"]["used_seconds"] / 60, 1) if record.get("time_budget") else None,
        "voc_mAP": evaluation["voc"]["mAP"], "coco_AP": evaluation["coco"]["AP"], "evaluation": evaluation,
    }


def print_table(rows):
    print(f"\n{'dataset':<16} {'recipe chosen':<52} {'min':>5} {'mAP@0.5':>8} {'COCO AP':>8}")
    for r in rows:
        print(f"{r['dataset']:<16} {r['recipe']:<52} {r['minutes']:>5} {r['voc_mAP']:>8.3f} {r['coco_AP']:>8.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="20m")
    parser.add_argument("--detector", default="faster_rcnn")
    parser.add_argument("--backbone", default=None, help="given to rcnn-zoo train (default: its own)")
    parser.add_argument("--data", nargs="+", default=list(DEFAULT_DATA), metavar="NAME=DIR")
    parser.add_argument("--runs", default="/tmp/rz/recipe")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "recipe.json"))
    args = parser.parse_args(argv)
    rows = [run_dataset(*item.split("=", 1), args) for item in args.data]
    print_table(rows)
    result = {"benchmark": "rcnn-zoo train --data DIR --time-budget B, from scratch; last.keras on the test split",
              "date": datetime.date.today().isoformat(), "budget": args.budget, "detector": args.detector,
              "backbone": args.backbone,
              "machine": f"{os.cpu_count()} CPU cores", "rows": rows}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
