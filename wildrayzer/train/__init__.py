"""Training system shared by the three stages (see loop.train); training-state checkpoints (see checkpoint)."""
