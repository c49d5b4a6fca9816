"""``anomaly-ae presets [NAME]``: the shipped configs, by name, and the YAML of one to start from."""

from __future__ import annotations

from typing import Annotated

import typer

from anomaly_ae.cli.common import fail_usage, print_json, results

EXAMPLES = """Examples:

  anomaly-ae presets

  anomaly-ae presets fast > my_config.yaml      (edit it, then: anomaly-ae train GOOD --config my_config.yaml)

  anomaly-ae train ./good_images --config fast
"""


def presets(
    name: Annotated[str | None, typer.Argument(help="Print this preset's YAML (copy it to start your own).",
                                               show_default=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print {name: {summary, path}} as one JSON object.")
                        ] = False,
) -> None:
    """List the presets that '--config NAME' accepts, or print one of them."""
    from anomaly_ae.config import DEFAULT_PRESET, preset_names, preset_path, preset_summary

    if name is not None:
        try:
            results.out(preset_path(name).read_text(encoding="utf-8"), end="")
        except ValueError as err:
            fail_usage(str(err))
        return
    if json_out:
        print_json({n: {"summary": preset_summary(n), "path": str(preset_path(n))} for n in preset_names()})
        return
    width = max(map(len, preset_names()))
    for n in preset_names():
        mark = " (used without --config)" if n == DEFAULT_PRESET else ""
        results.print(f"{n:<{width}}  {preset_summary(n)}{mark}")
