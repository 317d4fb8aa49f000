"""The search's HTML report: every evaluated layout as a point (tokens/s against dollars per million
tokens), the Pareto front joined, and the ranked table; plus plans.json."""
from __future__ import annotations

import base64
import html
import io
import json


def pareto_png(result: dict) -> bytes:
    from trnlab.profile.report import _pyplot
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plans = [p for p in result["plans"] if p["fits"]]
    ax.scatter([p["usd_per_1m_tokens"] for p in plans], [p["tokens_per_s"] for p in plans], s=14, c="#999",
               label="layouts that fit")
    front = sorted((p for p in plans if p.get("pareto")), key=lambda p: p["usd_per_1m_tokens"])
    ax.plot([p["usd_per_1m_tokens"] for p in front], [p["tokens_per_s"] for p in front], "o-", c="#c0392b",
            label="Pareto front")
    for p in front:
        ax.annotate(f"{p['nodes']}n TP{p['tp']} PP{p['pp']}", (p["usd_per_1m_tokens"], p["tokens_per_s"]),
                    fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("$ per million tokens")
    ax.set_ylabel("tokens/s")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write_search_report(result: dict, out, title: str) -> str:
    """Write report.html (plot + table) and plans.json into the trnlab output folder `out`."""
    from trnlab.profile.outputs import staged_dir
    cols = ("nodes", "tp", "pp", "dp", "microbatch", "checkpointing", "step_s", "tokens_per_s", "mfu",
            "hbm_per_core_bytes", "usd_per_1m_tokens", "fits", "pareto")
    rows = "".join("<tr>" + "".join(f"<td>{_cell(p.get(c))}</td>" for c in cols) + "</tr>" for p in result["plans"])
    png = base64.b64encode(pareto_png(result)).decode()
    price = html.escape(result["plans"][0]["price_source"]) if result["plans"] else ""
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<h1>{html.escape(title)}</h1><p>{result['evaluated']} layouts evaluated; price: {price}</p>"
            f"<img src='data:image/png;base64,{png}'><table border=1 cellpadding=3>"
            f"<tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>{rows}</table>")
    with staged_dir(out, {"command": "plan --search"}) as tmp:
        (tmp / "report.html").write_text(page, encoding="utf-8")
        (tmp / "plans.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return str(out)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))
