"""Marker-gene annotation: marker sets (a user's file, or derived from the reference), their scores per
location with Enrichmap, and each domain's type(s) from those scores (the regions' elbow-gap).

- :mod:`spatialmap.markers.genes`: reading, checking against a slide, deriving from a reference;
- :mod:`spatialmap.markers.score`: Enrichmap's scores over a samplesheet group, one batch per slide.
"""
