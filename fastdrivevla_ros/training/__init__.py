"""ReconPruner training (AFBR). Light on import: `train-pruner --help` must stay fast."""

MODES = ("afbr", "foreground_only", "mask_prediction")   # training objectives (afbr.py)
