"""Backbone ablation: the demo's protocol for named model variants and seeds, as one table.

    python scripts/ablate_backbones.py                                  # the table: full demo sizes, 3 seeds
    python scripts/ablate_backbones.py --quick --seeds 0 --variants vit,mamba       # a scaled-down table
    python scripts/ablate_backbones.py --list                           # the variants, their overrides and sizes

For each variant and seed it runs what ``cavmae demo`` runs (:mod:`cavmae.demo.pipeline`): pre-training of the
tiny CAV-MAE on the synthetic train shards, retrieval on the held-out clips, then fine-tuning from the pre-trained
model and from scratch for the same number of steps, scored on the held-out clips. One data set (clips and
shards, data seed 0) is prepared once in ``--work`` and reused by every run and by later invocations; the seed of
a run sets its model initialisation, masks and batch order.

Every variant is a backbone plus dotted config overrides (``model.*`` for every run of the variant, and optionally
pre-training-only ones such as ``optim.lr``). Rows are equal-parameter: each Mamba variant sets its width /
expand / state size so that its pre-training model has within 5 % of the ViT's parameter count (checked before
anything runs; the counts are printed and written into the table). The Markdown and JSON tables go to
``scripts/results/<--name>.{md,json}``; the JSON also holds every run, and a rerun with the same protocol skips
the (variant, seed) runs it already holds, so an interrupted table resumes. A variant that changes only the
pre-training (``optim.lr``, say) reuses the from-scratch fine-tuning of the variant with its model at that seed.

The tables in ``scripts/results/`` also hold rows of variants whose options lost and were removed from the library
(audio tokens time-major, the scan directions concatenated or averaged, gap-aware steps, mask tokens in the
encoder); their code lives at commit fdcce82.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("ablate_backbones")

RESULTS = Path(__file__).resolve().parent / "results"
PARAM_TOLERANCE = 0.05  # rows within 5 % of the ViT's parameter count


@dataclass(frozen=True)
class Variant:
    backbone: str
    overrides: tuple[str, ...] = ()  # dotted overrides for every run of the variant (model.*)
    pretrain: tuple[str, ...] = ()  # dotted overrides for the pre-training run only (optim.*, train.*)
    note: str = ""
    matched: bool = True  # False: a reference row outside the parameter tolerance (said so in the table)


# The Mamba rows use expand 1 (mixer width = model width), as the ViT-base-size Mamba recipe does: at the demo's
# width 64 the default expand 2 has 31 % more parameters than the ViT (row mamba_expand2, a reference only).
_M = ("model.mamba.expand=1",)
VARIANTS: dict[str, Variant] = {
    "vit": Variant("vit", note="ViT blocks (the reference)"),
    "mamba": Variant(
        "mamba", _M, note="Mamba blocks with CAV-MAE's objective (contrastive on the masked streams), expand 1"
    ),
    "mamba_dt": Variant(
        "mamba", _M + ("model.mamba.dt_min=0.01", "model.mamba.dt_max=1.0"), note="dt init range [0.01, 1]"
    ),
    "mamba_lr": Variant(
        "mamba", _M, pretrain=("optim.lr=5e-4", "optim.warmup_steps=50"), note="pre-training lr 5e-4, warmup 50"
    ),
    "mamba_nowd": Variant("mamba", _M, pretrain=("optim.weight_decay=0.0",), note="pre-training without weight decay"),
    "mamba_unmasked_c": Variant(
        "mamba",
        _M,
        pretrain=("model.contrast_mask_ratio=0",),
        note="THE MAMBA RECIPE (configs/tiny_mamba.yaml, the demo's mamba): contrastive embeddings from the unmasked "
        "streams (one more encoder pass), trained on what retrieval embeds",
    ),
    "vit_unmasked_c": Variant(
        "vit",
        pretrain=("model.contrast_mask_ratio=0",),
        note="the ViT with contrastive embeddings from the unmasked streams (is the gain Mamba's own?)",
    ),
    "mamba_expand2": Variant("mamba", (), note="the shipped default expand 2 (+31 % parameters)", matched=False),
}
DEFAULT_VARIANTS = ("vit", "mamba", "mamba_dt", "mamba_lr", "mamba_nowd")


# ---------------------------------------------------------------------------------------------------------------
# configs and sizes


def configure(s, data, run_dir: Path, *, seed: int, variant: Variant, task: str, init: str = ""):
    """The demo's config of one run, with the variant's overrides (pre-training ones only when pre-training)."""
    from cavmae.config import apply_overrides, validate
    from cavmae.demo.pipeline import demo_config

    # the bare tiny CAV-MAE config (no backbone recipe): every row says all it changes in its overrides
    cfg = demo_config(s, data, run_dir, seed=seed, backbone=variant.backbone, task=task, init=init, recipe=False)
    overrides = list(variant.overrides) + (list(variant.pretrain) if task == "pretrain" else [])
    apply_overrides(cfg, overrides + ["train.progress_bar=false"])
    validate(cfg)
    return cfg


def parameter_count(s, variant: Variant) -> int:
    """Parameters of the variant's pre-training model (encoder + decoder), as the table reports them."""
    import cavmae
    from cavmae.demo.heldout import DemoData

    placeholder = DemoData(Path("."), "unused", "unused", 0, 0, [])
    cfg = configure(s, placeholder, Path("unused"), seed=0, variant=variant, task="pretrain")
    return sum(p.numel() for p in cavmae.create_model(cfg.model).parameters())


