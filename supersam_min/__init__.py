"""SuperSAM minimal reference (arXiv 2501.08504): not implemented yet; see the project's issues."""
