#!/usr/bin/env bash
# Detached, on a GPU host during a lease (any lease; ~2 min of its CPU): scripts/bench_grammar.py there, with the
# mask fill over threads as vLLM's StructuredOutputManager does it (--threads). It waits for the 0.5B model's
# conversion (its tokenizer) and for .carry-vllm/p01 (the llguidance wheel) to be staged; start it at setup, so
# it is done (~1-2 min) before a bench's phases time the host. Output: /tmp/exp/grammar.json and grammar.log.
G=/tmp/exp/gbench T=/tmp/models/qwen2.5-coder-0.5b-instruct
mkdir -p $G /tmp/llg && cp -r scripts benchmarks pkg data engine trainer evalkit $G/
setsid nohup bash -c "
while [ ! -f $T/tokenizer.json ] || ! ls /tmp/stage/vllm/llguidance-*.whl > /dev/null 2>&1; do sleep 3; done
python3 -m pip install -q --no-deps --target /tmp/llg /tmp/stage/vllm/llguidance-*.whl
cd $G && export PYTHONPATH=/tmp/llg:\$(scripts/srcview.sh $G/.srcview)
lscpu | grep 'Model name'; nproc; uptime
python3 scripts/bench_grammar.py --tokenizer $T --limit 200 --backends guidance,guidance-uncapped --threads 1,4,8 \\
  --json /tmp/exp/grammar.json 2>&1 | grep -v -i warn | tail -40
echo 'exit 0' > /tmp/exp/grammar.done" > /tmp/exp/grammar.log 2>&1 < /dev/null &
echo "grammar bench detached"
