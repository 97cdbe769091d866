"""Text cleaning and image decoding on the inputs sellers really send (all made in memory)."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from models.preprocessing import (
    IMAGE_SIZE,
    ImageDecodeError,
    clean_text,
    combine_text,
    decode_image,
    load_image,
    resize_image,
    title_of,
)

# --------------------------------------------------------------------------- text


def test_html_tags_are_removed_and_the_words_between_them_kept():
    text = "<p>Piscine <b>hors-sol</b></p><br/>Filtre<br />à sable<ul><li>Intex</li></ul>"
    assert clean_text(text) == "Piscine hors-sol Filtre à sable Intex"


def test_html_entities_are_unescaped():
    assert clean_text("L&#39;&eacute;t&eacute; &amp; la mer &#233;") == "L'été & la mer é"


def test_double_escaped_entities_are_unescaped():
    assert clean_text("&amp;eacute;t&amp;eacute; d&amp;#39;or") == "été d'or"


def test_escaped_tags_are_removed_like_tags():
    assert clean_text("&lt;p&gt;Neuf&lt;/p&gt;") == "Neuf"


@pytest.mark.parametrize("empty", [None, "", float("nan")], ids=["none", "empty", "pandas-nan"])
def test_missing_text_gives_an_empty_string(empty):
    assert clean_text(empty) == ""


@pytest.mark.parametrize(
    "text",
    [" \t\n\r ", "<p></p><br />", "&nbsp;&nbsp;", "\u200b\ufeff", "<div>\n</div>&#160;"],
    ids=["whitespace", "tags", "nbsp-entities", "zero-width", "mixed"],
)
def test_whitespace_and_html_only_text_gives_an_empty_string(text):
    assert clean_text(text) == ""


def test_whitespace_is_collapsed_and_case_kept():
    assert clean_text("  PISCINE\n\n Intex\t\tBleu  ") == "PISCINE Intex Bleu"


def test_emoji_are_kept():
    assert clean_text("Jouet 🎁 cadeau 🧸") == "Jouet 🎁 cadeau 🧸"


def test_unicode_compatibility_forms_are_normalised():
    assert clean_text("ﬁltre ＰＳ４") == "filtre PS4"


def test_control_characters_become_spaces():
    assert clean_text("Bâche\x00de\x07piscine") == "Bâche de piscine"


def test_a_100k_character_text_is_cleaned_completely_and_quickly():
    chunk = "<p>Pompe &eacute;lectrique   pour piscine</p>"
    text = chunk * (100_000 // len(chunk) + 1)
    started = time.perf_counter()
    cleaned = clean_text(text)
    assert time.perf_counter() - started < 5.0
    assert "<" not in cleaned and "&" not in cleaned
    assert cleaned.count("Pompe électrique pour piscine") == text.count("<p>")


def test_a_100k_character_text_of_unclosed_brackets_does_not_hang():
    started = time.perf_counter()
    assert clean_text("<" * 100_000) == "<" * 100_000
    assert time.perf_counter() - started < 5.0


@pytest.mark.parametrize(
    ("designation", "description", "expected"),
    [
        ("Titre", None, "titre"),
        (None, "<p>Description</p>", "description"),
        ("Titre &amp; co", "Description", "titre & co\tdescription"),
        ("BÂCHE ÉTÉ", "Über", "bâche été\tüber"),
        (None, None, ""),
        ("<br/>", "  ", ""),
        ("Titre\tà\ttabs", "ligne 1\nligne 2", "titre à tabs\tligne 1 ligne 2"),
    ],
)
def test_combine_text_joins_the_cleaned_lowercased_title_and_description(designation, description, expected):
    assert combine_text(designation, description) == expected


@pytest.mark.parametrize(
    ("designation", "description", "title"),
    [
        ("Titre", "Description", "titre"),
        ("Titre", None, "titre"),
        (None, "Description", "description"),
        ("Titre\tavec tab", "x", "titre avec tab"),
    ],
)
def test_title_of_recovers_the_title_of_a_combined_text(designation, description, title):
    assert title_of(combine_text(designation, description)) == title


# --------------------------------------------------------------------------- images


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _two_halves(width: int = 40, height: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    return image


def test_a_jpeg_decodes_to_an_rgb_uint8_array_of_its_size():
    pixels = decode_image(_encode(_two_halves(), "JPEG", quality=95))
    assert pixels.shape == (20, 40, 3)
    assert pixels.dtype == np.uint8
    assert pixels[10, 5, 0] > 200 and pixels[10, 35, 2] > 200


def test_a_png_with_alpha_is_composited_on_white():
    image = Image.new("RGBA", (10, 10), (255, 0, 0, 255))
    image.paste((0, 255, 0, 0), (0, 0, 5, 10))  # fully transparent left half
    pixels = decode_image(_encode(image, "PNG"))
    assert pixels.shape == (10, 10, 3)
    assert tuple(pixels[5, 1]) == (255, 255, 255)
    assert tuple(pixels[5, 8]) == (255, 0, 0)


def test_a_grayscale_image_gets_three_equal_channels():
    image = Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1)), mode="L")
    pixels = decode_image(_encode(image, "PNG"))
    assert pixels.shape == (8, 16, 3)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
    assert np.array_equal(pixels[0, :, 0], np.arange(0, 256, 16))


def test_a_16_bit_grayscale_png_is_rescaled_to_8_bits():
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    data = _encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    pixels = decode_image(data)
    assert pixels.shape == (64, 64, 3)
    assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255
    assert np.all(np.diff(pixels[..., 0].ravel().astype(int)) >= 0)  # the ramp stays a ramp


def test_a_cmyk_jpeg_is_converted_to_rgb():
    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    pixels = decode_image(_encode(cyan, "JPEG", quality=95))
    assert pixels.shape == (16, 16, 3)
    red, green, blue = (int(v) for v in pixels[8, 8])
    assert red < 30 and green > 225 and blue > 225


def test_a_palette_image_with_a_transparent_index_shows_white_there():
    image = Image.new("P", (10, 10), 1)
    image.putpalette([0, 0, 0, 0, 128, 0] + [0, 0, 0] * 254)
    image.paste(0, (0, 0, 5, 10))
    pixels = decode_image(_encode(image, "PNG", transparency=0))
    assert tuple(pixels[5, 1]) == (255, 255, 255)
    assert tuple(pixels[5, 8]) == (0, 128, 0)


def test_an_exif_rotated_jpeg_is_turned_upright():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    pixels = decode_image(_encode(_two_halves(40, 20), "JPEG", quality=95, exif=exif.tobytes()))
    assert pixels.shape == (40, 20, 3)  # width and height swapped
    assert pixels[5, 10, 0] > 200 and pixels[5, 10, 2] < 60  # the red left half is now on top
    assert pixels[35, 10, 2] > 200 and pixels[35, 10, 0] < 60


def test_a_gif_decodes_its_first_frame():
    pixels = decode_image(_encode(_two_halves().convert("P"), "GIF"))
    assert pixels.shape == (20, 40, 3)


def test_a_truncated_jpeg_is_refused():
    data = _encode(Image.effect_noise((64, 64), 64).convert("RGB"), "JPEG", quality=95)
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) // 2])


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", b"\xff\xd8\xff\xe0garbage"],
    ids=["empty", "text", "pdf", "jpeg-magic-then-garbage"],
)
def test_bytes_that_are_not_an_image_are_refused(data):
    with pytest.raises(ImageDecodeError):
        decode_image(data)


def test_an_image_over_max_pixels_is_refused_before_it_is_decoded():
    data = _encode(Image.new("L", (2000, 2000)), "PNG")  # 4 Mpx in a few kilobytes
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_image(data, max_pixels=1_000_000)
    assert decode_image(data, max_pixels=4_000_000).shape == (2000, 2000, 3)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("max_pixels", [40_000_000, 10**12], ids=["our-limit", "pillow-limit"])
def test_a_decompression_bomb_is_refused_without_allocating_it(max_pixels):
    with pytest.raises(ImageDecodeError):
        decode_image(_png_header_only(100_000, 100_000), max_pixels=max_pixels)


def test_load_image_gives_a_square_of_the_requested_size_whatever_the_input():
    data = _encode(_two_halves(300, 120), "JPEG")
    assert load_image(data).shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    small = load_image(data, size=32)
    assert small.shape == (32, 32, 3) and small.dtype == np.uint8
    assert small[16, 4, 0] > 200 and small[16, 28, 2] > 200  # left still red, right still blue


def test_resize_image_refuses_an_array_that_is_not_rgb():
    with pytest.raises(ImageDecodeError):
        resize_image(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ImageDecodeError):
        resize_image(np.zeros((10, 10, 4), dtype=np.uint8))


# --------------------------------------------------------------------------- bounded decoding


def png_16_bit_bomb(side: int = 6300) -> bytes:
    """A ~77 kB grayscale 16-bit PNG of `side` x `side` black pixels: 79 MB once decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + 2 * side)  # filter byte, then 2 bytes a pixel
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_small_png_declaring_a_huge_16_bit_image_is_refused_fast_by_the_decoded_byte_cap():
    data = png_16_bit_bomb()
    assert len(data) < 100_000 and 6300 * 6300 < 40_000_000  # under both older limits
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="once decoded"):
        decode_image(data, max_decoded_bytes=64 * 1024 * 1024)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("mode", "per_pixel"), [("L", 1), ("I;16", 2), ("RGB", 4), ("RGBA", 4), ("I", 4), ("F", 4)]
)
def test_the_decoded_byte_cap_counts_the_bytes_pil_allocates_for_the_mode(mode, per_pixel):
    data = _encode(Image.new(mode, (100, 50)), "TIFF")
    assert decode_image(data, max_decoded_bytes=100 * 50 * per_pixel).shape == (50, 100, 3)
    with pytest.raises(ImageDecodeError, match="once decoded"):
        decode_image(data, max_decoded_bytes=100 * 50 * per_pixel - 1)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_that_keeps_at_least_the_draft_pixels():
    data = _encode(_two_halves(2048, 2048), "JPEG", quality=90)
    pixels = decode_image(data, draft_pixels=250_000)
    assert pixels.shape == (512, 512, 3)  # 1/4 scale: 262,144 pixels, 1/8 would be too few
    assert pixels[256, 10, 0] > 200 and pixels[256, 500, 2] > 200
    assert decode_image(data, draft_pixels=4_000_000).shape == (2048, 2048, 3)


