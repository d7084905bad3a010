"""The data pipeline: WebDataset shards of audio-visual clips (schema and usage: data/README.md).

- ``clips``: synthetic H.264 + AAC clips with AudioSet / VGGSound metadata (``cavmae synth``)
- ``sources``: which clips to make from videos + CSV, a CAV-MAE datafile, or a plain folder
- ``prepare``: clips -> deterministic, restartable shards + manifest (``cavmae prepare``); ``engines``: Ray
- ``encode``: one clip -> one sample's tar members (what each ``cavmae prepare`` worker does)
- ``media``: decoding with PyAV and decord (frames by timestamp, 16 kHz audio)
- ``shards``: sample schema, tar writing and fast fault-tolerant reading, shard lists
- ``verify``: shards against their manifests (``cavmae verify-shards``, ``data.verify``)
- ``loader``: ``build_loader``, the streaming loader for pre-training, fine-tuning and retrieval
- ``samples``: per-sample decoding and per-batch augmentation / collation inside the loader workers
- ``fbank``: CAV-MAE's Kaldi fbank and its augmentations
- ``windows``: CAV-MAE Sync's audio window of each frame (``data.audio_window``)
- ``labels``: label indices and the metadata file formats
- ``random_batches``: learnable synthetic clips held in memory (``data.synthetic``); ``sampler``: the seeded batch
  sampler of map-style datasets
"""
