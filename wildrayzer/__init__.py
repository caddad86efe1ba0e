"""WildRayZer: self-supervised novel view synthesis in dynamic scenes."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy so that `import wildrayzer` stays cheap for the CLI and the data tools.
    if name == "WildRayZer":
        from .api import WildRayZer

        return WildRayZer
    raise AttributeError(name)
