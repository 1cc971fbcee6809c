"""vppkit.engine: training (dense / sparse), online inference, checkpoints, torchrun/DDP (docs/vis_model.md)."""
