process RESOLVE_SEGMENTATION {
    tag "${meta.id}"
    label 'process_single'
    container "${params.container_registry}/spatialmap-spatial:${params.container_tag}"

    input:
    tuple val(meta), path(patch_cells, stageAs: 'patches/*'), path(patch_info, stageAs: 'info/*')   // every patch's polygons of one slide, and MAKE_PATCHES' patch_<i>.json

    output:
    tuple val(meta), path("${prefix}.cells.parquet"), emit: cells   // resolved cell polygons, full-res pixels
    tuple val(meta), path("${prefix}.segmentation.json"), emit: json
    path 'versions.yml'                              , emit: versions

    script:
    prefix = task.ext.prefix ?: meta.id
    def args = task.ext.args ?: ''
    """
    resolve_segmentation.py \\
        --sample '${meta.id}' \\
        --output ${prefix}.cells.parquet \\
        --summary ${prefix}.segmentation.json \\
        --patch-info info \\
        --process-name '${task.process}' \\
        ${args} \\
        patches/*
    """

    stub:
    prefix = task.ext.prefix ?: meta.id
    """
    touch ${prefix}.cells.parquet ${prefix}.segmentation.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
