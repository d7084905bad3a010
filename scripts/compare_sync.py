"""CAV-MAE vs CAV-MAE Sync on the demo's event data, ViT and Mamba at equal size, several seeds, as one table.

    python scripts/compare_sync.py                                   # the table: 3 seeds, 600 pre-training steps
    python scripts/compare_sync.py --seeds 0 --clips 80 --classes 4 --pretrain-steps 20 --finetune-steps 4 \\
        --name compare_sync_smoke                                    # a check that it runs (minutes)
    python scripts/compare_sync.py --probe                           # + the frozen-encoder probes of its runs

For each (model, backbone, seed) it runs what ``cavmae demo [--recipe sync]`` runs
(:func:`cavmae.demo.pipeline.run_seed`): pre-training on the synthetic train clips, held-out retrieval at the
instance level (own pair) and the class level (same class), fine-tuning from the pre-trained model and from scratch
for the same number of steps, scored on the held-out clips. Both models train on the same clips and the same
16-frame shards (prepared once in ``--work``): CAV-MAE pairs a random frame with the whole clip's audio, Sync pairs
it with its audio window (``cavmae.demo.settings``: 112 fbank frames of the 2.6 s clip). The models have the demo's
size and contrastive weight; Sync adds configs/tiny_sync.yaml's global tokens and registers. Sync is scored per
frame (diagonal_mean, its own way) and by its middle frame's pair ("clip"), CAV-MAE by one pair per clip.

Runs go ``--jobs`` at a time, one process and one torch thread each. The Markdown and JSON tables go to
``scripts/results/<--name>.{md,json}``, with the command that made them and the sizes in the header; the JSON holds
every run, and a rerun with the same sizes skips the runs it already holds (an interrupted table resumes).

``--probe`` then adds each model's frozen-encoder probe to every run of the JSON that lacks one, from that run's
pre-trained model (``<work>/<model>_<backbone>/runs/seed<N>/pretrain/model``) without redoing the run: CAV-MAE's
linear probe (``finetune.freeze_base=true``, the linear head on one frame and the clip's audio) and Sync's attention
probe (``finetune.head=attention``: every frame with its audio window), trained on the same train shards for the
demo's fine-tuning steps at a learning rate per head (``--probe-lr``; ``PROBE_LR`` says why), scored on the
held-out clips as the demo scores its classifiers (the attention probe: every frame with its window).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("compare_sync")

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("cavmae", "sync")
BACKBONES = ("vit", "mamba")
MODEL_NAMES = {"cavmae": "CAV-MAE", "sync": "CAV-MAE Sync"}
# retrieval methods of a run (cavmae.demo.pipeline.run_seed): the model's own scoring, then Sync's middle pair
REDUCED_PRETRAIN_STEPS = 600
SCORINGS = {"pretrained": "own", "pretrained_clip": "clip"}
# the frozen-encoder probe of each model: CAV-MAE's linear probe (the paper), Sync's attention probe (its own)
PROBE_HEADS = {"cavmae": "linear", "sync": "attention"}
# optim.lr of each probe head (finetune.head_lr_mult, 10 in configs/tiny_finetune.yaml, multiplies it: only the head
# trains): each at the best of a sweep at a reduced size (scripts/results/README.md, "compare_sync: probe learning
# rates"). One rate for both would measure the rate, not the encoders: the attention head's two transformer blocks,
# trained from scratch, lose most of their accuracy at the rates the linear head needs
PROBE_LR = {"linear": 3.0e-3, "attention": 1.0e-4}
INSTANCE = ("r1", "r5", "r10", "median_rank")
CLASS = ("p1", "p5", "map")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from cavmae.demo.settings import FULL

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated (default 0,1,2)")
    p.add_argument("--models", default=",".join(MODELS), help="cavmae,sync")
    p.add_argument("--backbones", default=",".join(BACKBONES), help="vit,mamba")
    p.add_argument("--clips", type=int, default=FULL.num_clips, help=f"synthetic clips (demo: {FULL.num_clips})")
    p.add_argument("--classes", type=int, default=FULL.num_classes, help=f"classes (demo: {FULL.num_classes})")
    p.add_argument(
        "--pretrain-steps",
        type=int,
        default=REDUCED_PRETRAIN_STEPS,
        help=f"default {REDUCED_PRETRAIN_STEPS}, half the demo's {FULL.pretrain_steps}: the 12 runs of the grid then "
        "fit a quiet 2-core machine in about 20 minutes",
    )
    p.add_argument("--finetune-steps", type=int, default=FULL.finetune_steps, help=f"demo: {FULL.finetune_steps}")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs at a time (default: CPU cores)")
    p.add_argument("--work", default="runs/compare_sync", help="clips, shards and runs (reused by a rerun)")
    p.add_argument("--name", default="compare_sync", help="scripts/results/<name>.{md,json}")
    p.add_argument("--results", default=str(RESULTS), help="folder of the tables (default scripts/results)")
    p.add_argument(
        "--probe",
        action="store_true",
        help="then train and score the frozen-encoder probe of every run that lacks one (from its pre-trained model)",
    )
    p.add_argument(
        "--probe-lr",
        type=probe_lrs,
        default=dict(PROBE_LR),
        help="optim.lr of the probes: one number for both heads, or linear=X,attention=Y (default "
        + ",".join(f"{head}={lr:g}" for head, lr in PROBE_LR.items())
        + ")",
    )
    return p.parse_args(argv)


def probe_lrs(text: str) -> dict[str, float]:
    """``--probe-lr``: "X" (both heads) or "linear=X,attention=Y" -> {head: lr}."""
    try:
        if "=" not in text:
            return dict.fromkeys(PROBE_LR, float(text))
        lrs = {head.strip(): float(lr) for head, lr in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or linear=X,attention=Y, got {text!r}") from None
    if set(lrs) != set(PROBE_LR):
        raise argparse.ArgumentTypeError(f"expected a learning rate for each of {', '.join(PROBE_LR)}, got {text!r}")
    return lrs


def settings_for(args: argparse.Namespace):
    from cavmae.demo.settings import FULL

    every = min(FULL.finetune_eval_every, args.finetune_steps)
    return dataclasses.replace(
        FULL,
        num_clips=args.clips,
        num_classes=args.classes,
        pretrain_steps=args.pretrain_steps,
        finetune_steps=args.finetune_steps,
        finetune_eval_every=every,
    )


def prepare_data(work: Path, s) -> Any:
    """The demo's clips and 16-frame shards in ``work`` (data seed 0), made once and reused while the sizes match."""
    from cavmae.demo.heldout import DemoData
    from cavmae.demo.pipeline import make_data

    stamp = work / "data.json"
    sizes = {"num_clips": s.num_clips, "num_classes": s.num_classes, "num_frames": s.sync_frames}
    if stamp.is_file():
        saved = json.loads(stamp.read_text())
        if saved["sizes"] == sizes:
            d = saved["data"]
            return DemoData(Path(d.pop("clips_dir")), **d)
    for part in ("clips", "shards"):  # another size's data (ours: this script wrote it)
        shutil.rmtree(work / part, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    data = make_data(work, s, 0, s.sync_frames)
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(data).items()}
    stamp.write_text(json.dumps({"sizes": sizes, "data": plain}, indent=2) + "\n")
    return data


