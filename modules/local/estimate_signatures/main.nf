process ESTIMATE_SIGNATURES {
    tag "${meta.id}"
    label 'process_gpu'
    container "${params.container_registry}/spatialmap-cell2location:${params.container_tag}"

    input:
    tuple val(meta), path(reference)  // the matched reference (genes named as on the slides)

    output:
    tuple val(meta), path('signatures.csv') , emit: csv
    tuple val(meta), path('reference_model'), emit: model
    tuple val(meta), path('reference.*.png'), emit: png
    path 'versions.yml'                     , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    estimate_signatures.py \\
        --reference ${reference} \\
        --threads ${task.cpus} \\
        --accelerator ${task.accelerator ? 'gpu' : 'auto'} \\
        --output-csv signatures.csv \\
        --output-model-dir reference_model \\
        --output-prefix reference \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    """
    mkdir reference_model
    touch signatures.csv reference.training_loss.png
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
