process PREPARE_REFERENCE {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container_registry}/spatialmap-core:${params.container_tag}"

    input:
    tuple val(meta), path(reference)  // meta: [ id: the reference's file name ]
    path mt_genes   // optional list of mitochondrial genes; [] when not given

    output:
    tuple val(meta), path('reference.prepared.h5ad'), emit: h5ad
    tuple val(meta), path('reference_summary.json') , emit: json
    path 'versions.yml'                             , emit: versions

    script:
    def args = task.ext.args ?: ''
    def mt_list = mt_genes ? "--mt-genes ${mt_genes}" : ''
    """
    prepare_reference.py \\
        --reference ${reference} \\
        ${mt_list} \\
        --output reference.prepared.h5ad \\
        --output-json reference_summary.json \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    """
    touch reference.prepared.h5ad
    echo '{}' > reference_summary.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
