"""Label indices and the metadata files that name clips and their labels.

Formats read here:

- label index CSV (AudioSet's ``class_labels_indices.csv``): header ``index,mid,display_name``, one row per class,
  indices 0..K-1 in order.
- AudioSet segments CSV: three header lines starting with ``#``, then ``YTID, start_seconds, end_seconds,
  "mid1,mid2"`` (spaces after the commas, labels quoted).
- VGGSound CSV: no header, ``ytid,start_seconds,label,split`` with the label as a display name (quoted when it holds a
  comma). VGGSound has no machine ids of its own: the bundled index names class k ``vgg_<k>`` (the mids of CAV-MAE's
  VGGSound datafiles) and a row's display name is looked up by name; an index built from the CSV instead uses the
  display name as the mid too.
- CAV-MAE datafile JSON: ``{"data": [{"video_id", "wav", "video_path", "labels"}]}`` with labels a comma-separated
  mid string and frames at ``<video_path>/frame_<i>/<video_id>.jpg``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

# Label indices shipped with the package: the repository's data/*.csv (sources and licences in data/README.md),
# installed as package data in cavmae/data/label_files (pyproject.toml's package mapping).
BUNDLED_LABEL_CSVS = {
    "audioset": "class_labels_indices_as.csv",  # AudioSet: 527 classes, index,mid,display_name
    "vggsound": "class_labels_indices_vgg.csv",  # VGGSound: 309 classes, CAV-MAE's order, mids vgg_0..vgg_308
}
BUNDLED_NUM_CLASSES = {"audioset": 527, "vggsound": 309}


def label_files_dir() -> Path:
    """Where the bundled label indices are: cavmae/data/label_files in an install (wheel or editable), else the
    checkout's data/ (a plain checkout on PYTHONPATH)."""
    installed = Path(__file__).parent / "label_files"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "data"


def bundled_label_csv(dataset: str) -> Path:
    """Path of the label index shipped for `dataset` ('audioset' or 'vggsound')."""
    if dataset not in BUNDLED_LABEL_CSVS:
        raise ValueError(f"no bundled label index for {dataset!r}; expected one of {sorted(BUNDLED_LABEL_CSVS)}")
    return label_files_dir() / BUNDLED_LABEL_CSVS[dataset]


def bundled_label_csv_for(num_classes: int) -> Path | None:
    """The bundled index with exactly `num_classes` classes (527: AudioSet, 309: VGGSound), else None."""
    for dataset, n in BUNDLED_NUM_CLASSES.items():
        if n == num_classes:
            return bundled_label_csv(dataset)
    return None


def bundled_dataset_of_mids(mids: list[str]) -> str | None:
    """The dataset whose bundled index has every one of `mids` as a mid, else None (also for no mids).

    CAV-MAE's datafiles name classes by mid: AudioSet's ids (``/m/09x0r``) or ``vgg_<k>`` for VGGSound.
    """
    wanted = {m.strip() for m in mids if m.strip()}
    if not wanted:
        return None
    for dataset in BUNDLED_LABEL_CSVS:
        if wanted <= set(LabelIndex.from_csv(bundled_label_csv(dataset)).mids):
            return dataset
    return None


class MetadataError(ValueError):
    """A metadata file that does not have the expected layout (names the file, line and what was expected)."""


