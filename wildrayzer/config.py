"""The one typed config schema and its loader.

Loading order: schema defaults <- YAML file (which may name a ``base:`` file it extends, recursively) <- dotlist
overrides (``training.lr=2e-4``). The result is an OmegaConf ``DictConfig`` in struct mode: reading or writing an
unknown key is an error. Unknown keys and wrong types are reported as one line naming the key (and the closest valid
key), raised as :class:`~wildrayzer.errors.ConfigError`. Value checks live in :mod:`wildrayzer.config_checks`, the
bounded YAML reader in :mod:`wildrayzer.yaml_bounded`.
"""

from __future__ import annotations

import copy
import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config_checks import validate
from .errors import ConfigError
from .fileio import read_capped
from .yaml_bounded import safe_yaml


@dataclass
class ModelConfig:
    image_size: int = 256  # square input resolution (pixels)
    patch_size: int = 16
    dim: int = 768
    heads: int = 12
    mlp_ratio: float = 4.0
    camera_layers: int = 12
    scene_layers: int = 8
    renderer_layers: int = 12
    motion_layers: int = 4
    num_latents: int = 768
    num_context_views: int = 2
    num_target_views: int = 6
    # Shared focal: fx = fy = (focal_offset + mlp) * image_size ("focal normalised by image width").
    # 1.25 (the release) -> 43.6 deg horizontal field of view for the untrained estimator.
    focal_offset: float = 1.25
    motion_heads: int = 0  # attention heads of the motion head's blocks; 0 = model.heads (the release: 12 at any width)
    # x2 upsampling steps of the motion decoder; 0 = log2(patch_size) (one logit per pixel). The release always
    # takes 4: a converted release checkpoint at patch != 16 sets it and then predicts masks at 16x the token grid.
    motion_upsample_steps: int = 0
    qk_norm: bool = True
    use_motion_mask: bool = False  # build and run the motion-mask estimator
    use_dinov3_pseudolabel: bool = False  # supervise masks with semantic+SSIM pseudo-labels
    use_mae_masking: bool = False  # replace dynamic tokens by the learnable noise token before scene encoding
    # A context token is replaced by the noise token when its patch's mean motion probability exceeds this (release 0.1)
    mask_token_threshold: float = 0.1
    activation_checkpointing: bool = False
    # Initial weights of the transformer blocks (no effect on loaded weights): release = the release's depth init
    # (block i at std 0.02/sqrt(2(i+1))); gpt2 = std 0.02 with residual outputs at 0.02/sqrt(2 depth).
    block_init: str = "release"
    # Where the cameras come from: predicted (RayZer: the camera estimator, self-supervised) | given (LVSM-style posed
    # training and inference: the dataset's cameras, normalised by geometry.normalize_given_c2w; no camera estimator).
    cameras: str = "predicted"
    # What a camera token starts from: view_index (the release: a shared token plus an MLP of its view index, so a
    # token must find its own view's image tokens by attention) | own_view (plus an attention pool over its own
    # view's image tokens, zero-initialised; not in the release, so a converted release checkpoint keeps view_index).
    camera_query: str = "view_index"
    # Camera tokens also add an MLP (zero-initialised) of how each image correlates with view 0's under whole-pixel
    # row / column shifts (model/shift_cue.py; not in the release): the turn between views from a registration cue.
    camera_shift_cue: bool = False
    # Which Plücker tokens the motion head reads for the context views: scene (the release: the scene encoder's) |
    # renderer (the renderer's, which the head reads for the targets, where pseudo-labels supervise it).
    motion_context_rays: str = "scene"


@dataclass
class SemanticConfig:
    backbone: str = "efficientnet_lite0"  # dinov3 | efficientnet_lite0 | none
    model_path: str = ""  # local DINOv3 directory or hub id (resolved from the offline cache)
    feature_size: int = 16  # semantic feature map is resized to feature_size x feature_size
    cache_dir: str = ""  # per-image feature cache ("" = no cache)
    normalize: bool = True  # L2-normalise features over channels; false = raw tokens (the released checkpoint's input)


