"""Mutation runner for the method's decisions: flip each one, the fast suite must fail (``make mutate``; not in CI).

Every entry of :data:`DECISIONS` names one decision that makes WildRayZer what it is, the exact source snippet that
implements it, a replacement that flips it, and the behavioural test(s) that must fail when it is flipped.
``docs/METHOD_DECISIONS.md`` is generated from this table (``--write-docs``);
``tests/test_method_decisions_table.py`` keeps the two in step and checks that every snippet still occurs exactly
once, so the list cannot rot silently.
:data:`CONTROLS` are further flips that the docs do not list ("flips we keep for ourselves"): other ways of breaking
the same decisions, run with ``--all`` and reported separately, without named tests (the decision test files run
first), to check that the tests pin behaviour rather than the listed snippets.

For each flip the runner applies exactly one replacement in a scratch copy of the repository (``git ls-files``:
tracked and untracked-but-not-ignored files) under /tmp, runs the flip's named tests, and only if they all pass the
whole fast suite with ``-x``; it records killed / survived, restores the file, and goes on. The scratch copy imports
its own ``wildrayzer`` (PYTHONPATH, checked at start) and never writes bytecode (a same-length flip must not be
masked by a stale ``.pyc``). It prints a table and the kill ratio and exits 1 when a flip survives or cannot be
applied.

    python tools/mutate.py            # the listed decisions
    python tools/mutate.py --all      # ... and the controls
    python tools/mutate.py --only stage3-static-pixels,psnr-filter
    python tools/mutate.py --list | --check | --write-docs
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "METHOD_DECISIONS.md"
DECISION_TESTS = ("tests/test_method_decisions_geometry.py", "tests/test_method_decisions_model.py",
                  "tests/test_method_decisions_losses.py", "tests/test_method_decisions_pseudolabel.py",
                  "tests/test_method_decisions_training.py")


@dataclass(frozen=True)
class Flip:
    id: str
    area: str
    file: str  # relative to the repository root
    old: str  # must occur exactly once in ``file``
    new: str
    tests: tuple[str, ...]  # pytest node ids that must fail when the flip is applied
    what: str = ""
    why: str = ""
    more: tuple[tuple[str, str], ...] = ()  # further (old, new) replacements in the same file, same rules

    def pairs(self) -> tuple[tuple[str, str], ...]:
        return ((self.old, self.new), *self.more)


G = "tests/test_method_decisions_geometry.py::"
M = "tests/test_method_decisions_model.py::"
L = "tests/test_method_decisions_losses.py::"
P = "tests/test_method_decisions_pseudolabel.py::"
T = "tests/test_method_decisions_training.py::"
PAPER = T + "test_paper_settings_are_the_defaults_and_the_stage_configs"

GEO, DATA, MODEL, MOTION, LOSS, PSEUDO, PASTE, STAGES, CKPT, METRIC = (
    "geometry and conventions", "data conventions", "model", "motion head and token masking", "losses and their masks",
    "pseudo-labels", "copy-paste", "stages and freezing", "checkpoint and resume", "metrics")

DECISIONS: list[Flip] = [
    # ------------------------------------------------------------------ geometry and conventions
    Flip("pixel-centres", GEO, "wildrayzer/geometry.py",
         "torch.arange(height, device=dev, dtype=dt) + 0.5, torch.arange(width, device=dev, dtype=dt) + 0.5",
         "torch.arange(height, device=dev, dtype=dt) + 0.0, torch.arange(width, device=dev, dtype=dt) + 0.0",
         (G + "test_rays_go_through_pixel_centres",),
         "rays go through pixel centres (u + 0.5, v + 0.5)",
         "the convention of the datasets' intrinsics; a half-pixel shift misaligns every ray with its pixel"),
    Flip("opencv-axes", GEO, "wildrayzer/geometry.py", "y = (v - cy) / fy", "y = (cy - v) / fy",
         (G + "test_opencv_axes_y_points_down_and_z_forward",),
         "cameras follow OpenCV: x right, y down, z forward",
         "RE10K / LVSM poses are OpenCV; an OpenGL y axis mirrors every scene vertically"),
    Flip("plucker-moment", GEO, "wildrayzer/geometry.py", "torch.cat([torch.cross(o, d, dim=-1), d], dim=-1)",
         "torch.cat([torch.cross(d, o, dim=-1), d], dim=-1)", (G + "test_plucker_is_moment_then_unit_direction",),
         "a Plücker ray is [o x d, d]: moment first, then the direction",
         "the ray map that conditions scene encoder and renderer (RayZer's layout; released weights expect it)"),
    Flip("unit-directions", GEO, "wildrayzer/geometry.py",
         "d = F.normalize(d_cam @ c2w[..., None, :3, :3].transpose(-1, -2), dim=-1)",
         "d = d_cam @ c2w[..., None, :3, :3].transpose(-1, -2)", (G + "test_plucker_is_moment_then_unit_direction",),
         "ray directions are unit vectors in the world frame",
         "Plücker coordinates of a line are defined for a unit direction; unnormalised rays leak the focal length"),
    Flip("rot6d-columns", GEO, "wildrayzer/geometry.py", "return torch.stack([b1, b2, b3], dim=-1)",
         "return torch.stack([b1, b2, b3], dim=-2)", (G + "test_6d_rotation_is_the_first_two_columns",),
         "the 6D rotation is the first two columns, Gram-Schmidt keeps column 0",
         "the continuous rotation representation the pose head regresses (rows would transpose every pose)"),
    Flip("rigid-inverse", GEO, "wildrayzer/geometry.py",
         "return make_pose(rot_t, -(rot_t @ pose[..., :3, 3:4]).squeeze(-1))",
         "return make_pose(rot_t, -pose[..., :3, 3])", (G + "test_rigid_inverse_round_trips_c2w_and_w2c",),
         "w2c and c2w are rigid inverses (R^T, -R^T t)", "every metadata w2c becomes a c2w through it"),
    Flip("relative-to-view0", GEO, "wildrayzer/geometry.py", "return ref_w2c @ c2w", "return c2w @ ref_w2c",
         (G + "test_relative_poses_do_not_depend_on_the_world_frame",),
         "poses are expressed relative to view 0 (ref_w2c @ c2w)",
         "the model predicts cameras in view 0's frame; the world frame of a dataset must not matter"),
    Flip("given-scale", GEO, "wildrayzer/geometry.py", "dist = rel[..., :3, 3].norm(dim=-1).amax(dim=-1)",
         "dist = rel[..., :3, 3].norm(dim=-1).mean(dim=-1)",
         (G + "test_given_cameras_are_relative_to_view0_with_the_farthest_centre_at_one",),
         "posed mode: given cameras are scaled so the farthest centre is at distance 1",
         "LVSM's scene-scale normalisation: datasets come in arbitrary units"),
    Flip("given-normalised", GEO, "wildrayzer/model/wildrayzer.py",
         'return {"c2w": normalize_given_c2w(c2w.float()), "fxfycxcy": k.float()}',
         'return {"c2w": c2w.float(), "fxfycxcy": k.float()}',
         (G + "test_posed_model_uses_the_normalised_given_cameras",),
         "posed mode (model.cameras=given) feeds the normalised dataset cameras to the model",
         "renders must not depend on the dataset's world frame or unit"),
    Flip("context-only-scene", MODEL, "wildrayzer/model/wildrayzer.py",
         "ctx_plucker_tokens = self.scene.plucker_embed(plucker[:, :vc])",
         "ctx_plucker_tokens = self.scene.plucker_embed(plucker)",
         (G + "test_posed_model_uses_the_normalised_given_cameras",),
         "the scene is encoded from the context views only",
         "novel view synthesis: a target's photo must never reach its own render",
         more=(("fused = self.scene.fuse_tokens(tokens[:, :vc], ctx_plucker_tokens)",
                "fused = self.scene.fuse_tokens(tokens, ctx_plucker_tokens)"),)),
    Flip("focal-per-width", GEO, "wildrayzer/geometry.py", "f = f_norm * width", "f = f_norm * height",
         (G + "test_normalised_focal_is_relative_to_the_width_and_the_principal_point_is_the_centre",),
         "the normalised focal is fx = fy = f * W, principal point at the centre",
         "the estimator predicts one resolution-free focal per scene (release: f * W)"),
    Flip("resize-intrinsics", GEO, "wildrayzer/geometry.py", "fxfycxcy.new_tensor([sx, sy, sx, sy])",
         "fxfycxcy.new_tensor([sx, sy, sy, sx])", (G + "test_intrinsics_follow_resize_and_crop",),
         "resizing scales fx, cx by sx and fy, cy by sy", "non-square frames are resized anisotropically"),
    Flip("crop-intrinsics", GEO, "wildrayzer/geometry.py", "fxfycxcy.new_tensor([0.0, 0.0, left, top])",
         "fxfycxcy.new_tensor([0.0, 0.0, -left, -top])", (G + "test_intrinsics_follow_resize_and_crop",),
         "cropping shifts the principal point by the crop offset", "centre crops of wide frames move the image origin"),
    # ------------------------------------------------------------------ data conventions
    Flip("centre-crop", DATA, "wildrayzer/data/frames.py",
         "return new_h, new_w, (new_w - size) // 2, (new_h - size) // 2", "return new_h, new_w, 0, 0",
         (G + "test_resize_then_centre_crop_keeps_the_centre",),
         "frames are resized (short side) then centre-cropped to a square",
         "keeps the principal point centred, as the camera estimator assumes"),
    Flip("metadata-w2c", DATA, "wildrayzer/data/lvsm.py", "c2w = w2c_to_c2w(torch.from_numpy(w2c)).numpy()",
         "c2w = w2c", (G + "test_metadata_holds_w2c_and_items_hold_c2w_and_resized_intrinsics",),
         "LVSM metadata holds w2c; items hold c2w", "the layout of RE10K-processed metadata"),
    Flip("loader-intrinsics", DATA, "wildrayzer/data/lvsm.py",
         "intr.append(adjust_intrinsics(torch.from_numpy(rec.fxfycxcy[f]), h, w, self.size))",
         "intr.append(torch.from_numpy(rec.fxfycxcy[f]))",
         (G + "test_metadata_holds_w2c_and_items_hold_c2w_and_resized_intrinsics",),
         "item intrinsics are in pixels of the model-sized image",
         "metadata intrinsics refer to the original frame size"),
    Flip("targets-in-window", DATA, "wildrayzer/data/lvsm.py",
         "pool = np.array([i for i in range(start, start + gap + 1) if i not in ctx])",
         "pool = np.array([i for i in range(num_frames) if i not in ctx])",
         (G + "test_training_targets_lie_inside_the_context_window",),
         "training targets are drawn between the two context frames (a window of frame_gap_min..max)",
         "novel views are interpolated, as in RE10K practice; far targets are unseen content"),
    Flip("sim3-scale", METRIC, "wildrayzer/geometry.py", "scale = (sig * fix.diagonal()).sum() / var_s",
         "scale = torch.ones((), dtype=src.dtype)",
         (G + "test_pose_error_is_zero_up_to_a_similarity_and_positive_otherwise",),
         "pose errors are measured after a Sim(3) alignment (scale included)",
         "self-supervised poses are not metric"),
    Flip("pose-rel-view0", METRIC, "wildrayzer/geometry.py",
         "pred_rel, ref_rel = relative_c2w(pred_c2w[None])[0], relative_c2w(ref_c2w[None])[0]",
         "pred_rel, ref_rel = pred_c2w, ref_c2w",
         (G + "test_pose_error_is_zero_up_to_a_similarity_and_positive_otherwise",),
         "pose errors compare poses relative to view 0",
         "predicted and dataset cameras live in different world frames"),
    # ------------------------------------------------------------------ model
    Flip("signed-input", MODEL, "wildrayzer/model/tokenizer.py", "tokens = self.embed(images * 2.0 - 1.0)",
         "tokens = self.embed(images)", (M + "test_tokenizer_embeds_images_in_the_signed_range",),
         "images enter the tokenizer as 2 img - 1", "the release's input range; released weights expect it"),
    Flip("view-index-pe", MODEL, "wildrayzer/model/tokenizer.py",
         "temporal = sincos_1d(torch.arange(views, device=device), self.dim // 2)",
         "temporal = sincos_1d(torch.zeros(views, device=device), self.dim // 2)",
         (M + "test_each_token_carries_its_view_index",),
         "every image token carries its view index",
         "view 0 is the canonical camera: the estimator must know which view is which"),
    Flip("patch-layout", MODEL, "wildrayzer/nn.py",
         'return rearrange(x, "b v c (h p1) (w p2) -> b v (h w) (p1 p2 c)", p1=patch, p2=patch)',
         'return rearrange(x, "b v c (h p1) (w p2) -> b v (h w) (c p1 p2)", p1=patch, p2=patch)',
         (M + "test_patches_are_flattened_row_major_as_ph_pw_c",),
         "patches are flattened as (ph pw c), tokens row-major", "the release's layout (parity with its weights)"),
    Flip("view0-identity", MODEL, "wildrayzer/model/camera.py", "c2w = torch.cat([first, others], dim=1)",
         "c2w = torch.cat([others[:, :1], others], dim=1)", (M + "test_view0_camera_is_exactly_the_identity",),
         "view 0's camera is exactly the identity", "poses are relative to view 0: it defines the frame"),
    Flip("residual-pose", MODEL, "wildrayzer/model/camera.py", "rt = self.identity_rt + delta", "rt = delta",
         (M + "test_untrained_estimator_predicts_identity_poses_and_the_offset_focal",),
         "the pose head predicts a residual added to the identity (6D + translation)",
         "an untrained estimator starts at identity poses instead of degenerate rotations"),
    Flip("focal-offset", MODEL, "wildrayzer/model/camera.py",
         "f_norm = self.focal_head(canonical[:, 0]) + self.focal_offset",
         "f_norm = self.focal_head(canonical[:, 0]) * self.focal_offset",
         (M + "test_untrained_estimator_predicts_identity_poses_and_the_offset_focal",),
         "focal = mlp + 1.25 (focal_offset)", "a plausible field of view (~44 deg) from the first step"),
    Flip("focal-from-view0", MODEL, "wildrayzer/model/camera.py",
         "f_norm = self.focal_head(canonical[:, 0]) + self.focal_offset",
         "f_norm = self.focal_head(cams[:, -1]) + self.focal_offset",
         (M + "test_pose_head_reads_canonical_then_view_token_and_focal_comes_from_view0",),
         "one focal per scene, read from view 0's camera token", "all views of a clip share one camera"),
    Flip("pose-head-order", MODEL, "wildrayzer/model/camera.py",
         "delta = self.pose_head(torch.cat([canonical.expand(b, v - 1, -1), cams[:, 1:]], dim=-1))",
         "delta = self.pose_head(torch.cat([cams[:, 1:], canonical.expand(b, v - 1, -1)], dim=-1))",
         (M + "test_pose_head_reads_canonical_then_view_token_and_focal_comes_from_view0",),
         "the pose head reads [canonical (view 0) token | view token]",
         "a relative pose is a function of the pair (reference, view); the release's order"),
    Flip("scene-latents-out", MODEL, "wildrayzer/model/scene.py",
         "return self.transformer(x)[:, : self.latents.shape[0]]",
         "return self.transformer(x)[:, -self.latents.shape[0]:]",
         (M + "test_scene_representation_is_the_learned_latents",),
         "the scene representation is the learned latent tokens after encoding",
         "a fixed-size scene code independent of the number and size of input views"),
    Flip("independent-targets", MODEL, "wildrayzer/model/renderer.py", "        n = query.shape[1]\n",
         "        n = query.shape[1]\n        query = query + query.roll(1, 0)\n",
         (M + "test_targets_are_rendered_independently",),
         "each target is rendered on its own from the scene latents",
         "a render must depend only on the scene and its camera (cost linear in targets)"),
    # ------------------------------------------------------------------ motion head and token masking
    Flip("noise-token-replaces-moving", MOTION, "wildrayzer/model/wildrayzer.py",
         "fused = torch.where(token_mask[..., None], self.noise_token.to(fused.dtype), fused)",
         "fused = torch.where(token_mask[..., None], fused, self.noise_token.to(fused.dtype))",
         (M + "test_only_moving_patches_are_replaced_by_the_noise_token",),
         "only moving context tokens are replaced (whole) by the learned noise token",
         "MAE-style: transients must not reach the static scene representation"),
    Flip("token-mask-from-context", MOTION, "wildrayzer/model/wildrayzer.py",
         "torch.sigmoid(motion_logits[:, :vc].float())", "torch.sigmoid(motion_logits[:, -vc:].float())",
         (M + "test_token_masks_come_from_the_context_views_own_masks",),
         "token masks come from the context views' own motion masks",
         "only context tokens enter the scene; a target's transient is not in them"),
    Flip("token-mean-pool", MOTION, "wildrayzer/model/wildrayzer.py",
         "pooled = F.adaptive_avg_pool2d(probs.float().flatten(0, 1), grid)",
         "pooled = F.adaptive_max_pool2d(probs.float().flatten(0, 1), grid)",
         (M + "test_token_rule_pools_probabilities_over_each_patch",),
         "a token is masked when the mean motion probability over its patch exceeds 0.1",
         "the release's rule: a few noisy pixels must not drop a whole token"),
    Flip("motion-starts-static", MOTION, "wildrayzer/model/motion.py",
         "nn.init.constant_(self.head[-1].bias, math.log(INITIAL_MOTION_PROB / (1 - INITIAL_MOTION_PROB)))",
         "nn.init.constant_(self.head[-1].bias, 0.0)",
         (M + "test_untrained_motion_head_predicts_static_and_masks_no_token",),
         "an untrained motion head predicts 'static' (p = 0.02) everywhere",
         "a fresh head must not mask every token of the pretrained model"),
    Flip("motion-per-view", MOTION, "wildrayzer/model/motion.py",
         "x = self.transformer(self.fuse(torch.cat(parts, dim=-1)))  # (B*V, N, D)",
         'x = rearrange(self.transformer(rearrange(self.fuse(torch.cat(parts, dim=-1)), "(b v) n d -> b (v n) d", '
         'b=b)), "b (v n) d -> (b v) n d", v=v)',
         (M + "test_motion_head_sees_one_view_at_a_time",),
         "the motion head attends within one view only", "the release's head; a mask is a per-image property"),
    Flip("target-mask-plucker", MOTION, "wildrayzer/model/wildrayzer.py",
         "self.renderer.plucker_embed(plucker[:, vc:]), h, w)", "self.scene.plucker_embed(plucker[:, vc:]), h, w)",
         (M + "test_target_masks_read_the_renderer_plucker_tokens",),
         "targets' masks use the renderer's Plücker tokenizer, context views' the scene encoder's",
         "as in the release (targets are renderer inputs)"),
    # ------------------------------------------------------------------ losses and their masks
    Flip("stage3-static-pixels", LOSS, "wildrayzer/train/stage3.py", "weight=1.0 - dynamic)", "weight=dynamic)",
         (L + "test_stage3_rendering_loss_has_no_gradient_on_moving_pixels",),
         "stage 3's rendering loss counts static pixels only (weight 1 - dynamic)",
         "the core of WildRayZer: transients are not rendered towards"),
    Flip("unreliable-no-mask", LOSS, "wildrayzer/train/stage3.py",
         "dynamic = torch.where(valid[..., None, None, None], labels, torch.zeros_like(labels))",
         "dynamic = labels", (L + "test_unreliable_pseudo_masks_exclude_nothing_but_pasted_pixels",),
         "a pseudo-mask that failed the PSNR filter excludes no pixel",
         "an untrustworthy mask must not hide static content from the loss"),
    Flip("paste-always-masked", LOSS, "wildrayzer/train/stage3.py",
         "            dynamic = torch.maximum(dynamic, paste[:, vc:])", "            dynamic = dynamic",
         (L + "test_unreliable_pseudo_masks_exclude_nothing_but_pasted_pixels",),
         "pasted pixels are always excluded from the rendering loss",
         "their mask is known exactly; a pasted object is a transient by construction"),
    Flip("stage3-loss-sum", LOSS, "wildrayzer/train/stage3.py", "return render + bce, logs", "return render, logs",
         (L + "test_stage3_loss_is_render_plus_weighted_bce",),
         "stage 3 optimises masked rendering loss + mask BCE jointly",
         "joint training keeps the motion head supervised while the renderer adapts"),
    Flip("mask-loss-weight", LOSS, "wildrayzer/train/stage2.py", "return self.mask_weight * bce, logs",
         "return bce, logs",
         (L + "test_stage2_loss_is_the_weighted_bce", L + "test_stage3_loss_is_render_plus_weighted_bce"),
         "the mask BCE is scaled by training.mask_distill_loss_weight",
         "the README knob balancing mask distillation against rendering"),
    Flip("masked-mean", LOSS, "wildrayzer/losses.py", "return (err * w).sum() / w.sum().clamp_min(1.0)",
         "return (err * w).sum() / w.numel()", (L + "test_masked_mse_is_the_mean_over_counted_pixels",),
         "a masked MSE is the mean over counted pixels",
         "the loss scale must not shrink with the moving area"),
    Flip("bce-valid-only", LOSS, "wildrayzer/losses.py", "loss = (per_sample * v).sum() / n_valid.clamp_min(1.0)",
         "loss = per_sample.mean()", (L + "test_bce_counts_valid_samples_only",),
         "BCE averages over valid samples only (the PSNR filter's verdict)",
         "a sample whose pseudo-mask is unreliable contributes no BCE"),
    Flip("bce-pos-weight", LOSS, "wildrayzer/losses.py", 'reduction="none", pos_weight=pw)',
         'reduction="none", pos_weight=None)', (L + "test_bce_pos_weight_upweights_moving_pixels",),
         "training.mask_pos_weight up-weights moving pixels in the BCE",
         "transients cover a small fraction of an image"),
    Flip("perceptual-masked", LOSS, "wildrayzer/losses.py",
         "perc = perceptual(flatten_views(pred), flatten_views(target), w)",
         "perc = perceptual(flatten_views(pred), flatten_views(target))", (L + "test_perceptual_term_is_masked_too",),
         "the perceptual term is masked like the MSE", "otherwise transients are learnt through VGG features"),
    # ------------------------------------------------------------------ what the stages feed the pseudo-labeller
    Flip("stage3-static-source", PSEUDO, "wildrayzer/train/stage3.py",
         "static_renders = self.static_model(original, vc, semantic_feats=self.features(original[:, :vc]),",
         "static_renders = model(original, vc, semantic_feats=self.features(original[:, :vc]),",
         (L + "test_stage3_pseudo_labels_come_from_the_frozen_static_model_unmasked_and_unpasted",),
         "stage 3's pseudo-labels come from renders of the frozen static model",
         "the model in training would learn to agree with its own renders"),
    Flip("stage3-static-unpasted", PSEUDO, "wildrayzer/train/stage3.py",
         "static_renders = self.static_model(original, vc, semantic_feats=self.features(original[:, :vc]),",
         "static_renders = self.static_model(images, vc, semantic_feats=self.features(images[:, :vc]),",
         (L + "test_stage3_pseudo_labels_come_from_the_frozen_static_model_unmasked_and_unpasted",),
         "static renders for pseudo-labels use the un-pasted context views",
         "pasted objects would leave ghosts in the static renders of the targets"),
    Flip("stage3-static-unmasked", PSEUDO, "wildrayzer/train/stage3.py",
         'apply_mae=False, cameras=cams)["renders"]', 'apply_mae=True, cameras=cams)["renders"]',
         (L + "test_stage3_pseudo_labels_come_from_the_frozen_static_model_unmasked_and_unpasted",),
         "the static model renders without token masking",
         "the static renders are the stage-1 model's view of the scene, against which motion is measured"),
    Flip("stage3-mae-on", MOTION, "wildrayzer/train/stage3.py",
         "out = model(images, vc, semantic_feats=feats, motion_all_views=True, cameras=cams)",
         "out = model(images, vc, semantic_feats=feats, motion_all_views=True, apply_mae=False, cameras=cams)",
         (L + "test_stage3_pseudo_labels_come_from_the_frozen_static_model_unmasked_and_unpasted",),
         "stage 3 masks moving context tokens with the noise token from the model's own masks",
         "training sees what inference does"),
    Flip("stage3-input-pasted", PASTE, "wildrayzer/train/stage3.py",
         "out = model(images, vc, semantic_feats=feats, motion_all_views=True, cameras=cams)",
         "out = model(original, vc, semantic_feats=self.features(original), motion_all_views=True, cameras=cams)",
         (L + "test_stage3_pseudo_labels_come_from_the_frozen_static_model_unmasked_and_unpasted",),
         "stage 3's model sees the pasted images (and their semantic features)",
         "the pasted transients are what it must learn to mask and ignore"),
    Flip("stage2-input-pasted", PASTE, "wildrayzer/train/stage2.py",
         "out = model(images, vc, semantic_feats=feats, motion_all_views=True, apply_mae=False,",
         "out = model(original, vc, semantic_feats=self.features(original), motion_all_views=True, apply_mae=False,",
         (L + "test_stage2_pseudo_labels_come_from_unmasked_renders_of_the_unpasted_context",),
         "stage 2's motion head sees the pasted images (and their semantic features)",
         "it is supervised by their paste masks"),
    Flip("stage2-static-unpasted", PSEUDO, "wildrayzer/train/stage2.py",
         "static_renders = model(original, vc, semantic_feats=self.features(original[:, :vc]),",
         "static_renders = model(images, vc, semantic_feats=self.features(images[:, :vc]),",
         (L + "test_stage2_pseudo_labels_come_from_unmasked_renders_of_the_unpasted_context",),
         "stage 2's static renders use the un-pasted context", "no ghosts of pasted objects in the targets' renders"),
    Flip("stage2-no-mae", PSEUDO, "wildrayzer/train/stage2.py",
         "out = model(images, vc, semantic_feats=feats, motion_all_views=True, apply_mae=False,",
         "out = model(images, vc, semantic_feats=feats, motion_all_views=True, apply_mae=True,",
         (L + "test_stage2_pseudo_labels_come_from_unmasked_renders_of_the_unpasted_context",),
         "stage 2 renders (and labels) with the frozen stage-1 model unmasked",
         "the pseudo-labels measure what the static model cannot explain"),
    Flip("context-unlabelled", PSEUDO, "wildrayzer/train/stage2.py",
         "valid = torch.zeros(b, v, dtype=torch.bool, device=images.device)",
         "valid = torch.ones(b, v, dtype=torch.bool, device=images.device)",
         (L + "test_labels_join_paste_masks_and_only_reliable_or_pasted_views_are_supervised",),
         "context views are supervised only where something was pasted",
         "a context view's own transients are in its render: they cannot be pseudo-labelled"),
    Flip("pseudo-valid-is-reliable", PSEUDO, "wildrayzer/train/stage2.py",
         "valid[:, vc:] = reliable.to(valid.device)", "valid[:, vc:] = True",
         (L + "test_labels_join_paste_masks_and_only_reliable_or_pasted_views_are_supervised",
          P + "test_a_target_whose_static_render_fails_the_psnr_filter_contributes_no_bce"),
         "a target's pseudo-mask is supervised only when it is reliable", "the PSNR filter's verdict reaches the BCE"),
    Flip("paste-joins-labels", PASTE, "wildrayzer/train/stage2.py", "labels = torch.maximum(labels, paste.to(labels))",
         "labels = labels", (L + "test_labels_join_paste_masks_and_only_reliable_or_pasted_views_are_supervised",),
         "a pasted object's pixels are labelled moving (paste mask U pseudo-mask)",
         "copy-paste is the exactly known part of the supervision"),
    Flip("pasted-views-valid", PASTE, "wildrayzer/train/stage2.py", "valid = valid | pasted.to(valid.device)",
         "valid = valid", (L + "test_labels_join_paste_masks_and_only_reliable_or_pasted_views_are_supervised",),
         "a view with a pasted object is supervised even if its pseudo-mask is unreliable",
         "the paste mask is exact whatever the static render's quality"),
    # ------------------------------------------------------------------ pseudo-labels
    Flip("psnr-filter", PSEUDO, "wildrayzer/pseudolabel.py",
         "reliable=render_psnr >= cfg.training.psnr_filter_threshold",
         "reliable=torch.ones_like(render_psnr, dtype=torch.bool)",
         (P + "test_psnr_filter_marks_poor_static_renders_unreliable",
          P + "test_a_target_whose_static_render_fails_the_psnr_filter_contributes_no_bce"),
         "PSNR filter: a target whose static render is below 17 dB is unreliable",
         "a poor render disagrees with the photo everywhere: its dissimilarity says nothing about motion"),
    Flip("candidate-threshold", PSEUDO, "wildrayzer/pseudolabel.py",
         "high = (scores > pl.score_threshold).numpy().astype(np.uint8)",
         "high = (scores < pl.score_threshold).numpy().astype(np.uint8)",
         (P + "test_candidates_are_the_high_scores_and_cover_the_moving_object",),
         "candidate pixels are those whose combined z-score exceeds pseudolabel.score_threshold",
         "moving things are where the static render disagrees most"),
    Flip("score-weights", PSEUDO, "wildrayzer/pseudolabel.py",
         "return pl_cfg.semantic_weight * zscore(sem_d) + pl_cfg.ssim_weight * zscore(ssim_d)",
         "return pl_cfg.ssim_weight * zscore(sem_d) + pl_cfg.semantic_weight * zscore(ssim_d)",
         (P + "test_scores_are_weighted_per_frame_zscores_of_one_minus_cosine_and_one_minus_ssim",),
         "score = 0.6 z(semantic) + 0.4 z(SSIM) dissimilarity",
         "semantic features see objects, SSIM sees structure; semantic dominates"),
    Flip("one-minus-cos", PSEUDO, "wildrayzer/pseudolabel.py",
         "sem_d = F.interpolate(1.0 - cos.sum(1, keepdim=True), size=(height, width), mode=\"bilinear\",",
         "sem_d = F.interpolate(cos.sum(1, keepdim=True), size=(height, width), mode=\"bilinear\",",
         (P + "test_scores_are_weighted_per_frame_zscores_of_one_minus_cosine_and_one_minus_ssim",),
         "semantic dissimilarity is 1 - cosine of backbone features", "high where render and photo differ"),
    Flip("per-frame-zscore", PSEUDO, "wildrayzer/pseudolabel.py",
         "z = (flat - flat.mean(dim=1, keepdim=True)) / (flat.std(dim=1, keepdim=True) + eps)",
         "z = (flat - flat.mean()) / (flat.std() + eps)", (P + "test_zscores_are_per_frame",),
         "dissimilarities are z-scored per frame",
         "a frame whose render is poor everywhere is not 'all moving'"),
    Flip("blur-match", PSEUDO, "wildrayzer/pseudolabel.py",
         "best = torch.where((e < err)[:, None, None, None], blurred, best)",
         "best = torch.where((e > err)[:, None, None, None], blurred, best)",
         (P + "test_photos_are_blurred_to_the_render_sharpness",),
         "the photo is blurred to the render's sharpness before SSIM",
         "a static model renders low-passed images; lost texture is not motion"),
    Flip("open-then-close", PSEUDO, "wildrayzer/pseudolabel.py",
         "return cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_OPEN, el), cv2.MORPH_CLOSE, el)",
         "return cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_CLOSE, el), cv2.MORPH_OPEN, el)",
         (P + "test_morphology_opens_then_closes",),
         "masks are opened then closed", "remove speckle first, then fill holes in objects"),
    Flip("grow-touched", PSEUDO, "wildrayzer/pseudolabel.py", "keep[np.unique(comp[seeds > 0])] = True",
         "keep[:] = True", (P + "test_only_cluster_regions_touched_by_a_candidate_grow",),
         "candidates grow into the dynamic-cluster regions they touch only",
         "a dynamic cluster also covers static look-alikes elsewhere"),
    Flip("grabcut-band", PSEUDO, "wildrayzer/pseudolabel.py", "gc = np.full(mask.shape, cv2.GC_BGD, np.uint8)",
         "gc = np.full(mask.shape, cv2.GC_PR_BGD, np.uint8)", (P + "test_grabcut_only_moves_the_mask_within_its_band",),
         "GrabCut only moves the mask within a band: sure background beyond it",
         "snap to boundaries without adding look-alike objects"),
    Flip("vote-frames", PSEUDO, "wildrayzer/cosegment.py", "return top & present & (votes >= need), flagged",
         "return top & present, flagged", (P + "test_cosegmentation_vote_needs_a_top_rank_and_enough_frames",),
         "a dynamic cluster is flagged in at least min_frame_votes frames",
         "one-frame disagreements are render noise, movers recur"),
    Flip("vote-top", PSEUDO, "wildrayzer/cosegment.py", "return top & present & (votes >= need), flagged",
         "return present & (votes >= need), flagged",
         (P + "test_cosegmentation_vote_needs_a_top_rank_and_enough_frames",),
         "a dynamic cluster ranks in the top top_cluster_fraction by mean score",
         "only the most dissimilar clusters are transients"),
    # ------------------------------------------------------------------ copy-paste
    Flip("paste-mask-exact", PASTE, "wildrayzer/data/copy_paste.py", "pasted[ys, xs] = sub_m",
         "pasted[ys, xs] = True", (P + "test_paste_mask_is_exactly_the_pasted_object_pixels",),
         "the paste mask is exactly the pasted object's pixels", "it is the exact supervision copy-paste provides"),
    Flip("paste-moves", PASTE, "wildrayzer/data/copy_paste.py", "                rgb, m = self.instance(ann_id)\n",
         "                rgb, m = self.instance(ann_id)\n                rng = np.random.default_rng(ann_id)\n",
         (P + "test_pasted_objects_are_the_same_instances_at_independent_places_in_every_view",),
         "each view gets its own random position, scale and flip of a pasted object",
         "a transient moves between views; a fixed paste would be static scene content"),
    Flip("paste-same-instances", PASTE, "wildrayzer/data/copy_paste.py", "            for ann_id in chosen:\n",
         "            chosen = [int(self.ann_ids[k]) for k in rng.choice(len(self.ann_ids), size=count)]\n"
         "            for ann_id in chosen:\n",
         (P + "test_pasted_objects_are_the_same_instances_at_independent_places_in_every_view",),
         "every view of a sample gets the same pasted instances", "the same object seen moving, not new clutter"),
    # ------------------------------------------------------------------ stages and freezing
    Flip("stage2-motion-only", STAGES, "wildrayzer/train/stages.py", '2: ("motion",),', '2: ("motion", "renderer"),',
         (T + "test_each_stage_trains_its_parts_and_frozen_parts_keep_their_values",),
         "stage 2 trains the motion head only", "the stage-1 static model must stay the pseudo-labels' reference"),
    Flip("stage1-rayzer-only", STAGES, "wildrayzer/train/stages.py",
         '_TRAINABLE = {1: ("tokenizer", "camera", "scene", "renderer"), 2:',
         '_TRAINABLE = {1: ("tokenizer", "camera", "scene", "renderer", "noise_token"), 2:',
         (T + "test_each_stage_trains_its_parts_and_frozen_parts_keep_their_values",),
         "stage 1 trains RayZer (tokenizer, camera, scene, renderer) only", "static pretraining has no masks"),
    Flip("stage3-noise-token", STAGES, "wildrayzer/train/stages.py",
         '3: ("tokenizer", "camera", "scene", "renderer", "motion", "noise_token")}',
         '3: ("tokenizer", "camera", "scene", "renderer", "motion")}',
         (T + "test_each_stage_trains_its_parts_and_frozen_parts_keep_their_values",),
         "stage 3 trains everything, the noise token included",
         "the noise token is learnt where it is used: in joint training"),
    Flip("freeze-parts", STAGES, "wildrayzer/train/stages.py", "if part is None or name in freeze:",
         "if part is None:", (T + "test_freeze_parts_hold_a_part_through_a_stage3_step",),
         "training.freeze_parts holds parts bit-identical", "the tiny stage 3 holds camera and motion"),
    Flip("static-frozen", STAGES, "wildrayzer/train/stage3.py",
         "self.static_model = loaded.model.to(device).eval().requires_grad_(False)",
         "self.static_model = loaded.model.to(device).eval()",
         (T + "test_stage3_static_model_is_frozen_and_comes_from_the_stage1_checkpoint_first",),
         "stage 3's static model is frozen", "it is a fixed reference for the pseudo-labels"),
    Flip("static-source-order", STAGES, "wildrayzer/train/stage3.py",
         "src = cfg.pseudolabel.stage1_checkpoint or cfg.training.init_from",
         "src = cfg.training.init_from or cfg.pseudolabel.stage1_checkpoint",
         (T + "test_stage3_static_model_is_frozen_and_comes_from_the_stage1_checkpoint_first",),
         "the static model is pseudolabel.stage1_checkpoint, else training.init_from",
         "an explicit stage-1 model wins over the stage-2 run"),
    Flip("semantic-frozen", STAGES, "wildrayzer/semantic.py",
         '"""Frozen: stays in eval mode whatever the caller asks (BatchNorm / dropout must not change)."""\n'
         "        return super().train(False)",
         '"""Frozen: stays in eval mode whatever the caller asks (BatchNorm / dropout must not change)."""\n'
         "        return super().train(mode)",
         (T + "test_semantic_backbone_stays_frozen_in_eval_mode",),
         "the semantic backbone is frozen in eval mode in every stage",
         "pseudo-labels and the motion head need fixed features; BatchNorm statistics must not drift"),
    Flip("no-decay-tokens", STAGES, "wildrayzer/train/optim.py",
         '_NO_DECAY_NAMES = ("cam_token", "latents", "noise_token", "bias")', '_NO_DECAY_NAMES = ("bias",)',
         (T + "test_learned_tokens_norms_and_biases_are_not_weight_decayed",),
         "learned tokens, norms and biases are not weight-decayed", "decay would pull embeddings towards zero"),
    Flip("cosine-schedule", STAGES, "wildrayzer/train/optim.py",
         "return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))",
         "return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 - math.cos(math.pi * progress))",
         (T + "test_lr_warms_up_linearly_then_decays_by_a_cosine_to_the_floor",),
         "LR: linear warmup, then cosine decay to min_lr_ratio", "the paper's schedule"),
    Flip("paper-psnr-filter", STAGES, "wildrayzer/config.py", "    psnr_filter_threshold: float = 17.0\n",
         "    psnr_filter_threshold: float = 0.0\n", (PAPER,),
         "the PSNR filter's default is 17 dB", "the paper's setting (a README key)"),
    Flip("paper-token-threshold", STAGES, "wildrayzer/config.py", "    mask_token_threshold: float = 0.1\n",
         "    mask_token_threshold: float = 0.5\n", (PAPER,),
         "a token is masked above a mean motion probability of 0.1 by default", "the release's value"),
    Flip("paper-score-weights", STAGES, "wildrayzer/config.py", "    semantic_weight: float = 0.6\n",
         "    semantic_weight: float = 0.4\n", (PAPER,),
         "pseudo-label scores weigh semantic 0.6, SSIM 0.4 by default", "the paper's combination"),
    Flip("stage3-copy-paste-on", STAGES, "configs/wildrayzer_stage3_joint_copy_paste.yaml",
         "copy_paste:\n  enabled: true", "copy_paste:\n  enabled: false",
         (PAPER,),
         "the stage-3 recipe pastes COCO transients", "copy-paste is stage 3's extra supervision"),
    Flip("stage3-lr", STAGES, "configs/wildrayzer_stage3_joint_copy_paste.yaml", "  lr: 2.0e-4\n",
         "  lr: 1.0e-4\n", (PAPER,),
         "the stage recipes: 1e-4 / 100k, 1e-4 / 10k, 2e-4 / 20k steps", "the paper's schedule per stage"),
    # ------------------------------------------------------------------ checkpoint and resume
    Flip("noise-token-saved", CKPT, "wildrayzer/train/checkpoint.py",
         "state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}",
         'state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k != "noise_token"}',
         (T + "test_noise_token_is_saved_and_restored",),
         "the noise token is saved with the weights", "the release omits it; a reloaded model would mask with noise"),
    Flip("strict-missing", CKPT, "wildrayzer/train/checkpoint.py", "if missing or unexpected or shapes:",
         "if unexpected or shapes:", (T + "test_a_checkpoint_missing_a_tensor_is_refused",),
         "checkpoints load strictly: a missing tensor is an error", "the release's strict=False hid wrong models"),
    Flip("view-count-arch", CKPT, "wildrayzer/train/checkpoint.py",
         '"renderer_layers", "motion_layers", "num_latents", "num_context_views", "num_target_views", "qk_norm",',
         '"renderer_layers", "motion_layers", "num_latents", "num_target_views", "qk_norm",',
         (T + "test_a_checkpoint_for_another_view_count_is_refused",),
         "a checkpoint is tied to its view counts", "view-index embeddings: another count must fail loudly"),
    Flip("rng-restored", CKPT, "wildrayzer/train/rng.py",
         'np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))',
         "pass", (T + "test_rng_state_round_trips_for_torch_numpy_and_python",),
         "resume restores every RNG (torch, numpy, python)", "a resumed run equals an uninterrupted one"),
    Flip("sampler-resume", CKPT, "wildrayzer/train/sampler.py",
         "self.sampler.set_epoch(self.epoch, self.consumed * self.batch_size)", "self.sampler.set_epoch(self.epoch, 0)",
         (T + "test_data_order_resumes_mid_epoch_and_across_epochs",),
         "resume continues the data order mid-epoch", "no sample is seen twice or skipped after a restart"),
    Flip("optimizer-restored", CKPT, "wildrayzer/train/loop.py", 'optimizer.load_state_dict(st["optimizer"])',
         "optimizer.zero_grad()", ("tests/test_train_loop.py::test_killed_and_resumed_run_equals_uninterrupted_run",),
         "resume restores the optimizer state", "AdamW moments are part of the training state"),
    # ------------------------------------------------------------------ metrics
    Flip("psnr-def", METRIC, "wildrayzer/image_ops.py", "return -10.0 * torch.log10(mse.clamp_min(eps))",
         "return -20.0 * torch.log10(mse.clamp_min(eps))", (T + "test_psnr_of_known_images",),
         "PSNR = -10 log10(MSE) for images in [0, 1]", "the paper's metric; 0.1 off everywhere is 20 dB"),
    Flip("static-region", METRIC, "wildrayzer/infer/metrics.py",
         "return (motion_mask < MASK_THRESHOLD).to(like.dtype)",
         "return (motion_mask >= MASK_THRESHOLD).to(like.dtype)",
         (T + "test_static_psnr_excludes_moving_pixels",),
         "static-region metrics exclude GT-moving pixels", "the paper's headline numbers are on static regions"),
    Flip("empty-iou", METRIC, "wildrayzer/infer/metrics.py",
         'out["mask_iou"].append(t / union if union > 0 else 1.0)',
         'out["mask_iou"].append(t / union if union > 0 else 0.0)', (T + "test_mask_iou_precision_recall_definitions",),
         "per-view IoU of two empty masks is 1", "agreeing that nothing moves is perfect"),
    Flip("recall-def", METRIC, "wildrayzer/infer/metrics.py",
         'out["mask_recall"].append(t / (t + f_n) if t + f_n > 0 else None)',
         'out["mask_recall"].append(t / (t + f_p) if t + f_p > 0 else None)',
         (T + "test_mask_iou_precision_recall_definitions",),
         "mask recall = TP / (TP + FN)", "the paper reports recall of moving pixels"),
    Flip("pooled-iou", METRIC, "wildrayzer/infer/metrics.py", "return int((p & g).sum()) / union if union else None",
         "return sum(int((a & b).sum()) / max(int((a | b).sum()), 1) for a, b in zip(p, g)) / len(p) if union "
         "else None", (T + "test_pooled_iou_sums_intersections_and_unions_over_views",),
         "pooled IoU sums intersections and unions over all views",
         "empty views must not inflate it as they do the per-view mean"),
    Flip("ssim-sample-cov", METRIC, "wildrayzer/image_ops.py", "cov_norm = n / (n - 1.0)", "cov_norm = 1.0",
         (T + "test_ssim_is_scikit_images_gaussian_ssim",),
         "SSIM is scikit-image's Gaussian SSIM (sample covariance)", "comparable with published numbers"),
]

# Flips the docs do not list: other ways of breaking the same decisions. No named tests: the decision test files
# run first, then the fast suite.
CONTROLS: list[Flip] = [
    Flip("plucker-order", GEO, "wildrayzer/geometry.py", "torch.cat([torch.cross(o, d, dim=-1), d], dim=-1)",
         "torch.cat([d, torch.cross(o, d, dim=-1)], dim=-1)", ()),
    Flip("principal-point-swapped", GEO, "wildrayzer/geometry.py",
         "torch.full_like(f, width / 2.0), torch.full_like(f, height / 2.0)",
         "torch.full_like(f, height / 2.0), torch.full_like(f, width / 2.0)", ()),
    Flip("psnr-filter-inverted", PSEUDO, "wildrayzer/pseudolabel.py",
         "reliable=render_psnr >= cfg.training.psnr_filter_threshold",
         "reliable=render_psnr < cfg.training.psnr_filter_threshold", ()),
    Flip("stage3-unmasked-loss", LOSS, "wildrayzer/train/stage3.py", "weight=1.0 - dynamic)", "weight=None)", ()),
    Flip("mse-ignores-weight", LOSS, "wildrayzer/losses.py", "mse = mse_loss(pred, target, weight)",
         "mse = mse_loss(pred, target)", ()),
    Flip("torch-rng-not-restored", CKPT, "wildrayzer/train/rng.py", 'torch.set_rng_state(state["torch"])', "pass", ()),
    Flip("renderer-no-sigmoid", MODEL, "wildrayzer/model/renderer.py", "return torch.sigmoid(rgb)", "return rgb", ()),
    Flip("token-threshold-ignored", MOTION, "wildrayzer/model/wildrayzer.py",
         "return (pooled > self.mask_token_threshold).reshape(b, v, -1)", "return (pooled > 0.5).reshape(b, v, -1)",
         ()),
    Flip("no-cluster-growth", PSEUDO, "wildrayzer/pseudolabel.py",
         "m = morphology(grow_into_clusters(coseg_np[t, 0], high[t, 0]), int(pl.morph_kernel))",
         "m = morphology(high[t, 0], int(pl.morph_kernel))", ()),
    Flip("pose-translation-sign", MODEL, "wildrayzer/model/camera.py",
         "others = make_pose(rotation_6d_to_matrix(rt[..., :6]), rt[..., 6:9])",
         "others = make_pose(rotation_6d_to_matrix(rt[..., :6]), -rt[..., 6:9])", ()),
    Flip("camera-token-view-index", MODEL, "wildrayzer/model/camera.py",
         "pe = sincos_1d(torch.arange(views, device=self.cam_token.device), self.cam_token.shape[-1])",
         "pe = sincos_1d(torch.zeros(views, device=self.cam_token.device), self.cam_token.shape[-1])", ()),
    Flip("paste-flip-image-only", PASTE, "wildrayzer/data/copy_paste.py", "rgb, m = rgb[:, ::-1], m[:, ::-1]",
         "rgb = rgb[:, ::-1]", ()),
    Flip("bce-all-views-valid", LOSS, "wildrayzer/losses.py", "    if valid is None:\n",
         "    valid = None\n    if valid is None:\n", ()),
    Flip("scheduler-not-restored", CKPT, "wildrayzer/train/loop.py", 'scheduler.load_state_dict(st["scheduler"])',
         "scheduler.get_last_lr()", ()),
    Flip("pixels-not-unit-range", DATA, "wildrayzer/data/frames.py", ".permute(2, 0, 1).div_(255.0)",
         ".permute(2, 0, 1).div_(127.5).sub_(1.0)", ()),
    Flip("crowd-instances-pasted", PASTE, "wildrayzer/data/copy_paste.py", 'if not a.get("iscrowd", 0) and',
         "if", ()),
    Flip("paste-probability-inverted", PASTE, "wildrayzer/data/copy_paste.py",
         "if not force and rng.random() >= self.cfg.probability:",
         "if not force and rng.random() < self.cfg.probability:", ()),
    Flip("semantic-grad", STAGES, "wildrayzer/semantic.py", "            p.requires_grad_(False)\n",
         "            p.requires_grad_(True)\n", ()),
]


# ------------------------------------------------------------------ docs


def render_docs() -> str:
    """docs/METHOD_DECISIONS.md, generated from DECISIONS."""
    lines = [
        "# WildRayZer's method decisions",
        "",
        "WildRayZer learns novel view synthesis of dynamic scenes without poses: RayZer (camera estimator, scene",
        "encoder, renderer) pretrained on static scenes, a motion-mask head trained against pseudo-masks where the",
        "frozen static model's renders disagree with the photos, and joint training that masks moving tokens with a",
        "noise token and leaves moving pixels out of the rendering loss. Each line below is one decision: what the",
        "code does, why the method needs it, and the behavioural test that fails when it is flipped. `make mutate`",
        "(`tools/mutate.py`; slow, not in `make test`) flips each one in a scratch copy and checks that the tests kill",
        "it; this page is generated from its table (`python tools/mutate.py --write-docs`) and",
        "`tests/test_method_decisions_table.py` keeps both in step.",
        "",
        f"{len(DECISIONS)} decisions. Test ids are relative to `tests/`.",
        "",
    ]
    area = None
    for f in DECISIONS:
        if f.area != area:
            area = f.area
            lines += [f"## {area[0].upper()}{area[1:]}", "", "| id | what | why | test |", "|---|---|---|---|"]
        tests = "<br>".join(f"`{t.removeprefix('tests/')}`" for t in f.tests)
        lines.append(f"| `{f.id}` | {f.what} | {f.why} | {tests} |")
        if f is DECISIONS[-1] or DECISIONS[DECISIONS.index(f) + 1].area != area:
            lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------ checks


def check_table(root: Path = REPO, flips: list[Flip] | None = None) -> list[str]:
    """Problems with the table against the tree at ``root``: snippets not found exactly once, no-op flips, duplicate
    ids, named tests whose file or function does not exist."""
    problems, seen = [], set()
    for f in flips if flips is not None else DECISIONS + CONTROLS:
        if f.id in seen:
            problems.append(f"{f.id}: duplicate id")
        seen.add(f.id)
        path = root / f.file
        if not path.is_file():
            problems.append(f"{f.id}: {f.file} does not exist")
            continue
        text = path.read_text()
        for old, new in f.pairs():
            n = text.count(old)
            if n != 1:
                problems.append(f"{f.id}: the original snippet {old.strip()[:40]!r} occurs {n} times in {f.file} "
                                "(must be exactly once)")
            if old == new:
                problems.append(f"{f.id}: the flip changes nothing")
        for node in f.tests:
            file, _, func = node.partition("::")
            test_path = root / file
            if not test_path.is_file() or f"def {func.split('[')[0]}(" not in test_path.read_text():
                problems.append(f"{f.id}: named test {node} does not exist")
    return problems


# ------------------------------------------------------------------ runner


def scratch_copy(dest: Path) -> None:
    """Copy the repository's files (tracked + untracked, not ignored) to ``dest``."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, check=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = REPO / rel
        if not src.is_file() or "__pycache__" in rel:
            continue  # deleted in the work tree, or bytecode
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def pytest_env(root: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONDONTWRITEBYTECODE="1", WANDB_MODE="disabled", COLUMNS="400")
    env.pop("PYTEST_ADDOPTS", None)
    return env


