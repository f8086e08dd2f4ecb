//
// Visium HD, Xenium and SpatialData slides: a new SpatialData store with the mapping results
// (every method's proportions, and the methods' consensus and disagreement where 2+ ran),
// the mapped h5ad, a composition table, one label per unit and a map (standard Visium slides skip it)
//
include { SPATIAL_OUTPUTS } from '../../modules/local/spatial_outputs/main'

def SPATIAL_TYPES = ['visium_hd', 'xenium', 'zarr']

workflow SPATIAL_RESULTS {
    take:
    slides   // channel: [ meta, input folder or store ]
    qc_h5ad  // channel: [ meta, qc h5ad ] (meta with the slide's method plan: label_methods orders the label's methods)
    mapped   // channel: [ meta, method, mapped h5ad ] (any number per slide, one per method)
    cells    // channel: [ meta, <sample>.cells.parquet ] (slides the pipeline segmented)
    consensus // channel: [ meta, <sample>.consensus_proportions.csv, <sample>.consensus_disagreement.csv ] (slides with 2+ methods)
    domains  // channel: [ meta, <sample>.domains.csv ] (slides with spatial domains)

    main:
    per_slide = mapped.map { meta, method, h5ad -> [meta.id, h5ad] }.groupTuple()
    inputs = slides
        .filter { meta, path -> meta.input_type in SPATIAL_TYPES }
        .map { meta, path -> [meta.id, path] }
        .join(qc_h5ad.map { meta, h5ad -> [meta.id, meta, h5ad] })
        .join(per_slide, remainder: true)
        .filter { it[1] != null }
        .join(cells.map { meta, c -> [meta.id, c] }, remainder: true)
        .filter { it[1] != null }
        .join(consensus.map { meta, props, scores -> [meta.id, [props, scores]] }, remainder: true)
        .filter { it[1] != null }
        .join(domains.map { meta, csv -> [meta.id, csv] }, remainder: true)
        .filter { it[1] != null }
        .map { id, path, meta, h5ad, results, c, cs, d ->
            [meta, path, h5ad, (results ?: []).sort { it.name }, c ?: [], cs ? cs[0] : [], cs ? cs[1] : [], d ?: []]
        }
    SPATIAL_OUTPUTS(inputs)

    emit:
    zarr        = SPATIAL_OUTPUTS.out.zarr         // channel: [ meta, <sample>.spatialdata.zarr ]
    h5ad        = SPATIAL_OUTPUTS.out.h5ad         // channel: [ meta, <sample>.mapped.h5ad ]
    composition = SPATIAL_OUTPUTS.out.composition  // channel: [ meta, <sample>.composition.csv ]
    png         = SPATIAL_OUTPUTS.out.png          // channel: [ meta, <sample>.cell_types_map.png ]
    versions    = SPATIAL_OUTPUTS.out.versions     // channel: versions.yml
}
