"""Validation lab: a small SD1-family U-Net trained to memorize a few prompts ON PURPOSE, and what the pack's
memorization detectors say about it (CPU, minutes, seeded).

The model: ComfyUI's own classes (``comfy.supported_models.SD15`` -> ``BaseModel`` -> ``UNetModel``, the test
harness's 2-level TINY_UNET layout with a 64-wide text context) in a ``ModelPatcher``, so every detector runs on
it unchanged. The data: scikit-learn's ``load_digits`` (8x8 images of 0..9), turned into 4-channel 8x8 "latents"
by a fixed random 3x3 convolution and scaled to unit variance (the model trains in latent space; no VAE). The
prompts: fixed random "CLIP-shaped" embeddings (8 tokens x 64), one per prompt, and one for the empty prompt.

- memorized prompts: each is tied to ONE training image, duplicated (seen many times, always the same image);
- ordinary prompts: each is a class with many different images (the prompt generalises over them);
- unseen images: digits never trained on (for the volume growth rate).

Training: eps-prediction MSE at uniform timesteps of ComfyUI's SD1 schedule, 10 % of the captions replaced by the
empty prompt (classifier-free guidance), AdamW with a short warm-up and a cosine decay. Then, on this model:

1. the Memorization Benchmark (``nodes/memorization/benchmark.py``, as the node and CLI run it): AUC of the
   anisotropy metric (the paper's SD1 weights), of N, C, and Wen's first-step norm; it writes a calibration;
2. sampling every prompt with ComfyUI's sampler (euler, 20 steps, cfg 7.5) under the pack's trajectory capture,
   scored by the Memorization Scores (Trajectory) node: AUC of the latent-update score (and of Wen's, read from the
   same runs); a generation "reproduces" a training image when its final latent's nearest training latent is that
   image and lies closer than half the median nearest-neighbour distance between distinct training latents;
3. the volume growth rate (the Volume Growth Rate node's engine, its defaults, the empty prompt): training vs
   unseen images, as paper 002 compares them (ratio of the geometric means of the stretch rates, Welch t-test);
4. the Memorization Guard with action 'mitigate' and the lab's calibration: do the memorized prompts that
   reproduced their image still reproduce it, with the same seeds?

Nothing is tuned towards a result: the settings below were fixed before looking at the detectors' numbers, and the
numbers are reported as they come. The trained weights go to ``--cache`` (default
``$XDG_CACHE_HOME/diffusion-sentinel/memorization-lab``, else ``~/.cache/...``), never into the repository, and are
reused when the same configuration runs again (``--retrain`` to train anew). The last line is

    RESULT auc_anisotropy=<x> auc_wen=<y> auc_trajectory=<z> vgr_trained_over_untrained=<r> mitigated=<k>/<n>

Run (the CPU is shared: nice, one thread, under the heavy-job lock):

    flock /tmp/sentinel-heavy.lock env COMFYUI_PATH=/tmp/sentinel-comfy/ComfyUI \\
        nice /tmp/sentinel-comfy/venv/bin/python benchmarks/memorization_lab.py [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

TOKENS, CONTEXT = 8, 64  # prompt embedding shape (a small "CLIP": the detectors take any context)


@dataclass(frozen=True)
class LabConfig:
    n_memorized: int = 8
    n_ordinary: int = 20
    images_per_ordinary: int = 40
    duplicates: int = 40  # copies of each memorized image in the training set
    n_unseen: int = 40
    train_steps: int = 2400
    batch: int = 64
    lr: float = 2e-3
    p_uncond: float = 0.1
    seed: int = 0
    det_samples: int = 4  # noise samples per prompt for the anisotropy / Wen scores
    sample_seeds: int = 3  # sampled generations per prompt
    sample_steps: int = 20
    cfg: float = 7.5
    vgr_images: int = 24  # per group (training / unseen)
    prediction: str = "eps"  # "eps" (SD 1.x) or "v" (as SD 2.x-v): the network's output


FULL = LabConfig()
QUICK = LabConfig(n_memorized=4, n_ordinary=8, images_per_ordinary=24, duplicates=24, n_unseen=16, train_steps=300,
                  det_samples=2, sample_seeds=2, vgr_images=8)


def _parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the small CI version (about 2 minutes on 2 busy cores)")
    ap.add_argument("--steps", type=int, default=0, help="override the training steps")
    ap.add_argument("--seed", type=int, default=None, help="override the seed of data split, embeddings and training")
    ap.add_argument("--prediction", choices=["eps", "v"], default=None,
                    help="the U-Net's output: eps (SD 1.x) or v (as SD 2.x-v); default: the configuration's")
    ap.add_argument("--cache", default=None, help="folder for the lab model and its calibration (default: "
                                                  "$XDG_CACHE_HOME/diffusion-sentinel/memorization-lab)")
    ap.add_argument("--retrain", action="store_true", help="train even if the cache holds this configuration")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the CPU is shared)")
    ap.add_argument("--json-out", default=None, help="write every number measured here as JSON")
    return ap.parse_args(argv)


def cache_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "diffusion-sentinel" / "memorization-lab"


# ----------------------------------------------------------------------------------------------- data
@dataclass
class LabData:
    latents: object  # [N, 4, 8, 8] model-space latents of every digit (unit variance)
    images: object  # [N, 8, 8] digit images in [0, 1]
    memorized_idx: list  # image index per memorized prompt
    ordinary_idx: list  # list of image indices per ordinary prompt
    ordinary_class: list
    unseen_idx: list
    embeddings: object  # [n_memorized + n_ordinary, TOKENS, CONTEXT]: memorized prompts first
    empty: object  # [TOKENS, CONTEXT]
    encoder: object  # (weight [4, 1, 3, 3], mean [4], std [4])


def make_data(cfg: LabConfig) -> LabData:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    img = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # [1797, 8, 8] in [0, 1]
    labels = digits.target
    g = torch.Generator().manual_seed(1234 + cfg.seed)
    w = torch.randn(4, 1, 3, 3, generator=g) / 3.0
    raw = F.conv2d(img[:, None] * 2 - 1, w, padding=1)
    mean, std = raw.mean(dim=(0, 2, 3)), raw.std(dim=(0, 2, 3))
    latents = (raw - mean.view(1, 4, 1, 1)) / std.view(1, 4, 1, 1)
    rng = np.random.default_rng(cfg.seed)
    pools = {c: list(rng.permutation(np.nonzero(labels == c)[0])) for c in range(10)}
    mem = [int(pools[k % 10].pop()) for k in range(cfg.n_memorized)]
    ordinary, classes = [], []
    for p in range(cfg.n_ordinary):
        c = p % 10
        if len(pools[c]) < cfg.images_per_ordinary:
            raise SystemExit(f"class {c} has too few images left for {cfg.n_ordinary} ordinary prompts")
        ordinary.append([int(pools[c].pop()) for _ in range(cfg.images_per_ordinary)])
        classes.append(c)
    rest = rng.permutation([i for c in range(10) for i in pools[c]])
    unseen = [int(i) for i in rest[: cfg.n_unseen]]
    ge = torch.Generator().manual_seed(99 + cfg.seed)
    emb = torch.randn(cfg.n_memorized + cfg.n_ordinary, TOKENS, CONTEXT, generator=ge)
    empty = torch.randn(TOKENS, CONTEXT, generator=ge)
    return LabData(latents=latents, images=img, memorized_idx=mem, ordinary_idx=ordinary, ordinary_class=classes,
                   unseen_idx=unseen, embeddings=emb, empty=empty, encoder=(w, mean, std))


def training_pairs(cfg: LabConfig, data: LabData) -> list[tuple[int, int]]:
    """(image index, prompt index) of the training set: every ordinary image once, each memorized image duplicated."""
    pairs = [(i, cfg.n_memorized + p) for p, idx in enumerate(data.ordinary_idx) for i in idx]
    pairs += [(data.memorized_idx[m], m) for m in range(cfg.n_memorized) for _ in range(cfg.duplicates)]
    return pairs


# ----------------------------------------------------------------------------------------------- model
def build_model(cfg: LabConfig):
    import comfy.model_base
    import comfy.supported_models
    import torch
    from _comfy import TINY_UNET, random_init_

    unet = dict(TINY_UNET, context_dim=CONTEXT, dtype=torch.float32)
    kind = comfy.model_base.ModelType.V_PREDICTION if cfg.prediction == "v" else comfy.model_base.ModelType.EPS
    model = comfy.model_base.BaseModel(comfy.supported_models.SD15(unet), model_type=kind, device=torch.device("cpu"))
    random_init_(model.diffusion_model, cfg.seed)
    return model


def config_key(cfg: LabConfig) -> str:
    blob = json.dumps({**asdict(cfg), "tokens": TOKENS, "context": CONTEXT, "v": 2}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train(cfg: LabConfig, data: LabData, model, log) -> dict:
    import torch

    pairs = training_pairs(cfg, data)
    img_idx = torch.tensor([p[0] for p in pairs])
    prm_idx = torch.tensor([p[1] for p in pairs])
    x0_all = data.latents[img_idx]
    ctx_all = data.embeddings[prm_idx]
    ms = model.model_sampling
    net = model.diffusion_model
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(7 + cfg.seed)
    net.train()
    losses = []
    t0 = time.perf_counter()
    with torch.inference_mode(False), torch.enable_grad():
        for step in range(cfg.train_steps):
            b = torch.randint(0, len(pairs), (cfg.batch,), generator=g)
            x0, ctx = x0_all[b], ctx_all[b].clone()
            drop = torch.rand(cfg.batch, generator=g) < cfg.p_uncond
            ctx[drop] = data.empty
            t = torch.randint(0, 1000, (cfg.batch,), generator=g)
            sigma = ms.sigmas[t].float()
            eps = torch.randn(x0.shape, generator=g)
            x = x0 + sigma.view(-1, 1, 1, 1) * eps
            denoised = model.apply_model(x, sigma, c_crossattn=ctx)
            # the network's own MSE written on the x0 error: eps error = e/sigma, v error = e*sqrt(1+sigma^2)/sigma
            s2 = sigma.view(-1, 1, 1, 1) ** 2
            w = (1.0 + s2) / s2 if cfg.prediction == "v" else 1.0 / s2
            loss = (w * (denoised - x0) ** 2).mean()
            for grp in opt.param_groups:  # linear warm-up, then cosine decay to zero
                grp["lr"] = cfg.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / cfg.train_steps))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if (step + 1) % max(1, cfg.train_steps // 10) == 0:
                log(f"  step {step + 1}/{cfg.train_steps}: loss {sum(losses[-50:]) / len(losses[-50:]):.4f} "
                    f"({time.perf_counter() - t0:.0f} s)")
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return {"train_seconds": time.perf_counter() - t0, "final_loss": sum(losses[-50:]) / len(losses[-50:]),
            "pairs": len(pairs)}


def load_or_train(cfg: LabConfig, data: LabData, cache: Path, retrain: bool, log):
    import safetensors.torch

    model = build_model(cfg)
    path = cache / f"lab-unet-{config_key(cfg)}.safetensors"
    if path.is_file() and not retrain:
        sd = safetensors.torch.load_file(str(path))
        missing, unexpected = model.diffusion_model.load_state_dict(sd, strict=True), None
        del missing, unexpected
        for p in model.diffusion_model.parameters():
            p.requires_grad_(False)
        model.diffusion_model.eval()
        log(f"lab model loaded from {path}")
        meta = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else {}
        return model, {**meta, "cached": True}
    log(f"training the lab model ({cfg.train_steps} steps of {cfg.batch}) ...")
    info = train(cfg, data, model, log)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.diffusion_model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({**info, "config": asdict(cfg)}, indent=1))
    log(f"lab model written to {path}")
    return model, {**info, "cached": False}


def patcher(model):
    import comfy.model_management as mm
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(model, mm.get_torch_device(), mm.unet_offload_device())


# ----------------------------------------------------------------------------------------------- measurements
class LabVAE:
    """encode(IMAGE) -> LATENT of the lab's fixed encoder (the VAE-space latent a checkpoint's VAE would give)."""

    def __init__(self, encoder, scale_factor: float):
        self.w, self.mean, self.std = encoder
        self.scale = scale_factor

    def encode(self, image):
        import torch.nn.functional as F

        gray = image[..., 0].float()[:, None] * 2 - 1
        z = (F.conv2d(gray, self.w, padding=1) - self.mean.view(1, 4, 1, 1)) / self.std.view(1, 4, 1, 1)
        return z / self.scale  # the guider's process_latent_in multiplies by the scale factor


def cond(emb):
    return [[emb, {}]]


def nearest_training(final, train_latents):
    """Per generation: (index into train_latents of the nearest, its RMS distance)."""
    import torch

    d = torch.cdist(final.flatten(1).double(), train_latents.flatten(1).double()) / math.sqrt(final[0].numel())
    dist, idx = d.min(dim=1)
    return idx, dist


def sample_all(mp, positive, negative, n, seeds, cfg: LabConfig, capture: bool = True):
    """Sample n items (one per prompt of ``positive``) per seed; returns per seed (final latents, trajectory)."""
    import comfy.sample
    import torch
    from diffusion_sentinel.nodes.trajectory.capture import attach_capture
    from diffusion_sentinel.nodes.trajectory.recorder import CaptureOptions

    m, store = attach_capture(mp, CaptureOptions(keep_x=True, keep_cond_uncond=True)) if capture else (mp, None)
    scale = float(mp.get_model_object("latent_format").scale_factor)
    out = []
    for s in seeds:
        latent = torch.zeros(n, 4, 8, 8)
        noise = comfy.sample.prepare_noise(latent, s)
        samples = comfy.sample.sample(m, noise, cfg.sample_steps, cfg.cfg, "euler", "normal", positive, negative,
                                      latent, seed=s, disable_pbar=True)
        traj = store.pop_latest() if store is not None else None
        out.append((samples.float().cpu() * scale, traj))  # back to the model's latent space
    return out


def main(argv=None) -> int:
    a = _parse(argv)
    cfg = QUICK if a.quick else FULL
    if a.steps or a.seed is not None or a.prediction:
        from dataclasses import replace

        cfg = replace(cfg, train_steps=a.steps or cfg.train_steps, seed=cfg.seed if a.seed is None else a.seed,
                      prediction=a.prediction or cfg.prediction)
    cache = cache_dir(a.cache)

    def log(msg):
        print(msg, flush=True)

    import conftest  # noqa: F401  (the package alias diffusion_sentinel)
    from _comfy import boot_comfy, run_v3

    boot_comfy(os.environ["COMFYUI_PATH"])
    import folder_paths
    import numpy as np
    import torch
    from diffusion_sentinel.nodes.memorization import benchmark as bm
    from diffusion_sentinel.nodes.memorization import detection, volume_probe
    from diffusion_sentinel.nodes.memorization.benchmark_report import format_table
    from diffusion_sentinel.nodes.memorization.calibration import auc
    from diffusion_sentinel.nodes.memorization.guard_node import MemorizationGuard
    from diffusion_sentinel.nodes.memorization.node_common import CAL_DIR
    from diffusion_sentinel.nodes.memorization.trajectory_node import MemorizationScoresTrajectory
    from scipy.stats import ttest_ind

    torch.set_num_threads(max(1, a.threads))
    torch.manual_seed(cfg.seed)
    t_start = time.perf_counter()
    log(f"memorization lab ({'quick' if a.quick else 'full'}): {cfg}")
    data = make_data(cfg)
    model, train_info = load_or_train(cfg, data, cache, a.retrain, log)
    mp = patcher(model)
    nm, no = cfg.n_memorized, cfg.n_ordinary
    neg = cond(data.empty[None])
    emb = data.embeddings
    results: dict = {"config": asdict(cfg), "train": train_info}

    with torch.inference_mode():
        # 1. the benchmark (node/CLI code path) on the two prompt sets; it fits the calibration the Guard uses
        settings = bm.BenchmarkSettings(detector=detection.DetectorSettings(seed=51, n_samples=cfg.det_samples,
                                                                            width=64, height=64), batch_size=32)
        res = bm.run_benchmark(mp, [cond(emb[i:i + 1]) for i in range(nm)],
                               [cond(emb[i:i + 1]) for i in range(nm, nm + no)], neg, settings)
        log("\n1. benchmark on the lab model (memorized vs ordinary prompts):")
        log(format_table(res.rows))
        log(bm.timing_line(res))
        cal_dir = cache / CAL_DIR
        cal_dir.mkdir(parents=True, exist_ok=True)
        cal_name = f"lab-{config_key(cfg)}.json"
        bm.save(res, str(cal_dir / cal_name), cal_name[:-5])
        folder_paths.add_model_folder_path(CAL_DIR, str(cal_dir))
        results["benchmark"] = bm.summary(res)
        auc_aniso, auc_wen = res.rows[0].auc, res.rows[3].auc

        # 2. sampling under capture; trajectory scores; reproduction of training images
        seeds = [1000 + k for k in range(cfg.sample_seeds)]
        positive = cond(emb)
        runs = sample_all(mp, positive, neg, nm + no, seeds, cfg)
        train_imgs = sorted(set(data.memorized_idx) | {i for idx in data.ordinary_idx for i in idx})
        train_lat = data.latents[train_imgs]
        dd = torch.cdist(train_lat.flatten(1).double(), train_lat.flatten(1).double()) / math.sqrt(train_lat[0].numel())
        dd.fill_diagonal_(float("inf"))
        tau = 0.5 * float(dd.min(dim=1).values.median())
        u_scores, t_wen, reproduced = [], [], []
        for final, traj in runs:
            out = run_v3(MemorizationScoresTrajectory, trajectory=traj).args
            u_scores.append(out[0])
            t_wen.append(out[2])
            idx, dist = nearest_training(final, train_lat)
            rep = [bool(train_imgs[int(idx[m])] == data.memorized_idx[m] and float(dist[m]) < tau) for m in range(nm)]
            reproduced.append(rep)
        u = np.array(u_scores)  # [seeds, prompts]
        tw = np.array(t_wen)
        y = np.r_[np.ones(nm, int), np.zeros(no, int)]
        auc_traj = auc(y, u.mean(axis=0))
        auc_traj_gen = auc(np.tile(y, len(seeds)), u.reshape(-1))
        auc_twen = auc(y, tw.mean(axis=0))
        rep_before = np.array(reproduced)  # [seeds, memorized]
        ordinary_copies = 0
        for final, _ in runs:
            idx, dist = nearest_training(final, train_lat)
            ordinary_copies += sum(1 for p in range(nm, nm + no) if float(dist[p]) < tau)
        log(f"\n2. sampling (euler, {cfg.sample_steps} steps, cfg {cfg.cfg:g}, {len(seeds)} seeds per prompt) under "
            "trajectory capture:")
        log(f"   latent-update score U: memorized mean {u[:, :nm].mean():.3f} (min {u[:, :nm].min():.3f}), ordinary "
            f"mean {u[:, nm:].mean():.3f} (max {u[:, nm:].max():.3f}); AUC per prompt {auc_traj:.3f}, per "
            f"generation {auc_traj_gen:.3f}; flagged (U > 1): {int((u[:, :nm] > 1).sum())}/{u[:, :nm].size} memorized, "
            f"{int((u[:, nm:] > 1).sum())}/{u[:, nm:].size} ordinary generations")
        log(f"   Wen read from the same runs (first recorded step): AUC {auc_twen:.3f}")
        n_rep_prompts = int(rep_before.any(axis=0).sum())
        log(f"   reproduction (nearest training latent is the prompt's image, RMS distance < {tau:.3f}): "
            f"{int(rep_before.sum())}/{rep_before.size} memorized generations, {n_rep_prompts}/{nm} memorized prompts "
            f"in at least one seed; ordinary generations within {tau:.3f} of some training image: "
            f"{ordinary_copies}/{no * len(seeds)}")
        log(f"MEMORIZED reproduced={n_rep_prompts}/{nm} generations={int(rep_before.sum())}/{rep_before.size}")
        results["trajectory"] = {"auc_update_score": auc_traj, "auc_update_score_per_generation": auc_traj_gen,
                                 "auc_wen_trajectory": auc_twen, "u_memorized": u[:, :nm].tolist(),
                                 "u_ordinary": u[:, nm:].tolist(), "tau": tau,
                                 "reproduced": rep_before.tolist(), "ordinary_copies": ordinary_copies}

        # 3. volume growth rate: training vs unseen images (and the memorized ones), unconditional
        vae = LabVAE(data.encoder, float(mp.get_model_object("latent_format").scale_factor))
        g = np.random.default_rng(cfg.seed + 5)
        trained = [int(i) for i in g.choice([i for idx in data.ordinary_idx for i in idx], cfg.vgr_images,
                                            replace=False)]
        unseen = data.unseen_idx[: cfg.vgr_images]

        def vgr(ids):
            image = data.images[ids][..., None].repeat(1, 1, 1, 3)
            return volume_probe.volume_growth(mp, vae, image, neg, volume_probe.VolumeSettings()).score.double()

        v_tr, v_un, v_mem = vgr(trained), vgr(unseen), vgr(data.memorized_idx)
        ratio = math.exp(float(v_tr.mean() - v_un.mean()))
        p_val = float(ttest_ind(v_tr.numpy(), v_un.numpy(), equal_var=False).pvalue)
        log("\n3. volume growth rate (mean log-stretch of the DDIM inversion step, node defaults, empty prompt):")
        log(f"   training {float(v_tr.mean()):.4f} +- {float(v_tr.std()):.4f} (n={len(trained)}), unseen "
            f"{float(v_un.mean()):.4f} +- {float(v_un.std()):.4f} (n={len(unseen)}), memorized (duplicated) "
            f"{float(v_mem.mean()):.4f} (n={nm}); trained / unseen growth rate = exp(difference) = {ratio:.4f}; "
            f"Welch t-test p = {p_val:.2g}")
        results["vgr"] = {"trained": v_tr.tolist(), "unseen": v_un.tolist(), "memorized": v_mem.tolist(),
                          "ratio": ratio, "p": p_val}

        # 4. the Guard's mitigation with the lab's calibration, then the same seeds again
        guard = run_v3(MemorizationGuard, model=mp, positive=cond(emb[:nm]), negative=neg, action="mitigate",
                       calibration=cal_name, seed=51, n_samples=cfg.det_samples, width=64, height=64).args
        new_pos, flagged = guard[0], guard[3]
        after = sample_all(mp, new_pos, neg, nm, seeds, cfg, capture=False)
        rep_after = []
        for final, _ in after:
            idx, dist = nearest_training(final, train_lat)
            rep_after.append([bool(train_imgs[int(idx[m])] == data.memorized_idx[m] and float(dist[m]) < tau)
                              for m in range(nm)])
        rep_after = np.array(rep_after)
        was = rep_before.any(axis=0)
        stopped = int((was & ~rep_after.any(axis=0)).sum())
        n_was = int(was.sum())
        log("\n4. Memorization Guard, action mitigate, with the lab's calibration (threshold "
            f"{res.calibration.threshold:.3f}):")
        log(f"   flagged {sum(flagged)}/{nm} memorized prompts; score after mitigation "
            f"{[round(float(v), 3) for v in guard[4]]} (before {[round(float(v), 3) for v in guard[1]]})")
        log(f"   reproducing generations: {int(rep_before.sum())}/{rep_before.size} before, "
            f"{int(rep_after.sum())}/{rep_after.size} after; prompts that reproduced and no longer do: "
            f"{stopped}/{n_was}")
        results["mitigation"] = {"flagged": [bool(f) for f in flagged], "reproduced_after": rep_after.tolist(),
                                 "stopped": stopped, "of": n_was}

    results["seconds"] = time.perf_counter() - t_start
    trained = "cached" if train_info.get("cached") else f"run in {train_info['train_seconds']:.0f} s"
    log(f"\nlab finished in {results['seconds']:.0f} s (training {trained}); cache: {cache}")
    if a.json_out:
        from diffusion_sentinel.nodes.common.ui import json_safe

        Path(a.json_out).write_text(json.dumps(json_safe(results), indent=1))
    print(f"RESULT auc_anisotropy={auc_aniso:.3f} auc_wen={auc_wen:.3f} auc_trajectory={auc_traj:.3f} "
          f"vgr_trained_over_untrained={ratio:.4f} mitigated={stopped}/{n_was}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
