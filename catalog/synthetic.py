"""A synthetic product catalogue in the Rakuten challenge layout, generated from a seed.

It stands in for the real data wherever the real data cannot go (CI, demos, quick tests):
French-like titles and descriptions per category with the real noise (HTML, entities,
typos, empty descriptions), images whose content depends on the category, the real
modality mix (text and image, text only, image only), a few wrong labels and wrong images.

What a category looks like (its words, palette, shape and texture) is a constant of this
module; the seed only drives the sampling. So a model trained on one seed is evaluated
fairly on another, and the same seed gives byte-identical files.

Usage: python -m catalog.synthetic --out DIR [--n N] [--seed S] [--image-size PX]
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import io
import json
import logging
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from db.categories import CATEGORIES
from models.data import IMAGE_DIR, X_FILE, Y_FILE, image_filename

logger = logging.getLogger(__name__)

MANIFEST_FILE = "synthetic.json"
VOCABULARY_FILE = "synthetic_vocabulary.json"
CATEGORIES_FILE = "categories.csv"
# Bump when the generator changes what a given seed produces.
GENERATOR_VERSION = 1

# Shares of the per-product modality mix and of the noise (about the real data's rates).
P_TEXT_ONLY = 0.15
P_IMAGE_ONLY = 0.15
P_EMPTY_DESCRIPTION = 0.35
P_WRONG_LABEL = 0.02
P_WRONG_IMAGE = 0.03
P_HTML = 0.30
P_ENTITIES = 0.25
P_TYPO_PER_WORD = 0.025
# Titles mix in shop-wide words and words of other categories, as real ones do.
P_GENERIC_WORD = 0.2
P_BORROWED = 0.12

# Products per code in the full challenge training set; the square root gives a mildly
# imbalanced mix (about 4:1 between the largest and the smallest class) in the same order.
_CHALLENGE_COUNTS: dict[int, int] = {
    10: 3116, 40: 2508, 50: 1681, 60: 832, 1140: 2671, 1160: 3953, 1180: 764, 1280: 4870,
    1281: 2070, 1300: 5045, 1301: 807, 1302: 2491, 1320: 3241, 1560: 5073, 1920: 4303,
    1940: 803, 2060: 4993, 2220: 824, 2280: 4760, 2403: 4774, 2462: 1421, 2522: 4989,
    2582: 2589, 2583: 10209, 2585: 2496, 2705: 2761, 2905: 872,
}  # fmt: skip

# Pairs that are hard to tell apart in the real data: they share most words and their
# images share shape and texture (only the palette differs a little).
CONFUSABLE_PAIRS: tuple[tuple[int, int], ...] = ((10, 2705), (40, 2462), (1280, 1281), (2582, 1560))


_CODES = sorted(CATEGORIES)


# --------------------------------------------------------------------------- vocabulary
# In synthetic_vocabulary.json: "{n}", "{nn}", "{cm}", "{dim}", "{year}", "{y2}", "{y4}", "{date}",
# "{color}", "{material}" are filled with random values and "{w}" with a word of the category.


@dataclass(frozen=True)
class _Vocabulary:
    words: tuple[str, ...]
    brands: tuple[str, ...]
    phrases: tuple[str, ...]


def _load_vocabulary() -> dict[str, Any]:
    """The vocabulary file next to this module (data, not code: 315 lines of words)."""
    return json.loads((Path(__file__).with_name(VOCABULARY_FILE)).read_text(encoding="utf-8"))


_WORDS = _load_vocabulary()
_VOCABULARY: dict[int, _Vocabulary] = {
    int(code): _Vocabulary(tuple(v["words"]), tuple(v["brands"]), tuple(v["phrases"]))
    for code, v in _WORDS["categories"].items()
}
_GENERIC_WORDS: tuple[str, ...] = tuple(_WORDS["generic_words"])
_GENERIC_SENTENCES: tuple[str, ...] = tuple(_WORDS["generic_sentences"])
_COLOURS: tuple[str, ...] = tuple(_WORDS["colours"])
_MATERIALS: tuple[str, ...] = tuple(_WORDS["materials"])
_ENTITIES: dict[str, str] = dict(_WORDS["entities"])


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class _Look:
    """What a category's images look like (a constant of the module, not of the seed)."""

    shape: int
    texture: int
    hue: float
    hue2: float
    frequency: float
    angle: float


