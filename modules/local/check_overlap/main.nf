process CHECK_OVERLAP {
    tag "${slides instanceof List ? slides.size() : 1} slides"
    label 'process_low'
    container "${params.container_registry}/spatialmap-core:${params.container_tag}"

    input:
    path reference
    path slides, stageAs: 'slides/*'

    output:
    path 'gene_overlap.tsv' , emit: tsv
    path 'gene_overlap.json', emit: json
    path 'versions.yml'     , emit: versions

    script:
    def args = task.ext.args ?: ''
    def slide_column = params.slide_gene_column ? "--slide-gene-column '${params.slide_gene_column}'" : ''
    """
    check_overlap.py \\
        --reference ${reference} \\
        --slides ${slides} \\
        ${slide_column} \\
        --label-key '${params.ref_label_key}' \\
        --n-markers ${params.overlap_n_markers} \\
        --min-shared-genes ${params.min_shared_genes} \\
        --output-tsv gene_overlap.tsv \\
        --output-json gene_overlap.json \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    """
    touch gene_overlap.tsv
    echo '{}' > gene_overlap.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
