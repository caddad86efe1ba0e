"""data.static_root: static scenes mixed into the dynamic training data of stages 2-3 (wildrayzer.data.static_mix)."""

from __future__ import annotations

import pytest
import torch
from tiny_run import MICRO_MODEL, small_synth
from torch.utils.data import default_collate

from wildrayzer.config import load_config
from wildrayzer.data import StaticMix, build_dataset
from wildrayzer.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return small_synth(tmp_path_factory.mktemp("mix") / "data")


def _cfg(synth, *extra):
    return load_config(None, [*MICRO_MODEL, "training.stage=2", "data.dataset=dynamic",
                              f"data.root={synth}/dynamic_re10k", "data.frame_gap_min=4", "data.frame_gap_max=8",
                              f"data.static_root={synth}/re10k_processed_v2", *extra])


def test_mix_holds_the_asked_share_of_static_items_that_batch_with_dynamic_ones(synth):
    ds = build_dataset(_cfg(synth, "data.static_fraction=0.75"), "train")
    assert isinstance(ds, StaticMix) and (ds.num_dynamic, ds.num_static, len(ds)) == (1, 3, 4)
    items = [ds[i] for i in range(len(ds))]
    assert [bool(it["static_scene"]) for it in items] == [False, True, True, True]
    assert {it["scene"] for it in items[1:]} <= {r.name for r in ds.static.scenes}
    assert all(it.keys() == items[0].keys() for it in items)
    assert items[1]["motion_masks"].sum() == 0 and torch.equal(items[1]["clean_images"], items[1]["images"])
    batch = default_collate(items)
    assert batch["static_scene"].tolist() == [False, True, True, True]
    assert batch["images"].shape == (4, 5, 3, 32, 32)


def test_static_slots_move_on_each_epoch_so_every_static_scene_is_drawn(synth):
    ds = build_dataset(_cfg(synth, "data.static_fraction=0.5"), "train")
    assert ds.num_static == 1 and len(ds.static) == 2
    seen = set()
    for epoch in range(2):
        ds.set_epoch(epoch)
        seen.add(ds[1]["scene"])
    assert seen == {r.name for r in ds.static.scenes}


def test_eval_data_and_an_empty_static_root_are_not_mixed(synth):
    assert not isinstance(build_dataset(_cfg(synth), "eval"), StaticMix)
    assert not isinstance(build_dataset(_cfg(synth, "data.static_root="), "train"), StaticMix)


@pytest.mark.parametrize("override,match", [("training.stage=1", "stages 2-3"), ("data.dataset=lvsm", "stages 2-3"),
                                            ("data.static_fraction=1.0", "static_fraction")])
def test_misuse_is_one_clear_error(synth, override, match):
    with pytest.raises(ConfigError, match=match):
        build_dataset(_cfg(synth, override), "train")


def test_a_missing_static_root_names_the_directory(synth, tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        build_dataset(_cfg(synth, f"data.static_root={tmp_path}/nowhere"), "train")


def test_summary_names_both_sets_and_the_static_share(synth):
    text = build_dataset(_cfg(synth, "data.static_fraction=0.75"), "train").summary()
    assert "dynamic_re10k" in text and "re10k_processed_v2" in text and "75% of the samples" in text
