"""The demo's numbers: one replica's metrics as plain JSON, and the mean ± sd over the seeds that the report and
``metrics.json`` show."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any

from cavmae.demo.heldout import DemoData, SeedResult
from cavmae.demo.settings import DemoSettings


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def seed_summary(s: DemoSettings, r: SeedResult) -> dict[str, Any]:
    """The numbers of one replica (plain JSON types)."""

    def finite(x: float) -> float | None:
        return None if x != x else round(float(x), 2)

    return {
        "seed": r.seed,
        "runs": str(r.runs_dir),
        "pretraining": pretraining_summary(r.runs_dir / "pretrain"),
        "retrieval": {
            name: {d: {k: round(v, 2) for k, v in m.items()} for d, m in res.metrics.items()}
            for name, res in r.retrieval.items()
        },
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
) -> dict[str, Any]:
    """``metrics.json``: every replica under ``per_seed``; ``retrieval`` / ``classification`` hold the means over
    the seeds and ``*_sd`` the sample standard deviations."""
    per_seed = [seed_summary(s, r) for r in results]

    def agg(get) -> tuple[float, float]:
        m, sd = mean_sd([float(get(p)) for p in per_seed])
        return round(m, 2), round(sd, 2)

    first = per_seed[0]
    retrieval, retrieval_sd = {}, {}
    for name, dirs in first["retrieval"].items():
        retrieval[name], retrieval_sd[name] = {}, {}
        for d, ms in dirs.items():
            pairs = {k: agg(lambda p, n=name, d=d, k=k: p["retrieval"][n][d][k]) for k in ms}
            retrieval[name][d] = {k: v[0] for k, v in pairs.items()}
            retrieval_sd[name][d] = {k: v[1] for k, v in pairs.items()}
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
        "retrieval": retrieval,
        "retrieval_sd": retrieval_sd,
        "retrieval_chance_R@5": round(100.0 * min(5, data.num_heldout) / max(data.num_heldout, 1), 2),
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