def check_sizes(s, names: list[str]) -> dict[str, int]:
    """Parameter counts of the variants and the ViT; a matched variant off by more than 5 % is an error."""
    counts = {name: parameter_count(s, VARIANTS[name]) for name in dict.fromkeys(["vit", *names])}
    ref = counts["vit"]
    for name, n in counts.items():
        log.info("%-14s %9d parameters (%+.1f %% vs vit)", name, n, 100 * (n / ref - 1))
    off = [n for n in names if VARIANTS[n].matched and abs(counts[n] / ref - 1) > PARAM_TOLERANCE]
    if off:
        raise SystemExit(
            "variants outside the 5 % parameter tolerance of vit ("
            + ", ".join(f"{n}: {counts[n]} vs {ref}" for n in off)
            + "): adjust their model.mamba.expand / d_state / model.mlp_ratio overrides"
        )
    return counts


# ---------------------------------------------------------------------------------------------------------------
# one run


def scratch_key(variant: Variant, seed: int) -> str:
    """What a from-scratch fine-tuning run depends on: variants that differ only in pre-training share it."""
    return json.dumps([variant.backbone, sorted(variant.overrides), seed])


def run_one(name: str, seed: int, s, data, held, work: Path, scratch: dict[str, float]) -> dict[str, Any]:
    """Pre-train, retrieve, fine-tune (pre-trained and scratch) one variant at one seed; the numbers of one run.

    ``scratch`` maps :func:`scratch_key` to the top-1 of a from-scratch run already made in this table."""
    from cavmae.demo.heldout import evaluate_classifier, evaluate_retrieval
    from cavmae.demo.summary import pretraining_summary
    from cavmae.models.weights import load_model
    from cavmae.train import train

    variant = VARIANTS[name]
    run_dir = work / "runs" / f"{name}-seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted earlier attempt: start over
    timings: dict[str, float] = {}
    start = time.perf_counter()
    pre_run = train(configure(s, data, run_dir / "pretrain", seed=seed, variant=variant, task="pretrain"))
    timings["pretrain_s"] = time.perf_counter() - start
    pretrained = load_model(pre_run / "model")
    retrieval = evaluate_retrieval(pretrained, held, name).metrics
    views = masked_view_retrieval(pretrained, held)
    top1 = {}
    key = scratch_key(variant, seed)
    for kind, init in (("pretrained", str(pre_run / "model")), ("scratch", "")):
        t0 = time.perf_counter()
        if kind == "scratch" and key in scratch:  # the same config and seed: the same run (one thread, seeded)
            top1[kind] = scratch[key]
            timings["finetune_scratch_s"] = 0.0
            continue
        cfg = configure(s, data, run_dir / f"finetune_{kind}", seed=seed, variant=variant, task="finetune", init=init)
        top1[kind] = evaluate_classifier(train(cfg), held).top1
        timings[f"finetune_{kind}_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - start
    pre = pretraining_summary(pre_run)["end"]
    shutil.rmtree(run_dir)  # the numbers are kept; the small models are not needed
    return {
        "variant": name,
        "seed": seed,
        "R@5_v2a": retrieval["instance"]["v2a"]["r5"],
        "R@5_a2v": retrieval["instance"]["a2v"]["r5"],
        "R@5_v2a_views": views["video_to_audio"]["R@5"],
        "R@5_a2v_views": views["audio_to_video"]["R@5"],
        "top1_pretrained": top1["pretrained"],
        "top1_scratch": top1["scratch"],
        "scratch_key": key,
        **{f"end_{k}": v for k, v in pre.items()},
        **{k: round(v, 1) for k, v in timings.items()},
    }


MASKED_VIEWS = 4


def masked_view_retrieval(model, held, views: int = MASKED_VIEWS) -> dict:
    """Held-out retrieval with embeddings that are the mean over ``views`` masked views (the pre-training masks,
    seeds 1000..), each view pooled over its kept tokens as pre-training pools them: how well the encoder
    retrieves from the inputs it was trained on. Against the usual unmasked R@5 it shows whether an encoder
    meets something else in unmasked inputs than what it learnt on."""
    import torch
    import torch.nn.functional as F

    from cavmae.eval.metrics import retrieval_metrics

    cfg = model.cfg
    audio, video = [], []
    with torch.no_grad():
        model.eval()
        for batch in held.batches():
            a = v = 0.0
            for i in range(views):
                torch.manual_seed(1000 + i)
                kept_a, kept_v, _, _ = model.forward_encoder(batch["audio"], batch["frames"], cfg.mask_ratio_a,
                                                             cfg.mask_ratio_v, cfg.mask_mode)  # fmt: skip
                a = a + model.audio_stream(kept_a).mean(dim=1)  # [B, D]: the mean over the kept tokens
                v = v + model.video_stream(kept_v).mean(dim=1)
            audio.append(F.normalize(a / views, dim=-1))
            video.append(F.normalize(v / views, dim=-1))
    return retrieval_metrics(torch.cat(audio), torch.cat(video))


# ---------------------------------------------------------------------------------------------------------------
# the table

COLUMNS = [  # (key in a run, header, decimals)
    ("R@5_v2a", "R@5 v→a %", 1),
    ("R@5_a2v", "R@5 a→v %", 1),
    ("R@5_v2a_views", f"R@5 v→a, {MASKED_VIEWS} masked views %", 1),
    ("R@5_a2v_views", f"R@5 a→v, {MASKED_VIEWS} masked views %", 1),
    ("top1_pretrained", "FT top-1 pre-trained %", 1),
    ("top1_scratch", "FT top-1 scratch %", 1),
    ("ft_gain", "FT gain (pt − scratch)", 1),
    ("end_loss_rec_a", "end rec_a", 3),
    ("end_loss_rec_v", "end rec_v", 3),
    ("end_loss_c", "end loss_c", 3),
    ("total_s", "wall s / run", 0),
]


def aggregate(runs: list[dict], names: list[str], counts: dict[str, int]) -> list[dict]:
    rows = []
    for name in names:
        mine = [r for r in runs if r["variant"] == name]
        if not mine:
            continue
        row: dict[str, Any] = {"variant": name, "seeds": sorted(r["seed"] for r in mine), "params": counts[name]}
        for key, _, _ in COLUMNS:
            values = [r["top1_pretrained"] - r["top1_scratch"] if key == "ft_gain" else r.get(key) for r in mine]
            values = [x for x in values if x is not None]  # runs from before a column existed have no value
            row[key] = {
                "mean": statistics.fmean(values) if values else None,
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values),
            }
        rows.append(row)
    return rows


