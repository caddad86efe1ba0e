"""Run logging on rank 0: tqdm progress bar, TensorBoard (always when enabled), wandb only when asked and keyed."""

from __future__ import annotations

import sys
from pathlib import Path


class RunLogger:
    """``note(msg)`` prints a line; ``log(step, scalars)`` goes to TensorBoard and wandb, and -- without a progress bar
    (``logging.progress=false``, batch jobs) -- to a plain ``step N/M loss ... psnr ... it/s ...`` line. No-op off rank
    0."""

    def __init__(self, cfg, run_dir: Path, is_main: bool, start_step: int, total_steps: int):
        self.is_main = is_main
        self.bar = None
        self.total_steps = total_steps
        self.tb = None
        self.wandb = None
        if not is_main:
            return
        lcfg = cfg.logging
        if lcfg.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True,
                            desc=f"stage {cfg.training.stage}", file=sys.stderr)
        if lcfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if lcfg.wandb != "disabled":
            self.wandb = self._init_wandb(cfg, run_dir)

    def _init_wandb(self, cfg, run_dir: Path):
        lcfg = cfg.logging
        key = None
        keys_path = Path(lcfg.api_keys_path)
        if keys_path.is_file():
            from ..config import safe_yaml
            from ..errors import ConfigError
            from ..fileio import read_capped

            keys = safe_yaml(read_capped(keys_path, "logging.api_keys_path", ConfigError, 65536).decode("utf-8",
                             "replace"), f"logging.api_keys_path {keys_path}") or {}
            key = keys.get("wandb") if isinstance(keys, dict) else None
        if lcfg.wandb == "online" and not key:
            self.note(f"wandb: no 'wandb' key in {keys_path}; wandb logging off (TensorBoard still on)")
            return None
        try:
            import wandb
        except ImportError:
            self.note("wandb: package not installed (pip install -e '.[wandb]'); wandb logging off")
            return None
        try:
            if key and lcfg.wandb == "online":
                wandb.login(key=key, relogin=False)
            from ..config import to_container

            return wandb.init(project=lcfg.wandb_project, name=cfg.training.run_name, dir=str(run_dir),
                              mode=lcfg.wandb, config=to_container(cfg), resume="allow")
        except Exception as e:  # noqa: BLE001 - logging must never end a training run
            self.note(f"wandb: init failed ({type(e).__name__}: {e}); wandb logging off")
            return None

    def note(self, msg: str) -> None:
        if not self.is_main:
            return
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def advance(self, steps: int = 1, postfix: dict[str, float] | None = None) -> None:
        if self.bar is None:
            return
        self.bar.update(steps)
        if postfix:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.is_main:
            return
        if self.bar is None:
            shown = {"loss": "loss", "psnr": "psnr", "mask_bce": "bce", "lr": "lr", "it_per_s": "it/s"}
            parts = [f"{label} {scalars[f'train/{key}']:.4g}" for key, label in shown.items()
                     if f"train/{key}" in scalars]
            self.note(f"step {step}/{self.total_steps} " + " ".join(parts))
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            try:
                self.wandb.log(scalars, step=step)
            except Exception as e:  # noqa: BLE001
                self.note(f"wandb: log failed ({type(e).__name__}); wandb logging off")
                self.wandb = None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
