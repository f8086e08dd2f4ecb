#!/usr/bin/env bash
# The pipeline test `test profile` (test_pipeline.yml): -profile test,local into results/, or, when
# the heavy tier has started a one-node SLURM cluster (tools/test_slurm.sh --start: SPATIALMAP_SLURM_DIR),
# the same run through it, so the SLURM test checks this run rather than running the profile again
# (tools/test_slurm.sh --check). The tasks' commands are the same either way.
set -euo pipefail
if [[ -n "${SPATIALMAP_SLURM_DIR:-}" ]]; then
    export SLURM_CONF="$SPATIALMAP_SLURM_DIR/slurm.conf"
    exec bash tools/nextflow run main.nf -profile test,local,slurm -c "$SPATIALMAP_SLURM_DIR/poll.config" \
        --max_memory 16.GB --outdir results
fi
exec bash tools/nextflow run main.nf -profile test,local --outdir results
