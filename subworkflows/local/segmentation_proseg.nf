//
// ProSeg through sopa, one task per slide (ProSeg is multi-threaded and sopa runs it on one patch):
// Visium HD 2 µm bins refining Space Ranger 4's boundaries or an earlier segmentation (StarDist's
// nuclei), Xenium transcripts refining the platform's cells
//
include { PROSEG } from '../../modules/local/proseg/main'

workflow SEGMENTATION_PROSEG {
    take:
    slides  // channel: [ meta, slide, prior ]  (meta.segmentation: proseg or stardist_proseg; Space Ranger outs/ or
            // Xenium bundle, read-only; prior: <sample>.cells.parquet of an earlier segmentation, or [] for the platform's)

    main:
    PROSEG(slides)

    emit:
    cells    = PROSEG.out.cells     // channel: [ meta, <sample>.cells.parquet ]
    json     = PROSEG.out.json      // channel: [ meta, <sample>.proseg_qc.json ]
    versions = PROSEG.out.versions  // channel: versions.yml
}
