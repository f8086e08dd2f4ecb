process CELLTYPIST {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container_registry}/spatialmap-annotation:${params.container_tag}"

    input:
    // domains: the slide's <sample>.domains.csv (its chosen level: obs 'domain', what --celltypist_voting_over
    // domains votes over), or [] where no domains were computed
    tuple val(meta), path(slide), path(domains, stageAs: 'domains/*')
    path model  // CellTypist model (.pkl): TRAIN_CELLTYPIST's, or --celltypist_model

    output:
    tuple val(meta), path("${prefix}.celltypist.h5ad")               , emit: h5ad
    tuple val(meta), path("${prefix}.celltypist_proportions.csv")    , emit: csv
    tuple val(meta), path("${prefix}.celltypist_labels.csv")         , emit: labels
    tuple val(meta), path("${prefix}.celltypist_filtered_spots.csv") , emit: filtered
    tuple val(meta), path("${prefix}.celltypist_maps.png")           , emit: maps
    tuple val(meta), path("${prefix}.celltypist_qc.json")            , emit: json
    path 'versions.yml'                                             , emit: versions

    script:
    prefix = task.ext.prefix ?: meta.id
    def args = task.ext.args ?: ''
    def selection = meta.selection ? "--selection '${meta.selection}'" : ''
    def domains_arg = domains ? "--domains ${domains}" : ''
    """
    map_celltypist.py \\
        --slide ${slide} \\
        --sample '${meta.id}' \\
        --model ${model} \\
        ${selection} ${domains_arg} \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: meta.id
    """
    touch ${prefix}.celltypist.h5ad ${prefix}.celltypist_proportions.csv ${prefix}.celltypist_labels.csv
    touch ${prefix}.celltypist_filtered_spots.csv ${prefix}.celltypist_maps.png
    echo '{"sample": "${meta.id}", "method": "celltypist"}' > ${prefix}.celltypist_qc.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
