"""The mapping methods: cell2location, Tangram, RCTD, FlashDeconv, NNLS."""
