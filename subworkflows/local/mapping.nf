//
// Map cell types onto the slides: cell2location jointly per group; Tangram, RCTD, FlashDeconv
// and NNLS per slide. Each slide runs the methods of its plan (meta.methods, made in the slide QC
// step by spatialmap.methods.registry.plan from --methods and the slide's size and kind; logged
// here, and shown in the report). Where two or more methods ran: their agreement and a consensus
// (COMPARE_METHODS).
//
// Every method's module emits the same per-slide outputs: json (<sample>.<method>_qc.json), maps
// (figures), csv (proportions), h5ad (the mapped slide) and versions; extra figures for the report,
// where a method has them, as figures. collectMethods gathers them the same way for every method,
// so adding a method is its include and its call on runs('<name>'), its .out added to methodRuns
// (and its registry entry: spatialmap.methods.registry).
//
include { CELL2LOCATION   } from '../../modules/local/cell2location/main'
include { TANGRAM         } from '../../modules/local/tangram/main'
include { RCTD_QMATRIX    } from '../../modules/local/rctd_qmatrix/main'
include { RCTD            } from '../../modules/local/rctd/main'
include { FLASHDECONV     } from '../../modules/local/flashdeconv/main'
include { NNLS            } from '../../modules/local/nnls/main'
include { COMPARE_METHODS } from '../../modules/local/compare_methods/main'

// [ [sample, file], ... ] sorted by sample -> [ [samples], [files] ]
def splitPairs(pairs) {
    def sorted = pairs.sort { a, b -> a[0] <=> b[0] }
    [sorted.collect { it[0] }, sorted.collect { it[1] }]
}

// Method of a per-slide proportion table: <sample>.<method>_proportions.csv or <sample>.cell2location_q05.csv
def tableMethod(name) {
    name.endsWith('.cell2location_q05.csv') ? 'cell2location' : (name - ~/_proportions\.csv$/).tokenize('.')[-1]
}

// The files of a process output channel, whether it emits [ meta, file(s) ] tuples or file(s)
def filesOf(ch) {
    ch.flatMap { item -> [item].flatten().findAll { !(it instanceof Map) } }
}

// One method's outputs (its process's .out), the same for every method
def methodOutputs(out) {
    [
        json:     filesOf(out.json),
        png:      'figures' in out.getNames() ? filesOf(out.maps).mix(filesOf(out.figures)) : filesOf(out.maps),
        csv:      filesOf(out.csv),
        // [ sample id, <sample>.<method>.h5ad ]
        mapped:   filesOf(out.h5ad).map { f -> [f.name - ~/\.[^.]+\.h5ad$/, f] },
        versions: out.versions,
    ]
}

// Every method's outputs mixed per kind: [ json, png, csv, mapped, versions ] channels
def collectMethods(List outs) {
    def kinds = ['json', 'png', 'csv', 'mapped', 'versions']
    outs.inject(kinds.collectEntries { [it, Channel.empty()] }) { all, out ->
        def one = methodOutputs(out)
        kinds.collectEntries { [it, all[it].mix(one[it])] }
    }
}

