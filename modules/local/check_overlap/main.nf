process CHECK_OVERLAP {
    tag "${slides instanceof List ? slides.size() : 1} slides"
    label 'process_low'
    container "${params.container_registry}/spatialmap-core:${params.container_tag}"

    input:
    tuple val(meta), path(reference)  // the prepared reference
    tuple val(samples), path(slides, stageAs: 'slides/*')  // every slide's sample and QC'd h5ad, in the same order
    path slide_qc, stageAs: 'slide_qc/*'  // the slides' QC JSONs: each one's method plan

    output:
    tuple val(meta), path('reference.matched.h5ad'), emit: h5ad
    tuple val(meta), path('gene_overlap.tsv')      , emit: tsv
    tuple val(meta), path('gene_overlap.json')     , emit: json
    tuple val(meta), path('reference_markers.csv') , emit: markers  // marker sets derived from the reference
    path 'versions.yml'                            , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    check_overlap.py \\
        --reference ${reference} \\
        --slides ${slides} \\
        --samples ${samples.collect { "'${it}'" }.join(' ')} \\
        --slide-qc ${slide_qc} \\
        --output-reference reference.matched.h5ad \\
        --output-tsv gene_overlap.tsv \\
        --output-json gene_overlap.json \\
        --output-markers reference_markers.csv \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    """
    touch reference.matched.h5ad gene_overlap.tsv
    printf 'cell_type,gene\\n' > reference_markers.csv
    echo '{}' > gene_overlap.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
