process MAKE_PATCHES {
    tag "${meta.id}"
    label 'process_single'
    container "${params.container_registry}/spatialmap-spatial:${params.container_tag}"

    input:
    tuple val(meta), path(outs)   // Visium HD Space Ranger outs/ (read only)

    output:
    tuple val(meta), path("${prefix}.patches.zarr"), emit: store     // new store: H&E, tissue ROI, sopa's image_patches
    tuple val(meta), path("patches/patch_*.json")  , emit: patches   // one small JSON per patch
    path 'versions.yml'                            , emit: versions

    script:
    prefix = task.ext.prefix ?: meta.id
    def args = task.ext.args ?: ''
    """
    make_patches.py \\
        --sample '${meta.id}' \\
        --visium-hd-dir ${outs} \\
        --store ${prefix}.patches.zarr \\
        --patch-dir patches \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: meta.id
    """
    mkdir -p ${prefix}.patches.zarr patches
    echo '{"index": 0}' > patches/patch_0.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
