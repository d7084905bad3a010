"""cavmae retrieve --html: a self-contained gallery that opens in headless Chromium without errors."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from browser import find_chromium, load_page, require_browser
from PIL import Image

from cavmae.cli import main
from cavmae.eval.metrics import retrieval_metrics, top_k
from cavmae.eval.retrieval import EmbeddingSet


def paired_embeddings(keys: list[str], seed: int = 0) -> EmbeddingSet:
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(len(keys), 16, generator=g)
    # noisy enough that brute force ranks some true pairs second or third and misses one (checked by the tests)
    video = audio + 4.0 * torch.randn(len(keys), 16, generator=g)
    return EmbeddingSet(keys, F.normalize(audio, dim=-1), F.normalize(video, dim=-1))


def true_pair_positions(page: str, emb: EmbeddingSet, k: int) -> list[int | None]:
    """For each query row of the page (both directions, in page order), where brute force's top `k` puts the
    query's own clip (0-based), or None when it is not among them: the green tile each row must show, found from
    the embeddings instead of the page."""
    positions = []
    for d, (q, g) in {"v2a": (emb.video, emb.audio), "a2v": (emb.audio, emb.video)}.items():
        section = page[page.index(f'id="{d}"') :].split("</section>")[0]
        for key in re.findall(r'class="clip query".*?class="key">([^<]+)<', section):
            _, rows = top_k(q[emb.index(key)][None], g, k)
            ranked = rows[0].tolist()
            positions.append(ranked.index(emb.index(key)) if emb.index(key) in ranked else None)
    return positions


@pytest.fixture(scope="module")
def gallery(tiny_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("gallery")
    emb = paired_embeddings(sorted(tiny_shards.keys))
    emb_file = emb.save(out / "emb.safetensors")
    args = ["retrieve", "--embeddings", str(emb_file), "--shards", tiny_shards.pattern, "--html", str(out / "html")]
    assert main([*args, "--top-k", "3", "--html-queries", "4", "--html-seconds", "1.5"]) == 0
    return out / "html", emb


def test_gallery_page_and_media(gallery):
    html_dir, emb = gallery
    page = (html_dir / "index.html").read_text()
    assert len(re.findall(r'class="clip tile', page)) == 4 * 3 * 2  # queries x top-k x directions
    assert len(re.findall(r'class="clip query', page)) == 4 * 2
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing from the network
    m = retrieval_metrics(emb.audio, emb.video)
    assert f"{m['video_to_audio']['R@1']:.1f} %" in page and f"{m['audio_to_video']['R@5']:.1f} %" in page
    # the ranked keys and scores are brute force's top-3
    for d, (q, g) in {"v2a": (emb.video, emb.audio), "a2v": (emb.audio, emb.video)}.items():
        section = page[page.index(f'id="{d}"') :]
        first_query = re.search(r'class="clip query".*?class="key">([^<]+)<', section).group(1)
        scores, rows = top_k(q[emb.index(first_query)][None], g, 3)
        row = section[: section.index('<div class="row">', section.index("clip query") + 1) if d == "v2a" else None]
        shown = re.findall(r'class="clip tile[^"]*"[^>]*>.*?class="key">([^<]+)<', row)[:3]
        assert shown == [emb.keys[r] for r in rows[0].tolist()]
        assert f"{scores[0, 0].item():.3f}" in row
    jpgs = sorted(j for j in html_dir.glob("media/*.jpg") if not j.stem.endswith("_middle"))  # the insets aside
    wavs = sorted(html_dir.glob("media/*.wav"))
    assert jpgs and len(jpgs) == len(wavs)
    assert Image.open(jpgs[0]).size == (64, 64)  # the shards' middle frame (64 px synthetic clips)
    audio, rate = sf.read(io.BytesIO(wavs[0].read_bytes()))
    assert rate == 16000 and len(audio) == 24000  # the first 1.5 s
    # the green tiles: in each row, the tile of the query's own clip, wherever brute force ranks it
    expected = true_pair_positions(page, emb, 3)
    assert None in expected and len(set(expected)) > 2  # the fixture: a miss and true pairs at several ranks
    rows = page.split('<div class="row">')[1:]
    shown = [next((i for i, t in enumerate(re.findall(r'class="clip tile( hit)?"', r)) if t), None) for r in rows]
    assert shown == expected
    assert page.count("\u2713 true pair") == page.count('class="clip tile hit"') == sum(p is not None for p in expected)


def test_gallery_opens_in_headless_chromium(gallery, tmp_path):
    if find_chromium() is None:
        if require_browser():
            pytest.fail("CAVMAE_REQUIRE_BROWSER=1 but chromium is not installed (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI installs it and runs this test")
    html_dir, emb = gallery
    report = load_page(
        html_dir / "index.html",
        {
            "tiles": "document.querySelectorAll('.tile').length",
            "hits": "document.querySelectorAll('.tile.hit').length",
            "images_ok": "[...document.images].every(i => i.complete && i.naturalWidth > 0)",
            "images": "document.images.length",
            "visible_tiles": "[...document.querySelectorAll('.tile')].filter(t => t.getBoundingClientRect().width"
            " > 100).length",
        },
    )
    assert report.console_errors == [] and report.exceptions == []
    assert report.failed_requests == [] and report.network_requests == []
    assert report.values["tiles"] == 24 and report.values["visible_tiles"] == 24
    insets = (html_dir / "index.html").read_text().count('class="inset"')  # middle frames where another is shown
    assert report.values["images_ok"] and report.values["images"] == 32 + insets  # 8 query + 24 result frames
    assert len(report.audio_durations) == 32 and all(abs(d - 1.5) < 0.01 for d in report.audio_durations)
    expected = true_pair_positions((html_dir / "index.html").read_text(), emb, 3)
    assert report.values["hits"] == sum(p is not None for p in expected)
    assert any(u.endswith(".wav") for u in report.requests) and any(u.endswith(".jpg") for u in report.requests)
    shot = Image.open(io.BytesIO(report.screenshot))
    assert shot.size == (1400, 1000)
    (tmp_path / "gallery.png").write_bytes(report.screenshot)
    if os.environ.get("CAVMAE_SCREENSHOT"):
        Path(os.environ["CAVMAE_SCREENSHOT"]).write_bytes(report.screenshot)
    # the screenshot shows pictures, not an empty page: many distinct colours
    assert len(shot.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 200


def _shard_labels(shards) -> dict[str, list[str]]:
    """{key: display names} read from the shards' json members through their manifest's label index."""
    import json
    import tarfile

    names = [r["display_name"] for r in shards.manifest["label_index"]]
    out = {}
    for url in shards.urls:
        with tarfile.open(url) as tar:
            for m in tar:
                if m.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(m).read())
                    out[meta["key"]] = [names[i] for i in meta["label_indices"]]
    return out


def test_gallery_names_classes_marks_same_class_apart_and_says_the_model(tiny_shards, tmp_path):
    from cavmae.eval.gallery import write_gallery
    from cavmae.eval.search import SearchSpace

    labels = _shard_labels(tiny_shards)
    mids = {r["mid"] for r in tiny_shards.manifest["label_index"]}
    assert not mids & {n for names in labels.values() for n in names}  # the shards store mids, the page shows names
    keys = sorted(labels)
    classes = sorted({n for names in labels.values() for n in names})
    g = torch.Generator().manual_seed(0)
    # embeddings that know the class and a little of the clip: same-class clips rank high, the pair not always first
    base = torch.stack([sum(F.one_hot(torch.tensor(classes.index(n)), 16).float() for n in labels[k]) for k in keys])
    audio = base + 0.3 * torch.randn(len(keys), 16, generator=g)
    video = base + 0.3 * torch.randn(len(keys), 16, generator=g)
    emb = EmbeddingSet(keys, F.normalize(audio, dim=-1), F.normalize(video, dim=-1))
    page = write_gallery(
        tmp_path, SearchSpace(emb), [tiny_shards.pattern], num_queries=8, k=4, model="pre-trained, seed 3"
    ).read_text()
    assert '<div class="model">Model: pre-trained, seed 3</div>' in page
    tiles = re.findall(r'<div class="(clip (?:query|tile(?: hit)?))"( data-match="class")?>.*?class="key">([^<]+)<'
                       r'/div>(?:<div class="cls">([^<]*)</div>)?', page)  # fmt: skip
    assert len(tiles) == 2 * 8 * 5
    marks = {"hit": 0, "same": 0, "other": 0}
    query = None
    for cls, same, key, shown in tiles:
        assert shown == ", ".join(labels[key])  # display names (the shards store mids), every tile
        if cls == "clip query":
            query = key
            continue
        shares = bool(set(labels[key]) & set(labels[query]))
        assert (cls == "clip tile hit") == (key == query)
        assert bool(same) == (shares and key != query)  # same class: its own mark, never the pair's
        marks["hit" if key == query else "same" if shares else "other"] += 1
    assert all(marks.values()), marks  # the fixture shows all three kinds of tile
    assert page.count("\u2248 same class</div>") == marks["same"]
    assert page.count("\u2713 true pair</div>") == marks["hit"]


def test_pick_frame_shows_a_frame_with_something_in_view():
    from cavmae.eval.gallery import pick_frame

    frames = np.full((10, 16, 16, 3), 40, dtype=np.uint8)  # a flat background ...
    frames[2, 4:10, 4:10] = (250, 20, 20)  # ... an object in view in frames 2 and 7, not in the middle one (5)
    frames[7, 2:6, 2:6] = (20, 250, 20)
    assert pick_frame(frames) == 2  # the most varied frame
    frames[5, 5:9, 5:9] = (200, 200, 20)  # something in the middle frame too: the frame retrieval embeds is shown
    assert pick_frame(frames) == 5
    assert pick_frame(frames[:1]) == 0
