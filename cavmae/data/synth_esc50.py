"""A generated dataset in ESC-50's layout (``cavmae synth --layout esc50``): audio-only clips and ``meta/esc50.csv``.

Layout, as the real dataset's::

    <out>/audio/<fold>-<source id>-<take>-<target>.wav   mono 16-bit PCM (ESC-50: 5 s at 44.1 kHz)
    <out>/meta/esc50.csv                                 filename,fold,target,category,esc10,src_file,take

Clip ``i`` has class ``i % classes`` and fold ``(i // classes) % folds + 1``, so every fold holds every class when
there are at least ``classes * folds`` clips. Each class is a tone of its own pitch (with its octave, a noise floor
and an amplitude envelope of its own rate), so a small model can tell the classes apart; the phase, gain, onset
and noise of each clip come from ``(seed, clip)``. The same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

HEADER = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
# ESC-50's first categories (target order), then class_<k>
CATEGORIES = ("dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow")


@dataclass
class Esc50Dataset:
    """Where the generated dataset is: the audio folder (``prepare --videos``) and the CSV (``prepare --csv``)."""

    root: Path
    audio: Path
    csv: Path
    num_clips: int
    num_classes: int
    folds: int


def category(target: int) -> str:
    return CATEGORIES[target] if target < len(CATEGORIES) else f"class_{target}"


def render_clip(target: int, num_classes: int, *, duration: float, sample_rate: int, seed: int) -> np.ndarray:
    """float32 [round(duration * sample_rate)] in [-1, 1]: class `target`'s sound, varied by `seed`."""
    rng = np.random.default_rng(seed)
    n = round(duration * sample_rate)
    t = np.arange(n) / sample_rate
    pitch = 220.0 * 2.0 ** (3.0 * target / max(num_classes, 1))  # classes spread over three octaves
    rate = 1.0 + target % 4  # envelope cycles per second
    phase = rng.uniform(0, 2 * np.pi)
    tone = np.sin(2 * np.pi * pitch * t + phase) + 0.5 * np.sin(4 * np.pi * pitch * t + phase)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    onset = rng.uniform(0, 0.2 * duration)
    sound = tone * envelope * (t >= onset)
    wave = rng.uniform(0.2, 0.5) * sound / 1.5 + 0.01 * rng.standard_normal(n)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def make_esc50_dataset(
    out: str | Path,
    *,
    num_clips: int = 100,
    num_classes: int = 10,
    folds: int = 5,
    duration: float = 5.0,
    sample_rate: int = 44100,
    seed: int = 0,
    overwrite: bool = False,
) -> Esc50Dataset:
    """Write the dataset into `out` (see the module docstring). Raises FileExistsError when `out` already holds an
    ESC-50 layout and `overwrite` is False; with `overwrite` the earlier audio files are removed first."""
    import soundfile as sf

    if num_clips < 1 or num_classes < 1 or folds < 1:
        raise ValueError("clips, classes and folds must be at least 1")
    root = Path(out)
    audio, meta = root / "audio", root / "meta"
    csv_path = meta / "esc50.csv"
    if csv_path.exists() and not overwrite:
        raise FileExistsError(f"{root} already holds an ESC-50 layout ({csv_path}); pass overwrite (--overwrite)")
    if overwrite and audio.is_dir():
        for p in audio.glob("*.wav"):
            p.unlink()
    audio.mkdir(parents=True, exist_ok=True)
    meta.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_clips):
        target = i % num_classes
        fold = (i // num_classes) % folds + 1
        source_id = 100000 + i
        name = f"{fold}-{source_id}-A-{target}.wav"
        wave = render_clip(target, num_classes, duration=duration, sample_rate=sample_rate, seed=seed * 1_000_003 + i)
        pcm = np.clip(np.rint(wave * 32768.0), -32768, 32767).astype(np.int16)
        sf.write(audio / name, pcm, sample_rate, subtype="PCM_16")
        rows.append((name, fold, target, category(target), str(target < 10 and target % 2 == 0), source_id, "A"))
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)
    log.info("wrote %d clips of %d classes in %d folds: %s, %s", num_clips, num_classes, folds, audio, csv_path)
    return Esc50Dataset(root, audio, csv_path, num_clips, num_classes, folds)
