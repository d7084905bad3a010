"""The demo's numbers: one replica's metrics as plain JSON, and the mean ± sd over the seeds that the report and
``metrics.json`` show."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from cavmae.demo.heldout import DemoData, SeedResult, reference_levels
from cavmae.demo.settings import DemoSettings


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def rounded(tree: Any) -> Any:
    """A nested dict of numbers, each rounded to 2 decimals (None stays None)."""
    if isinstance(tree, dict):
        return {k: rounded(v) for k, v in tree.items()}
    return None if tree is None else round(float(tree), 2)


def leaf(values: list[float]) -> dict[str, Any]:
    """One number of ``metrics.json``'s ``retrieval``: mean, sample sd and the value of every seed."""
    m, sd = mean_sd(values)
    return {"mean": round(m, 2), "sd": round(sd, 2), "per_seed": [round(v, 2) for v in values]}


def retrieval_summary(results: list[SeedResult], baselines: dict[str, dict | None]) -> dict[str, dict[str, Any] | None]:
    """``metrics.json``'s ``retrieval``: method -> level -> direction -> metric -> :func:`leaf`. The trained
    methods (pretrained, random_init) give one value per seed; a baseline does not depend on the seed and lists
    its one value for each seed (sd 0); a baseline that could not run is None."""
    per_method: dict[str, list[dict] | None] = {
        name: [r.retrieval[name].metrics for r in results] for name in results[0].retrieval
    }
    per_method |= {name: None if b is None else [b] * len(results) for name, b in baselines.items()}
    return {
        name: None
        if runs is None
        else {
            level: {
                d: {k: leaf([run[level][d][k] for run in runs]) for k in metrics} for d, metrics in directions.items()
            }
            for level, directions in runs[0].items()
        }
        for name, runs in per_method.items()
    }


def seed_summary(s: DemoSettings, r: SeedResult) -> dict[str, Any]:
    """The numbers of one replica (plain JSON types)."""

    def finite(x: float) -> float | None:
        return None if x != x else round(float(x), 2)

    return {
        "seed": r.seed,
        "runs": str(r.runs_dir),
        "pretraining": pretraining_summary(r.runs_dir / "pretrain"),
        "retrieval": {name: rounded(res.metrics) for name, res in r.retrieval.items()},
        "classification": {
            name: {
                "steps": s.finetune_steps,
                "top1": round(c.top1, 2),
                "per_class_top1": [finite(x) for x in c.per_class.tolist()],
                "curve": [[step, round(acc, 2)] for step, acc in c.curve],
            }
            for name, c in r.classification.items()
        },
        "timings_s": r.timings,
    }


def summarise(
    s: DemoSettings,
    data: DemoData,
    backbone: str,
    quick: bool,
    results: list[SeedResult],
    timings: dict[str, float],
    baselines: dict[str, dict | None],
    unavailable: dict[str, str],
    labels: torch.Tensor,
) -> dict[str, Any]:
    """``metrics.json``: every replica under ``per_seed``; ``retrieval`` holds every method's held-out retrieval
    at both levels (:func:`retrieval_summary`), ``chance`` and ``class_only_ceiling`` what a random ranking and
    an embedding that knows only the classes reach on the held-out labels [N] (plain numbers, the layout of
    :func:`cavmae.demo.heldout.score_retrieval`); ``classification`` holds the means over the seeds and ``*_sd``
    the sample standard deviations."""
    per_seed = [seed_summary(s, r) for r in results]

    def agg(get) -> tuple[float, float]:
        m, sd = mean_sd([float(get(p)) for p in per_seed])
        return round(m, 2), round(sd, 2)

    first = per_seed[0]
    classification = {}
    for name, c in first["classification"].items():
        top1, top1_sd = agg(lambda p, n=name: p["classification"][n]["top1"])
        per_class = []
        for k in range(len(c["per_class_top1"])):
            values = [p["classification"][name]["per_class_top1"][k] for p in per_seed]
            values = [v for v in values if v is not None]
            per_class.append([round(x, 2) for x in mean_sd(values)] if values else [None, None])
        curve = []
        for i, (step, _) in enumerate(c["curve"]):
            m, sd = agg(lambda p, n=name, i=i: p["classification"][n]["curve"][i][1])
            curve.append([step, m, sd])
        classification[name] = {
            "steps": c["steps"],
            "top1": top1,
            "top1_sd": top1_sd,
            "per_class_top1": [x[0] for x in per_class],
            "per_class_top1_sd": [x[1] for x in per_class],
            "curve": [[step, m] for step, m, _ in curve],
            "curve_sd": [[step, sd] for step, _, sd in curve],
        }
    pretraining = {
        part: {
            k: round(statistics.fmean(p["pretraining"][part][k] for p in per_seed), 4)
            for k in first["pretraining"][part]
        }
        for part in ("start", "end")
    }
    pretraining["steps"] = first["pretraining"]["steps"]
    return {
        "seed": results[0].seed,
        "seeds": [r.seed for r in results],
        "backbone": backbone,
        "quick": quick,
        "settings": dataclasses.asdict(s),
        "data": {
            "classes": data.class_names,
            "train_clips": data.num_train,
            "heldout_clips": data.num_heldout,
            "train_shards": data.train_shards,
            "heldout_shards": data.heldout_shards,
        },
        "pretraining": pretraining,
        "retrieval": retrieval_summary(results, baselines),
        "retrieval_unavailable": unavailable,  # method -> why it has no numbers (its "retrieval" entry is None)
        **rounded(reference_levels(labels)),  # "chance" and "class_only_ceiling"
        "classification": classification,
        "per_seed": per_seed,
        "timings_s": timings,
    }


def pretraining_summary(run_dir: Path, keys: tuple[str, ...] = ("loss_rec_a", "loss_rec_v", "loss_c", "acc_c")) -> dict:
    """Mean of each loss part over the first and the last 5 % of the logged steps (one batch per step is noisy)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    n = max(1, len(records) // 20)

    def mean(rows: list[dict]) -> dict[str, float]:
        return {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in keys}

    return {"steps": records[-1]["step"] if records else 0, "start": mean(records[:n]), "end": mean(records[-n:])}