@dataclass
class DataConfig:
    dataset: str = "lvsm"  # lvsm (static RE10K layout) | dynamic (Dynamic-RE10K layout)
    root: str = "data/re10k_processed_v2"
    split: str = "train"
    list_file: str = "full_list.txt"  # relative to <root>/<split>
    view_idx_file: str = ""  # evaluation index JSON relative to <root>/<split>; "" = sample views
    frame_gap_min: int = 2  # training view sampling: window span in frames, min
    frame_gap_max: int = 24
    # Training only: feed the targets in random order instead of time order. Sorted, a target's slot tells where it
    # lies between the context views, and the camera estimator can learn a pose per slot instead of reading the
    # images (`wildrayzer bench poses`: "reversed: follows slot"; benchmarks/RESULTS.md v1.3: necessary, not
    # sufficient in 24 k samples on a CPU). Evaluation keeps the index file's order.
    shuffle_targets: bool = False
    num_workers: int = 2
    # Decode and resize every frame of the split's scenes once, at start, into one array in memory (S x S x 3 bytes a
    # frame: 450 MB for the 1,536-scene set at 64²); samples then read no image file. Pays on small CPUs, where
    # decoding takes cores from the model (benchmarks/RESULTS.md v2.6); the samples are the same either way.
    preload: bool = False
    on_error: str = "raise"  # raise | skip
    load_gt_masks: bool = True
    load_clean_images: bool = True
    # Stages 2-3: static scenes (LVSM layout, e.g. re10k_processed_v2) mixed into the dynamic training data; every
    # view of them is labelled static (pasted objects aside): negatives the pseudo-labels cannot give. "" = off.
    static_root: str = ""
    static_fraction: float = 0.5  # share of the training samples drawn from data.static_root


@dataclass
class TrainingConfig:
    stage: int = 1  # 1 pretrain | 2 motion mask | 3 joint + copy-paste
    run_name: str = "wildrayzer_stage1_pretrain"
    output_dir: str = "experiments"
    init_from: str = ""  # checkpoint (file or run dir) to initialise from, e.g. the stage-1 result for stage 2
    seed: int = 42
    batch_size: int = 8  # per process
    grad_accum_steps: int = 1
    max_steps: int = 100_000
    lr: float = 1e-4
    lr_warmup: int = 3000
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # > 0: checkpoints hold an exponential moving average of the weights with this decay (e.g. 0.999), the state the
    # raw ones (wildrayzer/train/ema.py); 0: off
    ema_decay: float = 0.0
    perceptual_weight: float = 0.2
    perceptual_weights_path: str = ""  # torchvision-format VGG-19 state dict; "" disables the perceptual term
    mask_distill_loss_weight: float = 1.0
    # Stage 1 (a model that predicts its cameras): paste copy_paste cut-outs into the views the camera estimator reads,
    # not the scene encoder's or the targets (wildrayzer/train/stage1.py), to teach its cameras to ignore objects that
    # move between views. On the tiny model it learns to ignore the cut-outs but not the benchmark's transients, which
    # cost its cameras 3-4 deg (benchmarks/RESULTS.md v2.7)
    camera_paste: bool = False
    freeze_parts: list[str] = field(default_factory=list)  # parts held frozen on top of the stage's choice
    mask_pos_weight: float = 1.0  # BCE weight of moving pixels (class balance; transients cover ~5-15 % of an image)
    psnr_filter_threshold: float = 17.0
    resume: bool = True
    checkpoint_every: int = 1000
    keep_last_n: int = 3
    log_every: int = 10
    max_nonfinite_steps: int = 20  # consecutive non-finite steps before a clean stop
    # > 0: when the mean of the last 25 losses lies this many dB (10 log10 of the loss) above the best block of
    # rollback_every steps, restore the last good weights and multiply the lr by rollback_lr_factor
    # (wildrayzer/train/rollback.py); 0: off
    rollback_db: float = 0.0
    rollback_every: int = 100
    rollback_lr_factor: float = 0.5
    max_rollbacks: int = 3  # roll-backs before a clean stop
    # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32. bf16 on a CPU with bf16 matmul units (amx_bf16 in
    # /proc/cpuinfo) trains the tiny posed stage 1 1.5x as fast at the same quality (benchmarks/RESULTS.md
    # v2.5, `wildrayzer bench amp`); without them it can be slower than fp32
    amp: str = "auto"
    # torch.compile the model (forward and backward; the first step compiles, a minute or more on a small CPU). On
    # this 2-core CPU with amp=bf16 it takes the tiny posed and joint phases 1.15-1.55x faster, the estimator-only
    # phase slower (benchmarks/RESULTS.md v2.6, `wildrayzer bench amp --compile`)
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class CopyPasteConfig:
    enabled: bool = False
    image_dir: str = "data/coco/train2014"
    annotation_file: str = "data/coco/annotations/instances_train2014.json"
    probability: float = 0.5  # chance that a sample gets pasted objects
    max_objects: int = 2
    min_scale: float = 0.15  # pasted object height as a fraction of the image height
    max_scale: float = 0.5
    min_area: int = 400  # ignore COCO instances smaller than this (pixels)
    # jump: each view gets the instances at independent random places (the release's); glide: each instance moves
    # along a straight path through the sample's frames, place and scale interpolated by the view's frame number
    motion: str = "jump"


