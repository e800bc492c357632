"""Reports for the measurements: a readable table (text), a JSON-ready dict, files, and PNG plots.

Every ``measure_*`` result is a dict with a ``measurement`` key; :func:`format_table` dispatches on it. Keys starting
with ``_`` (arrays kept for plots) are dropped from JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from calib.frames import atomic_write_bytes


def to_json(result: Any) -> Any:
    """A JSON-serialisable copy: numpy scalars/arrays converted, NaN/inf → None, ``_private`` keys dropped."""
    if isinstance(result, dict):
        return {str(k): to_json(v) for k, v in result.items() if not str(k).startswith("_")}
    if isinstance(result, list | tuple):
        return [to_json(v) for v in result]
    if isinstance(result, np.ndarray):
        return to_json(result.tolist())
    if isinstance(result, np.bool_ | bool):
        return bool(result)
    if isinstance(result, np.integer):
        return int(result)
    if isinstance(result, np.floating | float):
        f = float(result)
        return f if math.isfinite(f) else None
    if isinstance(result, Path):
        return str(result)
    return result


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and not 1e-4 <= abs(value) < 1e6:
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits if abs(value) < 1 else digits + 1}g}"
    return str(value)


def _table(rows: list[tuple[str, Any, str]]) -> str:
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {label:<{width}}  {_fmt(value)} {unit}".rstrip() for label, value, unit in rows)


def _grid(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[[_fmt(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  " + "  ".join(c.rjust(widths[i]) for i, c in enumerate(row)) for row in cells)


def _notes(result: dict[str, Any], key: str = "notes") -> str:
    items = result.get(key) or []
    return "".join(f"\n  note: {n}" for n in items)


def _read_noise(r: dict[str, Any]) -> str:
    rows = [("read noise", r["read_noise_adu"], f"ADU ± {_fmt(r['read_noise_adu_uncertainty'], 2)}"),
            ("read noise", r["read_noise_e"], f"e⁻ ± {_fmt(r['read_noise_e_uncertainty'], 2)}"),
            ("  without quantisation (Sheppard)", r["read_noise_sheppard_adu"], "ADU"),
            ("  MAD estimate (biased, not used)", r["read_noise_mad_adu"], "ADU"),
            ("method", r["method"], ""), ("frames", r["n_frames"], ""), ("region", r["region"], ""),
            ("pixels used / rejected", f"{r['n_pixels']} / {r['n_rejected']}", ""),
            ("quantisation step", r["quantisation_step_adu"], "ADU")]
    conv = _grid(["n", "RON [ADU]"], [[c["n"], c["read_noise_adu"]] for c in r["convergence"]])
    return "Read noise (σ(ΣB)/√n)\n" + _table(rows) + "\n\n" + conv + _notes(r)


def _gain(r: dict[str, Any]) -> str:
    rows = [("gain", r["gain_e_per_adu"], f"e⁻/ADU ± {_fmt(r['gain_e_per_adu_uncertainty'], 2)}"),
            ("read noise", r["read_noise_e"], "e⁻"), ("read noise", r["read_noise_adu"], "ADU"),
            ("method", r["method"], ""), ("region", r["region"], "")]
    text = "Gain (photon transfer)\n"
    if r["measurement"] == "ptc":
        rows += [("full well", r["full_well_e"], "e⁻" + ("" if r["full_well_reached"] else " (lower bound)")),
                 ("linearity, max deviation", r["linearity_max_deviation_pct"], "%")]
        levels = _grid(["exposure [s]", "signal [ADU]", "shot var [ADU²]", "gain [e⁻/ADU]"],
                       [[lv["exposure_s"], lv["signal_adu"], lv["shot_variance_adu2"], lv["gain_e_per_adu"]]
                        for lv in r["levels"]])
        return text + _table(rows) + "\n\n" + levels + _notes(r)
    rows.insert(1, ("signal", r["signal_adu"], "ADU"))
    return text + _table(rows) + _notes(r)


def _dark_current(r: dict[str, Any]) -> str:
    lo, hi = r["dark_current_ci_e_per_s"]
    rows = [("dark current (upper bound)", r["dark_current_e_per_s"], "e⁻/s/px"),
            (f"  {round(100 * r['confidence'])} % interval", f"{_fmt(lo)} … {_fmt(hi)}", "e⁻/s/px"),
            ("method", r["method"], "")]
    if "per_exposure" in r:
        rows += [("read noise from intercept", r["read_noise_from_intercept_e"], "e⁻"),
                 ("naive mean method (longest)", r["dark_current_naive_e_per_s"], "e⁻/s/px"),
                 ("two-exposure noise method", r["dark_current_noise_ratio_e_per_s"], "e⁻/s/px"),
                 ("naive negative", r["naive_negative"], ""), ("read noise", r["read_noise_e"], "e⁻"),
                 ("gain", r["gain_e_per_adu"], "e⁻/ADU"), ("frames", r["n_frames"], ""), ("region", r["region"], "")]
        per = _grid(["exposure [s]", "n", "Dc [e⁻/s]", "±1σ", "naive [e⁻/s]"],
                    [[p["exposure_s"], p["n_frames"], p["dark_current_e_per_s"],
                      p["dark_current_uncertainty_e_per_s"], p["dark_current_naive_e_per_s"]]
                     for p in r["per_exposure"]])
        return "Dark current (slope of the pair variance over exposure)\n" + _table(rows) + "\n\n" + per + _notes(r)
    rows += [("pair (first two frames)", r["dark_current_pair_e_per_s"], "e⁻/s/px"),
             ("naive mean method", r["dark_current_naive_e_per_s"], "e⁻/s/px"
              + ("  <-- NEGATIVE" if r["naive_negative"] else ("  <-- understated" if r["naive_understated"] else ""))),
             ("naive, overscan-corrected", r["dark_current_naive_overscan_e_per_s"], "e⁻/s/px"),
             ("dark / bias mean", f"{_fmt(r['dark_mean_adu'])} / {_fmt(r['bias_mean_adu'])}", "ADU"),
             ("read noise", r["read_noise_e"], f"e⁻ ({r['read_noise_source']})"),
             ("gain", r["gain_e_per_adu"], "e⁻/ADU"), ("exposure", r["exposure_s"], "s"),
             ("temperature", r["temperature_c"], "°C"), ("frames", r["n_frames"], ""), ("region", r["region"], "")]
    conv = _grid(["n", "Dc [e⁻/s]", "±1σ", "σ²/n [e⁻²]"],
                 [[c["n"], c["dark_current_e_per_s"], c["uncertainty_e_per_s"], c["variance_e2"]]
                  for c in r["convergence"]])
    return "Dark current (Buil pair / N-frame alternating sum)\n" + _table(rows) + "\n\n" + conv + _notes(r)


def _ladder(r: dict[str, Any]) -> str:
    pts = _grid(["exposure [s]", "kind", "level [ADU]", "±σ", "below bias"],
                [[p["exposure_s"], p["kind"], p["level_adu"], p["sigma_adu"], p["below_bias"] if p["kind"] == "dark"
                  else None] for p in r["points"]])
    fits = _grid(["model", "χ²", "BIC", "coefficients (c0, c1 /s, c2 /s²)"],
                 [[name + (" *" if name == r["model"] else ""), f["chi2"], f["bic"],
                   ", ".join(f"{c:.4g}" for c in f["coefficients"])] for name, f in r["fits"].items()])
    ev = "".join(f"\n  evidence: {e}" for e in r["evidence"])
    return (f"Dark level against exposure (reference: {r['reference']})\n" + pts + "\n\n" + fits
            + f"\n\n  VERDICT: {r['verdict']}" + ev)


def _temperature(r: dict[str, Any]) -> str:
    pts = _grid(["T [°C]", "Dc [e⁻/s]", "±1σ", "exposure [s]", "n"],
                [[p["temperature_c"], p["dark_current_e_per_s"], p["uncertainty_e_per_s"], p["exposure_s"],
                  p["n_frames"]] for p in r["points"]])
    rows = [("doubling temperature", r["doubling_temperature_c"],
             f"°C ± {_fmt(r['doubling_temperature_uncertainty_c'], 2)}"),
            ("dark current at 0 °C", r["dark_current_at_0c_e_per_s"], "e⁻/s/px")]
    return "Dark current against temperature\n" + pts + "\n\n" + _table(rows) + _notes(r)


def _amp_glow(r: dict[str, Any]) -> str:
    g = r["growth"]
    rows = [("location", r["location"], ""), ("glow seen at", ", ".join(r["glow_locations"]) or "-", ""),
            ("amplitude (strongest box)", r["glow_amplitude_adu"], "ADU"), ("amplitude", r["glow_amplitude_e"], "e⁻"),
            ("extent (to 10 % of peak)", r["glow_extent_px"], "px"),
            ("growth exponent p (A ∝ t^p)", g["exponent"], f"± {_fmt(g['exponent_uncertainty'], 2)}"),
            ("growth", g["verdict"], ""), ("hot pixels", r["hot_pixels"], f"({100 * r['hot_pixel_fraction']:.3f} %)"),
            ("exposure (map)", r["exposure_s"], "s"), ("DATASEC", r["datasec"], "")]
    per = _grid(["exposure [s]", "amplitude [ADU]", "centre level [ADU]"],
                [[p["exposure_s"], p["glow_amplitude_adu"], p["centre_level_adu"]] for p in r["per_exposure"]])
    hot = _grid(["x", "y", "excess [ADU]", "rate [e⁻/s]", "saturated"],
                [[h["x"], h["y"], h["excess_adu"], h["rate_e_per_s"], h["saturated"]]
                 for h in r["hot_pixel_list"][:10]])
    return "Amp glow and hot pixels\n" + _table(rows) + "\n\n" + per + "\n\n  hottest pixels:\n" + hot


FORMATTERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "read-noise": _read_noise, "gain": _gain, "ptc": _gain, "dark-current": _dark_current, "dark-ladder": _ladder,
    "dark-temperature": _temperature, "amp-glow": _amp_glow,
}


def format_table(result: dict[str, Any]) -> str:
    """Readable text for one measurement result."""
    formatter = FORMATTERS.get(str(result.get("measurement")))
    if formatter is None:
        raise ValueError(f"unknown measurement {result.get('measurement')!r}")
    return formatter(result)


def write_report(result: dict[str, Any], path: str | Path) -> Path:
    """Write the report atomically: JSON for ``*.json``, the table text otherwise."""
    p = Path(path)
    text = json.dumps(to_json(result), indent=2) if p.suffix.lower() == ".json" else format_table(result)
    return atomic_write_bytes(p, (text + "\n").encode())


# ---- plots --------------------------------------------------------------------------------------------------------
def _figure(ncols: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(6.4 * ncols, 4.6), constrained_layout=True)
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    from matplotlib import pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_dark_current(r: dict[str, Any], out: Path, stem: str) -> list[Path]:
    paths = []
    conv = r.get("convergence")
    if conv:
        fig, ax = _figure()
        n = [c["n"] for c in conv]
        ax.errorbar(n, [c["dark_current_e_per_s"] for c in conv], yerr=[c["uncertainty_e_per_s"] for c in conv],
                    fmt="o-", capsize=3, label="N-frame alternating sum")
        if r.get("dark_current_naive_e_per_s") is not None:
            ax.axhline(r["dark_current_naive_e_per_s"], color="tab:red", ls="--", label="naive mean method")
        if r.get("dark_current_ci_e_per_s"):
            ax.axhspan(*r["dark_current_ci_e_per_s"], color="tab:blue", alpha=0.12,
                       label=f"{round(100 * r['confidence'])} % interval (n = {n[-1]})")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(n)
        ax.set(xlabel="frames n", ylabel="dark current [e⁻/s/px]",
               title=f"Dark current convergence ({_fmt(r['exposure_s'])} s darks)")
        ax.legend()
        paths.append(_save(fig, out / f"{stem}_convergence.png"))
    if "per_exposure" in r:
        fig, ax = _figure()
        t = np.array([p["exposure_s"] for p in r["per_exposure"]])
        v = [p["convergence"][-1]["variance_e2"] for p in r["per_exposure"]]
        ax.plot(t, v, "o", label="pair variance g²σ²(ΣD)/n")
        tt = np.linspace(0, t.max() * 1.05, 50)
        ron2 = (r["read_noise_from_intercept_e"] or 0.0) ** 2
        ax.plot(tt, ron2 + r["dark_current_e_per_s"] * tt, "-", label=f"fit: slope {_fmt(r['dark_current_e_per_s'])}")
        ax.set(xlabel="exposure [s]", ylabel="variance [e⁻²]", title="Pair variance against exposure")
        ax.legend()
        paths.append(_save(fig, out / f"{stem}_pair_variance.png"))
    return paths


def _plot_ladder(r: dict[str, Any], out: Path, stem: str) -> list[Path]:
    fig, ax = _figure()
    pts = r["points"]
    t = np.array([p["exposure_s"] for p in pts])
    ax.errorbar(t, [p["level_adu"] for p in pts], yerr=[p["sigma_adu"] for p in pts], fmt="ko", capsize=3,
                label="dark level (bias at t = 0)")
    tt = np.linspace(0, t.max() * 1.05, 200)
    for name, f in r["fits"].items():
        y = sum(c * tt**i for i, c in enumerate(f["coefficients"]))
        ax.plot(tt, y, lw=2.2 if name == r["model"] else 1.0, label=f"{name} (BIC {f['bic']:.1f})")
    ax.axhline(pts[0]["level_adu"], color="grey", ls=":", label=f"{r['reference']} level")
    ax.set(xlabel="exposure [s]", ylabel="mean level [ADU] (overscan-corrected)",
           title="scaling VALID" if r["scaling_valid"] else "dark scaling NOT valid")
    ax.legend(fontsize=8)
    return [_save(fig, out / f"{stem}_ladder.png")]


def _plot_amp_glow(r: dict[str, Any], out: Path, stem: str) -> list[Path]:
    paths = []
    glow = r.get("_glow_map")
    if glow is not None:
        fig, ax = _figure()
        lo, hi = np.percentile(glow, [1, 99.5])
        im = ax.imshow(glow, origin="upper", cmap="magma", vmin=lo, vmax=hi, interpolation="nearest")
        fig.colorbar(im, ax=ax, label="excess over the centre [ADU]")
        ax.set(title=f"Amp glow, {_fmt(r['exposure_s'])} s (row 1 at the top)", xlabel="x [px]", ylabel="y [px]")
        paths.append(_save(fig, out / f"{stem}_glow_map.png"))
    fig, axes = _figure(2)
    rad = r["radial_profile"]
    axes[0].plot([p["r_px"] for p in rad], [p["excess_adu"] for p in rad], "o-")
    axes[0].set(xlabel=f"distance from the {r['location']} corner [px]", ylabel="excess [ADU]", title="Radial profile")
    per = [p for p in r["per_exposure"] if p["glow_amplitude_adu"] > 0]
    if per:
        t = np.array([p["exposure_s"] for p in per])
        axes[1].loglog(t, [p["glow_amplitude_adu"] for p in per], "o", label="amplitude")
        g = r["growth"]
        if g["exponent"] is not None:
            axes[1].loglog(t, g["coefficient"] * t ** g["exponent"], "-", label=f"t^{g['exponent']:.2f}")
        axes[1].legend()
    axes[1].set(xlabel="exposure [s]", ylabel="glow amplitude [ADU]", title=f"Growth: {r['growth']['verdict']}")
    paths.append(_save(fig, out / f"{stem}_glow_profile.png"))
    return paths


def _plot_ptc(r: dict[str, Any], out: Path, stem: str) -> list[Path]:
    fig, ax = _figure()
    s = np.array([lv["signal_adu"] for lv in r["levels"]])
    ax.plot(s, [lv["shot_variance_adu2"] for lv in r["levels"]], "o", label="levels")
    ax.plot(s, s / r["gain_e_per_adu"] + r["ptc_intercept_adu2"], "-", label=f"g = {_fmt(r['gain_e_per_adu'])} e⁻/ADU")
    ax.set(xlabel="signal [ADU]", ylabel="shot variance [ADU²]", title="Photon-transfer curve")
    ax.legend()
    return [_save(fig, out / f"{stem}_ptc.png")]


PLOTTERS: dict[str, Callable[[dict[str, Any], Path, str], list[Path]]] = {
    "dark-current": _plot_dark_current, "dark-ladder": _plot_ladder, "amp-glow": _plot_amp_glow, "ptc": _plot_ptc,
}


def write_plots(result: dict[str, Any], out_dir: str | Path, stem: str | None = None) -> list[Path]:
    """PNG plots for a result (dark current convergence / pair variance, ladder, glow map + profiles, PTC)."""
    plotter = PLOTTERS.get(str(result.get("measurement")))
    if plotter is None:
        return []
    return plotter(result, Path(out_dir), stem or str(result["measurement"]))
