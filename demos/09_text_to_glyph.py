# %% [markdown]
# # Text to glyph: a prompt steers a denoiser through cross-attention
#
#     python demos/09_text_to_glyph.py [--fast] [--out DIR]
#
# The system of "How diffusion models work" (the glyffuser), small enough to read: a text encoder turns
# the prompt into one vector per word, a U-Net predicts the noise while every pixel of its 12x12 and 6x6
# feature maps cross-attends to those word vectors, and classifier-free guidance pushes the samples
# toward the prompt. It uses the shipped model `text-glyphs` (trained by the command in the README; no
# training here) and the shipped glyph reader to score the samples. docs/attention.md §8-§12.
#
# Writes into --out: `09_prompt_grid.png`, `09_one_step_vs_sampler.png`, `09_denoising.gif`,
# `09_guidance_sweep.png`, `09_heldout.png`, `09_cross_attention.png`.
#
# Runtime (2 cores): full ~1-2 min; --fast a few seconds (few samples and steps: rough pictures).

# %%
import argparse
import os

import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt
import numpy as np  # host-side plotting arrays only
from matplotlib.animation import FuncAnimation, PillowWriter

import minidiff as md
from minidiff import backend
from minidiff.captioned import CHARS, HELDOUT_VARIANT, VARIANTS, describe
from minidiff.guidance import classifier_free
from minidiff.t2i import generate, load_glyph_reader, load_text_model

parser = argparse.ArgumentParser(description="text-to-glyph with the shipped model")
parser.add_argument("--fast", action="store_true", help="few samples and steps (for the smoke test)")
parser.add_argument("--out", default="minidiff-out/demos", help="output folder (default: minidiff-out/demos)")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
STEPS = 4 if args.fast else 20  # sampler steps (gradient estimation, last step DDIM)
N = 2 if args.fast else 8  # samples per prompt in the grid

model = load_text_model("text-glyphs")  # EMA weights, its training schedule and image shape
reader = load_glyph_reader()
print(f"text-glyphs: {model.num_parameters()} parameters; vocabulary of {model.tokenizer.vocab_size} tokens")


def host(x):
    return backend.to_numpy(x)[:, 0]  # (n, 1, H, W) -> (n, H, W), explicit device -> host copy