@dataclass
class LabelIndex:
    """Class k has machine id ``mids[k]`` and display name ``names[k]``.

    A label is looked up by mid, or by display name where exactly one class has that name and no class has it as
    its mid (so VGGSound's "playing hammond organ" and CAV-MAE's ``vgg_47`` both give 47 with the bundled index).
    A display name shared by several classes is ambiguous: it maps to nothing, and `problem` says why.
    """

    mids: list[str]
    names: list[str]
    _lookup: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _ambiguous: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.mids) != len(self.names):
            raise ValueError("LabelIndex: mids and names must have the same length")
        by_name: dict[str, list[int]] = {}
        for i, name in enumerate(self.names):
            by_name.setdefault(name, []).append(i)
        mids = set(self.mids)
        for name, classes in by_name.items():
            if name in mids:  # a display name equal to a mid never shadows that mid's class
                continue
            if len(classes) == 1:
                self._lookup[name] = classes[0]
            else:
                self._ambiguous[name] = classes
        for i, mid in enumerate(self.mids):
            self._lookup[mid] = i

    def __len__(self) -> int:
        return len(self.mids)

    def index(self, label: str) -> int:
        """Index of a label given as mid or (unambiguous) display name; KeyError naming the problem if none."""
        i = self.get(label)
        if i is None:
            raise KeyError(self.problem([label]))
        return i

    def get(self, label: str) -> int | None:
        return self._lookup.get(label.strip())

    def problem(self, labels: list[str]) -> str:
        """Why `labels` do not all map: the unknown ones and the ambiguous display names ('' if they all map)."""
        labels = [label.strip() for label in labels]
        ambiguous = {label: self._ambiguous[label] for label in labels if label in self._ambiguous}
        unknown = [label for label in labels if label not in self._lookup and label not in ambiguous]
        parts = []
        if unknown:
            parts.append(f"unknown label(s) {unknown} (not in the label index)")
        for label, classes in ambiguous.items():
            parts.append(f"ambiguous label {label!r} (display name of classes {classes}; give the class's mid)")
        return "; ".join(parts)

    def lookup(self) -> dict[str, int]:
        """Mid or unambiguous display name -> index (a copy)."""
        return dict(self._lookup)

    @classmethod
    def from_csv(cls, path: str | Path) -> LabelIndex:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise MetadataError(f"label index {path}: cannot read ({e.strerror or e})") from e
        rows = list(csv.reader(io.StringIO(text)))
        if not rows or [c.strip() for c in rows[0][:3]] != ["index", "mid", "display_name"]:
            raise MetadataError(f"label index {path}: expected a header 'index,mid,display_name' on line 1")
        mids, names = [], []
        lines: dict[str, int] = {}  # mid -> the line that defined it
        for line, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            if len(row) < 3:
                raise MetadataError(f"label index {path}:{line}: expected 'index,mid,display_name', got {row!r}")
            try:
                idx = int(row[0])
            except ValueError as e:
                raise MetadataError(f"label index {path}:{line}: index {row[0]!r} is not an integer") from e
            if idx < len(mids):
                raise MetadataError(f"label index {path}:{line}: duplicate index {idx} (expected {len(mids)})")
            if idx != len(mids):
                raise MetadataError(f"label index {path}:{line}: expected index {len(mids)}, got {idx}")
            mid = row[1].strip()
            if mid in lines:  # a second row for a mid would silently move its class to another index
                raise MetadataError(f"label index {path}:{line}: duplicate mid {mid!r} (first on line {lines[mid]})")
            lines[mid] = line
            mids.append(mid)
            names.append(row[2].strip())
        if not mids:
            raise MetadataError(f"label index {path}: no classes")
        return cls(mids, names)

    @classmethod
    def from_names(cls, names: list[str]) -> LabelIndex:
        """An index over sorted unique display names that double as mids (VGGSound, datafiles without an index)."""
        unique = sorted(set(n.strip() for n in names if n.strip()))
        return cls(list(unique), list(unique))

    def to_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            self.write_csv(f)

    def write_csv(self, f: io.TextIOBase) -> None:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["index", "mid", "display_name"])
        for i, (mid, name) in enumerate(zip(self.mids, self.names)):
            w.writerow([i, mid, name])

    def to_records(self) -> list[dict]:
        return [{"index": i, "mid": m, "display_name": n} for i, (m, n) in enumerate(zip(self.mids, self.names))]

    @classmethod
    def from_records(cls, records: list[dict]) -> LabelIndex:
        return cls([r["mid"] for r in records], [r["display_name"] for r in records])


@dataclass
class SegmentRow:
    """One labelled clip named by a metadata file."""

    ytid: str
    start: float
    end: float | None  # None: to the end of the file (VGGSound gives no end; clips are 10 s)
    labels: list[str]  # mids (AudioSet) or display names (VGGSound)
    split: str | None = None
    where: str = ""  # "file:line", for error messages


@dataclass
class RowProblem:
    """A metadata row that could not be used (recorded in the manifest)."""

    where: str
    reason: str


# ESC-50's meta/esc50.csv header; a CSV whose header holds the first four is read as ESC-50
ESC50_HEADER = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


def detect_csv_layout(path: str | Path) -> str:
    """'audioset' when the file starts with '#' header lines, 'esc50' when its header names ESC-50's columns
    (filename, fold, target, category, ...), else 'vggsound'."""
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    if set(ESC50_HEADER[:4]) <= {c.strip() for c in first.split(",")}:
        return "esc50"
    return "audioset" if first.lstrip().startswith("#") else "vggsound"


@dataclass
class Esc50Row:
    """One clip of ESC-50's meta/esc50.csv: its file, fold and class (index `target`, name `category`)."""

    filename: str
    fold: int
    target: int
    category: str
    where: str = ""