def markdown(rows: list[dict], protocol: dict, budget: dict, counts: dict[str, int]) -> str:
    p = protocol
    full = p["reduced"] is False
    lines = [
        "# Backbone ablation: ViT vs Mamba variants on the demo protocol",
        "",
        (
            "**Full protocol.**"
            if full
            else "**REDUCED PROTOCOL**: not the acceptance table (the full protocol is the full demo's 800 clips, "
            "16 classes, 1200 pre-training and 60 fine-tuning steps, 3 seeds); differences below the seed spread "
            "mean nothing."
        ),
        f"Data: {p['clips']} synthetic clips, {p['classes']} classes (data seed 0; {p['train_clips']} train, "
        f"{p['heldout_clips']} held-out; chance R@5 = {p['chance_R@5']:.1f} %). "
        f"Pre-training {p['pretrain_steps']} steps x {p['pretrain_batch']} clips, fine-tuning {p['finetune_steps']} "
        f"steps x {p['finetune_batch']} clips (pre-trained and scratch alike), seeds {p['seeds']}.",
        f"Budget: {budget['wall_min']:.1f} min wall for {budget['runs']} runs (data preparation not counted) on "
        f"{budget['machine']} "
        f"(torch threads 1; load average {budget['load_start']} at the start, {budget['load_end']} at the end). "
        f"Reproduce: `{p['command']}`.",
        "Cells: mean ± sd over seeds (sd only with 2+ seeds). Loss parts: mean over the last 5 % of pre-training "
        "steps. Parameters: the pre-training model (encoder + decoder). A variant that changes only pre-training "
        "reuses the from-scratch fine-tuning of its model at the same seed (the same config: the same run).",
        "",
        "| variant | params (vs vit) | " + " | ".join(h for _, h, _ in COLUMNS) + " | what |",
        "|" + "---|" * (len(COLUMNS) + 3),
    ]
    for row in rows:
        v = VARIANTS[row["variant"]]
        n = counts[row["variant"]]
        cells = []
        for key, _, dec in COLUMNS:
            m, sd, have = row[key]["mean"], row[key]["sd"], row[key].get("n", len(row["seeds"]))
            if m is None:
                cells.append("—")
                continue
            part = f" (n={have})" if have != len(row["seeds"]) else ""  # fewer runs than the row (a later column)
            cells.append(f"{m:.{dec}f}" + (f" ± {sd:.{dec}f}" if sd is not None else "") + part)
        size = f"{n:,} ({100 * (n / counts['vit'] - 1):+.1f} %)" + ("" if v.matched else " unmatched")
        what = "; ".join(x for x in (v.note, ", ".join(v.overrides + v.pretrain)) if x)
        lines.append(f"| {row['variant']} | {size} | " + " | ".join(cells) + f" | {what} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the quick demo's sizes (300 clips, 8 classes, 250 steps)")
    ap.add_argument("--steps", type=int, default=0, help="pre-training steps (default: the protocol's)")
    ap.add_argument("--finetune-steps", type=int, default=0, help="fine-tuning steps (default: the protocol's)")
    ap.add_argument("--clips", type=int, default=0, help="synthetic clips (default: the protocol's)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: 0,1,2)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated names (see --list)")
    ap.add_argument("--work", default="runs/ablate_backbones", help="data set and scratch runs")
    ap.add_argument("--name", default="ablate_backbones", help="table file name in scripts/results/")
    ap.add_argument("--results", default=str(RESULTS), help="folder of the tables")
    ap.add_argument("--list", action="store_true", help="print the variants and their sizes, run nothing")
    ap.add_argument("--verbose", action="store_true", help="the trainer's own logging too")
    return ap.parse_args(argv)


