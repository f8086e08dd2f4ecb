//
// Per slide: segment (Visium HD cells mode: StarDist per image patch, when asked or when
// Space Ranger gave no boundaries; ProSeg when asked, Visium HD and Xenium, refining the platform's
// cells or, stardist_proseg, StarDist's nuclei), read the Space Ranger outs/ (or AnnData), then QC and
// remove mitochondrial genes
//
include { SEGMENTATION_STARDIST } from './segmentation_stardist'
include { SEGMENTATION_PROSEG   } from './segmentation_proseg'
include { READ_SLIDE            } from '../../modules/local/read_slide/main'
include { SLIDE_QC              } from '../../modules/local/slide_qc/main'

workflow SLIDE_PREPROCESS {
    take:
    slides          // channel: [ meta, spaceranger outs/ or h5ad ]   (meta.segmentation: none, spaceranger, xenium, stardist, proseg, stardist_proseg)
    mt_genes        // value: mitochondrial gene list file, or []
    stardist_model  // value: local StarDist model folder, or [] (2D_versatile_he)

    main:
    to_segment = slides.branch { meta, slide ->
        stardist: meta.segmentation in ['stardist', 'stardist_proseg']
        proseg: meta.segmentation == 'proseg'
        other: true
    }
    SEGMENTATION_STARDIST(to_segment.stardist, stardist_model)
    // a segmentation subworkflow emits [ meta, <sample>.cells.parquet ] (see SEGMENTATION_STARDIST)
    nuclei = SEGMENTATION_STARDIST.out.cells.branch { meta, c ->
        refine: meta.segmentation == 'stardist_proseg'   // StarDist's nuclei: ProSeg's prior
        final_: true
    }
    // [ meta, slide, prior cells or [] (the platform's cells) ]
    SEGMENTATION_PROSEG(
        to_segment.proseg.map { meta, slide -> [meta, slide, []] }
            .mix(to_segment.stardist.join(nuclei.refine))
    )
    cells = nuclei.final_.mix(SEGMENTATION_PROSEG.out.cells)

    // [ meta, slide, cells or [] ]
    to_read = slides
        .join(cells, remainder: true)
        .map { meta, slide, c -> [meta, slide, c ?: []] }
    READ_SLIDE(to_read)
    SLIDE_QC(READ_SLIDE.out.h5ad, mt_genes)

    emit:
    h5ad         = SLIDE_QC.out.h5ad                                   // channel: [ meta, qc h5ad ]
    json         = SLIDE_QC.out.json                                   // channel: [ meta, qc json ]
    png          = SLIDE_QC.out.png                                    // channel: [ meta, qc maps png ]
    segmentation = SEGMENTATION_STARDIST.out.json.mix(SEGMENTATION_PROSEG.out.json)  // channel: [ meta, segmentation json ]
    cells        = cells                                               // channel: [ meta, <sample>.cells.parquet ] (pipeline's segmentations)
    versions     = READ_SLIDE.out.versions.mix(SLIDE_QC.out.versions, SEGMENTATION_STARDIST.out.versions, SEGMENTATION_PROSEG.out.versions)  // channel: versions.yml
}
