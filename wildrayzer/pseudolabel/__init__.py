"""Pseudo-motion masks: the constructor (``constructor.py``), co-segmentation (``cosegment.py``), the on-disk label
export (``cache.py``) and ``wildrayzer pseudolabel`` (``cli.py``, also ``python -m wildrayzer.pseudolabel``)."""
