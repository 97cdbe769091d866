"""Preprocessing shared by training and serving: text cleaning and image decoding.

Written once: the training pipeline and the API both call these functions, so the two
cannot drift apart.
"""

from __future__ import annotations

import html
import io
import math
import re
import struct
import unicodedata
import warnings

import numpy as np
from PIL import Image, ImageMode, ImageOps

# Default side of the square images the image models are trained on (`Hyperparameters.image_size`;
# `--quick` uses 48). A bundle's own size is in its metadata.json, and serving resizes to that.
IMAGE_SIZE = 64

_TAG = re.compile(r"<[^>]{0,2000}>")
_WS = re.compile(r"\s+")
# Zero-width and control characters (keep \t \n \r, they become spaces below).
_CONTROL = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u200b-\u200f\u2060\ufeff]")


TITLE_END = "\t"


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image (not an image, truncated, or too large)."""


def clean_text(text: str | None) -> str:
    """HTML unescape and strip, Unicode NFKC normalisation, whitespace collapse.

    Case is kept (the models lowercase themselves); the result may be "" for
    HTML-only or whitespace-only input.
    """
    # pandas reads an empty CSV cell as NaN (a float), which is as empty as None.
    if not text or (isinstance(text, float) and math.isnan(text)):
        return ""
    # Twice: sellers' tools often double-escape ("&amp;eacute;").
    text = html.unescape(html.unescape(str(text)))
    text = _TAG.sub(" ", text)
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub(" ", text)
    return _WS.sub(" ", text).strip()


def combine_text(designation: str | None, description: str | None) -> str:
    """The one text a text model sees: cleaned title, a tab, cleaned description, lowercased.

    Lowercased here (Unicode-aware) because Keras' `TextVectorization` lowercases ASCII
    letters only: "BÂCHE" would otherwise reach the model as "bÂche". The tab (which
    `clean_text` never leaves inside a part) marks where the title ends: the text model reads
    the title on its own too (`title_of`); for every other purpose it is just whitespace.
    """
    title, body = clean_text(designation).lower(), clean_text(description).lower()
    return f"{title}{TITLE_END}{body}" if title and body else title or body


def title_of(text: str) -> str:
    """The title part of a `combine_text` result (all of it when there is no description)."""
    return text.split(TITLE_END, 1)[0]


def decode_image(
    data: bytes,
    *,
    max_pixels: int = 40_000_000,
    max_decoded_bytes: int | None = None,
    draft_pixels: int | None = None,
) -> np.ndarray:
    """Decode any format PIL reads into an RGB uint8 array (H x W x 3).

    Applies the EXIF orientation, converts grayscale, palette, CMYK, 16-bit and alpha
    (composited on white) to RGB.

    Args:
        data: The image file's bytes.
        max_pixels: Images declaring more pixels are refused before anything is decoded
            (decompression bombs).
        max_decoded_bytes: Images whose decoded buffer (width x height x bytes per pixel of
            their mode, after any draft) would be larger are refused before decoding; None: no
            such limit. A small file can declare a huge 16-bit image: this bounds time and memory.
        draft_pixels: JPEGs of more pixels are decoded at a reduced scale (1/2, 1/4 or 1/8,
            by the JPEG decoder itself) that keeps at least this many; None: always full size.
            Images at or under it decode exactly as without it.

    Returns:
        The RGB pixels, uint8, of shape (height, width, 3).

    Raises:
        ImageDecodeError: For non-images, truncated or damaged files, and images over a limit.
    """
    if not data:
        raise ImageDecodeError("empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageDecodeError(
                        f"image of {width}x{height} pixels is over the limit of {max_pixels}"
                    )
                if draft_pixels is not None and img.format == "JPEG" and width * height > draft_pixels:
                    shrink = math.sqrt(draft_pixels / (width * height))
                    img.draft(None, (math.ceil(width * shrink), math.ceil(height * shrink)))
                if max_decoded_bytes is not None:
                    needed = decoded_bytes(img)
                    if needed > max_decoded_bytes:
                        raise ImageDecodeError(
                            f"image of {img.size[0]}x{img.size[1]} {img.mode} pixels would take "
                            f"{needed} bytes once decoded, over the limit of {max_decoded_bytes}"
                        )
                img.load()
                img = ImageOps.exif_transpose(img)
                return np.asarray(_to_rgb(img), dtype=np.uint8)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image too large: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        # PIL's own message names an internal buffer object: say it in the user's terms.
        raise ImageDecodeError("not an image file, or a format that cannot be read") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error) as exc:
        # Crafted files make PIL's parsers fail in many ways; each means "damaged".
        raise ImageDecodeError(f"the image file is damaged or truncated ({exc})") from exc


def decoded_bytes(img: Image.Image) -> int:
    """Bytes of the buffer `img.load()` would allocate: width x height x bytes per pixel."""
    try:
        mode = ImageMode.getmode(img.mode)
        itemsize, bands = np.dtype(mode.typestr).itemsize, len(mode.bands)
    except (KeyError, TypeError):
        itemsize, bands = 4, 1  # a mode PIL does not describe: assume the widest common one
    # PIL stores every multi-band 8-bit mode (LA, RGB, YCbCr, ...) in 4 bytes a pixel.
    per_pixel = 4 if itemsize == 1 and bands > 1 else itemsize * bands
    return img.size[0] * img.size[1] * per_pixel


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = Image.fromarray(_rescale_to_uint8(np.asarray(img)))
    return img.convert("RGB")


def _rescale_to_uint8(raw: np.ndarray, rows: int = 256) -> np.ndarray:
    """Min-max rescale to 0..255 in float64, a band of rows at a time (not the whole image
    in float64 at once: 8 bytes a pixel, and as many again for each temporary)."""
    low = float(raw.min())
    span = float(raw.max()) - low or 1.0
    out = np.empty(raw.shape, dtype=np.uint8)
    for start in range(0, raw.shape[0], rows):
        band = raw[start : start + rows].astype(np.float64)
        out[start : start + rows] = ((band - low) / span * 255).astype(np.uint8)
    return out


def resize_image(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Resize an RGB uint8 array to `size` x `size` (bilinear, antialiased)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageDecodeError(f"expected an H x W x 3 array, got shape {image.shape}")
    if image.shape[0] == size and image.shape[1] == size:
        return image
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def load_image(data: bytes, size: int = IMAGE_SIZE, *, max_pixels: int = 40_000_000) -> np.ndarray:
    """Decode and resize: what both training and serving feed to the image models."""
    return resize_image(decode_image(data, max_pixels=max_pixels), size)
