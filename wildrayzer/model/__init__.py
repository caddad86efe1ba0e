"""Model parts (each in its own file) and the ``WildRayZerModel`` composition root (the nn.Module; the user-facing
class is ``wildrayzer.WildRayZer``, in api.py)."""

from .camera import CameraEstimator
from .motion import MotionEstimator
from .renderer import Renderer
from .scene import SceneEncoder
from .tokenizer import ImageTokenizer
from .wildrayzer import WildRayZerModel

__all__ = ["CameraEstimator", "ImageTokenizer", "MotionEstimator", "Renderer", "SceneEncoder", "WildRayZerModel"]
