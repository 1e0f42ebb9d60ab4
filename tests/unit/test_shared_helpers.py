"""The helpers that exist once: device choice, precision, the per-rank slice, channel names, grids."""

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from PIL import Image

from medmem import precision
from medmem.devices import resolve_device
from medmem.errors import InputError
from medmem.images import TO_UINT8, grid, save_grid, to_uint8_rounded, to_uint8_truncated
from medmem.io import channel_names
from medmem.training.distributed import Context, local, rank_slice


def test_auto_is_cuda_only_where_there_is_one_and_cuda_without_one_is_an_input_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(InputError, match="no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda") == "cuda"


def test_precision_resolve_runs_float32_on_the_cpu_and_refuses_unknown_names():
    name, context = precision.resolve("bf16", "cpu")
    assert name == "float32" and isinstance(context, nullcontext)
    with pytest.raises(ValueError, match="unknown precision"):
        precision.resolve("fp16", "cpu")
    assert isinstance(precision.float32("meta"), nullcontext)  # no autocast on "meta" to switch off


def test_each_rank_keeps_its_own_consecutive_block():
    # 10 items over 3 ranks: ⌊10/3⌋ = 3 each, rows 0-2, 3-5, 6-8; row 9 belongs to none (as before the refactor)
    assert [rank_slice(10, Context(r, 3)) for r in range(3)] == [slice(0, 3), slice(3, 6), slice(6, 9)]
    x = torch.arange(8)
    assert torch.cat([local(x, Context(r, 4)) for r in range(4)]).tolist() == list(range(8))
    assert local(x, Context(1, 2)).tolist() == [4, 5, 6, 7]


def test_channel_names_take_the_first_list_of_the_right_length(caplog):
    assert channel_names(3, None, [], ["a", "b"], ("t1", "t2", "seg"), ["x", "y", "z"]) == ["t1", "t2", "seg"]
    assert "2 channel names" in caplog.text  # the list of the wrong length is reported, not used
    assert channel_names(2) == ["0", "1"]
    assert channel_names(2, [1, 2]) == ["1", "2"]


def test_the_two_conversions_differ_as_their_codebases_do():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.004, 0.5, 1.0])
    # by hand: (x + 1) · 127.5 = 0, 63.75, 127.5, 128.01, 191.25, 255
    assert to_uint8_truncated(x).tolist() == [0, 63, 127, 128, 191, 255]
    assert to_uint8_rounded(x).tolist() == [0, 64, 128, 128, 191, 255]
    assert TO_UINT8 == {"stylegan2": to_uint8_rounded, "diffusion": to_uint8_truncated}


def test_the_grid_is_row_major_and_one_png_per_channel(tmp_path):
    images = np.arange(5 * 2 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2, 2)  # 5 images → 3 columns, 2 rows
    g = grid(images, 1)
    assert g.shape == (4, 6)
    np.testing.assert_array_equal(g[0:2, 2:4], images[1, 1])
    np.testing.assert_array_equal(g[2:4, 2:4], images[4, 1])
    assert not g[2:4, 4:6].any()  # the sixth cell stays black
    paths = save_grid(images, tmp_path / "out", "s", ["t1", "seg"])
    assert [p.name for p in paths] == ["s_t1.png", "s_seg.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(paths[1])), g)
    assert [p.name for p in save_grid(images, tmp_path, "u", ["only one"])] == ["u_0.png", "u_1.png"]
