"""The first thing to run on a GPU machine: the compiled selective-scan kernels against the reference, their
determinism and speed, and one bf16 training step of the ViT base, Mamba base and CAV-MAE Sync base models. Run through
scripts/gpu_check.sh (one command, a plain checkout, PYTHONPATH=.); writes one Markdown and one JSON result under
scripts/results/ and exits non-zero when a check fails.

    scripts/gpu_check.sh             # on the GPU machine (needs CUDA; about 3-6 minutes on an H200)
    scripts/gpu_check.sh --dry-run   # the same script on CPU at tiny shapes, kernels under Triton's interpreter

It imports torch, triton, timm, torchvision (through timm) and accelerate's dependencies at most, plus the standard
library (cavmae/__init__.py imports nothing itself and, in a plain checkout, maps cavmae.kernels to kernels/), and
the check fails if decord, webdataset, wandb or av were imported.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("decord", "webdataset", "wandb", "av")
BENCH = {"batch": 32, "dim": 1536, "length": 708, "d_state": 16}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, Triton interpreter")
    p.add_argument("--out", type=Path, default=REPO / "scripts" / "results", help="folder for the .md and .json")
    p.add_argument("--skip-models", action="store_true", help="kernel checks only")
    p.add_argument("--exp-rate", type=float, default=4.18e12, help="exp2 (MUFU) results per second of the GPU")
    p.add_argument("--bandwidth", type=float, default=4.8e12, help="DRAM bytes per second of the GPU")
    return p.parse_args()


class _Absent:
    """A meta-path finder that makes the GPU image's missing packages missing here too (optional imports of
    third-party code then take their fallback, and any import of ours fails loudly)."""

    @staticmethod
    def find_spec(name: str, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ModuleNotFoundError(f"gpu_check: {name} is not available on the GPU image", name=name)
        return None


def import_project():
    """cavmae.kernels and its Triton module, from this checkout (gpu_check.sh puts it first on PYTHONPATH)."""
    import cavmae.kernels as kernels
    from cavmae.kernels import triton_scan

    return kernels, triton_scan, nan_filled_outputs


@contextlib.contextmanager
def nan_filled_outputs():
    """Within this block the kernels' result buffers start as NaN (``new_output`` replaced in every kernel module that
    binds it), so an element a kernel never writes shows as NaN in the comparison."""
    import torch

    def nan_output(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    modules = [m for name, m in list(sys.modules.items()) if name.startswith("cavmae.kernels.")
               and getattr(getattr(m, "new_output", None), "__module__", None) == "cavmae.kernels._common"]  # fmt: skip
    originals = [(m, m.new_output) for m in modules]
    try:
        for m in modules:
            m.new_output = nan_output
        yield
    finally:
        for m, original in originals:
            m.new_output = original


@dataclass
class Case:
    name: str
    batch: int
    dim: int
    length: int
    d_state: int = 16
    groups: int = 0
    dtype: str = "bf16"
    reverse: bool = False
    strided: bool = False
    bidirectional: bool = False
    z: bool = True


def cases(dry: bool) -> list[Case]:
    if dry:
        return [
            Case("tiny-bidir-bf16", 1, 6, 37, d_state=3, strided=True, bidirectional=True),
            Case("tiny-fp32-grouped-reverse", 1, 4, 21, d_state=2, groups=2, dtype="fp32", reverse=True),
        ]
    return [
        Case("bench-bidir-bf16", **BENCH, strided=True, bidirectional=True),
        Case("bench-bf16", **BENCH),
        Case("odd-fp32-L1029", 2, 48, 1029, dtype="fp32"),
        Case("odd-bf16-grouped-reverse", 2, 66, 707, groups=3, reverse=True, strided=True),
        Case("odd-fp32-N5-noz", 3, 40, 333, d_state=5, dtype="fp32", z=False),
        Case("odd-fp32-L1", 3, 40, 1, dtype="fp32", bidirectional=True),
    ]


def make_inputs(torch, case: Case, device: str, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[case.dtype]
    b, d, L, n, G = case.batch, case.dim, case.length, case.d_state, case.groups

    def act(*channels, scale=1.0, shift=0.0):
        x = torch.randn(b, L, *channels, generator=gen) * scale + shift
        x = x.movedim(1, -1)
        x = x if case.strided else x.contiguous()
        return x.to(device=device, dtype=dtype)

    bc = (G, n) if G else (n,)
    dt = torch.exp(torch.rand(d, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    x = {
        "u": act(d),
        "delta": act(d, scale=0.5),
        "A": (-torch.arange(1, n + 1, dtype=torch.float32) * (0.5 + torch.rand(d, 1, generator=gen))).to(device),
        "B": act(*bc),
        "C": act(*bc),
        "D": torch.randn(d, generator=gen).to(device),
        "delta_bias": (dt + torch.log(-torch.expm1(-dt))).to(device),
    }
    return {k: v.detach().requires_grad_() for k, v in x.items()}


KEYS = ("u", "delta", "A", "B", "C", "D", "delta_bias")


def scan_outputs(torch, kernels, triton_scan, case: Case, fwd: dict, bwd: dict, z, impl: str, config=None):
    """(out, last states...) of one case with one implementation ('triton' or 'reference')."""
    if case.bidirectional:
        if impl == "triton":
            kw = {"config": config} if config else {}
            return triton_scan.selective_scan_bidirectional_triton(
                tuple(fwd[k] for k in KEYS), tuple(bwd[k] for k in KEYS), z, True, **kw
            )
        out_f, last_f = kernels.selective_scan_reference(**fwd, z=z, delta_softplus=True, return_last_state=True)
        out_b, last_b = kernels.selective_scan_reference(
            **bwd, z=z, delta_softplus=True, return_last_state=True, reverse=True
        )
        return out_f + out_b, last_f, last_b
    if impl == "triton":
        kw = {"config": config} if config else {}
        return triton_scan.selective_scan_triton(
            **fwd, z=z, delta_softplus=True, return_last_state=True, reverse=case.reverse, **kw
        )
    return kernels.selective_scan_reference(
        **fwd, z=z, delta_softplus=True, return_last_state=True, reverse=case.reverse
    )


def forward_backward(torch, fn, leaves: dict, seed: int = 7) -> dict:
    outputs = fn()
    gen = torch.Generator().manual_seed(seed)
    cotangents = [torch.randn(o.shape, generator=gen).to(o) for o in outputs]
    grads = torch.autograd.grad(outputs, tuple(leaves.values()), cotangents)
    found = {f"out{i}" if i else "out": o for i, o in enumerate(outputs)}
    found.update({f"d{k}": g for k, g in zip(leaves, grads)})
    return found


def check_case(torch, kernels, triton_scan, nan_filled_outputs, case: Case, device: str, config) -> dict:
    fwd, bwd = make_inputs(torch, case, device, 1), make_inputs(torch, case, device, 2)
    z = None
    if case.z:
        z = make_inputs(torch, case, device, 3)["u"].detach().requires_grad_()
    leaves = {f"f_{k}": fwd[k] for k in KEYS}
    if case.bidirectional:
        leaves.update({f"b_{k}": bwd[k] for k in KEYS})
    if z is not None:
        leaves["z"] = z
    with nan_filled_outputs():
        actual = forward_backward(torch, lambda: scan_outputs(torch, kernels, triton_scan, case, fwd, bwd, z,
                                                               "triton", config), leaves)  # fmt: skip
    as64 = [{k: v.detach().double().requires_grad_() for k, v in x.items()} for x in (fwd, bwd)]
    z64 = z.detach().double().requires_grad_() if z is not None else None
    leaves64 = {f"f_{k}": as64[0][k] for k in KEYS}
    if case.bidirectional:
        leaves64.update({f"b_{k}": as64[1][k] for k in KEYS})
    if z64 is not None:
        leaves64["z"] = z64
    expected = forward_backward(torch, lambda: scan_outputs(torch, kernels, triton_scan, case, as64[0], as64[1], z64,
                                                             "reference"), leaves64)  # fmt: skip
    tol = 1e-4 if case.dtype == "fp32" else 2e-2
    errors = {}
    for k, e in expected.items():
        a = actual[k].detach().double()
        e = e.detach().double()
        diff = (a - e).abs()
        errors[k] = {
            "max_abs": diff.max().item(),
            "max_rel": (diff.max() / e.abs().max().clamp_min(1e-30)).item(),
            "l2_rel": (diff.norm() / e.norm().clamp_min(1e-30)).item(),
            "nan": bool(a.isnan().any().item()),
        }
    worst = max(v["max_rel"] if not v["nan"] else math.inf for v in errors.values())
    return {"case": vars(case), "tolerance": tol, "errors": errors, "worst_max_rel": worst, "ok": worst <= tol}


def check_determinism(torch, kernels, triton_scan, case: Case, device: str, config) -> dict:
    fwd, bwd = make_inputs(torch, case, device, 1), make_inputs(torch, case, device, 2)
    z = make_inputs(torch, case, device, 3)["u"].detach().requires_grad_()
    leaves = {**{f"f_{k}": fwd[k] for k in KEYS}, **{f"b_{k}": bwd[k] for k in KEYS}, "z": z}
    runs = [
        forward_backward(
            torch, lambda: scan_outputs(torch, kernels, triton_scan, case, fwd, bwd, z, "triton", config), leaves
        )  # fmt: skip
        for _ in range(2)
    ]
    differing = [k for k in runs[0] if not torch.equal(runs[0][k], runs[1][k])]
    return {"case": case.name, "differing": differing, "ok": not differing}


def floor_seconds(case: Case, args: argparse.Namespace, dtype_bytes: int, block_l: int) -> dict:
    """Lower bounds of forward+backward of one direction: exp evaluations and DRAM bytes (bench_scan.py's model)."""
    b, d, L, n = case.batch, case.dim, case.length, case.d_state
    bdl, bnl = b * d * L, b * n * L
    states = b * d * n * max(math.ceil(L / block_l) - 1, 1) * 4
    exps = 2 * bdl * n + 10 * bdl
    n_bytes = 11 * bdl * dtype_bytes + 6 * bnl * dtype_bytes + 2 * states
    return {"exp_s": exps / args.exp_rate, "bytes_s": n_bytes / args.bandwidth}


def time_fn(torch, fn, dry: bool) -> float:
    if dry:
        fn()
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    import triton.testing

    return triton.testing.do_bench(fn, warmup=10, rep=100, return_mode="median") * 1e-3


def timings(torch, kernels, triton_scan, args, dry: bool, device: str, config) -> list[dict]:
    case = Case("tiny", 1, 6, 37, d_state=3) if dry else Case("bench", **BENCH)
    x = make_inputs(torch, case, device, 1)
    z = make_inputs(torch, case, device, 3)["u"].detach().requires_grad_()
    grad = torch.ones_like(x["u"])
    rows = []
    impls = [("triton", lambda **kw: triton_scan.selective_scan_triton(**kw, config=config)),
             ("torch path", kernels.selective_scan_torch)]  # fmt: skip
    for name, scan in impls:
        detached = {k: v.detach() for k, v in x.items()}

        def forward(scan=scan, detached=detached) -> None:
            scan(**detached, z=z.detach(), delta_softplus=True)

        def forward_backward_(scan=scan) -> None:
            for t in x.values():
                t.grad = None
            scan(**x, z=z, delta_softplus=True).backward(grad)

        for label, fn in (("forward", forward), ("forward+backward", forward_backward_)):
            rows.append({"impl": name, "pass": label, "seconds": time_fn(torch, fn, dry)})
        if device == "cuda":
            torch.cuda.empty_cache()
    floor = floor_seconds(case, args, 2, config.block_l if config else 64)
    floor_fb = max(floor.values())
    for row in rows:
        row["floor_s"] = floor_fb if row["pass"] == "forward+backward" else floor_fb / 2.5
        row["vs_floor"] = row["seconds"] / row["floor_s"]
    return rows


def train_step(torch, model, opt, audio, frames, device: str) -> float:
    """One bf16-autocast training step of the pre-training model; returns the loss."""
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        loss = model(audio, frames)["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


# the models of the bf16 step: name -> (backbone, recipe whose model section it takes; None = the defaults)
STEP_MODELS = {"vit": ("vit", None), "mamba": ("mamba", None), "vit-sync": ("vit", "pretrain_sync")}


def model_steps(torch, args, dry: bool, device: str) -> list[dict]:
    import cavmae.models.mamba  # noqa: F401  (registers the "mamba" block)
    from cavmae.config import ModelConfig, load_config, recipe_path
    from cavmae.models.cavmae import CAVMAE

    results = []
    for name, (backbone, recipe) in STEP_MODELS.items():
        # the Sync base recipe: global tokens, 8 registers, a 416-frame audio window
        base = load_config(recipe_path(recipe)).model if recipe else ModelConfig(backbone=backbone)
        if dry:
            cfg = ModelConfig(backbone=backbone, embed_dim=64, num_heads=4, modality_depth=1, shared_depth=1,
                              decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4, audio_length=128,
                              num_mel_bins=32, image_size=32, global_tokens=base.global_tokens,
                              registers=min(base.registers, 2), contrast_weight=base.contrast_weight)  # fmt: skip
            cfg.mamba.scan_impl = "torch"
            batch = 2
        else:
            cfg = base
            batch = 16
        torch.manual_seed(0)
        model = CAVMAE(cfg).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        audio = torch.randn(batch, cfg.audio_length, cfg.num_mel_bins, device=device)
        frames = torch.randn(batch, 3, cfg.image_size, cfg.image_size, device=device)
        step = functools.partial(train_step, torch, model, opt, audio, frames, device)
        loss = step()  # warm-up: compiles the kernels
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        reps = 1 if dry else 5
        t0 = time.perf_counter()
        for _ in range(reps):
            loss = step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / reps
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
        results.append({"backbone": name, "batch": batch, "loss": loss, "finite": math.isfinite(loss),
                        "step_s": seconds, "samples_per_s": batch / seconds, "peak_gib": peak,
                        "ok": math.isfinite(loss)})  # fmt: skip
        del model, opt
        if device == "cuda":
            torch.cuda.empty_cache()
    return results


def markdown(report: dict) -> str:
    lines = [f"# GPU check ({'dry run, CPU, interpreter' if report['dry_run'] else report['env']['device']})", ""]
    lines += [f"- {k}: {v}" for k, v in report["env"].items()] + [f"- result: **{'PASS' if report['ok'] else 'FAIL'}**"]
    lines += ["", "## Compiled kernels vs the float64 reference", "",
              "| case | worst max-rel error | tolerance | ok |", "|---|---|---|---|"]  # fmt: skip
    for c in report["correctness"]:
        lines.append(f"| {c['case']['name']} | {c['worst_max_rel']:.2e} | {c['tolerance']:g} | {c['ok']} |")
    lines += ["", "Per-tensor errors (max abs, max rel, L2 rel) are in the JSON.", "", "## Determinism", ""]
    for d in report["determinism"]:
        verdict = "bit-identical" if d["ok"] else f"DIFFER in {d['differing']}"
        lines.append(f"- {d['case']}: two backward passes {verdict}")
    lines += ["", "## Kernel timings (median)", ""]
    lines += ["| impl | pass | ms | floor ms | x floor |", "|---|---|---|---|---|"]
    for t in report["timings"]:
        lines.append(f"| {t['impl']} | {t['pass']} | {t['seconds'] * 1e3:.3f} | {t['floor_s'] * 1e3:.3f} | "
                     f"{t['vs_floor']:.1f} |")  # fmt: skip
    if report["models"]:
        lines += ["", "## One bf16 training step", "", "| backbone | batch | samples/s | peak GiB | loss |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for m in report["models"]:
            lines.append(f"| {m['backbone']} | {m['batch']} | {m['samples_per_s']:.1f} | {m['peak_gib']:.2f} | "
                         f"{m['loss']:.4f} |")  # fmt: skip
    if report["errors"]:
        lines += ["", "## Errors", "", "```", *report["errors"], "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    started = time.perf_counter()
    sys.meta_path.insert(0, _Absent())
    import torch
    import triton

    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --dry-run on a CPU machine)", file=sys.stderr)
        return 2
    kernels, triton_scan, nan_filled_outputs = import_project()
    if args.dry_run:
        config = triton_scan.ScanConfig(block_l=16, block_d=4)
        assert triton_scan.INTERPRETED, "--dry-run: the kernels should run on the interpreter"
    else:
        config = triton_scan.DEFAULT_CONFIG
        assert not triton_scan.INTERPRETED, "TRITON_INTERPRET is set: unset it to check the compiled kernels"
    env = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "kernels": "interpreted" if triton_scan.INTERPRETED else "compiled",
        "config": str(config),
    }
    report = {"dry_run": args.dry_run, "env": env, "correctness": [], "determinism": [], "timings": [],
              "models": [], "errors": []}  # fmt: skip

    def guarded(label: str, fn) -> None:
        try:
            fn()
        except Exception:
            report["errors"].append(f"{label}: {traceback.format_exc()}")

    for case in cases(args.dry_run):
        guarded(case.name, lambda case=case: report["correctness"].append(
            check_case(torch, kernels, triton_scan, nan_filled_outputs, case, device, config)))  # fmt: skip
        if device == "cuda":
            torch.cuda.empty_cache()
    det_case = cases(args.dry_run)[0]
    guarded("determinism", lambda: report["determinism"].append(
        check_determinism(torch, kernels, triton_scan, det_case, device, config)))  # fmt: skip
    guarded("timings", lambda: report["timings"].extend(
        timings(torch, kernels, triton_scan, args, args.dry_run, device, config)))  # fmt: skip
    if not args.skip_models:
        guarded("models", lambda: report["models"].extend(model_steps(torch, args, args.dry_run, device)))
    # the model steps ran the kernels through selective_scan, whose first use of each specialisation checks itself
    rejected = kernels.self_check.rejected()
    if rejected:
        report["errors"].append(f"kernels replaced by the torch path after disagreeing with it: {rejected}")
    loaded = sorted(name for name in FORBIDDEN if name in sys.modules)
    if loaded:
        report["errors"].append(f"imported modules the GPU image does not have: {loaded}")
    report["env"]["seconds"] = round(time.perf_counter() - started, 1)
    report["ok"] = (
        not report["errors"]
        and all(c["ok"] for c in report["correctness"])
        and all(d["ok"] for d in report["determinism"])
        and all(m["ok"] for m in report["models"])
        and len(report["correctness"]) == len(cases(args.dry_run))
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "gpu_check_dryrun" if args.dry_run else "gpu_check_" + env["device"].lower().replace(" ", "_")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.out / stem}.md and .json")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
