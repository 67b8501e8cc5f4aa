"""The handwritten-digit generator: determinism, balance, its pieces, and that it draws digits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xbench.tasks import handwriting
from xbench.tasks.digits import load_digits_images
from xbench.tasks.handwriting import handwritten_digits


def _draw(n: int, resolution: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return handwritten_digits(n, resolution, torch.Generator().manual_seed(seed))


def test_deterministic_balanced_and_in_range():
    x, y = _draw(300)
    again, _ = _draw(300)
    assert torch.equal(x, again)
    assert not torch.equal(x, _draw(300, seed=1)[0])
    assert x.shape == (300, 1, 16, 16) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(y.bincount(), torch.full((10,), 30))
    assert torch.equal(_draw(37)[1], torch.arange(37) % 10)
    # drawn CHUNK at a time: a longer draw starts with the shorter one's first chunk
    chunk = handwriting.CHUNK
    assert torch.equal(_draw(chunk + 10)[0][:chunk], _draw(chunk)[0])
    big, _ = _draw(20, resolution=40)
    assert big.shape == (20, 1, 40, 40)


def test_max_filter_and_field_basis_equal_the_torch_operations_they_replace():
    x = torch.rand(5, 1, 12, 12)
    for radius in (1, 2):
        expected = F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)
        assert torch.equal(handwriting._max_filter(x, radius), expected)
    cells = handwriting.ELASTIC_CELLS
    coarse = torch.randn(3, 2, cells, cells)
    expected = F.interpolate(coarse, size=(24, 24), mode="bicubic", align_corners=False)
    got = (coarse.view(6, -1) @ handwriting._field_basis(24)).view(3, 2, 24, 24)
    assert torch.allclose(got, expected, atol=1e-5)


def test_stroke_width_thins_and_thickens():
    mask = torch.zeros(3, 1, 16, 16)
    mask[:, :, 4:12, 6:10] = 1.0
    out = handwriting._stroke(mask, torch.tensor([-1.0, 0.0, 1.5]), unit=1)
    ink = out.sum(dim=(1, 2, 3))
    assert ink[0] < ink[1] == mask[0].sum() < ink[2]


def test_instances_vary_within_a_class():
    x, y = _draw(400)
    fours = x[y == 4].flatten(1)
    # pairwise distances among one digit's images are far from zero (no copies)
    distances = torch.cdist(fours, fours)[~torch.eye(len(fours), dtype=torch.bool)]
    assert float(distances.min()) > 0.5


def test_generated_digits_are_recognisable_as_real_handwritten_digits():
    """Class means of generated digits classify scikit-learn's real digits (resized to the
    same 16 pixels) far above chance (10%): the generator draws digits, not noise."""
    x, y = _draw(2000)
    centroids = torch.stack([x[y == d].flatten(1).mean(dim=0) for d in range(10)])
    real, labels = load_digits_images(16)
    predicted = torch.cdist(real.flatten(1), centroids).argmin(dim=1)
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy > 0.45, accuracy
