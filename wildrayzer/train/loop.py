"""The training loop shared by all stages: DDP, accumulation, AMP, non-finite and loss-jump guards, checkpoints,
resume."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from ..config import to_yaml
from ..distributed import DistInfo, any_true, barrier, cleanup, gather_objects, init_distributed, mean_over_ranks
from ..errors import CheckpointError, ConfigError, UserError
from ..fileio import atomic_write_bytes, check_name
from ..weights import check_arch, latest_checkpoint, load_state_strict, read_weights, stored_config
from .checkpoint import load_training_state, save_checkpoint
from .ema import WeightEMA, ema_entry, restore_raw_weights
from .logging import RunLogger
from .optim import build_optimizer, build_scheduler
from .rng import capture_rng, restore_rng, seed_everything
from .rollback import LossJumpGuard
from .sampler import EpochLoader
from .stages import apply_trainable, get_stage
from .warmstart import init_from_checkpoint


class TrainingDivergedError(UserError):
    """Too many consecutive non-finite steps, or loss jumps after ``training.max_rollbacks`` roll-backs; the last
    checkpoint is untouched."""


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (disk full, I/O error); the previous checkpoint is untouched."""


def run_dir_for(cfg) -> Path:
    """``<training.output_dir>/<training.run_name>``; a run name that would leave output_dir is a ConfigError."""
    return Path(cfg.training.output_dir) / check_name(cfg.training.run_name, "training.run_name", ConfigError)


def _git_sha() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)\n"
    if sha.returncode:
        return "unknown (not a git checkout)\n"
    return f"{sha.stdout.strip()}{' dirty' if dirty.stdout.strip() else ''}\n"


