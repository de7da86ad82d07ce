"""The Drag tab's sheet: DragGAN's motion supervision and point tracking (Pan et al. 2023), and FreeDrag's change.

Keys the panel sends: ``step``; ``motion`` and ``mask_loss`` (the two loss terms) and
``loss`` (their sum); ``lambda``, ``r1``, ``r2`` (radii in feature pixels at this
resolution), ``lr``; for the first handle/target pair ``hx``, ``hy`` (the tracked handle),
``tx``, ``ty`` (its target) and ``dist`` (its distance, px); ``max_dist`` over all pairs,
``stop`` (the stop distance) and ``pairs``.
"""

from __future__ import annotations

from . import Formula, Sheet, Symbol

METHODS = ("draggan", "freedrag")


def drag_sheet(method: str = "draggan") -> Sheet:
    if method not in METHODS:
        raise ValueError(f"Unknown drag method {method!r}; choose one of {', '.join(METHODS)}.")
    motion = Formula(
        "Motion supervision: pull the features around each handle one step toward its target",
        r"\mathcal{L}_{\mathrm{motion}}=\sum_{i}\sum_{q\in\Omega_1(p_i,r_1)}"
        r"\left\|F(q+d_i)-\mathrm{sg}(F(q))\right\|_1,\quad d_i=\frac{t_i-p_i}{\|t_i-p_i\|}",
        [Symbol(r"\mathcal{L}_{\mathrm{motion}}", "motion", "the motion term at this step"),
         Symbol(r"F", "", "the generator's features (block b128, or the top block of a smaller model), "
                          "upsampled to the image size"),
         Symbol(r"p_1", "", "the first handle, tracked (x, y below)"),
         Symbol(r"x(p_1)", "hx", "its x now, in image pixels", "{:.1f}"),
         Symbol(r"y(p_1)", "hy", "its y now", "{:.1f}"),
         Symbol(r"t_1", "", "its target (the blue dot)"),
         Symbol(r"\|t_1-p_1\|", "dist", "how far it still is, px", "{:.2f}"),
         Symbol(r"r_1", "r1", "radius of the disk Ω₁ that is pulled, feature px", "{:g}"),
         Symbol(r"\mathrm{sg}", "", "stop-gradient: F(q) is the fixed reference, only F(q + d) moves")])
    mask = Formula(
        "Keep the fixed region as it was (only when a mask is painted)",
        r"\mathcal{L}=\mathcal{L}_{\mathrm{motion}}+\lambda\,\left\|(F-F_0)\odot(1-M)\right\|_1",
        [Symbol(r"\mathcal{L}", "loss", "the loss Adam minimises over the first 6 ws (W+) or one w (W)"),
         Symbol(r"\lambda\|\cdot\|", "mask_loss", "the mask term (already times λ)"),
         Symbol(r"\lambda", "lambda", "its weight", "{:g}"),
         Symbol(r"M", "", "1 in the flexible area you painted, 0 elsewhere"),
         Symbol(r"F_0", "", "the features when the drag started"),
         Symbol(r"\eta", "lr", "Adam's step size", "{:g}")])
    formulas = [motion, mask]
    if method == "draggan":
        formulas.append(Formula(
            "Point tracking: find the handle again after each step",
            r"p_i\leftarrow\arg\min_{q\in\Omega_2(p_i,r_2)}\left\|F'(q)-f_i\right\|_2",
            [Symbol(r"f_i", "", "the handle's feature when the drag started"),
             Symbol(r"F'", "", "the features after the step"),
             Symbol(r"r_2", "r2", "half-size of the square Ω₂ searched, feature px", "{:g}")]))
    else:
        formulas.append(Formula(
            "FreeDrag: no tracking; an adaptive template and short sub-motions",
            r"f_i\leftarrow\lambda_i\,f_i+(1-\lambda_i)\,F(p_i),\quad\|p_i^{k+1}-p_i^k\|\leq d_{\max}",
            [Symbol(r"f_i", "", "the handle's template, updated as the loss allows"),
             Symbol(r"d_{\max}", "", "the longest sub-motion (3 feature px)")]))
    formulas.append(Formula(
        "Stop when every handle is close enough",
        r"\max_i\|t_i-p_i\|\leq d_{\mathrm{stop}}",
        [Symbol(r"\max_i\|t_i-p_i\|", "max_dist", "the farthest pair now, px", "{:.2f}"),
         Symbol(r"d_{\mathrm{stop}}", "stop", "the stop distance, px", "{:g}"),
         Symbol(r"k", "step", "optimisation steps so far", "{:.0f}")]))
    note = ("What to look at: the red handle should slide toward its blue target while the face stays a face. "
            "If the handle stops following (the distance stalls while the motion loss stays high), tracking "
            "lost it: the features around it changed too much; FreeDrag's template and short sub-motions are "
            "meant for that. A painted mask keeps everything outside it (λ large) and makes edits local.")
    return Sheet('DragGAN' if method == 'draggan' else 'FreeDrag', formulas, note)