_N_SHAPES = 9
_N_TEXTURES = 5


def _category_looks() -> dict[int, _Look]:
    looks: dict[int, _Look] = {}
    codes = sorted(CATEGORIES)
    for k, code in enumerate(codes):
        hue = (k * 0.618034) % 1.0
        looks[code] = _Look(
            shape=k % _N_SHAPES,
            texture=(k + k // _N_SHAPES) % _N_TEXTURES,
            hue=hue,
            hue2=(hue + 0.35 + 0.1 * (k % 3)) % 1.0,
            frequency=1.5 + (k * 5 % 7) * 0.6,
            angle=(k * 0.7) % math.pi,
        )
    for first, second in CONFUSABLE_PAIRS:
        a = looks[first]
        looks[second] = _Look(
            a.shape, a.texture, (a.hue + 0.09) % 1.0, (a.hue2 + 0.09) % 1.0, a.frequency, a.angle
        )
    return looks


_LOOKS = _category_looks()


def _rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), dtype=np.float32) * 255.0


def _shape_mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the unit-sized shape `shape` covers the (rotated, scaled) coordinates u, v."""
    r2 = u * u + v * v
    if shape == 0:  # disc
        return r2 <= 1.0
    if shape == 1:  # square
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85
    if shape == 2:  # diamond
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == 3:  # triangle
        return (v >= -0.5) & (1.732 * u + v <= 1.0) & (-1.732 * u + v <= 1.0)
    if shape == 4:  # ring
        return (r2 <= 1.0) & (r2 >= 0.36)
    phi = np.arctan2(v, u)
    r = np.sqrt(r2)
    if shape == 5:  # flower
        return r <= 0.65 + 0.35 * np.cos(5 * phi)
    if shape == 6:  # cross
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    if shape == 7:  # star
        return r <= 0.4 + 0.6 * np.abs(np.cos(2.5 * phi)) ** 3
    return (r2 <= 1.0) & ((u - 0.45) ** 2 + v * v >= 0.56)  # crescent


def _texture(
    texture: int, u: np.ndarray, v: np.ndarray, frequency: float, angle: float, phase: float
) -> np.ndarray:
    """A pattern in [0, 1] over the shape's coordinates."""
    if texture == 0:  # stripes
        return 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (u * math.cos(angle) + v * math.sin(angle)) + phase)
    if texture == 1:  # checks
        return (np.sin(np.pi * frequency * u + phase) * np.sin(np.pi * frequency * v) > 0).astype(np.float32)
    if texture == 2:  # dots
        fu, fv = (u * frequency + phase) % 1.0 - 0.5, (v * frequency) % 1.0 - 0.5
        return (fu * fu + fv * fv < 0.09).astype(np.float32)
    if texture == 3:  # concentric rings
        return 0.5 + 0.5 * np.sin(2 * np.pi * frequency * np.sqrt(u * u + v * v) + phase)
    return np.clip(0.5 + 0.5 * (u * math.cos(angle) + v * math.sin(angle)), 0.0, 1.0)  # gradient


class _Canvas:
    """Pixel coordinates in [-1, 1], computed once per image size."""

    def __init__(self, size: int) -> None:
        axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
        self.y, self.x = np.meshgrid(axis, axis, indexing="ij")

    def frame(
        self, cx: float, cy: float, scale: float, aspect: float, rotation: float
    ) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = self.x - cx, self.y - cy
        cos, sin = math.cos(rotation), math.sin(rotation)
        return (dx * cos + dy * sin) / (scale * aspect), (-dx * sin + dy * cos) / scale


