"""The Diffusion tab's sheet: the forward jump and the chosen sampler's update.

Keys the panel sends at the slider's step: ``alpha_t``, ``alpha_bar_t``, ``sigma_t`` (the
variance-exploding noise level sqrt((1 - alpha_bar) / alpha_bar)), ``snr``, ``t`` and ``step``.
"""

from __future__ import annotations

from . import Formula, Sheet, Symbol

_LIVE = [
    Symbol(r"t", "t", "the timestep at the slider's step", "{:.1f}"),
    Symbol(r"\mathrm{step}", "step", "the sampling step (0 = pure noise)", "{:.0f}"),
    Symbol(r"\alpha_t", "alpha_t", "this step's alpha: alpha_bar_t over alpha_bar of the next, less noisy level",
           "{:.4f}"),
    Symbol(r"\bar{\alpha}_t", "alpha_bar_t", "how much of the clean image is left (squared)", "{:.4f}"),
    Symbol(r"\sigma_t", "sigma_t", "noise level, variance-exploding view: sqrt((1-ab)/ab)", "{:.4g}"),
    Symbol(r"\mathrm{SNR}_t", "snr", "signal-to-noise ratio alpha_bar / (1 - alpha_bar)", "{:.4g}"),
]


def _sampler_formula(sampler: str) -> Formula:
    eps = Symbol(r"\hat{\epsilon}", "", "the network's predicted noise (the right-hand view)")
    x0 = Symbol(r"\hat{x}_0", "", "the predicted clean image (the middle view)")
    if sampler == "ddim":
        return Formula(
            "DDIM: jump towards the predicted x0, keep eta of the noise",
            r"x_{t-1}=\sqrt{\bar{\alpha}_{t-1}}\,\hat{x}_0+\sqrt{1-\bar{\alpha}_{t-1}-\sigma^2}\,\hat{\epsilon}"
            r"+\sigma z,\quad \sigma=\eta\sqrt{\frac{1-\bar{\alpha}_{t-1}}{1-\bar{\alpha}_t}}"
            r"\sqrt{1-\frac{\bar{\alpha}_t}{\bar{\alpha}_{t-1}}}",
            [x0, eps, Symbol(r"\eta", "", "DDIM's eta: 0 deterministic, 1 as much noise as DDPM"),
             Symbol(r"z", "", "fresh standard normal noise")])
    if sampler == "dpmpp-2m-karras":
        return Formula(
            "DPM++ 2M: a second-order step on the ODE, from this and the previous x0 prediction",
            r"x_{i+1}=\frac{\sigma_{i+1}}{\sigma_i}x_i-(e^{-h}-1)\,D,\quad "
            r"D=(1+\frac{1}{2r})\hat{x}_0^{(i)}-\frac{1}{2r}\hat{x}_0^{(i-1)},\quad h=\lambda_{i+1}-\lambda_i",
            [x0, Symbol(r"\lambda", "", "log(alpha / sigma): half the log SNR"),
             Symbol(r"r", "", "the previous step's h over this one's"),
             Symbol(r"\sigma_i", "", "Karras' noise levels, denser near the clean end")])
    if sampler == "euler":
        return Formula(
            "Euler: one straight step along the ODE dx/dsigma = (x - x0) / sigma",
            r"x_{i+1}=x_i+(\sigma_{i+1}-\sigma_i)\frac{x_i-\hat{x}_0}{\sigma_i},\quad "
            r"x=\frac{x_t}{\sqrt{\bar{\alpha}_t}}=x_0+\sigma\epsilon",
            [x0, Symbol(r"\sigma_i", "", "the noise level of step i")])
    if sampler == "euler-a":
        return Formula(
            "Euler ancestral: an Euler step down to sigma_down, then fresh noise up to the next level",
            r"x_{i+1}=x_i+(\sigma_{\downarrow}-\sigma_i)\frac{x_i-\hat{x}_0}{\sigma_i}+\sigma_{\uparrow}z,\quad "
            r"\sigma_{\downarrow}^2+\sigma_{\uparrow}^2=\sigma_{i+1}^2",
            [x0, Symbol(r"\sigma_{\uparrow}", "", "the noise added back"), Symbol(r"z", "", "fresh noise")])
    return Formula(
        "DDPM (ancestral): remove the predicted noise, add a little fresh noise",
        r"x_{t-1}=\frac{1}{\sqrt{\alpha_t}}\left(x_t-\frac{1-\alpha_t}{\sqrt{1-\bar{\alpha}_t}}\hat{\epsilon}\right)"
        r"+\sigma_t z",
        [eps, Symbol(r"z", "", "fresh standard normal noise"),
         Symbol(r"\beta_t=1-\alpha_t", "", "the variance added at step t of the forward process")])


def diffusion_sheet(sampler: str = "ddpm") -> Sheet:
    forward = Formula(
        "The forward jump: any noise level in one step",
        r"x_t=\sqrt{\bar{\alpha}_t}\,x_0+\sqrt{1-\bar{\alpha}_t}\,\epsilon,\quad \epsilon\sim\mathcal{N}(0,I),"
        r"\quad \bar{\alpha}_t=\prod_{s\leq t}\alpha_s",
        [Symbol(r"x_0", "", "the clean image"), Symbol(r"x_t", "", "the noisy image (the left-hand view)"),
         *_LIVE])
    predict = Formula(
        "What the network predicts gives the clean image",
        r"\hat{x}_0=\frac{x_t-\sqrt{1-\bar{\alpha}_t}\,\hat{\epsilon}}{\sqrt{\bar{\alpha}_t}},\quad "
        r"\mathrm{SNR}_t=\frac{\bar{\alpha}_t}{1-\bar{\alpha}_t}=\frac{1}{\sigma_t^2}",
        [Symbol(r"\hat{\epsilon}", "", "the predicted noise"), Symbol(r"\hat{x}_0", "", "the predicted clean image")])
    note = ("What to look at: early steps (low SNR) the predicted x0 is a blurry average; the coarse shape "
            "settles first, details last. Deterministic samplers (DDIM with eta 0, Euler, DPM++) from the same "
            "noise end close to each other; ancestral ones add noise at every step and wander.")
    return Sheet("Diffusion", [forward, predict, _sampler_formula(sampler)], note)
