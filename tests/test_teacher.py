"""The training teacher: its file, its alignment with the augmented photo, its loss, its fit."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ttame.data.transforms import default_train_transform
from ttame.errors import TrainingError
from ttame.training.losses import UNKNOWN, distill_loss
from ttame.training.teacher import Teacher, TeacherItems, fit_grids, teacher_canvas


def test_teacher_file_round_trip(tmp_path):
    grids = torch.rand(3, 4, 4)
    Teacher(["a", "b", "c"], grids, torch.tensor([1, 2, 3]), "tiny").save(tmp_path / "t.st")
    back = Teacher.load(tmp_path / "t.st")
    assert back.keys == ["a", "b", "c"] and back.backbone == "tiny"
    assert torch.equal(back.grids, grids) and back.classes.tolist() == [1, 2, 3]


def test_unreadable_teacher_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.st").write_bytes(b"not a teacher")
    with pytest.raises(TrainingError, match="teacher file"):
        Teacher.load(tmp_path / "bad.st")


def test_canvas_places_the_grid_over_the_centre_crop():
    canvas = teacher_canvas(torch.ones(2, 2), (10, 14), 6)
    inside = canvas != UNKNOWN
    rows, cols = inside.nonzero(as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 7, 4, 9)


def test_items_move_the_teacher_with_the_image():
    # A photo whose left half is white: the teacher marks the same half, so after any crop and
    # flip the teacher's high cells must sit on the image's bright pixels.
    picture = Image.new("RGB", (40, 32))
    picture.paste((255, 255, 255), (0, 0, 20, 32))
    grid = torch.zeros(4, 4)
    grid[:, :2] = 1.0
    teacher = Teacher(["p"], grid[None], torch.tensor([5]), "tiny")
    items = TeacherItems(
        [picture, picture], default_train_transform(24, 32), teacher, ["p"], 24, 32
    )
    flips = set()
    for epoch in range(8):
        image, maps, cls = items[(epoch, 0)]
        known = maps != UNKNOWN
        assert image.shape == (3, 24, 24) and cls.item() == 5
        bright = image[0] > 0.5
        high = (maps > 0.5) & known
        assert (bright[high]).float().mean() > 0.9
        flips.add(bool(bright[:, 0].all()))
    assert flips == {True, False}  # both orientations were drawn
    image, maps, cls = items[(0, 1)]  # an item the teacher does not know
    assert (maps == UNKNOWN).all() and cls.item() == -1


def test_distill_loss_is_lowest_for_the_teacher_ranking():
    teacher = torch.zeros(1, 8, 8)
    teacher[0, :4] = 1.0
    labels = torch.tensor([3])
    same = distill_loss(teacher * 5, teacher, torch.tensor([3]), labels)
    flipped = distill_loss((1 - teacher) * 5, teacher, torch.tensor([3]), labels)
    assert same < flipped
    assert distill_loss(teacher, teacher, torch.tensor([4]), labels) == 0  # other class: ignored
    unknown = torch.full((1, 8, 8), UNKNOWN)
    assert distill_loss(teacher, unknown, torch.tensor([3]), labels) == 0


def test_distill_loss_sends_gradient_to_the_map():
    maps = torch.randn(2, 6, 6, requires_grad=True)
    teacher = torch.rand(2, 6, 6)
    distill_loss(maps, teacher, torch.tensor([0, 1]), torch.tensor([0, 1])).backward()
    assert maps.grad is not None and maps.grad.abs().sum() > 0


def test_fit_grids_never_worse_than_its_start():
    # A "classifier" that sees only the top-left quadrant: the fitted grid must keep it.
    torch.manual_seed(0)

    def classify(images: torch.Tensor) -> torch.Tensor:
        evidence = images[:, 0, :8, :8].mean((-2, -1)) * 20
        return torch.stack([evidence, torch.zeros_like(evidence)], 1)

    images = torch.ones(2, 3, 16, 16)
    start = torch.rand(2, 16, 16)
    start[:, :8, :8] = 0  # Grad-CAM looking elsewhere

    def loss(grids: torch.Tensor) -> torch.Tensor:
        from ttame.training.step import kept_image

        kept = kept_image(grids, images.shape[-2:], [0.25])
        return torch.nn.functional.cross_entropy(
            classify(images * kept[:, None]), torch.zeros(2, dtype=torch.long), reduction="none"
        )

    grids = fit_grids(
        classify,
        images,
        start,
        torch.zeros(2, dtype=torch.long),
        grid=4,
        shares=(0.25,),
        steps=30,
        lr=0.2,
    )
    begin = torch.nn.functional.adaptive_avg_pool2d(start[:, None], 4)[:, 0]
    assert grids.shape == (2, 4, 4)
    assert (loss(grids) <= loss(begin) + 1e-6).all()
    assert loss(grids).mean() < loss(begin).mean() - 0.1
