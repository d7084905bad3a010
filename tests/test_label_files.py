"""The label indices shipped in data/ (AudioSet, VGGSound) and `cavmae prepare`'s default --label-csv."""

import csv
import hashlib
import json
import tarfile
import wave
from pathlib import Path

import pytest

from cavmae.cli import main
from cavmae.data.clips import make_synthetic_dataset
from cavmae.data.labels import (
    BUNDLED_LABEL_CSVS,
    LabelIndex,
    bundled_dataset_of_mids,
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


# the public copy of CAV-MAE's class_labels_indices_vgg.csv (Bizilizi/DeepAVFusion e1fced4) less its 310th row
VGG_SHA256 = "90a5cd19345019f50d0c3540629c1f4cde33266f00c57ce0cf67cd69835993c2"


def test_vggsound_index_has_cavmae_mids_and_order():
    path = bundled_label_csv("vggsound")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == VGG_SHA256
    index = LabelIndex.from_csv(path)
    assert len(index) == 309 and index.mids == [f"vgg_{k}" for k in range(309)] and len(set(index.names)) == 309
    # spot rows of CAV-MAE's order (not sorted by name); index 47 is uavm#3's example label "vgg_47"
    assert index.names[:3] == ["ambulance siren", "basketball bounce", "bird chirping, tweeting"]
    assert index.names[47] == "playing hammond organ" and index.names[125] == "dog barking"
    assert index.names[283] == "eletric blender running"  # VGGSound's own spelling
    assert index.names[308] == "air horn" and index.names != sorted(index.names)
    assert bundled_label_csv_for(309) == path  # a 309-class head (CAV-MAE's VGGSound models) gets these names


def test_vggsound_labels_map_by_display_name_and_by_mid():
    index = LabelIndex.from_csv(bundled_label_csv("vggsound"))
    assert index.index("playing hammond organ") == index.index("vgg_47") == 47  # VGGSound CSV row / CAV-MAE datafile
    assert index.index(" air horn ") == index.index("vgg_308") == 308
    assert index.lookup()["fly, housefly buzzing"] == index.lookup()["vgg_295"] == 295
    for label in ("vgg_309", "zzzzzzzzzzzzz310_class", "Playing Hammond Organ"):
        assert index.get(label) is None
    with pytest.raises(KeyError, match=r"unknown label\(s\) \['vgg_309'\]"):
        index.index("vgg_309")


def test_the_bundled_index_a_datafile_names_by_its_mids():
    assert bundled_dataset_of_mids(["vgg_47", "vgg_0 "]) == "vggsound"
    assert bundled_dataset_of_mids(["/m/09x0r", "/m/04rlf"]) == "audioset"
    assert bundled_dataset_of_mids(["vgg_47", "/m/09x0r"]) is None  # no one index holds both
    assert bundled_dataset_of_mids(["playing hammond organ"]) is None  # display names are not mids
    assert bundled_dataset_of_mids([]) is None


def test_display_names_map_only_where_unambiguous():
    index = LabelIndex(["/m/a", "/m/b", "/m/c", "Dog"], ["Bird", "Bird", "Dog", "Cat"])
    assert index.get("Bird") is None and "Bird" not in index.lookup()  # two classes share it
    assert (index.get("/m/a"), index.get("/m/b"), index.get("Cat")) == (0, 1, 3)
    assert index.get("Dog") == 3  # a mid wins over another class's display name
    assert index.problem(["/m/a"]) == ""
    problem = index.problem(["Bird", "Fish", "Cat"])
    assert "unknown label(s) ['Fish']" in problem and "ambiguous label 'Bird'" in problem and "[0, 1]" in problem
    with pytest.raises(KeyError, match="ambiguous label 'Bird'"):
        index.index("Bird")


def test_bundled_files_are_the_repositorys_data_files():
    # installed: cavmae/data/label_files (package data, tests/test_install.py); a plain checkout: data/ itself
    for dataset, name in BUNDLED_LABEL_CSVS.items():
        path = bundled_label_csv(dataset)
        assert path.is_file() and path.name == name
        assert path.read_bytes() == (REPO / "data" / name).read_bytes()
    assert bundled_label_csv_for(527) == bundled_label_csv("audioset")
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
    assert main(args) == 1
    message = caplog.records[-1].getMessage()
    assert "class_labels_indices_vgg.csv" in message and "--label-csv build" in message
    assert "unknown label(s)" in message
    out = tmp_path / "b"
    args = ["prepare", "--videos", str(synth.videos), "--csv", str(synth.csv), "--out", str(out)]
    assert main([*args, "--label-csv", "build"]) == 0
    manifest = json.loads((out / "data-manifest.json").read_text())
    assert [c["display_name"] for c in manifest["label_index"]] == sorted(c.name for c in synth.classes)


def _relabel_vggsound_csv(synth, names: list[str]) -> None:
    """Give the synthetic VGGSound CSV's classes real VGGSound display names (class k -> names[k])."""
    by_synth = {c.name: names[c.index] for c in synth.classes}
    with open(synth.csv, newline="") as f:
        rows = [[ytid, start, by_synth[label], split] for ytid, start, label, split in csv.reader(f)]
    with open(synth.csv, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def _shard_samples(out: Path) -> dict[str, dict]:
    samples = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    samples[meta["key"]] = meta
    return samples


def test_prepare_maps_vggsound_names_to_the_bundled_indices(tmp_path):
    synth = make_synthetic_dataset(
        tmp_path / "vgg", num_clips=3, num_classes=2, duration=1.0, size=32, fps=4.0, layout="vggsound"
    )
    _relabel_vggsound_csv(synth, ["playing hammond organ", "air horn"])
    out = tmp_path / "shards"
    assert main(["prepare", "--videos", str(synth.videos), "--csv", str(synth.csv), "--out", str(out)]) == 0
    manifest = json.loads((out / "data-manifest.json").read_text())
    assert manifest["num_samples"] == 3 and not manifest["failed"]
    assert manifest["label_index"][47] == {"index": 47, "mid": "vgg_47", "display_name": "playing hammond organ"}
    assert LabelIndex.from_csv(out / "data-labels.csv") == LabelIndex.from_csv(bundled_label_csv("vggsound"))
    expected = {"playing hammond organ": [47], "air horn": [308]}
    samples = _shard_samples(out)
    assert len(samples) == 3 and {m["labels"][0] for m in samples.values()} == set(expected)
    for meta in samples.values():
        assert meta["label_indices"] == expected[meta["labels"][0]]


def test_an_ambiguous_display_name_is_a_counted_failure(tmp_path):
    synth = make_synthetic_dataset(
        tmp_path / "vgg", num_clips=3, num_classes=2, duration=1.0, size=32, fps=4.0, layout="vggsound"
    )
    first, second = sorted(synth.classes, key=lambda c: c.index)
    labels = tmp_path / "labels.csv"  # the second class's display name given to two classes
    labels.write_text(f"index,mid,display_name\n0,x_0,{first.name}\n1,x_1,{second.name}\n2,x_2,{second.name}\n")
    out = tmp_path / "shards"
    args = ["prepare", "--videos", str(synth.videos), "--csv", str(synth.csv), "--label-csv", str(labels)]
    assert main([*args, "--out", str(out)]) == 0
    manifest = json.loads((out / "data-manifest.json").read_text())
    n_second = sum(c.objects[0].cls.index == second.index for c in synth.clips)
    assert 0 < n_second < 3 and manifest["num_samples"] == 3 - n_second and len(manifest["failed"]) == n_second
    assert all(f"ambiguous label {second.name!r}" in f["reason"] for f in manifest["failed"])


def _write_datafile(root: Path, labels: list[str]) -> Path:
    """A CAV-MAE datafile with one 1 s clip per label string: 16 kHz wav + frame_<i>/<id>.jpg."""
    from PIL import Image

    entries = []
    for n, label in enumerate(labels):
        vid = f"clip{n}_000010"
        with wave.open(str(root / f"{vid}.wav"), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes(bytes(2 * 16000))
        for i in range(10):
            (root / "frames" / f"frame_{i}").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 24), (10 * i, 0, 0)).save(root / "frames" / f"frame_{i}" / f"{vid}.jpg")
        entries.append({"video_id": vid, "wav": f"{vid}.wav", "video_path": "frames", "labels": label})
    path = root / "vgg_train_cleaned.json"
    path.write_text(json.dumps({"data": entries}))
    return path


def test_prepare_reads_cavmae_vggsound_datafile_mids_with_the_bundled_index(tmp_path):
    datafile = _write_datafile(tmp_path, ["vgg_47", "vgg_10,vgg_2"])
    out = tmp_path / "shards"
    assert main(["prepare", "--datafile", str(datafile), "--out", str(out)]) == 0
    manifest = json.loads((out / "data-manifest.json").read_text())
    assert manifest["num_samples"] == 2 and len(manifest["label_index"]) == 309 and not manifest["failed"]
    samples = _shard_samples(out)
    assert samples["clip0_000010"]["label_indices"] == [47]
    assert samples["clip1_000010"]["label_indices"] == [10, 2]  # not the sorted order of a built index
    built = tmp_path / "built"
    assert main(["prepare", "--datafile", str(datafile), "--out", str(built), "--label-csv", "build"]) == 0
    records = json.loads((built / "data-manifest.json").read_text())["label_index"]
    assert [r["mid"] for r in records] == ["vgg_10", "vgg_2", "vgg_47"]


def test_predict_names_a_309_class_model_from_the_bundled_vggsound_index(tmp_path, capsys):
    import torch

    import cavmae

    synth = make_synthetic_dataset(
        tmp_path / "vgg", num_clips=1, num_classes=1, duration=1.0, size=32, fps=4.0, layout="vggsound"
    )
    torch.manual_seed(0)
    cfg = cavmae.ModelConfig(
        embed_dim=64, num_heads=1, modality_depth=1, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=1,
        audio_length=128, image_size=32, num_classes=309,
    )  # fmt: skip
    model_dir = tmp_path / "clf"
    cavmae.save_pretrained(cavmae.create_model(cfg, kind="classifier"), model_dir)
    video = str(next(synth.videos.iterdir()))
    assert main(["predict", video, "--model", str(model_dir), "--top-k", "5", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["top"]
    names = LabelIndex.from_csv(bundled_label_csv("vggsound")).names
    assert len(top) == 5 and all(t["name"] == names[t["class"]] for t in top)
