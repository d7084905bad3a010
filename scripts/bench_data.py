"""Data-loading benchmark: our shard loader against a CAV-MAE-style loader, samples/s per worker.

Both run single-threaded in this process (what one DataLoader worker does) on the same synthetic 10 s clips:

- ours: ``cavmae prepare`` shards (WAV audio + JPEG frames, shorter side 224) read by
  ``cavmae.data.loader.build_loader`` (training mode, random frame, no augmentation);
- baseline: the layout and per-sample work of the official CAV-MAE dataloader: one 16 kHz WAV file and ten
  224 x 224 JPEG files per clip (``frame_<i>/<id>.jpg``, as its extraction script writes them), and per sample
  ``torchaudio.load`` (soundfile when torchaudio has no torchcodec), DC removal, ``torchaudio.compliance.kaldi.fbank``,
  zero padding, normalisation, the masking transforms it builds per call, a random frame through PIL
  Resize(224, bicubic) / CenterCrop / ToTensor / Normalize, a multi-hot label vector, default collation.

After a warm-up pass of each, rounds alternate between the two loaders (one pass of each per round, order
rotating; helpers in scripts/benchtools.py). Printed: samples/s of each as median (min-max) over the rounds, and
the median (min-max) of the per-round ratios ours / baseline, per CPU-second of the process (per wall-clock second
too, which other jobs on the machine disturb), with the machine and its load average at start and end. The raw
rounds go to scripts/results/bench_data_<cpu|cuda>.json (or --out).

    python scripts/bench_data.py --clips 32 --rounds 5

``--tar`` also times the tar expansion alone: our stage (:func:`cavmae.data.loader.tar_samples`, the fast tar reader)
against webdataset's ``wds.tarfile_to_samples`` on the same shards, samples per CPU-second, interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

from benchtools import Record, Run, default_out, ratios, summary  # noqa: E402
from benchtools import rounds as interleaved_runs  # noqa: E402

from cavmae.config import DataConfig  # noqa: E402
from cavmae.data.loader import build_loader  # noqa: E402

log = logging.getLogger("bench_data")


class OfficialStyleDataset(torch.utils.data.Dataset):
    """Per-sample work of CAV-MAE's AudiosetDataset.__getitem__ in pre-training mode (mixup 0, no masking)."""

    def __init__(self, datafile: Path, label_csv: Path, num_classes: int):
        import csv

        self.data = json.loads(datafile.read_text())["data"]
        with open(label_csv) as f:
            self.index = {row["mid"]: int(row["index"]) for row in csv.DictReader(f)}
        self.num_classes = num_classes
        self.freqm, self.timem, self.target_length, self.melbins = 0, 0, 1024, 128
        import torchvision.transforms as T

        self.preprocess = T.Compose(
            [
                T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
                T.CenterCrop(224),
                T.ToTensor(),
                T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            ]
        )

    def __len__(self) -> int:
        return len(self.data)

    @staticmethod
    def _load(path: str) -> tuple[torch.Tensor, int]:
        import torchaudio

        try:
            return torchaudio.load(path)
        except ImportError:  # torchaudio >= 2.9 without torchcodec: same decode through soundfile
            import soundfile as sf

            wave, sr = sf.read(path, dtype="float32", always_2d=True)
            return torch.from_numpy(wave.T.copy()), sr

    def _wav2fbank(self, filename: str) -> torch.Tensor:
        import torchaudio

        waveform, sr = self._load(filename)
        waveform = waveform - waveform.mean()
        fbank = torchaudio.compliance.kaldi.fbank(
            waveform,
            htk_compat=True,
            sample_frequency=sr,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=self.melbins,
            dither=0.0,
            frame_shift=10,
        )
        p = self.target_length - fbank.shape[0]
        if p > 0:
            fbank = torch.nn.ZeroPad2d((0, 0, 0, p))(fbank)
        elif p < 0:
            fbank = fbank[0 : self.target_length, :]
        return fbank

    def __getitem__(self, index: int):
        import torchaudio
        from PIL import Image

        datum = self.data[index]
        label_indices = np.zeros(self.num_classes)
        fbank = self._wav2fbank(datum["wav"])
        frame_idx = random.randint(0, 9)
        image = self.preprocess(Image.open(f"{datum['video_path']}/frame_{frame_idx}/{datum['video_id']}.jpg"))
        for label_str in datum["labels"].split(","):
            label_indices[self.index[label_str]] = 1.0
        label_indices = torch.FloatTensor(label_indices)
        freqm = torchaudio.transforms.FrequencyMasking(self.freqm)
        timem = torchaudio.transforms.TimeMasking(self.timem)
        fbank = torch.transpose(fbank, 0, 1).unsqueeze(0)
        if self.freqm != 0:
            fbank = freqm(fbank)
        if self.timem != 0:
            fbank = timem(fbank)
        fbank = torch.transpose(fbank.squeeze(0), 0, 1)
        fbank = (fbank - (-5.081)) / 4.4849
        return fbank, image, label_indices