@dataclass
class PseudoLabelConfig:
    semantic_weight: float = 0.6
    ssim_weight: float = 0.4
    ssim_window: int = 11
    kmeans_k: int = 64
    kmeans_iters: int = 20
    top_cluster_fraction: float = 0.05
    min_frame_votes: int = 4
    score_threshold: float = 1.5  # z-score above which a pixel is a candidate before co-segmentation
    # Gaussian blurs tried on the photo to match the render's sharpness before SSIM (empty list: no matching)
    render_blur_sigmas: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0])
    morph_kernel: int = 5
    grabcut: bool = True
    grabcut_iters: int = 3
    # Scenes of a batch labelled in parallel threads (OpenCV and torch release the GIL): 0 = min(batch, CPU cores).
    workers: int = 0
    # The frozen static model whose renders make the labels: stage 3 (else training.init_from) and, when set, stage 2
    # (else the model itself). A posed one (model.cameras=given) renders with the dataset's cameras.
    stage1_checkpoint: str = ""
    # The labeller's static render masks the context tokens its own motion head flags (MAE, as at inference): a
    # second labelling round, for a labeller whose renderer was trained with token masking (a stage-3 run).
    mask_context: bool = False
    # The token threshold of that masking (a patch is masked when its mean motion probability exceeds it); null = the
    # labeller model's own ``model.mask_token_threshold``. Only the labeller's renders use it, not the trained model.
    mask_token_threshold: float | None = None
    # Which views the labeller renders each view from: context = the sample's context views render its targets (the
    # release's); farthest = every view, context ones too, from the num_context other views of the sample farthest
    # from it in frame number (transients move: farther views carry less of the view's own), and every view is
    # labelled (benchmarks/RESULTS.md v2.4).
    render_from: str = "context"


@dataclass
class InferenceConfig:
    model_path: str = "./checkpoints/wildrayzer_2view.pt"
    split: str = "test"  # the evaluated split is data.split; a value other than "test" must equal it
    batch_size: int = 1  # must be 1: one scene per forward pass (torchrun spreads scenes over processes)
    compute_metrics: bool = True  # must be true: metrics are computed wherever the data has ground truth
    lpips_weights_path: str = ""  # local LPIPS weights; "" reports LPIPS as n/a
    save_plucker_vis: bool = False
    plucker_vis_stride: int = 16
    plucker_vis_include_quiver: bool = False
    render_video: bool = False
    video_frames: int = 24
    video_format: str = "gif"  # gif | mp4
    make_report: bool = True
    max_scenes: int = 0  # 0 = all
    device: str = "auto"


@dataclass
class LoggingConfig:
    wandb: str = "disabled"  # disabled | offline | online
    wandb_project: str = "wildrayzer"
    api_keys_path: str = "configs/api_keys.yaml"
    tensorboard: bool = True
    progress: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    copy_paste: CopyPasteConfig = field(default_factory=CopyPasteConfig)
    pseudolabel: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    inference_out_root: str = "experiments/evaluation"


def schema() -> DictConfig:
    cfg = OmegaConf.structured(Config)
    OmegaConf.set_struct(cfg, True)
    return cfg


def valid_keys(node: Any = None, prefix: str = "") -> list[str]:
    """All dotted leaf keys of the schema (and their parent sections)."""
    node = schema() if node is None else node
    keys = []
    for k, v in node.items():
        path = f"{prefix}{k}"
        keys.append(path)
        if isinstance(v, DictConfig):
            keys.extend(valid_keys(v, path + "."))
    return keys


