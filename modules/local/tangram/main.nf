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
    tuple val(meta), path("${prefix}.tangram_counts.csv")        , emit: counts
    tuple val(meta), path("${prefix}.tangram_maps.png")          , emit: maps
    tuple val(meta), path("${prefix}.tangram_heldout_genes.csv") , emit: heldout
    tuple val(meta), path("${prefix}.tangram_qc.json")           , emit: json
    tuple val(meta), path("${prefix}.tangram_assignment.csv")    , emit: assignment, optional: true
    path 'versions.yml'                                          , emit: versions

    script:
    prefix = task.ext.prefix ?: meta.id
    def args = task.ext.args ?: ''
    def assignment = params.tangram_assignment ? '--assignment' : ''
    """
    map_tangram.py \\
        --slide ${slide} \\
        --sample '${meta.id}' \\
        --reference ${reference} \\
        --label-key '${params.ref_label_key}' \\
        --n-markers ${params.tangram_n_markers} \\
        --mode ${params.tangram_mode} \\
        --density-prior ${params.tangram_density_prior} \\
        --max-epochs ${params.tangram_max_epochs} \\
        --learning-rate ${params.tangram_lr} \\
        --max-cells-per-type ${params.tangram_max_cells_per_type} \\
        --cells-per-spot ${params.n_cells_per_location} \\
        --seed ${params.seed} \\
        --threads ${task.cpus} \\
        --accelerator ${task.accelerator ? 'gpu' : 'auto'} \\
        ${assignment} \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: meta.id
    """
    touch ${prefix}.tangram.h5ad ${prefix}.tangram_proportions.csv ${prefix}.tangram_counts.csv ${prefix}.tangram_maps.png ${prefix}.tangram_heldout_genes.csv
    echo '{"sample": "${meta.id}"}' > ${prefix}.tangram_qc.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
