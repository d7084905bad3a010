"""Forward+backward time of the CAV-MAE pre-training model: SDPA attention vs explicit softmax(QK^T)V.

    python scripts/bench_model.py                  # base model, batch 2, current device
    python scripts/bench_model.py --config configs/tiny.yaml --batch 16

Both variants share the same weights and inputs and run in the same process; the printed ratio is
explicit / SDPA time (above 1 means SDPA is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import cavmae


def time_step(model: torch.nn.Module, audio: torch.Tensor, frames: torch.Tensor, iters: int, amp: bool) -> float:
    """Median seconds of one forward+backward (after one warm-up)."""
    times = []
    for i in range(iters + 1):
        model.zero_grad(set_to_none=True)
        if audio.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(audio.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(audio, frames)["loss"]
        loss.backward()
        if audio.is_cuda:
            torch.cuda.synchronize()
        if i:  # the first call warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="recipe YAML (default: CAV-MAE base)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    results = {}
    state = None
    cfg = cavmae.load_config(args.config, args.overrides)
    audio = torch.randn(args.batch, cfg.model.audio_length, cfg.model.num_mel_bins, device=device)
    frames = torch.randn(args.batch, 3, cfg.model.image_size, cfg.model.image_size, device=device)
    for impl in ("sdpa", "math"):
        cfg.model.attention = impl
        model = cavmae.create_model(cfg.model).to(device).train()
        if state is None:
            state = model.state_dict()
        model.load_state_dict(state)
        torch.manual_seed(1)  # same masks for both variants
        results[impl] = time_step(model, audio, frames, args.iters, args.bf16)
        del model
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    params = sum(p.numel() for p in cavmae.create_model(cfg.model).parameters())
    print(f"device: {name}; model: {params / 1e6:.1f} M parameters; batch {args.batch}; bf16={args.bf16}")
    print(f"{'attention':<10} {'fwd+bwd s':>10}")
    for impl, t in results.items():
        print(f"{impl:<10} {t:>10.3f}")
    print(f"ratio explicit / SDPA: {results['math'] / results['sdpa']:.2f}x")


if __name__ == "__main__":
    main()
