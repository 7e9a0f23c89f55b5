"""One reader for every uploaded or local image: PNG, JPEG, BMP, TIFF (8/16-bit), grey, RGBA, palette, CMYK, DICOM.

Everything becomes an RGB uint8 array; bad input raises ImageInputError with a message meant for the user.
"""
from __future__ import annotations

import hashlib
import io
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_BYTES = 200 * 2**20  # same as .streamlit/config.toml maxUploadSize
MAX_PIXELS = 40_000_000  # ~ 6300 x 6300; larger images are refused before decoding
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}


class ImageInputError(ValueError):
    """The input is not an image this tool can use; str(e) is a message for the user."""


@dataclass
class InputImage:
    pixels: np.ndarray  # H x W x 3 uint8 RGB
    name: str
    sha256: str
    n_bytes: int
    format: str
    original_mode: str
    bit_depth: int
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column) from DICOM, when given
    notes: list[str] = field(default_factory=list)  # conversions made, shown to the user

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


def read_image(source, name: str | None = None, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> InputImage:
    """Read bytes, a path or a file-like object (e.g. a Streamlit upload)."""
    data, name = _read_bytes(source, name, max_bytes)
    if not data:
        raise ImageInputError(f"{name}: the file is empty.")
    digest = hashlib.sha256(data).hexdigest()
    if len(data) > 132 and data[128:132] == b"DICM" or name.lower().endswith((".dcm", ".dicom")):
        pixels, spacing, mode, depth, notes = _decode_dicom(data, name, max_pixels)
        return InputImage(pixels, name, digest, len(data), "DICOM", mode, depth, spacing, notes)
    pixels, fmt, mode, depth, notes = _decode_pil(data, name, max_pixels)
    return InputImage(pixels, name, digest, len(data), fmt, mode, depth, None, notes)


def _read_bytes(source, name, max_bytes) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        name = name or path.name
        if not path.is_file():
            raise ImageInputError(f"{name}: no such file.")
        if path.stat().st_size > max_bytes:
            raise ImageInputError(f"{name}: the file is larger than {max_bytes // 2**20} MB.")
        data = path.read_bytes()
    else:  # file-like (Streamlit UploadedFile, BytesIO)
        name = name or getattr(source, "name", None)
        if hasattr(source, "getvalue"):
            data = source.getvalue()
        else:
            data = source.read()
    name = name or "image"
    if len(data) > max_bytes:
        raise ImageInputError(f"{name}: the file is larger than {max_bytes // 2**20} MB.")
    return data, name


def _decode_pil(data: bytes, name: str, max_pixels: int):
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageInputError(
                    f"{name}: {w}×{h} pixels is more than this tool accepts ({max_pixels / 1e6:.0f} megapixels). "
                    "Downscale the image or crop the region of interest."
                )
            rgb16 = img.mode in ("RGB", "RGBA") and any(";16" in str(tile.args) for tile in img.tile)
            img.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(
            f"{name}: the image has more pixels than this tool accepts ({max_pixels / 1e6:.0f} megapixels). "
            "Downscale the image or crop the region of interest."
        ) from None
    except (UnidentifiedImageError, ImportError):
        # ImportError: once Ultralytics is imported, its patched Image.open reacts to an unknown format by trying the
        # optional HEIF plugin and raises ModuleNotFoundError instead of UnidentifiedImageError
        raise ImageInputError(
            f"{name}: not a readable image. Accepted: PNG, JPEG, BMP, TIFF or DICOM."
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        if "truncated" in str(exc).lower():
            raise ImageInputError(f"{name}: the image file is truncated or corrupt (incomplete download?).") from None
        raise ImageInputError(f"{name}: the image could not be decoded ({exc}).") from None
    except Exception as exc:  # a decoder plugin failing in its own way must still reach the user as a message
        raise ImageInputError(f"{name}: the image could not be decoded ({type(exc).__name__}).") from None
    fmt = img.format or "unknown"
    mode = img.mode
    if getattr(img, "n_frames", 1) > 1:
        notes.append(f"multi-page {fmt}: the first page is used")
    orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation: 1 is upright
    if orientation not in (1, None):
        img = ImageOps.exif_transpose(img)
        notes.append("turned upright as its EXIF orientation says (as a photo viewer shows it)")
    arr, depth = _to_rgb8(img, notes)
    if rgb16:  # Pillow decodes 16-bit colour to 8 bits per channel itself (the top byte: the colours keep their ratios)
        notes.append("16-bit colour image reduced to 8 bits per channel")
        depth = 16
    return arr, fmt, mode, depth, notes


def _to_rgb8(img: Image.Image, notes: list[str]) -> tuple[np.ndarray, int]:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        depth = 32 if mode in ("I", "F") else 16
        arr = _stretch(arr)
        notes.append(f"{depth}-bit image scaled to 8-bit by its own range")
        return np.repeat(arr[:, :, None], 3, axis=2), depth
    if mode == "1":
        img = img.convert("L")
    if mode in ("P", "PA"):
        img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
        notes.append("palette image converted to RGB")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
        if np.asarray(img.getchannel("A")).min() < 255:
            img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), img)
            notes.append("transparency removed (see-through pixels shown on black)")
        else:
            notes.append("alpha channel dropped (every pixel opaque)")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    if img.mode == "I;16" or np.asarray(img).dtype == np.uint16:  # e.g. 16-bit RGB TIFF
        arr = _stretch(np.asarray(img, dtype=np.float64))
        return (arr if arr.ndim == 3 else np.repeat(arr[:, :, None], 3, axis=2)), 16
    return np.asarray(img.convert("RGB"), dtype=np.uint8), 8


