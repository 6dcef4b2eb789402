#!/usr/bin/env bash
# The GPU acceptance run (issue 26, item 7): one line per check, PASS|FAIL|SKIP NAME: figure/detail,
# then a summary; exit status 1 if any check failed. Under 8 minutes on one H100.
#
#   bash bench/gpu_acceptance.sh                     # every check
#   bash bench/gpu_acceptance.sh step_speed oom_recovery   # some of them (names: --list)
#   bash bench/gpu_acceptance.sh --quick             # about a second per timed part (a smoke run)
#
# Checks (bench/gpu_checks.py holds them; each runs in a process of its own, under a time limit):
#   cuda_tests         pytest -rs tests/test_cuda.py test_precision.py test_gpu_sampling.py test_gpu_resume.py
#   step_dtypes_syncs  the default GPU run's training step: the dtypes each module sees (forward hooks)
#                      against precision_by_part, and the syncs torch.cuda.set_sync_debug_mode reports
#   step_speed         ms/step and peak memory (torch.cuda.max_memory_allocated) of the default GPU run
#   time_to_loss       60 s of training, validation at 15/30/60 s, beside a plain nn.LSTM loop (bench/time_to_loss.py)
#   sample_speed       sampling chars/s (bench/sample_speed.py) at the default GPU model's size
#   batch_size_auto    what --batch-size auto picks, and that a run with it trains
#   resume_equality    per-step losses of a run stopped and resumed equal those of an uninterrupted run
#   oom_recovery       out of memory provoked (set_per_process_memory_fraction): the run saves and says so,
#                      and the same process trains on at a smaller batch
#   torchrun_ddp       torchrun, one process, NCCL, DDP forced at world size 1 (CHARRNN_FORCE_DDP=1)
# Without CUDA, the CUDA-only checks SKIP with the reason after a CPU dry run of their code (tiny preset,
# a few seconds); batch_size_auto and resume_equality hold on a CPU too and PASS or FAIL there.
#
# Environment: PYTHON (default .venv/bin/python if it runs, else python3); GPU_ACCEPTANCE_QUICK=1 (as
# --quick); GPU_ACCEPTANCE_BUDGET (seconds for all the checks, default 450); GPU_ACCEPTANCE_LIMIT (at
# most so many seconds a check, below each one's own limit in bench/gpu_checks.py CHECKS);
# GPU_ACCEPTANCE_LOGS (a folder that gets every check's log in one file, gpu_acceptance.log: $OUT on
# the lent GPU machine). Runs and logs go to a temporary folder that is removed at the end; every
# process a check started is ended, by pid, after it and at the end.
# Where the package is not installed (the lent machine's python3), the script imports it from this
# checkout; platformdirs and unidecode, which that machine lacks, are installed from the wheels in
# .whl/ (carry .whl) into the temporary folder.
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2

quick=${GPU_ACCEPTANCE_QUICK:-0}
budget=${GPU_ACCEPTANCE_BUDGET:-450}
cap_all=${GPU_ACCEPTANCE_LIMIT:-}
names=()
for arg in "$@"; do
    case $arg in
        --quick) quick=1 ;;
        --list) names=(--list) ;;
        -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "gpu_acceptance.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
        *) names+=("$arg") ;;
    esac
done

if [ -n "${PYTHON:-}" ]; then
    py=$PYTHON
elif [ -x .venv/bin/python ] && .venv/bin/python -c '' 2>/dev/null; then
    py=$root/.venv/bin/python
else
    py=python3
