process REPORT_TABLES {
    label 'process_single'
    container "${params.container_registry}/spatialmap-core:${params.container_tag}"

    input:
    path qc_json     , stageAs: 'qc/*'
    path qc_png      , stageAs: 'qc_png/*'
    path reference   , stageAs: 'reference/*'   // reference summary + gene overlap JSON; [] without --reference
    path method_json , stageAs: 'methods/*'       // every method's <sample>.<method>_qc.json (all its report sections)
    path method_png  , stageAs: 'method_png/*'    // every method's maps and figures
    path agreement   , stageAs: 'agreement/*'     // agreement tables, consensus summary and maps
    path regions     , stageAs: 'regions/*'       // region summaries: <sample>.regions_qc.json and heatmaps; [] without domains
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
        --method-qc ${method_json} \\
        --method-images ${method_png} \\
        --agreement ${agreement} \\
        --regions ${regions} \\
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
