//
// Map cell types onto the slides: cell2location jointly per group; Tangram, RCTD, FlashDeconv
// and NNLS per slide; CellTypist per slide of cells (Xenium, Visium HD cells), with a model trained
// once per run on the reference (TRAIN_CELLTYPIST) or the user's (--celltypist_model). Each slide runs the methods of its plan (meta.methods, made in the slide QC
// step by spatialmap.methods.registry.plan from --methods and the slide's size and kind; logged
// here, and shown in the report). Where two or more methods ran: their agreement and a consensus
// (COMPARE_METHODS).
//
// Every method's module emits the same per-slide outputs, [ meta, file ]: json (<sample>.<method>_qc.json),
// maps (figures), csv (proportions), h5ad (the mapped slide), and versions; cell2location's group task
// emits them per group, split back to one per slide (perSlide). methodOutputs gathers them the same way
// for every method, so adding a method is its include, its call on runs('<name>') and
// methodOutputs('<name>', <PROCESS>.out) added to methodRuns (and its registry entry:
// spatialmap.methods.registry).
//
include { CELL2LOCATION   } from '../../modules/local/cell2location/main'
include { TANGRAM         } from '../../modules/local/tangram/main'
include { RCTD_QMATRIX    } from '../../modules/local/rctd_qmatrix/main'
include { RCTD            } from '../../modules/local/rctd/main'
include { FLASHDECONV     } from '../../modules/local/flashdeconv/main'
include { NNLS            } from '../../modules/local/nnls/main'
include { TRAIN_CELLTYPIST } from '../../modules/local/train_celltypist/main'
include { CELLTYPIST      } from '../../modules/local/celltypist/main'
include { COMPARE_METHODS } from '../../modules/local/compare_methods/main'
include { SUMMARISE_AGREEMENT } from '../../modules/local/summarise_agreement/main'

// [ [meta, file], ... ] sorted by sample -> [ [metas], [files] ]
def splitPairs(pairs) {
    def sorted = pairs.sort { a, b -> a[0].id <=> b[0].id }
    [sorted.collect { it[0] }, sorted.collect { it[1] }]
}

// A group task's per-slide outputs, [ group meta, slide metas, files ], as one [ slide meta, file ] per
// slide: the file the task wrote for that slide, <sample>.<suffix> (named from the meta, never parsed)
def perSlide(ch, String suffix) {
    ch.flatMap { group, metas, files ->
        def named = [files].flatten().collectEntries { f -> [f.name, f] }
        metas.collect { m -> [m, named["${m.id}.${suffix}"]] }
    }
}

// One method's per-slide outputs (its process's .out, or per-slide channels of the same names) as
// [ meta, method, file ] channels, the same for every method: json (<sample>.<method>_qc.json), maps,
// csv (proportions), h5ad (the mapped slide); and its versions
def methodOutputs(String method, out) {
    def tag = { ch -> ch.map { meta, f -> [meta, method, f] } }
    [json: tag(out.json), png: tag(out.maps), csv: tag(out.csv), mapped: tag(out.h5ad), versions: out.versions]
}

// Every method's outputs mixed per kind: [ json, png, csv, mapped, versions ] channels
def collectMethods(List outs) {
    def kinds = ['json', 'png', 'csv', 'mapped', 'versions']
    outs.inject(kinds.collectEntries { [it, Channel.empty()] }) { all, one ->
        kinds.collectEntries { [it, all[it].mix(one[it])] }
    }
}

