process RCTD {
    tag "${meta.id}"
    label 'process_gpu'
    container "${params.container_registry}/spatialmap-deconv:${params.container_tag}"

    input:
    tuple val(meta), path(slide)
    path reference
    path q_matrix   // RCTD likelihood table (RCTD_QMATRIX or --rctd_q_matrix)

    output:
    tuple val(meta), path("${prefix}.rctd.h5ad")                , emit: h5ad
    tuple val(meta), path("${prefix}.rctd_proportions.csv")     , emit: csv
    tuple val(meta), path("${prefix}.rctd_filtered_spots.csv")  , emit: filtered
    tuple val(meta), path("${prefix}.rctd_maps.png")            , emit: maps
    tuple val(meta), path("${prefix}.rctd_qc.json")             , emit: json
    path 'versions.yml'                                         , emit: versions

    script:
    prefix = task.ext.prefix ?: meta.id
    def args = task.ext.args ?: ''
    def selection = meta.selection ? "--selection '${meta.selection}'" : ''
    """
    map_rctd.py \\
        --slide ${slide} \\
        --sample '${meta.id}' \\
        --reference ${reference} \\
        --q-matrix ${q_matrix} \\
        --threads ${task.cpus} \\
        --accelerator ${task.accelerator ? 'gpu' : 'auto'} \\
        ${selection} \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: meta.id
    """
    touch ${prefix}.rctd.h5ad ${prefix}.rctd_proportions.csv ${prefix}.rctd_filtered_spots.csv ${prefix}.rctd_maps.png
    echo '{"sample": "${meta.id}", "method": "rctd"}' > ${prefix}.rctd_qc.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
