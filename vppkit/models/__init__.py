"""Models: PrunableViT (``vit``), pruners (``pruning``), the VIS head (``vis``), shared records (``records``)."""
