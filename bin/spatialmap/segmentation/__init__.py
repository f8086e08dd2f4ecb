"""Cell segmentation of Visium HD and Xenium slides: StarDist on patches, ProSeg."""
