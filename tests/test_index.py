"""cavmae index / retrieve --index: a flat FAISS index gives brute force's ranks; approximate kinds record their
parameters, memory-map and refuse evaluation; FAISS is an optional extra."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F

from cavmae.cli import main
from cavmae.eval.metrics import retrieval_metrics, top_k, true_match_ranks
from cavmae.eval.retrieval import EmbeddingSet
from cavmae.eval.search import SearchSpace

faiss = pytest.importorskip("faiss", reason='the faiss extra is not installed (pip install "cavmae[faiss]")')

from cavmae.eval.index import RetrievalIndex, build_index, choose_params  # noqa: E402


def random_set(n: int = 300, dim: int = 32, seed: int = 0) -> EmbeddingSet:
    """Paired random embeddings with exact ties: some clips are exact copies of others (in both modalities), so
    a query scores several gallery items equally and the tie rule (lower row first) decides ranks."""
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(n, dim, generator=g)
    video = audio + 1.5 * torch.randn(n, dim, generator=g)  # correlated pairs: ranks spread from 1 to n
    for dst, src in [(d, s) for d, s in [(7, 3), (40, 12), (41, 12), (250, 100)] if d < n]:
        audio[dst], video[dst] = audio[src], video[src]
    return EmbeddingSet([f"clip{i:04d}" for i in range(n)], F.normalize(audio, dim=-1), F.normalize(video, dim=-1))


def test_flat_index_ranks_and_top_k_equal_brute_force(tmp_path, capsys):
    emb = random_set()
    emb_file = emb.save(tmp_path / "emb.safetensors")
    assert main(["index", "--embeddings", str(emb_file), "--out", str(tmp_path / "idx"), "--kind", "flat"]) == 0
    info = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert info["kind"] == "flat" and info["num_vectors"] == 300 and info["dim"] == 32
    capsys.readouterr()

    # retrieve --index: the metrics of brute force, exactly (both directions)
    assert main(["retrieve", "--index", str(tmp_path / "idx")]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out[out.index("{") :])
    brute = retrieval_metrics(emb.audio, emb.video)
    assert metrics["clips"] == 300
    for direction in ("video_to_audio", "audio_to_video"):
        assert metrics[direction] == brute[direction]
        assert 0 < metrics[direction]["R@1"] < 100  # a real spread of ranks, not a trivial case

    index = RetrievalIndex.load(tmp_path / "idx")
    a, v = F.normalize(emb.audio, dim=-1), F.normalize(emb.video, dim=-1)
    space = SearchSpace(index=index)
    # ranks of every clip, including the duplicated ones whose ties are broken by row
    ties_v2a = space.ranks("v2a")
    assert torch.equal(ties_v2a, true_match_ranks(v, a)) and torch.equal(space.ranks("a2v"), true_match_ranks(a, v))
    # clip 7 is a copy of clip 3: its true pair ties with row 3, which comes first
    assert ties_v2a[7] == ties_v2a[3] + 1 and space.ranks("a2v")[7] == space.ranks("a2v")[3] + 1
    # top-k answers of the FAISS search equal brute force top-k (scores to float rounding, rows exactly)
    for queries, modality in ((v, "audio"), (a, "video")):
        s_idx, r_idx = space.top_k(queries, modality, 10)
        s_ref, r_ref = top_k(queries, a if modality == "audio" else v, 10)
        assert torch.equal(r_idx, r_ref)
        assert torch.allclose(s_idx, s_ref, atol=1e-5)
    # a duplicated gallery item comes right after its original (row order among equal scores)
    _, rows = space.top_k(a[12:13], "audio", 3)
    assert rows[0].tolist() == [12, 40, 41]


def test_retrieve_key_query_on_an_index_prints_the_brute_force_answer(tmp_path, capsys):
    emb = random_set(n=50, seed=1)
    emb.save(tmp_path / "emb.safetensors")
    build_index(emb, tmp_path / "idx", "flat")
    capsys.readouterr()
    for extra in ([], ["--embeddings", str(tmp_path / "emb.safetensors")]):
        assert (
            main(["retrieve", "--index", str(tmp_path / "idx"), *extra, "--query-key", "clip0005", "--top-k", "3"]) == 0
        )
        out = capsys.readouterr().out
        _, rows = top_k(emb.audio[5:6], emb.video, 3)
        lines = out[out.index("key clip0005") :].splitlines()[1:4]
        assert [line.split()[1] for line in lines] == [emb.keys[r] for r in rows[0].tolist()]


def test_approximate_index_records_parameters_memory_maps_and_refuses_evaluation(tmp_path, capsys):
    torch.manual_seed(0)
    # clustered data (as real embeddings are): 40 centres, pairs near each other
    centres = F.normalize(torch.randn(40, 64), dim=-1)
    which = torch.randint(0, 40, (4000,))
    audio = F.normalize(centres[which] + 0.1 * torch.randn(4000, 64), dim=-1)
    video = F.normalize(audio + 0.05 * torch.randn(4000, 64), dim=-1)
    emb = EmbeddingSet([f"k{i}" for i in range(4000)], audio, video)
    info = build_index(emb, tmp_path / "ivf", "ivf", nlist=64, nprobe=8)
    assert info["kind"] == "ivf" and info["nlist"] == 64 and info["nprobe"] == 8
    assert info["factory"] == "IVF64,Flat" and info["quantiser_trained_on"] == "audio+video"
    assert info["train_size"] == 64 * 64 and "train_s" in info["timings"]

    index = RetrievalIndex.load(tmp_path / "ivf")
    assert faiss.extract_index_ivf(index.indexes["audio"]).nprobe == 8
    # the inverted lists are memory-mapped from the file, not read into memory
    invlists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index.indexes["audio"]).invlists)
    assert type(invlists).__name__ == "OnDiskInvertedLists"
    space = SearchSpace(index=index)
    _, approx = space.top_k(video[:200], "audio", 10)
    _, exact = top_k(video[:200], audio, 10)
    recall = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact)) / exact.numel()
    assert recall > 0.8  # cross-modal queries find their neighbours (quantiser trained on both modalities)
    with pytest.raises(ValueError, match="exact"):
        space.ranks("v2a")

    capsys.readouterr()
    assert main(["retrieve", "--index", str(tmp_path / "ivf")]) == 0
    assert "{" not in capsys.readouterr().out  # no metrics from an approximate index
    assert main(["retrieve", "--index", str(tmp_path / "ivf"), "--query-key", "k1"]) == 1  # needs --embeddings


def test_auto_kind_is_chosen_by_size():
    assert choose_params(50_000, 768)["kind"] == "flat"
    p = choose_params(200_000, 768)
    assert p["kind"] == "ivf" and p["nlist"] == 2048 and p["nprobe"] == 128
    p = choose_params(5_000_000, 768)
    assert p["kind"] == "ivfpq" and p["pq_m"] == 48 and p["nlist"] == 8192
    with pytest.raises(ValueError, match="pq_m"):
        choose_params(5_000_000, 768, "ivfpq", pq_m=100)
    with pytest.raises(ValueError, match="flat index takes no parameters"):
        choose_params(10, 8, "flat", nlist=4)


def test_missing_faiss_names_the_extra(tmp_path, monkeypatch, caplog):
    emb = random_set(n=20)
    emb.save(tmp_path / "emb.safetensors")
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    assert main(["index", "--embeddings", str(tmp_path / "emb.safetensors"), "--out", str(tmp_path / "i")]) == 1
    assert 'pip install "cavmae[faiss]"' in caplog.text