def settings_for(args: argparse.Namespace):
    from cavmae.demo.settings import FULL, QUICK

    s = QUICK if args.quick else FULL
    changes = {
        k: v
        for k, v in (
            ("pretrain_steps", args.steps),
            ("finetune_steps", args.finetune_steps),
            ("num_clips", args.clips),
        )
        if v
    }
    if "finetune_steps" in changes:
        changes["finetune_eval_every"] = max(1, changes["finetune_steps"] // 3)
    return dataclasses.replace(s, **changes)


def prepared_data(work: Path, s):
    """The data set for these sizes, made once (a marker file holds its description) and reused afterwards."""
    from cavmae.demo.heldout import DemoData
    from cavmae.demo.pipeline import make_data

    key = f"clips{s.num_clips}-classes{s.num_classes}-frame{s.frame_size}-dur{s.duration}"
    folder = work / "data" / key
    marker = folder / "data.json"
    if marker.is_file():
        d = json.loads(marker.read_text())
        log.info("reusing the data set in %s", folder)
        return DemoData(
            Path(d["clips_dir"]), *(d[k] for k in ("train", "heldout", "num_train", "num_heldout")), d["classes"]
        )
    if folder.exists():
        shutil.rmtree(folder)  # an unfinished earlier attempt
    folder.mkdir(parents=True)
    data = make_data(folder, s, seed=0)
    marker.write_text(
        json.dumps(
            {
                "clips_dir": str(data.clips_dir),
                "train": data.train_shards,
                "heldout": data.heldout_shards,
                "num_train": data.num_train,
                "num_heldout": data.num_heldout,
                "classes": data.class_names,
            }
        )
    )
    return data


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    seeds = [int(x) for x in args.seeds.split(",") if x]
    s = settings_for(args)

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(s.threads)  # as the demo: one thread per op on a shared machine
    try:
        return _main(args, argv, names, seeds, s)
    finally:
        torch.set_num_threads(threads)


def _main(args: argparse.Namespace, argv: list[str] | None, names: list[str], seeds: list[int], s) -> int:
    counts = check_sizes(s, list(VARIANTS) if args.list else names)
    if args.list:
        for name, v in VARIANTS.items():
            print(f"{name:14s} {counts[name]:9d}  {v.backbone:6s} {' '.join(v.overrides + v.pretrain)}  # {v.note}")
        return 0

    from cavmae.demo.heldout import load_heldout

    work = Path(args.work)
    data = prepared_data(work, s)
    held = load_heldout(
        configure(s, data, work / "unused", seed=0, variant=VARIANTS["vit"], task="pretrain"), data.heldout_shards
    )
    reduced = (s.num_clips, s.pretrain_steps, s.finetune_steps, len(seeds)) != (800, 1200, 60, 3) or args.quick
    protocol = {
        "clips": s.num_clips,
        "classes": s.num_classes,
        "train_clips": data.num_train,
        "heldout_clips": data.num_heldout,
        "chance_R@5": 100.0 * min(5, data.num_heldout) / max(data.num_heldout, 1),
        "pretrain_steps": s.pretrain_steps,
        "pretrain_batch": s.pretrain_batch,
        "finetune_steps": s.finetune_steps,
        "finetune_batch": s.finetune_batch,
        "seeds": seeds,
        "reduced": reduced,
        "command": "python scripts/ablate_backbones.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    out_json = Path(args.results) / f"{args.name}.json"
    out_md = out_json.with_suffix(".md")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    same = ("clips", "classes", "pretrain_steps", "pretrain_batch", "finetune_steps", "finetune_batch")
    runs: list[dict] = []
    spent = 0.0
    load_start = round(os.getloadavg()[0], 1)
    if out_json.is_file():
        old = json.loads(out_json.read_text())
        if all(old["protocol"].get(k) == protocol[k] for k in same):
            runs = [r for r in old["runs"] if r["variant"] in names and r["seed"] in seeds]
            spent = sum(r["total_s"] for r in runs)
            load_start = old["budget"]["load_start"]  # the table's first invocation
            log.info("resuming: %d runs already in %s", len(runs), out_json)
    done = {(r["variant"], r["seed"]) for r in runs}
    start = time.perf_counter()

    def write() -> None:
        wall = spent + time.perf_counter() - start
        budget = {
            "wall_min": wall / 60,
            "runs": len(runs),
            "machine": f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), shared",
            "load_start": load_start,
            "load_end": round(os.getloadavg()[0], 1),
        }
        rows = aggregate(runs, names, counts)
        out_json.write_text(
            json.dumps({"protocol": protocol, "budget": budget, "params": counts, "rows": rows, "runs": runs}, indent=1)
            + "\n"
        )
        out_md.write_text(markdown(rows, protocol, budget, counts))

    # seeds outermost: after the first seed every variant has a number, whatever stops the table later
    for seed in seeds:
        for name in names:
            if (name, seed) in done:
                continue
            log.info("%s seed %d ...", name, seed)
            scratch = {r["scratch_key"]: r["top1_scratch"] for r in runs if "scratch_key" in r}
            result = run_one(name, seed, s, data, held, work, scratch)
            runs.append(result)
            log.info(
                "%s seed %d: R@5 v->a %.1f a->v %.1f, top-1 pre-trained %.1f scratch %.1f (%.0f s)",
                name,
                seed,
                result["R@5_v2a"],
                result["R@5_a2v"],
                result["top1_pretrained"],
                result["top1_scratch"],
                result["total_s"],
            )
            write()
    write()
    print(out_md.read_text())
    return 0


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not verbose:  # the trainer logs every step; the table's own progress is enough here
        for name in ("cavmae", "accelerate"):
            logging.getLogger(name).setLevel(logging.WARNING)


if __name__ == "__main__":
    setup_logging("--verbose" in sys.argv)
    raise SystemExit(main())
