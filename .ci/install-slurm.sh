#!/usr/bin/env bash
# Install the OS packages the SLURM backend's tests need (slurmctld, slurmd and the clients; munge for their
# authentication): tests/_slurm.py starts a single-node SLURM from them for the test session. Idempotent: nothing is
# done when every binary is already there. Debian/Ubuntu (apt-get), as root or through sudo.
set -euo pipefail
need=(slurmctld slurmd sbatch squeue scancel sinfo scontrol munged mungekey)
missing=()
for b in "${need[@]}"; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing+=("$b")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "CI: SLURM and munge already installed"
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "CI: installing slurm-wlm and munge (missing: ${missing[*]})"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