def make_data(root: Path, clips: int, classes: int, size: tuple[int, int], workers: int) -> dict:
    """Synthetic 10 s clips -> our shards + the official layout (wav + 224 px frame JPEGs + datafile)."""
    from PIL import Image

    from cavmae.data.clips import make_synthetic_dataset
    from cavmae.data.media import decode_clip
    from cavmae.data.prepare import prepare_shards
    from cavmae.data.sources import plan_inputs

    ds = make_synthetic_dataset(
        root / "synth", num_clips=clips, num_classes=classes, duration=10.0, size=size, fps=8, seed=0, workers=workers
    )
    plan = plan_inputs(videos=ds.videos, csv=ds.csv, label_csv=ds.label_csv)
    manifest = prepare_shards(plan, root / "shards", name="bench", samples_per_shard=16, workers=workers)
    urls = [str(root / "shards" / s["file"]) for s in manifest["shards"]]

    import soundfile as sf

    official = root / "official"
    entries = []
    for clip in plan.inputs:
        decoded = decode_clip(clip.source, start=clip.clip_start, end=clip.clip_end, num_frames=10)
        wav = official / "audio" / f"{clip.key}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(wav, np.clip(decoded.audio, -1, 1), 16000, subtype="PCM_16")
        for i, frame in enumerate(decoded.frames):  # the official extraction: Resize(224) + CenterCrop(224)
            img = Image.fromarray(frame)
            w, h = img.size
            s = 224 / min(w, h)
            img = img.resize((round(w * s), round(h * s)), Image.BICUBIC)
            left, top = (img.size[0] - 224) // 2, (img.size[1] - 224) // 2
            out = official / "frames" / f"frame_{i}" / f"{clip.key}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            img.crop((left, top, left + 224, top + 224)).save(out)
        entries.append(
            {
                "video_id": clip.key,
                "wav": str(wav),
                "video_path": str(official / "frames"),
                "labels": ",".join(clip.labels),
            }
        )
    datafile = official / "train.json"
    datafile.write_text(json.dumps({"data": entries}))
    return {"urls": urls, "datafile": datafile, "label_csv": ds.label_csv, "classes": classes, "clips": clips}


def _count(iterable) -> int:
    """Samples in one pass over a loader (batches are dicts from ours, tuples from the baseline)."""
    return sum(len(batch["keys"]) if isinstance(batch, dict) else batch[0].shape[0] for batch in iterable)


def _rates(runs: list[Run]) -> tuple[list[float], list[float]]:
    """Samples per CPU-second and per wall-clock second of each run (a run's value is its sample count)."""
    return [r.value / max(r.cpu_s, 1e-9) for r in runs], [r.value / max(r.wall_s, 1e-9) for r in runs]


