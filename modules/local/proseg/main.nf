process PROSEG {
    tag "${meta.id}"
    label 'process_medium'
    // the spatial image carries the proseg binary (containers/Dockerfile, proseg-build stage)
    container "${params.container_registry}/spatialmap-spatial:${params.container_tag}"

    input:
    tuple val(meta), path(slide), path(prior)  // prior: cells file of an earlier segmentation (Visium HD), or []

    output:
    tuple val(meta), path("${prefix}.cells.parquet")  , emit: cells
    tuple val(meta), path("${prefix}.proseg_qc.json") , emit: json
    path 'versions.yml'                               , emit: versions

    script:
    prefix = task.ext.prefix ?: meta.id
    def args = task.ext.args ?: ''
    def source = meta.input_type == 'xenium' ? "--xenium-dir ${slide}" : "--visium-hd-dir ${slide}"
    def prior_arg = prior ? "--prior ${prior}" : ''
    """
    segment_proseg.py \\
        --sample '${meta.id}' \\
        ${source} \\
        ${prior_arg} \\
        --threads ${task.cpus} \\
        --output ${prefix}.cells.parquet \\
        --qc ${prefix}.proseg_qc.json \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: meta.id
    """
    touch ${prefix}.cells.parquet
    echo '{"sample": "${meta.id}", "segmentation": "proseg"}' > ${prefix}.proseg_qc.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
