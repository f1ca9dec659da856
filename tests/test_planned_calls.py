"""conv2d's calls planned once (im2win.conv._CALLS) and im2win.nn.Conv2d's (packed.PackedCall):
the same output as the checked call, for arguments alike only, and bad input still refused."""

import pytest
import torch

import im2win
import im2win.conv as conv

F = torch.nn.functional


def _arguments(x_shape, w_shape, with_bias, stride, padding, memory_format):
    """conv2d's arguments, new random tensors: the filter a transposed view (not contiguous)."""
    x = torch.randn(x_shape).contiguous(memory_format=memory_format)
    w = torch.randn(w_shape[1], w_shape[0], *w_shape[2:]).transpose(0, 1)
    return x, w, torch.randn(w_shape[0]) if with_bias else None, stride, padding


@pytest.mark.parametrize("impl", ["im2win", "im2win_packed", "direct", "im2col_gemm", "torch_cl"])
def test_a_planned_call_returns_what_the_checked_call_returns(impl, monkeypatch):
    """The second call of arguments alike skips the checks and the plan and returns bit for bit
    what the checked call returns for its own tensors (other data, same kinds): on every im2win
    path these shapes take (streamed bands, window planes, the whole window tensor), with and
    without bias, strided and padded, NCHW and channels_last input, a filter that is a view."""
    checks = []
    real = conv.validate
    monkeypatch.setattr(conv, "validate", lambda *a: checks.append(a) or real(*a))
    monkeypatch.setattr(conv, "_CALLS", {})
    torch.manual_seed(0)
    cases = [
        ((2, 8, 12, 11), (16, 8, 3, 3), True, 1, 0),
        ((1, 64, 7, 7), (64, 64, 3, 3), False, 1, 1),
        ((2, 32, 12, 12), (64, 32, 3, 3), True, 1, 1),
        ((3, 3, 17, 19), (5, 3, 5, 3), True, (2, 1), (1, 2)),
    ]
    for case in cases:
        for fmt in (torch.contiguous_format, torch.channels_last):
            first, second = _arguments(*case, fmt), _arguments(*case, fmt)
            before = len(checks)
            im2win.conv2d(*first, impl=impl)
            planned = im2win.conv2d(*second, impl=impl)
            assert len(checks) == before + 1
            conv._CALLS.clear()
            checked = im2win.conv2d(*second, impl=impl)
            assert torch.equal(planned, checked) and planned.stride() == checked.stride()
            torch.testing.assert_close(planned, F.conv2d(*second), rtol=1e-4, atol=1e-4)
    for n in range(1, conv._CALLS_KEPT + 3):  # a bounded number kept, the newest
        im2win.conv2d(torch.randn(n, 1, 3, 3), torch.randn(1, 1, 3, 3), impl=impl)
    assert len(conv._CALLS) == conv._CALLS_KEPT
    assert (
        conv._key(torch.randn(n, 1, 3, 3), torch.randn(1, 1, 3, 3), None, 1, 0, 1, 1, impl)
        in conv._CALLS
    )


def test_a_planned_call_still_refuses_what_differs():
    """conv2d plans a call once for arguments alike (im2win.conv._CALLS); arguments that differ
    in anything its checks read go through the checks again and are refused as on a first call,
    and a planned call is found by nothing else."""
    x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    im2win.conv2d(x, w)
    assert conv._key(x, w, None, 1, 0, 1, 1, "im2win") in conv._CALLS
    for kwargs, message in [
        ({"input": x.double()}, "float32"),
        ({"weight": w[:, :2]}, "channel mismatch"),
        ({"weight": w.clone().requires_grad_()}, "forward only"),
        ({"bias": torch.randn(5)}, "bias has 5 entries"),
        ({"stride": 0}, "stride"),
        ({"dilation": 2}, "dilation"),
        ({"groups": 3}, "groups"),
        ({"impl": "nope"}, "unknown impl"),
        ({"groups": True}, "groups=True"),
        ({"padding": 1.0}, "padding must be an int"),
    ]:
        with pytest.raises(ValueError, match=message):
            im2win.conv2d(**{"input": x, "weight": w} | kwargs)
    assert conv._key([[1.0]], w, None, 1, 0, 1, 1, "im2win") is None
    assert conv._key(x, w, None, [1, 1], 0, 1, 1, "im2win") is None  # a list: no key, checked
    assert im2win.conv2d(x, w, None, [1, 1]).shape == (1, 4, 6, 6)
