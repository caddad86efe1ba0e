"""Commands with no package of their own, run as ``wildrayzer <command>`` (see :mod:`wildrayzer.cli`): ``bench``,
``demo``, ``quickstart``, ``schedule``. ``train``, ``infer``, ``data``, ``pseudolabel``, ``convert`` and ``parity``
live in the package they drive (``train/run.py``, ``infer/run.py``, ``data/cli.py``, ``pseudolabel/cli.py``,
``official/``)."""
