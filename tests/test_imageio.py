"""The one image reader: every accepted kind normalises to RGB uint8; every bad input gets its own clear error."""
import io
import zlib
import struct

import numpy as np
import pytest
from PIL import Image

from core.imageio import ImageInputError, read_image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


RGB = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_common_formats_become_rgb_uint8(fmt):
    image = read_image(encode(RGB, fmt), name=f"x.{fmt.lower()}")
    assert image.pixels.shape == (40, 60, 3) and image.pixels.dtype == np.uint8
    assert image.format == fmt
    assert len(image.sha256) == 64


def test_grey_palette_rgba_cmyk_and_bilevel_are_converted():
    grey = read_image(encode(RGB.convert("L"), "PNG"))
    assert grey.pixels.shape == (40, 60, 3)
    assert np.array_equal(grey.pixels[..., 0], grey.pixels[..., 2])
    palette = read_image(encode(RGB.convert("P"), "PNG"))
    assert palette.pixels.shape == (40, 60, 3) and not any("transparency" in n for n in palette.notes)
    rgba = RGB.convert("RGBA")
    rgba.putalpha(0)  # fully transparent composites to black
    out = read_image(encode(rgba, "PNG"))
    assert out.pixels.max() == 0 and out.notes[-1] == \
        "transparency removed (see-through pixels shown on black)"
    opaque = read_image(encode(RGB.convert("RGBA"), "PNG"))  # most RGBA micrographs: an alpha channel of 255s
    assert np.array_equal(opaque.pixels, np.asarray(RGB)) and opaque.notes[-1] == \
        "alpha channel dropped (every pixel opaque)"
    cmyk = read_image(encode(RGB.convert("CMYK"), "JPEG"))
    assert cmyk.pixels.shape == (40, 60, 3) and cmyk.original_mode == "CMYK"
    assert read_image(encode(RGB.convert("1"), "PNG")).pixels.shape == (40, 60, 3)


def test_16_bit_tiff_and_png_are_scaled_to_8_bit():
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    for fmt in ("TIFF", "PNG"):
        image = read_image(encode(Image.fromarray(ramp), fmt))
        assert image.bit_depth == 16
        assert image.pixels.dtype == np.uint8
        assert image.pixels.min() == 0 and image.pixels.max() == 255  # full range used, not clipped to black


def test_16_bit_colour_tiff_and_png_keep_their_colours():
    import cv2

    rgb = np.zeros((40, 60, 3), np.uint16)
    rgb[..., 0] = 20000  # red
    rgb[..., 2] = np.linspace(0, 65535, 60, dtype=np.uint16)[None, :]  # a blue ramp
    for ext in (".tif", ".png"):
        ok, data = cv2.imencode(ext, rgb[..., ::-1])  # OpenCV writes BGR
        image = read_image(data.tobytes(), name=f"colour16{ext}")
        assert image.pixels.dtype == np.uint8 and image.bit_depth == 16
        assert np.all(image.pixels[..., 0] == 20000 // 256) and np.all(image.pixels[..., 1] == 0)
        assert image.pixels[0, 0, 2] == 0 and image.pixels[0, -1, 2] == 255
        assert any("16-bit colour" in note for note in image.notes)


def test_empty_file():
    with pytest.raises(ImageInputError, match="empty"):
        read_image(b"", name="empty.png")


def test_not_an_image():
    with pytest.raises(ImageInputError, match="not a readable image"):
        read_image(b"hello, this is a text file\n" * 10, name="notes.png")


def test_not_an_image_after_ultralytics_patched_pil():
    """Ultralytics replaces PIL's Image.open on import; a text file must still get the same clear message."""
    import ultralytics.utils.patches  # noqa: F401

    with pytest.raises(ImageInputError, match="not a readable image"):
        read_image(b"this is text, not an image", name="notes.png")


def test_truncated_jpeg():
    data = encode(RGB.resize((400, 300)), "JPEG")
    with pytest.raises(ImageInputError, match="truncated|corrupt|decoded"):
        read_image(data[: len(data) // 2], name="cut.jpg")


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming a huge size, and a tiny IDAT: a decompression-bomb shape."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def test_oversized_image_is_refused_before_decoding():
    with pytest.raises(ImageInputError, match="more pixels than this tool accepts") as refused:
        read_image(_png_header_only(20000, 20000), name="huge.png")
    assert "decompression bomb" not in str(refused.value)  # Pillow's own words (and its other limit) stay out


def test_large_image_under_pil_bomb_limit_is_refused_by_our_limit():
    with pytest.raises(ImageInputError, match="7000×7000 pixels is more"):
        read_image(_png_header_only(7000, 7000), name="big.png")


def test_file_over_byte_limit():
    with pytest.raises(ImageInputError, match="larger than"):
        read_image(b"\0" * 2048, name="big.png", max_bytes=1024)


def test_missing_path(tmp_path):
    with pytest.raises(ImageInputError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_reads_paths_and_file_objects(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(encode(RGB, "PNG"))
    assert read_image(path).name == "a.png"
    upload = io.BytesIO(encode(RGB, "PNG"))
    upload.name = "upload.png"
    assert read_image(upload).name == "upload.png"


def test_dicom_with_pixel_spacing():
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    arr = (np.arange(32 * 48, dtype=np.uint16).reshape(32, 48) * 20)
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [0.12, 0.15]
    ds.PixelData = arr.tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    image = read_image(buf.getvalue(), name="scan.dcm")
    assert image.format == "DICOM"
    assert image.pixels.shape == (32, 48, 3) and image.pixels.dtype == np.uint8
    assert image.pixel_spacing_mm == pytest.approx((0.12, 0.15))


def test_corrupt_dicom():
    with pytest.raises(ImageInputError, match="DICOM") as refused:
        read_image(b"\0" * 128 + b"DICM" + b"garbage" * 20, name="bad.dcm")
    assert "Error" not in str(refused.value) and "attribute" not in str(refused.value)  # no Python internals


def test_an_exif_rotated_photo_is_turned_upright_and_said_so():
    img = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    turned = read_image(buf.getvalue(), name="phone.jpg")
    assert turned.pixels.shape[:2] == (40, 20) and any("EXIF orientation" in n for n in turned.notes)
    plain = io.BytesIO()
    img.save(plain, format="JPEG")
    assert not read_image(plain.getvalue(), name="plain.jpg").notes
