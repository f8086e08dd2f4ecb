//
// Prepare the single-cell reference once, check its gene overlap with every slide,
// and estimate cell-type signatures once (or take the user's signatures CSV)
//
include { PREPARE_REFERENCE   } from '../../modules/local/prepare_reference/main'
include { CHECK_OVERLAP       } from '../../modules/local/check_overlap/main'
include { ESTIMATE_SIGNATURES } from '../../modules/local/estimate_signatures/main'

workflow REFERENCE_SIGNATURES {
    take:
    reference        // value: [ meta, reference h5ad ] (meta: [ id: its file name ])
    slides           // channel: [ meta, qc h5ad ]
    slide_json       // channel: [ meta, qc json ] (each slide's method plan: the methods whose gene minimum it must meet)
    mt_genes         // value: mitochondrial gene list file, or []
    user_signatures  // value: signatures CSV given by the user, or []
    c2l_slides       // channel: [ meta, qc json ] of the slides cell2location runs on (none: no signatures)

    main:
    versions = Channel.empty()
    PREPARE_REFERENCE(reference, mt_genes)
    versions = versions.mix(PREPARE_REFERENCE.out.versions)

    // [ [samples], [qc h5ad] ] in sample order
    slide_list = slides.map { meta, h5ad -> [meta.id, h5ad] }
        .toSortedList { a, b -> a[0] <=> b[0] }
        .map { pairs -> [pairs.collect { it[0] }, pairs.collect { it[1] }] }
    CHECK_OVERLAP(
        PREPARE_REFERENCE.out.h5ad,
        slide_list,
        slide_json.map { meta, json -> json }.collect(sort: true)
    )
    versions = versions.mix(CHECK_OVERLAP.out.versions)

    signatures = Channel.empty()
    signature_png = Channel.empty()
    if (user_signatures) {
        signatures = Channel.value(user_signatures)
    } else {
        // from the matched reference: after the overlap check, so a bad reference fails before training;
        // once, as soon as one slide is known to run cell2location, never when none does
        ESTIMATE_SIGNATURES(CHECK_OVERLAP.out.h5ad.combine(c2l_slides.first()).map { it[0..1] })
        signatures = ESTIMATE_SIGNATURES.out.csv.map { meta, csv -> csv }.first()  // a value: every cell2location group reads it
        signature_png = ESTIMATE_SIGNATURES.out.png.map { meta, png -> png }
        versions = versions.mix(ESTIMATE_SIGNATURES.out.versions)
    }

    emit:
    reference     = CHECK_OVERLAP.out.h5ad.map { meta, h5ad -> h5ad }          // value: reference h5ad, genes named as on the slides
    markers       = CHECK_OVERLAP.out.markers.map { meta, csv -> csv }         // value: marker sets derived from the reference
    summary       = PREPARE_REFERENCE.out.json.mix(CHECK_OVERLAP.out.tsv).map { meta, f -> f }  // channel: reference summary JSON + overlap TSV
    signatures                                                                 // value: signatures CSV
    signature_png                                                              // channel: [ png ]
    versions                                                                   // channel: versions.yml
}
