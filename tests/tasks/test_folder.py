"""Datasets from disk: tiny folders written by the tests (nothing is downloaded)."""

from __future__ import annotations

import bz2
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xbench import cli
from xbench.errors import ConfigError
from xbench.registry import load_task
from xbench.tasks import folder
from xbench.tasks.catalog import PRESETS

#: Class colours of the toy dataset: a model can learn colour -> class.
COLOURS = {"apple": (220, 30, 30), "leaf": (30, 200, 40), "sky": (40, 60, 230)}


def write_images(root: Path, domains: dict[str, int], classes=COLOURS, size=12, seed=0,
                 ext=".png") -> None:
    """``root/<domain>/<class>/<i>.png``: noisy squares of the class colour, ``n`` per class."""
    rng = np.random.default_rng(seed)
    for d, (domain, n) in enumerate(domains.items()):
        for name in classes:
            folder_ = root / domain / name
            folder_.mkdir(parents=True, exist_ok=True)
            colour = np.array(COLOURS.get(name, (128, 128, 128)))
            for i in range(n):
                pixels = colour + rng.normal(0, 20 + 15 * d, (size, size, 3))
                image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
                image.save(folder_ / f"{i:03d}{ext}")


@pytest.fixture()
def toy(tmp_path: Path) -> Path:
    root = tmp_path / "toy"
    write_images(root, {"north": 10, "south": 10})
    return root


def test_folder_discovers_domains_and_classes_and_builds_uint8(toy, tmp_path):
    task = load_task("folder", root=str(toy), resolution=8, cache_dir=str(tmp_path / "c"))
    assert task.domains == ("north", "south") and task.default_target == ("south",)
    assert task.classes == ("apple", "leaf", "sky") and task.num_classes == 3
    data = task.build()
    for domain in task.domains:
        parts = data[domain]
        assert sum(len(p.y) for p in parts.values()) == 30
        assert [len(parts[s].y) for s in ("train", "val", "test")] == [21, 3, 6]
        for part in parts.values():
            assert part.x.dtype == torch.uint8 and part.x.shape[1:] == (3, 8, 8)
        # the decoded pixels keep each class's colour (red apples, green leaves, blue sky)
        x, y = parts["train"].x.float(), parts["train"].y
        for label, channel in enumerate((0, 1, 2)):
            means = x[y == label].mean(dim=(0, 2, 3))
            assert int(means.argmax()) == channel
    prepared = task.prepare(data["north"]["train"].x)  # ImageNet normalisation
    assert prepared.dtype == torch.float32 and prepared.min() < 0


