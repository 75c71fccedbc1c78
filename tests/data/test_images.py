"""load_image / image_size: every pixel format a labelling export brings comes back as uint8 RGB,
rotated the way labelling tools show it; broken files fail with the file's name."""

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from rtmdet_keras.data.images import ImageReadError, image_size, load_image


def write_png16(path, grey):
    """A 16-bit greyscale PNG written byte by byte (so the test does not rely on Pillow's writer)."""
    h, w = grey.shape
    raw = b"".join(b"\x00" + grey[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_exif_rotated_jpeg(path, orientation):
    """A 40 wide x 20 high stored picture, white with a red block in its stored top-left corner."""
    a = np.full((20, 40, 3), 255, np.uint8)
    a[:8, :8] = (255, 0, 0)
    img = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, quality=95, exif=exif.tobytes())


def test_rgb_jpeg(tmp_path):
    Image.new("RGB", (30, 20), (200, 10, 10)).save(tmp_path / "a.jpg", quality=95)
    a = load_image(tmp_path / "a.jpg")
    assert a.shape == (20, 30, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - [200, 10, 10]).max() <= 6
    assert image_size(tmp_path / "a.jpg") == (30, 20)


def test_grey_and_grey_alpha_png(tmp_path):
    g = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    a = load_image(tmp_path / "g.png")
    assert a.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(a[..., c], g)
    la = Image.fromarray(np.stack([g, np.zeros_like(g)], -1), "LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_image(tmp_path / "la.png")[..., 1], g)


def test_rgba_png_drops_alpha(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = [[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [100, 110, 120]]]
    rgba[0, 0, 3] = 0  # fully transparent: the colour is still the labelled pixel's colour
    rgba[1:, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgba[..., :3])


def test_palette_png_with_transparency(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2])
    img.info["transparency"] = 1
    img.save(tmp_path / "p.png", transparency=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns when a transparent palette goes straight to RGB
        a = load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(a[0], [[255, 0, 0], [0, 255, 0], [0, 0, 255]])


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    write_png16(tmp_path / "d.png", np.array([[0, 257 * 100, 65535, 256]], np.uint16))
    a = load_image(tmp_path / "d.png")
    # 65535 -> 255, 25700 -> 100 (= /257), 256 -> 1; Pillow's convert("RGB") would give 0, 255, 255, 255.
    np.testing.assert_array_equal(a[0, :, 0], [0, 100, 255, 1])
    assert a.shape == (1, 4, 3)


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)  # pure red in CMYK
    a = load_image(tmp_path / "c.jpg")
    assert a.shape == (8, 8, 3)
    assert a[..., 0].min() > 200 and a[..., 1:].max() < 60


@pytest.mark.parametrize("orientation, size, red_corner", [
    (1, (40, 20), (0, 0)),       # as stored
    (3, (40, 20), (19, 39)),     # rotated 180: the block ends bottom-right
    (6, (20, 40), (0, 19)),      # rotate 90 clockwise to display: top-left -> top-right
    (8, (20, 40), (39, 0)),      # rotate 90 counter-clockwise: top-left -> bottom-left
])
def test_exif_orientation_is_applied(tmp_path, orientation, size, red_corner):
    path = tmp_path / f"o{orientation}.jpg"
    write_exif_rotated_jpeg(path, orientation)
    assert image_size(path) == size  # (width, height) as displayed
    a = load_image(path)
    assert (a.shape[1], a.shape[0]) == size
    y, x = red_corner
    assert a[y, x, 0] > 200 and a[y, x, 1] < 60, a[y, x]


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ImageReadError, match="nope.jpg.*not found") as e:
        load_image(tmp_path / "nope.jpg")
    assert e.value.reason == "missing"
    with pytest.raises(ImageReadError, match="nope.jpg"):
        image_size(tmp_path / "nope.jpg")


def test_corrupt_file_names_it(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    for fn in (load_image, image_size):
        with pytest.raises(ImageReadError, match="bad.jpg.*corrupt or truncated") as e:
            fn(tmp_path / "bad.jpg")
        assert e.value.reason == "unreadable"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_fails_when_decoded(tmp_path, fmt):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert image_size(path, verify=False) == (64, 64)  # the header alone looks fine
    with pytest.raises(ImageReadError, match="cut"):
        image_size(path)
    with pytest.raises(ImageReadError, match="cut"):
        load_image(path)
