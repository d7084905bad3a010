"""Bytes allocated per Mamba block forward + backward on CPU (torch profiler), today's mixer vs the one before.

    python scripts/bench_mamba_block.py                          # tiny width, unmasked audio length
    python scripts/bench_mamba_block.py --dim 768 --expand 1 --batch 2 --length 708

"Before" is the mixer as it was until the token-major layout (kept here, and only here, as ``LegacyMixer``): a
padded copy of the input per direction for the conv, each x projection and the out projection on a transposed
(B, C, L) view (a copy inside the Linear).
Both run the same parameters on the same input; the script checks that they compute the same output and gradients,
then profiles one forward + backward of a whole block (norms and MLP included) with ``profile_memory=True``.
"Allocated" is the sum over ops of the bytes each op allocated itself (an op's own temporaries freed before it
returns are not counted); "copies" is the part allocated by ops that only move data (pad, clone / contiguous, cat,
the zeros of a slice's backward). The timing is a side note: forward + backward, the two mixers interleaved,
median and range of ``--repeats`` rounds, on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cavmae.config import ModelConfig  # noqa: E402
from cavmae.kernels import selective_scan_bidirectional  # noqa: E402
from cavmae.models.mamba import BiMambaMixer, MambaBlock  # noqa: E402

COPY_OPS = ("aten::constant_pad_nd", "aten::clone", "aten::contiguous", "aten::cat", "aten::slice_backward")


class LegacyMixer(BiMambaMixer):
    """The mixer's forward before the token-major layout, on the same parameters (the baseline of this script)."""

    def _inputs(self, d, x: torch.Tensor, reverse: bool):
        k = d.conv1d.kernel_size[0]
        if reverse:
            pad = F.conv1d(F.pad(x, (0, k - 1)), d.conv1d.weight.flip(-1), d.conv1d.bias, groups=x.shape[1])
        else:
            pad = F.conv1d(F.pad(x, (k - 1, 0)), d.conv1d.weight, d.conv1d.bias, groups=x.shape[1])
        u = F.silu(pad)
        dbc = d.x_proj(u.transpose(1, 2))
        dt, b, c = dbc.split([d.dt_rank, d.d_state, d.d_state], dim=-1)
        delta = (dt @ d.dt_proj.weight.t()).transpose(1, 2)
        return u, delta, -torch.exp(d.A_log.float()), b.transpose(1, 2), c.transpose(1, 2), d.D.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(x).transpose(1, 2)
        xi, z = xz.chunk(2, dim=1)
        f, b = self._inputs(self.fwd, xi, False), self._inputs(self.bwd, xi, True)
        kw = {"z": z, "delta_softplus": True, "impl": self.cfg.scan_impl}
        bias = (self.fwd.dt_proj.bias.float(), self.bwd.dt_proj.bias.float())
        y = selective_scan_bidirectional(*zip(f, b), delta_bias=bias, **kw)
        return self.out_proj(y.transpose(1, 2))


def make_blocks(args: argparse.Namespace) -> tuple[MambaBlock, MambaBlock]:
    cfg = ModelConfig(backbone="mamba", embed_dim=args.dim)
    cfg.mamba.expand = args.expand
    torch.manual_seed(0)
    new = MambaBlock(args.dim, 1, cfg)
    new.mixer.reset_backbone_parameters()
    old = MambaBlock(args.dim, 1, cfg)
    old.mixer = LegacyMixer(args.dim, cfg.mamba)
    old.load_state_dict(new.state_dict())
    return new, old


def step(block: MambaBlock, x: torch.Tensor, dy: torch.Tensor) -> None:
    block(x).backward(dy)


def profile_bytes(block: MambaBlock, x: torch.Tensor, dy: torch.Tensor) -> dict:
    """Bytes allocated by the ops of one forward + backward, total and by op."""
    from torch.profiler import ProfilerActivity, profile

    step(block, x, dy)  # warm-up (lazy allocations, caches)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(block, x, dy)
    by_op: Counter = Counter()
    copies = 0
    for e in prof.events():
        if e.name == "[memory]" or e.self_cpu_memory_usage <= 0:
            continue
        chain, p = [], e
        while p is not None:
            chain.append(p.name)
            p = p.cpu_parent
        by_op[" < ".join(chain[:3])] += e.self_cpu_memory_usage
        if any(name in COPY_OPS for name in chain[:4]):
            copies += e.self_cpu_memory_usage
    return {"allocated": sum(by_op.values()), "copies": copies, "by_op": by_op}


