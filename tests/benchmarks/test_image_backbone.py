"""The image-backbone benchmark's own logic (the measurement itself needs the real photos)."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.image_backbone import main, parse_run


def test_a_run_names_a_variant_and_a_size_or_takes_the_native_one() -> None:
    assert parse_run("lite0@280") == ("lite0", 280)
    assert parse_run("lite2") == ("lite2", 260)
    with pytest.raises(argparse.ArgumentTypeError, match="unknown variant"):
        parse_run("lite9@224")


def test_it_skips_with_a_message_when_the_real_data_is_absent(tmp_path, capsys) -> None:
    assert main(["--data", str(tmp_path / "absent"), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "skipped: the real data folder" in capsys.readouterr().out
    assert not (tmp_path / "cache").exists()