def run_pytest(root: Path, args: list[str], timeout: float) -> tuple[int, float, str]:
    """-> (exit code, seconds, output); exit code -1 on timeout."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-rfE", "-p", "no:cacheprovider", *args], cwd=root,
                           env=pytest_env(root), capture_output=True, text=True, timeout=timeout)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else str(e.stdout or "")
        rc = -1
    return rc, time.perf_counter() - t0, out


def failure_kind(out: str) -> str:
    """What failed first, from pytest's short summary: the exception type (AssertionError when a test's assertion
    caught the flip; another type means the flip made the code raise, worth a look), or '-'."""
    for line in out.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            head = line.partition(" - ")[2].split(":")[0].strip()
            if not head or head.startswith("assert"):  # pytest shows a failed assert statement as its source
                return "AssertionError"
            return head.split(".")[-1][:24]
    return "-"


def tail(out: str, n: int = 15) -> str:
    return "\n".join(out.strip().splitlines()[-n:])


def classify(rc: int) -> str:
    return {0: "passed", 1: "failed", -1: "timeout"}.get(rc, f"error (pytest exit {rc})")


def mutate(root: Path, flip: Flip, full_suite: bool, timeout: float, verbose: bool) -> dict:
    path = root / flip.file
    original = path.read_text()
    if any(original.count(old) != 1 for old, _ in flip.pairs()):
        return {"flip": flip, "result": "STALE", "by": "-", "how": "-", "seconds": 0.0}
    mutated = original
    for old, new in flip.pairs():
        mutated = mutated.replace(old, new)
    path.write_text(mutated)
    try:
        named = list(flip.tests) or list(DECISION_TESTS)
        rc, secs, out = run_pytest(root, named, timeout)
        by = "named tests" if flip.tests else "decision tests"
        if rc == 0 and full_suite:
            rc, more, out = run_pytest(root, [], timeout)
            secs += more
            by = "fast suite"
    finally:
        path.write_text(original)
    result = {"failed": "killed", "timeout": "killed", "passed": "SURVIVED"}.get(classify(rc), "ERROR")
    how = "timeout" if rc == -1 else failure_kind(out)
    if verbose or result != "killed":
        print(f"--- {flip.id}: {classify(rc)} ({by})\n{tail(out)}\n", flush=True)
    return {"flip": flip, "result": result, "by": by, "how": how, "seconds": secs}


def print_table(title: str, rows: list[dict]) -> tuple[int, int]:
    if not rows:
        return 0, 0
    w_id = max(len(r["flip"].id) for r in rows)
    w_file = max(len(r["flip"].file) for r in rows)
    print(f"\n{title}")
    print(f"{'decision':<{w_id}}  {'file':<{w_file}}  {'result':<8}  {'decided by':<14}  {'first failure':<24}  "
          "seconds")
    for r in rows:
        print(f"{r['flip'].id:<{w_id}}  {r['flip'].file:<{w_file}}  {r['result']:<8}  {r['by']:<14}  "
              f"{r['how']:<24}  {r['seconds']:.1f}")
    killed = sum(r["result"] == "killed" for r in rows)
    print(f"{title}: {killed}/{len(rows)} killed ({100.0 * killed / len(rows):.1f} %)")
    return killed, len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="also run the control flips (not listed in the docs)")
    ap.add_argument("--controls", action="store_true", help="run the control flips only")
    ap.add_argument("--only", default="", help="comma-separated decision ids")
    ap.add_argument("--named-only", action="store_true", help="never fall back to the whole fast suite")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per pytest run")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copy")
    ap.add_argument("--verbose", action="store_true", help="print pytest's tail for every flip")
    ap.add_argument("--list", action="store_true", help="print the decisions and exit")
    ap.add_argument("--check", action="store_true", help="check the table against the tree and exit")
    ap.add_argument("--write-docs", action="store_true", help=f"write {DOCS.relative_to(REPO)} and exit")
    args = ap.parse_args(argv)

    if args.write_docs:
        DOCS.write_text(render_docs())
        print(f"wrote {DOCS.relative_to(REPO)} ({len(DECISIONS)} decisions)")
        return 0
    if args.list:
        for f in DECISIONS + (CONTROLS if args.all else []):
            print(f"{f.id:<28} {f.file:<34} {f.what}")
        return 0
    problems = check_table()
    if problems:
        print("the decision table does not match the tree:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.check:
        print(f"{len(DECISIONS)} decisions and {len(CONTROLS)} controls match the tree")
        return 0

    listed = [] if args.controls else DECISIONS
    controls = CONTROLS if (args.all or args.controls) else []
    if args.only:
        ids = set(args.only.split(","))
        unknown = ids - {f.id for f in DECISIONS + CONTROLS}
        if unknown:
            print(f"unknown decision ids: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        listed = [f for f in DECISIONS if f.id in ids]
        controls = [f for f in CONTROLS if f.id in ids]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still removes its scratch copy
    root = Path(tempfile.mkdtemp(prefix="wildrayzer-mutate-"))
    t0 = time.perf_counter()
    try:
        scratch_copy(root)
        where = subprocess.run([sys.executable, "-c", "import wildrayzer; print(wildrayzer.__file__)"], cwd=root,
                               env=pytest_env(root), capture_output=True, text=True).stdout.strip()
        if not where.startswith(str(root)):
            print(f"the scratch copy imports wildrayzer from {where or '?'}, not from {root}", file=sys.stderr)
            return 2
        baseline = sorted({t for f in listed + controls for t in f.tests} | set(DECISION_TESTS))
        rc, secs, out = run_pytest(root, baseline, args.timeout)
        if rc != 0:
            print(f"the unmutated scratch copy fails its decision tests ({classify(rc)}):\n{tail(out)}",
                  file=sys.stderr)
            return 2
        print(f"scratch copy {root}: decision tests pass unmutated ({secs:.0f} s); "
              f"{len(listed)} listed flips, {len(controls)} controls", flush=True)
        rows = []
        for f in listed + controls:
            rows.append(mutate(root, f, not args.named_only, args.timeout, args.verbose))
            r = rows[-1]
            print(f"  {f.id:<28} {r['result']:<8} {r['by']:<14} {r['how']:<24} {r['seconds']:5.1f} s", flush=True)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    k1, n1 = print_table("listed decisions", [r for r in rows if r["flip"] in listed])
    k2, n2 = print_table("controls (not listed)", [r for r in rows if r["flip"] in controls])
    print(f"\ntotal: {k1 + k2}/{n1 + n2} killed in {time.perf_counter() - t0:.0f} s")
    return 0 if (k1, k2) == (n1, n2) else 1


if __name__ == "__main__":
    sys.exit(main())
