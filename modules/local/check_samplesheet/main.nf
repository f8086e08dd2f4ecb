process CHECK_SAMPLESHEET {
    tag "${samplesheet.name}"
    label 'process_single'
    container "${params.container_registry}/spatialmap-core:${params.container_tag}"

    input:
    path samplesheet
    val base_dir
    path stardist_model   // --stardist_model folder (checked when a slide is segmented by StarDist), or []
    path celltypist_model // --celltypist_model .pkl (checked: a CellTypist model, read without running it), or []
    path markers, stageAs: 'markers/*' // --markers YAML / CSV (checked: readable marker sets), or []

    output:
    path 'samplesheet.valid.csv', emit: csv
    path 'versions.yml'         , emit: versions

    script:
    def args = task.ext.args ?: ''
    def model_arg = stardist_model ? "--stardist-model ${stardist_model}" : ''
    def celltypist_arg = celltypist_model ? "--celltypist-model ${celltypist_model}" : ''
    def markers_arg = markers ? "--markers ${markers}" : ''
    """
    check_samplesheet.py ${samplesheet} \\
        --base-dir '${base_dir}' \\
        ${model_arg} \\
        ${celltypist_arg} \\
        ${markers_arg} \\
        --output samplesheet.valid.csv \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    // the real check, but no download is tried (a stub run downloads nothing)
    def args = task.ext.args ?: ''
    def model_arg = stardist_model ? "--stardist-model ${stardist_model}" : ''
    def celltypist_arg = celltypist_model ? "--celltypist-model ${celltypist_model}" : ''
    def markers_arg = markers ? "--markers ${markers}" : ''
    """
    check_samplesheet.py ${samplesheet} --base-dir '${base_dir}' ${model_arg} ${celltypist_arg} ${markers_arg} --no-download-check --output samplesheet.valid.csv --process-name '${task.process}' ${args}
    """
}
