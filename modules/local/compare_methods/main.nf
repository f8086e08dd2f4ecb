process COMPARE_METHODS {
    tag "${proportions.size()} maps"
    label 'process_single'
    container "${params.container_registry}/spatialmap-core:${params.container_tag}"

    input:
    path proportions, stageAs: 'proportions/*'  // every method's <sample>.<method>_proportions.csv (cell2location: <sample>.cell2location_q05.csv)
    path slides     , stageAs: 'slides/*'       // <sample>.qc.h5ad of every slide: positions for the maps, counts
    path reference  , stageAs: 'reference/*'    // prepared reference h5ad: per-type profiles for the reconstruction-based rules

    output:
    path 'method_agreement.csv'          , emit: csv
    path 'method_agreement_matrix.tsv'   , emit: matrix
    path 'method_agreement_pairs.tsv'    , emit: pairs
    path 'consensus_summary.tsv'         , emit: summary
    path '*.consensus_proportions.csv'   , emit: consensus
    path '*.consensus_disagreement.csv'  , emit: disagreement
    path '*.consensus_{maps,disagreement}.png', emit: png, optional: true
    path 'versions.yml'                  , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    compare_methods.py \\
        --proportions ${proportions} \\
        --slides ${slides} \\
        --reference ${reference} \\
        --outdir . \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    """
    touch method_agreement.csv method_agreement_matrix.tsv method_agreement_pairs.tsv consensus_summary.tsv
    for f in ${proportions}; do
        s=\$(basename \$f | sed -E 's/\\.(cell2location_q05|[a-z0-9]+_proportions)\\.csv\$//')
        touch \$s.consensus_proportions.csv \$s.consensus_disagreement.csv
    done
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
