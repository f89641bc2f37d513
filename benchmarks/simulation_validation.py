"""The simulation against the emulated links: the uncompressed configurations of
``benchmarks/compression.py`` (the same models, data, batch, epochs, workers and learning rates)
simulated on an α–β model of each link, beside the steady samples/s that benchmark measured on
a standalone cluster whose workers sat behind links shaped with ``tc``
(``benchmarks/compression.results.md``). Prints, per link, model and family, measured and
simulated samples/s and their ratio (the model's error).

    python benchmarks/simulation_validation.py [--results benchmarks/compression.results.md]
        [--links loopback,1gbit,100mbit] [--models small,large]

The benchmark's links were shaped for rate only (no netem here): each is modelled with the
loopback's latency (150 µs: distkeras' transport on this machine). Its 2 workers had a core each on this 2-core machine (n/c = 1).
"""
from __future__ import annotations

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from compression import FAMILIES, RATES, _builder  # noqa: E402
from trainer_overhead import MODELS, cached_frame, data  # noqa: E402

LINKS = {"loopback": "loopback", "1gbit": "1gbit:0.15ms", "100mbit": "0.1gbit:0.15ms"}


def measured(path: str) -> dict[tuple, float]:
    """{(model, link, family): steady samples/s} of the uncompressed runs in the results."""
    out, model = {}, None
    for line in open(path, encoding="utf-8"):
        head = re.match(r"=== (\w+) \(", line)
        if head:
            model = head.group(1)
            continue
        cells = line.split()
        if model and len(cells) >= 7 and cells[3] == "none" and cells[2] == "2":
            out[model, cells[0], cells[1]] = float(cells[6])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__),
                                                          "compression.results.md"))
    parser.add_argument("--links", default="loopback,1gbit,100mbit")
    parser.add_argument("--models", default="small,large")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--large-rows", type=int, default=6_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    from distkeras.spark import session
    from distkeras.study import Study

    real = measured(args.results)
    spark = session("local[2]", app_name="simulation-validation")
    print(f"{'link':>9} {'model':>6} {'family':>7} {'measured':>9} {'simulated':>10} "
          f"{'sim/meas':>8}")
    errors = []
    for model in args.models.split(","):
        rows = args.rows if model == "small" else args.large_rows
        x, y = data(rows + rows // 4, MODELS[model][0])
        train, val = cached_frame(spark, x[:rows], y[:rows]), cached_frame(spark, x[rows:],
                                                                             y[rows:])
        for link in args.links.split(","):
            study = Study(model=_builder(model), algorithms=list(FAMILIES.values()),
                          num_workers=[2], epochs=args.epochs, batch_size=args.batch_size,
                          learning_rate=1e-3, learning_rates=RATES, simulate=LINKS[link],
                          cores=2, out=f"/tmp/dk-simulation-validation/{model}/{link}",
                          verbose=False)
            for record in study.run(train, validation=val):
                if record["num_workers"] != 2 or record["status"] != "ok":
                    continue
                simulated = record["steady_samples_per_s"] or record["samples_per_s"]
                meas = real.get((model, link, record["algorithm"]))
                ratio = simulated / meas if meas else None
                if ratio:
                    errors.append(abs(ratio - 1))
                print(f"{link:>9} {model:>6} {record['algorithm']:>7} "
                      f"{meas or float('nan'):>9.0f} {simulated:>10.0f} "
                      f"{ratio if ratio else float('nan'):>8.2f}", flush=True)
    if errors:
        errors.sort()
        print(f"\nmedian |simulated/measured - 1| = {errors[len(errors) // 2]:.2f} over "
              f"{len(errors)} configurations (max {errors[-1]:.2f})")
    spark.stop()


if __name__ == "__main__":
    main()
