//
// Marker genes after QC (and domains): one SCORE_MARKERS task per samplesheet group, its slides scored
// together by Enrichmap (one batch per slide), each slide's domains named by the sets that rise in them.
// The sets are the user's --markers (no reference needed) or those derived from the reference (CHECK_OVERLAP).
//
include { SCORE_MARKERS } from '../../modules/local/score_markers/main'

workflow MARKERS {
    take:
    slides        // channel: [ meta, qc h5ad ] (SLIDE_PREPROCESS.out.h5ad)
    domains       // channel: [ meta, <sample>.domains.csv ] (DOMAINS.out.csv), or empty with no domains
    with_domains  // boolean: whether the slides have domains (--domain_method other than none)
    markers       // value: the marker sets file

    main:
    rows = with_domains
        ? slides.map { meta, h5ad -> [meta.id, meta, h5ad] }
            .join(domains.map { meta, csv -> [meta.id, csv] }, failOnMismatch: true)
            .map { id, meta, h5ad, csv -> [meta, h5ad, csv] }
        : slides.map { meta, h5ad -> [meta, h5ad, []] }
    groups = rows
        .map { meta, h5ad, csv -> [meta.group, [meta, h5ad, csv]] }
        .groupTuple()
        .map { group, members -> SpatialmapGroups.ofGroup(group, members) }
        .map { group, metas, h5ads, csvs -> [group, metas, h5ads, csvs.flatten()] }  // no domains: []
    SCORE_MARKERS(groups, markers)

    emit:
    // channels: [ meta, <sample>.<file> ] per slide
    scores     = SCORE_MARKERS.out.scores.flatMap { g, metas, f -> SpatialmapGroups.perSlide(metas, f, 'marker_scores.csv') }
    annotation = SCORE_MARKERS.out.annotation.flatMap { g, metas, f -> SpatialmapGroups.perSlide(metas, f, 'marker_domain_annotation.csv') }
    json       = SCORE_MARKERS.out.json.flatMap { g, metas, f -> SpatialmapGroups.perSlide(metas, f, 'markers_qc.json') }
    png        = SCORE_MARKERS.out.png.flatMap { g, metas, f -> SpatialmapGroups.perSlide(metas, f, 'marker_scores.png') }
    versions   = SCORE_MARKERS.out.versions  // channel: versions.yml
}
