"""The data pipeline: WebDataset shards of audio-visual clips (schema and usage: data/README.md).

- ``synth``: synthetic H.264 + AAC clips with AudioSet / VGGSound metadata (``cavmae synth``)
- ``sources``: which clips to make from videos + CSV, a CAV-MAE datafile, or a plain folder
- ``prepare``: clips -> deterministic, restartable shards + manifest (``cavmae prepare``)
- ``encode``: one clip -> one sample's tar members (what each ``cavmae prepare`` worker does)
- ``media``: decord decoding (frames by timestamp, 16 kHz mono audio)
- ``shards``: sample schema, tar writing and fast fault-tolerant reading, shard lists
- ``loader``: ``build_loader``, the streaming loader for pre-training, fine-tuning and retrieval
- ``samples``: per-sample decoding and per-batch augmentation / collation inside the loader workers
- ``labels``: label indices and the metadata file formats
"""
