"""Evaluation: metrics (recall@k, ranks, mAP, accuracy), retrieval (embedding shard sets), classification of a
batch, and raw media files turned into model inputs (for predict and retrieval queries)."""
