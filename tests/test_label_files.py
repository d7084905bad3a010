"""The label indices shipped in data/ (AudioSet, VGGSound) and `cavmae prepare`'s default --label-csv."""

import csv
import json
from pathlib import Path

import pytest

import cavmae.data
from cavmae.cli import main
from cavmae.data.clips import make_synthetic_dataset
from cavmae.data.labels import (
    BUNDLED_LABEL_CSVS,
    LabelIndex,
    bundled_label_csv,
    bundled_label_csv_for,
)

REPO = Path(__file__).resolve().parents[1]


def test_audioset_index_has_the_527_classes_in_checkpoint_order():
    index = LabelIndex.from_csv(bundled_label_csv("audioset"))
    assert len(index) == 527 and len(set(index.mids)) == 527 and len(set(index.names)) == 527
    # spot checks against AudioSet's class_labels_indices.csv (the order of the public checkpoints' heads)
    assert (index.mids[0], index.names[0]) == ("/m/09x0r", "Speech")
    assert index.names[1] == "Male speech, man speaking"  # quoted commas survive
    assert index.index("/m/04rlf") == 137 and index.names[137] == "Music"
    assert all(m.startswith(("/m/", "/t/", "/g/")) for m in index.mids)


def test_vggsound_list_has_the_309_classes_sorted_as_a_built_index():
    index = LabelIndex.from_csv(bundled_label_csv("vggsound"))
    assert len(index) == 309 and index.names == sorted(set(index.names)) and index.mids == index.names
    # exactly the index `prepare` builds from vggsound.csv's display names when every class is present
    assert LabelIndex.from_names(list(reversed(index.names))) == index
    assert index.index("fly, housefly buzzing") == index.names.index("fly, housefly buzzing")
    assert {"dog barking", "playing accordion", "air conditioning noise"} <= set(index.names)


def test_bundled_files_live_in_the_package_and_in_data():
    package_dir = Path(cavmae.data.__file__).resolve().parent
    for dataset, name in BUNDLED_LABEL_CSVS.items():
        path = bundled_label_csv(dataset)
        assert path.is_file() and path.parent.name == "label_files" and package_dir in path.parents
        assert path.read_bytes() == (REPO / "data" / name).read_bytes()
    assert bundled_label_csv_for(527) == bundled_label_csv("audioset")
    assert bundled_label_csv_for(309) == bundled_label_csv("vggsound")
    assert bundled_label_csv_for(8) is None
    with pytest.raises(ValueError, match="expected one of"):
        bundled_label_csv("kinetics")


def test_prepare_defaults_to_the_bundled_index_for_the_csv_layout(tmp_path):
    synth = make_synthetic_dataset(
        tmp_path / "as", num_clips=2, num_classes=2, duration=1.0, size=32, fps=4.0, layout="audioset"
    )
    # the synthetic clips relabelled with real AudioSet mids: Speech (0) and Music (137)
    text = synth.csv.read_text().replace("/t/syn000", "/m/09x0r").replace("/t/syn001", "/m/04rlf")
    synth.csv.write_text(text)
    out = tmp_path / "shards"
    assert main(["prepare", "--videos", str(synth.videos), "--csv", str(synth.csv), "--out", str(out)]) == 0
    manifest = json.loads((out / "data-manifest.json").read_text())
    assert len(manifest["label_index"]) == 527 and manifest["num_samples"] == 2 and not manifest["failed"]
    with open(out / "data-labels.csv", newline="") as f:
        assert len(list(csv.reader(f))) == 528


def test_prepare_says_how_to_leave_the_bundled_index(tmp_path, caplog):
    synth = make_synthetic_dataset(
        tmp_path / "vgg", num_clips=2, num_classes=2, duration=1.0, size=32, fps=4.0, layout="vggsound"
    )
    args = ["prepare", "--videos", str(synth.videos), "--csv", str(synth.csv), "--out", str(tmp_path / "a")]
    assert main(args) == 2
    message = caplog.records[-1].getMessage()
    assert "class_labels_indices_vgg.csv" in message and "--label-csv build" in message
    assert "unknown label(s)" in message
    out = tmp_path / "b"
    args = ["prepare", "--videos", str(synth.videos), "--csv", str(synth.csv), "--out", str(out)]
    assert main([*args, "--label-csv", "build"]) == 0
    manifest = json.loads((out / "data-manifest.json").read_text())
    assert [c["display_name"] for c in manifest["label_index"]] == sorted(c.name for c in synth.classes)
