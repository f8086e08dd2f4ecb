//
// Per slide: read the Space Ranger outs/ (or AnnData), then QC and remove mitochondrial genes
//
include { READ_SLIDE } from '../../modules/local/read_slide/main'
include { SLIDE_QC   } from '../../modules/local/slide_qc/main'

workflow SLIDE_PREPROCESS {
    take:
    slides    // channel: [ meta, spaceranger outs/ or h5ad ]
    mt_genes  // value: mitochondrial gene list file, or []

    main:
    READ_SLIDE(slides)
    SLIDE_QC(READ_SLIDE.out.h5ad, mt_genes)

    emit:
    h5ad     = SLIDE_QC.out.h5ad                                   // channel: [ meta, qc h5ad ]
    json     = SLIDE_QC.out.json                                   // channel: [ meta, qc json ]
    png      = SLIDE_QC.out.png                                    // channel: [ meta, qc maps png ]
    versions = READ_SLIDE.out.versions.mix(SLIDE_QC.out.versions)  // channel: versions.yml
}