def one_run(work: Path, s, data, model: str, backbone: str, seed: int) -> dict[str, Any]:
    """One (model, backbone, seed) run of the demo's protocol -> its numbers (plain JSON)."""
    from cavmae.demo.pipeline import run_seed
    from cavmae.demo.summary import rounded

    start = time.perf_counter()
    out = work / f"{model}_{backbone}"
    shutil.rmtree(out / "runs" / f"seed{seed}", ignore_errors=True)  # a run of another size, or an interrupted one
    r = run_seed(out, s, data, backbone, seed, progress=False, recipe=model)
    return {
        "model": model,
        "backbone": backbone,
        "seed": seed,
        "retrieval": {name: rounded(r.retrieval[name].metrics) for name in SCORINGS if name in r.retrieval},
        "finetune_top1": {name: round(c.top1, 2) for name, c in r.classification.items()},
        "timings_s": r.timings,
        "wall_s": round(time.perf_counter() - start, 1),
    }


def probe_config(work: Path, s, data, model: str, backbone: str, seed: int, lrs: dict[str, float]):
    """The probe's run of one (model, backbone, seed): the demo's fine-tuning config from that run's pre-trained
    model with the encoder frozen and the model's probe head; the loop validates only at epoch ends and the last
    step (the table's number is the demo's evaluation of the final probe)."""
    from cavmae.config import merge, validate
    from cavmae.demo.settings import demo_config

    runs = work / f"{model}_{backbone}" / "runs" / f"seed{seed}"
    init = runs / "pretrain" / "model"
    cfg = demo_config(
        s, data, runs / "probe", seed=seed, backbone=backbone, task="finetune", init=str(init), method=model
    )
    merge(
        cfg,
        {
            "finetune": {"freeze_base": True, "head": PROBE_HEADS[model]},
            "optim": {"lr": lrs[PROBE_HEADS[model]]},
            "train": {"val_every": s.finetune_steps, "val_at_start": False, "progress_bar": False},
        },
    )
    validate(cfg)
    return cfg


