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

// --help, then every parameter against nextflow_schema.json: a bad value stops the run
// here, before any task starts
def checkParams() {
    def schema = new SpatialmapSchema(file("${projectDir}/nextflow_schema.json", checkIfExists: true).toFile())
    if (params.help) {
        if (params.help instanceof String) {
            def entry = schema.helpFor(params.help)
            if (entry == null) {
                error "Unknown parameter for --help: '${params.help}'; --help alone lists every parameter"
            }
            log.info entry
        } else {
            log.info schema.help('Usage: nextflow run . -profile <test,local|docker|...> --input samplesheet.csv --outdir results [--reference ref.h5ad]')
        }
        System.exit(0)
    }
    schema.unknown(params).each { log.warn it }
    def problems = schema.errors(params)
    if (problems) {
        error problems.size() == 1 ? "spatialmap failed: ${problems[0]}" :
            "spatialmap failed: ${problems.size()} invalid parameters:\n" + problems.join('\n')
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
        log.error "spatialmap failed: ${SpatialmapFailure.summary(workflow.errorMessage, workflow.errorReport)}"
    }
}
