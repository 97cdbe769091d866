"""Preprocessing shared by training and serving: text cleaning and image decoding.

Written once: the training pipeline and the API both call these functions, so the two
cannot drift apart.
"""

from __future__ import annotations

import html
import io
import math
import re
import unicodedata
import warnings

import numpy as np
from PIL import Image, ImageOps

# Default side of the square images the image models are trained on.
IMAGE_SIZE = 96

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


def decode_image(data: bytes, *, max_pixels: int = 40_000_000) -> np.ndarray:
    """Decode any format PIL reads into an RGB uint8 array (H x W x 3).

    Applies the EXIF orientation, converts grayscale, palette, CMYK and alpha
    (composited on white) to RGB. Raises ImageDecodeError for non-images, truncated
    files and images over `max_pixels` (decompression bombs).
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
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"the image file is damaged or truncated ({exc})") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        span = float(arr.max() - arr.min()) or 1.0
        img = Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8))
    return img.convert("RGB")


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
