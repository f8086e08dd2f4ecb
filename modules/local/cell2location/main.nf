process CELL2LOCATION {
    tag "${meta.id}"
    label 'process_gpu'
    container "${params.container_registry}/spatialmap-cell2location:${params.container_tag}"

    input:
    tuple val(meta), val(samples), path(slides, stageAs: 'slides/*')  // one group: its samples and their QC'd h5ad
    path signatures

    output:
    path '*.cell2location.h5ad'          , emit: h5ad
    path '*.cell2location_q05.csv'       , emit: csv
    path '*.cell2location_maps.png'      , emit: maps
    path '*.cell2location_qc.json'       , emit: json
    path "${meta.id}.cell2location_model", emit: model
    path "${meta.id}.cell2location_*.png", emit: figures  // the group's figures (training loss, ...)
    path 'versions.yml'                  , emit: versions

    script:
    def args = task.ext.args ?: ''   // settings from conf/modules.config (priors, epochs, convergence, seed, ...)
    """
    map_cell2location.py \\
        --signatures ${signatures} \\
        --slides ${slides} \\
        --samples ${samples.join(' ')} \\
        --group '${meta.id}' \\
        --threads ${task.cpus} \\
        --accelerator ${task.accelerator ? 'gpu' : 'auto'} \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    """
    for s in ${samples.join(' ')}; do
        touch \$s.cell2location.h5ad \$s.cell2location_q05.csv \$s.cell2location_maps.png
        echo "{\\"sample\\": \\"\$s\\"}" > \$s.cell2location_qc.json
    done
    mkdir ${meta.id}.cell2location_model
    touch ${meta.id}.cell2location_training_loss.png
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
