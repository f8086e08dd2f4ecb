process COMPARE_METHODS {
    tag "${meta.id}"
    label 'process_single'
    container "${params.container_registry}/spatialmap-core:${params.container_tag}"

    input:
    // one slide: its methods (two or more) and each one's table, in the same order; its QC'd h5ad
    // (positions for the maps, counts for the reconstruction-based rules)
    tuple val(meta), val(methods), path(proportions, stageAs: 'proportions/*'), path(slide, stageAs: 'slides/*')
    path reference, stageAs: 'reference/*'  // prepared reference h5ad: per-type profiles for the reconstruction-based rules

    output:
    tuple val(meta), path("${meta.id}.method_agreement.csv")      , emit: agreement
    tuple val(meta), path("${meta.id}.consensus_summary.json")    , emit: summary
    tuple val(meta), path("${meta.id}.consensus_proportions.csv") , emit: consensus
    tuple val(meta), path("${meta.id}.consensus_disagreement.csv"), emit: disagreement
    tuple val(meta), path("${meta.id}.consensus_{maps,disagreement}.png"), emit: png, optional: true
    path 'versions.yml'                                          , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    compare_methods.py \\
        --sample '${meta.id}' \\
        --methods ${methods.join(' ')} \\
        --proportions ${proportions} \\
        --slide ${slide} \\
        --reference ${reference} \\
        --outdir . \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    """
    touch ${meta.id}.method_agreement.csv ${meta.id}.consensus_proportions.csv ${meta.id}.consensus_disagreement.csv
    echo '{"sample": "${meta.id}"}' > ${meta.id}.consensus_summary.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
