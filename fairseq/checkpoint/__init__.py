"""Checkpoints: one job per module.

* :mod:`~fairseq.checkpoint.files`: atomic links and copies, removal, leftover temporaries (the
  atomic writes themselves are :func:`fairseq.file_io.atomic_write`).
* :mod:`~fairseq.checkpoint.state`: what a checkpoint holds (config, RNG states) and how it is
  read without running code.
* :mod:`~fairseq.checkpoint.integrity`: the SHA-256 record of a checkpoint's whole content (tensors and every other value).
* :mod:`~fairseq.checkpoint.pair`: the safetensors pair (``NAME.pt`` + ``NAME.safetensors``):
  naming, writing, reading, completing an interrupted save, removing both files.
* :mod:`~fairseq.checkpoint.saving`: when to save, under which names, pruning old ones.
* :mod:`~fairseq.checkpoint.upgrade`: older layouts (fairseq 0.12, args-era) to the current one.
* :mod:`~fairseq.checkpoint.fairseq_layout`: the entries that let fairseq 0.12.2 read our files
  (its keys, from the table :mod:`~fairseq.checkpoint.fairseq_keys`), undone when we read them.
* :mod:`~fairseq.checkpoint.task_state`: a task's own state (``get_checkpoint_dict``/``set_checkpoint_dict``).
* :mod:`~fairseq.checkpoint.loading`: loading for use (models and task rebuilt, ensembles, EMA).
* :mod:`~fairseq.checkpoint.resume`: resuming a run (cleanup, restore, data position).
* :mod:`~fairseq.checkpoint.sharded`: the DCP directories of ``fully_sharded`` training.

:mod:`fairseq.checkpoint_utils` keeps fairseq's public names, re-exported from these modules.
None of them imports the training loop.
"""