def _amp_context(cfg, device: torch.device):
    amp = cfg.training.amp
    use_bf16 = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP over the trainable parameters only: frozen parameters are excluded from broadcast and reduction."""
    if not info.enabled:
        return model
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    frozen += [n for n, _ in model.named_buffers()]
    if hasattr(DDP, "_set_params_and_buffers_to_ignore_for_model"):
        DDP._set_params_and_buffers_to_ignore_for_model(model, frozen)
    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids, broadcast_buffers=False)


def _first_nonfinite_param(model: nn.Module) -> str | None:
    """Name of the first parameter holding NaN or infinity, or None (checked before every checkpoint write)."""
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            return name
    return None


def _apply_training_state(st: dict, weights: Path, optimizer, scheduler, loader, info: DistInfo,
                          log) -> tuple[int, int]:
    """Restore optimizer, scheduler, sampler and RNG from a checked ``.state.pt`` -> (step, nonfinite_total); a state
    that does not fit this run (other parameter groups, truncated RNG list, ...) is one CheckpointError line."""
    part = "optimizer"
    try:
        optimizer.load_state_dict(st["optimizer"])
        part = "scheduler"
        scheduler.load_state_dict(st["scheduler"])
        part = "sampler"
        loader.load_state_dict(st["sampler"])
        if st["world_size"] == info.world_size:
            part = "rng"
            restore_rng(st["rng"][info.rank])
        else:
            log(f"resume: world size changed {st['world_size']} -> {info.world_size}; RNG streams re-seeded")
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as e:
        msg = " ".join(str(e).split())[:160]
        path = weights.with_name(weights.name.replace(".safetensors", ".state.pt"))
        raise CheckpointError(f"training state {path}: its '{part}' entry does not fit this run "
                              f"({type(e).__name__}: {msg}); delete that checkpoint's files or start a new run") \
            from None
    return st["step"], st["nonfinite_total"]


def _check_compiler(device: torch.device) -> None:
    """training.compile on a CPU: inductor builds C++ kernels at the first step, and without a compiler that is a long
    traceback minutes into the run; here it is one ConfigError before the run directory or any data is touched."""
    if device.type != "cpu":
        return
    cxx = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
    if shutil.which(cxx) is None:
        raise ConfigError(f"training.compile=true on a CPU needs a C++ compiler, and {cxx!r} is not on PATH: "
                          "install one (or point CXX at it), or set training.compile=false")


def train(cfg, dataset=None, fault_hook=None) -> dict:
    """Train ``cfg.training.stage`` to ``cfg.training.max_steps``.

    ``dataset`` defaults to ``wildrayzer.data.build_dataset(cfg, "train")``. ``fault_hook(step, loss) -> loss`` lets
    tests inject non-finite losses. Returns ``{"step", "run_dir", "nonfinite_steps", "checkpoint"}``.
    """
    info = init_distributed(cfg.training.device)
    try:
        result = _train(cfg, info, dataset, fault_hook)
        barrier(info)  # no rank tears gloo down while another still finishes its last collective
        return result
    finally:
        cleanup()


def _watch_loss(guard: LossJumpGuard, loss: float, step: int, info: DistInfo, log, last_ckpt) -> None:
    """After a finite step: roll back on a loss jump seen by any rank, or close a block of the guard."""
    if any_true(guard.jumped(loss), info):
        jump = max(gather_objects(guard.recent_mean - guard.best, info))  # the rank that saw it
        if guard.rollbacks >= guard.max_rollbacks:
            raise TrainingDivergedError(
                f"the training loss jumped {jump:.1f} dB above its best level at step "
                f"{step} after {guard.rollbacks} roll-back(s) (training.max_rollbacks); the last good weights were "
                f"those of step {guard.good['step']}, the last checkpoint: {last_ckpt or 'none'}. Lower training.lr "
                "or check the data")
        back_to = guard.roll_back()
        log(f"step {step}: training loss {jump:.1f} dB above its best level (training.rollback_db "
            f"{guard.db:g}); rolled back to the weights of step {back_to}, lr x{guard.lr_factor:g} from here "
            f"(roll-back {guard.rollbacks} of at most {guard.max_rollbacks})")
    elif guard.block_done():  # aligned on every rank: all feed the same steps and roll back together
        guard.end_block(step)


def _train(cfg, info: DistInfo, dataset, fault_hook) -> dict:
    from ..model import WildRayZerModel

    t, device = cfg.training, info.device
    if t.compile:
        _check_compiler(device)
    run_dir = run_dir_for(cfg)
    if info.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the run directory {run_dir} ({e.strerror}); set training.output_dir to "
                            "a writable folder") from None
    barrier(info)
    stage = get_stage(t.stage)
    semantic_dim = stage.semantic_dim(cfg) if hasattr(stage, "semantic_dim") else 0

    seed_everything(t.seed)  # identical init on every rank (DDP also broadcasts rank 0's weights)
    m = cfg.model
    if m.use_motion_mask and m.motion_upsample_steps and 2 ** m.motion_upsample_steps != m.patch_size:
        raise ConfigError(f"model.motion_upsample_steps={m.motion_upsample_steps} predicts masks at "
                          f"{2 ** m.motion_upsample_steps}x the token grid, not one per pixel (patch {m.patch_size}); "
                          "training needs image-sized masks: set model.motion_upsample_steps=0")
    model = WildRayZerModel(cfg.model, semantic_dim=semantic_dim)
    latest = latest_checkpoint(run_dir) if t.resume else None
    logger = RunLogger(cfg, run_dir, info.is_main, start_step=0, total_steps=t.max_steps)
    log = logger.note
    resume_state = None
    if latest is not None:
        state, meta = read_weights(latest)
        check_arch(cfg.model, stored_config(meta, str(latest)).model, f"resume checkpoint {latest}")
        load_state_strict(model, state, f"resume checkpoint {latest}")
        resume_state = load_training_state(latest)  # checked before anything of this run is written
        log(f"resuming from {latest}" + (" (training.init_from ignored)" if t.init_from else ""))
    elif t.init_from:
        init_from_checkpoint(model, cfg, t.init_from, log)

    names = apply_trainable(model, t.stage, t.freeze_parts)
    model.to(device).train()
    ema = WeightEMA(model, t.ema_decay) if t.ema_decay > 0 else None
    if resume_state is not None:  # the weights file holds the EMA weights of a run that averages; the state its raw
        entry = resume_state.get("ema")
        if ema is not None:
            ema.resume(model, entry, f"resume checkpoint {latest}")
        elif entry is not None:
            restore_raw_weights(model, entry, f"resume checkpoint {latest}")
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"stage {t.stage}: training {', '.join(names)} ({n_train / 1e6:.2f}M params) on {info.world_size} x "
        f"{device.type}; run dir {run_dir}")
    stage.setup(cfg, device, log)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, t)
    scheduler = build_scheduler(optimizer, t)
    ddp_model = _wrap_ddp(model, info)
    fwd_model = torch.compile(ddp_model) if t.compile else ddp_model

    if dataset is None:
        from ..data import build_dataset

        dataset = build_dataset(cfg, "train")
    if hasattr(dataset, "summary"):
        log(f"data: {dataset.summary()}")
    loader = EpochLoader(dataset, t.batch_size, info.rank, info.world_size, t.seed, cfg.data.num_workers,
                         pin_memory=device.type == "cuda")
    seed_everything(t.seed + 7919 * info.rank)  # per-rank stream for data augmentation / view sampling
    step, nonfinite_total = 0, 0
    if resume_state is not None:
        step, nonfinite_total = _apply_training_state(resume_state, latest, optimizer, scheduler, loader, info, log)
    if info.is_main:  # only once data, checkpoint and training state are known to be good
        atomic_write_bytes(run_dir / "config.yaml", to_yaml(cfg).encode())
        atomic_write_bytes(run_dir / "git_sha.txt", _git_sha().encode())
    if logger.bar is not None:
        logger.bar.n = logger.bar.last_print_n = step

    guard = LossJumpGuard(model, optimizer, scheduler, ema, t, step) if t.rollback_db > 0 else None
    amp = _amp_context(cfg, device)
    accum = max(1, t.grad_accum_steps)
    consecutive, last_ckpt = 0, latest
    good_steps = 0  # finite steps of this invocation: none yet -> no checkpoint is written
    first_step = step
    t_last, steps_since = time.perf_counter(), 0
    try:
        while step < t.max_steps:
            logs_sum: dict[str, torch.Tensor] = {}
            loss_total = torch.zeros((), device=device)
            for micro in range(accum):
                batch = _to_device(next(loader), device)
                sync = not (info.enabled and micro < accum - 1)
                with nullcontext() if sync else ddp_model.no_sync():
                    with amp():
                        out = stage.forward(fwd_model, batch, cfg)
                        loss, logs = stage.compute_losses(batch, out, cfg)
                    if fault_hook is not None:
                        loss = fault_hook(step, loss)
                    (loss / accum).backward()
                loss_total = loss_total + loss.detach().float() / accum
                for k, v in logs.items():
                    logs_sum[k] = logs_sum.get(k, 0.0) + v.detach().float() / accum
            clip = t.grad_clip if t.grad_clip > 0 else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            bad = any_true(not (torch.isfinite(loss_total) and torch.isfinite(grad_norm)), info)
            if bad:
                nonfinite_total += 1
                consecutive += 1
                log(f"step {step}: non-finite loss/gradient (loss {float(loss_total):.4g}, grad norm "
                    f"{float(grad_norm):.4g}); step skipped ({consecutive} in a row, {nonfinite_total} total)")
                if consecutive >= t.max_nonfinite_steps:
                    raise TrainingDivergedError(
                        f"{consecutive} consecutive non-finite steps (training.max_nonfinite_steps) at step {step}; "
                        f"last good checkpoint: {last_ckpt or 'none'}. Lower training.lr or check the data")
            else:
                optimizer.step()
                if ema is not None:
                    ema.update(model)
                consecutive = 0
                good_steps += 1
            optimizer.zero_grad(set_to_none=True)
            with warnings.catch_warnings():  # a skipped first step is deliberate, not torch's "wrong order" mistake
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
                scheduler.step()
            step += 1
            steps_since += 1
            if guard is not None and not bad:
                _watch_loss(guard, float(loss_total), step, info, log, last_ckpt)
            if info.is_main:
                now = time.perf_counter()
                ips = steps_since / max(now - t_last, 1e-9)
                logger.advance(1, {"loss": float(loss_total), "psnr": float(logs_sum.get("psnr", float("nan"))),
                                   "it/s": ips})
            if step % t.log_every == 0 or step == t.max_steps:
                scalars = mean_over_ranks({"loss": loss_total, "grad_norm": grad_norm.float(), **logs_sum}, info)
                scalars = {f"train/{k}": v for k, v in scalars.items()}
                scalars.update({"train/lr": optimizer.param_groups[0]["lr"], "train/nonfinite_steps": nonfinite_total,
                                "train/it_per_s": steps_since / max(time.perf_counter() - t_last, 1e-9)})
                logger.log(step, scalars)
                t_last, steps_since = time.perf_counter(), 0
            if step % t.checkpoint_every == 0 or step == t.max_steps:
                if good_steps == 0:  # nothing learned yet: the weights are the start's, LATEST stays as it is
                    if step == t.max_steps:
                        raise TrainingDivergedError(
                            f"all {step - first_step} steps of this run were non-finite (loss or gradient NaN/inf); "
                            f"no checkpoint written, last good checkpoint: {last_ckpt or 'none'}. Lower "
                            "training.lr or check the data")
                    log(f"step {step}: no finite step yet in this run; checkpoint not written")
                    continue
                bad_param = _first_nonfinite_param(model)
                if any_true(bad_param is not None, info):
                    raise TrainingDivergedError(
                        f"weights turned non-finite by step {step} ({bad_param or 'on another rank'}); no checkpoint "
                        f"written, last good checkpoint: {last_ckpt or 'none'}. Lower training.lr or check the data")
                rngs = gather_objects(capture_rng(), info)
                write_error = None
                if info.is_main:
                    train_state = {"step": step, "optimizer": optimizer.state_dict(),
                                   "scheduler": scheduler.state_dict(), "rng": rngs, "sampler": loader.state_dict(),
                                   "nonfinite_total": nonfinite_total, "world_size": info.world_size}
                    try:  # with EMA the weights file gets the averaged weights, the state the raw ones
                        with (ema.swapped_in(model) if ema is not None else nullcontext()) as raw:
                            if ema is not None:
                                train_state["ema"] = ema_entry(raw, ema.updates)
                            save_checkpoint(run_dir, step, model, cfg, train_state, t.keep_last_n, semantic_dim)
                    except OSError as e:  # disk full, quota, I/O error: LATEST still names the previous checkpoint
                        write_error = e.strerror or str(e)
                if any_true(write_error is not None, info):  # every rank stops together (no rank left in a barrier)
                    raise CheckpointWriteError(
                        f"cannot write the step-{step} checkpoint in {run_dir / 'checkpoints'} "
                        f"({write_error or 'failed on rank 0'}); last good checkpoint: {last_ckpt or 'none'}. "
                        "Free disk space and re-run the same command to resume")
                last_ckpt = run_dir / "checkpoints" / f"ckpt_{step:08d}.safetensors"
    finally:
        logger.close()
    log(f"done: step {step}, {nonfinite_total} non-finite steps skipped; checkpoint {last_ckpt}")
    return {"step": step, "run_dir": run_dir, "nonfinite_steps": nonfinite_total, "checkpoint": last_ckpt}
