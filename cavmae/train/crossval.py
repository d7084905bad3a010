"""K-fold cross-validation (ESC-50's protocol): one fine-tuning per fold, trained on the other folds, evaluated on it.

Layout of ``train.out_dir`` (DIR)::

    DIR/folds/                 the shard set split by fold: fold{K}-000000.tar ..., fold{K}-manifest.json, and
                               folds.json (the index: source shards, each fold's shards); written once, by whichever
                               process gets there first (a scratch folder renamed into place)
    DIR/fold{K}/               fold K's fine-tuning run (config, logs, val_metrics.jsonl, final model)
    DIR/fold{K}/result.json    fold K's per-epoch accuracy curve; written last: the fold's done marker
    DIR/crossval.json          every fold's curve, the mean curve, the best epoch of the mean curve (the number
                               AST reports) and each fold's own best (for reference only: it is optimistic)

Folds come from each sample's json key ``fold`` (``cavmae prepare --csv meta/esc50.csv`` writes it). The split
copies the samples into shards per fold, so each fold's run is an ordinary fine-tuning run over ordinary shard
sets (exact epoch lengths from the manifests). A fold whose ``result.json`` exists is not run again; one that was
interrupted resumes from its newest checkpoint. Folds may run as separate processes or machines sharing DIR
(:func:`run_fold`), and :func:`gather` reads the finished ones.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

from cavmae.config import Config, ConfigError
from cavmae.data.prepare import FORMAT
from cavmae.data.shards import TarShardWriter, expand_shards, iter_shard, manifest_path, shard_name

log = logging.getLogger(__name__)

FOLDS_DIR = "folds"
INDEX = "folds.json"
RESULT = "result.json"
SUMMARY = "crossval.json"
SAMPLES_PER_SHARD = 100  # ESC-50: 4 shards of 100 per fold, so loader workers share a fold's training shards


def fold_dir(out_dir: str | Path, fold: int) -> Path:
    return Path(out_dir) / f"fold{fold}"


# ---------------------------------------------------------------------------------------------------------------
# the split


def _modalities(members: dict) -> set[str]:
    video = any(ext.endswith(".jpg") or ext == "mp4" for ext in members)
    return {"audio", "video"} if video else {"audio"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source_label_index(urls: list[str]) -> list:
    """The label index of the source manifests (they must agree), or [] when there is none."""
    found = None
    for url in urls:
        path = manifest_path(url)
        if path is None or not path.is_file():
            continue
        records = json.loads(path.read_text()).get("label_index") or []
        if found is not None and records != found:
            raise ValueError(f"{path} has another label index than the other shards: cross-validate one data set")
        found = records
    return found or []


class FoldWriter:
    """Streams one fold's samples into shards of SAMPLES_PER_SHARD in `folder`; :meth:`close` writes its manifest."""

    def __init__(self, folder: Path, fold: int):
        self.folder, self.fold, self.name = folder, fold, f"fold{fold}"
        self.shards: list[dict] = []
        self.labels: Counter = Counter()
        self.writer: TarShardWriter | None = None
        self.keys: list[str] = []
        self.kinds: list[set[str]] = []

    def add(self, sample: dict, labels: list[int]) -> None:
        if self.writer is None:
            self.writer = TarShardWriter(self.folder / shard_name(self.name, len(self.shards)))
        self.writer.write(sample["__key__"], {k: v for k, v in sample.items() if not k.startswith("__")})
        self.keys.append(sample["__key__"])
        self.kinds.append(_modalities(sample))
        self.labels.update(labels)
        if len(self.keys) == SAMPLES_PER_SHARD:
            self._finish_shard()

    def _finish_shard(self) -> None:
        self.writer.close()
        path = self.writer.path
        self.shards.append(
            {
                "file": path.name,
                "count": len(self.keys),
                "bytes": path.stat().st_size,
                "sha256": _sha256(path),
                "first_key": self.keys[0],
                "last_key": self.keys[-1],
                "modalities": sorted(set.intersection(*self.kinds)),
                "fold_counts": {str(self.fold): len(self.keys)},
            }
        )
        self.writer, self.keys, self.kinds = None, [], []

    def close(self, label_index: list, sources: list[str]) -> dict:
        if self.writer is not None:
            self._finish_shard()
        size = max([len(label_index), *(i + 1 for i in self.labels)])
        kinds = [set(s["modalities"]) for s in self.shards]
        manifest = {
            "format": FORMAT,
            "name": self.name,
            "mode": "crossval",
            "sources": sources,
            "num_samples": sum(s["count"] for s in self.shards),
            "shards": self.shards,
            "label_index": label_index,
            "label_counts": [self.labels.get(i, 0) for i in range(size)],
            "modalities": sorted(set.intersection(*kinds)),
        }
        (self.folder / f"{self.name}-manifest.json").write_text(json.dumps(manifest, indent=1))
        return manifest


