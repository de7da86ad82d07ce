"""The Chat tab's sheet: how the next token is chosen, and what attention the newest token pays.

Keys the panel sends while an answer streams (the newest token): ``temperature``, ``top_p``,
``top_k``, ``p_chosen`` (its probability after the filters), ``p_top`` (the most likely
candidate's), ``kept`` (how many candidates survive top-k/top-p), ``position`` (the token's
place in the context), ``tokens_per_s`` and ``layer`` / ``head`` of the attention strip.
"""

from __future__ import annotations

from . import Formula, Sheet, Symbol


def chat_sheet() -> Sheet:
    sample = Formula(
        "Choosing the next token: softmax with temperature, then top-k and top-p (nucleus)",
        r"p_i=\frac{e^{z_i/T}}{\sum_j e^{z_j/T}},\quad V_p=\min\{V:\ \sum_{i\in V}p_i\geq p\},\quad "
        r"x\sim\frac{p_i\,[i\in V_p\cap V_k]}{\sum_{j\in V_p\cap V_k}p_j}",
        [Symbol(r"z_i", "", "the logit of token i (the model's output, after the repetition penalty)"),
         Symbol(r"T", "temperature", "temperature: below 1 sharpens, above 1 flattens (0: always the top one)",
                "{:.2f}"),
         Symbol(r"p", "top_p", "top-p: keep the fewest tokens whose probabilities add up to p", "{:.2f}"),
         Symbol(r"k", "top_k", "top-k: keep at most k tokens (0: all)", "{:.0f}"),
         Symbol(r"|V|", "kept", "how many candidates were left to draw from", "{:.0f}"),
         Symbol(r"p_x", "p_chosen", "the chosen token's probability (the dark bar)", "{:.1%}"),
         Symbol(r"p_{\max}", "p_top", "the most likely candidate's probability", "{:.1%}")])
    attention = Formula(
        "The newest token's attention over the context (the heat strip), with rotary positions",
        r"a_j=\mathrm{softmax}_j\left(\frac{(R_t q_t)^\top (R_j k_j)}{\sqrt{d}}\right),\quad "
        r"(R_t q)^\top(R_j k)=q^\top R_{j-t}\,k",
        [Symbol(r"t", "position", "the newest token's position in the context", "{:.0f}"),
         Symbol(r"\ell", "layer", "the layer shown", "{:.0f}"),
         Symbol(r"h", "head", "the head shown (grouped-query: heads share K and V in groups)", "{:.0f}"),
         Symbol(r"R_t", "", "the rotation by position t (RoPE): only the distance j - t matters"),
         Symbol(r"d", "", "the head dimension")])
    block = Formula(
        "One decoder block (pre-norm), MiniMind's recipe",
        r"h=x+\mathrm{Attn}(\mathrm{RMSNorm}(x)),\quad y=h+W_2\left(\mathrm{SiLU}(W_1 u)\odot W_3 u\right),"
        r"\ u=\mathrm{RMSNorm}(h),\quad \mathrm{RMSNorm}(x)=\frac{g\odot x}{\sqrt{\overline{x^2}+\epsilon}}",
        [Symbol(r"\mathrm{tok/s}", "tokens_per_s", "decoding speed (with the key-value cache)", "{:.1f}")])
    note = ("Each bubble's text came one token at a time: the bars show what the model could have said "
            "instead, and how sure it was. Lower the temperature and the top bar grows; raise top-p and more "
            "candidates stay. The prompt below is exactly the string the model received, chat template and "
            "special tokens included.")
    return Sheet("Chat", [sample, attention, block], note)