def _stretch(arr: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(arr, [0.1, 99.9]) if arr.size else (0, 1)
    if hi <= lo:
        hi = lo + 1
    return np.uint8(np.clip((arr - lo) / (hi - lo) * 255.0, 0, 255))


def _decode_dicom(data: bytes, name: str, max_pixels: int):
    import pydicom

    notes: list[str] = []
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        rows, cols = int(ds.Rows), int(ds.Columns)
        if rows * cols > max_pixels:
            raise ImageInputError(f"{name}: {cols}×{rows} DICOM image is larger than this tool accepts.")
        arr = ds.pixel_array
    except ImageInputError:
        raise
    except (AttributeError, KeyError):  # a DICOM without an image: no Rows/Columns or no pixel data
        raise ImageInputError(f"{name}: the DICOM file holds no image (no pixel data or image size in it).") from None
    except Exception:  # pydicom raises many types for broken files
        raise ImageInputError(f"{name}: the DICOM file could not be read; it may be damaged or incomplete.") from None
    if arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        arr = arr[0]
        notes.append("multi-frame DICOM: the first frame is used")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 3 and photometric.startswith("YBR"):
        from pydicom.pixels import convert_color_space

        arr = convert_color_space(arr, photometric, "RGB")
    if arr.dtype != np.uint8:
        arr = _stretch(arr.astype(np.float64))
    if photometric == "MONOCHROME1":
        arr = 255 - arr
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    spacing = None
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        if getattr(ds, tag, None):
            spacing = tuple(float(v) for v in getattr(ds, tag))[:2]
            break
    if spacing is None and getattr(ds, "SequenceOfUltrasoundRegions", None):
        region = ds.SequenceOfUltrasoundRegions[0]
        if getattr(region, "PhysicalUnitsXDirection", None) == 3:  # cm
            spacing = (float(region.PhysicalDeltaY) * 10, float(region.PhysicalDeltaX) * 10)
    depth = int(getattr(ds, "BitsStored", 8))
    return np.ascontiguousarray(arr[:, :, :3], dtype=np.uint8), spacing, photometric, depth, notes


def encode_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


FLAT_STD = 2.0  # grey levels: an image this even is one flat colour


def shows_something(pixels: np.ndarray, min_side: int) -> bool:
    return min(pixels.shape[:2]) >= min_side and float(pixels.std()) >= FLAT_STD


def refuse_blank(image: InputImage | np.ndarray, min_side: int, thing: str) -> None:
    """A ValueError (a message for the user) for an image too small or too flat to show `thing` ("an embryo"):
    graded anyway, such images came out as confident answers ("Blastocyst 99 %", "abnormal 98.5 %")."""
    pixels, name = getattr(image, "pixels", image), getattr(image, "name", "the image")  # an InputImage or pixels
    h, w = pixels.shape[:2]
    if min(h, w) < min_side:
        raise ValueError(f"{name}: {w} × {h} pixels is too small to show {thing} (at least {min_side} pixels "
                         "a side); upload the original image.")
    if not shows_something(pixels, min_side):
        raise ValueError(f"{name}: the image is one flat colour, without {thing} to analyse.")


def open_zip(file) -> zipfile.ZipFile:
    """A zip archive whose member names read as they were written: zip tools on Linux and macOS store UTF-8 names
    without the flag that says so, and Python then decodes them as cp437 ("Müller" read "M├╝ller")."""
    archive = zipfile.ZipFile(file)
    for info in archive.infolist():
        if not info.flag_bits & 0x800:
            try:
                info.filename = info.filename.encode("cp437").decode("utf-8")
            except UnicodeError:  # a true cp437 name
                continue
    archive.NameToInfo = {info.filename: info for info in archive.infolist()}
    return archive

