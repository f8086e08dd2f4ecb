process SCORE_MARKERS {
    tag "${meta.id}"
    label 'process_low'
    // the annotation image: Enrichmap (squidpy, pygam), decoupler's per-domain ranking
    container "${params.container_registry}/spatialmap-annotation:${params.container_tag}"

    input:
    // one group (meta: [id: group]): the meta of each of its slides, their QC'd h5ad and their domains
    // tables ([] without domains), in the same order
    tuple val(meta), val(metas), path(h5ads, stageAs: 'slides/*'), path(domains, stageAs: 'domains/*')
    path markers, stageAs: 'markers/*'  // the marker sets: the user's --markers, or derived from the reference

    output:
    // per slide (MARKERS gives each file back its slide's meta, by the name made from it)
    tuple val(meta), val(metas), path('*.marker_scores.csv')          , emit: scores
    tuple val(meta), val(metas), path('*.marker_domain_annotation.csv'), emit: annotation
    tuple val(meta), val(metas), path('*.marker_domain_ranking.csv')  , emit: ranking
    tuple val(meta), val(metas), path('*.markers_qc.json')            , emit: json
    tuple val(meta), val(metas), path('*.marker_scores.png')          , emit: png
    path 'versions.yml'                                               , emit: versions

    script:
    def args = task.ext.args ?: ''   // smoothing neighbours, significance, seed: conf/modules.config
    // Enrichmap sums a set's genes in the order of a Python set: a fixed hash seed makes the scores reproducible
    """
    export PYTHONHASHSEED=0
    score_markers.py \\
        --samples ${metas.collect { "'${it.id}'" }.join(' ')} \\
        --h5ad ${h5ads} \\
        ${domains ? "--domains ${domains}" : ''} \\
        --markers ${markers} \\
        --group '${meta.id}' \\
        --outdir . \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    def samples = metas.collect { "'${it.id}'" }.join(' ')
    """
    for s in ${samples}; do
        printf 'location,marker_label\\n' > "\$s.marker_scores.csv"
        printf 'domain,label,candidates,enriched\\n' > "\$s.marker_domain_annotation.csv"
        printf 'domain,cell_type,stat,meanchange,pval,padj\\n' > "\$s.marker_domain_ranking.csv"
        echo "{\\"sample\\": \\"\$s\\", \\"group\\": \\"${meta.id}\\", \\"method\\": \\"enrichmap\\"}" > "\$s.markers_qc.json"
        touch "\$s.marker_scores.png"
    done
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
