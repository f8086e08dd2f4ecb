//
// Region-level summaries per slide (SUMMARISE_REGIONS): from its domains, every method's proportion
// table, the methods' consensus and disagreement (slides with two or more methods) and CellTypist's
// labels (slides it ran on): each domain's mean composition per method, the domains' shares, and the
// locations no single label fits (ambiguous, with why). A slide's tables are complete once every
// method of its plan (meta.methods) gave its table; whether it has a consensus (two or more methods)
// and CellTypist's labels ('celltypist' in meta.methods) is known from its plan, so nothing waits for
// a channel to close. A slide without domains or without any method's table gets no summary. With marker
// genes scored (with_markers: every slide has scores), each method's shares are checked against them.
//
include { SUMMARISE_REGIONS } from '../../modules/local/summarise_regions/main'

workflow REGION_SUMMARIES {
    take:
    domains      // channel: [ meta, <sample>.domains.csv ]
    proportions  // channel: [ meta, method, the slide's proportion table ] (MAPPING.out.proportions)
    consensus    // channel: [ meta, consensus proportions, consensus disagreement ] (MAPPING.out.consensus)
    celltypist   // channel: [ meta, <sample>.celltypist_labels.csv ] (MAPPING.out.celltypist_labels)
    markers      // channel: [ meta, <sample>.marker_scores.csv ] (MARKERS.out.scores), or empty
    with_markers // boolean: whether every slide has marker scores

    main:
    // [ id, meta, methods, tables ]: every method of the slide's plan, in name order (as COMPARE_METHODS)
    tables = proportions
        .map { meta, method, csv -> [groupKey(meta.id, meta.methods.size()), meta, method, csv] }
        .groupTuple()
        .map { key, metas, methods, csvs ->
            def order = (0..<methods.size()).toList().sort { methods[it] }
            [metas[0].id, metas[0], order.collect { methods[it] }, order.collect { csvs[it] }]
        }
        .join(domains.map { meta, csv -> [meta.id, csv] })  // [ id, meta, methods, tables, domains ]
        .branch { id, meta, methods, csvs, dom ->
            compared: methods.size() >= 2
            single: true
        }
    with_consensus = tables.compared
        .join(consensus.map { meta, props, scores -> [meta.id, props, scores] })
        .mix(tables.single.map { id, meta, methods, csvs, dom -> [id, meta, methods, csvs, dom, [], []] })
        .branch { id, meta, methods, csvs, dom, props, scores ->
            labelled: 'celltypist' in methods
            other: true
        }
    to_summarise = with_consensus.labelled
        .join(celltypist.map { meta, labels -> [meta.id, labels] })
        .mix(with_consensus.other.map { row -> row + [[]] })
        .map { id, meta, methods, csvs, dom, props, scores, labels -> [meta, dom, methods, csvs, props, scores, labels] }
    with_scores = with_markers
        ? to_summarise.map { row -> [row[0].id, row] }
            .join(markers.map { meta, csv -> [meta.id, csv] })
            .map { id, row, csv -> row + [csv] }
        : to_summarise.map { row -> row + [[]] }
    SUMMARISE_REGIONS(with_scores)

    emit:
    composition        = SUMMARISE_REGIONS.out.composition         // channel: [ meta, <sample>.region_composition.csv ]
    domain_proportions = SUMMARISE_REGIONS.out.domain_proportions  // channel: [ meta, <sample>.domain_proportions.csv ]
    locations          = SUMMARISE_REGIONS.out.locations           // channel: [ meta, <sample>.region_locations.csv ]
    png                = SUMMARISE_REGIONS.out.png                 // channel: [ meta, <sample>.region_composition.png ]
    json               = SUMMARISE_REGIONS.out.json                // channel: [ meta, <sample>.regions_qc.json ]
    marker_png         = SUMMARISE_REGIONS.out.marker_agreement_png  // channel: [ meta, <sample>.marker_agreement.png ]
    versions           = SUMMARISE_REGIONS.out.versions            // channel: versions.yml
}
