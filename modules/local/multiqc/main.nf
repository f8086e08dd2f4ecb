process MULTIQC {
    label 'process_single'
    container "${params.container_registry}/spatialmap-core:${params.container_tag}"

    input:
    path multiqc_files, stageAs: 'data/*'
    path multiqc_config

    output:
    path '*multiqc_report.html', emit: report
    path '*_data'              , emit: data
    path 'versions.yml'        , emit: versions

    script:
    def args = task.ext.args ?: ''
    // the report's own config (make_report.py: where each mapping method's sections go), when given
    """
    extra=''
    for c in data/*_mqc_config.yml; do [ -e "\$c" ] && extra="\$extra --config \$c"; done
    multiqc --force --config ${multiqc_config} \$extra ${args} data
    printf '"%s":\\n    multiqc: "%s"\\n' '${task.process}' "\$(multiqc --version | sed 's/.*version //')" > versions.yml
    """

    stub:
    """
    mkdir multiqc_data
    touch multiqc_report.html
    printf '"%s":\\n    multiqc: "stub"\\n' '${task.process}' > versions.yml
    """
}
