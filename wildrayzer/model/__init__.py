"""Model parts (each in its own file) and the ``WildRayZer`` composition root."""

from .camera import CameraEstimator
from .motion import MotionEstimator
from .renderer import Renderer
from .scene import SceneEncoder
from .tokenizer import ImageTokenizer
from .wildrayzer import WildRayZer

__all__ = ["CameraEstimator", "ImageTokenizer", "MotionEstimator", "Renderer", "SceneEncoder", "WildRayZer"]
