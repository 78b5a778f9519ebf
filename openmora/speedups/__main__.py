"""``python -m openmora.speedups``: the registered speedups as a table, in the order they are applied."""

from __future__ import annotations

from openmora.speedups import REGISTRY


def table() -> str:
    """One row per speedup: its name, when the loader applies it, whether it keeps the output and needs CUDA, and
    the first line of its doc (a Markdown table)."""
    rows = ["| name | when | output_preserving | needs_cuda | what |", "|---|---|---|---|---|"]
    for s in REGISTRY.values():
        rows.append(f"| `{s.name}` | {s.when} | {s.output_preserving} | {s.needs_cuda} | {s.summary} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
