"""`cavmae retrieve` and `cavmae predict` on the real files of ../shared/media."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import cavmae
from cavmae.cli import main
from cavmae.commands.predict import choose_mode
from cavmae.eval.inputs import load_file
from cavmae.eval.retrieval import EmbeddingSet

REPO = Path(__file__).resolve().parents[1]

MEDIA = ["00W1lcxW-WU_40.000.mp4", "chaplin.mp4", "FwVYUHKoLtQ_000034.wav"]


def parse_matches(out: str) -> dict[str, list[tuple[str, float]]]:
    """retrieve's query output -> {heading: [(key, score), ...]} in printed order."""
    blocks: dict[str, list[tuple[str, float]]] = {}
    matches: list[tuple[str, float]] = []
    for line in out.strip().splitlines():
        if line.startswith("  "):  # "   1. <key>  <score>"
            _, key, score = line.split()
            matches.append((key, float(score)))
        else:
            matches = blocks[line] = []
    return blocks


def small_cfg(**kw) -> cavmae.ModelConfig:
    """A small model on the real input sizes (1024 x 128 fbank, 224 px frames). Head counts follow the ViT
    convention (64 dims per head, 32 in the decoder) because public .pth files do not record them."""
    base = dict(
        embed_dim=128, num_heads=2, modality_depth=1, decoder_embed_dim=64, decoder_depth=1, decoder_num_heads=2
    )
    return cavmae.ModelConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ret") / "model"
    cavmae.save_pretrained(cavmae.create_model(small_cfg()), out)
    return out


