"""``metrics.json`` and the self-contained ``report.html`` of a quickstart.

The report is one HTML file that works offline and can be mailed around: images and
animations are embedded as ``data:`` URIs, loss curves are inline SVG drawn from the runs'
``metrics.jsonl`` (no plotting library), styles are inline, and nothing is fetched from the
network.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_metrics", "line_chart_svg", "write_report"]

_MIME = {".png": "image/png", ".gif": "image/gif", ".webp": "image/webp"}

#: What each evaluation number means (shown in the metrics table).
_EXPLAIN = {
    "swd": "sliced Wasserstein distance to the data, x1e3, mean over scales (lower is better; weight-free)",
    "fid_avatar": "FID in the avatar extractor's feature space (lower is better; not comparable to Inception FID)",
    "attr_acc": "share of generated avatars whose requested attributes the avatar classifier recognises",
}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text("utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    return out


def last_metric_line(run: Path) -> dict[str, Any]:
    """The last ``kind: metric`` line of a run's ``metrics.jsonl`` (its newest held-out evaluation)."""
    lines = [r for r in _read_jsonl(run / "metrics.jsonl") if r.get("kind") == "metric"]
    return lines[-1] if lines else {}


#: What metrics.json keeps of the refiner stage (its run and held-out evaluation).
_REFINER_KEYS = (
    "run",
    "checkpoint",
    "kimg",
    "train_seconds",
    "train_cpu_seconds",
    "psnr",
    "psnr_bicubic",
    "sharpness",
    "sharpness_bicubic",
    "part_acc",
    "part_acc_fg",
)


def build_metrics(out: Path, state: Mapping[str, Any], minutes: float) -> dict[str, Any]:
    """The ``metrics.json`` dict from the stage records and the runs' files."""
    import torch

    from avatarforge import __version__

    stages = state.get("stages", {})
    gen = stages.get("generator", {})
    anim = stages.get("animator", {})
    ref = stages.get("refiner", {})
    animation = stages.get("animation", {})
    evaluation = json.loads((out / "eval.json").read_text("utf-8")) if (out / "eval.json").is_file() else {}
    gen_run = out / gen.get("run", "")
    train_lines = [r for r in _read_jsonl(gen_run / "metrics.jsonl") if r.get("kind") == "train"]
    rates = [r["img_per_s"] for r in train_lines if r.get("img_per_s")]
    eval_metrics = dict(evaluation.get("metrics", {}))
    chance = {}
    attributes = {}
    ceiling = evaluation.get("settings", {}).get("attribute_net", {}).get("heldout_accuracy", {})
    for name in [k[len("attr_acc_") :] for k in eval_metrics if k.startswith("attr_acc_")]:
        from avatarforge.data.procedural import SCHEMA
        from avatarforge.eval.metrics import attribute_target

        if name in SCHEMA.names:
            k = len(SCHEMA[name].values)
            chance[f"attr_acc_{name}"] = round(1.0 / k, 4)
            attributes[name] = {
                "measured": eval_metrics[f"attr_acc_{name}"],
                "chance": round(1.0 / k, 4),
                "target": round(attribute_target(name, k), 4),
                # The classifier's own accuracy on held-out renders: no generator can be
                # judged more accurately than the judge reads the renderer's avatars.
                "classifier_on_renders": ceiling.get(name),
            }
    anim_metrics = {
        k: v for k, v in last_metric_line(out / anim.get("run", "")).items() if k.startswith("eval_")
    }
    return {
        "format": "avatarforge-quickstart-metrics",
        "version": 1,
        "budget_minutes": minutes,
        "generator": {
            "model": gen.get("model"),
            "run": gen.get("run"),
            "checkpoint": gen.get("checkpoint"),
            "kimg": gen.get("kimg"),
            "train_seconds": gen.get("train_seconds"),
            "train_cpu_seconds": gen.get("train_cpu_seconds"),
            "img_per_s": round(sum(rates) / len(rates), 2) if rates else None,
            "load_avg": gen.get("load_avg"),
        },
        "evaluation": eval_metrics,
        "evaluation_settings": {
            "n": evaluation.get("settings", {}).get("n"),
            "n_ref": evaluation.get("settings", {}).get("n_ref"),
            "truncation": evaluation.get("settings", {}).get("truncation"),
            "notes": evaluation.get("notes", []),
        },
        "chance": chance,
        "attributes": attributes,
        "animator": {
            "run": anim.get("run"),
            "checkpoint": anim.get("checkpoint"),
            "kimg": anim.get("kimg"),
            "train_seconds": anim.get("train_seconds"),
            "train_cpu_seconds": anim.get("train_cpu_seconds"),
            **anim_metrics,
        },
        "refiner": {k: ref.get(k) for k in _REFINER_KEYS},
        "avatar": {"seed": animation.get("seed"), "size": animation.get("size")},
        "stage_seconds": {k: v.get("seconds") for k, v in stages.items() if k != "report"},
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "avatarforge": __version__,
        },
    }


