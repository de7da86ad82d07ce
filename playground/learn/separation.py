"""The Separation tab's sheet: Conv-TasNet's encoder, masks and decoder (Luo and Mesgarani 2019), and SI-SNR.

Keys the panel sends: ``N``, ``L``, ``stride``, ``K`` (frames), ``C`` (speakers) of the model
in use; ``seconds`` (audio length) and ``rtf`` (the real-time factor of the last run); per
voice c = 1, 2, 3 ``si_snr{c}``, ``si_snr_mix{c}`` and ``si_snri{c}`` when the true sources
are known; ``mask_mean{c}`` (the mean of voice c's mask).
"""

from __future__ import annotations

from . import Formula, Sheet, Symbol


def separation_sheet(speakers: int = 2) -> Sheet:
    pipeline = Formula(
        "Encoder, masks, decoder: separate in a learned filterbank, not in a spectrogram",
        r"\mathbf{w}=\mathrm{Conv1d}_{U}(x),\quad \mathbf{m}_c=\mathrm{TCN}(\mathbf{w}),\quad "
        r"\hat{s}_c=\mathrm{ConvTranspose1d}_{V}(\mathbf{w}\odot\mathbf{m}_c)",
        [Symbol(r"x", "", "the mixture (the top row)"),
         Symbol(r"\mathbf{w}", "", "the encoder's output: N basis signals × K frames (the picture "
                                   "'encoder output' under the rows; like a spectrogram, but learned)"),
         Symbol(r"N", "N", "encoder filters", "{:.0f}"),
         Symbol(r"L", "L", "filter length, samples (stride L/2)", "{:.0f}"),
         Symbol(r"K", "K", "frames of this recording", "{:.0f}"),
         Symbol(r"\mathbf{m}_c", "", "voice c's mask, in [0, 1] for sigmoid masks: which basis signals, "
                                     "when, belong to voice c (the mask pictures)"),
         Symbol(r"\overline{\mathbf{m}_1}", "mask_mean1", "mean of voice 1's mask", "{:.3f}"),
         Symbol(r"\overline{\mathbf{m}_2}", "mask_mean2", "mean of voice 2's mask", "{:.3f}"),
         Symbol(r"\mathrm{TCN}", "", "the separator: X dilated depthwise-conv blocks, repeated R times"),
         Symbol(r"C", "C", "speakers the model separates", "{:.0f}")])
    si_snr = Formula(
        "SI-SNR: how much of the estimate is the true voice (scale does not count)",
        r"s_t=\frac{\langle\hat{s},s\rangle}{\|s\|^2}s,\quad e=\hat{s}-s_t,\quad "
        r"\mathrm{SI\text{-}SNR}=10\log_{10}\frac{\|s_t\|^2}{\|e\|^2}",
        [Symbol(r"\hat{s}, s", "", "an estimated voice and the true one, both made zero-mean"),
         Symbol(r"\mathrm{SI\text{-}SNR}_1", "si_snr1", "voice 1's SI-SNR, dB", "{:.2f}"),
         Symbol(r"\mathrm{SI\text{-}SNR}_2", "si_snr2", "voice 2's SI-SNR, dB", "{:.2f}")])
    improvement = Formula(
        "SI-SNRi: the gain over doing nothing (the mixture as the estimate)",
        r"\mathrm{SI\text{-}SNRi}_c=\mathrm{SI\text{-}SNR}(\hat{s}_c,s_c)-\mathrm{SI\text{-}SNR}(x,s_c)",
        [Symbol(r"\mathrm{SI\text{-}SNR}(x,s_1)", "si_snr_mix1", "the mixture against voice 1, dB", "{:.2f}"),
         Symbol(r"\mathrm{SI\text{-}SNRi}_1", "si_snri1", "voice 1's improvement, dB", "{:.2f}"),
         Symbol(r"\mathrm{SI\text{-}SNRi}_2", "si_snri2", "voice 2's improvement, dB", "{:.2f}")])
    training = Formula(
        "Training: permutation-invariant (the model's voice order is arbitrary)",
        r"\mathcal{L}=-\max_{\pi}\frac{1}{C}\sum_{c=1}^{C}\mathrm{SI\text{-}SNR}(\hat{s}_{\pi(c)},s_c)",
        [Symbol(r"\pi", "", "an assignment of estimates to voices; the best one counts"),
         Symbol(r"\mathrm{RTF}", "rtf", "real-time factor of the last separation (time / audio length)", "{:.3f}")])
    if speakers >= 3:
        pipeline.symbols.append(Symbol(r"\overline{\mathbf{m}_3}", "mask_mean3", "mean of voice 3's mask", "{:.3f}"))
        si_snr.symbols.append(Symbol(r"\mathrm{SI\text{-}SNR}_3", "si_snr3", "voice 3's SI-SNR, dB", "{:.2f}"))
        improvement.symbols.append(Symbol(r"\mathrm{SI\text{-}SNRi}_3", "si_snri3", "voice 3's improvement, dB",
                                          "{:.2f}"))
    note = ("What to look at: where one voice speaks alone, its mask is bright and the other's dark; where both "
            "speak, the masks share the frames between them. Solo a voice and listen for the other leaking in: "
            "that is the error e in SI-SNR. A model trained on synthetic voices does less well on real "
            "microphones (noise, room echo, voices unlike its training).")
    return Sheet("Conv-TasNet", [pipeline, si_snr, improvement, training], note)
