"""Names of AnnData fields written by the pipeline, kept in one place.

Results are always addressed by these names, never by position.
"""

# obs
SAMPLE = "sample"
IN_TISSUE = "in_tissue"
ARRAY_ROW = "array_row"
ARRAY_COL = "array_col"
TOTAL_COUNTS = "total_counts"
N_GENES = "n_genes_by_counts"
PCT_MT = "pct_counts_mt"
MT_COUNTS = "total_counts_mt"
C2L_TOTAL_CELLS = "c2l_total_cells"  # cell2location: posterior mean cells per spot (all types)
C2L_DETECTION = "c2l_detection_y_s"  # cell2location: per-spot RNA detection efficiency (posterior mean)

# obsm
SPATIAL = "spatial"  # spot centres, full-resolution pixels, columns (x, y)
MT = "MT"  # counts of the mitochondrial genes removed from X
C2L_MEAN = "c2l_abundance_mean"  # cell2location posterior mean abundance
C2L_Q05 = "c2l_abundance_q05"  # 5% quantile
C2L_Q95 = "c2l_abundance_q95"  # 95% quantile
TANGRAM_PROPORTIONS = "tangram_proportions"
TANGRAM_COUNTS = "tangram_expected_counts"
TANGRAM_PROJECTED = "tangram_projected_heldout"  # projected expression of held-out genes

# uns
UNS_SPATIAL = "spatial"  # scanpy layout: uns['spatial'][library_id]{images, scalefactors}
UNS_QC = "spatialmap_qc"
UNS_PLATFORM = "spatialmap_platform"  # platform, unit ('spot', 'bin', 'cell'), bin size, segmentation QC
UNS_C2L = "cell2location"  # settings of the cell2location run that produced obsm C2L_*
UNS_TANGRAM = "tangram"  # run summary: settings, device, genes, held-out scores

# var
GENE_IDS = "gene_ids"
