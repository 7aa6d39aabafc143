"""Diagnostic only: time each embed_on_gpu call's GPU work with CUDA events (GPU_EVENTS_DIR set)."""
import os
import sys

if os.environ.get("GPU_EVENTS_DIR"):
    import importlib.abc
    import importlib.util
    import json
    import threading
    import time

    TARGET = "review_toolkit.accel.gpu_scoring"

    def patch(module):
        import torch

        original = module._embed
        records = []
        lock = threading.Lock()

        def _embed(encoder, chunks, *args, **kwargs):
            chunks = [list(chunk) for chunk in chunks]
            reviews = sum(len(chunk) for chunk in chunks)
            tokens = sum(len(review) for chunk in chunks for review in chunk)
            t0 = time.perf_counter()
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            queued = original(encoder, chunks, *args, **kwargs)  # its last item: the event after the copies
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            t1 = time.perf_counter()
            with lock:
                records.append([t0, t1, reviews, tokens, start, end])
            return queued

        module._embed = _embed
        path = os.path.join(os.environ["GPU_EVENTS_DIR"], f"gpu_{os.getpid()}.jsonl")

        def drain():
            previous_end = None
            while True:
                time.sleep(0.5)
                with lock:
                    ready = []
                    while records and records[0][5].query():
                        ready.append(records.pop(0))
                lines = []
                for t0, t1, reviews, tokens, start, end in ready:
                    gap = previous_end.elapsed_time(start) if previous_end is not None else None
                    lines.append(json.dumps({"t0": t0, "launch_ms": (t1 - t0) * 1e3, "reviews": reviews, "tokens": tokens,
                                             "gpu_ms": start.elapsed_time(end), "gap_ms": gap}))
                    previous_end = end
                if lines:
                    with open(path, "a") as out:
                        out.write("\n".join(lines) + "\n")

        threading.Thread(target=drain, daemon=True, name="gpu-events-drain").start()

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != TARGET:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                patch(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Finder())
