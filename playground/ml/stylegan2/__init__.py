"""StyleGAN2, our own: the generator and discriminator (``model``), the safe loader of the
official pickles (``pickles``), the procedural faces the default model learns from
(``faces``) and its training loop (``train``). No Qt in here."""
