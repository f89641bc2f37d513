"""MkDocs hooks: pages that show what the code declares, generated when the site is built.

``<!-- trainers -->`` in a page becomes the table of every registered trainer
(``distkeras.algorithms.registry``), so the documentation lists exactly the trainers there are.
The notebooks are rendered from ``docs/notebooks/`` (the copies CI executed, with their outputs),
else from ``notebooks/`` as committed (a fresh clone's ``mkdocs serve``: without outputs).
"""
from __future__ import annotations

from pathlib import Path

from mkdocs.plugins import event_priority

MARKER = "<!-- trainers -->"


def trainers_table() -> str:
    from distkeras import algorithms

    rows = ["| trainer | key | rule | exchange | synchronous | default λ | η with n workers "
            "| SlowMo base | what |", "|---|---|---|---|---|---|---|---|---|"]
    for rule, spec in algorithms.trainer_specs():
        window = spec.defaults.get("communication_window", rule.default_window)
        scaling = {"linear": "η·n", "elastic": "η·(n+1)", "sqrt": "η·√n"}.get(
            rule.learning_rate_scaling, "η")
        what = " ".join(spec.doc.split("\n\n")[0].split())
        rows.append(f"| `{spec.name}` | `{spec.key}` | `{rule.__name__}` | "
                    f"{rule.exchange_type.__name__} | {'yes' if rule.synchronous else 'no'} | "
                    f"{_window(rule, window)} | {scaling} | "
                    f"{'yes' if spec.slowmo_base is not None else ''} | {what} |")
    return "\n".join(rows)


def _window(rule, window) -> str:
    """λ as the table shows it: a number, once per epoch, or none of its own (SlowMo: its
    base's; an ensemble: no exchange)."""
    if window is not None:
        return str(window)
    return "epoch" if rule.windowed else "—"


@event_priority(100)         # before mkdocs-jupyter, which renders the notebooks it finds
def on_files(files, config):
    """The committed notebooks where no executed copy is in ``docs/notebooks/``."""
    from mkdocs.structure.files import File

    root = Path(config["docs_dir"]).resolve().parent
    for notebook in sorted((root / "notebooks").glob("*.ipynb")):
        path = f"notebooks/{notebook.name}"
        if files.get_file_from_path(path) is None:
            files.append(File(path, str(root), config["site_dir"],
                              config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, **_) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, trainers_table())
    return markdown