def check_same(new: MambaBlock, old: MambaBlock, x: torch.Tensor, dy: torch.Tensor) -> float:
    """Largest difference between the two mixers' outputs and gradients (input and every parameter)."""
    diffs = []
    grads = []
    for block in (new, old):
        block.zero_grad()
        xi = x.detach().clone().requires_grad_()
        y = block(xi)
        y.backward(dy)
        grads.append([y.detach(), xi.grad] + [p.grad for p in block.parameters()])
    for a, b in zip(*grads):
        if a is None and b is None:  # the audio / video norm pairs: unused without a modality
            continue
        diffs.append((a - b).abs().max().item() / max(b.abs().max().item(), 1e-12))
    return max(diffs)


def timing(new: MambaBlock, old: MambaBlock, x: torch.Tensor, dy: torch.Tensor, repeats: int) -> dict:
    seconds: dict[str, list[float]] = {"after": [], "before": []}
    for _ in range(repeats):
        for name, block in (("after", new), ("before", old)):
            t0 = time.perf_counter()
            step(block, x, dy)
            seconds[name].append(time.perf_counter() - t0)
    ratios = [b / a for a, b in zip(seconds["after"], seconds["before"])]
    return {
        **{f"{k}_s": statistics.median(v) for k, v in seconds.items()},
        "speedup": statistics.median(ratios),
        "speedup_range": (min(ratios), max(ratios)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=64, help="model width (tiny: 64)")
    ap.add_argument("--expand", type=int, default=2, help="mixer width / model width (shipped default 2)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=256, help="tokens (tiny unmasked audio: 256)")
    ap.add_argument("--repeats", type=int, default=5, help="timing rounds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=0, help="also print the N largest allocations by op")
    ap.add_argument("--json", default="", help="write the figures to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    unit = args.batch * args.length * args.dim * args.expand * 4  # one fp32 (B, L, d_inner) activation
    print(
        f"Mamba block forward+backward, CPU fp32, B={args.batch} L={args.length} dim={args.dim} expand={args.expand}"
        f" (one B x L x d_inner fp32 activation = {unit / 2**20:.2f} MiB), torch threads {args.threads}"
    )
    print(
        "| allocated before | allocated after | after/before | copies before | copies after |"
        " max rel. diff | fwd+bwd before / after (median) | speedup (range) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    new, old = make_blocks(args)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, args.length, args.dim, generator=g, requires_grad=True)
    dy = torch.randn(args.batch, args.length, args.dim, generator=g)
    diff = check_same(new, old, x, dy)
    before, after = profile_bytes(old, x, dy), profile_bytes(new, x, dy)
    t = timing(new, old, x, dy, args.repeats)
    mib = 2**20
    print(
        f"| {before['allocated'] / mib:.1f} MiB | {after['allocated'] / mib:.1f} MiB |"
        f" {after['allocated'] / before['allocated']:.2f} | {before['copies'] / mib:.1f} MiB |"
        f" {after['copies'] / mib:.1f} MiB | {diff:.1e} | {t['before_s'] * 1e3:.0f} / {t['after_s'] * 1e3:.0f} ms |"
        f" {t['speedup']:.2f}x ({t['speedup_range'][0]:.2f}-{t['speedup_range'][1]:.2f}) |"
    )
    if args.top:
        for name, res in (("before", before), ("after", after)):
            print(f"  {name}: largest allocations")
            for op, n in res["by_op"].most_common(args.top):
                print(f"    {n / mib:7.2f} MiB  {op}")
    results = {
        "allocated_before": before["allocated"],
        "allocated_after": after["allocated"],
        "copies_before": before["copies"],
        "copies_after": after["copies"],
        "max_rel_diff": diff,
        **t,
    }
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
