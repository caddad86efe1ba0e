import imageio.v2 as imageio
import imageio.v3 as iio
import pytest
import torch

from wildrayzer.geometry import make_pose, rotation_6d_to_matrix
from wildrayzer.infer.video import camera_path, video_path, write_video


def _frames(t=7, h=33, w=45):
    """Distinct frames: a bright bar moving right over a gradient."""
    x = torch.linspace(0, 1, w).view(1, 1, 1, w).expand(t, 3, h, w).clone() * 0.5
    for i in range(t):
        x[i, :, :, 2 + 5 * i : 6 + 5 * i] = 1.0
    return x


def test_gif_written_with_every_frame(tmp_path):
    frames = _frames()
    path = write_video(tmp_path / "sub" / "path.gif", frames, fps=10)
    back = iio.imread(path, index=None)
    assert back.shape[0] == 7 and back.shape[1:3] == (33, 45)
    # The bar of frame 3 is where it was written.
    assert back[3, 10, 18:20, :3].min() > 240 and back[3, 10, 40, :3].max() < 200


def test_mp4_written_readable_even_padded(tmp_path):
    frames = _frames()
    path = write_video(tmp_path / "path.mp4", frames, fps=8)
    reader = imageio.get_reader(path, format="FFMPEG")
    got = [f for f in reader]
    reader.close()
    assert len(got) == 7
    assert got[0].shape == (34, 46, 3)  # padded to even sizes for yuv420p
    assert abs(float(got[3][10, 19].mean()) - 255) < 40 and float(got[3][10, 40].mean()) < 200


def test_bad_formats_and_shapes(tmp_path):
    with pytest.raises(ValueError):
        write_video(tmp_path / "x.avi", _frames())
    with pytest.raises(ValueError):
        write_video(tmp_path / "x.gif", torch.rand(3, 8, 8))
    with pytest.raises(ValueError):
        video_path(tmp_path, "v", "webm")
    assert video_path(tmp_path, "video", "mp4") == tmp_path / "video.mp4"


def test_camera_path_through_inputs():
    rot_b = rotation_6d_to_matrix(torch.tensor([1.0, 0.3, 0.0, -0.2, 1.0, 0.4], dtype=torch.float64))
    c2w = torch.stack([torch.eye(4, dtype=torch.float64),
                       make_pose(rot_b, torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64))])
    k = torch.tensor([[60.0, 60.0, 32.0, 32.0], [80.0, 80.0, 32.0, 32.0]], dtype=torch.float64)
    path, intr = camera_path(c2w, k, 9)
    assert path.shape == (9, 4, 4) and intr.shape == (9, 4)
    torch.testing.assert_close(path[0], c2w[0])
    torch.testing.assert_close(path[-1], c2w[1])
    torch.testing.assert_close(intr[4], torch.tensor([70.0, 70.0, 32.0, 32.0], dtype=torch.float64))
    rots = path[:, :3, :3]
    torch.testing.assert_close(rots @ rots.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(9, 3, 3))
    steps = (path[1:, :3, 3] - path[:-1, :3, 3]).norm(dim=-1)
    torch.testing.assert_close(steps, steps[0].expand(8))  # constant speed between the two cameras
    looped, lintr = camera_path(c2w, k, 9, loop=True)
    assert looped.shape[0] == 16 and lintr.shape == (16, 4)
    torch.testing.assert_close(looped[-1], path[1])
    with pytest.raises(ValueError):
        camera_path(c2w, k[:1], 9)
