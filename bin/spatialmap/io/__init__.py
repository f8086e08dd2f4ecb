"""Reading slides: Space Ranger, Visium HD, Xenium, SpatialData and AnnData inputs; the samplesheet; the per-slide outputs."""
