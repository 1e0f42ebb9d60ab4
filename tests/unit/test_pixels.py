from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

from medmem.data.pixels import matlab_uint8, pad_or_crop


def test_matlab_uint8_rounds_half_away_from_zero_and_saturates():
    x = np.array([0.5, 1.5, 2.5, 3.5, 2.4999999, -0.5, -2.5, 254.5, 255.5, 256.0, -1.0, np.nan, 1e9])
    assert matlab_uint8(x).tolist() == [1, 2, 3, 4, 2, 0, 0, 255, 255, 255, 0, 0, 255]
    assert np.round(2.5) == 2  # numpy rounds half to even: the reason for matlab_uint8


@pytest.mark.parametrize("peak", [255, 256, 510, 1000, 3071, 32767])
def test_scaled_intensities_match_decimal_half_up_for_every_value(peak):
    values = np.arange(peak + 1, dtype=np.float64)
    scaled = values / peak * 255  # the study's order of operations, float64
    expected = [int(Decimal(float(v)).quantize(Decimal(1), rounding=ROUND_HALF_UP)) for v in scaled]
    assert matlab_uint8(scaled).tolist() == expected


def test_pad_240_to_256_puts_8_pixels_on_every_side():
    image = np.ones((240, 240))
    out = pad_or_crop(image, 256)
    assert out.shape == (256, 256)
    assert out[8:248, 8:248].all() and out.sum() == 240 * 240
    assert not out[:8].any() and not out[248:].any() and not out[:, :8].any() and not out[:, 248:].any()


def test_odd_differences_put_the_extra_pixel_after_and_crops_are_centred():
    image = np.arange(7 * 10).reshape(7, 10)
    out = pad_or_crop(image, 8)  # rows: pad 0 before, 1 after; columns: crop 1 before, 1 after
    assert out.shape == (8, 8)
    np.testing.assert_array_equal(out[:7], image[:, 1:9])
    assert not out[7].any()


def test_pad_or_crop_applies_to_the_first_two_axes_of_a_volume():
    volume = np.ones((240, 240, 3))
    assert pad_or_crop(volume, 256).shape == (256, 256, 3)
