"""The llama.cpp side of bench/vs_llamacpp.py, run by the Python of a venv holding
llama-cpp-python (it imports nothing of ktx).

    python llamacpp_worker.py MODEL.gguf THREADS CONTEXT

Reads one JSON request per line on stdin, {"ids": [...], "gen": N}, and answers each with one
line {"prefill_s", "decode_s", "tokens"}: the prompt evaluated as one batch, then N greedy
tokens each evaluated alone (the argmax of the last logits, as ktx's side does).
"""

import json
import sys
import time

import numpy as np
from llama_cpp import Llama


def main() -> None:
    path, threads, context = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    llm = Llama(
        model_path=path,
        n_threads=threads,
        n_threads_batch=threads,
        n_ctx=context,
        n_batch=512,
        n_ubatch=512,
        verbose=False,
    )
    n_vocab = llm.n_vocab()

    def last_argmax() -> int:
        # the batch's one output row (llama-cpp-python keeps no scores without logits_all)
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))

    print(json.dumps({"ready": True, "version": __import__("llama_cpp").__version__}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        ids, gen = req["ids"], int(req["gen"])
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        token = last_argmax()
        t1 = time.perf_counter()
        tokens = [token]
        for _ in range(gen - 1):
            llm.eval([token])
            token = last_argmax()
            tokens.append(token)
        t2 = time.perf_counter()
        print(json.dumps({"prefill_s": t1 - t0, "decode_s": t2 - t1, "tokens": tokens}), flush=True)


if __name__ == "__main__":
    main()
