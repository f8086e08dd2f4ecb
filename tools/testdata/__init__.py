"""Generators of the test and benchmark data (generated slides and references with known truth,
silver-standard pseudo-spots). Not part of the pipeline package: the pipeline never imports them."""
