// The run's agreement and consensus tables, gathered from every slide's (COMPARE_METHODS)
process SUMMARISE_AGREEMENT {
    tag "${agreement instanceof List ? agreement.size() : 1} slides"
    label 'process_single'
    container "${params.container_registry}/spatialmap-core:${params.container_tag}"

    input:
    path agreement, stageAs: 'agreement/*'  // every slide's <sample>.method_agreement.csv
    path summary  , stageAs: 'summary/*'    // every slide's <sample>.consensus_summary.json

    output:
    path 'method_agreement.csv'       , emit: csv
    path 'method_agreement_matrix.tsv', emit: matrix
    path 'method_agreement_pairs.tsv' , emit: pairs
    path 'consensus_summary.tsv'      , emit: summary
    path 'versions.yml'               , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    summarise_agreement.py \\
        --agreement ${agreement} \\
        --consensus-summary ${summary} \\
        --outdir . \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    """
    touch method_agreement.csv method_agreement_matrix.tsv method_agreement_pairs.tsv consensus_summary.tsv
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