workflow MAPPING {
    take:
    slides         // channel: [ meta, qc h5ad ] (meta.methods, meta.locations, meta.selection: the slide's method plan)
    reference      // value: prepared reference h5ad
    signatures     // value: signatures CSV (used by cell2location)
    rctd_q_matrix  // value: RCTD likelihood table (--rctd_q_matrix), or [] to compute it (RCTD_QMATRIX)
    celltypist_model // value: CellTypist model (--celltypist_model .pkl), or [] to train one (TRAIN_CELLTYPIST)
    domains        // channel: [ meta, <sample>.domains.csv ] (slides with spatial domains; CellTypist may vote over them)

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
        .map { meta, h5ad -> [meta.group, [meta, h5ad]] }
        .groupTuple()
        .map { group, pairs ->
            def (metas, files) = splitPairs(pairs)
            [[id: group], metas, files]
        }
    CELL2LOCATION(groups, signatures)
    methodRuns << methodOutputs('cell2location', [
        json:     perSlide(CELL2LOCATION.out.json, 'cell2location_qc.json'),
        maps:     perSlide(CELL2LOCATION.out.maps, 'cell2location_maps.png'),
        csv:      perSlide(CELL2LOCATION.out.csv, 'cell2location_q05.csv'),
        h5ad:     perSlide(CELL2LOCATION.out.h5ad, 'cell2location.h5ad'),
        versions: CELL2LOCATION.out.versions,
    ])

    TANGRAM(runs('tangram'), reference)
    methodRuns << methodOutputs('tangram', TANGRAM.out)

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
    methodRuns << methodOutputs('rctd', RCTD.out)

    FLASHDECONV(runs('flashdeconv'), reference)
    methodRuns << methodOutputs('flashdeconv', FLASHDECONV.out)

    NNLS(runs('nnls'), reference)
    methodRuns << methodOutputs('nnls', NNLS.out)

    // CellTypist's model: once per run (never per slide), trained only once the slides it labels are
    // known (with --methods auto, the slides of cells), on the genes all of them share
    if (celltypist_model) {
        ct_model = Channel.value(celltypist_model)
    } else {
        // the slides in sample order (<sample>.qc.h5ad), never in the order of their work folders: the
        // training draws each reference cell's depth from the slides' cells in that order
        TRAIN_CELLTYPIST(
            runs('celltypist').map { meta, h5ad -> h5ad }.collect(sort: { a, b -> a.name <=> b.name })
                .combine(reference.map { ref -> [ref] })
                .map { items -> [[id: 'celltypist'], items[-1], items[0..-2]] }
        )
        ct_model = TRAIN_CELLTYPIST.out.model.map { meta, pkl -> pkl }.first()  // a value: every slide's task reads it
        versions = versions.mix(TRAIN_CELLTYPIST.out.versions)
    }
    ct_slides = runs('celltypist')
        .map { meta, h5ad -> [meta.id, meta, h5ad] }
        .join(domains.map { meta, csv -> [meta.id, csv] }, remainder: true)
        .filter { it[1] != null }
        .map { id, meta, h5ad, csv -> [meta, h5ad, csv ?: []] }
    CELLTYPIST(ct_slides, ct_model)
    methodRuns << methodOutputs('celltypist', CELLTYPIST.out)
    celltypist_labels = CELLTYPIST.out.labels  // [ meta, <sample>.celltypist_labels.csv ] (for REGION_SUMMARIES)

    def all = collectMethods(methodRuns)
    method_json = all.json      // [ meta, method, <sample>.<method>_qc.json ]
    method_png  = all.png.map { meta, method, f -> f }.mix(CELL2LOCATION.out.figures.map { meta, f -> f })
    proportions = all.csv       // [ meta, method, the slide's proportion table ]
    mapped      = all.mapped    // [ meta, method, mapped h5ad ] (for SPATIAL_RESULTS)
    versions    = versions.mix(all.versions)

    // agreement and consensus, per slide: where two or more methods ran (counted from the slide's
    // outputs; each slide's group is complete once every method of its plan gave its table)
    to_compare = proportions
        .map { meta, method, csv -> [groupKey(meta.id, meta.methods.size()), meta, method, csv] }
        .groupTuple()
        .filter { key, metas, methods, tables -> methods.size() >= 2 }
        .map { key, metas, methods, tables ->
            def order = (0..<methods.size()).toList().sort { methods[it] }
            [metas[0].id, metas[0], order.collect { methods[it] }, order.collect { tables[it] }]
        }
        .join(slides.map { meta, h5ad -> [meta.id, h5ad] })
        .map { id, meta, methods, tables, h5ad -> [meta, methods, tables, h5ad] }
    COMPARE_METHODS(to_compare, reference)
    // the run's tables, from every slide's
    SUMMARISE_AGREEMENT(
        COMPARE_METHODS.out.agreement.map { meta, f -> f }.collect(sort: true),
        COMPARE_METHODS.out.summary.map { meta, f -> f }.collect(sort: true)
    )
    versions  = versions.mix(COMPARE_METHODS.out.versions, SUMMARISE_AGREEMENT.out.versions)
    agreement = SUMMARISE_AGREEMENT.out.matrix.mix(
        SUMMARISE_AGREEMENT.out.csv, SUMMARISE_AGREEMENT.out.pairs, SUMMARISE_AGREEMENT.out.summary,
        COMPARE_METHODS.out.png.flatMap { meta, f -> [f].flatten() }
    )
    // [ meta, consensus proportions, disagreement ] per slide with a consensus (for SPATIAL_RESULTS)
    consensus = COMPARE_METHODS.out.consensus.join(COMPARE_METHODS.out.disagreement)

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
    method_json    // channel: [ meta, method, <sample>.<method>_qc.json ]
    method_png     // channel: every method's maps and figures
    proportions    // channel: [ meta, method, the slide's proportion table ]
    selection      // channel: spatialmap_method_selection_mqc.tsv (methods per slide, for MultiQC)
    agreement      // channel: the run's agreement tables, the consensus summary and maps
    mapped         // channel: [ meta, method, <sample>.<method>.h5ad ]
    consensus      // channel: [ meta, <sample>.consensus_proportions.csv, <sample>.consensus_disagreement.csv ]
    celltypist_labels // channel: [ meta, <sample>.celltypist_labels.csv ] (slides CellTypist labelled)
    versions       // channel: versions.yml
}
