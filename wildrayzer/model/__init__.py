"""Model parts (each in its own file) and the ``WildRayZer`` composition root."""

from .camera import CameraEstimator
from .renderer import Renderer
from .scene import SceneEncoder
from .wildrayzer import WildRayZer

__all__ = ["CameraEstimator", "Renderer", "SceneEncoder", "WildRayZer"]
