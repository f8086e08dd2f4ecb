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
DECONV_STATUS = {m: f"{m}_status" for m in ("rctd", "flashdeconv", "nnls")}  # 'fitted' or why a spot was left out
RCTD_SPOT_CLASS = "rctd_spot_class"  # RCTD doublet mode: reject, singlet, doublet_certain, doublet_uncertain
RCTD_FIRST_TYPE = "rctd_first_type"  # RCTD doublet mode: first (main) cell type
RCTD_SECOND_TYPE = "rctd_second_type"  # RCTD doublet mode: second cell type
RCTD_N_TYPES = "rctd_n_types"  # RCTD multi mode: number of cell types in the spot
CELLTYPIST_PREDICTED = "celltypist_predicted_label"  # CellTypist: the best-matching type of the cell alone
CELLTYPIST_CONFIDENCE = "celltypist_confidence"  # CellTypist: that type's probability (its conf_score)
CELLTYPIST_OVER_CLUSTERING = "celltypist_over_clustering"  # CellTypist: the cluster majority voting used
CELLTYPIST_MAJORITY = "celltypist_majority_voting"  # CellTypist: its cluster's most predicted type
CELLTYPIST_LABEL = "celltypist_label"  # CellTypist: majority vote (else prediction), 'Unassigned' if not confident
CELLTYPIST_LOW_CONFIDENCE = "celltypist_low_confidence"  # CellTypist: its label's probability < the minimum

# obsm
SPATIAL = "spatial"  # spot centres, full-resolution pixels, columns (x, y)
MT = "MT"  # counts of the mitochondrial genes removed from X
C2L_MEAN = "c2l_abundance_mean"  # cell2location posterior mean abundance
C2L_Q05 = "c2l_abundance_q05"  # 5% quantile
C2L_Q95 = "c2l_abundance_q95"  # 95% quantile
TANGRAM_PROPORTIONS = "tangram_proportions"
TANGRAM_COUNTS = "tangram_expected_counts"
TANGRAM_PROJECTED = "tangram_projected_heldout"  # projected expression of held-out genes
RCTD_PROPORTIONS = "rctd_proportions"  # RCTD (rctd-py): proportions; NaN rows = spots RCTD left out
FLASHDECONV_PROPORTIONS = "flashdeconv_proportions"  # FlashDeconv proportions; NaN rows = spots left out
NNLS_PROPORTIONS = "nnls_proportions"  # NNLS baseline proportions; NaN rows = spots left out
DECONV_PROPORTIONS = {"rctd": RCTD_PROPORTIONS, "flashdeconv": FLASHDECONV_PROPORTIONS, "nnls": NNLS_PROPORTIONS}

# uns
UNS_SPATIAL = "spatial"  # scanpy layout: uns['spatial'][library_id]{images, scalefactors}
UNS_QC = "spatialmap_qc"
UNS_PLATFORM = "spatialmap_platform"  # platform, unit ('spot', 'bin', 'cell'), bin size, segmentation QC
UNS_C2L = "cell2location"  # settings of the cell2location run that produced obsm C2L_*
UNS_TANGRAM = "tangram"  # run summary: settings, device, genes, held-out scores
UNS_DECONV = {m: m for m in ("rctd", "flashdeconv", "nnls")}  # run summary (the QC JSON) per method

# var
GENE_IDS = "gene_ids"