def _draw_object(
    canvas: _Canvas, image: np.ndarray, look: _Look, rng: np.random.Generator, *, scale: float, spread: float
) -> None:
    """Paint one object of `look` on `image`, jittered in place, size, rotation and colour."""
    u, v = canvas.frame(
        rng.uniform(-spread, spread),
        rng.uniform(-spread, spread),
        scale,
        rng.uniform(0.75, 1.3),
        rng.uniform(0, 2 * np.pi),
    )
    mask = _shape_mask(look.shape, u, v)
    jitter = rng.normal(0.0, 0.03)
    primary = _rgb(look.hue + jitter, rng.uniform(0.55, 0.95), rng.uniform(0.55, 0.95))
    secondary = _rgb(look.hue2 + jitter, rng.uniform(0.4, 0.9), rng.uniform(0.35, 0.9))
    frequency = look.frequency * rng.uniform(0.85, 1.15)
    pattern = _texture(look.texture, u, v, frequency, look.angle, rng.uniform(0, 2 * np.pi))[mask][:, None]
    image[mask] = primary * (1.0 - pattern) + secondary * pattern


def _render_image(canvas: _Canvas, look: _Look, rng: np.random.Generator) -> np.ndarray:
    """One product photo of a category: main object on a cluttered, noisy background."""
    # Background: a light, weakly coloured gradient (its hue says nothing about the class).
    bg_top = _rgb(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.75, 1.0))
    bg_bottom = _rgb(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.6, 0.95))
    t = ((canvas.y + 1.0) / 2.0)[..., None]
    image = bg_top * (1.0 - t) + bg_bottom * t
    # Clutter: small shapes of any family and colour.
    for _ in range(int(rng.integers(2, 7))):
        u, v = canvas.frame(
            rng.uniform(-0.9, 0.9),
            rng.uniform(-0.9, 0.9),
            rng.uniform(0.07, 0.22),
            1.0,
            rng.uniform(0, np.pi),
        )
        mask = _shape_mask(int(rng.integers(_N_SHAPES)), u, v)
        image[mask] = _rgb(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.95))
    # Sometimes a smaller object of another category's look, as in a bundle photo.
    if rng.random() < 0.3:
        other = _LOOKS[_CODES[int(rng.integers(len(_CODES)))]]
        _draw_object(canvas, image, other, rng, scale=rng.uniform(0.15, 0.28), spread=0.7)
    # The product itself, possibly cut by the frame.
    _draw_object(canvas, image, look, rng, scale=rng.uniform(0.35, 0.65), spread=0.35)
    # Lighting and sensor noise.
    noise = rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(4.0, 12.0)
    image = image * rng.uniform(0.8, 1.1) + noise
    return np.clip(image, 0, 255).astype(np.uint8)


def _encode_jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