def show(ax, img, title=None):
    ax.imshow(img, cmap="gray", vmin=-1, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def read(x):
    """The reader's character for each sample (for the panel titles)."""
    return [CHARS[i] for i in backend.to_numpy(reader.predict(x.astype("float32"))["char"])]


# %% [markdown]
# ## 1. Prompts x samples
# Each row is one prompt, each column an independent sample (guidance w = 3). The title of each image
# is what the glyph reader reads in it: the share that matches the prompt's character is the adherence.

# %%
prompts = ["R", "italic 7", "bold serif R", "the letter G in a bold mono face", "seven, monospace",
           "slanted sans Q"]
if args.fast:
    prompts = prompts[:2]
x = generate(model, [p for p in prompts for _ in range(N)], guidance=3.0, steps=STEPS, seed=0)
imgs, got = host(x), read(x)
fig, axes = plt.subplots(len(prompts), N, figsize=(1.1 * N + 1.6, 1.2 * len(prompts)), squeeze=False)
for r, p in enumerate(prompts):
    for c in range(N):
        show(axes[r, c], imgs[r * N + c], f"read: {got[r * N + c]}")
    axes[r, 0].set_ylabel(f'"{p}"', rotation=0, ha="right", va="center", fontsize=8)
fig.suptitle(f"text-glyphs: prompt (row) x sample (column), guidance w = 3, {STEPS} steps")
fig.tight_layout()
fig.savefig(os.path.join(args.out, "09_prompt_grid.png"), dpi=90)
plt.close(fig)

# %% [markdown]
# ## 2. One step vs the whole sampler
# The article's figure: from pure noise at sigma_max, ONE denoiser call gives x0_hat = x - sigma eps_hat,
# a blurry average of every glyph the prompt allows (already the right character, roughly); the full
# sampler refines it step by step into one sharp sample.

# %%
prompt = "bold serif R"
ids = model.encode([prompt] * N)
guided = classifier_free(model, ids, 3.0)
sigmas = model.schedule.sampling_sigmas(STEPS, final_zero=True)
rng = backend.default_rng(1)
x_T = float(sigmas[0]) * rng.standard_normal((N, 1, 24, 24), dtype="float32")
x0_one = md.denoise_once(guided, x_T, float(sigmas[0]))
frames = []  # (x, x0_hat) after each step, for the GIF below
x_full = generate(model, prompt, n=N, guidance=3.0, steps=STEPS, seed=1,
                  callback=lambda s: frames.append((host(s.x), host(s.x0_hat), s.sigma)))
fig, axes = plt.subplots(2, N, figsize=(1.1 * N, 2.8), squeeze=False)
for c in range(N):
    show(axes[0, c], host(x0_one)[c])
    show(axes[1, c], host(x_full)[c])
axes[0, 0].set_ylabel("one step", fontsize=8)
axes[1, 0].set_ylabel(f"{STEPS} steps", fontsize=8)
fig.suptitle(f'"{prompt}": x0_hat after one denoiser call at sigma_max (top) vs the full sampler (bottom)', fontsize=9)
fig.tight_layout()
fig.savefig(os.path.join(args.out, "09_one_step_vs_sampler.png"), dpi=90)
plt.close(fig)

# %% [markdown]
# ## 3. The denoising animation
# 16 samples of one prompt, from noise to glyphs: left the current x_t, right the denoiser's x0_hat at
# that step (what the network "sees" through the noise).

# %%
n_gif = 4 if args.fast else 16
frames = []
generate(model, "italic 7", n=n_gif, guidance=3.0, steps=STEPS, seed=2,
         callback=lambda s: frames.append((host(s.x), host(s.x0_hat), s.sigma)))
side = int(np.ceil(np.sqrt(n_gif)))


def mosaic(a):
    out = -np.ones((side * 25, side * 25))
    for i, im in enumerate(a):
        r, c = divmod(i, side)
        out[r * 25:r * 25 + 24, c * 25:c * 25 + 24] = np.clip(im, -1, 1)
    return out


fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7, 3.8))
im1 = ax1.imshow(mosaic(frames[0][0]), cmap="gray", vmin=-1, vmax=1)
im2 = ax2.imshow(mosaic(frames[0][1]), cmap="gray", vmin=-1, vmax=1)
for ax in (ax1, ax2):
    ax.set_xticks([])
    ax.set_yticks([])


def update(k):
    x_k, x0_k, s_k = frames[k]
    im1.set_data(mosaic(x_k))
    im2.set_data(mosaic(x0_k))
    ax1.set_title(f'x_t, sigma = {s_k:.3g}', fontsize=9)
    ax2.set_title(f'x0_hat (step {k + 1}/{len(frames)})', fontsize=9)
    return im1, im2


fig.suptitle('"italic 7": 16 samples denoised (guidance 3)', fontsize=10)
anim = FuncAnimation(fig, update, frames=len(frames), blit=False)
anim.save(os.path.join(args.out, "09_denoising.gif"), writer=PillowWriter(fps=4), dpi=70)
plt.close(fig)

# %% [markdown]
# ## 4. Guidance sweep
# The same noise, prompt "bold italic serif R", at w = 0 (unconditional: any glyph), 1 (the conditional
# model), 3 and 6 (pushed away from the unconditional prediction). The title gives the share read as R.

# %%
ws = [0.0, 1.0, 3.0] if args.fast else [0.0, 1.0, 3.0, 6.0]
fig, axes = plt.subplots(len(ws), N, figsize=(1.1 * N + 1.2, 1.25 * len(ws)), squeeze=False)
for r, w in enumerate(ws):
    x = generate(model, "bold italic serif R", n=N, guidance=w, steps=STEPS, seed=3)
    got = read(x)
    for c in range(N):
        show(axes[r, c], host(x)[c])
    axes[r, 0].set_ylabel(f"w = {w:g}\n{sum(g == 'R' for g in got)}/{N} R", rotation=0, ha="right",
                          va="center", fontsize=8)