def run_benchmark(data: dict, rounds: int = 5, batch_size: int = 8) -> dict:
    """Samples/s per worker of both loaders (interleaved rounds after a warm-up pass, one thread) and the ratios.

    Rates are given per CPU-second of the process (what one worker delivers on a core of its own; stable on a
    shared machine, where other jobs take the core away) and per wall-clock second. Medians at the top level,
    ``summary`` holds median / min / max of each, ``raw`` the per-round runs.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a DataLoader worker runs single-threaded
    try:
        cfg = DataConfig(batch_size=batch_size, num_workers=0, shuffle_buffer=64, drop_last=False)
        ours = build_loader(cfg, data["urls"], num_classes=data["classes"], train=True, seed=0)
        base = torch.utils.data.DataLoader(
            OfficialStyleDataset(data["datafile"], data["label_csv"], data["classes"]),
            batch_size=batch_size,
            shuffle=True,
            num_workers=0,
        )
        epoch = iter(range(1_000_000))

        def ours_pass() -> int:
            ours.set_epoch(next(epoch))
            return _count(ours)

        runs = interleaved_runs({"ours": ours_pass, "baseline": lambda: _count(base)}, rounds, warmup=1)
        (ours_cpu, ours_wall), (base_cpu, base_wall) = _rates(runs["ours"]), _rates(runs["baseline"])
        per_cpu, per_wall = ratios(ours_cpu, base_cpu), ratios(ours_wall, base_wall)
        return {
            "ours_samples_per_s": statistics.median(ours_cpu),
            "baseline_samples_per_s": statistics.median(base_cpu),
            "ratio": statistics.median(per_cpu),
            "ratios": per_cpu,
            "ours_wall_samples_per_s": statistics.median(ours_wall),
            "baseline_wall_samples_per_s": statistics.median(base_wall),
            "wall_ratio": statistics.median(per_wall),
            "load_errors": ours.errors.total,
            "summary": {
                "ours_per_cpu_s": summary(ours_cpu),
                "baseline_per_cpu_s": summary(base_cpu),
                "ratio_per_cpu_s": summary(per_cpu),
                "ours_per_wall_s": summary(ours_wall),
                "baseline_per_wall_s": summary(base_wall),
                "ratio_per_wall_s": summary(per_wall),
            },
            "raw": {name: [vars(r) for r in rs] for name, rs in runs.items()},
        }
    finally:
        torch.set_num_threads(threads)


def run_tar_benchmark(urls: list[str], rounds: int = 5, repeat: int = 20) -> dict:
    """Samples per CPU-second of tar expansion alone: ours (tar_samples) against wds.tarfile_to_samples."""
    import webdataset as wds

    from cavmae.data.loader import LoadErrors, tar_samples

    errors = LoadErrors()

    def ours() -> int:
        return sum(1 for _ in wds.DataPipeline(wds.SimpleShardList(urls * repeat), tar_samples(errors)))

    def theirs() -> int:
        return sum(1 for _ in wds.DataPipeline(wds.SimpleShardList(urls * repeat), wds.tarfile_to_samples()))

    runs = interleaved_runs({"ours": ours, "wds": theirs}, rounds, warmup=1)  # warm-up: page cache
    (ours_cpu, _), (wds_cpu, _) = _rates(runs["ours"]), _rates(runs["wds"])
    per_round = ratios(ours_cpu, wds_cpu)
    return {
        "ours_samples_per_s": statistics.median(ours_cpu),
        "wds_samples_per_s": statistics.median(wds_cpu),
        "ratio": statistics.median(per_round),
        "ratios": per_round,
        "errors": errors.total,
        "samples": {"ours": runs["ours"][0].value, "theirs": runs["wds"][0].value},  # per pass (urls x repeat)
        "summary": {"ours": summary(ours_cpu), "wds": summary(wds_cpu), "ratio": summary(per_round)},
        "raw": {name: [vars(r) for r in rs] for name, rs in runs.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("runs/bench_data"), help="where the data is written")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--size", type=int, nargs=2, default=[320, 240], metavar=("W", "H"), help="synthetic video size")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (each runs one pass of every loader)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="processes for writing and preparing the data")
    p.add_argument("--tar", action="store_true", help="also time the tar expansion alone (ours vs webdataset's)")
    p.add_argument("--out", type=Path, help="JSON of the raw rounds (default: scripts/results/bench_data_<dev>.json)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("cavmae").setLevel(logging.WARNING)
    data = make_data(args.root, args.clips, args.classes, tuple(args.size), args.workers)
    record = Record("bench_data", vars(args))  # the machine once the data is made: timing starts here
    result = run_benchmark(data, args.rounds, args.batch_size)
    tar = run_tar_benchmark(data["urls"], args.rounds) if args.tar else None
    raw = {"loaders": result["raw"]} | ({"tar": tar["raw"]} if tar else {})
    summaries = {"loaders": result["summary"], "load_errors": result["load_errors"]}
    record.finish(raw=raw, summary=summaries | ({"tar": tar["summary"], "tar_errors": tar["errors"]} if tar else {}))

    s = result["summary"]
    print(record.machine_lines())
    print(f"{args.clips} clips, batch {args.batch_size}, 1 thread, {args.rounds} interleaved rounds; median (min-max)")
    print(f"ours      {_spread(s['ours_per_cpu_s'])} samples per CPU-second; ", end="")
    print(f"{_spread(s['ours_per_wall_s'])} per wall s")
    print(
        f"baseline  {_spread(s['baseline_per_cpu_s'])} samples per CPU-second; "
        f"{_spread(s['baseline_per_wall_s'])} per wall s"
    )
    print(f"ratio ours / baseline {_spread(s['ratio_per_cpu_s'], 'x', 2)} per CPU-second (per-round ratios); ", end="")
    print(f"{_spread(s['ratio_per_wall_s'], 'x', 2)} per wall-clock second; {result['load_errors']} load errors")
    if tar:
        t = tar["summary"]
        print(
            f"tar expansion: ours {_spread(t['ours'], '', 0)}, wds.tarfile_to_samples {_spread(t['wds'], '', 0)} "
            f"samples per CPU-second; ratio {_spread(t['ratio'], 'x', 2)}"
        )
    print(f"wrote {record.write(args.out or default_out('bench_data'))}")
    return 0


def _spread(s: dict[str, float], unit: str = "", digits: int = 1) -> str:
    """'12.3 (11.0-14.1)' from a summary dict; the unit, if any, after the median ('1.52x (1.40-1.61)')."""
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


if __name__ == "__main__":
    sys.exit(main())
