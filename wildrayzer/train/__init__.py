"""Training system shared by the three stages (see loop.train) and checkpoint I/O (see checkpoint)."""

from .checkpoint import load_model_checkpoint, save_pretrained

__all__ = ["load_model_checkpoint", "save_pretrained"]
