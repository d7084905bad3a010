"""The demo: synthetic videos -> shards -> tiny pre-training -> held-out retrieval -> fine-tuning, and a report
(``pipeline`` runs it at the sizes of ``settings``; ``heldout`` holds its plain results, ``summary`` their numbers,
``figures`` and ``report`` draw and write them)."""
