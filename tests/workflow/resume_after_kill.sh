#!/usr/bin/env bash
# Resume after a kill (pytest-workflow test "resume after a kill"; checked by test_reliability.py):
#  1. starts the test profile (Tangram only, few epochs: cheap) in resumed/, and SIGKILLs
#     Nextflow and its tasks (the whole process group, as when a node dies) while a TANGRAM
#     task runs; lists the tasks whose completion Nextflow had logged (finished_before_kill.txt)
#  2. reruns there with -resume to the end
#  3. runs the same, uninterrupted, in uninterrupted/ for the numbers to compare
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
args=(-profile test,local --methods tangram --tangram_max_epochs 60 --domain_method none --marker_method none --outdir results)
nf() { bash "$repo/tools/nextflow" "$@"; }

mkdir -p resumed uninterrupted
cd resumed
setsid bash "$repo/tools/nextflow" -log run1.log run "$repo/main.nf" "${args[@]}" > run1.out 2>&1 &
leader=$!
# wait until a TANGRAM task has started (its .command.begin exists), then a little longer
for _ in $(seq 1 900); do
    if grep -l "map_tangram.py" work/*/*/.command.sh 2>/dev/null | while read -r f; do
        [[ -e "$(dirname "$f")/.command.begin" ]] && echo yes; done | grep -q yes; then
        break
    fi
    if ! kill -0 "$leader" 2>/dev/null; then echo "the first run ended before a TANGRAM task started" >&2; exit 1; fi
    sleep 1
done
sleep 5
kill -KILL -- -"$leader"
wait "$leader" 2>/dev/null || true
echo "killed the first run (process group $leader)"
# tasks Nextflow had seen complete: their work dirs, from its log
grep -o "Task completed > TaskHandler\[.*" run1.log | grep "exit: 0;" \
    | sed -n 's/.*workDir: \([^]]*\)\].*/\1/p' | sed 's:.*/work/::' | sort -u > ../finished_before_kill.txt
echo "$(wc -l < ../finished_before_kill.txt) tasks had finished"

nf -log run2.log run "$repo/main.nf" "${args[@]}" -resume > run2.out 2>&1
echo "resumed run finished"
cd ../uninterrupted
nf -log run.log run "$repo/main.nf" "${args[@]}" > run.out 2>&1
echo "uninterrupted run finished"
