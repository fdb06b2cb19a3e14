"""What a user's file means: sensor bit depths in 16-bit files, and EXIF turns on one file of a pair only."""
import io

import numpy as np
import pytest
from PIL import Image

from shared.errors import InputError
from shared.imaging.images import check_orientation, load_image, sensor_top


def png16(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def test_sensor_data_in_16_bit_files_is_scaled_by_its_real_range():
    ramp = np.linspace(0, 4095, 64 * 64).reshape(64, 64)  # a 12-bit camera's full range
    img = load_image(png16(ramp), "twelve.png")
    assert img.max() == 255 and abs(int(img[32, 32, 0]) - 128) <= 2  # not divided by 257 into near-black
    assert load_image(png16(ramp * 16), "sixteen.png").max() == 255  # real 16-bit data: 65535 is white
    assert [sensor_top(np.array([v])) for v in (200, 1000, 4000, 16000, 60000)] == [255, 1023, 4095, 16383, 65535]


def test_an_exif_turn_on_one_file_of_a_pair_is_refused():
    def jpeg(orientation: int | None) -> bytes:
        exif = Image.Exif()
        if orientation:
            exif[0x0112] = orientation
        buf = io.BytesIO()
        Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(buf, format="JPEG", exif=exif)
        return buf.getvalue()

    check_orientation(jpeg(6), jpeg(6), "a.jpg", "a.mask.png")  # both turned alike: fine
    check_orientation(jpeg(None), jpeg(1), "a.jpg", "a.mask.png")  # none, or "as stored": alike
    with pytest.raises(InputError, match="a.mask.png: the image a.jpg has EXIF orientation 6 and the mask has 1"):
        check_orientation(jpeg(6), jpeg(None), "a.jpg", "a.mask.png")
