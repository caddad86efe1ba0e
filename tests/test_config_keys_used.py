"""Every config key has an effect: each leaf key of the schema is read somewhere in the package outside the schema
and its value checks (config.py, config_checks.py), as ``.name`` or ``["name"]``. A key that only they know would be
accepted, validated and then ignored."""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from wildrayzer.config import schema, valid_keys

PKG = Path(__file__).resolve().parents[1] / "wildrayzer"
SCHEMA_FILES = ("config.py", "config_checks.py")  # naming a key there is declaring or checking it, not reading it
# Keys read by a name built at run time; none today. Each entry needs the reason next to it.
READ_DYNAMICALLY: dict[str, str] = {}


def unread_keys(leaves: list[str], sources: list[str]) -> list[str]:
    out = []
    for key in leaves:
        leaf = key.rsplit(".", 1)[-1]
        pattern = re.compile(rf"\.{leaf}\b|[\"']{leaf}[\"']")
        if not any(pattern.search(s) for s in sources):
            out.append(key)
    return out


def test_every_config_key_is_read_outside_the_schema():
    cfg = schema()
    leaves = [k for k in valid_keys() if not isinstance(OmegaConf.select(cfg, k), DictConfig)]
    assert len(leaves) > 100 and "training.psnr_filter_threshold" in leaves
    sources = [p.read_text(encoding="utf-8") for p in PKG.rglob("*.py") if p.name not in SCHEMA_FILES]
    unread = [k for k in unread_keys(leaves, sources) if k not in READ_DYNAMICALLY]
    assert not unread, f"config keys nobody reads (remove them, or use them): {unread}"


def test_the_check_flags_a_key_nobody_reads():
    sources = ["lr = cfg.training.lr", 'x = meta["stage"]']
    assert unread_keys(["training.lr", "training.stage", "training.pseudolabel_cache"], sources) == [
        "training.pseudolabel_cache"]
