"""Figures and the MultiQC report sections."""
