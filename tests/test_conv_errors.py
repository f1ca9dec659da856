"""Bad input raises ValueError naming the problem."""

import pytest
import torch

import im2win

X = torch.randn(1, 3, 8, 8)
W = torch.randn(4, 3, 3, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input": X.double()}, "float32"),
        ({"weight": W.half()}, "float32"),
        ({"input": X[0, 0]}, "4-D \\(N, C, H, W\\) or 3-D \\(C, H, W\\), got shape \\(8, 8\\)"),
        ({"input": X[None]}, "4-D"),
        ({"weight": W[0]}, "4-D"),
        ({"weight": torch.randn(4, 5, 3, 3)}, "channel mismatch"),
        ({"weight": torch.randn(4, 3, 11, 3)}, "larger than the padded input"),
        ({"stride": 0}, "stride"),
        ({"stride": (1, -2)}, "stride"),
        ({"padding": -1}, "padding"),
        ({"padding": (1, 2, 3)}, "padding"),
        ({"stride": 1.5}, "stride must be an int or a pair of ints, got 1.5"),
        (
            {"padding": "full"},
            "padding must be an int, a pair of ints, 'valid' or 'same', got 'full'",
        ),
        ({"padding": "same", "stride": 2}, "padding='same' needs stride 1"),
        ({"padding": "same", "weight": torch.randn(4, 3, 3, 2)}, "even filter 3x2.*F.pad"),
        ({"dilation": 2}, "dilation 2 is not supported.*torch.nn.functional.conv2d"),
        ({"dilation": (1, 0)}, "dilation must be >= 1"),
        ({"groups": 3}, "groups=3 is not supported"),
        ({"groups": True}, "groups=True is not supported"),
        ({"stride": (True, 1)}, "stride must be an int or a pair of ints"),
        ({"impl": "winograd"}, "unknown impl"),
        ({"bias": torch.randn(5)}, "bias"),
        ({"input": [[1.0]]}, "torch.Tensor"),
        ({"input": X.to("meta")}, "CPU or on CUDA"),
        ({"input": X.to_sparse()}, "torch.sparse_coo tensor; im2win takes dense tensors"),
        ({"weight": W.to_sparse()}, "weight is a torch.sparse_coo tensor"),
    ],
)
def test_bad_input(kwargs, message):
    args = {"input": X, "weight": W, "bias": None, "stride": 1, "padding": 0, "impl": "im2win"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        im2win.conv2d(**args)


@pytest.mark.parametrize("grad_of", ["input", "weight", "bias"])
def test_inputs_requiring_grad_are_refused_not_detached(grad_of):
    args = {"input": X.clone(), "weight": W.clone(), "bias": torch.randn(4)}
    args[grad_of].requires_grad_(True)
    with pytest.raises(ValueError, match="forward only.*torch.no_grad"):
        im2win.conv2d(**args)
    with torch.no_grad():
        assert im2win.conv2d(**args).shape == (1, 4, 6, 6)


@pytest.mark.parametrize("impl", ["im2win", "direct"])
def test_a_call_written_for_f_conv2d_runs_unchanged(impl):
    """F.conv2d's positional order (dilation and groups after padding), its string paddings and
    its unbatched (C, H, W) input give F.conv2d's result."""
    F = torch.nn.functional
    x, w, b = torch.randn(2, 3, 9, 7), torch.randn(4, 3, 3, 5), torch.randn(4)
    for args in [(b, 1, "same", 1, 1), (b, 2, "valid", (1, 1), 1), (None, (1, 2), (1, 0), 1, 1)]:
        torch.testing.assert_close(
            im2win.conv2d(x, w, *args, impl=impl), F.conv2d(x, w, *args), rtol=1e-4, atol=1e-4
        )
        one = im2win.conv2d(x[1], w, *args, impl=impl)
        assert one.shape == F.conv2d(x[1], w, *args).shape
        torch.testing.assert_close(one, F.conv2d(x[1], w, *args), rtol=1e-4, atol=1e-4)
    assert im2win.conv2d(x, w, padding="same", impl=impl).shape == x.shape[:1] + (4,) + x.shape[2:]


def test_integer_types_other_than_int_are_taken_as_f_conv2d_takes_them():
    import numpy as np

    want = torch.nn.functional.conv2d(X, W, None, 2, 1)
    for stride, padding in [(np.int64(2), np.int32(1)), ((np.int64(2), 2), [1, torch.tensor(1)])]:
        got = im2win.conv2d(X, W, stride=stride, padding=padding)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_padding_makes_a_large_filter_valid():
    out = im2win.conv2d(X, torch.randn(4, 3, 10, 10), padding=1)
    assert out.shape == (1, 4, 1, 1)


def test_missing_compiler_is_a_clear_error(monkeypatch):
    from harness import native

    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    with pytest.raises(native.CompilerError, match="no C\\+\\+ compiler found"):
        native.find_compiler()


def test_a_failed_build_is_one_line_with_the_compilers_first_error(monkeypatch, tmp_path):
    """The compiler's first error, what to do where it lacks OpenMP (Apple's clang), and the file
    that keeps its whole output."""
    from harness import native

    compiler = tmp_path / "clang++"
    compiler.write_text(
        "#!/bin/sh\necho 'warning: unused flag' >&2\n"
        "echo \"clang: error: unsupported option '-fopenmp'\" >&2\nexit 1\n"
    )
    compiler.chmod(0o755)
    source = tmp_path / "kernel.cpp"
    source.write_text("int f() { return 1; }\n")
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("IM2WIN_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(native.CompilerError) as exc:
        native.build(source)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(
        f"compiling kernel.cpp with {compiler} failed: clang: error: unsupported option '-fopenmp';"
        " this compiler builds no OpenMP"
    )
    assert "Linux container" in message
    log = native.build_log(source)
    assert str(log) in message and "warning: unused flag" in log.read_text()
