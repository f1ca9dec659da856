"""Hypothesis strategies the convolution tests share (pytest puts tests/ on the import path)."""

from hypothesis import strategies as st

from im2win.shapes import ConvShape


@st.composite
def conv_shapes(draw, n=(1, 3), c=(1, 40), k=(1, 70), rs=(1, 7), extra_h=(0, 9), extra_w=(0, 9)):
    """A ConvShape with each field drawn from its (low, high) range: strides 1-4 and zero padding
    0-3 on each axis, and an input that padding leaves no smaller than the filter, extra_h rows
    and extra_w columns more."""
    r, s = draw(st.integers(*rs)), draw(st.integers(*rs))
    py, px = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    return ConvShape(
        n=draw(st.integers(*n)),
        c=draw(st.integers(*c)),
        h=max(1, r - 2 * py) + draw(st.integers(*extra_h)),
        w=max(1, s - 2 * px) + draw(st.integers(*extra_w)),
        k=draw(st.integers(*k)),
        r=r,
        s=s,
        stride=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        padding=(py, px),
    )
