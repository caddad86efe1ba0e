"""pseudolabel.render_from=farthest: which views render which, and that every view gets the render of its own set."""

import pytest
import torch

from wildrayzer.pseudolabel.far_context import (
    context_passes,
    farthest_views,
    gather_cameras,
    gather_views,
    render_from_farthest,
)

# the embedded dynamic test's layout: context frames 0 and 8 first, then the targets
TEST_LAYOUT = [0, 8, 1, 2, 3, 5, 6, 7]


def test_farthest_views_are_the_other_views_farthest_in_frame_number():
    far = farthest_views(torch.tensor([TEST_LAYOUT]), 2)[0]
    assert far[0].tolist() == [1, 7]  # frame 0 <- frames 8 and 7
    assert far[1].tolist() == [0, 2]  # frame 8 <- frames 0 and 1
    assert far[4].tolist() == [1, 7]  # frame 3 <- frames 8 (5 away) and 7 (4 away), not 0 (3 away)
    assert far[5].tolist() == [0, 2]  # frame 5 <- frames 0 and 1
    # ties go to the lower view index; a view never renders itself, even among identical frame numbers
    assert farthest_views(torch.tensor([[0, 1, 2]]), 1)[0, 1].tolist() == [0]
    assert farthest_views(torch.tensor([[5, 5, 5]]), 2)[0].tolist() == [[1, 2], [0, 2], [0, 1]]
    with pytest.raises(ValueError, match="num_context"):
        farthest_views(torch.tensor([[0, 1]]), 2)


def test_gather_views_reorders_along_the_view_axis_per_item():
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    order = torch.tensor([[3, 0, 1, 2], [1, 2, 3, 0]])
    y = gather_views(x, order)
    assert torch.equal(y[0], x[0, [3, 0, 1, 2]]) and torch.equal(y[1], x[1, [1, 2, 3, 0]])
    assert torch.equal(gather_views(y, order.argsort(dim=1)), x)  # the inverse order undoes it
    cams = {"c2w": torch.rand(2, 4, 4, 4), "fxfycxcy": torch.rand(2, 4, 4)}
    moved = gather_cameras(cams, order)
    assert all(torch.equal(moved[k][1], cams[k][1, [1, 2, 3, 0]]) for k in cams)
    assert gather_cameras(None, order) is None  # a model that predicts its cameras gets none


def test_every_view_gets_the_render_from_its_own_farthest_views_in_a_few_passes():
    """A fake renderer writes, into each rendered view, the code of the context set it was rendered from and of the
    view itself; items of a batch with different layouts (and numbers of distinct sets) share the passes."""
    frames = torch.tensor([TEST_LAYOUT, [4, 0, 1, 2, 3, 5, 6, 7]])
    images = torch.zeros(2, 8, 3, 2, 2)
    calls = []

    def render(order):  # (B, V) -> (B, V - 2, 3, 2, 2), each target filled with ctx0 * 100 + ctx1 * 10 + view
        calls.append(order.clone())
        code = order[:, :1] * 100 + order[:, 1:2] * 10 + order[:, 2:]  # (B, V - 2)
        return code[..., None, None, None].float().expand(-1, -1, 3, 2, 2)

    out = render_from_farthest(render, frames, 2, images)
    far = farthest_views(frames, 2)
    want = far[..., 0] * 100 + far[..., 1] * 10 + torch.arange(8)  # (B, V)
    assert torch.equal(out[:, :, 0, 0, 0], want.float())
    orders, _ = context_passes(frames, 2)
    assert len(calls) == orders.shape[0] == 3  # the second layout has 3 distinct sets, the first 2 (repeated)
    assert all(sorted(o.tolist()) == list(range(8)) for c in calls for o in c)  # each pass is a permutation