fig.suptitle('"bold italic serif R" at four guidance weights (same noise in every row)', fontsize=9)
fig.tight_layout()
fig.savefig(os.path.join(args.out, "09_guidance_sweep.png"), dpi=90)
plt.close(fig)

# %% [markdown]
# ## 5. Combinations never seen in training
# Each character was never shown in one face (docs/attention.md §10): its "held-out" prompt names words
# that the model saw often, but never together. Left: a real glyph of that face; right: samples.

# %%
chars = [CHARS.index(ch) for ch in ("R", "7", "G", "Q")][: 2 if args.fast else 4]
fig, axes = plt.subplots(len(chars), N + 1, figsize=(1.1 * (N + 1) + 1.8, 1.25 * len(chars)), squeeze=False)
ds = md.get_dataset("captioned_glyphs")
real, real_c, real_a = ds.sample(3000, backend.default_rng(4), return_labels=True, return_attributes=True,
                                 split="heldout")
real_c = backend.to_numpy(real_c)
for r, c in enumerate(chars):
    p = describe(c, *VARIANTS[HELDOUT_VARIANT[c]])
    show(axes[r, 0], host(real)[int(np.flatnonzero(real_c == c)[0])], "real")
    x = generate(model, p, n=N, guidance=3.0, steps=STEPS, seed=5 + r)
    for k, g in enumerate(read(x)):
        show(axes[r, k + 1], host(x)[k], f"read: {g}")
    axes[r, 0].set_ylabel(f'"{p}"', rotation=0, ha="right", va="center", fontsize=8)
fig.suptitle("held-out combinations: never in the training set", fontsize=9)
fig.tight_layout()
fig.savefig(os.path.join(args.out, "09_heldout.png"), dpi=90)
plt.close(fig)

# %% [markdown]
# ## 6. Cross-attention maps
# Which word does each pixel listen to? During sampling, the up-path block at 12x12 computes for every
# pixel i an attention row P_i over the prompt's tokens (docs/attention.md §8). We record P (averaged over
# heads) at every step for one sample and show, per word, the map P[:, word] (bright = that pixel reads
# that word), at a few noise levels, on one colour scale (a uniform row would be 1/4 everywhere for four
# words). Rows: sampler steps; first column: the current x0_hat.

# %%
prompt = "bold italic serif R"
words = model.tokenizer.decode(model.encode([prompt]))[0].split()
block = model.denoiser.up_attn[0]  # the 12x12 up-path transformer block
maps = []


def grab(state):
    P = backend.to_numpy(block.attn2.attention)  # (2B, heads, 144, S): rows [prompt | null]
    maps.append((host(state.x0_hat)[0], P[0].mean(axis=0)[:, :len(words)].reshape(12, 12, len(words)),
                 state.sigma))


generate(model, prompt, n=1, guidance=3.0, steps=STEPS, seed=6, callback=grab)
show_steps = sorted({0, len(maps) // 4, len(maps) // 2, len(maps) - 2})
vmax = max(float(maps[k][1].max()) for k in show_steps)  # one colour scale for every map shown
fig, axes = plt.subplots(len(show_steps), len(words) + 1, figsize=(1.35 * (len(words) + 1), 1.4 * len(show_steps)),
                         squeeze=False)
for r, k in enumerate(show_steps):
    x0, P, s = maps[k]
    show(axes[r, 0], x0, f"x0_hat, sigma {s:.2g}")
    for j, w in enumerate(words):
        axes[r, j + 1].imshow(P[:, :, j], cmap="magma", vmin=0, vmax=vmax)
        axes[r, j + 1].set_xticks([])
        axes[r, j + 1].set_yticks([])
        if r == 0:
            axes[r, j + 1].set_title(f'"{w}"', fontsize=9)
fig.suptitle(f'cross-attention of the 12x12 up block to each word of "{prompt}" (black 0, white {vmax:.2f})',
             fontsize=9)
fig.tight_layout()
fig.savefig(os.path.join(args.out, "09_cross_attention.png"), dpi=90)
plt.close(fig)
print("wrote 09_prompt_grid.png, 09_one_step_vs_sampler.png, 09_denoising.gif, 09_guidance_sweep.png, "
      "09_heldout.png, 09_cross_attention.png into", args.out)