def _check_keys(tree: Any, where: str, prefix: str = "", known: set[str] | None = None) -> None:
    known = set(valid_keys()) if known is None else known
    if not isinstance(tree, dict):
        return
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if path not in known:
            close = difflib.get_close_matches(path, sorted(known), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{path}' in {where}{hint}")
        if isinstance(v, dict) and any(kk.startswith(path + ".") for kk in known):
            _check_keys(v, where, path + ".", known)


MAX_CONFIG_BYTES = 1024 * 1024  # a config file (real ones are a few KB)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML config and the chain of ``base:`` files it extends; later files win. Each file must be a regular
    file of at most MAX_CONFIG_BYTES (a FIFO or device is refused without being read)."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config file {path} extends itself through 'base:'")
    try:
        text = read_capped(path, "config file", ConfigError, MAX_CONFIG_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path} ({type(e).__name__}); it must be UTF-8 YAML") from None
    data = safe_yaml(text, f"config file {path}") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a mapping at top level")
    base = data.pop("base", None)
    bases = [] if base is None else (base if isinstance(base, list) else [base])
    merged: dict = {}
    for b in bases:  # several bases merge left to right, then this file on top
        b_path = Path(str(b)) if Path(str(b)).is_absolute() else path.parent / str(b)
        merged = _deep_merge(merged, _read_yaml(b_path, seen + (path,)))
    return _deep_merge(merged, data)


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _merge(cfg: DictConfig, tree: dict, where: str) -> DictConfig:
    _check_keys(tree, where)
    try:
        return OmegaConf.merge(cfg, OmegaConf.create(tree))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        msg = str(e).splitlines()[0]
        raise ConfigError(f"bad value for config key '{key}' in {where}: {msg}") from None


def parse_dotlist(overrides: list[str]) -> dict:
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. training.lr=2e-4)")
        key, value = item.split("=", 1)
        key = key.strip().lstrip("+")
        if not key:
            raise ConfigError(f"override '{item}' has an empty key")
        parsed = safe_yaml(value, f"override '{item}'") if value.strip() else ""
        node = tree
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with an earlier override")
        node[parts[-1]] = parsed
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Schema defaults <- YAML file (with ``base:`` chain) <- dotlist overrides, in struct mode."""
    cfg = schema()
    if path is not None:
        tree = _read_yaml(Path(path))
        if isinstance(tree, dict):  # a run's own config.yaml written before a key was retired
            kept = _drop_retired(tree)
            if kept != tree:
                logging.getLogger(__name__).warning("%s: ignoring retired key(s) %s (they never had an effect)",
                                                    path, ", ".join(RETIRED_KEYS))
            tree = kept
        cfg = _merge(cfg, tree, str(path))
    if overrides:
        cfg = _merge(cfg, parse_dotlist(list(overrides)), "command-line overrides")
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg, False)
    sources = ([str(path)] if path is not None else []) + (["command-line overrides"] if overrides else [])
    _resolve(cfg, " or ".join(sources) or "defaults")
    validate(cfg)
    return cfg


def _resolve(cfg: DictConfig, where: str) -> None:
    """Resolve ``${...}`` interpolations now, so a bad one is a ConfigError at startup rather than a traceback later.
    Only references to other keys and OmegaConf's built-in ``oc.*`` resolvers exist (none are registered here)."""
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        msg = str(e).splitlines()[0]
        raise ConfigError(f"config key '{key}' (from {where}): cannot resolve interpolation ({msg}); only references "
                          "to other keys and OmegaConf's built-in oc.* resolvers are supported") from None


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def to_container(cfg: DictConfig | ListConfig) -> Any:
    return OmegaConf.to_container(cfg, resolve=True)


# Keys that were removed from the schema but that configs stored in older checkpoints still hold (dropped on read).
RETIRED_KEYS = ("training.pseudolabel_cache",)  # never read by training: the pseudolabel CLI's old output default


def _drop_retired(tree: dict) -> dict:
    tree = copy.deepcopy(tree)
    for key in RETIRED_KEYS:
        section, _, leaf = key.rpartition(".")
        node = tree.get(section) if isinstance(tree, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return tree


def from_container(tree: dict) -> DictConfig:
    """Rebuild a config from a stored (resolved) dict, e.g. the one saved with a checkpoint; validated like a file."""
    cfg = _merge(schema(), _drop_retired(tree) if isinstance(tree, dict) else tree, "stored config")
    _resolve(cfg, "stored config")
    validate(cfg)
    return cfg
