"""Training and its data: the synthetic-case generator, lesion shapes, augmentation, ATLAS data sets,
the loss, the slice sampler, the trainer, weight averaging and evaluation.

Only the ``xnet train``/``synth``/``evaluate``/``average`` commands import this package; the runtime
path (load -> place -> preprocess -> infer) never does.
"""
