"""Python API inputs (``WildRayZer.predict``, ``render``, ``interpolate``, ``prepare_images``): every bad input is a
one-line :class:`UserError` naming the image, camera or value; the inputs that have one right reading (16-bit PIL
modes, tiny overshoot of float images, numpy integers) are handled as the data loader handles the same file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import png_declaring, tiny_pretrained

from wildrayzer import WildRayZer
from wildrayzer.api import MAX_RENDER_VIEWS, prepare_images
from wildrayzer.data.frames import MAX_IMAGE_PIXELS, read_rgb
from wildrayzer.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32  # tiny_run.MODEL


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return WildRayZer.from_pretrained(tiny_pretrained(tmp_path_factory.mktemp("api") / "tiny"), device="cpu")


@pytest.fixture(scope="module")
def pred(model):
    rng = np.random.default_rng(0)
    return model.predict([rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(2)])


def refused(fn, *needles: str) -> str:
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 400, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


GOOD = np.full((20, 24, 3), 128, np.uint8)
HUGE_SIDE = int(MAX_IMAGE_PIXELS ** 0.5) + 10


def ragged():
    return [[1, 2, 3], [4, 5]]


BAD_IMAGES = {  # name: (image given as view 1, words of the error)
    "empty_array": (np.zeros((0, 0, 3), np.uint8), ("image 1", "empty (0x0")),
    "empty_width": (np.zeros((16, 0), np.uint8), ("image 1", "empty (16x0")),
    "empty_pil": (Image.new("RGB", (0, 5)), ("image 1", "empty")),
    "object_dtype": (np.full((8, 8, 3), None, dtype=object), ("image 1", "dtype object")),
    "string_dtype": (np.full((8, 8), "a"), ("image 1", "dtype <U1")),
    "bool_array": (np.ones((8, 8), bool), ("image 1", "dtype bool")),
    "int64_array": (np.full((8, 8, 3), 200, np.int64), ("image 1", "dtype int64")),
    "complex_array": (np.ones((8, 8), np.complex64), ("image 1", "dtype complex64")),
    "ragged_list": (ragged(), ("image 1", "cannot be read as an array")),
    "nan_float": (np.where(np.eye(8)[..., None] > 0, np.nan, 0.5).repeat(3, -1), ("image 1", "NaN")),
    "inf_tensor": (torch.full((3, 8, 8), float("inf")), ("image 1", "NaN or infinite")),
    "float_0_255": (np.full((8, 8, 3), 200.0, np.float32), ("image 1", "[0, 1]", "200", "divide by 255")),
    "negative_float": (np.full((8, 8, 3), -0.5, np.float32), ("image 1", "[-0.5, -0.5]")),
    "float_tensor_0_255": (torch.full((3, 8, 8), 255.0), ("image 1", "divide by 255")),
    "int64_tensor": (torch.ones(3, 8, 8, dtype=torch.int64), ("image 1", "tensor dtype int64")),
    "bool_tensor": (torch.ones(3, 8, 8, dtype=torch.bool), ("image 1", "tensor dtype bool")),
    "two_channels": (np.zeros((8, 8, 2), np.uint8), ("image 1", "C in 1, 3, 4")),
    "tensor_5d": (torch.zeros(1, 1, 3, 8, 8), ("image 1", "(C, H, W)")),
    "scalar": (np.float32(0.5), ("image 1", "shape ()")),
    "path_string": ("photo.png", ("image 1", "'photo.png'", "PIL.Image.open")),
    "huge_array": (np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (HUGE_SIDE, HUGE_SIDE, 3)),
                   ("image 1", f"{HUGE_SIDE}x{HUGE_SIDE}", "100 MP limit")),
    "huge_tensor": (torch.zeros(3, 1, 1).expand(3, HUGE_SIDE, 20_000), ("image 1", "100 MP limit")),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_image_is_a_one_line_user_error(model, name):
    img, needles = BAD_IMAGES[name]
    refused(lambda: model.predict([GOOD, img]), *needles)
    refused(lambda: prepare_images([GOOD, img], SIZE), *needles)


def test_a_huge_lazily_opened_pil_image_is_refused_before_decoding(model, tmp_path):
    im = Image.open(png_declaring(tmp_path / "big.png", 10240, 10240))  # 105 MP declared, a few bytes on disk
    refused(lambda: model.predict([GOOD, im]), "image 1", "10240x10240", "100 MP limit")


def test_a_pil_image_that_cannot_be_decoded_is_a_user_error(model, tmp_path):
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    refused(lambda: model.predict([GOOD, Image.open(tmp_path / "cut.png")]), "image 1", "cannot be decoded")
    closed = Image.open(tmp_path / "a.png")
    closed.close()
    refused(lambda: model.predict([GOOD, closed]), "image 1", "cannot be decoded")


@pytest.mark.parametrize("images,needles", [
    ([], ("takes 2 input views; got 0",)),
    (np.zeros((0,)), ("takes a list of images",)),
    (np.zeros((0, 8, 8, 3), np.uint8), ("got 0 images",)),
    (torch.zeros(2, 3, 8, 8, 1), ("takes a list of images",)),
    (None, ("takes a list of images", "NoneType")),
    ([GOOD] * 3, ("takes 2 input views; got 3",)),
])
def test_bad_image_lists(model, images, needles):
    refused(lambda: model.predict(images), *needles)


def test_prepare_images_refuses_an_empty_list():
    refused(lambda: prepare_images([], SIZE), "non-empty list")


def test_16bit_pil_modes_are_read_as_the_data_loader_reads_them(tmp_path):
    """'I;16' and 'I' PIL images: scaled by their own maximum (as frames.read_rgb reads a 16-bit PNG), not clipped
    at 255 (PIL's convert('RGB') turns almost every 16-bit value white)."""
    ramp = (np.arange(24 * 20, dtype=np.uint16).reshape(20, 24) * 8).astype(np.uint16)  # up to 3832
    im16 = Image.fromarray(ramp)
    assert im16.mode == "I;16"
    im16.save(tmp_path / "ramp.png")
    via_loader = torch.from_numpy(read_rgb(tmp_path / "ramp.png")).permute(2, 0, 1).float() / 255
    for im in (im16, Image.open(tmp_path / "ramp.png"), im16.convert("I")):
        t = prepare_images([im], 20)[0]
        assert torch.allclose(t, prepare_images([via_loader], 20)[0], atol=1e-6), im.mode
        assert 0.3 < float(t.mean()) < 0.7  # a ramp, not a white image
    neg = Image.fromarray(np.array([[-500, 0], [250, 1000]], np.int32), mode="I")
    t = prepare_images([neg], 2)[0]
    assert t.min() >= 0 and t.max() <= 1 and float(t[0, 1, 1]) == pytest.approx(1.0, abs=0.02)  # no uint8 wrap


def test_tiny_float_overshoot_is_clamped_not_refused():
    img = np.full((8, 8, 3), 1.0 + 5e-4, np.float32)
    img[0, 0] = -5e-4  # resampling ringing
    out = prepare_images([img], 8)
    assert out.min() >= 0 and out.max() <= 1


BAD_CAMERAS = {  # name: (c2w, fxfycxcy, words of the error)
    "nan_pose": (torch.full((1, 4, 4), float("nan")), torch.full((1, 4), 16.0), ("NaN or infinite",)),
    "inf_focal": (torch.eye(4)[None], torch.tensor([[float("inf"), 16.0, 16.0, 16.0]]), ("NaN or infinite",)),
    "zero_focal": (torch.eye(4)[None], torch.tensor([[0.0, 16.0, 16.0, 16.0]]), ("positive pixels", "0.0")),
    "negative_cx": (torch.eye(4)[None], torch.tensor([[20.0, 20.0, -1.0, 16.0]]), ("positive pixels",)),
    "singular_pose": (torch.zeros(1, 4, 4), torch.full((1, 4), 16.0), ("camera 0", "not a rigid pose")),
    "scaled_pose": (2 * torch.eye(4)[None], torch.full((1, 4), 16.0), ("camera 0", "not a rigid pose")),
    "shape_mismatch": (torch.eye(4).repeat(2, 1, 1), torch.full((3, 4), 16.0), ("(T, 4, 4)", "(3, 4)")),
    "pose_3x3": (torch.eye(3)[None], torch.full((1, 4), 16.0), ("(T, 4, 4)",)),
    "no_cameras": (torch.zeros(0, 4, 4), torch.zeros(0, 4), ("0 cameras",)),
    "too_many": (torch.eye(4).expand(MAX_RENDER_VIEWS + 1, 4, 4), torch.full((MAX_RENDER_VIEWS + 1, 4), 16.0),
                 (f"{MAX_RENDER_VIEWS + 1} cameras", "MAX_RENDER_VIEWS")),
    "text": ("abc", [16.0] * 4, ("numeric",)),
}


@pytest.mark.parametrize("name", list(BAD_CAMERAS))
def test_bad_render_cameras_are_one_line_user_errors(model, pred, name):
    c2w, k, needles = BAD_CAMERAS[name]
    refused(lambda: model.render(pred, c2w, k), "render:", *needles)


def test_render_accepts_plain_lists_and_refuses_a_foreign_prediction(model, pred):
    out = model.render(pred, np.eye(4).tolist(), [20.0, 20.0, 16.0, 16.0])
    assert out.shape == (1, 3, SIZE, SIZE) and torch.isfinite(out).all()
    refused(lambda: model.render({}, torch.eye(4), torch.full((4,), 16.0)), "scene_tokens", "predict()")
    refused(lambda: model.render("pred", torch.eye(4), torch.full((4,), 16.0)), "scene_tokens")


@pytest.mark.parametrize("count", [0, -3, 1, 2.5, "24", True, None, 10 ** 9, MAX_RENDER_VIEWS + 1])
def test_bad_interpolate_counts_are_one_line_user_errors(model, pred, count):
    refused(lambda: model.interpolate(pred, count), "num_frames", repr(count))


def test_interpolate_accepts_numpy_integers(model, pred):
    assert model.interpolate(pred, np.int64(3)).shape == (3, 3, SIZE, SIZE)
    refused(lambda: model.interpolate({"scene_tokens": pred["scene_tokens"]}, 3), "no 'cameras'")