workflow MAPPING {
    take:
    slides         // channel: [ meta, qc h5ad ] (meta.methods, meta.locations, meta.selection: the slide's method plan)
    reference      // value: prepared reference h5ad
    signatures     // value: signatures CSV (used by cell2location)
    rctd_q_matrix  // value: RCTD likelihood table (--rctd_q_matrix), or [] to compute it (RCTD_QMATRIX)

    main:
    versions  = Channel.empty()
    def methodRuns = []  // the .out of every method; a method no slide's plan names gets no task

    chosen = slides.map { meta, h5ad ->
        def line = "sample ${meta.id}: ${meta.locations} locations; methods ${meta.methods.join(', ') ?: 'none'} (${meta.selection})"
        if (meta.selection.contains('skipped')) { log.warn line } else { log.info line }
        [meta, h5ad]
    }
    def runs = { method -> chosen.filter { meta, h5ad -> method in meta.methods } }

    groups = runs('cell2location')
        .map { meta, h5ad -> [meta.group, [meta.id, h5ad]] }
        .groupTuple()
        .map { group, pairs ->
            def (samples, files) = splitPairs(pairs)
            [[id: group], samples, files]
        }
    CELL2LOCATION(groups, signatures)
    methodRuns << CELL2LOCATION.out

    TANGRAM(runs('tangram'), reference)
    methodRuns << TANGRAM.out

    // the likelihood table: once per run (and kept across runs in --rctd_q_cache), never per slide
    if (rctd_q_matrix) {
        q_matrix = Channel.value(rctd_q_matrix)
    } else {
        // computed only once a slide is known to run RCTD (with --methods auto, none may: slides
        // above --auto_rctd_max_locations); first(): one table for all slides
        RCTD_QMATRIX(runs('rctd').first().map { meta, h5ad -> true })
        q_matrix = RCTD_QMATRIX.out.npz
        versions = versions.mix(RCTD_QMATRIX.out.versions)
    }
    RCTD(runs('rctd'), reference, q_matrix)
    methodRuns << RCTD.out

    FLASHDECONV(runs('flashdeconv'), reference)
    methodRuns << FLASHDECONV.out

    NNLS(runs('nnls'), reference)
    methodRuns << NNLS.out

    def all = collectMethods(methodRuns)
    method_json = all.json      // every method's <sample>.<method>_qc.json
    method_png  = all.png       // every method's maps and figures
    proportions = all.csv       // every method's per-slide proportion table
    mapped      = all.mapped    // [ sample id, mapped h5ad ], one per method (for SPATIAL_RESULTS)
    versions    = versions.mix(all.versions)

    // agreement and consensus: only where two or more methods ran (counted from the tables' names)
    COMPARE_METHODS(
        proportions.collect(sort: true).filter { files -> files.collect { tableMethod(it.name) }.unique().size() >= 2 },
        slides.map { meta, h5ad -> h5ad }.collect(sort: true),
        reference
    )
    versions  = versions.mix(COMPARE_METHODS.out.versions)
    agreement = COMPARE_METHODS.out.matrix.mix(
        COMPARE_METHODS.out.csv, COMPARE_METHODS.out.pairs, COMPARE_METHODS.out.summary,
        COMPARE_METHODS.out.png.flatten()
    )
    // [ sample id, consensus proportions, disagreement ] per slide with a consensus (for SPATIAL_RESULTS)
    consensus = COMPARE_METHODS.out.consensus.flatten().map { f -> [f.name - '.consensus_proportions.csv', f] }
        .join(COMPARE_METHODS.out.disagreement.flatten().map { f -> [f.name - '.consensus_disagreement.csv', f] })

    // which methods ran on which slide, and why: a MultiQC table
    selection = chosen
        .map { meta, h5ad -> "${meta.id}\t${meta.locations}\t${meta.methods.join(', ')}\t${meta.selection}\n" }
        .collectFile(
            name: 'spatialmap_method_selection_mqc.tsv', sort: true,
            seed: "# id: 'spatialmap_method_selection'\n# section_name: 'Mapping methods per slide'\n" +
                "# description: 'Which mapping methods ran on each slide and why (--methods auto chooses them from the number of locations after QC).'\n" +
                "# plot_type: 'table'\nsample\tlocations\tmethods\twhy\n"
        )

    emit:
    method_json    // channel: every method's per-slide QC JSON (<sample>.<method>_qc.json)
    method_png     // channel: every method's maps and figures
    proportions    // channel: every method's per-slide proportion table
    selection      // channel: spatialmap_method_selection_mqc.tsv (methods per slide, for MultiQC)
    agreement      // channel: agreement tables
    mapped         // channel: [ sample id, mapped h5ad ], one per method and slide
    consensus      // channel: [ sample id, <sample>.consensus_proportions.csv, <sample>.consensus_disagreement.csv ]
    versions       // channel: versions.yml
}
