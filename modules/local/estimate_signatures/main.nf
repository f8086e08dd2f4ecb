process ESTIMATE_SIGNATURES {
    tag "${params.signature_method}"
    label 'process_gpu'
    container "${params.container_registry}/spatialmap-cell2location:${params.container_tag}"

    input:
    path reference

    output:
    path 'signatures.csv'   , emit: csv
    path 'reference_model'  , emit: model
    path 'reference.*.png'  , emit: png
    path 'versions.yml'     , emit: versions

    script:
    def args = task.ext.args ?: ''
    def batch = params.ref_batch_key ? "--batch-key '${params.ref_batch_key}'" : ''
    def covariates = params.ref_covariate_keys ? "--covariate-keys '${params.ref_covariate_keys}'" : ''
    def batch_size = params.ref_batch_size ? "--batch-size ${params.ref_batch_size}" : ''
    """
    estimate_signatures.py \\
        --reference ${reference} \\
        --method ${params.signature_method} \\
        --label-key '${params.ref_label_key}' \\
        ${batch} ${covariates} \\
        --cell-count-cutoff ${params.cell_count_cutoff} \\
        --cell-percentage-cutoff2 ${params.cell_percentage_cutoff2} \\
        --nonz-mean-cutoff ${params.nonz_mean_cutoff} \\
        --max-epochs ${params.ref_max_epochs} \\
        ${batch_size} \\
        --lr ${params.ref_lr} \\
        --seed ${params.seed} \\
        --threads ${task.cpus} \\
        --num-samples ${params.posterior_samples} \\
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
