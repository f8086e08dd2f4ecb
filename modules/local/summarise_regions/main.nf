process SUMMARISE_REGIONS {
    tag "${meta.id}"
    label 'process_low'
    // the annotation image: decoupler's per-domain ranking (the domains' labels)
    container "${params.container_registry}/spatialmap-annotation:${params.container_tag}"

    input:
    // one slide: its domains table; its methods and each one's proportion table, in the same order;
    // the methods' consensus and disagreement ([] with a single method); CellTypist's labels ([] where
    // it did not run); the slide's marker scores ([] without marker genes)
    tuple val(meta), path(domains), val(methods), path(tables, stageAs: 'tables/*'), path(consensus, stageAs: 'consensus/*'), path(disagreement, stageAs: 'disagreement/*'), path(celltypist, stageAs: 'celltypist/*'), path(marker_scores, stageAs: 'markers/*')

    output:
    tuple val(meta), path("${meta.id}.region_composition.csv") , emit: composition
    tuple val(meta), path("${meta.id}.domain_proportions.csv") , emit: domain_proportions
    tuple val(meta), path("${meta.id}.region_locations.csv")   , emit: locations
    tuple val(meta), path("${meta.id}.domain_annotation.csv")  , emit: annotation
    tuple val(meta), path("${meta.id}.domain_ranking.csv")     , emit: ranking
    tuple val(meta), path("${meta.id}.region_composition.png") , emit: png
    tuple val(meta), path("${meta.id}.regions_qc.json")        , emit: json
    tuple val(meta), path("${meta.id}.marker_agreement.csv")   , emit: marker_agreement, optional: true
    tuple val(meta), path("${meta.id}.marker_agreement.png")   , emit: marker_agreement_png, optional: true
    path 'versions.yml'                                       , emit: versions

    script:
    def args = task.ext.args ?: ''
    def with_consensus = consensus ? "--consensus ${consensus} --disagreement ${disagreement}" : ''
    def with_celltypist = celltypist ? "--celltypist ${celltypist}" : ''
    def with_markers = marker_scores ? "--marker-scores ${marker_scores}" : ''
    """
    summarise_regions.py \\
        --sample '${meta.id}' \\
        --domains ${domains} \\
        --methods ${methods.join(' ')} \\
        --proportions ${tables} \\
        ${with_consensus} \\
        ${with_celltypist} \\
        ${with_markers} \\
        --outdir . \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    """
    touch ${meta.id}.region_composition.csv ${meta.id}.domain_proportions.csv ${meta.id}.region_locations.csv
    touch ${meta.id}.region_composition.png ${meta.id}.domain_annotation.csv ${meta.id}.domain_ranking.csv
    ${marker_scores ? "touch ${meta.id}.marker_agreement.csv ${meta.id}.marker_agreement.png" : ''}
    echo '{"sample": "${meta.id}"}' > ${meta.id}.regions_qc.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