fi
all_checks=$("$py" bench/gpu_checks.py list) || { echo "FAIL setup: $py cannot run bench/gpu_checks.py"; exit 1; }
if [ "${names[0]:-}" = --list ]; then echo "$all_checks"; exit 0; fi
declare -A limit_of=()
order=()
while read -r name limit; do limit_of[$name]=$limit; order+=("$name"); done <<<"$all_checks"
if [ ${#names[@]} -eq 0 ]; then names=("${order[@]}"); fi
for name in "${names[@]}"; do
    [ -n "${limit_of[$name]:-}" ] || { echo "gpu_acceptance.sh: no check named $name (--list)" >&2; exit 2; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu-acceptance.XXXXXX") || exit 2
# Every process this run starts inherits this variable: that is how the clean-up finds them (by pid).
export GPU_ACCEPTANCE_RUN=$tmp
mkdir -p "$tmp/logs" "$tmp/tmp" "$tmp/site"

marked_processes() {
    # The pids of the processes this run started that are still there, found by their environment
    # (the grep itself runs without the variable).
    local file pid
    for file in $(env -u GPU_ACCEPTANCE_RUN grep -slzxF "GPU_ACCEPTANCE_RUN=$tmp" /proc/[0-9]*/environ); do
        pid=${file#/proc/}
        pid=${pid%/environ}
        [ "$pid" != "$$" ] && echo "$pid"
    done
}

stop_marked() {
    # End what is left of this run's processes, by pid: SIGTERM, then SIGKILL. Prints how many.
    local pids pid left
    pids=$(marked_processes)
    [ -z "$pids" ] && { echo 0; return; }
    for pid in $pids; do kill -TERM "$pid" 2>/dev/null; done
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        left=$(marked_processes); [ -z "$left" ] && break; sleep 0.5
    done
    for pid in $(marked_processes); do kill -KILL "$pid" 2>/dev/null; done
    echo "$pids" | wc -w
}

cleanup() {
    trap - EXIT INT TERM
    stop_marked >/dev/null
    if [ -n "${GPU_ACCEPTANCE_LOGS:-}" ] && mkdir -p "$GPU_ACCEPTANCE_LOGS"; then
        for log in "$tmp"/logs/*.log; do
            [ -e "$log" ] && { echo "===== ${log##*/}"; cat "$log"; }
        done >"$GPU_ACCEPTANCE_LOGS/gpu_acceptance.log"
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export TMPDIR=$tmp/tmp  # tempfile's folders (bench/time_to_loss.py's runs) go there too
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# The package: installed (here), or imported from this checkout (the lent machine's python3).
if ! "$py" -c 'import charrnn_tui.engine, charrnn_tui.corpora' 2>/dev/null; then
    mkdir -p "$tmp/site/charrnn_tui"
    for pkg in engine tui corpora; do ln -s "$root/$pkg" "$tmp/site/charrnn_tui/$pkg"; done
    export PYTHONPATH=$tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$py" -c 'import platformdirs, unidecode' 2>/dev/null && compgen -G '.whl/*.whl' >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$tmp/site" .whl/*.whl \
        >"$tmp/logs/wheels.log" 2>&1 || echo "# could not install .whl/: $(tail -n 1 "$tmp/logs/wheels.log")"
    case ":${PYTHONPATH:-}:" in *":$tmp/site:"*) ;; *) export PYTHONPATH=$tmp/site${PYTHONPATH:+:$PYTHONPATH} ;; esac
fi

echo "# gpu_acceptance: $("$py" bench/gpu_checks.py env 2>&1 | tail -n 1)"
quick_flag=()
[ "$quick" = 1 ] && quick_flag=(--quick)
echo "# ${#names[@]} checks, budget ${budget} s$([ "$quick" = 1 ] && echo ', quick')"

start=$SECONDS
results=()
failed=()
run_check() {
    local name=$1 cap=${limit_of[$1]} left limit pid status line leftover
    if [ -n "$cap_all" ] && [ "$cap_all" -lt "$cap" ]; then cap=$cap_all; fi
    left=$((budget - (SECONDS - start)))
    if [ "$left" -lt 15 ] && [ "$left" -lt "$cap" ]; then
        line="SKIP $name: the ${budget} s budget was spent before it (GPU_ACCEPTANCE_BUDGET)"
    else
        limit=$((cap < left ? cap : left))
        mkdir -p "$tmp/runs/$name"
        # timeout runs the check in a process group of its own and ends the whole group at the limit
        timeout --kill-after=10 "$limit" "$py" bench/gpu_checks.py "$name" --tmp "$tmp/runs/$name" \
            --result "$tmp/runs/$name.result" --limit "$limit" "${quick_flag[@]}" >"$tmp/logs/$name.log" 2>&1 &
        pid=$!
        wait "$pid"
        status=$?
        if [ -s "$tmp/runs/$name.result" ]; then
            line=$(head -n 1 "$tmp/runs/$name.result")
        elif [ "$status" = 124 ] || [ "$status" = 137 ]; then
            line="FAIL $name: timed out after ${limit} s (its log: $(tail -n 1 "$tmp/logs/$name.log" | cut -c1-200))"
        else
            line="FAIL $name: exited with status $status and no result ($(tail -n 1 "$tmp/logs/$name.log" | cut -c1-200))"
        fi
        leftover=$(stop_marked)
        if [ "$leftover" != 0 ]; then
            line="$line; $leftover process(es) it started were still running, ended by pid"
            echo "# $name left $leftover process(es) running: ended" >>"$tmp/logs/$name.log"
        fi
        rm -rf "$tmp/runs/$name" "$tmp/runs/$name.result"
    fi
    echo "$line"
    results+=("$line")
    case $line in FAIL*) failed+=("$name") ;; esac
}

for name in "${names[@]}"; do run_check "$name"; done

if [ ${#failed[@]} -gt 0 ]; then
    echo
    for name in "${failed[@]}"; do
        echo "--- $name: the end of its log"
        tail -n 25 "$tmp/logs/$name.log" | cut -c1-300 | sed 's/^/    /'
    done
fi
echo
echo "--- gpu_acceptance, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
printf '%s\n' "${results[@]}"
passed=0 skipped=0
for line in "${results[@]}"; do
    case $line in PASS*) passed=$((passed + 1)) ;; SKIP*) skipped=$((skipped + 1)) ;; esac
done
echo "summary: ${passed} passed, ${#failed[@]} failed, ${skipped} skipped in $((SECONDS - start)) s"
[ ${#failed[@]} -eq 0 ]
