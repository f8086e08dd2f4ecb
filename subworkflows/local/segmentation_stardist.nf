//
// StarDist nuclei on the H&E of Visium HD slides, one task per image patch (as nf-core/sopa):
// MAKE_PATCHES -> SEGMENT_PATCH (per patch) -> RESOLVE_SEGMENTATION (overlaps merged)
//
include { MAKE_PATCHES         } from '../../modules/local/make_patches/main'
include { SEGMENT_PATCH        } from '../../modules/local/segment_patch/main'
include { RESOLVE_SEGMENTATION } from '../../modules/local/resolve_segmentation/main'

workflow SEGMENTATION_STARDIST {
    take:
    slides   // channel: [ meta, Visium HD outs/ ]   (meta.segmentation == 'stardist')
    model    // value: local StarDist model folder, or [] (2D_versatile_he, downloaded by StarDist)

    main:
    MAKE_PATCHES(slides)

    // one item per patch: [ meta, store, patch_<i>.json ]
    per_patch = MAKE_PATCHES.out.store
        .join(MAKE_PATCHES.out.patches)
        .flatMap { meta, store, patches ->
            def list = patches instanceof List ? patches : [patches]
            list.collect { p -> [meta, store, p] }
        }
    SEGMENT_PATCH(per_patch, model)

    // all patches of a slide, once every one is done, with the patch files (their area and µm per pixel,
    // for the plausibility check): [ meta, [patch cells], [patch_<i>.json] ]
    n_patches = MAKE_PATCHES.out.patches.map { meta, patches -> [meta, patches instanceof List ? patches.size() : 1] }
    grouped = SEGMENT_PATCH.out.cells
        .combine(n_patches, by: 0)
        .map { meta, cells, n -> [groupKey(meta, n), cells] }
        .groupTuple()
        .map { key, cells -> [key.getGroupTarget(), cells.sort { it.name }] }
        .join(MAKE_PATCHES.out.patches)
    RESOLVE_SEGMENTATION(grouped)

    emit:
    cells    = RESOLVE_SEGMENTATION.out.cells   // channel: [ meta, <sample>.cells.parquet ]
    json     = RESOLVE_SEGMENTATION.out.json    // channel: [ meta, <sample>.segmentation.json ]
    versions = MAKE_PATCHES.out.versions.first()
        .mix(SEGMENT_PATCH.out.versions.first(), RESOLVE_SEGMENTATION.out.versions)   // channel: versions.yml
}