def test_retrieve_embeds_shards_and_answers_queries(pretrained_dir, media_shards, media_dir, tmp_path, capsys):
    shard_dir, manifest = media_shards
    shards = sorted(str(shard_dir / s["file"]) for s in manifest["shards"] if "video" in s["modalities"])
    emb = tmp_path / "emb.safetensors"
    assert (
        main(
            [
                "retrieve",
                "--model",
                str(pretrained_dir),
                "--shards",
                *shards,
                "--out",
                str(emb),
                "--num-workers",
                "0",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    metrics = json.loads(out[out.index("{") :])
    assert metrics["clips"] == 2  # the two videos (the .wav's shard is audio only)
    assert set(metrics) >= {"video_to_audio", "audio_to_video"}
    assert json.loads(emb.with_suffix(".json").read_text()) == metrics
    gallery = EmbeddingSet.load(emb)
    assert sorted(gallery.keys) == ["00W1lcxW-WU_40000", "chaplin"]
    assert torch.allclose(gallery.audio.norm(dim=1), torch.ones(2))

    files = [str(media_dir / f) for f in MEDIA]
    assert (
        main(
            [
                "retrieve",
                "--model",
                str(pretrained_dir),
                "--embeddings",
                str(emb),
                "--query",
                *files,
                "--query-key",
                "chaplin",
                "--top-k",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "key chaplin: top 2 videos" in out
    assert f"{files[0]}: top 2 audios" in out  # a video file queries the audios
    assert f"{files[2]}: top 2 videos" in out  # an audio file queries the videos
    printed = parse_matches(out)
    # every match is the cosine of the query's embedding, computed here from the model and the files, with the
    # gallery's other modality, in descending order: a key queries with its stored audio, a video file with its
    # frames, an audio file with its sound
    model = cavmae.load_model(pretrained_dir).eval()
    with torch.no_grad():
        video_q = [model.embed_video(load_file(f, model.cfg).frames)[0] for f in files[:2]]
        audio_q = model.embed_audio(load_file(files[2], model.cfg).audio)[0]
    queries = {
        "key chaplin: top 2 videos": (gallery.audio[gallery.index("chaplin")], gallery.video),
        f"{files[0]}: top 2 audios": (video_q[0], gallery.audio),
        f"{files[1]}: top 2 audios": (video_q[1], gallery.audio),
        f"{files[2]}: top 2 videos": (audio_q, gallery.video),
    }
    assert list(printed) == list(queries)
    for name, (query, candidates) in queries.items():
        cosine = F.normalize(query.float(), dim=-1) @ candidates.t()
        order = cosine.argsort(descending=True).tolist()
        assert [key for key, _ in printed[name]] == [gallery.keys[r] for r in order], name
        assert [score for _, score in printed[name]] == pytest.approx(cosine[order].tolist(), abs=1e-4), name
    assert main(["retrieve", "--embeddings", str(emb), "--query-key", "nope"]) == 1


def test_predict_on_shared_media(media_dir, tmp_path, capsys):
    torch.manual_seed(0)
    clf_dir = tmp_path / "clf"
    cavmae.save_pretrained(cavmae.create_model(small_cfg(num_classes=527), kind="classifier"), clf_dir)
    files = [str(media_dir / f) for f in MEDIA]
    labels = str(REPO / "data" / "class_labels_indices_as.csv")
    assert main(["predict", *files, "--model", str(clf_dir), "--label-csv", labels, "--top-k", "3", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["file"] for r in rows] == files
    assert [r["mode"] for r in rows] == ["audiovisual", "audiovisual", "missing_video"]
    assert rows[2]["inputs"] == "audio"
    with open(labels) as f:
        names = {line.split(",", 2)[2].strip().strip('"') for line in f.read().splitlines()[1:]}
    for r in rows:
        assert len(r["top"]) == 3 and all(t["name"] in names for t in r["top"])
        assert [t["score"] for t in r["top"]] == sorted((t["score"] for t in r["top"]), reverse=True)
    # the same file through the public layout gives the same answer
    public = tmp_path / "clf.pth"
    assert main(["convert", str(clf_dir), str(public), "--to", "official"]) == 0
    capsys.readouterr()
    assert main(["predict", files[1], "--model", str(public), "--label-csv", labels, "--top-k", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top"] == rows[1]["top"]
    # a 527-class model names its classes from the bundled AudioSet index when --label-csv is not given
    assert main(["predict", files[1], "--model", str(clf_dir), "--top-k", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top"] == rows[1]["top"]


def test_predict_reports_bad_files(tmp_path, capsys):
    clf_dir = tmp_path / "clf"
    cavmae.save_pretrained(cavmae.create_model(small_cfg(num_classes=5), kind="classifier"), clf_dir)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    assert main(["predict", str(bad), str(tmp_path / "missing.mp4"), "--model", str(clf_dir)]) == 1


def test_mode_choice():
    assert choose_mode("audiovisual", True, True) == "audiovisual"
    assert choose_mode("audiovisual", True, False) == "missing_video"
    assert choose_mode("audiovisual", False, True) == "missing_audio"
    assert choose_mode("audio", True, False) == "audio"
    with pytest.raises(ValueError, match="no video"):
        choose_mode("video", True, False)


# ---------------------------------------------------------------------------------------------------------------
# class names by default; clip names that begin with '-'


def micro_classifier(out: Path, num_classes: int, out_dir: str = "runs/x", **data) -> Path:
    """A small classifier on micro inputs saved with a run config whose data section is `data`."""
    cfg = cavmae.Config(model=small_cfg(num_classes=num_classes, audio_length=64, num_mel_bins=32, image_size=32))
    cfg.train.out_dir = out_dir
    for key, value in data.items():
        setattr(cfg.data, key, value)
    torch.manual_seed(0)
    return cavmae.save_pretrained(cavmae.create_model(cfg.model, kind="classifier"), out, cfg)


def test_predict_names_classes_from_the_label_index_the_model_trained_with(
    tiny_shards, tmp_path, capsys, caplog, monkeypatch
):
    """Trained on shards without data.label_csv: the names are the label index in the shards' manifests."""
    clip = str(next(tiny_shards.synth.videos.iterdir()))
    names = [r["display_name"] for r in tiny_shards.manifest["label_index"]]
    model = micro_classifier(tmp_path / "clf", len(names), train_shards=[tiny_shards.pattern])
    assert main(["predict", clip, "--model", str(model), "--top-k", "4", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["top"]
    assert sorted(t["name"] for t in top) == sorted(names) and all(t["name"] == names[t["class"]] for t in top)

    # the run's relative paths are read from the folder it ran in (<there>/runs/ft/model), wherever predict runs
    work = tmp_path / "work"
    (work / "shards").mkdir(parents=True)
    shutil.copy(tiny_shards.dir / "tiny-manifest.json", work / "shards")
    pattern = Path(tiny_shards.pattern).name
    model = micro_classifier(work / "runs/ft/model", len(names), "runs/ft", train_shards=[f"shards/{pattern}"])
    monkeypatch.chdir(tmp_path)
    assert main(["predict", clip, "--model", str(Path("work/runs/ft")), "--top-k", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top"] == top

    # no label index anywhere (not 527 / 309 classes, no shards, no data.label_csv): indices, said once
    bare = micro_classifier(tmp_path / "bare", 3)
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(["predict", clip, "--model", str(bare), "--top-k", "3", "--json"]) == 0
    assert sorted(t["name"] for t in json.loads(capsys.readouterr().out)["top"]) == ["0", "1", "2"]
    notes = [r.getMessage() for r in caplog.records if "class names unknown" in r.getMessage()]
    assert notes == [
        "class names unknown (the model records no label index): printing class indices; --label-csv FILE names them"
    ]


def test_clip_names_that_begin_with_a_dash(tiny_shards, tmp_path, capsys, monkeypatch):
    """YouTube ids such as -0DLPzsiXXE_30000: files after '--', keys joined to --query-key with '='."""
    key = "-0DLPzsiXXE_30000"
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"{key}.mp4").write_bytes(next(tiny_shards.synth.videos.iterdir()).read_bytes())
    model = micro_classifier(tmp_path / "clf", 4)
    assert main(["predict", "--model", str(model), "--top-k", "1", "--json", "--", f"{key}.mp4"]) == 0
    assert json.loads(capsys.readouterr().out)["file"] == f"{key}.mp4"

    emb = EmbeddingSet([key, "--x", "b"], torch.eye(3), torch.eye(3)).save(tmp_path / "emb.safetensors")
    assert main(["retrieve", "--embeddings", str(emb), f"--query-key={key}", "--query-key=--x", "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert f"key {key}: top 1 videos\n   1. {key}  1.0000" in out and "key --x: top 1 videos\n   1. --x  1.0000" in out
