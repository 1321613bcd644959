#!/usr/bin/env bash
# Node setup for the cluster launcher (cluster/aws.yaml, cluster/gcp.yaml): the project from the
# synced checkout, at the pinned versions (torch from PyPI: its CUDA build on GPU nodes).
set -euo pipefail
cd ~/tamper-search
python3 -m pip install -q --upgrade pip
python3 -m pip install -q "torch==$(grep -E '^torch==' requirements.lock | cut -d= -f3)"
python3 -m pip install -q -c requirements.lock -e .
