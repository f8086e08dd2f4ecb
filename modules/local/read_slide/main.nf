process READ_SLIDE {
    tag "${meta.id}"
    label 'process_low'
    // reading Visium HD, Xenium and SpatialData stores needs sopa / spatialdata (the spatial image)
    container { "${params.container_registry}/spatialmap-${meta.input_type in ['visium_hd', 'xenium', 'zarr'] ? 'spatial' : 'core'}:${params.container_tag}" }

    input:
    tuple val(meta), path(slide), path(cells)   // cells: <sample>.cells.parquet of the pipeline's segmentation, or []

    output:
    tuple val(meta), path("${prefix}.raw.h5ad"), emit: h5ad
    path 'versions.yml'                        , emit: versions

    script:
    prefix = task.ext.prefix ?: meta.id
    def flags = [h5ad: '--h5ad', visium_hd: '--visium-hd-dir', xenium: '--xenium-dir', zarr: '--zarr']
    def source = "${flags.get(meta.input_type, '--spaceranger-dir')} ${slide}"
    def args = task.ext.args ?: ''
    def segmentation = meta.segmentation && meta.segmentation != 'none' ? "--segmentation ${meta.segmentation}" : ''
    def cells_arg = cells ? "--cells ${cells}" : ''
    """
    read_slide.py \\
        --sample '${meta.id}' \\
        ${source} \\
        ${segmentation} ${cells_arg} \\
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
