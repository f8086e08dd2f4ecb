process SLIDE_QC {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container_registry}/spatialmap-core:${params.container_tag}"

    input:
    tuple val(meta), path(h5ad)
    path mt_genes   // optional list of mitochondrial genes; [] when not given

    output:
    tuple val(meta), path("${prefix}.qc.h5ad")     , emit: h5ad
    tuple val(meta), path("${prefix}.qc.json")     , emit: json
    tuple val(meta), path("${prefix}.qc_maps.png") , emit: png
    path 'versions.yml'                            , emit: versions

    script:
    prefix = task.ext.prefix ?: meta.id
    def args = task.ext.args ?: ''
    def mt_list = mt_genes ? "--mt-genes ${mt_genes}" : ''
    """
    slide_qc.py \\
        --input ${h5ad} \\
        --sample '${meta.id}' \\
        --output-h5ad ${prefix}.qc.h5ad \\
        --output-json ${prefix}.qc.json \\
        --output-png ${prefix}.qc_maps.png \\
        ${mt_list} \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: meta.id
    def args = task.ext.args ?: ''
    // the QC JSON holds the sample and its method plan (for an empty slide of the row's kind of location:
    // cells where the row is segmented, Xenium and Visium HD cells): the rest of the graph reads the plan
    def kind = meta.segmentation && meta.segmentation != 'none' ? 'cell' : (meta.input_type == 'visium_hd' ? 'bin' : 'spot')
    """
    touch ${prefix}.qc.h5ad ${prefix}.qc_maps.png
    slide_qc.py --plan-only --plan-kind ${kind} --input ${h5ad} --sample '${meta.id}' --output-h5ad ${prefix}.qc.h5ad \\
        --output-json ${prefix}.qc.json --output-png ${prefix}.qc_maps.png ${args}
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
