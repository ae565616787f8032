"""``eotransfer report PATH --out report.html``: one self-contained HTML page of a saved model or a benchmark.

The page carries its figures as PNG data URIs and its style inline (no script, no external file),
so it opens anywhere, offline, and can be attached to an issue; the PNGs are also written beside
it.  For a *saved model* (``card.json``, ``metrics.json``, ``history.csv``): training history,
per-class precision/recall/F1, the confusion matrix, and, when the training data can be re-opened
from the card's provenance, an embedding map (t-SNE, van der Maaten & Hinton 2008, JMLR) coloured
by class and by domain, and sample predictions as RGB composites; then the model card and the run's
configuration.  For a *benchmark folder* (``results.csv``): label-efficiency curves (log-scaled
labels, 95 % interval bands), the mean ± interval table, labels needed, and the confusion matrix
and per-class metrics of the best method, summed over seeds.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import os
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eotransfer.errors import ConfigError, EOTransferError

MAX_EMBEDDED = 300  # samples in the t-SNE map (t-SNE is quadratic in them)
N_SAMPLES_SHOWN = 12
STRETCH_PERCENTILES = (2.0, 98.0)


@dataclass
class Figure:
    """A PNG (bytes) with its name (file suffix) and caption."""

    name: str
    png: bytes
    caption: str = ""


@dataclass
class Section:
    """One part of the page: a title, HTML body text, and figures."""

    title: str
    body: str = ""
    figures: list[Figure] = field(default_factory=list)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


# -- figures ---------------------------------------------------------------------------------------------------------
def confusion_figure(cm: np.ndarray, classes: list[str], title: str) -> bytes:
    """Row-normalised confusion matrix (colour) with the counts written in each cell."""
    plt = _plt()
    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = 2.5 + 0.45 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def rgb_composite(image: np.ndarray, bands: Any) -> np.ndarray:
    """H×W×3 in [0, 1]: the bands named red/green/blue (``eotransfer.bands`` common names), each stretched
    between its 2nd and 98th percentile; a grey image of the first band when the data have no RGB.  A stack of
    dates (xBD pre/post) shows its last date, the one the labels describe."""
    common = [b.common_name for b in bands][::-1]
    idx = [len(common) - 1 - common.index(c) for c in ("red", "green", "blue") if c in common]
    chans = image[idx] if len(idx) == 3 else np.repeat(image[:1], 3, axis=0)
    out = np.zeros(chans.shape, dtype=np.float64)
    for c in range(3):
        band = chans[c].astype(np.float64)
        if np.isfinite(band).any():
            lo, hi = np.nanpercentile(band, STRETCH_PERCENTILES)
            out[c] = np.clip((band - lo) / max(hi - lo, 1e-9), 0, 1)
    return np.nan_to_num(out).transpose(1, 2, 0)


def samples_figure(images: list[np.ndarray], bands: Any, true: list[str], pred: list[str]) -> bytes:
    """A grid of RGB composites titled true / predicted, green when right and red when wrong."""
    plt = _plt()
    n = len(images)
    cols = min(6, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.35 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, t, p in zip(axes.ravel(), images, true, pred, strict=False):
        ax.imshow(rgb_composite(img, bands), interpolation="nearest")
        ax.set_title(f"true {t}\npred {p}", fontsize=7, color="tab:green" if t == p else "tab:red")
    fig.tight_layout()
    return _png(fig)


def embedding_figure(emb: np.ndarray, classes: np.ndarray, domains: np.ndarray, domain_name: str) -> bytes:
    """Two panels of the same 2-D embedding: coloured by class, and by domain."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, values, what in ((axes[0], classes, "class"), (axes[1], domains, domain_name)):
        cats = list(dict.fromkeys(values.tolist()))
        cmap = plt.get_cmap("tab10" if len(cats) <= 10 else "tab20")
        for i, c in enumerate(cats):
            sel = values == c
            ax.scatter(emb[sel, 0], emb[sel, 1], s=12, color=cmap(i % cmap.N), label=str(c), alpha=0.8)
        ax.set_title(f"t-SNE of the backbone features, coloured by {what}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=1.2, loc="best")
    fig.tight_layout()
    return _png(fig)


def tsne(features: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3.0)))
    return np.asarray(TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features))