def split_by_fold(shards: list[str], out_dir: str | Path) -> dict[int, list[str]]:
    """The shard set `shards` split by each sample's json ``fold`` into ``out_dir/folds/`` (once: a finished
    split of the same shards is reused). Returns fold -> its shard paths. A sample without an integer ``fold`` is
    an error naming it; so are damaged shards (a fold missing samples would change the protocol)."""
    urls = expand_shards(shards)
    if not urls:
        raise ConfigError("crossval needs data.train_shards: the whole data set, each sample with its json 'fold'")
    folder = Path(out_dir) / FOLDS_DIR
    index_path = folder / INDEX
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        if index["sources"] != urls:
            raise ConfigError(
                f"{folder} was split from other shards than data.train_shards; remove it or choose another "
                "train.out_dir"
            )
        return {int(k): [str(folder / f) for f in files] for k, files in index["folds"].items()}
    scratch = folder.with_name(f"{FOLDS_DIR}.tmp-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    writers: dict[int, FoldWriter] = {}
    problems: list[str] = []
    try:
        for url in urls:
            for sample in iter_shard(url, lambda kind, message: problems.append(message)):
                try:
                    meta = json.loads(sample["json"])
                except (KeyError, ValueError) as e:
                    raise ValueError(f"{url}: sample {sample['__key__']} has no readable json ({e})") from None
                fold = meta.get("fold")
                if not isinstance(fold, int) or isinstance(fold, bool):
                    raise ValueError(
                        f"{url}: sample {sample['__key__']} has no integer 'fold' in its json (got {fold!r}); "
                        "prepare ESC-50 with `cavmae prepare --csv meta/esc50.csv`, which stores each clip's fold"
                    )
                if fold not in writers:
                    writers[fold] = FoldWriter(scratch, fold)
                writers[fold].add(sample, meta.get("label_indices") or [])
        if problems:
            raise ValueError(f"{len(problems)} problem(s) reading data.train_shards, the first: {problems[0]}")
        if len(writers) < 2:
            raise ValueError(f"cross-validation needs at least 2 folds; the shards hold {sorted(writers) or 'none'}")
        label_index = _source_label_index(urls)
        manifests = {fold: writers[fold].close(label_index, urls) for fold in sorted(writers)}
    except BaseException:
        for w in writers.values():
            if w.writer is not None:
                w.writer.close()
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    files = {str(k): [s["file"] for s in m["shards"]] for k, m in manifests.items()}
    (scratch / INDEX).write_text(json.dumps({"sources": urls, "folds": files}, indent=1))
    try:
        scratch.rename(folder)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)
        if not index_path.is_file():
            raise
        return split_by_fold(shards, out_dir)  # another process finished the same split first: use theirs
    log.info(
        "split %d samples into %d folds in %s: %s",
        sum(m["num_samples"] for m in manifests.values()),
        len(manifests),
        folder,
        ", ".join(f"fold {k}: {m['num_samples']}" for k, m in manifests.items()),
    )
    return {int(k): [str(folder / f) for f in v] for k, v in files.items()}


# ---------------------------------------------------------------------------------------------------------------
# one fold


def fold_config(cfg: Config, folds: dict[int, list[str]], fold: int) -> Config:
    """`cfg` for fold `fold`: trained on the other folds' shards, validated on its own, in DIR/fold{K}."""
    if fold not in folds:
        raise ConfigError(f"--fold {fold}: the data set has folds {sorted(folds)}")
    out = copy.deepcopy(cfg)
    out.data.train_shards = [s for k in sorted(folds) if k != fold for s in folds[k]]
    out.data.val_shards = list(folds[fold])
    out.train.out_dir = str(fold_dir(cfg.train.out_dir, fold))
    return out


def read_curve(run_dir: Path, metric: str) -> list[float]:
    """The validation `metric` after each completed epoch (epochs 1, 2, ...) from ``val_metrics.jsonl``: the
    first record of each epoch number (the epoch-end validation; later ones of the same number are mid-epoch)."""
    path = run_dir / "val_metrics.jsonl"
    by_epoch: dict[int, float] = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        record = json.loads(line)
        epoch = record.get("epoch", 0)
        if epoch >= 1 and epoch not in by_epoch and f"val/{metric}" in record:
            by_epoch[epoch] = float(record[f"val/{metric}"])
    return [by_epoch[e] for e in sorted(by_epoch)]


