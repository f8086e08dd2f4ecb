#!/usr/bin/env nextflow
/*
========================================================================================
    spatialmap: fine-grained cell types mapped onto spatial transcriptomics slides
========================================================================================
    README.md: usage, parameters, profiles
----------------------------------------------------------------------------------------
*/

nextflow.enable.dsl = 2

include { SPATIALMAP } from './workflows/spatialmap'

def checkParams() {
    if (params.help) {
        log.info """
        Usage:
          nextflow run . -profile <test,local|docker|...> --input samplesheet.csv --outdir results [--reference ref.h5ad]

        Every parameter is described in nextflow_schema.json and in README.md.
        """.stripIndent()
        System.exit(0)
    }
    if (!params.input) {
        error "Missing --input: give a samplesheet CSV (columns sample, spaceranger_dir or h5ad, group)"
    }
    if (!params.outdir) {
        error "Missing --outdir: give the folder where results are written"
    }
}

workflow {
    checkParams()
    SPATIALMAP()
}

workflow.onComplete {
    if (workflow.success) {
        log.info "spatialmap finished: results in ${params.outdir}, report in ${params.outdir}/multiqc/multiqc_report.html"
    } else {
        log.error "spatialmap failed: ${workflow.errorMessage ?: 'see the error above'}"
    }
}