def test_the_byte_cap_applies_to_the_drafted_size_of_a_jpeg():
    data = _encode(_two_halves(2048, 2048), "JPEG", quality=90)
    assert decode_image(data, draft_pixels=250_000, max_decoded_bytes=512 * 512 * 4).shape == (512, 512, 3)


def test_ordinary_images_decode_identically_with_or_without_the_serving_limits():
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (500, 500, 3), dtype=np.uint8))
    deep = Image.fromarray(rng.integers(0, 65536, (300, 257), dtype=np.uint16))
    for data in (_encode(photo, "JPEG", quality=90), _encode(photo, "PNG"), _encode(deep, "PNG")):
        plain = decode_image(data)
        limited = decode_image(data, max_decoded_bytes=64 * 1024 * 1024, draft_pixels=4_000_000)
        assert np.array_equal(plain, limited)


def test_16_bit_images_are_rescaled_exactly_as_a_whole_image_float64_rescale_would():
    rng = np.random.default_rng(2)
    raw = rng.integers(100, 60000, (700, 33), dtype=np.uint16)  # more rows than one band
    pixels = decode_image(_encode(Image.fromarray(raw), "PNG"))
    arr = raw.astype(np.float64)
    expected = ((arr - arr.min()) / float(arr.max() - arr.min()) * 255).astype(np.uint8)
    assert np.array_equal(pixels[..., 0], expected)


@pytest.mark.parametrize(
    "data",
    [
        b"GIF89a" + b"\xff" * 40,
        b"II*\x00" + b"\x00" * 40,
        b"BM" + struct.pack("<IHHI", 100, 0, 0, 10) + b"\xff" * 40,
        b"\x00\x00\x01\x00" + b"\xff" * 40,  # ICO
    ],
    ids=["gif", "tiff", "bmp", "ico"],
)
def test_crafted_headers_are_refused_as_damaged_images(data):
    with pytest.raises(ImageDecodeError):
        decode_image(data)