def _attribute_table(attributes: dict[str, Any], n: int | None) -> str:
    """How often the avatar classifier sees the requested value, per attribute, against chance
    and the target (and the classifier's own accuracy on the renderer's avatars)."""
    esc = html.escape
    if not attributes:
        return ""
    rows = []
    for name, a in attributes.items():
        met = a["measured"] >= a["target"]
        ceiling = a.get("classifier_on_renders")
        rows.append(
            f"<tr><td><code>{esc(name)}</code></td><td class=num>{_fmt(a['measured'])}</td>"
            f"<td class=num>{_fmt(a['chance'])}</td><td class=num>{_fmt(a['target'])}</td>"
            f"<td>{'met' if met else 'not met'}</td><td class=num>{_fmt(ceiling)}</td></tr>"
        )
    return f"""<p>Accuracy of the avatar classifier on {_fmt(n)} generated avatars, each asked for random values
(eye colour only where the classifier sees the eyes open). Targets: 0.8 for colours, three times chance for the
rest. The last column is the classifier's own accuracy on held-out renderer avatars: an attribute it cannot read
there (a few pixels at 64 px, such as eyebrow or mouth shape) cannot be judged on generated ones either.</p>
<table><tr><th>attribute</th><th>accuracy</th><th>chance</th><th>target</th><th></th><th>classifier on renders</th></tr>
{"".join(rows)}</table>"""


# ----------------------------------------------------------------------------- SVG charts
def _nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step) + 1)]


