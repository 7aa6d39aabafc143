"""Wall time of short commands, each in fresh processes: what a user waits for at the prompt.

``review-toolkit --help``, ``plugins``, and ``predict --run RUN --text ...`` on a frozen MiniLM run
with the PyTorch model and with an int8 ONNX export; median, min and max of ``--repeats`` runs,
alternating the commands so that a passing load spreads over all of them. The CPU and the load
average before and after are recorded: above ~0.5 before, others shared the machine.

    python benchmarks/cli_startup.py --data ../shared/data/fake_reviews.csv --out benchmarks/results

The run and its export are made as in ``cpu_scoring.py`` (``--run`` to give one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from cpu_scoring import REVIEW, cli, cpu_info, ensure_run, exported_copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/fake_reviews.csv", help="CSV the run is trained on when --run is not given")
    parser.add_argument("--run", help="a frozen MiniLM run (default: trained into --workdir on --data)")
    parser.add_argument("--workdir", default="/tmp/review-toolkit-cpu-scoring", help="where runs and exports go")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default="cli_startup", help="file name of the results (.json, .md)")
    args = parser.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = ensure_run(args, workdir)
    int8 = exported_copy(run, workdir, "int8")
    commands = {
        "review-toolkit --help": cli("--help"),
        "review-toolkit plugins": cli("plugins"),
        "predict --text (torch)": cli("predict", "--run", str(run), "--backend", "torch", "--text", REVIEW, "--quiet"),
        "predict --text (onnx int8 export, auto)": cli("predict", "--run", str(int8), "--text", REVIEW, "--quiet"),
    }
    load_before = os.getloadavg()[0]
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, command in commands.items():
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            seconds[name].append(time.perf_counter() - started)

    cpu_name, cpu_flags = cpu_info()
    result = {
        "machine": {
            "cpu": cpu_name,
            "cpu_flags": cpu_flags,
            "cores": os.cpu_count(),
            "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "run": str(run),
        "repeats": args.repeats,
        "seconds": {
            name: {"median": round(statistics.median(v), 2), "min": round(min(v), 2), "max": round(max(v), 2)}
            for name, v in seconds.items()
        },
    }
    machine = result["machine"]
    lines = [
        f"{machine['cpu']}, {machine['cores']} cores ({', '.join(machine['cpu_flags'])}); {args.repeats} fresh processes "
        "each, alternating; load average {} before, {} after".format(*machine["load_average_before_after"])
        + (" (**shared machine: timings are not a benchmark**)" if load_before > 0.5 else ""),
        "",
        "| command | median s | min s | max s |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{name}` | {s['median']:.2f} | {s['min']:.2f} | {s['max']:.2f} |" for name, s in result["seconds"].items()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    table = "\n".join(lines) + "\n"
    (out / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
