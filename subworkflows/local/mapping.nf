//
// Map cell types onto the slides: cell2location jointly per group, Tangram per slide,
// and the agreement between the two where both ran
//
include { CELL2LOCATION   } from '../../modules/local/cell2location/main'
include { TANGRAM         } from '../../modules/local/tangram/main'
include { COMPARE_METHODS } from '../../modules/local/compare_methods/main'

// [ [sample, file], ... ] sorted by sample -> [ [samples], [files] ]
def splitPairs(pairs) {
    def sorted = pairs.sort { a, b -> a[0] <=> b[0] }
    [sorted.collect { it[0] }, sorted.collect { it[1] }]
}

workflow MAPPING {
    take:
    slides      // channel: [ meta, qc h5ad ]
    reference   // value: prepared reference h5ad
    signatures  // value: signatures CSV (used by cell2location)
    methods     // list: 'cell2location' and/or 'tangram'

    main:
    versions     = Channel.empty()
    c2l_json     = Channel.empty()
    c2l_png      = Channel.empty()
    c2l_csv      = Channel.empty()
    tangram_json = Channel.empty()
    tangram_csv  = Channel.empty()
    tangram_genes = Channel.empty()
    tangram_png  = Channel.empty()
    agreement    = Channel.empty()

    if ('cell2location' in methods) {
        groups = slides
            .map { meta, h5ad -> [meta.group, [meta.id, h5ad]] }
            .groupTuple()
            .map { group, pairs ->
                def (samples, files) = splitPairs(pairs)
                [[id: group], samples, files]
            }
        CELL2LOCATION(groups, signatures)
        versions = versions.mix(CELL2LOCATION.out.versions)
        c2l_json = CELL2LOCATION.out.json.flatten()
        c2l_png  = CELL2LOCATION.out.maps.flatten().mix(CELL2LOCATION.out.group_png.flatten())
        c2l_csv  = CELL2LOCATION.out.csv.flatten()
            .map { csv -> [csv.name - '.cell2location_q05.csv', csv] }
    }

    if ('tangram' in methods) {
        TANGRAM(slides, reference)
        versions      = versions.mix(TANGRAM.out.versions)
        tangram_json  = TANGRAM.out.json.map { meta, f -> f }
        tangram_genes = TANGRAM.out.heldout.map { meta, f -> f }
        tangram_png   = TANGRAM.out.maps.map { meta, f -> f }
        tangram_csv   = TANGRAM.out.csv.map { meta, f -> [meta.id, f] }
    }

    // every method's per-slide table: <sample>.cell2location_q05.csv, <sample>.<method>_proportions.csv
    proportions = c2l_csv.map { sample, csv -> csv }.mix(tangram_csv.map { sample, csv -> csv })
    if (methods.size() >= 2) {
        COMPARE_METHODS(
            proportions.collect(sort: true),
            slides.map { meta, h5ad -> h5ad }.collect(sort: true)
        )
        versions  = versions.mix(COMPARE_METHODS.out.versions)
        agreement = COMPARE_METHODS.out.matrix.mix(
            COMPARE_METHODS.out.csv, COMPARE_METHODS.out.pairs, COMPARE_METHODS.out.summary,
            COMPARE_METHODS.out.png.flatten()
        )
    }

    emit:
    c2l_json       // channel: per-slide cell2location QC JSON
    c2l_png        // channel: cell2location maps and group figures
    tangram_json   // channel: per-slide Tangram QC JSON
    tangram_genes  // channel: per-slide held-out gene tables
    tangram_png    // channel: Tangram maps
    agreement      // channel: agreement tables
    versions       // channel: versions.yml
}
