"""Folder datasets read what is really there (issue 15): every image decoded by
`xbench data check`, hidden and AppleDouble files skipped, 16-bit and float images scaled."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from tests.tasks.test_folder import write_images
from xbench import cli
from xbench.registry import load_task
from xbench.tasks import folder


def _broken_dataset(root):
    write_images(root, {"north": 3, "south": 3})
    apple = root / "north" / "apple"
    good = apple / "000.png"
    jpeg = apple / "truncated.jpg"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    (apple / "empty.png").write_bytes(b"")
    (apple / "text.png").write_text("not an image")
    os.symlink(apple / "gone.png", apple / "dangling.png")
    (apple / "._000.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    return good


def test_data_check_decodes_every_image_and_names_each_bad_file(tmp_path, capsys):
    root = tmp_path / "toy"
    _broken_dataset(root)
    code = cli.main(["data", "check", "folder", "--root", str(root)])
    out = capsys.readouterr().out
    assert code == 1
    for name, why in (("truncated.jpg", "unreadable"), ("empty.png", "empty file"),
                      ("text.png", "unreadable"), ("dangling.png", "dangling symbolic link")):
        line = next(line for line in out.splitlines() if name in line)
        assert why in line or line.startswith(why), line
    assert "._000.png" in out and "skipped" in out
    assert "UNREADABLE: 4 image(s)" in out


def test_data_check_applies_the_decompression_bomb_limit(tmp_path, capsys, monkeypatch):
    root = tmp_path / "toy"
    write_images(root, {"north": 2, "south": 2}, size=12)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 12 x 12 = 144 pixels is "too big"
    assert cli.main(["data", "check", "folder", "--root", str(root)]) == 1
    assert "too large to decode safely" in capsys.readouterr().out


def test_loader_skips_hidden_and_appledouble_files(tmp_path):
    root = tmp_path / "toy"
    write_images(root, {"north": 3, "south": 3})
    (root / "north" / "apple" / "._000.png").write_bytes(b"\x00\x05\x16\x07")
    (root / "north" / "apple" / ".hidden.png").write_bytes(b"junk")
    task = load_task("folder", root=str(root), resolution=8, cache_dir=str(tmp_path / "c"))
    data = task.build()
    assert sum(len(p.y) for p in data["north"].values()) == 9


def test_16_bit_png_and_float_tiff_are_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    png = tmp_path / "deep.png"
    Image.fromarray(ramp).save(png)
    assert Image.open(png).mode.startswith("I")
    x = folder.decode(str(png), 16).astype(float)
    assert (x == 255).mean() < 0.1 and x.mean() > 100 and x.mean() < 155
    tiff = tmp_path / "float.tiff"
    Image.fromarray((ramp / 65535.0).astype(np.float32), mode="F").save(tiff)
    y = folder.decode(str(tiff), 16).astype(float)
    assert y.max() > 200 and 100 < y.mean() < 155


def test_a_domain_too_small_to_split_names_the_domain(tmp_path):
    import pytest

    from xbench.errors import ConfigError

    root = tmp_path / "toy"
    write_images(root, {"north": 3, "south": 1}, classes={"apple": None})
    task = load_task("folder", root=str(root), resolution=8, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="domain 'north' has only 3 image"):
        task.build()