# --------------------------------------------------------------------------- text

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _pick(rng: np.random.Generator, items: Sequence[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _fill(template: str, rng: np.random.Generator, vocab: _Vocabulary) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "n":
            return str(int(rng.integers(2, 13)))
        if name == "nn":
            return str(int(rng.integers(12, 400)))
        if name == "cm":
            return str(int(rng.integers(5, 200)))
        if name == "dim":
            return f"{int(rng.integers(20, 250))}x{int(rng.integers(20, 250))} cm"
        if name == "year":
            return str(int(rng.integers(1890, 2000)))
        if name == "y4":
            return str(int(rng.integers(2015, 2021)))
        if name == "y2":
            return str(int(rng.integers(10, 21)))
        if name == "date":
            return f"{int(rng.integers(1, 29)):02d}/{int(rng.integers(1, 13)):02d}/{int(rng.integers(1880, 2015))}"
        if name == "color":
            return _pick(rng, _COLOURS)
        if name == "material":
            return _pick(rng, _MATERIALS)
        return _PLACEHOLDER.sub("", _pick(rng, vocab.words)).strip().lower()  # {w}

    return _PLACEHOLDER.sub(value, template)


def _typo(word: str, rng: np.random.Generator) -> str:
    """Drop one letter or swap two neighbours, as hurried sellers do."""
    if len(word) < 4 or not word.isalpha():
        return word
    i = int(rng.integers(1, len(word) - 1))
    if rng.random() < 0.5:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _add_typos(text: str, rng: np.random.Generator) -> str:
    words = text.split(" ")
    return " ".join(_typo(w, rng) if rng.random() < P_TYPO_PER_WORD else w for w in words)


def _title_case(text: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))


def _designation(rng: np.random.Generator, vocab: _Vocabulary) -> str:
    parts: list[str] = []
    if rng.random() < 0.4:
        parts.append(_pick(rng, vocab.brands))
    for _ in range(int(rng.integers(2, 6))):
        draw = rng.random()
        if draw < P_GENERIC_WORD:
            pool = _GENERIC_WORDS
        elif draw < P_GENERIC_WORD + P_BORROWED:
            pool = _VOCABULARY[_CODES[int(rng.integers(len(_CODES)))]].words
        else:
            pool = vocab.words
        parts.append(_fill(_pick(rng, pool), rng, vocab))
    if rng.random() < 0.3:
        parts.insert(int(rng.integers(1, len(parts) + 1)), "-")
    text = _add_typos(" ".join(parts), rng)
    if rng.random() < 0.25:
        text = text.lower().capitalize()
    return _title_case(text) if rng.random() < 0.5 else text


def _description(rng: np.random.Generator, vocab: _Vocabulary) -> str:
    sentences = []
    for _ in range(int(rng.integers(1, 6))):
        draw = rng.random()
        if draw < P_BORROWED:
            pool = _VOCABULARY[_CODES[int(rng.integers(len(_CODES)))]].phrases
        elif draw < 0.5:
            pool = _GENERIC_SENTENCES
        else:
            pool = vocab.phrases
        sentences.append(_add_typos(_fill(_pick(rng, pool), rng, vocab), rng))
    if rng.random() < P_HTML:
        style = int(rng.integers(4))
        if style == 0:
            text = "".join(f"<p>{s}</p>" for s in sentences)
        elif style == 1:
            text = "<br />".join(sentences)
        elif style == 2:
            text = "<ul>" + "".join(f"<li>{s}</li>" for s in sentences) + "</ul>"
        else:
            text = f"<strong>{sentences[0]}</strong><br/>" + " ".join(sentences[1:])
    else:
        text = " ".join(sentences)
    if rng.random() < P_ENTITIES:
        text = _escape_entities(text, double=rng.random() < 0.15)
    return text


def _escape_entities(text: str, *, double: bool) -> str:
    """Escape accents and apostrophes the way sellers' tools do (sometimes twice)."""
    text = text.replace("'", "&#39;")
    for char, entity in _ENTITIES.items():
        text = text.replace(char, entity)
    return text.replace("&", "&amp;") if double else text


# --------------------------------------------------------------------------- catalogue


def _quotas(n_products: int) -> dict[int, int]:
    """Products per category: at least one each, the rest by the square-root challenge mix."""
    codes = sorted(CATEGORIES)
    base = 1 if n_products >= len(codes) else 0
    weights = np.sqrt(np.array([_CHALLENGE_COUNTS[c] for c in codes], dtype=np.float64))
    share = weights / weights.sum() * (n_products - base * len(codes))
    counts = np.floor(share).astype(int)
    # Largest remainders get the products left over by the rounding down.
    for k in np.argsort(-(share - counts), kind="stable")[: n_products - base * len(codes) - counts.sum()]:
        counts[k] += 1
    return {code: base + int(count) for code, count in zip(codes, counts, strict=True)}


def _other_code(code: int, rng: np.random.Generator) -> int:
    """A wrong category for `code`: its confusable partner half of the time, else any other."""
    partners = [b if a == code else a for a, b in CONFUSABLE_PAIRS if code in (a, b)]
    if partners and rng.random() < 0.5:
        return partners[0]
    others = [c for c in sorted(CATEGORIES) if c != code]
    return others[int(rng.integers(len(others)))]


def generate_catalogue(
    out_dir: str | Path, *, n_products: int = 1500, seed: int = 0, image_size: int = 96
) -> Path:
    """Write a synthetic catalogue in the challenge layout.

    Writes `X_train_update.csv`, `Y_train_CVw08PX.csv`, `image_train/*.jpg`, `categories.csv`
    and `synthetic.json` (the parameters and the products whose label or image is wrong on
    purpose). Images of an earlier catalogue in the same folder are removed.

    Args:
        out_dir: Folder to write to (created if missing).
        n_products: Number of products (every category appears when it is at least 27).
        seed: Drives all the sampling; the same seed gives byte-identical files.
        image_size: Side of the square JPEG images, in pixels.

    Returns:
        The folder, ready for `load_challenge_folder` or `catalog.importer.import_folder`.
    """
    if n_products < 1:
        raise ValueError("n_products must be at least 1")
    if image_size < 16:
        raise ValueError("image_size must be at least 16")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    image_dir = out_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    labels = np.array([code for code, count in _quotas(n_products).items() for _ in range(count)])
    rng.shuffle(labels)
    product_ids = rng.choice(4_000_000_000, size=n_products, replace=False) + 100_000
    image_ids = rng.choice(1_300_000_000, size=n_products, replace=False) + 100_000_000

    canvas = _Canvas(image_size)
    x_rows: list[list[str]] = []
    y_rows: list[list[str]] = []
    written: set[str] = set()
    wrong_labels: list[dict[str, int]] = []
    wrong_images: list[dict[str, int]] = []
    modalities = {"text_and_image": 0, "text_only": 0, "image_only": 0}
    for i in range(n_products):
        code = int(labels[i])
        product_id, image_id = str(int(product_ids[i])), str(int(image_ids[i]))
        draw = rng.random()
        if draw < P_TEXT_ONLY:
            modality = "text_only"
        elif draw < P_TEXT_ONLY + P_IMAGE_ONLY:
            modality = "image_only"
        else:
            modality = "text_and_image"
        modalities[modality] += 1
        vocab = _VOCABULARY[code]
        designation = description = ""
        if modality != "image_only":
            designation = _designation(rng, vocab)
            if rng.random() >= P_EMPTY_DESCRIPTION:
                description = _description(rng, vocab)
        if modality != "text_only":
            look_code = code
            if rng.random() < P_WRONG_IMAGE:
                look_code = _other_code(code, rng)
                wrong_images.append(
                    {"productid": int(product_id), "prdtypecode": code, "image_of": look_code}
                )
            name = image_filename(image_id, product_id)
            (image_dir / name).write_bytes(_encode_jpeg(_render_image(canvas, _LOOKS[look_code], rng)))
            written.add(name)
        label = code
        if rng.random() < P_WRONG_LABEL:
            label = _other_code(code, rng)
            wrong_labels.append({"productid": int(product_id), "true": code, "written": label})
        x_rows.append([str(i), designation, description, product_id, image_id])
        y_rows.append([str(i), str(label)])

    for stale in image_dir.glob("image_*_product_*.jpg"):
        if stale.name not in written:
            stale.unlink()
    _write_csv(out_dir / X_FILE, ["", "designation", "description", "productid", "imageid"], x_rows)
    _write_csv(out_dir / Y_FILE, ["", "prdtypecode"], y_rows)
    _write_csv(
        out_dir / CATEGORIES_FILE, ["prdtypecode", "name"], [[str(c), n] for c, n in CATEGORIES.items()]
    )
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_products": n_products,
        "image_size": image_size,
        "modalities": modalities,
        "wrong_labels": wrong_labels,
        "wrong_images": wrong_images,
    }
    (out_dir / MANIFEST_FILE).write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    logger.info(
        "synthetic catalogue of %d products (seed %d) written to %s in %.1f s",
        n_products,
        seed,
        out_dir,
        time.perf_counter() - started,
    )
    return out_dir


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    # pandas' `to_csv` layout, as in the challenge files: minimal quoting, '\n' line ends.
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the catalogue to")
    parser.add_argument("--n", type=int, default=1500, help="number of products (default 1500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--image-size", type=int, default=96, help="image side in pixels (default 96)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = generate_catalogue(args.out, n_products=args.n, seed=args.seed, image_size=args.image_size)
    sys.stdout.write(f"{folder}\n")


if __name__ == "__main__":
    main()