def one_probe(work: Path, s, data, model: str, backbone: str, seed: int, lrs: dict[str, float]) -> dict[str, Any]:
    """Train the probe of one finished run and score it on the held-out clips -> {"probe_top1", "probe_wall_s"}."""
    import torch

    from cavmae.demo.heldout import HeldOut, evaluate_classifier, load_heldout
    from cavmae.train import train

    start = time.perf_counter()
    torch.set_num_threads(s.threads)
    cfg = probe_config(work, s, data, model, backbone, seed, lrs)
    if not Path(cfg.train.init).is_dir():
        raise FileNotFoundError(f"{cfg.train.init}: no pre-trained model of run {model} {backbone} seed {seed}")
    shutil.rmtree(cfg.train.out_dir, ignore_errors=True)  # an interrupted probe
    run_dir = train(cfg)
    held = load_heldout(cfg, data.heldout_shards)
    if cfg.finetune.head == "attention":  # the probe classifies a whole clip: every frame with its window
        held = HeldOut(held.frame_audio, held.all_frames, held.labels, held.keys)
    top1 = evaluate_classifier(run_dir, held).top1
    return {"probe_top1": round(top1, 2), "probe_wall_s": round(time.perf_counter() - start, 1)}


def _quiet_worker() -> None:
    logging.basicConfig(level=logging.WARNING)


def run_jobs(fn, args: tuple, todo: list[tuple], jobs: int, on_done) -> None:
    """``fn(*args, *job)`` for every job of ``todo``, ``jobs`` at a time, ``on_done(job, result)`` as each ends."""
    if jobs == 1:
        for job in todo:
            on_done(job, fn(*args, *job))
        return
    context = multiprocessing.get_context("spawn")  # no forked OpenMP state
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_quiet_worker) as pool:
        futures = {pool.submit(fn, *args, *job): job for job in todo}
        for future in as_completed(futures):  # each result saved as it ends: an interrupted table keeps it
            on_done(futures[future], future.result())


def run_all(work: Path, s, data, todo: list[tuple[str, str, int]], jobs: int, done: list[dict], save) -> None:
    def on_done(job: tuple, result: dict) -> None:
        done.append(result)
        log.info("done %s: %.0f s", job, result["wall_s"])
        save()

    run_jobs(one_run, (work, s, data), todo, jobs, on_done)


