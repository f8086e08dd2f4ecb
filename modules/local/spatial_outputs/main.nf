process SPATIAL_OUTPUTS {
    tag "${meta.id}"
    label 'process_medium'
    container "${params.container_registry}/spatialmap-spatial:${params.container_tag}"

    input:
    // cells: the pipeline's polygons or []; consensus, disagreement: the methods' consensus of the slide
    // (<sample>.consensus_proportions.csv, <sample>.consensus_disagreement.csv) or [] (fewer than two methods);
    // domains: the slide's <sample>.domains.csv or [] (--domain_method none)
    tuple val(meta), path(slide, stageAs: 'input/*'), path(qc_h5ad), path(mapped, stageAs: 'mapped/*'), path(cells, stageAs: 'cells/*'), path(consensus, stageAs: 'consensus/*'), path(disagreement, stageAs: 'consensus/*'), path(domains, stageAs: 'domains/*')

    output:
    tuple val(meta), path("${prefix}.spatialdata.zarr")  , emit: zarr
    tuple val(meta), path("${prefix}.mapped.h5ad")       , emit: h5ad
    tuple val(meta), path("${prefix}.composition.csv")   , emit: composition
    tuple val(meta), path("${prefix}.cell_types.csv")    , emit: labels, optional: true
    tuple val(meta), path("${prefix}.cell_types_map.png"), emit: png, optional: true
    path 'versions.yml'                                  , emit: versions

    script:
    prefix = task.ext.prefix ?: meta.id
    def args = task.ext.args ?: ''
    def results = mapped ? "--mapped ${mapped}" : ''
    def cells_arg = cells ? "--cells ${cells}" : ''
    def consensus_args = consensus ? "--consensus ${consensus} --disagreement ${disagreement}" : ''
    def domains_arg = domains ? "--domains ${domains}" : ''
    """
    spatial_outputs.py \\
        --sample '${meta.id}' \\
        --input-type ${meta.input_type} \\
        --input ${slide} \\
        --qc-h5ad ${qc_h5ad} \\
        --methods '${meta.label_methods.join(',')}' \\
        ${results} ${cells_arg} ${consensus_args} ${domains_arg} \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: meta.id
    """
    mkdir ${prefix}.spatialdata.zarr
    touch ${prefix}.mapped.h5ad ${prefix}.composition.csv ${prefix}.cell_types.csv ${prefix}.cell_types_map.png
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
