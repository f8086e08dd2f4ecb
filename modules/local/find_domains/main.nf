process FIND_DOMAINS {
    tag "${meta.id}"
    label 'process_low'
    container "${params.container_registry}/spatialmap-annotation:${params.container_tag}"

    input:
    // one group (meta: [id: group]): the meta of each of its slides and their QC'd h5ad, in the same order
    tuple val(meta), val(metas), path(h5ads, stageAs: 'slides/*')
    path novae_model, stageAs: 'novae_model/*'  // a local pretrained Novae folder (--novae_model), or [] (trained here)

    output:
    // per slide (DOMAINS gives each file back its slide's meta, by the name made from it)
    tuple val(meta), val(metas), path('*.domains.csv')       , emit: csv
    tuple val(meta), val(metas), path('*.domains_qc.json')   , emit: json
    tuple val(meta), val(metas), path('*.domains_map.png')   , emit: png
    // the group's trained Novae model (none with SpatialLeiden or --novae_model)
    tuple val(meta), path("${meta.id}.novae_model")          , emit: model, optional: true
    path 'versions.yml'                                      , emit: versions

    script:
    def args = task.ext.args ?: ''   // method, levels, seed, Novae settings: conf/modules.config
    """
    export HF_HOME=\$PWD/.hf_home
    find_domains.py \\
        --samples ${metas.collect { "'${it.id}'" }.join(' ')} \\
        --h5ad ${h5ads} \\
        --group '${meta.id}' \\
        ${novae_model ? "--novae-model ${novae_model}" : ''} \\
        --outdir . \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    def samples = metas.collect { "'${it.id}'" }.join(' ')
    """
    for s in ${samples}; do
        printf 'location,domain\\n' > "\$s.domains.csv"
        echo "{\\"sample\\": \\"\$s\\", \\"group\\": \\"${meta.id}\\", \\"method\\": \\"stub\\"}" > "\$s.domains_qc.json"
        touch "\$s.domains_map.png"
    done
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
