process NNLS {
    tag "${meta.id}"
    label 'process_single'
    container "${params.container_registry}/spatialmap-deconv:${params.container_tag}"

    input:
    tuple val(meta), path(slide)
    path reference

    output:
    tuple val(meta), path("${prefix}.nnls.h5ad")               , emit: h5ad
    tuple val(meta), path("${prefix}.nnls_proportions.csv")    , emit: csv
    tuple val(meta), path("${prefix}.nnls_filtered_spots.csv") , emit: filtered
    tuple val(meta), path("${prefix}.nnls_maps.png")           , emit: maps
    tuple val(meta), path("${prefix}.nnls_qc.json")            , emit: json
    path 'versions.yml'                                      , emit: versions

    script:
    prefix = task.ext.prefix ?: meta.id
    def args = task.ext.args ?: ''
    def selection = meta.selection ? "--selection '${meta.selection}'" : ''
    """
    map_nnls.py \\
        --slide ${slide} \\
        --sample '${meta.id}' \\
        --reference ${reference} \\
        ${selection} \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: meta.id
    """
    touch ${prefix}.nnls.h5ad ${prefix}.nnls_proportions.csv ${prefix}.nnls_filtered_spots.csv ${prefix}.nnls_maps.png
    echo '{"sample": "${meta.id}", "method": "nnls"}' > ${prefix}.nnls_qc.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
