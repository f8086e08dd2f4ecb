process COMPARE_METHODS {
    tag "${c2l_samples.size()} slides"
    label 'process_single'
    container "${params.container_registry}/spatialmap-core:${params.container_tag}"

    input:
    val c2l_samples
    path c2l_csv, stageAs: 'c2l/*'
    val tangram_samples
    path tangram_csv, stageAs: 'tangram/*'

    output:
    path 'method_agreement.csv'       , emit: csv
    path 'method_agreement_matrix.tsv', emit: matrix
    path 'versions.yml'               , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    compare_methods.py \\
        --c2l ${c2l_csv} \\
        --samples-c2l ${c2l_samples.join(' ')} \\
        --tangram ${tangram_csv} \\
        --samples-tangram ${tangram_samples.join(' ')} \\
        --output-csv method_agreement.csv \\
        --output-matrix method_agreement_matrix.tsv \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    """
    touch method_agreement.csv method_agreement_matrix.tsv
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
