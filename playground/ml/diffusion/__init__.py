"""Diffusion models step by step: schedules, samplers over diffusers, a recording sampling loop, UNets.

* :mod:`.schedules`: the noise schedules (linear, cosine), alpha_bar and log SNR, the
  one-jump forward process and the conversions between prediction types.
* :mod:`.samplers`: diffusers schedulers by name (DDPM, DDIM, DPM++ 2M Karras, Euler, Euler a).
* :mod:`.sampling`: the sampling loop that records x_t, predicted x0 and predicted noise
  at every step, with classifier-free guidance.
* :mod:`.models`: our small ``UNet2DModel`` configs and the safe loader for diffusers
  UNet folders.
"""
