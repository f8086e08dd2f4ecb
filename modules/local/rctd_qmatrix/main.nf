// RCTD's likelihood table: rctd-py's compute_q_matrix numbers (rctd-py would download them),
// computed in seconds by spatialmap.methods.rctd_table and checked against the package.
// conf/modules.config gives it a storeDir: computed once per settings and kept across runs.
process RCTD_QMATRIX {
    tag "${task.ext.prefix ?: 'rctd_q'}"
    label 'process_low'
    container "${params.container_registry}/spatialmap-deconv:${params.container_tag}"

    input:
    val ready   // a value once a slide is known to run RCTD (so nothing is computed when none does)

    output:
    path 'rctd_q_matrices.npz' , emit: npz
    path 'rctd_q_matrices.json', emit: json
    path 'versions.yml'        , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    compute_rctd_q.py \\
        --output rctd_q_matrices.npz \\
        --workers ${task.cpus} \\
        --process-name '${task.process}' \\
        ${args}
    """

    stub:
    """
    touch rctd_q_matrices.npz
    echo '{}' > rctd_q_matrices.json
    printf '"%s":\\n    stub: "true"\\n' '${task.process}' > versions.yml
    """
}
