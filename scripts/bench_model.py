"""Forward+backward time of the CAV-MAE pre-training model: SDPA attention vs explicit softmax(QK^T)V.

    python scripts/bench_model.py                  # base model, batch 2, current device
    python scripts/bench_model.py --config configs/tiny.yaml --batch 16

Both variants share the same weights and inputs and run in the same process, interleaved: each round times one
step of each (order rotating), --repeats rounds after a warm-up round. Printed: median (min-max) seconds per step
and the median (min-max) of the per-round ratios explicit / SDPA (above 1 means SDPA is faster), the machine with
its load average at start and end; the raw rounds go to scripts/results/bench_model_<config>_b<batch>_<device>.json
(or --out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from benchtools import Record, default_out, interleaved, ratio_spread, ratios, spread, summary  # noqa: E402

import cavmae  # noqa: E402


def step(model: torch.nn.Module, audio: torch.Tensor, frames: torch.Tensor, amp: bool) -> None:
    """One forward+backward (synchronised on a GPU)."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(audio.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = model(audio, frames)["loss"]
    loss.backward()
    if audio.is_cuda:
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="recipe YAML (default: CAV-MAE base)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (each times every variant once)")
    p.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, help="JSON of the raw rounds (default: scripts/results/bench_model_*.json)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    record = Record("bench_model", vars(args))

    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = cavmae.load_config(args.config, args.overrides)
    audio = torch.randn(args.batch, cfg.model.audio_length, cfg.model.num_mel_bins, device=device)
    frames = torch.randn(args.batch, 3, cfg.model.image_size, cfg.model.image_size, device=device)
    models, state = {}, None
    for impl in ("sdpa", "math"):
        cfg.model.attention = impl
        model = cavmae.create_model(cfg.model).to(device).train()
        if state is None:
            state = model.state_dict()
        model.load_state_dict(state)
        models[impl] = model

    def run(impl: str):
        def call() -> None:
            torch.manual_seed(1)  # the same masks for both variants in every round
            step(models[impl], audio, frames, args.bf16)

        return call

    times = interleaved({impl: run(impl) for impl in models}, args.repeats)
    params = sum(p.numel() for p in models["sdpa"].parameters())
    record.finish(
        raw={"seconds_per_step": times},
        summary={
            "params_m": params / 1e6,
            "seconds_per_step": {impl: summary(t) for impl, t in times.items()},
            "ratio_explicit_over_sdpa": summary(ratios(times["math"], times["sdpa"])),
        },
    )
    print(record.machine_lines())
    print(f"model: {params / 1e6:.1f} M parameters; batch {args.batch}; bf16={args.bf16}; {args.repeats} rounds")
    for impl, t in times.items():
        print(f"{impl:<6} fwd+bwd {spread(t)}")
    print(f"ratio explicit / SDPA: {ratio_spread(times['math'], times['sdpa'])} (per-round ratios)")
    tag = f"{Path(args.config).stem if args.config else 'base'}_b{args.batch}"
    print(f"wrote {record.write(args.out or default_out('bench_model', tag))}")


if __name__ == "__main__":
    main()
