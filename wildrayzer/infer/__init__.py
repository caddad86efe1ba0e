"""Inference and evaluation: metrics, LPIPS, Plücker visualisations, videos and the HTML report.

Modules (imported explicitly so that ``import wildrayzer.infer`` stays light — matplotlib and imageio load only
when a visualisation is written):

* :mod:`wildrayzer.infer.metrics` — PSNR/SSIM (full and static regions), mask IoU/precision/recall, pose errors,
  :class:`~wildrayzer.infer.metrics.MetricsAggregator` and the console table.
* :mod:`wildrayzer.infer.lpips` — LPIPS (AlexNet/VGG16 + linear heads) from local weight files.
* :mod:`wildrayzer.infer.visuals` — PNG writing, mask overlays, error maps, colormaps.
* :mod:`wildrayzer.infer.plucker_vis` — direction / moment / Klein-residual images and quiver plots.
* :mod:`wildrayzer.infer.video` — GIF/MP4 writing and the interpolated camera path.
* :mod:`wildrayzer.infer.report` — the self-contained ``index.html``.
"""
