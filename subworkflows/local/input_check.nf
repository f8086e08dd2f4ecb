//
// Check the samplesheet before any heavy work and turn it into a channel of slides
//
include { CHECK_SAMPLESHEET } from '../../modules/local/check_samplesheet/main'

workflow INPUT_CHECK {
    take:
    samplesheet     // file: the user's samplesheet CSV
    stardist_model  // value: --stardist_model folder, or [] (checked when a slide is segmented by StarDist)
    celltypist_model // value: --celltypist_model .pkl, or [] (checked: a CellTypist model)
    markers          // value: --markers file, or [] (checked: readable marker sets)

    main:
    CHECK_SAMPLESHEET(samplesheet, samplesheet.toAbsolutePath().parent.toString(), stardist_model, celltypist_model, markers)

    slides = CHECK_SAMPLESHEET.out.csv
        .splitCsv(header: true)
        .map { row ->
            def meta = [id: row.sample, group: row.group, input_type: row.input_type, segmentation: row.segmentation ?: 'none']
            [meta, file(row.path, checkIfExists: true)]
        }

    emit:
    slides                                      // channel: [ meta, spaceranger outs/ or h5ad ] (meta: id, group, input_type, segmentation)
    versions = CHECK_SAMPLESHEET.out.versions   // channel: versions.yml
}