def line_chart_svg(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    width: int = 520,
    height: int = 220,
) -> str:
    """An inline ``<svg>`` line chart of named ``[(x, y), ...]`` series (no dependencies)."""
    colors = ["#d6336c", "#1c7ed6", "#2b8a3e", "#f08c00", "#7048e8"]
    pts = [p for s in series.values() for p in s if math.isfinite(p[0]) and math.isfinite(p[1])]
    esc = html.escape
    if not pts:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40"><text x="4" y="24">{esc(title)}: no data</text></svg>'
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1
    ml, mr, mt, mb = 48, 12, 24, 34
    pw, ph = width - ml - mr, height - mt - mb

    def sx(x: float) -> float:
        return ml + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return mt + ph - (y - y0) / (y1 - y0) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<text x="{ml}" y="14" font-weight="bold">{esc(title)}</text>',
        f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>',
    ]
    for t in _nice_ticks(y0, y1):
        y = sy(t)
        parts.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{ml - 4}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    for t in _nice_ticks(x0, x1):
        x = sx(t)
        parts.append(f'<text x="{x:.1f}" y="{mt + ph + 14}" text-anchor="middle">{t:g}</text>')
    parts.append(f'<text x="{ml + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">{esc(x_label)}</text>')
    for i, (name, s) in enumerate(series.items()):
        c = colors[i % len(colors)]
        good = [p for p in s if math.isfinite(p[0]) and math.isfinite(p[1])]
        if good:
            d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
            parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{d}"/>')
        lx = ml + 8 + i * 110
        parts.append(f'<rect x="{lx}" y="{mt + 6}" width="10" height="3" fill="{c}"/>')
        parts.append(f'<text x="{lx + 14}" y="{mt + 10}">{esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _curves(run: Path, keys: Sequence[str]) -> dict[str, list[tuple[float, float]]]:
    lines = [r for r in _read_jsonl(run / "metrics.jsonl") if r.get("kind") == "train"]
    return {k: [(float(r["kimg"]), float(r[k])) for r in lines if k in r] for k in keys}


# ----------------------------------------------------------------------------- HTML
def _data_uri(path: Path) -> str:
    mime = _MIME[path.suffix.lower()]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _img(path: Path, alt: str, scale: float = 2.0, checker: bool = False) -> str:
    """An embedded image shown ``scale`` x its pixel size (64 px avatars are small on screen),
    without smoothing."""
    if not path.is_file():
        return f"<p><em>{html.escape(path.name)} missing</em></p>"
    from PIL import Image

    with Image.open(path) as im:
        width = round(im.size[0] * scale)
    cls = "px checker" if checker else "px"
    return f'<img src="{_data_uri(path)}" alt="{html.escape(alt)}" width="{width}" class="{cls}">'


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v)) if v is not None else "-"


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1000px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45} img{max-width:100%;height:auto}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.sub{color:#666;margin-top:0}
img.px{image-rendering:pixelated}
figure{display:inline-block;margin:0 1.5em 1em 0;vertical-align:top} figcaption{color:#555;font-size:.9em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left}
th{background:#f6f6f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;border-radius:4px}
code{background:#f6f8fa;padding:0 .2em;border-radius:3px}
.checker{background-color:#fff;background-image:linear-gradient(45deg,#ccc 25%,transparent 25%),
linear-gradient(-45deg,#ccc 25%,transparent 25%),linear-gradient(45deg,transparent 75%,#ccc 75%),
linear-gradient(-45deg,transparent 75%,#ccc 75%);background-size:16px 16px;
background-position:0 0,0 8px,8px -8px,-8px 0}
"""


def _turntable(out: Path) -> str:
    """The VRM section when the quickstart wrote one (its part map had a face)."""
    if not (out / "avatar.vrm").is_file() or not (out / "turntable.webp").is_file():
        return ""
    return f"""<h2>3D (VRM)</h2>
<p><code>avatar.vrm</code>: the live avatar as a textured VRM model (layered head and bust, blink,
vowels and emotions from the rig) for VSeeFace, Warudo or a browser (docs/3d.md); a turntable
rendered on the CPU:</p>
<figure>{_img(out / "turntable.webp", "VRM turntable", 1, checker=True)}<figcaption>turntable.webp</figcaption></figure>
"""


def write_report(out: Path, metrics: Mapping[str, Any], state: Mapping[str, Any]) -> Path:
    """Write ``OUT/report.html`` (atomically) and return its path."""
    from avatarforge.fileio import atomic_write_text

    esc = html.escape
    stages = state.get("stages", {})
    gen, anim, ev = metrics["generator"], metrics["animator"], metrics["evaluation"]
    ref = metrics.get("refiner", {})
    av = metrics.get("avatar", {})
    samples_info = stages.get("samples", {})
    labels = samples_info.get("attribute_labels", [])
    picks = {"hair_color": "pink", "eye_color": "blue", "accessory": "cat_ears"}
    example = ",".join(f"{k}={v}" for k, v in picks.items() if k in labels)
    example_attrs = f" --attrs {example}" if example else ""
    evaluation_n = metrics.get("evaluation_settings", {}).get("n")
    out_arg = esc(str(out))

    rows = []
    for k, v in ev.items():
        if k in _EXPLAIN:
            note = _EXPLAIN[k]
        elif k.startswith("attr_acc_"):
            note = f"accuracy on {k[len('attr_acc_') :]}"
        elif k.startswith("swd_"):
            note = f"SWD at the {k[4:]} px level of the Laplacian pyramid"
        else:
            note = ""
        chance = metrics.get("chance", {}).get(k)
        if chance is not None:
            note += f" (chance: {chance:.2f})"
        rows.append(
            f"<tr><td><code>{esc(k)}</code></td><td class=num>{_fmt(v)}</td><td>{esc(note)}</td></tr>"
        )
    for k, v in anim.items():
        if k in _ANIM_EXPLAIN:  # the rest are in metrics.json
            rows.append(
                f"<tr><td><code>animator.{esc(k)}</code></td><td class=num>{_fmt(v)}</td>"
                f"<td>{esc(_ANIM_EXPLAIN.get(k, 'held-out animator metric (docs/animate.md)'))}</td></tr>"
            )
    timing = "".join(
        f"<tr><td>{esc(k)}</td><td class=num>{_fmt_s(v)}</td></tr>"
        for k, v in metrics.get("stage_seconds", {}).items()
        if v is not None
    )
    total = sum(v for v in metrics.get("stage_seconds", {}).values() if v)

    gen_run = out / (gen.get("run") or "")
    anim_run = out / (anim.get("run") or "")
    g_chart = line_chart_svg(
        _curves(gen_run, ["loss_g", "loss_d"]), title="generator losses", x_label="kimg (thousand images)"
    )
    a_chart = line_chart_svg(
        _curves(anim_run, ["mse", "l1"]), title="animator reconstruction", x_label="kimg (thousand pairs)"
    )
    reals = gen_run / "samples" / "reals.png"
    machine = metrics.get("machine", {})
    n = machine.get("threads")
    device = machine.get("cuda") or f"CPU, {n} torch thread{'' if n == 1 else 's'}"

    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>AvatarForge quickstart report</title>
<style>{_CSS}</style></head>
<body>
<h1>AvatarForge quickstart</h1>
<p class="sub">Budget {metrics.get("budget_minutes"):g} min; stages took {_fmt_s(total)} in all
({esc(device)}, torch {esc(str(machine.get("torch")))}, avatarforge {esc(str(machine.get("avatarforge")))}).
Generated {time.strftime("%Y-%m-%d %H:%M")}.</p>

<h2>Generated avatars</h2>
<p>A conditional {esc(_MODEL_NAMES.get(gen.get("model"), str(gen.get("model"))))} trained from scratch for {_fmt_s(gen.get("train_seconds"))} on
procedural avatars ({_fmt(gen.get("kimg"))} thousand images seen, {_fmt(gen.get("img_per_s"))} images/s),
sampled with truncation 0.7. Transparency is shown on a checkerboard.
Training used {_fmt_s(gen.get("train_cpu_seconds"))} of CPU time on {_fmt(machine.get("cpu_count"))} cores
(load average {_fmt(gen.get("load_avg"))} at the end: on a busy machine the same minutes buy less training).</p>
<figure>{_img(out / "samples.png", "sample grid", 1.5)}<figcaption>samples.png: seeds 0-63</figcaption></figure>
<figure>{_img(reals, "training data", 0.75)}<figcaption>the training data (procedural avatars)</figcaption></figure>

<h2>Attribute control</h2>
<p>The generator is conditioned on {len(labels)} attribute{"" if len(labels) == 1 else "s"}. Each row draws one avatar
with every value of one attribute; the others stay that avatar's own.</p>
<figure>{_img(out / "attributes.png", "attribute sheet", 1.0)}<figcaption>attributes.png</figcaption></figure>
{_attribute_table(metrics.get("attributes", {}), evaluation_n)}

<h2>Stream-ready: {_fmt(av.get("size"))} px</h2>
<p>The same seeds through the refiner ({_fmt_s(ref.get("train_seconds"))} of training on the renderer's
512-px avatars; on held-out avatars PSNR {_fmt(ref.get("psnr"))} dB vs {_fmt(ref.get("psnr_bicubic"))} for
bicubic, edge sharpness {_fmt(ref.get("sharpness"))}x the original's vs {_fmt(ref.get("sharpness_bicubic"))}).
Alpha is cleaned: one silhouette, opaque inside.</p>
<figure>{_img(out / "avatars-512.webp", "avatars at 512 px", 0.5, checker=True)}<figcaption>avatars-512.webp: seeds 0-3 at full size</figcaption></figure>
<p>The live avatar (seed {_fmt(av.get("seed"))}) rigged from its refined picture and predicted part map:
blink, winks, talking through the vowels A I U E O, smile, head turn with the eyes leading, nod,
breathing. <code>avatarforge serve {out_arg}</code> streams it: the overlay draws it in the page at 512 px.</p>
<figure>{_img(out / "avatar.webp", "animated avatar", 1, checker=True)}<figcaption>avatar.webp: transparent, {_fmt(av.get("size"))} px
(the live rig); also avatar.gif (256 px) and avatar.png (the still)</figcaption></figure>

{_turntable(out)}
<h2>Interpolation</h2>
<figure>{_img(out / "interpolation.gif", "interpolation", 3)}<figcaption>interpolation.gif: a loop through six seeds</figcaption></figure>

<h2>Metrics</h2>
<table><tr><th>metric</th><th>value</th><th>meaning</th></tr>
{"".join(rows)}
</table>
<p>{" ".join(esc(n) for n in metrics.get("evaluation_settings", {}).get("notes", []))}</p>
<p>Evaluated on {_fmt(metrics.get("evaluation_settings", {}).get("n"))} generated images against
{_fmt(metrics.get("evaluation_settings", {}).get("n_ref"))} training images. All numbers are in
<code>metrics.json</code>.</p>

<h2>Training curves</h2>
{g_chart}
{a_chart}

<h2>Time per stage</h2>
<table><tr><th>stage</th><th>time</th></tr>{timing}</table>

<h2>How to continue</h2>
<p>Train longer (the runs resume; a larger budget continues training from the last checkpoint):</p>
<pre>avatarforge quickstart --out {out_arg} --minutes 60</pre>
<p>Serve the models: the web studio (pick-and-refine, attributes, sliders, RGBA download) at
<a href="http://127.0.0.1:8000/studio">http://127.0.0.1:8000/studio</a> and the OBS browser-source
overlay at <a href="http://127.0.0.1:8000/overlay">http://127.0.0.1:8000/overlay</a>:</p>
<pre>avatarforge serve {out_arg}</pre>
<p>Generate and animate from the command line:</p>
<pre>avatarforge generate {esc(str(gen_run))} --seeds 1-16{esc(example_attrs)} --grid --truncation 0.7
avatarforge interpolate {esc(str(gen_run))} --seeds 1,5,9 --out loop.webp
avatarforge animate {esc(str(anim_run))} --avatar {out_arg}/avatar.png --script blink,talk --out me.webp</pre>
<p>Train on your own images:</p>
<pre>avatarforge data prepare ~/Pictures/my-art data/mine --size 64
avatarforge train --data data/mine --model stylegan --minutes 60</pre>
<p>Documentation: docs/quickstart.md, docs/generation.md, docs/animate.md, docs/training.md in the AvatarForge repository.</p>
</body></html>
"""
    return atomic_write_text(out / "report.html", body)


_MODEL_NAMES = {"stylegan": "StyleGAN (stylegan-64 preset)", "cgan": "DCGAN (cgan, conditional batch norm)"}

_ANIM_EXPLAIN = {
    "eval_ratio": "held-out error where the expression changes / copying the source (lower is better; < 1 beats doing nothing)",
    "eval_face_ratio": "the same on eyes, brows and mouth",
    "eval_eye_err": "eye openness error on held-out pairs whose eyes change",
    "eval_eye_err_baseline": "the same for copying the source (eval_eye_err should be lower)",
    "eval_mouth_err": "mouth openness error on held-out pairs whose mouth changes",
    "eval_mouth_err_baseline": "the same for copying the source (eval_mouth_err should be lower)",
    "eval_identity_l1": "neutral -> expression -> neutral round trip, L1 (identity kept)",
}