def probe_all(work: Path, s, data, runs: list[dict], lrs: dict[str, float], jobs: int, save) -> None:
    """The probe of every run in ``runs`` that lacks one, written into its entry."""
    todo = [(r["model"], r["backbone"], r["seed"]) for r in runs if "probe_top1" not in r]
    by_key = {(r["model"], r["backbone"], r["seed"]): r for r in runs}
    log.info("%d probes to do, %d at a time", len(todo), jobs)

    def on_done(job: tuple, result: dict) -> None:
        by_key[job[:3]].update(result)
        log.info("probe %s: top-1 %.1f %%, %.0f s", job[:3], result["probe_top1"], result["probe_wall_s"])
        save()

    run_jobs(one_probe, (work, s, data), [(*job, lrs) for job in todo], jobs, on_done)


def leaf(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 2),
        "sd": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def aggregate(runs: list[dict]) -> list[dict[str, Any]]:
    """Rows of the table: per (model, backbone, scoring), mean ± sd over seeds of every number."""
    rows = []
    for model in MODELS:
        for backbone in BACKBONES:
            mine = [r for r in runs if r["model"] == model and r["backbone"] == backbone]
            if not mine:
                continue
            for method, scoring in SCORINGS.items():
                if method not in mine[0]["retrieval"]:
                    continue
                ret = [r["retrieval"][method] for r in mine]
                row: dict[str, Any] = {
                    "model": model,
                    "backbone": backbone,
                    "scoring": ("diagonal_mean" if model == "sync" else "clip") if scoring == "own" else "clip",
                    "seeds": sorted(r["seed"] for r in mine),
                    "instance": {
                        d: {k: leaf([x["instance"][d][k] for x in ret]) for k in INSTANCE} for d in ("v2a", "a2v")
                    },
                    "class": {d: {k: leaf([x["class"][d][k] for x in ret]) for k in CLASS} for d in ("v2a", "a2v")},
                }
                if scoring == "own":  # fine-tuning does not depend on the retrieval scoring: once per model
                    row["finetune_top1"] = {
                        name: leaf([r["finetune_top1"][name] for r in mine]) for name in ("pretrained", "scratch")
                    }
                    row["wall_s"] = leaf([r["wall_s"] for r in mine])
                    if all("probe_top1" in r for r in mine):
                        row["probe_top1"] = leaf([r["probe_top1"] for r in mine])
                    row["cpu_s"] = leaf([r["timings_s"]["cpu"] for r in mine])
                rows.append(row)
    return rows


def pm(x: dict[str, float]) -> str:
    return f"{x['mean']:.1f} ± {x['sd']:.1f}" if x["n"] > 1 else f"{x['mean']:.1f}"


def probe_line(probe: dict[str, Any] | None, p: dict[str, Any]) -> str:
    if not probe:
        return "- Probe: not measured (`--probe` adds it)."
    lr, mult = probe["lr"], probe["head_lr_mult"]
    return (
        f"- Probe: held-out top-1 (%) of a probe on the frozen pre-trained encoder, {p['finetune_steps']} steps of "
        f"batch {p['finetune_batch']} on the train clips. CAV-MAE: the linear probe (one frame, the clip's audio) at "
        f"optim.lr {lr['linear']:g} (the head at {mult:g}x: {lr['linear'] * mult:g}); Sync: the attention probe "
        f"(every frame with its audio window, 2 blocks with their own CLS) at optim.lr {lr['attention']:g} (the head "
        f"at {mult:g}x: {lr['attention'] * mult:g}). {probe['wall_min']:.1f} min wall for the probes of the last "
        "`--probe`."
    )