# -- HTML ------------------------------------------------------------------------------------------------------------
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th:first-child,td:first-child{text-align:left}pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.8em}
figure{margin:1em 0}figcaption{font-size:.8em;color:#555}.note{color:#8a5a00;font-style:italic}img{max-width:100%;height:auto}"""


def html_table(header: list[str], rows: list[list[Any]], escape_first: bool = True) -> str:
    """``escape_first=False``: the first column is HTML already (a link)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if i == 0 and not escape_first else html.escape(str(c))}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)  # fmt: skip
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def render_html(title: str, sections: list[Section], png_names: dict[str, str]) -> str:
    """The page; every figure inline as a data URI (``png_names``: figure name → file written beside the page)."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             "<nav><ul>" + "".join(f"<li><a href='#s{i}'>{html.escape(s.title)}</a></li>" for i, s in enumerate(sections))
             + "</ul></nav>"]  # fmt: skip
    for i, s in enumerate(sections):
        parts.append(f"<section id='s{i}'><h2>{html.escape(s.title)}</h2>{s.body}")
        for f in s.figures:
            w, h = png_size(f.png)
            uri = base64.b64encode(f.png).decode("ascii")
            parts.append(f"<figure><img class='plot' data-name='{html.escape(f.name)}' width='{w}' height='{h}' "
                         f"alt='{html.escape(f.caption or f.name)}' src='data:image/png;base64,{uri}'>"
                         f"<figcaption>{html.escape(f.caption)} ({html.escape(png_names[f.name])})</figcaption></figure>")  # fmt: skip
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def build_report(path: str | Path | Sequence[str | Path], out: str | Path) -> Path:
    """Write the HTML report of ``path`` to ``out``, PNGs beside it: a model directory, a benchmark folder, or
    several benchmark folders (or a folder of them), joined into the evidence page
    (:mod:`eotransfer.evaluation.evidence`; its comparison also as ``out`` with ``.csv``)."""
    from eotransfer.card import atomic_write_text
    from eotransfer.evaluation.benchmark import RESULTS_CSV
    from eotransfer.evaluation.evidence import benchmark_folders, evidence_sections, grid_subfolders
    from eotransfer.models.weights import CARD_FILE

    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--out {out}: give an .html file name")
    if not paths:
        raise ConfigError("report: give a model directory or one or more benchmark folders")
    src, csv_text = paths[0], None
    if len(paths) == 1 and (src / RESULTS_CSV).is_file():
        title, sections = benchmark_sections(src)
    elif len(paths) == 1 and (src / CARD_FILE).is_file():
        title, sections = model_sections(src)
    elif len(paths) > 1 or grid_subfolders(src):
        title, sections, csv_text = evidence_sections(benchmark_folders(paths), out)
    else:
        raise ConfigError(
            f"report: {src} is neither a saved model directory (with {CARD_FILE}) nor a benchmark output folder "
            f"(with {RESULTS_CSV}) nor a folder of benchmark folders; pass the folder given to `eotransfer fit --out` "
            "or `eotransfer benchmark --out`"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    names = {}
    for s in sections:
        for f in s.figures:
            names[f.name] = f"{out.stem}_{f.name}.png"
            _write_bytes_atomic(out.parent / names[f.name], f.png)
    if csv_text is not None:
        atomic_write_text(out.with_suffix(".csv"), csv_text)
    atomic_write_text(out, render_html(title, sections, names))
    return out


# -- a saved model ---------------------------------------------------------------------------------------------------
def per_class_table(metrics: dict[str, Any]) -> str:
    rows = [[c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"]]
            for c, m in metrics["per_class"].items()]  # fmt: skip
    rows.append(["overall accuracy / macro-F1", "", f"{metrics['overall_accuracy']:.3f}", f"{metrics['macro_f1']:.3f}",
                 metrics["n"]])  # fmt: skip
    return html_table(["class", "precision", "recall", "F1", "support"], rows)


def reopen_data(card: dict[str, Any]) -> tuple[Any, Any, str]:
    """The model's data set and split re-opened from the card (``(ds, split or None, note)``; ds None when not)."""
    from eotransfer.api import FitConfig, load_data, make_fit_split

    data = card.get("data", {})
    settings = dict(card.get("fit", {}))
    root = settings.get("data") or data.get("root")
    if not root or not Path(root).exists():
        return None, None, f"the training data ({root or 'not recorded'}) are not reachable from here"
    fields = {f.name for f in dataclasses.fields(FitConfig)}
    cfg = FitConfig(**{k: v for k, v in settings.items() if k in fields})
    cfg.data = str(root)
    if data.get("format") == "array":  # a benchmark held the data in memory: open the source format
        cfg.format = data.get("source_format")
    try:
        ds = load_data(cfg)
    except EOTransferError as exc:
        return None, None, f"the training data could not be re-opened ({exc})"
    if list(ds.classes) != list(card["classes"]) or ds.bands.keys != [
        f"{b['sensor']}:{b['name']}" for b in card["bands"]
    ]:
        return None, None, f"{root} now holds other classes or bands than the model's"
    split, why = None, ""
    try:
        split = make_fit_split(cfg, ds)
        recorded = data.get("split", {})
        if (len(split.train), len(split.test)) != (recorded.get("n_train"), recorded.get("n_test")):
            split, why = None, "the split was not reproduced (a benchmark's fixed split, say): all samples are shown"
    except EOTransferError as exc:
        split, why = None, f"the split was not reproduced ({exc}): all samples are shown"
    return ds, split, why


def _features(saved: Any, ds: Any, indices: np.ndarray) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(indices), 64):
            x = np.stack([ds.checked_read(int(i)) for i in indices[s : s + 64]]).astype(np.float32)
            out.append(saved.network.features(torch.from_numpy(x)).float().numpy())
    return np.concatenate(out)


def data_sections(saved: Any, ds: Any, split: Any, why: str, seed: int = 0) -> list[Section]:
    """Embedding map and sample predictions of a re-opened data set."""
    rng = np.random.default_rng(seed)
    if split is not None:
        side = np.full(len(ds), "", dtype=object)
        side[split.train], side[split.val], side[split.test] = "train", "validation", "test"
        pool = np.concatenate([split.train, split.val, split.test])
        test = np.asarray(split.test)
    else:
        side = np.full(len(ds), "all", dtype=object)
        pool = test = np.arange(len(ds))
    groups = getattr(ds, "events", None)
    groups = getattr(ds, "groups", None) if groups is None else groups
    domain_name = "group" if groups is not None else ("split side" if split is not None else "(no domain known)")
    domains = np.asarray(groups, dtype=object) if groups is not None else side
    emb_idx = np.sort(rng.choice(pool, min(MAX_EMBEDDED, len(pool)), replace=False))
    emb = tsne(_features(saved, ds, emb_idx), seed)
    classes = np.asarray(ds.classes, dtype=object)
    emb_fig = Figure("embedding", embedding_figure(emb, classes[ds.labels[emb_idx]], domains[emb_idx], domain_name),
                     f"t-SNE of {len(emb_idx)} samples' pooled backbone features")  # fmt: skip
    body = note(why) if why else ""
    shown = rng.choice(test, min(60, len(test)), replace=False)
    images = [ds.checked_read(int(i)) for i in shown]
    pred = saved.predict_proba(np.stack(images).astype(np.float32)).argmax(1)
    model_classes = saved.classes
    right = [i for i in range(len(shown)) if model_classes[pred[i]] == ds.classes[ds.labels[shown[i]]]]
    wrong = [i for i in range(len(shown)) if i not in right]
    pick = (wrong[: N_SAMPLES_SHOWN // 2] + right)[:N_SAMPLES_SHOWN]
    pick = pick if len(pick) == N_SAMPLES_SHOWN else (pick + wrong[N_SAMPLES_SHOWN // 2 :])[:N_SAMPLES_SHOWN]
    samples = Figure("samples", samples_figure([images[i] for i in pick], ds.bands,
                                               [ds.classes[ds.labels[shown[i]]] for i in pick],
                                               [model_classes[pred[i]] for i in pick]),
                     f"{len(pick)} {'test ' if split is not None else ''}samples: true and predicted class "
                     "(green right, red wrong); RGB composites, 2-98 % stretch")  # fmt: skip
    return [Section("Embedding map", body, [emb_fig]), Section("Sample predictions", body, [samples])]


def model_sections(model_dir: Path) -> tuple[str, list[Section]]:
    import csv

    from eotransfer.card import CARD_MD, load_model

    saved = load_model(model_dir)
    card = saved.card
    metrics_path = model_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else card.get("metrics", {})
    test = metrics.get("test") or metrics.get("val")
    title = f"eotransfer report: model {card.get('name', model_dir.name)}"
    weights = card.get("weights") or {}
    overview = [["strategy", card["strategy"]["name"]], ["backbone", card["arch"]],
                ["weights", weights.get("name") or weights.get("path") or weights.get("source") or "none (scratch)"],
                ["classes", ", ".join(card["classes"])], ["bands", ", ".join(b["name"] for b in card["bands"])]]  # fmt: skip
    if test:
        overview += [
            ["test overall accuracy", f"{test['overall_accuracy']:.3f}"],
            ["test macro-F1", f"{test['macro_f1']:.3f}"],
        ]
    sections = [Section("Overview", html_table(["", "this model"], overview))]
    if metrics.get("domain"):
        sections.append(Section("Domain shift", domain_table(metrics["domain"])))

    hist_path = model_dir / "history.csv"
    history = list(csv.DictReader(hist_path.open())) if hist_path.is_file() else []
    curve = Section("Label-efficiency curves", note(
        "a single model has one label count; run `eotransfer benchmark` over labels per class and "
        "`eotransfer report` on its folder for label-efficiency curves. Training history below."))  # fmt: skip
    if history:
        from eotransfer.evaluation.plots import plot_history

        rows = [{k: float(v) for k, v in r.items() if v not in ("", None) and _is_number(v)} for r in history]
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_history(rows, Path(tmp) / "h.png", card.get("name", "")).read_bytes()
        curve.figures.append(Figure("history", png, "training loss and validation accuracy per epoch"))
    sections.append(curve)
    if test:
        sections.append(Section("Per-class metrics (test)", per_class_table(test)))
        cm = np.asarray(test["confusion_matrix"])
        sections.append(Section("Confusion matrix (test)", "", [Figure("confusion", confusion_figure(
            cm, list(test["per_class"]), "test confusion matrix (rows: true class)"), "rows: true, columns: predicted")]))  # fmt: skip
    else:
        sections.append(Section("Per-class metrics", note("no test or validation metrics in this model directory")))
    ds, split, why = reopen_data(card)
    if ds is None:
        sections += [
            Section("Embedding map", note(f"skipped: {why}")),
            Section("Sample predictions", note(f"skipped: {why}")),
        ]
    else:
        sections += data_sections(saved, ds, split, why, int(card.get("fit", {}).get("seed", 0)))
    card_md = (model_dir / CARD_MD).read_text() if (model_dir / CARD_MD).is_file() else json.dumps(card, indent=1)
    sections.append(Section("Model card", pre(card_md)))
    config = {"fit": card.get("fit"), "strategy": card.get("strategy"), "training": card.get("training")}
    sections.append(Section("Configuration", pre(json.dumps(config, indent=1, default=str))))
    return title, sections


#: the stages a domain-adaptation fit records (``metrics["domain"]``), in order
DOMAIN_STAGES = (("initial", "initial network (before training)"), ("before_adabn", "source-only (before AdaBN)"),
                 ("adapted", "adapted (the saved model)"))  # fmt: skip


def domain_table(domain: dict[str, Any]) -> str:
    """Proxy A-distance and target accuracy (where the target's labels are known) at each recorded stage."""
    rows = []
    for key, label in DOMAIN_STAGES:
        pad, acc = domain.get(f"pad_{key}"), domain.get(f"target_accuracy_{key}")
        if pad is None and acc is None:
            continue
        rows.append([label, "—" if pad is None else f"{pad:.3f}", "—" if acc is None else f"{acc:.3f}"])
    text = (f"<p>Proxy A-distance between {domain.get('n_source', '?')} source-training and "
            f"{domain.get('n_target', '?')} target images' backbone features (0 = indistinguishable, 2 = separable); "
            "target accuracy where the target's labels are known (used for this score only).</p>")  # fmt: skip
    return text + html_table(["stage", "proxy A-distance", "target accuracy"], rows)


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


# -- a benchmark folder ------------------------------------------------------------------------------------------------
def benchmark_sections(folder: Path) -> tuple[str, list[Section]]:
    from eotransfer.evaluation import benchmark as bm
    from eotransfer.evaluation.evidence import load_grid

    grid = load_grid(folder)
    rows, meta = grid.rows, grid.meta
    title = f"eotransfer report: benchmark {folder.name}"
    summary = bm.summarise_rows(rows)
    datas = list(dict.fromkeys(str(r["data"]) for r in rows))
    curves = Section("Label-efficiency curves", "<p>Mean test overall accuracy over seeds; bands: 95 % Student-t "
                     "interval; x: labelled training samples, log scale. Dashed: the band-statistics reference.</p>")  # fmt: skip
    table = Section("Mean ± 95 % interval per cell")
    robust = Section(
        "Robustness: accuracy under attack", f"<p>{html.escape(bm.ROBUST_NOTE[0].upper() + bm.ROBUST_NOTE[1:])}.</p>"
    )
    zeroshot = Section("Generalised zero-shot: seen and unseen classes",
                       f"<p>{html.escape(bm.ZEROSHOT_NOTE[0].upper() + bm.ZEROSHOT_NOTE[1:])}.</p>")  # fmt: skip
    per_class = Section("Per-class metrics and confusion matrix (best method, most labels, summed over seeds)")
    for data in datas:
        sub = [r for r in rows if r["data"] == data]
        with tempfile.TemporaryDirectory() as tmp:
            png = bm.plot_label_efficiency(sub, Path(tmp) / "c.png", data).read_bytes()
        curves.figures.append(Figure(f"label_efficiency_{_safe(data)}", png, f"label efficiency on {data}"))
        ks, trs = bm.method_table(sub, data)
        n_of = {k: next(r["n_train"] for r in sub if r["k"] == k) for k in ks}
        header = ["method", *[f"k={k} ({n_of[k]} labels)" for k in ks]]
        table.body += f"<h3>{html.escape(data)}</h3>" + html_table(header, trs)
        scored, how = bm.robust_rows(sub, data)
        if scored:
            robust.body += f"<h3>{html.escape(data)}: {html.escape(how)}</h3>" + html_table(
                header, bm.method_table(sub, data, "robust_accuracy")[1]
            )
            robust.body += "".join(f"<p>{html.escape(x)}</p>" for x in bm.certified_lines(sub, data) if x)
            with tempfile.TemporaryDirectory() as tmp:
                png = bm.plot_label_efficiency(scored, Path(tmp) / "r.png", f"{data}: robust accuracy ({how})",
                                               "robust_accuracy").read_bytes()  # fmt: skip
                png2 = bm.plot_clean_vs_robust(scored, Path(tmp) / "cr.png", f"{data}: clean vs. robust").read_bytes()
            robust.figures.append(Figure(f"robust_efficiency_{_safe(data)}", png, f"robust accuracy on {data}"))
            robust.figures.append(
                Figure(f"clean_vs_robust_{_safe(data)}", png2, f"clean vs. robust accuracy on {data}")
            )
        zs = bm.zeroshot_rows(sub, data)
        if zs:
            for value, _, what in bm.ZEROSHOT_SCORES:
                zeroshot.body += f"<h3>{html.escape(data)}: {what}</h3>" + html_table(
                    header, bm.method_table(sub, data, value)[1]
                )
            with tempfile.TemporaryDirectory() as tmp:
                png = bm.plot_label_efficiency(zs, Path(tmp) / "z.png", f"{data}: generalised zero-shot H",
                                               "harmonic_mean").read_bytes()  # fmt: skip
            zeroshot.figures.append(Figure(f"zeroshot_efficiency_{_safe(data)}", png, f"zero-shot H on {data}"))
        needed = bm.labels_needed_lines(summary, data)
        table.body += "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in needed) + "</ul>" if needed else ""
        k_max = max(ks, key=lambda k: n_of[k])
        best = max((s for s in summary if s["data"] == data and s["k"] == k_max), key=lambda s: s["mean"])
        cms = [np.asarray(json.loads(r["confusion_matrix"])) for r in sub
               if bm.method_of(r) == (best["strategy"], best["backbone"], best["init"]) and r["k"] == k_max
               and r.get("confusion_matrix")]  # fmt: skip
        if cms:
            cm = np.sum(cms, axis=0)
            classes = list(meta.get("classes") or [f"class {i}" for i in range(len(cm))])
            from eotransfer.engine.metrics import classification_metrics

            y_true = np.repeat(np.arange(len(cm)), cm.sum(1))
            y_pred = np.concatenate([np.repeat(np.arange(len(cm)), cm[i]) for i in range(len(cm))])
            per_class.body += (
                f"<h3>{html.escape(data)}: {html.escape(best['method'])}, k={k_max}, {len(cms)} seed(s)</h3>"
            )
            per_class.body += per_class_table(classification_metrics(y_true, y_pred, classes))
            per_class.figures.append(Figure(f"confusion_{_safe(data)}", confusion_figure(
                cm, classes, f"{data}: {best['method']}, k={k_max}"), f"confusion matrix on {data}, summed over seeds"))  # fmt: skip
    skipped = note("a benchmark keeps no models; `eotransfer report MODEL_DIR` on a saved model (`eotransfer fit "
                   "--out`) draws the embedding map and sample predictions")  # fmt: skip
    previous_path = folder / bm.PREVIOUS_JSON
    for entry in (json.loads(previous_path.read_text()) if previous_path.is_file() else {}).values():
        spec = bm.PreviousSpec(**entry["previous"])
        acc = entry.get("test_accuracy")
        table.body += (f"<p>Earlier task of the progressive rows (their frozen first column): {html.escape(spec.text())}, "
                       f"test accuracy {'—' if acc is None else f'{acc:.3f}'} on {entry.get('n_test', '?')} "
                       "of its own test images.</p>")  # fmt: skip
    sections = [curves, table, *([robust] if robust.figures else []), *([zeroshot] if zeroshot.figures else []),
                per_class, Section("Embedding map", skipped),
                Section("Sample predictions", skipped)]  # fmt: skip
    sections.append(Section("Model card", note("a benchmark has no single model card; each cell's model is described "
                                               "by its row in results.csv")))  # fmt: skip
    config_path = folder / "benchmark.yaml"
    config_text = config_path.read_text() if config_path.is_file() else json.dumps(meta.get("config", {}), indent=1)
    extra = f"\nsource: {meta.get('source')}\ndevice: {meta.get('device')}, torch {meta.get('torch')}\n" if meta else ""
    sections.append(Section("Configuration", pre(config_text + extra)))
    return title, sections


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