def read_esc50_csv(path: str | Path) -> tuple[list[Esc50Row], list[RowProblem]]:
    """Rows of an ESC-50 metadata CSV (header filename, fold, target, category, ...); bad rows are problems."""
    path = Path(path)
    rows, problems = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            where = f"{path.name}:{line}"
            try:
                fold, target = int(row["fold"]), int(row["target"])
            except (TypeError, ValueError):
                problems.append(
                    RowProblem(where, f"fold {row.get('fold')!r} / target {row.get('target')!r} are not integers")
                )
                continue
            name, category = (row.get("filename") or "").strip(), (row.get("category") or "").strip()
            if not name or not category or target < 0:
                problems.append(RowProblem(where, f"expected a filename, a category and a target >= 0, got {row!r}"))
                continue
            rows.append(Esc50Row(name, fold, target, category, where))
    return rows, problems


def esc50_label_index(rows: list[Esc50Row]) -> LabelIndex:
    """Class `target` is named `category` (its mid and display name); raises MetadataError when a target has two
    categories or the targets leave a gap."""
    names: dict[int, str] = {}
    for r in rows:
        if names.setdefault(r.target, r.category) != r.category:
            raise MetadataError(f"{r.where}: target {r.target} is {r.category!r} here but {names[r.target]!r} before")
    missing = sorted(set(range(max(names, default=-1) + 1)) - set(names))
    if missing:
        raise MetadataError(f"ESC-50 CSV: no row has target(s) {missing[:10]}: the class indices must be 0..K-1")
    categories = [names[i] for i in range(len(names))]
    return LabelIndex(categories, categories)


def read_audioset_csv(path: str | Path) -> tuple[list[SegmentRow], list[RowProblem]]:
    """Rows of an AudioSet segments CSV; malformed rows are returned as problems, not raised."""
    path = Path(path)
    rows, problems = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for line, row in enumerate(csv.reader(f, skipinitialspace=True), start=1):
            if not row or row[0].lstrip().startswith("#"):
                continue
            where = f"{path.name}:{line}"
            if len(row) < 4:
                problems.append(RowProblem(where, f"expected 'YTID, start, end, \"labels\"', got {row!r}"))
                continue
            try:
                start, end = float(row[1]), float(row[2])
            except ValueError:
                problems.append(RowProblem(where, f"start/end {row[1]!r}, {row[2]!r} are not numbers"))
                continue
            labels = [m.strip() for m in ",".join(row[3:]).split(",") if m.strip()]
            rows.append(SegmentRow(row[0].strip(), start, end, labels, None, where))
    return rows, problems


def read_vggsound_csv(path: str | Path, split: str | None = None) -> tuple[list[SegmentRow], list[RowProblem]]:
    """Rows of a VGGSound CSV (``ytid,start,label,split``); with `split`, only rows of that split."""
    path = Path(path)
    rows, problems = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            where = f"{path.name}:{line}"
            if len(row) < 3:
                problems.append(RowProblem(where, f"expected 'ytid,start_seconds,label,split', got {row!r}"))
                continue
            try:
                start = float(row[1])
            except ValueError:
                if line == 1:  # a header row some copies of the file carry
                    continue
                problems.append(RowProblem(where, f"start {row[1]!r} is not a number"))
                continue
            row_split = row[3].strip() if len(row) > 3 else None
            if split is not None and row_split != split:
                continue
            rows.append(SegmentRow(row[0].strip(), start, None, [row[2].strip()], row_split, where))
    return rows, problems


@dataclass
class DatafileEntry:
    video_id: str
    wav: str
    video_path: str
    labels: list[str]
    where: str


def read_datafile(path: str | Path) -> tuple[list[DatafileEntry], list[RowProblem]]:
    """Entries of a CAV-MAE datafile JSON; entries missing a field are returned as problems."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MetadataError(f"datafile {path}: not readable JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise MetadataError(f'datafile {path}: expected {{"data": [...]}} at the top level')
    entries, problems = [], []
    for i, item in enumerate(data["data"]):
        where = f"{path.name}[data][{i}]"
        # video_path may be absent or empty: the row is audio only
        missing = [k for k in ("video_id", "wav") if not isinstance(item, dict) or k not in item]
        if missing:
            problems.append(RowProblem(where, f"missing field(s) {', '.join(missing)}"))
            continue
        labels = [m.strip() for m in str(item.get("labels", "")).split(",") if m.strip()]
        video_path = str(item.get("video_path") or "")
        entries.append(DatafileEntry(str(item["video_id"]), str(item["wav"]), video_path, labels, where))
    return entries, problems