def markdown(result: dict[str, Any]) -> str:
    p, lv = result["protocol"], result["levels"]
    reduced = [
        f"{name} {p[key]} (demo {p['demo'][key]})"
        for key, name in (
            ("num_clips", "clips"),
            ("num_classes", "classes"),
            ("pretrain_steps", "pre-training steps"),
            ("finetune_steps", "fine-tuning steps"),
        )
        if p[key] != p["demo"][key]
    ]
    size = "the full demo's sizes" if not reduced else "REDUCED sizes: " + ", ".join(reduced)
    lines = [
        "# CAV-MAE vs CAV-MAE Sync on the demo's event data",
        "",
        f"- Command: `{result['command']}`",
        f"- Sizes: {size}; {p['heldout_clips']} held-out clips; pre-training batch {p['pretrain_batch']}, "
        f"fine-tuning batch {p['finetune_batch']}; shards with {p['num_frames']} frames per clip; Sync's audio "
        f"window {p['sync_window']} fbank frames of the {p['clip_fbank_frames']}-frame clip; contrastive weight "
        f"{p['contrast_weight']} for both models.",
        f"- Mean ± sd over seeds {', '.join(map(str, result['seeds']))}; machine: {result['machine']}; "
        f"{result['wall_min']:.1f} min wall for the runs of this invocation ({result['jobs']} at a time).",
        "- Retrieval in %: instance level = own pair (R@k, median rank), class level = same class, own pair left out "
        "(P@1, mAP). v→a: video queries, audio gallery. Sync `diagonal_mean`: a clip's score is the mean over its "
        "16 frames of cos(audio window k, frame k); `clip`: one pair per clip (Sync: the middle frame and its "
        "window; CAV-MAE: the middle frame and the whole clip's audio).",
        "- Fine-tuning: held-out top-1 (%) after the same number of steps from the pre-trained model and from "
        "scratch (the same architecture, random init).",
        probe_line(result.get("probe"), p),
        "",
        "| model | backbone | scoring | inst. R@1 v→a | inst. R@5 v→a | inst. R@1 a→v | inst. R@5 a→v "
        "| med. rank v→a / a→v | class P@1 v→a / a→v | class mAP v→a / a→v | FT top-1 pre-trained | "
        "FT top-1 scratch | probe top-1 | CPU s / wall s per run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        i, c = row["instance"], row["class"]
        ft = row.get("finetune_top1")
        lines.append(
            f"| {MODEL_NAMES[row['model']]} | {row['backbone']} | {row['scoring']} | {pm(i['v2a']['r1'])} | "
            f"{pm(i['v2a']['r5'])} | {pm(i['a2v']['r1'])} | {pm(i['a2v']['r5'])} | "
            f"{pm(i['v2a']['median_rank'])} / {pm(i['a2v']['median_rank'])} | "
            f"{pm(c['v2a']['p1'])} / {pm(c['a2v']['p1'])} | {pm(c['v2a']['map'])} / {pm(c['a2v']['map'])} | "
            f"{pm(ft['pretrained']) if ft else '(as above)'} | {pm(ft['scratch']) if ft else ''} | "
            f"{pm(row['probe_top1']) if 'probe_top1' in row else ''} | "
            f"{pm(row['cpu_s']) + ' / ' + pm(row['wall_s']) if ft else ''} |"
        )
    ch, ce = lv["chance"], lv["class_only_ceiling"]["instance"]
    lines.append(
        f"| chance | | | {ch['instance']['v2a']['r1']:.1f} | {ch['instance']['v2a']['r5']:.1f} | "
        f"{ch['instance']['a2v']['r1']:.1f} | {ch['instance']['a2v']['r5']:.1f} | "
        f"{ch['instance']['v2a']['median_rank']:.1f} | {ch['class']['v2a']['p1']:.1f} | "
        f"{ch['class']['v2a']['map']:.1f} | {100 / p['num_classes']:.1f} | | {100 / p['num_classes']:.1f} | |"
    )
    lines.append(
        f"| class-only ceiling | | | {ce['v2a']['r1']:.1f} | {ce['v2a']['r5']:.1f} | {ce['a2v']['r1']:.1f} | "
        f"{ce['a2v']['r5']:.1f} | {ce['v2a']['median_rank']:.1f} | | | | | | |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    threads = torch.get_num_threads()
    try:
        return _main(argv)
    finally:
        torch.set_num_threads(threads)  # runs in this process set one thread; an in-process caller gets its own back


def _main(argv: list[str] | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    import torch

    from cavmae.demo.heldout import load_heldout, reference_levels
    from cavmae.demo.settings import FULL, check_recipes, clip_fbank_frames, demo_config
    from cavmae.demo.summary import rounded

    seeds = [int(x) for x in args.seeds.split(",")]
    models, backbones = args.models.split(","), args.backbones.split(",")
    for name, given, valid in (("--models", models, MODELS), ("--backbones", backbones, BACKBONES)):
        if not set(given) <= set(valid):
            log.error("%s must be a subset of %s, got %s", name, ",".join(valid), ",".join(given))
            return 2
    for backbone in backbones:
        for model in models:
            check_recipes(backbone, model)
    torch.set_num_threads(1)
    s = settings_for(args)
    work = Path(args.work)
    data = prepare_data(work, s)
    labels = load_heldout(
        demo_config(s, data, work, seed=0, backbone="vit", task="pretrain"), data.heldout_shards
    ).labels
    protocol = {
        **{k: getattr(s, k) for k in ("num_clips", "num_classes", "pretrain_steps", "finetune_steps")},
        **{k: getattr(s, k) for k in ("pretrain_batch", "finetune_batch", "sync_window", "contrast_weight")},
        "num_frames": data.num_frames,
        "clip_fbank_frames": clip_fbank_frames(s),
        "heldout_clips": data.num_heldout,
        "demo": {k: getattr(FULL, k) for k in ("num_clips", "num_classes", "pretrain_steps", "finetune_steps")},
    }
    results_dir = Path(args.results)
    out_json = results_dir / f"{args.name}.json"
    runs: list[dict] = []
    probe: dict[str, Any] | None = None  # the probes' settings, once the table holds probes
    runs_wall_min = 0.0  # of the invocation that did the last runs: a probe pass alone keeps it
    if out_json.is_file():
        old = json.loads(out_json.read_text())
        if old.get("protocol") == protocol:
            runs, probe, runs_wall_min = old["runs"], old.get("probe"), old["wall_min"]
            log.info("resuming: %d runs already in %s", len(runs), out_json)
    have = {(r["model"], r["backbone"], r["seed"]) for r in runs}
    # slow runs first (Mamba, then Sync's per-frame evaluation), so that parallel jobs end together
    todo = [(m, b, seed) for b in reversed(backbones) for m in reversed(models) for seed in seeds]
    todo = [job for job in todo if job not in have]
    command = "python scripts/compare_sync.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    start = time.perf_counter()

    def save() -> None:
        result = {
            "command": command.strip(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), 1 torch thread per run",
            "jobs": args.jobs,
            "wall_min": round((time.perf_counter() - start) / 60, 2) if todo else runs_wall_min,
            "seeds": sorted({r["seed"] for r in runs}),
            "protocol": protocol,
            "levels": rounded(reference_levels(labels)),
            "rows": aggregate(runs),
            "runs": runs,
        }
        if probe:
            result["probe"] = probe
        results_dir.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(result, indent=2) + "\n")
        (results_dir / f"{args.name}.md").write_text(markdown(result))

    log.info("%d runs to do (%d held-out clips), %d at a time", len(todo), data.num_heldout, args.jobs)
    run_all(work, s, data, todo, max(1, args.jobs), runs, save)
    if todo:  # the header's wall time is that of the runs: a probe pass after them does not add to it
        runs_wall_min, todo = round((time.perf_counter() - start) / 60, 2), []
    if args.probe:
        head_lr_mult = demo_config(s, data, work, seed=0, backbone="vit", task="finetune").finetune.head_lr_mult
        wanted = {"lr": args.probe_lr, "head_lr_mult": head_lr_mult, "heads": PROBE_HEADS}
        if probe is None or {k: probe[k] for k in wanted} != wanted:  # probes of other settings: measured again
            for r in runs:
                r.pop("probe_top1", None)
                r.pop("probe_wall_s", None)
        probe, probe_start = {**wanted, "wall_min": 0.0}, time.perf_counter()

        def save_probe() -> None:
            probe["wall_min"] = round((time.perf_counter() - probe_start) / 60, 2)
            save()

        probe_all(work, s, data, runs, args.probe_lr, max(1, args.jobs), save_probe)
    save()
    print((results_dir / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
