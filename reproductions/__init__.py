"""One module per paper table/figure group; the `repro` command runs and renders them."""
