process CHECK_SAMPLESHEET {
    tag "${samplesheet.name}"
    label 'process_single'
    container "${params.container_registry}/spatialmap-core:${params.container_tag}"

    input:
    path samplesheet
    val base_dir

    output:
    path 'samplesheet.valid.csv', emit: csv
    path 'versions.yml'         , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    check_samplesheet.py ${samplesheet} \\
        --base-dir '${base_dir}' \\
        --output samplesheet.valid.csv \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    def args = task.ext.args ?: ''
    """
    check_samplesheet.py ${samplesheet} --base-dir '${base_dir}' --output samplesheet.valid.csv --process-name '${task.process}' ${args}
    """
}
