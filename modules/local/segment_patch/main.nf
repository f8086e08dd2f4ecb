process SEGMENT_PATCH {
    tag "${meta.id}:${patch.baseName}"
    label 'process_low'
    container "${params.container_registry}/spatialmap-spatial:${params.container_tag}"

    input:
    tuple val(meta), path(store), path(patch)   // MAKE_PATCHES store (read only), one patch_<i>.json
    path model                                  // local StarDist model folder, or [] for 2D_versatile_he

    output:
    tuple val(meta), path("${patch.baseName}.cells.parquet"), emit: cells   // the patch's polygons, full-res pixels
    path 'versions.yml'                                       , emit: versions

    script:
    def args = task.ext.args ?: ''
    def model_arg = model ? "--model ${model}" : ''
    """
    segment_patch.py \\
        --sample '${meta.id}' \\
        --store ${store} \\
        --patch ${patch} \\
        ${model_arg} \\
        --output ${patch.baseName}.cells.parquet \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    """
    touch ${patch.baseName}.cells.parquet
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
