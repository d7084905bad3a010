"""The demo: synthetic videos -> shards -> tiny pre-training -> held-out retrieval -> fine-tuning, and a report
(``pipeline`` runs it, ``heldout`` holds its plain results, ``report`` draws them)."""
