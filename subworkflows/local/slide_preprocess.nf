//
// Per slide: segment (Visium HD cells mode: StarDist per image patch, when asked or when
// Space Ranger gave no boundaries; ProSeg when asked, Visium HD and Xenium, refining the platform's
// cells or, stardist_proseg, StarDist's nuclei), read the Space Ranger outs/ (or AnnData), then QC and
// remove mitochondrial genes. SLIDE_QC also makes the slide's method plan (which mapping methods run on
// it and why: spatialmap.methods.registry.plan); from here on every channel carries it in meta:
// meta.methods, meta.locations, meta.selection, meta.label_methods.
//
include { SEGMENTATION_STARDIST } from './segmentation_stardist'
include { SEGMENTATION_PROSEG   } from './segmentation_proseg'
include { READ_SLIDE            } from '../../modules/local/read_slide/main'
include { SLIDE_QC              } from '../../modules/local/slide_qc/main'

// The method plan of a slide's QC JSON (method_plan, written by slide_qc.py) as meta fields
def planOf(json) {
    def plan = new groovy.json.JsonSlurper().parseText(json.text).method_plan
    if (plan == null) {
        error "spatialmap failed: ${json.name} holds no method plan (method_plan)"
    }
    [
        locations:     plan.locations as long,
        methods:       plan.methods.collect { it.toString() },
        selection:     plan.selection.toString(),
        label_methods: plan.label_methods.collect { it.toString() },
    ]
}

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
    // [ meta, meta + its method plan ]
    planned = SLIDE_QC.out.json.map { meta, json -> [meta, meta + planOf(json)] }

    emit:
    h5ad         = SLIDE_QC.out.h5ad.join(planned).map { meta, f, m -> [m, f] }  // channel: [ meta + plan, qc h5ad ]
    json         = SLIDE_QC.out.json.join(planned).map { meta, f, m -> [m, f] }  // channel: [ meta + plan, qc json ]
    png          = SLIDE_QC.out.png.join(planned).map { meta, f, m -> [m, f] }   // channel: [ meta + plan, qc maps png ]
    segmentation = SEGMENTATION_STARDIST.out.json.mix(SEGMENTATION_PROSEG.out.json)  // channel: [ meta, segmentation json ]
    cells        = cells                                               // channel: [ meta, <sample>.cells.parquet ] (pipeline's segmentations)
    versions     = READ_SLIDE.out.versions.mix(SLIDE_QC.out.versions, SEGMENTATION_STARDIST.out.versions, SEGMENTATION_PROSEG.out.versions)  // channel: versions.yml
}
