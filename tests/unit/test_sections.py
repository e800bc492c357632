"""calib.sections: IRAF 1-based inclusive sections map to the right NumPy slices."""

from __future__ import annotations

import numpy as np
import pytest

from calib.sections import Section


def test_parse_and_slices() -> None:
    sec = Section.parse("[4657:4720, 19:3540]")
    assert (sec.x1, sec.x2, sec.y1, sec.y2) == (4657, 4720, 19, 3540)
    assert sec.iraf == "[4657:4720,19:3540]"
    assert sec.shape == (3522, 64)
    image = np.zeros((3540, 4720))
    assert image[sec.slices].shape == sec.shape
    assert sec.fits_in(image.shape)
    assert not Section.parse("[1:4721,1:10]").fits_in(image.shape)


def test_corner_pixel_mapping() -> None:
    image = np.arange(12).reshape(3, 4)  # rows y, columns x
    assert image[Section.parse("[4:4,1:1]").slices].item() == 3  # x=4 (last column), y=1 (first row)
    assert image[Section.parse("[1:1,3:3]").slices].item() == 8


@pytest.mark.parametrize("text", ["", "[1:2]", "[0:5,1:2]", "[5:1,1:2]", "1:2,3:4", "[a:b,c:d]"])
def test_bad_sections_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="section"):
        Section.parse(text)
