"""SuperSAM minimal reference (arXiv 2501.08504): a weight-sharing supernet over segment_anything.

Implemented so far: model factories (build.py), the supernet with elastic depth and MLP width and
standalone subnet extraction (supernet.py), Wanda-style parameter prioritization (importance.py).
Not yet: layer importance by few-shot evaluation, sandwich-rule training, data, the `supersam`
command, subnet search.
"""
