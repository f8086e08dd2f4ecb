process CELL2LOCATION {
    tag "${meta.id}"
    label 'process_gpu'
    container "${params.container_registry}/spatialmap-cell2location:${params.container_tag}"

    input:
    // one group (meta: [id: group]): the meta of each of its slides and their QC'd h5ad, in the same order
    tuple val(meta), val(slide_metas), path(slides, stageAs: 'slides/*')
    path signatures

    output:
    // per slide, in a folder named by its sample (MAPPING gives each file back its slide's meta)
    tuple val(meta), val(slide_metas), path('*/*.cell2location.h5ad')     , emit: h5ad
    tuple val(meta), val(slide_metas), path('*/*.cell2location_q05.csv')  , emit: csv
    tuple val(meta), val(slide_metas), path('*/*.cell2location_maps.png') , emit: maps
    tuple val(meta), val(slide_metas), path('*/*.cell2location_qc.json')  , emit: json
    // the group's model and figures (training loss, ...)
    tuple val(meta), path("${meta.id}.cell2location_model")              , emit: model
    tuple val(meta), path("${meta.id}.cell2location_*.png")              , emit: figures
    path 'versions.yml'                                                  , emit: versions

    script:
    def args = task.ext.args ?: ''   // settings from conf/modules.config (priors, epochs, convergence, seed, ...)
    """
    map_cell2location.py \\
        --signatures ${signatures} \\
        --slide ${slides} \\
        --sample ${slide_metas.collect { "'${it.id}'" }.join(' ')} \\
        --group '${meta.id}' \\
        --threads ${task.cpus} \\
        --accelerator ${task.accelerator ? 'gpu' : 'auto'} \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    def samples = slide_metas.collect { "'${it.id}'" }.join(' ')
    """
    for s in ${samples}; do
        mkdir -p "\$s"
        touch "\$s/\$s.cell2location.h5ad" "\$s/\$s.cell2location_q05.csv" "\$s/\$s.cell2location_maps.png"
        echo "{\\"sample\\": \\"\$s\\", \\"method\\": \\"cell2location\\"}" > "\$s/\$s.cell2location_qc.json"
    done
    mkdir ${meta.id}.cell2location_model
    touch ${meta.id}.cell2location_training_loss.png
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
