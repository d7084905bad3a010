"""Data-loading benchmark: our shard loader against a CAV-MAE-style loader, samples/s per worker.

Both run single-threaded in this process (what one DataLoader worker does) on the same synthetic 10 s clips:

- ours: ``cavmae prepare`` shards (WAV audio + JPEG frames, shorter side 224) read by
  ``cavmae.data.loader.build_loader`` (training mode, random frame, no augmentation);
- baseline: the layout and per-sample work of the official CAV-MAE dataloader: one 16 kHz WAV file and ten
  224 x 224 JPEG files per clip (``frame_<i>/<id>.jpg``, as its extraction script writes them), and per sample
  ``torchaudio.load`` (soundfile when torchaudio has no torchcodec), DC removal, ``torchaudio.compliance.kaldi.fbank``,
  zero padding, normalisation, the masking transforms it builds per call, a random frame through PIL
  Resize(224, bicubic) / CenterCrop / ToTensor / Normalize, a multi-hot label vector, default collation.

Rounds alternate between the two loaders; the ratio reported is the median over rounds of ours / baseline, in
samples per CPU-second of the process (per wall-clock second too, which other jobs on the machine disturb).

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
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

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


def _time(iterable) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, samples) for one pass."""
    wall, cpu, n = time.perf_counter(), time.process_time(), 0
    for batch in iterable:
        n += len(batch["keys"]) if isinstance(batch, dict) else batch[0].shape[0]
    return time.perf_counter() - wall, time.process_time() - cpu, n


def run_benchmark(data: dict, rounds: int = 5, batch_size: int = 8) -> dict:
    """Samples/s per worker of both loaders (alternating rounds, one thread) and the median ratios.

    Rates are given per CPU-second of the process (what one worker delivers on a core of its own; stable on a
    shared machine, where other jobs take the core away) and per wall-clock second.
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
        _time(ours), _time(base)  # warm-up: imports, page cache, allocator
        rates: dict[str, list[float]] = {"ours_cpu": [], "baseline_cpu": [], "ours_wall": [], "baseline_wall": []}
        for r in range(rounds):
            ours.set_epoch(r)
            order = [("ours", ours), ("baseline", base)]
            for name, loader in order if r % 2 == 0 else order[::-1]:
                wall, cpu, n = _time(loader)
                rates[f"{name}_cpu"].append(n / cpu)
                rates[f"{name}_wall"].append(n / wall)
        ratios = [o / b for o, b in zip(rates["ours_cpu"], rates["baseline_cpu"])]
        wall_ratios = [o / b for o, b in zip(rates["ours_wall"], rates["baseline_wall"])]
        return {
            "ours_samples_per_s": statistics.median(rates["ours_cpu"]),
            "baseline_samples_per_s": statistics.median(rates["baseline_cpu"]),
            "ratio": statistics.median(ratios),
            "ratios": ratios,
            "ours_wall_samples_per_s": statistics.median(rates["ours_wall"]),
            "baseline_wall_samples_per_s": statistics.median(rates["baseline_wall"]),
            "wall_ratio": statistics.median(wall_ratios),
            "load_errors": ours.errors.total,
        }
    finally:
        torch.set_num_threads(threads)


def run_tar_benchmark(urls: list[str], rounds: int = 5, repeat: int = 20) -> dict:
    """Samples per CPU-second of tar expansion alone: ours (iter_shard) against wds.tarfile_to_samples."""
    import webdataset as wds

    from cavmae.data.loader import LoadErrors, tar_samples

    errors = LoadErrors()

    def ours():
        return wds.DataPipeline(wds.SimpleShardList(urls * repeat), tar_samples(errors))

    def theirs():
        return wds.DataPipeline(wds.SimpleShardList(urls * repeat), wds.tarfile_to_samples())

    counts: dict[str, int] = {}

    def rate(make) -> float:
        cpu, n = time.process_time(), 0
        for _ in make():
            n += 1
        counts[make.__name__] = n
        return n / max(time.process_time() - cpu, 1e-9)

    rate(ours), rate(theirs)  # warm-up (page cache)
    rates: dict[str, list[float]] = {"ours": [], "wds": []}
    for r in range(rounds):
        order = [("ours", ours), ("wds", theirs)]
        for name, make in order if r % 2 == 0 else order[::-1]:
            rates[name].append(rate(make))
    ratios = [a / b for a, b in zip(rates["ours"], rates["wds"])]
    return {
        "ours_samples_per_s": statistics.median(rates["ours"]),
        "wds_samples_per_s": statistics.median(rates["wds"]),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "errors": errors.total,
        "samples": counts,  # per pass, {"ours": n, "theirs": n}
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("runs/bench_data"), help="where the data is written")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--size", type=int, nargs=2, default=[320, 240], metavar=("W", "H"), help="synthetic video size")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="processes for writing and preparing the data")
    p.add_argument("--tar", action="store_true", help="also time the tar expansion alone (ours vs webdataset's)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("cavmae").setLevel(logging.WARNING)
    data = make_data(args.root, args.clips, args.classes, tuple(args.size), args.workers)
    result = run_benchmark(data, args.rounds, args.batch_size)
    log.info(
        "ours      %.1f samples/s per worker (per CPU-second; %.1f per wall-clock second)",
        result["ours_samples_per_s"],
        result["ours_wall_samples_per_s"],
    )
    log.info(
        "baseline  %.1f samples/s per worker (per CPU-second; %.1f per wall-clock second)",
        result["baseline_samples_per_s"],
        result["baseline_wall_samples_per_s"],
    )
    log.info(
        "ratio     %.2fx per CPU-second (rounds: %s); %.2fx per wall-clock second",
        result["ratio"],
        ", ".join(f"{r:.2f}" for r in result["ratios"]),
        result["wall_ratio"],
    )
    if args.tar:
        tar = run_tar_benchmark(data["urls"], args.rounds)
        log.info(
            "tar expansion: ours %.0f, wds.tarfile_to_samples %.0f samples per CPU-second; ratio %.2fx (rounds: %s)",
            tar["ours_samples_per_s"],
            tar["wds_samples_per_s"],
            tar["ratio"],
            ", ".join(f"{r:.2f}" for r in tar["ratios"]),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
