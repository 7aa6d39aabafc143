"""Diagnostic only: where a GPU server's batch spends its time on the host (SERVE_STAGES_DIR set).

On the path of a model process, it times each batch scored through ``ReviewScorer.queue``: the
event loop queuing its GPU work, the hand-over to a scoring thread, the wait for the GPU, the
head and calibration (on the loop, or in a thread), the loop taking the scores back and answering.
Written as JSON lines to SERVE_STAGES_DIR/stages_<pid>.jsonl; ``summary.py`` there sums them up.
"""
import os
import sys

if os.environ.get("SERVE_STAGES_DIR"):
    import contextvars
    import importlib.abc
    import importlib.util
    import json
    import threading
    import time

    TARGETS = {"review_toolkit.serve.batcher", "review_toolkit.accel.gpu_scoring"}
    records: list = []
    lock = threading.Lock()
    QueuedWork = None  # review_toolkit.accel.gpu_scoring's, once imported

    def patch_gpu_scoring(module):
        global QueuedWork
        QueuedWork = module.QueuedWork

    def patch_batcher(module):
        scorer_class = module.ReviewScorer
        queue = scorer_class.queue
        run_scorer = module.DynamicBatcher._run_scorer
        score_batch = module.DynamicBatcher._score_batch

        def timed_queue(self, texts, token_ids):
            queued_at = time.perf_counter()
            queued = queue(self, texts, token_ids)
            if queued is None:
                return None
            record = {"reviews": len(texts), "tokens": sum(map(len, token_ids)), "queue": queued_at, "queued": time.perf_counter()}

            def timed_wait():
                record["thread"] = time.perf_counter()
                queued.wait()
                record["gpu_done"] = time.perf_counter()

            def timed_result():
                record["finishing"] = time.perf_counter()
                scored = queued.result()
                record["finished"] = time.perf_counter()
                with lock:
                    finished[id(scored)] = record
                return scored

            return QueuedWork(timed_wait, timed_result)

        finished: dict = {}
        current = contextvars.ContextVar("serve_stages_record", default=None)

        async def timed_run_scorer(self, texts, token_ids):
            scored = await run_scorer(self, texts, token_ids)
            with lock:
                record = finished.pop(id(scored), None)
            if record is not None:
                record["resumed"] = time.perf_counter()
                current.set(record)
            return scored

        async def timed_score_batch(self, batch, tokens):
            current.set(None)
            await score_batch(self, batch, tokens)
            record = current.get()
            if record is not None:
                record["answered"] = time.perf_counter()
                with lock:
                    records.append(record)

        scorer_class.queue = timed_queue
        module.DynamicBatcher._run_scorer = timed_run_scorer
        module.DynamicBatcher._score_batch = timed_score_batch

    def drain():
        path = os.path.join(os.environ["SERVE_STAGES_DIR"], f"stages_{os.getpid()}.jsonl")
        while True:
            time.sleep(0.5)
            with lock:
                ready, records[:] = list(records), []
            if ready:
                with open(path, "a") as out:
                    out.write("".join(json.dumps(record) + "\n" for record in ready))

    threading.Thread(target=drain, daemon=True, name="serve-stages-drain").start()

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in TARGETS:
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            run = spec.loader.exec_module
            patcher = patch_batcher if name.endswith("batcher") else patch_gpu_scoring

            def exec_module(module):
                run(module)
                patcher(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Finder())
