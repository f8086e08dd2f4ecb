//
// spatialmap: slides + single-cell reference -> QC -> signatures -> mapping -> one MultiQC report
//
include { INPUT_CHECK          } from '../subworkflows/local/input_check'
include { SLIDE_PREPROCESS     } from '../subworkflows/local/slide_preprocess'
include { REFERENCE_SIGNATURES } from '../subworkflows/local/reference_signatures'
include { MAPPING              } from '../subworkflows/local/mapping'
include { DOMAINS              } from '../subworkflows/local/domains'
include { SPATIAL_RESULTS      } from '../subworkflows/local/spatial_results'
include { REGION_SUMMARIES     } from '../subworkflows/local/region_summaries'
include { MARKERS              } from '../subworkflows/local/markers'
include { REPORT_TABLES        } from '../modules/local/report_tables/main'
include { MULTIQC              } from '../modules/local/multiqc/main'

workflow SPATIALMAP {
    main:
    // values were checked against nextflow_schema.json in main.nf (allowed methods: x-list-enum there);
    // each slide's methods are planned in its QC step (spatialmap.methods.registry.plan)
    def methods = params.methods.toString().tokenize(',')*.trim().findAll { it }
    if ('auto' in methods && methods.size() > 1) {
        error "--methods auto chooses the methods per slide; give it alone or list the methods instead (got ${params.methods})"
    }
    def mt_genes = params.mt_genes ? file(params.mt_genes, checkIfExists: true) : []
    // the model folder is checked whole (config.json, weights present and readable) by CHECK_SAMPLESHEET,
    // which knows the slides StarDist segments and names them; here only that it is a folder
    def stardist_model = params.stardist_model ? file(params.stardist_model, checkIfExists: true) : []
    if (stardist_model && !stardist_model.isDirectory()) {
        error "spatialmap failed: --stardist_model ${params.stardist_model} is not a folder (a StarDist model folder holds config.json and weights_best.h5)"
    }
    // a local CellTypist model: a file here; its content (a CellTypist pickle, read without running it)
    // is checked by CHECK_SAMPLESHEET, before any slide is read
    def celltypist_model = params.celltypist_model ? file(params.celltypist_model, checkIfExists: true) : []
    if (celltypist_model && !celltypist_model.isFile()) {
        error "spatialmap failed: --celltypist_model ${params.celltypist_model} is not a file (a CellTypist model is a .pkl)"
    }

    // --domain_levels: '5..15' or '5,7,10' (its form checked by the schema); --domain_level one of them
    def levels_text = params.domain_levels.toString().trim()
    def domain_levels = levels_text.contains('..')
        ? ((levels_text.tokenize('.')[0].trim() as int)..(levels_text.tokenize('.')[-1].trim() as int)).toList()
        : levels_text.tokenize(',')*.trim()*.toInteger()
    if (params.domain_method != 'none' && !(params.domain_level as int in domain_levels)) {
        error "spatialmap failed: --domain_level ${params.domain_level} is not one of --domain_levels ${params.domain_levels} (${domain_levels.join(', ')})"
    }
    // marker sets: the user's file (read and checked by CHECK_SAMPLESHEET before any slide is read), else
    // derived from the reference; no marker step without either, or with --marker_method none
    def markers_file = params.markers ? file(params.markers, checkIfExists: true) : []
    if (markers_file && !markers_file.isFile()) {
        error "spatialmap failed: --markers ${params.markers} is not a file (marker sets: YAML or CSV)"
    }
    def run_markers = params.marker_method != 'none' && (params.markers || params.reference)
    if (params.celltypist_voting_over == 'domains' && params.domain_method == 'none') {
        error "spatialmap failed: --celltypist_voting_over domains votes over the spatial domains, which --domain_method none skips: give a domain method, or --celltypist_voting_over clusters"
    }

    versions = Channel.empty()

    INPUT_CHECK(file(params.input, checkIfExists: true), stardist_model, celltypist_model, markers_file)
    versions = versions.mix(INPUT_CHECK.out.versions)

    SLIDE_PREPROCESS(INPUT_CHECK.out.slides, mt_genes, stardist_model)
    versions = versions.mix(SLIDE_PREPROCESS.out.versions)

    // spatial domains per samplesheet group, from the QC'd slides (no reference needed)
    domains = Channel.empty()  // [ meta, <sample>.domains.csv ]
    domain_json = Channel.empty(); domain_png = Channel.empty()
    if (params.domain_method != 'none') {
        // a local folder is staged into the task; anything else is a hub name Novae reads itself (conf/modules.config)
        def novae_model = params.novae_model && file(params.novae_model).exists() ? file(params.novae_model) : []
        if (novae_model && !novae_model.isDirectory()) {
            error "spatialmap failed: --novae_model ${params.novae_model} is not a folder (a Novae model folder holds config.json and model.safetensors)"
        }
        DOMAINS(SLIDE_PREPROCESS.out.h5ad, novae_model)
        versions = versions.mix(DOMAINS.out.versions)
        domains = DOMAINS.out.csv
        domain_json = DOMAINS.out.json.map { meta, f -> f }
        domain_png = DOMAINS.out.png.map { meta, f -> f }
    }

    marker_sets = markers_file ? Channel.value(markers_file) : Channel.empty()  // from the reference below
    reference_files = Channel.empty()
    method_json = Channel.empty(); method_png = Channel.empty()
    agreement = Channel.empty(); method_selection = Channel.empty()
    regions = Channel.empty()  // the region summaries' json and figures, for the report

    if (params.reference) {
        def user_signatures = params.signatures ? file(params.signatures, checkIfExists: true) : []
        // the slides whose plan runs cell2location: signatures are estimated only when there is one
        // (with --methods auto on Visium HD / Xenium slides, or above --c2l_max_locations, there is none)
        def c2l_slides = SLIDE_PREPROCESS.out.json.filter { meta, json -> 'cell2location' in meta.methods }
        def reference = file(params.reference, checkIfExists: true)
        REFERENCE_SIGNATURES(
            [[id: reference.name], reference],
            SLIDE_PREPROCESS.out.h5ad,
            SLIDE_PREPROCESS.out.json,
            mt_genes,
            user_signatures,
            c2l_slides
        )
        versions = versions.mix(REFERENCE_SIGNATURES.out.versions)
        reference_files = REFERENCE_SIGNATURES.out.summary
        if (!markers_file) {
            marker_sets = REFERENCE_SIGNATURES.out.markers
        }

        MAPPING(
            SLIDE_PREPROCESS.out.h5ad,
            REFERENCE_SIGNATURES.out.reference,
            REFERENCE_SIGNATURES.out.signatures,
            params.rctd_q_matrix ? file(params.rctd_q_matrix, checkIfExists: true) : [],
            celltypist_model,
            domains
        )
        versions = versions.mix(MAPPING.out.versions)
        // every method's <sample>.<method>_qc.json and figures, for the report
        method_json = MAPPING.out.method_json.map { meta, method, f -> f }
        method_png = MAPPING.out.method_png.mix(REFERENCE_SIGNATURES.out.signature_png.flatten())
        method_selection = MAPPING.out.selection
        agreement = MAPPING.out.agreement

        // Visium HD / Xenium / SpatialData slides: new SpatialData store, labels, composition, maps
        SPATIAL_RESULTS(INPUT_CHECK.out.slides, SLIDE_PREPROCESS.out.h5ad, MAPPING.out.mapped, SLIDE_PREPROCESS.out.cells,
            MAPPING.out.consensus, domains)
        versions = versions.mix(SPATIAL_RESULTS.out.versions)
        method_png = method_png.mix(SPATIAL_RESULTS.out.png.map { meta, f -> f })
    } else {
        log.info run_markers
            ? "No --reference given: reading, QC, domains and the marker genes of --markers (no mapping)"
            : "No --reference given: running reading and QC only (no mapping)"
        if (celltypist_model) {
            log.warn "--celltypist_model is used only with --reference (CellTypist runs in the mapping): ignored"
        }
    }

    // marker genes per group, the domains named by them (with or without a reference)
    marker_scores = Channel.empty()  // [ meta, <sample>.marker_scores.csv ]
    if (run_markers) {
        MARKERS(SLIDE_PREPROCESS.out.h5ad, domains, params.domain_method != 'none', marker_sets)
        versions = versions.mix(MARKERS.out.versions)
        marker_scores = MARKERS.out.scores
        regions = regions.mix(MARKERS.out.json.mix(MARKERS.out.png).map { meta, f -> f })
    }

    if (params.reference) {
        // per slide with domains: each domain's composition per method, the domains' shares, ambiguity,
        // and (with marker scores) each method's shares against them
        REGION_SUMMARIES(domains, MAPPING.out.proportions, MAPPING.out.consensus, MAPPING.out.celltypist_labels,
            marker_scores, run_markers)
        versions = versions.mix(REGION_SUMMARIES.out.versions)
        regions = regions.mix(REGION_SUMMARIES.out.json.mix(REGION_SUMMARIES.out.png, REGION_SUMMARIES.out.marker_png).map { meta, f -> f })
    }

    REPORT_TABLES(
        SLIDE_PREPROCESS.out.json.map { meta, f -> f }.collect(sort: true),
        SLIDE_PREPROCESS.out.png.map { meta, f -> f }.collect(sort: true),
        reference_files.collect(sort: true).ifEmpty([]),
        method_json.mix(domain_json).collect(sort: true).ifEmpty([]),
        method_png.mix(domain_png).collect(sort: true).ifEmpty([]),
        agreement.collect(sort: true).ifEmpty([]),
        regions.collect(sort: true).ifEmpty([]),
        versions.unique().collect()
    )

    MULTIQC(
        REPORT_TABLES.out.multiqc_files.mix(method_selection).collect(),
        file("${projectDir}/assets/multiqc_config.yml", checkIfExists: true)
    )

    emit:
    report = MULTIQC.out.report  // channel: multiqc_report.html
}
