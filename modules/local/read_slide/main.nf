process READ_SLIDE {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container_registry}/spatialmap-core:${params.container_tag}"

    input:
    tuple val(meta), path(slide)

    output:
    tuple val(meta), path("${prefix}.raw.h5ad"), emit: h5ad
    path 'versions.yml'                        , emit: versions

    script:
    prefix = task.ext.prefix ?: meta.id
    def source = meta.input_type == 'h5ad' ? "--h5ad ${slide}" : "--spaceranger-dir ${slide}"
    def args = task.ext.args ?: ''
    """
    read_slide.py \\
        --sample '${meta.id}' \\
        ${source} \\
        --output ${prefix}.raw.h5ad \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: meta.id
    """
    touch ${prefix}.raw.h5ad
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
