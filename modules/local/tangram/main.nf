process TANGRAM {
    tag "${meta.id}"
    label 'process_gpu'
    container "${params.container_registry}/spatialmap-tangram:${params.container_tag}"

    input:
    tuple val(meta), path(slide)
    path reference

    output:
    tuple val(meta), path("${prefix}.tangram.h5ad")              , emit: h5ad
    tuple val(meta), path("${prefix}.tangram_proportions.csv")   , emit: csv
    tuple val(meta), path("${prefix}.tangram_filtered_spots.csv"), emit: filtered
    tuple val(meta), path("${prefix}.tangram_counts.csv")        , emit: counts
    tuple val(meta), path("${prefix}.tangram_maps.png")          , emit: maps
    tuple val(meta), path("${prefix}.tangram_heldout_genes.csv") , emit: heldout
    tuple val(meta), path("${prefix}.tangram_qc.json")           , emit: json
    tuple val(meta), path("${prefix}.tangram_assignment.csv")    , emit: assignment, optional: true
    path 'versions.yml'                                          , emit: versions

    script:
    prefix = task.ext.prefix ?: meta.id
    def args = task.ext.args ?: ''   // settings from conf/modules.config (label key, mode, epochs, seed, ...)
    """
    map_tangram.py \\
        --slide ${slide} \\
        --sample '${meta.id}' \\
        --reference ${reference} \\
        --threads ${task.cpus} \\
        --accelerator ${task.accelerator ? 'gpu' : 'auto'} \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: meta.id
    """
    touch ${prefix}.tangram.h5ad ${prefix}.tangram_proportions.csv ${prefix}.tangram_filtered_spots.csv ${prefix}.tangram_counts.csv ${prefix}.tangram_maps.png ${prefix}.tangram_heldout_genes.csv
    echo '{"sample": "${meta.id}", "method": "tangram"}' > ${prefix}.tangram_qc.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
