"""MkDocs hooks: pages that show what the code declares, generated when the site is built.

``<!-- trainers -->`` in a page becomes the table of every registered trainer
(``distkeras.algorithms.registry``), so the documentation lists exactly the trainers there are.
"""
from __future__ import annotations

MARKER = "<!-- trainers -->"


def trainers_table() -> str:
    from distkeras import algorithms

    rows = ["| trainer | key | rule | exchange | synchronous | default λ | η with n workers "
            "| SlowMo base | what |", "|---|---|---|---|---|---|---|---|---|"]
    for rule, spec in algorithms.trainer_specs():
        window = spec.defaults.get("communication_window", rule.default_window)
        scaling = "η·n" if rule.learning_rate_scaling == "linear" else "η"
        what = " ".join(spec.doc.split("\n\n")[0].split())
        rows.append(f"| `{spec.name}` | `{spec.key}` | `{rule.__name__}` | "
                    f"{rule.exchange_type.__name__} | {'yes' if rule.synchronous else 'no'} | "
                    f"{'epoch' if window is None else window} | {scaling} | "
                    f"{'yes' if spec.slowmo_base is not None else ''} | {what} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **_) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, trainers_table())
    return markdown
