"""SuperSAM minimal reference (arXiv 2501.08504): a weight-sharing supernet over segment_anything.

build.py: model factories; supernet.py: elastic depth / MLP width, subnet extraction; importance.py:
Wanda prioritization and few-shot layer importance; train.py: the sandwich rule; data.py; evaluate.py;
cli.py: the `supersam` command. Not yet: DDP, the subnet search (issue 5).
"""
