process TRAIN_CELLTYPIST {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container_registry}/spatialmap-annotation:${params.container_tag}"

    input:
    tuple val(meta), path(reference), path(slides, stageAs: 'slides/*')  // the matched reference; the QC'd slides CellTypist labels

    output:
    tuple val(meta), path('celltypist_model.pkl') , emit: model
    tuple val(meta), path('celltypist_model.json'), emit: json
    path 'versions.yml'                           , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    train_celltypist.py \\
        --reference ${reference} \\
        --slides ${slides} \\
        --threads ${task.cpus} \\
        --output celltypist_model.pkl \\
        --output-json celltypist_model.json \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    """
    touch celltypist_model.pkl
    echo '{}' > celltypist_model.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
