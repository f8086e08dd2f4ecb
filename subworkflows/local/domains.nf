//
// Spatial domains after QC (no reference needed): one FIND_DOMAINS task per samplesheet group,
// its slides handled together (one Novae model, or one SpatialLeiden clustering; labels D1..Dk
// consistent over the group), its per-slide outputs given back to each slide (perSlide).
//
include { FIND_DOMAINS } from '../../modules/local/find_domains/main'

// A group task's per-slide outputs, [ group meta, slide metas, files ], as one [ slide meta, file ] per
// slide (SpatialmapGroups.perSlide: the file the task wrote for that slide, <sample>.<suffix>)
def perSlide(ch, String suffix) {
    ch.flatMap { group, metas, files -> SpatialmapGroups.perSlide(metas, files, suffix) }
}

workflow DOMAINS {
    take:
    slides       // channel: [ meta, qc h5ad ] (SLIDE_PREPROCESS.out.h5ad)
    novae_model  // value: a local pretrained Novae folder (--novae_model), or [] (trained per group)

    main:
    groups = slides
        .map { meta, h5ad -> [meta.group, [meta, h5ad]] }
        .groupTuple()
        .map { group, rows -> SpatialmapGroups.ofGroup(group, rows) }  // [ [id: group], metas, h5ads ]
    FIND_DOMAINS(groups, novae_model)

    emit:
    csv      = perSlide(FIND_DOMAINS.out.csv, 'domains.csv')        // channel: [ meta, <sample>.domains.csv ]
    json     = perSlide(FIND_DOMAINS.out.json, 'domains_qc.json')   // channel: [ meta, <sample>.domains_qc.json ]
    png      = perSlide(FIND_DOMAINS.out.png, 'domains_map.png')    // channel: [ meta, <sample>.domains_map.png ]
    model    = FIND_DOMAINS.out.model                               // channel: [ [id: group], <group>.novae_model ]
    versions = FIND_DOMAINS.out.versions                            // channel: versions.yml
}