def test_second_build_reads_the_cache_instead_of_decoding(toy, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_task("folder", root=str(toy), resolution=8, cache_dir=str(cache)).build()
    assert len(list(cache.glob("*.pt"))) == 2  # one file per domain

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(folder, "decode", no_decoding)
    second = load_task("folder", root=str(toy), resolution=8, cache_dir=str(cache)).build()
    for domain in first:
        for split in first[domain]:
            assert torch.equal(first[domain][split].x, second[domain][split].x)
            assert torch.equal(first[domain][split].y, second[domain][split].y)
    # another resolution or a changed file list is another key: decoded again
    with pytest.raises(AssertionError, match="decoded again"):
        load_task("folder", root=str(toy), resolution=6, cache_dir=str(cache)).build()
    (toy / "north" / "sky" / "000.png").unlink()
    with pytest.raises(AssertionError, match="decoded again"):
        load_task("folder", root=str(toy), resolution=8, cache_dir=str(cache),
                  domains=["north"]).build()


def test_same_seed_same_split_other_seed_other_split(toy, tmp_path):
    opts = dict(root=str(toy), resolution=8, cache_dir=str(tmp_path / "c"))
    a = load_task("folder", **opts).build()
    b = load_task("folder", **opts).build()
    c = load_task("folder", data_seed=1, **opts).build()
    assert torch.equal(a["north"]["test"].x, b["north"]["test"].x)
    assert not torch.equal(a["north"]["test"].x, c["north"]["test"].x)


def test_missing_root_domain_or_layout_is_one_clear_line(toy, tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as err:
        load_task("folder", root=str(tmp_path / "nowhere"))
    assert "\n" not in str(err.value) and "nowhere" in str(err.value)
    with pytest.raises(ConfigError, match="no domain 'east'"):
        load_task("folder", root=str(toy), domains=["east"])
    with pytest.raises(ConfigError, match=r"domain folder\(s\) art_painting, cartoon, photo, "
                                          r"sketch missing under '.*toy'"):
        load_task("pacs", root=str(toy))
    with pytest.raises(ConfigError, match="needs its data folder"):
        load_task("pacs").build()


def _fake_pacs(root: Path, skip_domain: str | None = None) -> None:
    info = PRESETS["pacs"]
    for domain in info.domains:
        if domain != skip_domain:
            write_images(root, {domain: 2}, classes={c: None for c in info.classes}, size=6,
                         ext=".jpg")


def test_presets_know_their_real_domains_and_classes(tmp_path):
    expected = {"pacs": ("art_painting", "cartoon", "photo", "sketch"),
                "vlcs": ("Caltech101", "LabelMe", "SUN09", "VOC2007"),
                "officehome": ("Art", "Clipart", "Product", "Real World"),
                "terraincognita": ("location_100", "location_38", "location_43",
                                   "location_46"),
                "domainnet": ("clipart", "infograph", "painting", "quickdraw", "real",
                              "sketch"),
                "office31": ("amazon", "dslr", "webcam")}
    classes = {"pacs": 7, "vlcs": 5, "officehome": 65, "terraincognita": 10, "domainnet": 345,
               "office31": 31}
    for name, domains in expected.items():
        task = load_task(name)  # no root needed to list it
        assert task.domains == domains and task.num_classes == classes[name], name
    _fake_pacs(tmp_path / "PACS")
    task = load_task("pacs", root=str(tmp_path / "PACS"), resolution=8,
                     cache_dir=str(tmp_path / "c"))
    assert task.default_target == ("sketch",)
    data = task.build()
    assert sum(len(p.y) for p in data["sketch"].values()) == 14
    labels = torch.cat([p.y for p in data["photo"].values()])
    assert sorted(labels.tolist()) == sorted(list(range(7)) * 2)


def test_office31_reads_its_inner_images_folder(tmp_path):
    root = tmp_path / "office31"
    classes = {c: None for c in PRESETS["office31"].classes}
    for domain in ("amazon", "dslr", "webcam"):  # <domain>/images/<class>/<image>
        write_images(root / domain, {"images": 1}, classes=classes, size=6, ext=".jpg")
    task = load_task("office31", root=str(root), resolution=8, cache_dir=str(tmp_path / "c"),
                     domains=["amazon", "webcam"])
    data = task.build()
    assert sum(len(p.y) for p in data["amazon"].values()) == 31


def _suite(tmp_path: Path, toy: Path) -> Path:
    suite, cache = tmp_path / "disk.toml", tmp_path / "c"
    suite.write_text(f"""
name = "disk"
seeds = [0]
methods = ["erm"]
[budget]
steps = 30
batch_size = 8
eval_every = 15
[[tasks]]
name = "folder"
target = "south"
options = {{ root = "{toy.as_posix()}", resolution = 16, cache_dir = "{cache.as_posix()}" }}
""")
    return suite


def test_folder_dataset_runs_end_to_end_from_a_suite_file(toy, tmp_path, capsys):
    out = tmp_path / "runs"
    code = cli.main(["run", str(_suite(tmp_path, toy)), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["status"] == "ok"
    assert records[0]["task"] == "folder" and records[0]["target"] == ["south"]
    assert 0 <= records[0]["metrics"]["acc_target"] <= 1
    assert "folder" in capsys.readouterr().out  # the leaderboard table


def test_data_check_reports_a_missing_domain(tmp_path, capsys):
    _fake_pacs(tmp_path / "PACS", skip_domain="cartoon")
    code = cli.main(["data", "check", "pacs", "--root", str(tmp_path / "PACS")])
    out = capsys.readouterr().out
    assert code == 1
    assert "missing: domain 'cartoon'" in out and str(tmp_path / "PACS" / "cartoon") in out
    assert "MISSING" in out
    # per-domain and per-class counts of what is there
    assert "photo" in out and "elephant" in out


def test_data_check_passes_on_a_complete_layout_and_counts(tmp_path, capsys):
    _fake_pacs(tmp_path / "PACS")
    code = cli.main(["data", "check", "pacs", "--root", str(tmp_path / "PACS")])
    out = capsys.readouterr().out
    assert code == 0 and "OK" in out
    domains = PRESETS["pacs"].domains
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.split() and line.split()[0] in domains}
    assert {d: rows[d][:2] for d in domains} == {d: ["7", "14"] for d in domains}


def test_data_check_names_missing_root_and_class_folders(tmp_path, capsys):
    assert cli.main(["data", "check", "vlcs", "--root", str(tmp_path / "none")]) == 1
    assert f"missing: data folder {tmp_path / 'none'}" in capsys.readouterr().out
    _fake_pacs(tmp_path / "PACS")
    for f in (tmp_path / "PACS" / "sketch" / "horse").iterdir():
        f.unlink()
    (tmp_path / "PACS" / "sketch" / "horse").rmdir()
    assert cli.main(["data", "check", "pacs", "--root", str(tmp_path / "PACS")]) == 1
    assert "class folder" in capsys.readouterr().out


def test_data_info_says_where_a_dataset_is_published(capsys):
    assert cli.main(["data", "info", "pacs"]) == 0
    out = capsys.readouterr().out
    assert "domaingeneralization.github.io" in out and "sketch" in out
    assert cli.main(["data", "info", "folder"]) == 0
    assert "<domain>/<class>/<image>" in capsys.readouterr().out
    assert cli.main(["data", "info", "pacz"]) == 2
    assert "Did you mean: pacs" in capsys.readouterr().err


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format of the MNIST files: magic (dtype, ndim), big-endian sizes, raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _fake_mnist_usps(root: Path, n: int = 20) -> None:
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        _write_idx(root / "MNIST/raw" / f"{prefix}-images-idx3-ubyte",
                   rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / "MNIST/raw" / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    for name in ("usps.bz2", "usps.t.bz2"):  # LIBSVM lines: label (1-10), then i:value in [-1,1]
        lines = [f"{i % 10 + 1} " + " ".join(f"{j + 1}:{v:.3f}" for j, v in
                                              enumerate(rng.uniform(-1, 1, 256)))
                 for i in range(n)]
        (root / name).write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))


def test_mnist_usps_through_torchvision_readers_and_svhn_missing(tmp_path, capsys):
    _fake_mnist_usps(tmp_path)
    task = load_task("digits_mnist_usps_svhn", root=str(tmp_path), domains=["mnist", "usps"])
    data = task.build()
    for domain in ("mnist", "usps"):
        assert [len(data[domain][s].y) for s in ("train", "val", "test")] == [18, 2, 20]
        assert data[domain]["train"].x.shape[1:] == (3, 32, 32)
        assert data[domain]["train"].x.dtype == torch.uint8
        assert sorted(data[domain]["test"].y.tolist()) == sorted(list(range(10)) * 2)
    with pytest.raises(ConfigError, match="cannot read svhn .*train_32x32.mat"):
        load_task("digits_mnist_usps_svhn", root=str(tmp_path)).build()
    assert cli.main(["data", "check", "digits_mnist_usps_svhn", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "missing: svhn: file" in out and "missing: mnist" not in out


def test_task_asks_for_a_resnet_with_local_weights(tmp_path, toy):
    import torchvision

    from xbench import networks

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}},
               path)
    task = load_task("folder", root=str(toy), arch="resnet18", weights=str(path))
    info = task.info(("south",), "dg", task.budget)
    assert info.backbone == {"arch": "resnet18", "weights": str(path)}
    net = networks.featurizer(info.input_shape, **info.backbone)
    assert net.n_outputs == 512
    assert torch.equal(net[0].conv1.weight, reference.conv1.weight)
    with pytest.raises(ConfigError, match="does not fit"):
        networks.featurizer((3, 224, 224), arch="resnet50", weights=str(path))
    with pytest.raises(ConfigError, match="only resnet18 and resnet50"):
        networks.featurizer((3, 32, 32), arch="cnn", weights=str(path))
    with pytest.raises(ConfigError, match="weights file .* does not exist"):
        load_task("folder", root=str(toy), weights=str(tmp_path / "none.pth"))


def test_data_check_on_a_generic_folder_wants_every_class_in_every_domain(toy, capsys):
    assert cli.main(["data", "check", "folder", "--root", str(toy)]) == 0
    assert "OK" in capsys.readouterr().out
    for f in (toy / "south" / "leaf").iterdir():
        f.unlink()
    (toy / "south" / "leaf").rmdir()
    assert cli.main(["data", "check", "folder", "--root", str(toy)]) == 1
    assert f"missing: domain 'south': class folder {toy / 'south' / 'leaf'}" in \
        capsys.readouterr().out


def test_job_id_ignores_where_the_data_lives_but_not_what_it_is(toy, tmp_path):
    import shutil

    from xbench.harness.plan import build_plan
    from xbench.harness.suite import load_suite

    moved = tmp_path / "elsewhere" / "toy"
    shutil.copytree(toy, moved)
    here = build_plan(load_suite(str(_suite(tmp_path, toy)))).jobs[0]
    there_dir = tmp_path / "there"
    there_dir.mkdir()
    there = build_plan(load_suite(str(_suite(there_dir, moved)))).jobs[0]
    assert here.task_options["root"] != there.task_options["root"]  # kept for provenance
    assert here.job_id == there.job_id  # one experiment, one id, on every machine
    other = _suite(tmp_path, toy)
    other.write_text(other.read_text().replace("resolution = 16", "resolution = 12"))
    assert build_plan(load_suite(str(other))).jobs[0].job_id != here.job_id


def _touch_back(root: Path, seconds: float = 3600) -> None:
    """Date every file under ``root`` an hour back (out of the racy window of the cache)."""
    import os
    import time

    past = time.time() - seconds
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (past, past))


