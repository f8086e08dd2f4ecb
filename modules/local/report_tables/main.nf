process REPORT_TABLES {
    label 'process_single'
    container "${params.container_registry}/spatialmap-core:${params.container_tag}"

    input:
    path qc_json     , stageAs: 'qc/*'
    path qc_png      , stageAs: 'qc_png/*'
    path reference   , stageAs: 'reference/*'   // reference summary + gene overlap JSON; [] without --reference
    path c2l_json    , stageAs: 'c2l/*'
    path c2l_png     , stageAs: 'c2l_png/*'
    path tangram_json, stageAs: 'tangram/*'
    path tangram_csv , stageAs: 'tangram_genes/*'
    path tangram_png , stageAs: 'tangram_png/*'
    path agreement   , stageAs: 'agreement/*'
    path versions    , stageAs: 'versions/?/*'

    output:
    path 'mqc/*'       , emit: multiqc_files
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    make_report.py \\
        --qc ${qc_json} \\
        --qc-images ${qc_png} \\
        --reference-files ${reference} \\
        --c2l ${c2l_json} \\
        --c2l-images ${c2l_png} \\
        --tangram ${tangram_json} \\
        --tangram-genes ${tangram_csv} \\
        --tangram-images ${tangram_png} \\
        --agreement ${agreement} \\
        --versions-files ${versions} \\
        --nextflow-version '${workflow.nextflow.version}' \\
        --pipeline-version '${workflow.manifest.version}' \\
        --outdir mqc \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    """
    mkdir mqc
    touch mqc/spatialmap_general_stats_mqc.yaml
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
