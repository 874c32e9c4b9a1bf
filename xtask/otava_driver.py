"""Runs Apache Otava's change-point detection on series read from stdin.

Input (JSON on stdin): {"series": [[float, ...], ...]}.
Output (JSON on stdout): {"version": str, "options": {...},
"changes": [[index, ...], ...], "seconds": float}.

Each series goes through `otava.analysis.compute_change_points`, the
function Otava's own `Analysis` calls for every metric, with the defaults of
`otava.series.AnalysisOptions` (window_len 50, max_pvalue 0.001,
min_magnitude 0.0). The index of a change point is that of the first point
after the change, as in testfleet.
"""

import json
import sys
import time
from importlib.metadata import version

from otava.analysis import compute_change_points
from otava.series import AnalysisOptions


def main() -> None:
    request = json.load(sys.stdin)
    options = AnalysisOptions()
    started = time.perf_counter()
    changes = []
    for values in request["series"]:
        found, _weak = compute_change_points(
            list(values),
            window_len=options.window_len,
            max_pvalue=options.max_pvalue,
            min_magnitude=options.min_magnitude,
        )
        changes.append(sorted(int(c.index) for c in found))
    json.dump(
        {
            "version": version("apache-otava"),
            "options": {
                "window_len": options.window_len,
                "max_pvalue": options.max_pvalue,
                "min_magnitude": options.min_magnitude,
            },
            "changes": changes,
            "seconds": time.perf_counter() - started,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