def test_folder_identity_is_its_content_not_its_path(toy, tmp_path):
    """Moved data keeps its id and record identity; one file's bytes changed under the same
    path gives a new id; the comparability key tells the two datasets apart."""
    import shutil

    from xbench.analysis.records import comparability_key
    from xbench.harness.plan import build_plan
    from xbench.harness.runner import task_identity
    from xbench.harness.suite import load_suite

    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(toy, moved)
    (tmp_path / "there").mkdir()
    here = build_plan(load_suite(str(_suite(tmp_path, toy)))).jobs[0]
    there = build_plan(load_suite(str(_suite(tmp_path / "there", moved)))).jobs[0]
    assert here.data_fingerprint and here.data_fingerprint == there.data_fingerprint
    assert here.job_id == there.job_id
    assert task_identity(here) == task_identity(there)
    assert str(toy) not in json.dumps(task_identity(here))  # never the path

    image = moved / "south" / "sky" / "000.png"
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(image)
    changed = build_plan(load_suite(str(_suite(tmp_path / "there", moved)))).jobs[0]
    assert changed.data_fingerprint != here.data_fingerprint
    assert changed.job_id != here.job_id
    assert changed.task_options == there.task_options  # same options, other data
    a = {"task": "folder", "task_version": "1", "task_identity": task_identity(here)}
    b = {**a, "task_identity": task_identity(changed)}
    assert comparability_key(a) != comparability_key(b)
    assert comparability_key(a) == comparability_key(
        {**a, "task_identity": task_identity(there)})


