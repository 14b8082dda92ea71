"""Generation speed of EG3D's ffhq512 setting against EG3D's reference implementation.

EG3D's own code (NVlabs/eg3d) takes about 4.3 s per 512x512 image on a 2-core
CPU (warm median of 5 runs, batch 1, neural rendering 64). This script
measures headforge the same way, in the same process settings as the
`headforge` command, and prints both with their ratio. Usage:

    .venv/bin/python benchmarks/eg3d_speed.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from headforge.runtime import tune_cpu_allocator

EG3D_REFERENCE_SECONDS = 4.3  # warm median of 5, batch 1, neural rendering 64, 2-core CPU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    tune_cpu_allocator()
    from headforge.bench import format_report, run_benchmarks

    results = run_benchmarks("eg3d", ["ffhq512"], repeats=args.repeats, train=False)
    seconds = results[0]["generate"]["seconds_per_image"]
    print(format_report(results))
    print(
        f"ffhq512 512x512 image: headforge {seconds:.2f} s, EG3D reference {EG3D_REFERENCE_SECONDS:.1f} s "
        f"-> {EG3D_REFERENCE_SECONDS / seconds:.2f}x faster (target 3x)"
    )
    if args.json:
        results[0]["eg3d_reference_seconds"] = EG3D_REFERENCE_SECONDS
        args.json.write_text(json.dumps(results[0], indent=2) + "\n")


if __name__ == "__main__":
    main()