def run_fold(cfg: Config, folds: dict[int, list[str]], fold: int) -> dict:
    """Fine-tune fold `fold` unless its result exists (resuming an interrupted run); returns its result."""
    from cavmae.eval.metrics import main_metric
    from cavmae.train.loop import train

    run_dir = fold_dir(cfg.train.out_dir, fold)
    result_path = run_dir / RESULT
    if result_path.is_file():
        log.info("fold %d is done (%s): not run again", fold, result_path)
        return json.loads(result_path.read_text())
    fcfg = fold_config(cfg, folds, fold)
    log.info(
        "fold %d: training on folds %s, evaluating on fold %d", fold, [k for k in sorted(folds) if k != fold], fold
    )
    train(fcfg, "finetune", resume="auto" if run_dir.exists() else "")  # an interrupted fold resumes
    metric = main_metric(fcfg.finetune.loss == "bce")
    curve = read_curve(run_dir, metric)
    best = max(range(len(curve)), key=curve.__getitem__) if curve else None
    result = {
        "fold": fold,
        "metric": metric,
        "curve": curve,
        "best_epoch": None if best is None else best + 1,
        "best": None if best is None else curve[best],
    }
    tmp = result_path.with_name(RESULT + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(result_path)
    return result


# ---------------------------------------------------------------------------------------------------------------
# gathering


def gather(out_dir: str | Path, folds: list[int]) -> dict:
    """DIR/crossval.json from the finished folds' results; an error naming the folds that are not finished."""
    out_dir = Path(out_dir)
    missing = [k for k in folds if not (fold_dir(out_dir, k) / RESULT).is_file()]
    if missing:
        raise ValueError(
            f"folds {missing} of {out_dir} are not finished (no {RESULT}); run them with --fold K, then gather"
        )
    results = {k: json.loads((fold_dir(out_dir, k) / RESULT).read_text()) for k in folds}
    epochs = min(len(r["curve"]) for r in results.values())
    if epochs == 0:
        raise ValueError(f"a fold of {out_dir} has no per-epoch validation (did it finish an epoch?)")
    if any(len(r["curve"]) != epochs for r in results.values()):
        log.warning("the folds ran different numbers of epochs: the mean curve covers the first %d", epochs)
    mean = [sum(r["curve"][e] for r in results.values()) / len(results) for e in range(epochs)]
    best = max(range(epochs), key=mean.__getitem__)
    summary = {
        "metric": next(iter(results.values()))["metric"],
        "folds": folds,
        "epochs": epochs,
        "per_fold": {str(k): r["curve"] for k, r in results.items()},
        "mean_curve": mean,
        # AST's number: the epoch whose mean over the folds is best, and each fold at that epoch
        "best_epoch": best + 1,
        "best_mean": mean[best],
        "per_fold_at_best_epoch": {str(k): r["curve"][best] for k, r in results.items()},
        # for reference only (choosing each fold's epoch on its own test fold is optimistic)
        "per_fold_own_best": {str(k): {"epoch": r["best_epoch"], "value": r["best"]} for k, r in results.items()},
    }
    tmp = out_dir / (SUMMARY + ".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out_dir / SUMMARY)
    return summary


def format_table(summary: dict) -> str:
    """Epochs x folds (and the mean) of the metric, the best epoch of the mean curve marked."""
    folds = summary["folds"]
    metric = summary["metric"]
    head = f"{'epoch':>5} " + " ".join(f"{'fold ' + str(k):>8}" for k in folds) + f" {'mean':>8}"
    lines = [f"{metric} per fold and epoch", head]
    for e in range(summary["epochs"]):
        row = " ".join(f"{summary['per_fold'][str(k)][e]:8.4f}" for k in folds)
        mark = "  <- best mean" if e + 1 == summary["best_epoch"] else ""
        lines.append(f"{e + 1:>5} {row} {summary['mean_curve'][e]:8.4f}{mark}")
    own = ", ".join(f"fold {k}: {v['value']:.4f} (epoch {v['epoch']})" for k, v in summary["per_fold_own_best"].items())
    lines.append(f"best epoch of the mean curve: {summary['best_epoch']}, mean {metric} {summary['best_mean']:.4f}")
    lines.append(f"each fold's own best (optimistic, for reference): {own}")
    return "\n".join(lines)


def crossval(cfg: Config, fold: int | None = None) -> dict | None:
    """Split, then run fold `fold` alone (returns None) or every unfinished fold and gather (returns the summary)."""
    if cfg.finetune is None:
        raise ConfigError("crossval fine-tunes: the config needs a finetune section")
    if cfg.data.val_shards:
        raise ConfigError("crossval evaluates each fold on itself: leave data.val_shards empty")
    if cfg.data.synthetic:
        raise ConfigError("crossval needs data.synthetic=false and data.train_shards (samples with folds)")
    folds = split_by_fold(cfg.data.train_shards, cfg.train.out_dir)
    if fold is not None:
        run_fold(cfg, folds, fold)
        return None
    for k in sorted(folds):
        run_fold(cfg, folds, k)
    return gather(cfg.train.out_dir, sorted(folds))


def gather_folds(out_dir: str | Path) -> dict:
    """:func:`gather` over the folds of an existing split in `out_dir` (``cavmae crossval --gather``)."""
    index_path = Path(out_dir) / FOLDS_DIR / INDEX
    if not index_path.is_file():
        raise ValueError(f"{index_path} is missing: no fold of {out_dir} has started (run crossval first)")
    return gather(out_dir, sorted(int(k) for k in json.loads(index_path.read_text())["folds"]))
