#!/bin/sh
# The serve image's entrypoint (after tini): refuse to start an OpenAI-compatible server that listens beyond
# the container's loopback without an API key, then exec the command unchanged.
#
# The image binds HOST=0.0.0.0 (a server on 127.0.0.1 inside a container cannot be reached through -p), so
# `docker run -p 8000:8000 reportminer-serve` used to publish an open vLLM to every machine that can reach
# the host (issue 19). vLLM reads VLLM_API_KEY itself and then wants it as a Bearer token on /v1/* (not on
# /health, which the health check uses). Without a key this script stops with exit 2 and says what to do;
# ALLOW_NO_API_KEY=1 is the explicit opt-out (a private network, a proxy that authenticates).
#
# Checked: scripts/serve.sh (the default command; HOST from the environment) and `vllm serve` given as the
# command (its --host, vLLM's default being every interface). Anything else (engine run, ray start, a
# shell) is exec'ed as it is. POSIX sh; tests/test_images.py runs it.
set -eu

serving=""
host="${HOST:-127.0.0.1}"
keyed="${VLLM_API_KEY:-}"
for a in "$@"; do
  case "$a" in --api-key | --api-key=?*) keyed=1 ;; esac  # a key on the command line (serve.sh -- --api-key K)
done
case "${1:-}" in
  */serve.sh | serve.sh) serving="scripts/serve.sh" ;;
  vllm | */vllm)
    if [ "${2:-}" = serve ]; then
      serving="vllm serve"
      host="0.0.0.0"
      prev=""
      for a in "$@"; do
        case "$a" in
          --host=*) host="${a#--host=}" ;;
          *) [ "$prev" = "--host" ] && host="$a" ;;
        esac
        prev="$a"
      done
    fi
    ;;
esac

if [ -n "$serving" ] && [ -z "$keyed" ] && [ "${ALLOW_NO_API_KEY:-0}" != 1 ]; then
  case "$host" in
    127.* | localhost | ::1) ;;
    *)
      echo "serve-guard: refused: $serving would listen on $host without an API key." >&2
      echo "  Set one (vLLM reads it; clients use engine run --api-key-env VLLM_API_KEY):" >&2
      echo "    docker run -e VLLM_API_KEY=\"\$(openssl rand -hex 24)\" ..." >&2
      echo "  or bind the loopback only (-e HOST=127.0.0.1, reachable from inside the container alone)," >&2
      echo "  or, on a network where that is safe, opt out explicitly: -e ALLOW_NO_API_KEY=1" >&2
      exit 2
      ;;
  esac
fi
exec "$@"
