#!/usr/bin/env bash
# Print the Hugging Face token from the cloud's secret store, for the environment of `ray start`
# (head and workers), so that it reaches every Ray process without being written to any file.
#   HF_TOKEN="$(bash cluster/hf_token.sh aws)" || exit 1      (or: gcp)
# Retries a failed fetch (the instance profile / service account can lag behind the boot) and
# fails loudly, with a message and a non-zero status, instead of exporting an empty token.
set -uo pipefail
provider="${1:?usage: hf_token.sh aws|gcp}"
for attempt in 1 2 3 4 5; do
  case "$provider" in
    aws) token="$(aws secretsmanager get-secret-value --secret-id tamper-search/hf-token \
                  --query SecretString --output text 2>/dev/null)" ;;
    gcp) token="$(gcloud secrets versions access latest --secret=tamper-search-hf-token 2>/dev/null)" ;;
    *) echo "hf_token.sh: unknown provider $provider (aws or gcp)" >&2; exit 2 ;;
  esac
  if [ -n "${token:-}" ]; then
    printf '%s' "$token"
    exit 0
  fi
  sleep $((attempt * ${HF_TOKEN_RETRY_SECONDS:-5}))
done
echo "hf_token.sh: could not read the Hugging Face token from the $provider secret store after 5 tries" >&2
exit 1
