"""Spatial domains of the slides: Novae (default) or SpatialLeiden, per samplesheet group.

- :mod:`.common`: levels, coordinates in µm, neighbourhood radii, the group's domain labels;
- :mod:`.novae_model`: Novae trained on the group's slides (or a pretrained model), several levels;
- :mod:`.leiden`: SpatialLeiden per slide, merged into the levels;
- :mod:`.run`: the group's domains with the chosen method (and the fallback above a size).
"""