def test_fingerprint_sees_added_removed_renamed_and_resized_files(toy, tmp_path):
    cache = tmp_path / "c"

    def fp() -> str:
        return load_task("folder", root=str(toy), resolution=8, cache_dir=str(cache)).fingerprint()

    first = fp()
    assert fp() == first
    (toy / "north" / "sky" / "000.png").rename(toy / "north" / "sky" / "zzz.png")
    renamed = fp()
    assert renamed != first
    extra = toy / "north" / "sky" / "extra.png"
    extra.write_bytes((toy / "north" / "sky" / "001.png").read_bytes())
    assert fp() not in (first, renamed)
    extra.unlink()
    assert fp() == renamed
    (toy / "notes.txt").write_text("not an image: not read, not part of the content")
    assert fp() == renamed


def test_fingerprint_digests_are_cached_but_never_hide_a_recent_edit(toy, tmp_path,
                                                                     monkeypatch):
    cache = tmp_path / "c"
    _touch_back(toy)
    task = load_task("folder", root=str(toy), resolution=8, cache_dir=str(cache))
    first = task.fingerprint()
    hashed = []
    real = folder.file_digest
    monkeypatch.setattr(folder, "file_digest", lambda p, n: hashed.append(p) or real(p, n))
    assert task.fingerprint() == first and hashed == []  # stat only: nothing re-read
    # Same size, rewritten within the timestamp granularity: the digest is recomputed.
    image = toy / "south" / "leaf" / "003.png"
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF
    image.write_bytes(bytes(data))
    assert task.fingerprint() != first
    assert hashed == [str(image)]


