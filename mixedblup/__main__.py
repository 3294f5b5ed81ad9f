"""Command line: ``python -m mixedblup demo`` fits the bundled examples and prints them."""

from __future__ import annotations

import argparse
import sys
import warnings

__all__ = ["main", "demo"]


def demo() -> str:
    """Fit the course notes' pig example and Mrode's animal model; return both reports."""
    import mixedblup as mb

    pigs = mb.datasets.load("pigs")
    pig_fit = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.016, "residual": 0.08})

    records = mb.datasets.load("mrode_3_1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mb.PedigreeFixWarning)
        ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    animal_fit = mb.fit("wwg ~ 0 + sex + (1|calf)", records, cov={"calf": ped},
                        variances={"calf": 20.0, "residual": 40.0})
    ebv = animal_fit.random_effects("calf")[["level", "estimate", "std_error", "reliability", "has_records"]]
    parts = [
        "Pig birth weights (course notes): weight ~ 0 + sex + (1|dam), sigma2_dam = 0.016, sigma2_e = 0.08",
        str(pig_fit.summary()),
        "",
        "Beef calves, animal model with a pedigree (Mrode 2005, Example 3.1): sigma2_a = 20, sigma2_e = 40",
        str(animal_fit.summary()),
        "",
        "Breeding values (animals 1-3 have no records):",
        ebv.to_string(index=False, float_format=lambda v: f"{v:.4f}"),
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mixedblup`` and the ``mixedblup`` script."""
    parser = argparse.ArgumentParser(prog="mixedblup", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="fit the bundled pig and animal-model examples and print the summaries")
    args = parser.parse_args(argv)
    if args.command == "demo":
        sys.stdout.write(demo() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