def test_big_files_are_fingerprinted_by_a_deterministic_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(folder, "FULL_HASH_BYTES", 1000)
    monkeypatch.setattr(folder, "SAMPLE_BYTES", 100)
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(range(256)) * 20)
    first = folder.file_digest(str(path), 5120)
    assert folder.file_digest(str(path), 5120) == first
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # the tail is sampled
    path.write_bytes(bytes(data))
    assert folder.file_digest(str(path), 5120) != first


def test_rerun_into_the_same_out_runs_again_when_the_data_changed(toy, tmp_path, capsys):
    """Different data under the same root is not 'already finished'."""
    suite = _suite(tmp_path, toy)
    suite.write_text(suite.read_text().replace("steps = 30", "steps = 4")
                     .replace("eval_every = 15", "eval_every = 4"))
    out = tmp_path / "runs"

    def run() -> list[dict]:
        assert cli.main(["run", str(suite), "--out", str(out), "--quiet"]) == 0, \
            capsys.readouterr().err
        return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]

    first = run()
    assert len(run()) == 1  # unchanged: skipped as finished
    write_images(toy, {"north": 10, "south": 10}, seed=7)  # other images, same names
    records = run()
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    assert records[0]["job_id"] != records[1]["job_id"]
    assert records[0]["task_options"]["root"] == records[1]["task_options"]["root"]
    assert records[0] == first[0]
    assert records[0]["task_identity"]["data_fingerprint"] != \
        records[1]["task_identity"]["data_fingerprint"]
    from xbench.analysis.records import comparability_key
    assert comparability_key(records[0]) != comparability_key(records[1])


def test_an_edit_that_keeps_size_and_mtime_is_seen_while_the_mtime_is_recent(toy, tmp_path):
    """A file rewritten within the file system's timestamp granularity keeps its mtime: a
    digest computed that recently is not trusted (git's "racy" rule)."""
    import os

    task = load_task("folder", root=str(toy), resolution=8, cache_dir=str(tmp_path / "c"))
    first = task.fingerprint()
    image = toy / "north" / "apple" / "002.png"
    before = os.stat(image)
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF
    image.write_bytes(bytes(data))
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))  # as if the clock had not moved
    assert os.stat(image).st_size == before.st_size
    assert task.fingerprint() != first


def test_digits_from_disk_identity_is_the_content_of_the_files_it_reads(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("XBENCH_CACHE", str(tmp_path / "cache"))
    _fake_mnist_usps(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    opts = dict(domains=["mnist", "usps"])
    a = load_task("digits_mnist_usps_svhn", root=str(tmp_path / "a"), **opts).fingerprint()
    b = load_task("digits_mnist_usps_svhn", root=str(tmp_path / "b"), **opts).fingerprint()
    assert a is not None and a == b
    (tmp_path / "b" / "unrelated.txt").write_text("not read by the task")
    assert load_task("digits_mnist_usps_svhn", root=str(tmp_path / "b"), **opts).fingerprint() == a
    (tmp_path / "b" / "usps.t.bz2").write_bytes(b"other")
    assert load_task("digits_mnist_usps_svhn", root=str(tmp_path / "b"), **opts).fingerprint() != a
    assert load_task("digits_mnist_usps_svhn").fingerprint() is None  # no root: nothing to read
